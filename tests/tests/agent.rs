//! carp-agent processes in namespaces on a bridged LAN: election, failover, operator
//! commands, signals, hooks and the XDP answers for the VIP.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use aya::programs::XdpMode;
use carp_agent::xdp::DataPlane;
use carp_common::State;
use carp_tests::{
    agent::{Agent, TempDir, agent_bin, start_pair},
    lan::{Lan, one_mac_answers},
    probe::Probe,
};
use nix::sys::signal::Signal;
use std::{process::Command, time::Duration};

const PASSWORD: &str = "e2e-secret";
/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);

fn vhid(interface: &str, vhid: u8, vip: &str, advskew: u8, extra: &str, dir: &TempDir) -> String {
    let pw = dir.path().join("carp.pass");
    carp_tests::agent::write_secret(&pw, PASSWORD).unwrap();
    format!(
        "[[vhid]]\ninterface = \"{interface}\"\nvhid = {vhid}\nvips = [\"{vip}\"]\n\
         advskew = {advskew}\npass_file = \"{}\"\n{extra}\n",
        pw.display()
    )
}

/// Addresses on all of a host's interfaces (a master keeps its VIPs on lo).
fn addrs(lan: &Lan, host: usize) -> String {
    let out = lan.hosts[host].ns.ip(&["-br", "addr"]).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_agents_elect_one_master_and_the_backup_takes_over_when_it_is_killed() {
    let dir = TempDir::new("kill").unwrap();
    let mut lan = Lan::new("kill", &["a", "b"]).unwrap();
    lan.add_host("kill", "client").unwrap();
    let (mut a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid("eth0", 1, "192.0.2.50/24", 0, "", &dir),
        &vhid("eth0", 1, "192.0.2.50/24", 100, "", &dir),
    )
    .unwrap();
    // Exactly one holds the VIP, and it stays that way.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
    assert_eq!(b.state(1).as_deref(), Some("BACKUP"));
    assert!(addrs(&lan, 0).contains("192.0.2.50/32"));
    assert!(!addrs(&lan, 1).contains("192.0.2.50"));

    let probe = Probe::start(&lan.hosts[2].ns, "192.0.2.50").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    a.signal(Signal::SIGKILL).unwrap();
    let took = b
        .wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let gap = probe.max_gap();
    println!("SIGKILL of the master: takeover {took:?}, ping gap {gap:?} (bound {MASTER_DOWN:?})");
    assert!(gap < MASTER_DOWN + Duration::from_secs(1), "gap {gap:?}");
    assert!(addrs(&lan, 1).contains("192.0.2.50/32"));
    // The killed agent's VIP is still on a's lo, but nothing there answers ARP for it.
    assert!(addrs(&lan, 0).contains("192.0.2.50/32"));
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
    // Restarted, a removes the stale VIP first and stays backup (no preempt).
    a.spawn(&lan.hosts[0].ns).unwrap();
    a.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
    assert!(!addrs(&lan, 0).contains("192.0.2.50"));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        b.state(1).as_deref(),
        Some("MASTER"),
        "no failback without preempt"
    );
    assert_eq!(a.state(1).as_deref(), Some("BACKUP"));
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
}

