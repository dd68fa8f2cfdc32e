//! Fault injection on a bridged LAN in namespaces: the seeds' layout, demotion, a node with
//! the wrong password, partition and heal, loss, freeze and thaw, IPv6. Every failover
//! check ends with the split-brain detector (`arping -d`: one MAC answers for the VIP).
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::control::Verdict;
use carp_common::State;
use carp_tests::{
    agent::{Agent, TempDir, start_pair},
    lan::{Lan, one_mac_answers},
    probe::Probe,
};
use nix::sys::signal::Signal;
use std::time::Duration;

const PASSWORD: &str = "failover-secret";
/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
const WAIT: Duration = Duration::from_secs(8);

fn vhid(vhid: u8, vip: &str, advskew: u8, extra: &str, dir: &TempDir, password: &str) -> String {
    let pw = dir.path().join(format!("pass-{password}"));
    carp_tests::agent::write_secret(&pw, password).unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = {vhid}\nvips = [\"{vip}\"]\n\
         advskew = {advskew}\npass_file = \"{}\"\n{extra}\n",
        pw.display()
    )
}

/// A master "a" and a backup "b" of VHID 1 on `vip`, each with its advskew and extra
/// settings, and a client as host 2, on a LAN of their own. Bound in this order, the
/// agents drop before their namespaces and files.
fn group(
    tag: &str,
    vip: &str,
    (skew_a, extra_a): (u8, &str),
    (skew_b, extra_b): (u8, &str),
) -> (TempDir, Lan, Agent, Agent) {
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let (a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid(1, vip, skew_a, extra_a, &dir, PASSWORD),
        &vhid(1, vip, skew_b, extra_b, &dir, PASSWORD),
    )
    .unwrap();
    (dir, lan, a, b)
}

/// Drops IP protocol 112 crossing the bridge: every one (a partition), or every `n`th.
fn drop_adverts(lan: &Lan, every: Option<u32>) {
    let sample = every.map_or_else(String::new, |n| format!("numgen inc mod {n} == 0"));
    lan.nft(&format!(
        "table bridge carptest {{\n chain filt {{\n type filter hook forward priority 0;\n \
             ip protocol 112 {sample} drop\n }}\n}}\n"
    ))
    .unwrap();
}

fn heal(lan: &Lan) {
    lan.nft("delete table bridge carptest").unwrap();
}

