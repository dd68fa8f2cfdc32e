//! carp-agent against the real peers it must interoperate with: Debian's ucarp (CARP,
//! same VHID and password) and keepalived (VRRPv3), each way round; and tshark's reading
//! of our adverts.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::config::Protocol;
use carp_common::State;
use carp_tests::{
    agent::{Agent, TempDir, start_pair},
    lan::Lan,
    netns::Netns,
    peers::{Keepalived, Ucarp, ucarp_state, wait_ucarp},
};
use nix::sys::signal::Signal;
use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

const PASSWORD: &str = "peer-secret";

fn config(dir: &TempDir, advskew: u8) -> String {
    let pw = dir.path().join("pass");
    carp_tests::agent::write_secret(&pw, PASSWORD).unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\nadvskew = {advskew}\n\
         pass_file = \"{}\"\nmac = \"interface\"\n",
        pw.display()
    )
}

#[test]
fn ucarp_master_and_our_backup_then_we_take_over() {
    let dir = TempDir::new("uc1").unwrap();
    let lan = Lan::new("uc1", &["u", "c"]).unwrap();
    let log = dir.path().join("ucarp.log");
    let pass = dir.path().join("pass");
    carp_tests::agent::write_secret(&pass, PASSWORD).unwrap();
    let ucarp = Ucarp::start(&lan.hosts[0].ns, "192.0.2.1", 0, &pass, &log);
    wait_ucarp(&log, "MASTER", Duration::from_secs(6));
    let ours = Agent::start(&lan.hosts[1].ns, dir.path(), "ours", &config(&dir, 100)).unwrap();
    ours.wait_state(1, "BACKUP", Duration::from_secs(3))
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // ucarp's adverts verify here and keep us backup past our master-down time.
    let status = ours.status().unwrap();
    assert_eq!(status.vhids[0].state, State::BACKUP, "{status:?}");
    assert!(status.vhids[0].adverts_received > 0, "{status:?}");
    assert_eq!(ours.xdp_counter("bad_hmac"), 0, "{status:?}");
    drop(ucarp);
    let gap = ours
        .wait_state(
            1,
            "MASTER",
            Duration::from_micros(3_390_625) + Duration::from_secs(1),
        )
        .unwrap();
    println!("our takeover after ucarp was killed: {gap:?}");
}

#[test]
fn our_master_and_ucarp_backup_then_ucarp_takes_over_on_our_bow_out() {
    let dir = TempDir::new("uc2").unwrap();
    let lan = Lan::new("uc2", &["c", "u"]).unwrap();
    let ours = Agent::start(&lan.hosts[0].ns, dir.path(), "ours", &config(&dir, 0)).unwrap();
    ours.wait_state(1, "MASTER", Duration::from_secs(6))
        .unwrap();
    let log = dir.path().join("ucarp.log");
    let _ucarp = Ucarp::start(
        &lan.hosts[1].ns,
        "192.0.2.2",
        100,
        &dir.path().join("pass"),
        &log,
    );
    wait_ucarp(&log, "BACKUP", Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("Bad digest"),
        "ucarp rejected our adverts:\n{text}"
    );
    assert_eq!(ucarp_state(&log).as_deref(), Some("BACKUP"), "{text}");
    // Our graceful stop bows out (advbase 255): ucarp treats that as a master certain to
    // time out and takes over at once.
    ours.signal(Signal::SIGTERM).unwrap();
    let gap = wait_ucarp(&log, "MASTER", Duration::from_secs(2));
    println!("ucarp takeover after our SIGTERM: {gap:?}");
}

fn vrrp_config(vrid: u8, priority: u8, vip: &str) -> String {
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = {vrid}\nprotocol = \"vrrp3\"\npriority = {priority}\n\
         interval_ms = 1000\npreempt = true\nvips = [\"{vip}\"]\n"
    )
}