#[test]
fn set_state_backup_hands_over_and_sigterm_bows_out_at_once() {
    let dir = TempDir::new("hand").unwrap();
    let lan = Lan::new("hand", &["a", "b"]).unwrap();
    let (mut a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid("eth0", 1, "192.0.2.50/24", 0, "", &dir),
        &vhid("eth0", 1, "192.0.2.50/24", 100, "", &dir),
    )
    .unwrap();

    // The seeds' `ifconfig em0 vhid 1 state backup`: a steps down, b takes over.
    a.ctl(&["set-state", "1", "backup"]).unwrap();
    b.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    a.wait_state(1, "BACKUP", Duration::from_secs(1)).unwrap();
    // It answers until it has heard b's advert (make-before-break), then lets go.
    let start = std::time::Instant::now();
    while a.status().unwrap().vhids[0].handing_over {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a still handing over"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!addrs(&lan, 0).contains("192.0.2.50"));

    // b stops gracefully: its bow-out advert makes a master at once.
    b.signal(Signal::SIGTERM).unwrap();
    let gap = a.wait_state(1, "MASTER", Duration::from_secs(1)).unwrap();
    println!("takeover after SIGTERM of the master: {gap:?}");
    assert!(addrs(&lan, 0).contains("192.0.2.50/32"));
    assert!(
        !addrs(&lan, 1).contains("192.0.2.50"),
        "b removed its VIP on exit"
    );
    drop(b);
    // And a exits 0 on SIGTERM too, after answering for the master-down time nobody took
    // over in (b is gone): 3 x advbase + 1 s.
    a.signal(Signal::SIGTERM).unwrap();
    assert!(a.wait(Duration::from_secs(8)).unwrap().success());
}

#[test]
fn sighup_keeps_mastership_of_unchanged_vhids() {
    let dir = TempDir::new("hup").unwrap();
    let lan = Lan::new("hup", &["a"]).unwrap();
    let one = vhid("eth0", 1, "192.0.2.50/24", 0, "", &dir);
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &one).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    let two = vhid("eth0", 2, "192.0.2.51/24", 0, "", &dir);
    a.rewrite(&format!("{one}\n{two}")).unwrap();
    a.signal(Signal::SIGHUP).unwrap();
    a.wait_state(2, "BACKUP", Duration::from_secs(2)).unwrap();
    let first = &a.status().unwrap().vhids[0];
    assert_eq!((first.vhid, first.state), (1, State::MASTER), "{first:?}");
    // VHID 1 never left MASTER: still its first two transitions (INIT->BACKUP->MASTER).
    assert_eq!(first.transitions, 2, "{first:?}");
    a.wait_state(2, "MASTER", Duration::from_secs(5)).unwrap();

    // Where the VIPs live is set once, at start: a reload that moves them is refused
    // whole (VHID 3 does not start either) and the masters keep their VIPs where they are.
    let three = vhid("eth0", 3, "192.0.2.52/24", 0, "", &dir);
    a.rewrite(&format!("vips_on = \"interface\"\n\n{one}\n{two}\n{three}"))
        .unwrap();
    let err = a.ctl(&["reload"]).unwrap_err().to_string();
    assert!(
        err.contains("[agent] vips_on cannot change on reload: restart the agent"),
        "{err}"
    );
    let status = a.status().unwrap();
    assert!(status.vhids.iter().all(|v| v.vhid != 3), "{status:?}");
    let one = &status.vhids[0];
    assert_eq!(
        (one.vhid, one.state, one.transitions),
        (1, State::MASTER, 2)
    );
    let lo = lan.hosts[0]
        .ns
        .ip(&["-br", "addr", "show", "dev", "lo"])
        .unwrap();
    let lo = String::from_utf8_lossy(&lo.stdout);
    assert!(
        lo.contains("192.0.2.50/32") && lo.contains("192.0.2.51/32"),
        "{lo}"
    );
}