#[test]
fn seeds_layout_each_vip_is_answered_by_its_master() {
    let dir = TempDir::new("seeds").unwrap();
    let mut lan = Lan::new("seeds", &["hosta", "hostb", "hostc"]).unwrap();
    lan.add_host("seeds", "client").unwrap();
    let a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "hosta",
        &vhid(1, "192.0.2.50/24", 0, "", &dir, PASSWORD),
    )
    .unwrap();
    let b = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "hostb",
        &vhid(2, "192.0.2.51/24", 0, "", &dir, PASSWORD),
    )
    .unwrap();
    a.wait_state(1, "MASTER", WAIT).unwrap();
    b.wait_state(2, "MASTER", WAIT).unwrap();
    let c_conf = vhid(1, "192.0.2.50/24", 100, "", &dir, PASSWORD)
        + &vhid(2, "192.0.2.51/24", 100, "", &dir, PASSWORD);
    let c = Agent::start(&lan.hosts[2].ns, dir.path(), "hostc", &c_conf).unwrap();
    c.wait_state(1, "BACKUP", WAIT).unwrap();
    c.wait_state(2, "BACKUP", WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(c.state(1).as_deref(), Some("BACKUP"));
    assert_eq!(c.state(2).as_deref(), Some("BACKUP"));
    // Each VIP answered by one MAC, its VHID's virtual MAC, from its master.
    assert_eq!(
        one_mac_answers(&lan.hosts[3].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
    assert_eq!(
        one_mac_answers(&lan.hosts[3].ns, "192.0.2.51"),
        "00:00:5e:00:01:02"
    );
    assert!(a.xdp_counter("arp_replied") >= 3 && b.xdp_counter("arp_replied") >= 3);
    assert_eq!(c.xdp_counter("arp_replied"), 0);
    // hostb dies: hostc takes VHID 2 and keeps VHID 1 as backup.
    drop(b);
    let gap = c
        .wait_state(2, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    println!("seeds: hostc took VHID 2 {gap:?} after hostb was killed");
    assert_eq!(c.state(1).as_deref(), Some("BACKUP"));
    assert_eq!(
        one_mac_answers(&lan.hosts[3].ns, "192.0.2.51"),
        "00:00:5e:00:01:02"
    );
}

#[test]
fn demotion_hands_over_and_negative_demotion_takes_over() {
    let (_dir, lan, a, b) = group(
        "demote",
        "192.0.2.50/24",
        (50, "preempt = true"),
        (100, "preempt = true"),
    );
    let probe = Probe::start(&lan.hosts[2].ns, "192.0.2.50").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // a demoted past b: it advertises the new skew at once and b preempts.
    a.ctl(&["demote", "+240"]).unwrap();
    let took = b.wait_state(1, "MASTER", Duration::from_secs(2)).unwrap();
    a.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "demotion handover: b MASTER after {took:?}, longest ping gap {:?}",
        probe.max_gap()
    );
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
    // Undo: a preempts back.
    a.ctl(&["demote", "=0"]).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    // Negative demotion (FreeBSD PR 259528) makes b (100 - 150 -> 0) preferred over a (50).
    b.ctl(&["demote", "-150"]).unwrap();
    b.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    a.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    assert_eq!(b.status().unwrap().demotion, -150);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        probe.max_gap() < Duration::from_secs(1),
        "gap {:?}",
        probe.max_gap()
    );
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
}

#[test]
fn a_failing_health_check_hands_over_and_its_recovery_takes_back() {
    // The check passes while this file exists (keepalived's `track_file`, as a command).
    let flag = TempDir::new("check-flag").unwrap();
    let up = flag.path().join("web-up");
    std::fs::write(&up, "").unwrap();
    let with_check = format!(
        "preempt = true\ngroups = [\"web\"]\n\n[[check]]\nname = \"web\"\n\
         command = [\"/usr/bin/test\", \"-e\", \"{}\"]\ninterval = 0.2\nfall = 2\nrise = 3\n\
         group = \"web\"\n",
        up.display()
    );
    let (dir, lan, a, b) = group(
        "check",
        "192.0.2.50/24",
        (0, &with_check),
        (100, "preempt = true"),
    );
    let check = &a.status().unwrap().checks[0];
    assert_eq!(
        (
            check.name.as_str(),
            check.state,
            check.demote,
            check.group.as_deref()
        ),
        ("web", Verdict::Healthy, 240, Some("web"))
    );
    let probe = Probe::start(&lan.hosts[2].ns, "192.0.2.50").unwrap();
    std::thread::sleep(Duration::from_millis(500));

    std::fs::remove_file(&up).unwrap();
    let took = b.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    a.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    let status = a.status().unwrap();
    let check = &status.checks[0];
    assert_eq!(check.state, Verdict::Failing, "{check:?}");
    assert_eq!(check.last_failure.as_deref(), Some("exit status: 1"));
    // Only the group is demoted: the VHID counts 240, the host-wide counter stays 0.
    assert_eq!((status.vhids[0].demotion, status.demotion), (240, 0));
    assert!(
        a.log_text()
            .contains("check web failing (exit status: 1): demoting group web by 240")
    );

    std::fs::write(&up, "").unwrap();
    let back = a.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "check failing -> b MASTER after {took:.2?}; healthy -> a MASTER after {back:.2?}; \
         longest ping gap {:?}",
        probe.max_gap()
    );
    assert!(
        probe.max_gap() < Duration::from_secs(1),
        "gap {:?}",
        probe.max_gap()
    );
    let json = a.ctl(&["status", "--json"]).unwrap();
    assert!(
        json.contains("\"name\": \"web\",\n      \"state\": \"healthy\""),
        "{json}"
    );
    drop(a);

    // Down at start: the first run demotes before the first election, so a never takes
    // over from b, preempt and a better skew notwithstanding.
    std::fs::remove_file(&up).unwrap();
    let a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &vhid(1, "192.0.2.50/24", 0, &with_check, &dir, PASSWORD),
    )
    .unwrap();
    a.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
    std::thread::sleep(MASTER_DOWN + Duration::from_secs(1));
    assert_eq!(a.state(1).as_deref(), Some("BACKUP"));
    assert_eq!(b.state(1).as_deref(), Some("MASTER"));
    assert_eq!(a.status().unwrap().checks[0].state, Verdict::Failing);

    // A reload that drops the failing check gives its demotion back: a preempts.
    a.rewrite(&vhid(
        1,
        "192.0.2.50/24",
        0,
        "preempt = true\ngroups = [\"web\"]",
        &dir,
        PASSWORD,
    ))
    .unwrap();
    a.ctl(&["reload"]).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    assert!(a.status().unwrap().checks.is_empty());
}