#[test]
fn keepalived_master_and_our_vrrp3_backup_then_we_take_over() {
    let dir = TempDir::new("ka1").unwrap();
    let lan = Lan::new("ka1", &["k", "c"]).unwrap();
    let ka = Keepalived::start(&lan.hosts[0].ns, dir.path(), "k", 51, 200, "192.0.2.60/24");
    ka.wait("MASTER", Duration::from_secs(8));
    let ours = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "ours",
        &vrrp_config(51, 100, "192.0.2.60/24"),
    )
    .unwrap();
    ours.wait_state(51, "BACKUP", Duration::from_secs(3))
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let v = &ours.status().unwrap().vhids[0];
    assert_eq!(
        (v.vhid, v.state, v.protocol, v.priority),
        (51, State::BACKUP, Protocol::VRRPV3, 100)
    );
    assert!(v.adverts_received > 0, "{v:?}");
    assert_eq!(ka.state().as_deref(), Some("MASTER"));
    ka.signal(Signal::SIGKILL);
    // Master_Down_Interval = 3 * 1 s + (256 - 100) / 256 s.
    let gap = ours
        .wait_state(
            51,
            "MASTER",
            Duration::from_millis(3609) + Duration::from_secs(1),
        )
        .unwrap();
    println!("our VRRPv3 takeover after keepalived was killed: {gap:?}");
}

#[test]
fn our_vrrp3_master_and_keepalived_backup_then_keepalived_takes_over_on_priority_0() {
    let dir = TempDir::new("ka2").unwrap();
    let lan = Lan::new("ka2", &["c", "k"]).unwrap();
    let ours = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "ours",
        &vrrp_config(51, 200, "192.0.2.60/24"),
    )
    .unwrap();
    ours.wait_state(51, "MASTER", Duration::from_secs(6))
        .unwrap();
    let ka = Keepalived::start(&lan.hosts[1].ns, dir.path(), "k", 51, 100, "192.0.2.60/24");
    ka.wait("BACKUP", Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ka.state().as_deref(),
        Some("BACKUP"),
        "keepalived accepted our adverts"
    );
    ours.signal(Signal::SIGTERM).unwrap();
    // Priority 0: the backup takes over after Skew_Time, (256 - 100) / 256 s.
    let gap = ka.wait("MASTER", Duration::from_secs(2));
    println!("keepalived takeover after our SIGTERM (priority 0): {gap:?}");
}

