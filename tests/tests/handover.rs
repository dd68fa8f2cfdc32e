//! Make-before-break handover (issue 29.3): a client probing the VIP every millisecond
//! loses no probe when the master leaves by SIGTERM or `set-state backup`, in CARP with a
//! virtual MAC and with `mac = "interface"` and in VRRPv3 at 100 ms, on a machine kept
//! busy by two loops. The leaving master answers until it has heard the arriving one.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_common::State;
use carp_tests::{
    agent::{Agent, TempDir, start_pair, write_secret},
    lan::Lan,
    probe::Probe,
};
use nix::sys::signal::Signal;
use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

const VIP: &str = "192.0.2.50";
const WAIT: Duration = Duration::from_secs(8);

/// How the master leaves.
#[derive(Clone, Copy, Debug)]
enum Leave {
    Sigterm,
    SetStateBackup,
}

/// Two shell loops that keep both cores busy while they live.
struct Busy(Vec<Child>);

impl Busy {
    fn start() -> Self {
        Self(
            (0..2)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// VHID 1 of a master "a" and a backup "b", `vhid` being the VHID's settings but its
/// preference, which `pref(a)` gives; a client as host 2.
fn group(tag: &str, vhid: &str, pref: fn(bool) -> String) -> (TempDir, Lan, Agent, Agent) {
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let pw = dir.path().join("pass");
    write_secret(&pw, "handover-secret").unwrap();
    let conf = |a: bool| {
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\n{}\n{}\n",
            pref(a),
            vhid.replace("PASS", &pw.display().to_string())
        )
    };
    let (a, b) = start_pair(&lan, dir.path(), 1, &conf(true), &conf(false)).unwrap();
    (dir, lan, a, b)
}

fn carp(a: bool) -> String {
    format!("advskew = {}", if a { 0 } else { 100 })
}

fn vrrp(a: bool) -> String {
    format!("priority = {}", if a { 200 } else { 100 })
}

/// The master leaves `how` while the client probes every millisecond on a busy machine;
/// returns the probes lost and answered, after checking that b took over and a stopped
/// answering.
fn hand_over(tag: &str, vhid: &str, pref: fn(bool) -> String, how: Leave) -> (u64, u64) {
    let (_dir, lan, mut a, b) = group(tag, vhid, pref);
    let _busy = Busy::start();
    let probe = Probe::start_fast(&lan.hosts[2].ns, VIP).unwrap();
    let start = Instant::now();
    while probe.count() < 200 {
        assert!(start.elapsed() < WAIT, "{VIP} never answered the client");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = probe.count();
    let left = Instant::now();
    match how {
        Leave::Sigterm => a.signal(Signal::SIGTERM).unwrap(),
        Leave::SetStateBackup => drop(a.ctl(&["set-state", "1", "backup"]).unwrap()),
    }
    b.wait_state(1, "MASTER", WAIT).unwrap();
    match how {
        Leave::Sigterm => {
            assert!(a.wait(WAIT).unwrap().success());
            println!("{tag}: a exited {:?} after SIGTERM", left.elapsed());
        }
        Leave::SetStateBackup => {
            let start = Instant::now();
            let row = loop {
                let row = a.status().unwrap().vhids.remove(0);
                if !row.handing_over || start.elapsed() > WAIT {
                    break row;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            assert_eq!((row.state, row.handing_over), (State::BACKUP, false));
            println!(
                "{tag}: a done handing over {:?} after set-state",
                left.elapsed()
            );
        }
    }
    // Answered by b from here on: enough replies after the handover, which lost none.
    let after = probe.count();
    while probe.count() < after + 200 {
        assert!(left.elapsed() < 2 * WAIT, "b stopped answering");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (lost, answered) = probe.lost_from(before);
    println!(
        "{tag}: {lost} probes lost, {answered} answered across the handover, longest gap {:?}",
        probe.max_gap_from(before.saturating_sub(1))
    );
    (lost, answered)
}

fn carp_vhid(extra: &str) -> String {
    format!("pass_file = \"PASS\"\n{extra}")
}

const VRRP3: &str = "protocol = \"vrrp3\"\ninterval_ms = 100\npreempt = true";

#[test]
fn sigterm_of_a_carp_master_with_a_virtual_mac_loses_no_probe() {
    let (lost, _) = hand_over("hvmac", &carp_vhid(""), carp, Leave::Sigterm);
    assert_eq!(lost, 0);
}

#[test]
fn sigterm_of_a_carp_master_with_interface_macs_loses_no_probe() {
    let vhid = carp_vhid("mac = \"interface\"");
    let (lost, _) = hand_over("hifmac", &vhid, carp, Leave::Sigterm);
    assert_eq!(lost, 0);
}

#[test]
fn sigterm_of_a_vrrp3_master_loses_no_probe() {
    let (lost, _) = hand_over("hvrrp", VRRP3, vrrp, Leave::Sigterm);
    assert_eq!(lost, 0);
}

#[test]
fn set_state_backup_loses_no_probe() {
    let vhid = carp_vhid("mac = \"interface\"");
    let (lost, _) = hand_over("hset", &vhid, carp, Leave::SetStateBackup);
    assert_eq!(lost, 0);
}