#[test]
fn a_wrong_password_or_another_vhid_never_disturbs_the_group() {
    let dir = TempDir::new("wrongpw").unwrap();
    let lan = Lan::new("wrongpw", &["a", "b", "rogue", "other"]).unwrap();
    let (a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid(1, "192.0.2.50/24", 100, "", &dir, PASSWORD),
        &vhid(1, "192.0.2.50/24", 200, "", &dir, PASSWORD),
    )
    .unwrap();
    let (ta, tb) = (a.transitions(), b.transitions());
    // A node with the wrong password and the most attractive settings, and one on VHID 2.
    let rogue = Agent::start(
        &lan.hosts[2].ns,
        dir.path(),
        "rogue",
        &vhid(1, "192.0.2.50/24", 0, "preempt = true", &dir, "wrong"),
    )
    .unwrap();
    let other = Agent::start(
        &lan.hosts[3].ns,
        dir.path(),
        "other",
        &vhid(2, "192.0.2.52/24", 0, "", &dir, PASSWORD),
    )
    .unwrap();
    rogue.wait_state(1, "MASTER", WAIT).unwrap();
    other.wait_state(2, "MASTER", WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (a.transitions(), b.transitions()),
        (ta, tb),
        "the group was disturbed"
    );
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
    assert!(a.xdp_counter("bad_hmac") >= 3 && b.xdp_counter("bad_hmac") >= 3);
    assert!(
        b.xdp_counter("foreign") >= 3,
        "VHID 2's adverts pass untouched"
    );
}

#[test]
fn partition_gives_two_masters_and_the_heal_returns_to_one_within_three_adverts() {
    let (_dir, lan, a, b) = group("part", "192.0.2.50/24", (0, ""), (100, ""));
    drop_adverts(&lan, None);
    b.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        a.state(1).as_deref(),
        Some("MASTER"),
        "two masters while partitioned"
    );
    heal(&lan);
    // b (advskew 100) yields to the first advert of a (advskew 0): one advert interval.
    let took = b.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
    println!("partition healed: one master again after {took:?}");
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
}

#[test]
fn twenty_percent_advert_loss_causes_no_flap_in_60_seconds() {
    let dir = TempDir::new("loss").unwrap();
    let lan = Lan::new("loss", &["a", "b"]).unwrap();
    let (a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid(1, "192.0.2.50/24", 0, "", &dir, PASSWORD),
        &vhid(1, "192.0.2.50/24", 100, "", &dir, PASSWORD),
    )
    .unwrap();
    let (ta, tb) = (a.transitions(), b.transitions());
    // Every fifth advert lost: 20 %, spread out. Random 20 % loss would lose three in a row
    // (the 3 x advbase master-down) with ~40 % odds per minute, and BSD CARP would flap.
    drop_adverts(&lan, Some(5));
    std::thread::sleep(Duration::from_secs(60));
    let received = b.ctl(&["status"]).unwrap();
    assert_eq!(
        (a.transitions(), b.transitions()),
        (ta, tb),
        "flapped:\n{received}"
    );
    println!(
        "60 s at 20 % advert loss, no flap; backup's view: {}",
        received.lines().nth(2).unwrap_or_default().trim()
    );
}