#[test]
fn a_carp_group_and_a_keepalived_group_share_a_segment_and_a_number() {
    let dir = TempDir::new("mix").unwrap();
    let lan = Lan::new("mix", &["a", "b", "k1", "k2"]).unwrap();
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &config(&dir, 0)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    let b = Agent::start(&lan.hosts[1].ns, dir.path(), "b", &config(&dir, 100)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
    // VRRP group number 1 too, on the same segment.
    let k1 = Keepalived::start(&lan.hosts[2].ns, dir.path(), "k1", 1, 200, "192.0.2.70/24");
    k1.wait("MASTER", Duration::from_secs(8));
    let k2 = Keepalived::start(&lan.hosts[3].ns, dir.path(), "k2", 1, 100, "192.0.2.70/24");
    k2.wait("BACKUP", Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
    assert_eq!(b.state(1).as_deref(), Some("BACKUP"));
    assert_eq!(
        (k1.state().as_deref(), k2.state().as_deref()),
        (Some("MASTER"), Some("BACKUP"))
    );
    assert!(
        b.xdp_counter("foreign") > 0,
        "VRRP adverts pass as another group's"
    );
    assert_eq!(b.xdp_counter("bad_hmac"), 0);
}

#[test]
fn two_agents_in_vrrp3_mode_elect_and_fail_over() {
    let dir = TempDir::new("vr").unwrap();
    let lan = Lan::new("vr", &["a", "b"]).unwrap();
    let a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &vrrp_config(7, 200, "192.0.2.77/24"),
    )
    .unwrap();
    a.wait_state(7, "MASTER", Duration::from_secs(6)).unwrap();
    let b = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "b",
        &vrrp_config(7, 100, "192.0.2.77/24"),
    )
    .unwrap();
    b.wait_state(7, "BACKUP", Duration::from_secs(3)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(b.state(7).as_deref(), Some("BACKUP"));
    a.signal(Signal::SIGKILL).unwrap();
    b.wait_state(
        7,
        "MASTER",
        Duration::from_millis(3609) + Duration::from_secs(1),
    )
    .unwrap();
}

/// tcpdump on `ns`'s eth0, writing the first `count` frames matching `filter` to `cap`.
fn sniff(ns: &Netns, cap: &Path, count: usize, filter: &str) -> Child {
    ns.command("tcpdump")
        .args(["-i", "eth0", "-U", "-c", &count.to_string(), "-w"])
        .arg(cap)
        .arg(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits up to `timeout` for the capture to end, then tshark's `fields` of each frame,
/// tab separated. CARP is a heuristic of each IP version: without the ipv6 option tshark
/// reads protocol 112 over IPv6 as VRRP.
fn carp_fields(mut dump: Child, cap: &Path, timeout: Duration, fields: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    while dump.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = dump.kill();
    let _ = dump.wait();
    let mut tshark = std::process::Command::new("tshark");
    tshark
        .arg("-r")
        .arg(cap)
        .args(["-o", "ip.try_heuristic_first:TRUE"])
        .args(["-o", "ipv6.try_heuristic_first:TRUE", "-T", "fields"]);
    for f in fields {
        tshark.args(["-e", f]);
    }
    let out = tshark.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn tshark_dissects_our_adverts_as_carp_with_a_good_checksum() {
    let dir = TempDir::new("tshark").unwrap();
    let lan = Lan::new("tshark", &["a", "sniffer"]).unwrap();
    let cap = dir.path().join("carp.pcap");
    let dump = sniff(&lan.hosts[1].ns, &cap, 3, "ip proto 112");
    std::thread::sleep(Duration::from_millis(500));
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &config(&dir, 0)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    let lines = carp_fields(
        dump,
        &cap,
        Duration::from_secs(6),
        &["carp.vhid", "carp.advskew", "carp.checksum.status"],
    );
    // vhid 1, advskew 0, checksum status 1 (good).
    assert_eq!(lines, ["1\t0\t1"; 3]);
}

/// A VHID with an IPv4 and an IPv6 VIP advertises on both families, as FreeBSD's
/// carp_send_ad_locked does: 224.0.0.18 from the interface's address and ff02::12 from its
/// link-local one, the same HMAC (over every VIP) in each. tshark reads both as CARP with
/// a good checksum; the backup's XDP program verifies both digests.
#[test]
fn a_dual_stack_vhid_advertises_on_both_families() {
    let dir = TempDir::new("dual").unwrap();
    let lan = Lan::new("dual", &["a", "b", "sniffer"]).unwrap();
    let pw = dir.path().join("pass");
    carp_tests::agent::write_secret(&pw, PASSWORD).unwrap();
    let conf = |skew: u8| {
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\n\
             vips = [\"192.0.2.50/24\", \"2001:db8::50/64\"]\nadvskew = {skew}\npass_file = \"{}\"\n",
            pw.display()
        )
    };
    let (a, b) = start_pair(&lan, dir.path(), 1, &conf(0), &conf(100)).unwrap();
    let cap = dir.path().join("dual.pcap");
    let dump = sniff(&lan.hosts[2].ns, &cap, 6, "ip proto 112 or ip6 proto 112");
    let lines = carp_fields(
        dump,
        &cap,
        Duration::from_secs(8),
        &[
            "ip.src",
            "ipv6.src",
            "ipv6.dst",
            "carp.vhid",
            "carp.checksum.status",
        ],
    );
    let v4 = lines.iter().filter(|l| *l == "192.0.2.1\t\t\t1\t1").count();
    let v6 = lines
        .iter()
        .filter(|l| l.starts_with("\tfe80::") && l.ends_with("\tff02::12\t1\t1"))
        .count();
    assert_eq!((lines.len(), v4, v6), (6, 3, 3), "{lines:#?}");

    let before = b.xdp_counter("adverts");
    std::thread::sleep(Duration::from_secs(2));
    let got = b.xdp_counter("adverts") - before;
    assert!(got >= 3, "the backup's XDP passed {got} adverts in 2 s");
    assert_eq!(b.xdp_counter("bad_hmac"), 0);
    assert_eq!(b.state(1).as_deref(), Some("BACKUP"));
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
}
