//! Interfaces that are not there yet (issue #18): as a host boots, a VHID whose interface
//! or address is missing waits in INIT while the others run, comes up when netlink
//! reports them, and waits again when its interface goes away. `check` warns of what is
//! missing and refuses names no interface can have.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::control::{VhidStatus, Waiting};
use carp_common::State;
use carp_tests::{
    agent::{Agent, TempDir, agent_bin},
    lan::Lan,
    netns::{Netns, veth_pair},
};
use std::{
    path::Path,
    time::{Duration, Instant},
};

/// Master-down time with advbase 1, advskew 0: 3 s.
const MASTER_DOWN: Duration = Duration::from_secs(3);
/// What starting a VHID costs on top: loading and attaching its XDP program, the first
/// status poll.
const START: Duration = Duration::from_millis(1500);
const WAIT: Duration = Duration::from_secs(8);

fn vhid(interface: &str, vhid: u8, vip: &str, dir: &Path) -> String {
    let pw = dir.join("carp.pass");
    carp_tests::agent::write_secret(&pw, "late-secret").unwrap();
    format!(
        "[[vhid]]\ninterface = \"{interface}\"\nvhid = {vhid}\nvips = [\"{vip}\"]\n\
         pass_file = \"{}\"\n",
        pw.display()
    )
}

/// `vhid`'s status row; panics when the agent does not answer or has no such VHID.
fn row(agent: &Agent, vhid: u8) -> VhidStatus {
    let status = agent.status().unwrap_or_else(|e| panic!("{e:#}"));
    status
        .vhids
        .into_iter()
        .find(|v| v.vhid == vhid)
        .unwrap_or_else(|| panic!("no vhid {vhid}; log:\n{}", agent.log_text()))
}