#[test]
fn a_frozen_master_thaws_into_exactly_one_master() {
    let (_dir, lan, a, b) = group("freeze", "192.0.2.50/24", (0, ""), (100, ""));
    a.signal(Signal::SIGSTOP).unwrap();
    b.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    a.signal(Signal::SIGCONT).unwrap();
    // a's overdue advert (advskew 0) wins: b steps down, a stays.
    b.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(1)).unwrap();
    let (ta, tb) = (a.transitions(), b.transitions());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        (a.transitions(), b.transitions()),
        (ta, tb),
        "flapping after the thaw"
    );
    assert_eq!(
        one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"),
        "00:00:5e:00:01:01"
    );
}

/// A frozen agent cannot withdraw its XDP program's answers, so the program holds a lease
/// the agent renews with every advert: the frozen master goes quiet before a backup takes
/// over. With the interfaces' own MACs (ucarp's way) a second answer would show.
#[test]
fn a_frozen_master_stops_answering_before_the_backup_takes_over() {
    let mac_mode = "mac = \"interface\"";
    let (_dir, lan, a, b) = group("lease", "192.0.2.50/24", (0, mac_mode), (100, mac_mode));
    let mac = |i: usize| {
        let out = lan.hosts[i]
            .ns
            .ip(&["-br", "link", "show", "eth0"])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace().nth(2).unwrap().to_owned()
    };
    assert_eq!(one_mac_answers(&lan.hosts[2].ns, "192.0.2.50"), mac(0));
    a.signal(Signal::SIGSTOP).unwrap();
    let took = b
        .wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    println!("a frozen: b MASTER after {took:.2?}");
    let answer = one_mac_answers(&lan.hosts[2].ns, "192.0.2.50");
    a.signal(Signal::SIGCONT).unwrap();
    assert_eq!(answer, mac(1), "the frozen master still answered");
}