/// README: "A new interface, number, protocol, MAC mode, peer list or source restarts the
/// VHID", where other changes (advskew) apply in place. A restart shows in the status: the
/// master is a backup again with its transitions counted afresh (INIT->BACKUP), and the
/// new MAC mode answers ARP once it is master again.
#[test]
fn a_reload_restarts_a_vhid_given_a_new_mac_mode_or_source() {
    let dir = TempDir::new("restart").unwrap();
    let mut lan = Lan::new("restart", &["a"]).unwrap();
    lan.add_host("restart", "client").unwrap();
    let ns = &lan.hosts[0].ns;
    ns.ip(&["addr", "add", "192.0.2.100/24", "dev", "eth0"])
        .unwrap();
    let a = Agent::start(
        ns,
        dir.path(),
        "a",
        &vhid("eth0", 1, "192.0.2.50/24", 0, "", &dir),
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    let row = || a.status().unwrap().vhids[0].clone();
    let reload = |advskew, extra| {
        a.rewrite(&vhid("eth0", 1, "192.0.2.50/24", advskew, extra, &dir))
            .unwrap();
        a.ctl(&["reload"]).unwrap();
        row()
    };
    let kept = reload(10, "");
    assert_eq!(
        (kept.state, kept.transitions, kept.advskew),
        (State::MASTER, 2, 10),
        "advskew is changed in place"
    );
    for (what, extra) in [
        ("MAC mode", "mac = \"interface\""),
        ("source", "mac = \"interface\"\nsrc = \"192.0.2.100\""),
    ] {
        let fresh = reload(10, extra);
        assert_eq!(
            (fresh.state, fresh.transitions),
            (State::BACKUP, 1),
            "a new {what} did not restart the VHID: {fresh:?}"
        );
        a.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
            .unwrap();
    }
    assert_eq!(row().src, "192.0.2.100");
    assert_eq!(
        one_mac_answers(&lan.hosts[1].ns, "192.0.2.50"),
        lan.hosts[0].mac().unwrap()
    );
}

/// A reload applies whole or not at all: when one change cannot be made (VHID 2's `src`
/// is gone from eth0 since it started), the VHID changed before it in the file keeps its
/// settings and the new VHID does not start; with the address back, the same file
/// applies whole, the masters staying masters.
#[test]
fn a_reload_that_cannot_make_one_change_makes_none() {
    let dir = TempDir::new("whole").unwrap();
    let lan = Lan::new("whole", &["a"]).unwrap();
    let ns = &lan.hosts[0].ns;
    let src = ["addr", "add", "192.0.2.100/24", "dev", "eth0"];
    ns.ip(&src).unwrap();
    let pair = |advskew| {
        let one = vhid("eth0", 1, "192.0.2.50/24", advskew, "", &dir);
        let two = vhid(
            "eth0",
            2,
            "192.0.2.51/24",
            advskew,
            "src = \"192.0.2.100\"",
            &dir,
        );
        format!("{one}\n{two}")
    };
    let a = Agent::start(ns, dir.path(), "a", &pair(0)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    a.wait_state(2, "MASTER", Duration::from_secs(1)).unwrap();
    let settings = || {
        let status = a.status().unwrap();
        status
            .vhids
            .iter()
            .map(|v| (v.vhid, v.advskew, v.state))
            .collect::<Vec<_>>()
    };

    ns.ip(&["addr", "del", "192.0.2.100/24", "dev", "eth0"])
        .unwrap();
    let three = vhid("eth0", 3, "192.0.2.52/24", 0, "", &dir);
    a.rewrite(&format!("{}\n{three}", pair(10))).unwrap();
    let err = a.ctl(&["reload"]).unwrap_err().to_string();
    assert_eq!(
        settings(),
        [(1, 0, State::MASTER), (2, 0, State::MASTER)],
        "a failed reload changed something: {err}"
    );
    assert!(err.contains("vhid 2 on eth0"), "{err}");

    ns.ip(&src).unwrap();
    a.ctl(&["reload"]).unwrap();
    let now = settings();
    assert_eq!(
        now[..2],
        [(1, 10, State::MASTER), (2, 10, State::MASTER)],
        "{now:?}"
    );
    assert_eq!(now.get(2).map(|v| (v.0, v.1)), Some((3, 0)), "{now:?}");
}

#[test]
fn hooks_run_with_ucarp_arguments_and_carp_environment() {
    let dir = TempDir::new("hook").unwrap();
    let lan = Lan::new("hook", &["a"]).unwrap();
    let out = dir.path().join("hooks.out");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$0 $1 $2 vhid=$CARP_VHID $CARP_OLD_STATE>$CARP_STATE if=$CARP_INTERFACE vips=$CARP_VIPS\" >> {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    let extra = format!(
        "up_script = \"{0}\"\ndown_script = \"{0}\"",
        script.display()
    );
    let mut a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &vhid("eth0", 3, "192.0.2.53/24", 0, &extra, &dir),
    )
    .unwrap();
    a.wait_state(3, "MASTER", Duration::from_secs(6)).unwrap();
    a.signal(Signal::SIGTERM).unwrap();
    assert!(a.wait(Duration::from_secs(5)).unwrap().success());
    let text = std::fs::read_to_string(&out).unwrap();
    let s = script.display();
    assert_eq!(
        text,
        format!(
            "{s} eth0 192.0.2.53 vhid=3 BACKUP>MASTER if=eth0 vips=192.0.2.53\n\
             {s} eth0 192.0.2.53 vhid=3 MASTER>INIT if=eth0 vips=192.0.2.53\n"
        )
    );
}