/// Waits until `vhid` is in `state` and waits for `waiting` (the agent may not answer
/// yet); how long that took.
fn wait_for(agent: &Agent, vhid: u8, state: State, waiting: Option<Waiting>) -> Duration {
    let start = Instant::now();
    loop {
        let r = agent
            .status()
            .ok()
            .and_then(|s| s.vhids.into_iter().find(|v| v.vhid == vhid));
        if r.as_ref()
            .is_some_and(|r| r.state == state && r.waiting == waiting)
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT,
            "vhid {vhid} not {state} waiting for {waiting:?} after {WAIT:?}: {r:?}; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the agent reports its XDP program attached to `name`.
fn attached(agent: &Agent, name: &str) -> bool {
    let status = agent.status().unwrap_or_else(|e| panic!("{e:#}"));
    status.interfaces.iter().any(|i| i.name == name)
}

/// `name`'s interface index in `ns`, and whether an XDP program is attached to it.
fn link(ns: &Netns, name: &str) -> (u32, bool) {
    let out = ns.ip(&["-o", "link", "show", "dev", name]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let index = text
        .split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .unwrap_or_else(|| panic!("no index in {text}"));
    (index, text.contains("xdp"))
}

/// Creates `eth1` in `host`, a veth whose peer `late1` (198.51.100.2/24) is in `other`,
/// both up, `eth1` without an address.
fn create_eth1(host: &Netns, other: &Netns) {
    veth_pair(host, "eth1", other, "late1").unwrap();
    other
        .ip(&["addr", "add", "198.51.100.2/24", "dev", "late1"])
        .unwrap();
}

/// Whether the VIP answers ARP on eth1's link, asked from `other`: only the XDP program
/// answers for a VIP on lo, and only with map entries under eth1's current index.
fn vip_answers(other: &Netns) -> bool {
    other
        .command("arping")
        .args(["-c", "3", "-I", "late1", "198.51.100.50"])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_vhid_waits_for_its_interface_and_address_while_the_others_run() {
    let dir = TempDir::new("late").unwrap();
    let lan = Lan::new("late", &["a"]).unwrap();
    let host = &lan.hosts[0].ns;
    // The peer end of the late interface lives in a namespace of its own.
    let other = Netns::new("late-peer").unwrap();
    // VHID 2 advertises from an address eth1 gets late, as from DHCP (a multicast VHID
    // without `src` could advertise from its VIP: carp.sh `switch`).
    let conf = vhid("eth0", 1, "192.0.2.50/24", dir.path())
        + &vhid("eth1", 2, "198.51.100.50/24", dir.path())
        + "src = \"198.51.100.1\"\n";
    let a = Agent::start(host, dir.path(), "a", &conf).unwrap();
    wait_for(&a, 1, State::MASTER, None);
    // The agent runs, VHID 2 waits for its interface.
    wait_for(&a, 2, State::INIT, Some(Waiting::NoInterface));
    let first = row(&a, 1).transitions;
    assert!(!attached(&a, "eth1"));
    // A reload keeps it waiting; the operator is told there is nothing to set yet.
    a.ctl(&["reload"]).unwrap();
    wait_for(&a, 2, State::INIT, Some(Waiting::NoInterface));
    let refused = a.ctl(&["set-state", "2", "master"]).unwrap_err();
    assert!(
        format!("{refused:#}").contains("vhid 2 on eth1 waits in INIT (no interface)"),
        "{refused:#}"
    );

    create_eth1(host, &other);
    wait_for(&a, 2, State::INIT, Some(Waiting::NoAddress));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(row(&a, 2).waiting, Some(Waiting::NoAddress));

    host.ip(&["addr", "add", "198.51.100.1/24", "dev", "eth1"])
        .unwrap();
    let took = wait_for(&a, 2, State::MASTER, None);
    assert!(
        took < MASTER_DOWN + START,
        "MASTER {took:?} after the address appeared; log:\n{}",
        a.log_text()
    );
    assert!(attached(&a, "eth1"));
    let (old_index, xdp) = link(host, "eth1");
    assert!(xdp, "no XDP program on eth1");
    assert!(vip_answers(&other), "the VIP is not answered on eth1");

    // The interface goes: VHID 2 waits again, its program and VIP with it.
    host.ip(&["link", "del", "eth1"]).unwrap();
    wait_for(&a, 2, State::INIT, Some(Waiting::NoInterface));
    assert!(!attached(&a, "eth1"));
    let addrs = host.ip(&["-br", "addr"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&addrs.stdout).contains("198.51.100.50"),
        "the VIP stayed"
    );

    // Back, under a new index (the kernel does not reuse one at once), address and all.
    create_eth1(host, &other);
    host.ip(&["addr", "add", "198.51.100.1/24", "dev", "eth1"])
        .unwrap();
    wait_for(&a, 2, State::MASTER, None);
    let (new_index, xdp) = link(host, "eth1");
    assert_ne!(new_index, old_index);
    assert!(
        xdp && attached(&a, "eth1"),
        "no XDP program on the new eth1"
    );
    assert!(
        vip_answers(&other),
        "the VIP is not answered on the new eth1"
    );

    // VHID 1 was MASTER all along.
    let r = row(&a, 1);
    assert_eq!(
        (r.state, r.transitions),
        (State::MASTER, first),
        "{}",
        a.log_text()
    );
    assert_eq!(row(&a, 2).demotion, 0);
    let log = a.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    // Said once per change (start, reload, deletion), not at every re-check.
    assert_eq!(
        log.matches("waits in INIT: there is no interface eth1")
            .count(),
        3,
        "{log}"
    );
}

/// Runs `carp-agent -c <file> check` in `ns` on `vhids`; its exit code and stderr.
fn check(ns: &Netns, dir: &Path, vhids: &str) -> (Option<i32>, String) {
    let cfg = dir.join("check.toml");
    std::fs::write(&cfg, vhids).unwrap();
    let out = ns
        .command(agent_bin().to_str().unwrap())
        .arg("-c")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_warns_of_a_missing_interface_and_refuses_an_impossible_name() {
    let dir = TempDir::new("latecheck").unwrap();
    let ns = Netns::new("latecheck").unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    let present = vhid("eth0", 1, "192.0.2.50/24", dir.path());

    let missing = present.clone() + &vhid("eth9", 2, "198.51.100.50/24", dir.path());
    let (code, err) = check(&ns, dir.path(), &missing);
    assert_eq!(code, Some(0), "{err}");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("warning: vhid 2 on eth9: there is no interface eth9 yet"),
        "{err}"
    );

    for name in ["vlan-to-the-datacentre", "eth/0"] {
        let bad = present.clone() + &vhid(name, 2, "198.51.100.50/24", dir.path());
        let (code, err) = check(&ns, dir.path(), &bad);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(
            err.contains(&format!("vhid 2 on {name}: interface")),
            "{err}"
        );
    }
}