#[test]
fn an_ipv6_vip_is_answered_by_the_master_only() {
    let (_dir, lan, a, b) = group("v6", "2001:db8::50/64", (0, ""), (100, ""));
    let ping = lan.hosts[2]
        .ns
        .command("ping")
        .args(["-6", "-c", "3", "-i", "0.2", "-W", "1", "2001:db8::50"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let neigh = lan.hosts[2]
        .ns
        .ip(&["-6", "neigh", "show", "2001:db8::50"])
        .unwrap();
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(neigh.contains("00:00:5e:00:01:01"), "{neigh}");
    assert!(
        a.xdp_counter("na_sent") >= 1,
        "{}",
        a.ctl(&["status"]).unwrap()
    );
    assert_eq!(b.xdp_counter("na_sent"), 0);
    assert!(
        b.xdp_counter("ns_dropped") >= 1,
        "{}",
        b.ctl(&["status"]).unwrap()
    );
}

/// Day two: a reload that changes a running VHID applies it in place, as FreeBSD's
/// `ifconfig em0 vhid 1 advskew 10` does. Reloading the backup, then the master, for each
/// kind of change — advskew up and down, a VIP added and removed, preemption on and off, a
/// hook, the password (the documented order: backups first) — keeps the master MASTER
/// with no transition, and a client pinging every 10 ms loses no probe (a restart of the
/// VHID cost 3.0 s). The added VIP answers at once; the removed one leaves lo and answers
/// neither ping nor ARP.
#[test]
fn a_reload_that_changes_a_vhid_keeps_the_master_answering() {
    let (dir, lan, a, b) = group("reload", "192.0.2.50/24", (0, ""), (100, ""));
    let probe = Probe::start(&lan.hosts[2].ns, "192.0.2.50").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (ta, tb) = (a.transitions(), b.transitions());
    let hook = dir.path().join("up.sh");
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // Per step: what changes, the VIP list, the master's advskew (the backup's is 100
    // more), the backup's extra settings and the password.
    let one = "192.0.2.50/24";
    let two = "192.0.2.50/24\", \"192.0.2.60/24";
    let hook_only = format!("up_script = \"{}\"", hook.display());
    let hooked = format!("preempt = true\n{hook_only}");
    let rotated = "rotated-secret";
    let steps = [
        ("advskew up", one, 10, "", PASSWORD),
        ("VIP added", two, 10, "", PASSWORD),
        ("preempt on", two, 10, "preempt = true", PASSWORD),
        ("hook", two, 10, hooked.as_str(), PASSWORD),
        ("preempt off", two, 10, hook_only.as_str(), PASSWORD),
        ("advskew down", two, 0, hook_only.as_str(), PASSWORD),
        ("password", two, 0, hook_only.as_str(), rotated),
        ("VIP removed", one, 0, hook_only.as_str(), rotated),
    ];
    for (what, vips, skew, extra_b, password) in steps {
        // This step's gaps, from the last reply before it.
        let first = probe.count().saturating_sub(1);
        b.rewrite(&vhid(1, vips, skew + 100, extra_b, &dir, password))
            .unwrap();
        a.rewrite(&vhid(1, vips, skew, "", &dir, password)).unwrap();
        b.ctl(&["reload"]).unwrap();
        a.ctl(&["reload"]).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let (sa, sb) = (a.status().unwrap(), b.status().unwrap());
        assert_eq!(
            (sa.vhids[0].state, sb.vhids[0].state),
            (State::MASTER, State::BACKUP),
            "{what}"
        );
        assert_eq!((a.transitions(), b.transitions()), (ta, tb), "{what}");
        assert_eq!(sa.vhids[0].advskew, skew, "{what}");
        assert_eq!(sa.vhids[0].vips.len(), vips.matches('/').count(), "{what}");
        // Lost probes, not the longest gap: under load ping itself stalls for tens of
        // milliseconds with nothing lost, while a restarted VHID loses ~300.
        let gap = probe.max_gap_from(first);
        let (lost, _) = probe.lost_from(first);
        println!("{what}: the longest gap {gap:?}, {lost} probes lost");
        assert_eq!(lost, 0, "{what}: probes lost (longest gap {gap:?})");
        if what == "VIP added" {
            let ping = lan.hosts[2]
                .ns
                .command("ping")
                .args(["-c", "2", "-W", "1", "192.0.2.60"])
                .output()
                .unwrap();
            assert!(ping.status.success(), "the added VIP does not answer");
        }
        if what == "VIP removed" {
            // Gone from lo, and nothing answers it: not a ping to the vMAC the client
            // still has cached, not an ARP request.
            assert!(!lan.hosts[0].has_address("lo", "192.0.2.60").unwrap());
            let client = &lan.hosts[2].ns;
            let ping = ["-c", "2", "-i", "0.2", "-W", "1", "192.0.2.60"];
            let ping = client.command("ping").args(ping).output().unwrap();
            assert!(!ping.status.success(), "the removed VIP answers ping");
            let arping = [
                "-c",
                "2",
                "-W",
                "0.2",
                "-w",
                "1",
                "-I",
                "eth0",
                "192.0.2.60",
            ];
            let arping = client.command("arping").args(arping).output().unwrap();
            // Habets' arping exits 1 when nothing answered.
            assert_eq!(
                arping.status.code(),
                Some(1),
                "the removed VIP answers ARP: {}",
                String::from_utf8_lossy(&arping.stdout)
            );
        }
    }
    // A rolling change, the master reloaded well after its backup's master-down time:
    // the backup still verifies the master's digest over the old VIP list.
    b.rewrite(&vhid(1, two, 100, &hook_only, &dir, rotated))
        .unwrap();
    a.rewrite(&vhid(1, two, 0, "", &dir, rotated)).unwrap();
    b.ctl(&["reload"]).unwrap();
    std::thread::sleep(MASTER_DOWN + Duration::from_secs(1));
    assert_eq!(
        b.state(1).as_deref(),
        Some("BACKUP"),
        "the backup took over"
    );
    a.ctl(&["reload"]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((a.transitions(), b.transitions()), (ta, tb));
    assert_eq!(b.xdp_counter("bad_hmac"), 0);
    assert!(
        a.log_text().contains(
            "changed (carp advbase 1 advskew 0 -> carp advbase 1 advskew 10), MASTER kept"
        )
    );
}