/// Two agents in `mode`, a client arping the VIP: one MAC answers, from the master's
/// XDP program; the backup's drops the requests. The client's pings to the VIP (to its
/// virtual MAC) are answered: the master takes frames for it.
fn arp_answered_by_the_master_only(tag: &str, mode: &str, peer_xdp: bool) {
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    // Native XDP_TX on a veth reaches the peer only when the peer runs XDP as well.
    let mut pass_through = Vec::new();
    if peer_xdp {
        for h in 0..2 {
            let mut dp = DataPlane::load().unwrap();
            let port = lan.hosts[h].port.clone();
            lan.switch
                .enter(|| dp.attach(&port, XdpMode::Driver))
                .unwrap();
            pass_through.push(dp);
        }
    }
    let cfg = |skew| {
        format!(
            "xdp_mode = \"{mode}\"\n\n{}",
            vhid("eth0", 1, "192.0.2.50/24", skew, "", &dir)
        )
    };
    // xdp_mode belongs to [agent]: the harness writes that section first.
    let (a, b) = start_pair(&lan, dir.path(), 1, &cfg(0), &cfg(100)).unwrap();
    assert_eq!(a.status().unwrap().interfaces[0].xdp_mode.to_string(), mode);
    let arping = lan.hosts[2]
        .ns
        .command("arping")
        .args(["-c", "3", "-d", "-I", "eth0", "192.0.2.50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&arping.stdout);
    // -d: exit 1 when two different MACs answer. The answer is the virtual MAC.
    assert!(arping.status.success(), "{text}");
    assert!(text.to_lowercase().contains("00:00:5e:00:01:01"), "{text}");
    assert!(
        a.xdp_counter("arp_replied") >= 3,
        "{}",
        a.ctl(&["status"]).unwrap()
    );
    assert_eq!(b.xdp_counter("arp_replied"), 0);
    assert!(
        b.xdp_counter("arp_dropped") >= 3,
        "{}",
        b.ctl(&["status"]).unwrap()
    );
    // Native XDP on a veth is the exception: veth classed the frame before its XDP program
    // ran and does not class it again, so the stack drops it as another host's (counted
    // as `otherhost`). Real drivers run XDP before they build the skb.
    if mode != "native" {
        let ping = lan.hosts[2]
            .ns
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "1", "192.0.2.50"])
            .output()
            .unwrap();
        assert!(ping.status.success(), "{ping:?}");
        assert!(a.xdp_counter("vmac_passed") >= 3);
    }
}

#[test]
fn only_the_master_answers_arp_for_the_vip_generic_xdp() {
    arp_answered_by_the_master_only("arps", "skb", false);
}

#[test]
fn only_the_master_answers_arp_for_the_vip_native_xdp() {
    arp_answered_by_the_master_only("arpn", "native", true);
}

/// At tc ingress the answers leave by redirect: no XDP program on the peer is needed.
#[test]
fn only_the_master_answers_arp_for_the_vip_tc() {
    arp_answered_by_the_master_only("arpt", "tc", false);
}

#[test]
fn configuration_mistakes_exit_2_with_one_line_each() {
    let dir = TempDir::new("bad").unwrap();
    let lan = Lan::new("bad", &["a"]).unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[[vhid]]\ninterface = \"eth9\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\n\
         [[vhid]]\ninterface = \"eth0\"\nvhid = 2\nvips = [\"198.51.100.7/24\"]\nadvbase = 0\n",
    )
    .unwrap();
    let out = lan.hosts[0]
        .ns
        .command(agent_bin().to_str().unwrap())
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("advbase must be 1..=255"), "{err}");
    // Syntax and values first; the system checks come once those pass. A VIP that is the
    // host's own address would be taken from it while BACKUP; an interface that is not
    // there yet is no mistake (late.rs: its VHID waits for it).
    std::fs::write(&cfg, "[[vhid]]\ninterface = \"eth9\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\n[[vhid]]\ninterface = \"eth0\"\nvhid = 2\nvips = [\"192.0.2.1/24\"]\n").unwrap();
    let out = lan.hosts[0]
        .ns
        .command(agent_bin().to_str().unwrap())
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("eth9"), "{err}");
    assert!(
        err.contains("vhid 2 on eth0: VIP 192.0.2.1 is already an address of this host"),
        "{err}"
    );
    assert!(
        !Command::new("ip")
            .args(["-n", lan.hosts[0].ns.name(), "link", "show", "eth0"])
            .output()
            .unwrap()
            .stdout
            .is_empty()
    );
}

#[test]
fn cable_pull_demotes_and_the_backup_takes_over_then_preempt_takes_back() {
    let dir = TempDir::new("cable").unwrap();
    let mut lan = Lan::new("cable", &["a", "b"]).unwrap();
    lan.add_host("cable", "client").unwrap();
    let (a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid("eth0", 1, "192.0.2.50/24", 0, "preempt = true", &dir),
        &vhid("eth0", 1, "192.0.2.50/24", 100, "", &dir),
    )
    .unwrap();
    // The TC/BSD field test: the cable is pulled under continuous ping.
    let probe = Probe::start(&lan.hosts[2].ns, "192.0.2.50").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lan.cable(0, false).unwrap();
    // Carrier loss: INIT at once, VIP gone, demoted by 240 as FreeBSD does.
    a.wait_state(1, "INIT", Duration::from_secs(2)).unwrap();
    assert!(!addrs(&lan, 0).contains("192.0.2.50"));
    assert_eq!(a.status().unwrap().demotion, 240);
    let gap = b
        .wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    println!(
        "cable pull: takeover {gap:?}, ping gap {:?} (bound {MASTER_DOWN:?})",
        probe.max_gap()
    );
    assert!(probe.max_gap() < MASTER_DOWN + Duration::from_secs(1));
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
    lan.cable(0, true).unwrap();
    let back = a.wait_state(1, "MASTER", Duration::from_secs(5)).unwrap();
    println!("preempted back {back:?} after the cable came back");
    b.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    assert_eq!(a.status().unwrap().demotion, 0);
}

#[test]
fn unicast_peers_elect_and_fail_over() {
    let dir = TempDir::new("uni").unwrap();
    let lan = Lan::new("uni", &["a", "b"]).unwrap();
    let a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &vhid(
            "eth0",
            1,
            "192.0.2.50/24",
            0,
            "peers = [\"192.0.2.2\"]",
            &dir,
        ),
    )
    .unwrap();
    // a first: whoever finishes loading its XDP program first would otherwise win.
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let b = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "b",
        &vhid(
            "eth0",
            1,
            "192.0.2.50/24",
            100,
            "peers = [\"192.0.2.1\"]",
            &dir,
        ),
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let backup = &b.status().unwrap().vhids[0];
    assert_eq!(backup.state, State::BACKUP);
    assert!(
        backup.adverts_received > 0,
        "unicast adverts arrive: {backup:?}"
    );
    a.signal(Signal::SIGKILL).unwrap();
    b.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
}

#[test]
fn a_second_agent_is_refused_and_the_ucarp_command_line_works() {
    let dir = TempDir::new("cli").unwrap();
    let lan = Lan::new("cli", &["a"]).unwrap();
    let pw = dir.path().join("pw");
    carp_tests::agent::write_secret(&pw, "cli-pass\n").unwrap();
    let socket = dir.path().join("ucarp.sock");
    let mut ucarp_style = lan.hosts[0]
        .ns
        .command(agent_bin().to_str().unwrap())
        .args(["--socket", socket.to_str().unwrap()])
        .args([
            "-i",
            "eth0",
            "-s",
            "192.0.2.1",
            "-v",
            "9",
            "-a",
            "192.0.2.59",
            "-b",
            "1",
            "-k",
            "0",
        ])
        .arg("-o")
        .arg(&pw)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let probe = Agent::client(&socket);
    let ok = probe.wait_state(9, "MASTER", Duration::from_secs(6));
    // A second agent on the same host: refused at once, naming the running one.
    let second = lan.hosts[0]
        .ns
        .command(agent_bin().to_str().unwrap())
        .args(["--socket", socket.to_str().unwrap()])
        .args(["-i", "eth0", "-v", "10", "-a", "192.0.2.60"])
        .output()
        .unwrap();
    let _ = ucarp_style.kill();
    let _ = ucarp_style.wait();
    ok.unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another carp-agent is already running"),
        "{err}"
    );
}
