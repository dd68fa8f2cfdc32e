//! Scripted peers that put on the wire, byte for byte, what OpenBSD's and FreeBSD 15's
//! `ip_carp.c` send, against a real carp-agent on a bridged LAN; and the multicast
//! memberships FreeBSD's `carp_multicast_setup` makes. State and counters come from the
//! agent's JSON status.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::{frame, hmac::Auth};
use carp_common::{
    State,
    vrrp::Vrrp3Header,
    wire::{self, CarpHeader},
};
use carp_tests::{
    agent::{Agent, TempDir},
    lan::Lan,
    peers::Scripted,
};
use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

const PASSWORD: &str = "openbsd-secret";
const VIP: &str = "192.0.2.50";

/// The VHID's status row and the agent's first interface's XDP counter `name`.
fn vhid_and_counter(agent: &Agent, name: &str) -> (State, String, u64) {
    let status = agent.status().unwrap();
    let v = &status.vhids[0];
    (
        v.state,
        v.last_reason.clone(),
        status.interfaces[0].xdp[name],
    )
}

/// OpenBSD's carp_prepare_ad: the counter of every advert is one random cookie
/// (`vhe_replay_cookie`), byte 4 the sender's demotion count (`carp_group_demote_count`),
/// the digest over version, type, vhid, VIPs and that cookie. A carp-agent backup must
/// follow such a master for as long as it advertises (dropping the repeated counter as a
/// replay made it take over after ~4 s: two masters), and take over at once, without
/// preempt, when the master announces a demotion count above its own (carp_proto_input_c).
#[test]
fn an_openbsd_master_with_its_constant_counter_keeps_the_backup() {
    let dir = TempDir::new("obsd").unwrap();
    let lan = Lan::new("obsd", &["agent", "obsd"]).unwrap();
    let pw = dir.path().join("pass");
    carp_tests::agent::write_secret(&pw, PASSWORD).unwrap();
    let agent = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "agent",
        &format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\nadvskew = 100\n\
             pass_file = \"{}\"\n",
            pw.display()
        ),
    )
    .unwrap();
    agent
        .wait_state(1, "BACKUP", Duration::from_secs(5))
        .unwrap();
    let auth = Auth::new(PASSWORD.as_bytes(), 1, &[VIP.parse().unwrap()]).unwrap();
    let cookie = 0x5eed_c0ff_ee00_0001u64;
    let demote = Arc::new(AtomicU8::new(0));
    let src: IpAddr = lan.hosts[1].addr.into();
    let byte = demote.clone();
    let peer = Scripted::start(&lan.hosts[1].ns, Duration::from_secs(1), move || {
        let h = CarpHeader {
            vhid: 1,
            advskew: 0,
            demote: byte.load(Ordering::Relaxed),
            advbase: 1,
            counter: cookie,
            digest: auth.sign(cookie),
        };
        frame::advert(src, wire::virtual_mac(1), None, &h.encode())
    });
    // Twice the backup's master-down time (3.39 s).
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        let state = agent.status().unwrap().vhids[0].state;
        assert_eq!(state, State::BACKUP, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, _, repeated) = vhid_and_counter(&agent, "repeated");
    let (_, _, replay) = vhid_and_counter(&agent, "replay");
    assert!(repeated >= 5, "repeated {repeated}");
    assert_eq!(replay, 0, "a keepalive every second is no flood");
    demote.store(1, Ordering::Relaxed);
    let took = agent
        .wait_state(1, "MASTER", Duration::from_secs(3))
        .unwrap();
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let (_, reason, _) = vhid_and_counter(&agent, "adverts");
    assert_eq!(reason, "master is demoted");
    drop(peer);
}

/// FreeBSD 15's vrrp_input_c keeps mastership on equal priority (no address tie-break).
/// When such a peer with the lower address goes on advertising next to a carp-agent
/// master of equal priority (two masters after a partition heals), RFC 5798 6.4.3 alone
/// would keep both masters forever: carp-agent yields after a master-down interval.
#[test]
fn a_freebsd15_vrrp_master_that_never_yields_ends_the_tie() {
    let dir = TempDir::new("fb15").unwrap();
    // Host 0 (192.0.2.1) is the scripted peer, host 1 (192.0.2.2) the agent.
    let lan = Lan::new("fb15", &["fbsd", "agent"]).unwrap();
    let agent = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "agent",
        &format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nprotocol = \"vrrp3\"\nvips = [\"{VIP}/24\"]\n\
             priority = 100\n"
        ),
    )
    .unwrap();
    agent
        .wait_state(1, "MASTER", Duration::from_secs(6))
        .unwrap();
    let src: IpAddr = lan.hosts[0].addr.into();
    let header = Vrrp3Header {
        vrid: 1,
        priority: 100,
        count: 0,
        max_adver_int: 100,
    };
    let _peer = Scripted::start(&lan.hosts[0].ns, Duration::from_secs(1), move || {
        let payload =
            frame::vrrp_payload(src, frame::group(src), header, &[VIP.parse().unwrap()]).unwrap();
        frame::advert(src, wire::virtual_mac(1), None, &payload)
    });
    // Master-down 3.6 s after the first tied advert, plus an advert interval.
    let took = agent
        .wait_state(1, "BACKUP", Duration::from_secs(6))
        .unwrap();
    assert!(took >= Duration::from_secs(3), "yielded at once: {took:?}");
    let (_, reason, _) = vhid_and_counter(&agent, "adverts");
    assert_eq!(reason, "an equal master did not yield");
    // And it stays backup while the peer is master.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(agent.state(1).as_deref(), Some("BACKUP"));
}

/// FreeBSD's carp_multicast_setup / carp_multicast6_setup join the advert groups on the
/// parent interface, and the kernel joins the solicited-node group of every address on
/// it: with the VIP6 on `lo`, carp-agent joins that group on the interface itself. On
/// NICs that filter multicast nothing else arrives. Left again when the agent stops.
#[test]
fn the_advert_groups_and_solicited_node_groups_are_joined() {
    let dir = TempDir::new("maddr").unwrap();
    let lan = Lan::new("maddr", &["a"]).unwrap();
    let ns = &lan.hosts[0].ns;
    let mut agent = Agent::start(
        ns,
        dir.path(),
        "a",
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\", \"2001:db8::50/64\"]\n\
         mac = \"interface\"\n",
    )
    .unwrap();
    agent
        .wait_state(1, "BACKUP", Duration::from_secs(5))
        .unwrap();
    let groups = || -> Vec<String> {
        let out = ns
            .command("ip")
            .args(["-j", "maddr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["maddr"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["address"].as_str().map(str::to_owned))
            .collect()
    };
    let joined = groups();
    for g in ["224.0.0.18", "ff02::12", "ff02::1:ff00:50"] {
        assert!(joined.iter().any(|j| j == g), "{g} not in {joined:?}");
    }
    agent.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    agent.wait(Duration::from_secs(5)).unwrap();
    let left = groups();
    for g in ["224.0.0.18", "ff02::12", "ff02::1:ff00:50"] {
        assert!(!left.iter().any(|j| j == g), "{g} still in {left:?}");
    }
}

/// FreeBSD 14's `peer` and `peer6` together: a VHID with VIPs of both families advertises
/// to the peer of each family, from the interface's address of that family (one socket per
/// source: the IPv6 adverts once went out of the IPv4 socket and failed every time).
#[test]
fn unicast_peers_of_both_families() {
    let dir = TempDir::new("uni46").unwrap();
    let lan = Lan::new("uni46", &["a", "b"]).unwrap();
    let conf = |i: usize, advskew: u8| {
        let peer = &lan.hosts[1 - i];
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\", \"2001:db8::50/64\"]\n\
             advskew = {advskew}\npeers = [\"{}\", \"{}\"]\n",
            peer.addr, peer.addr6
        )
    };
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &conf(0, 0)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(6)).unwrap();
    let b = Agent::start(&lan.hosts[1].ns, dir.path(), "b", &conf(1, 100)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(6)).unwrap();
    let before = b.status().unwrap().vhids[0].adverts_received;
    std::thread::sleep(Duration::from_secs(3));
    let master = &a.status().unwrap().vhids[0];
    let backup = &b.status().unwrap().vhids[0];
    assert_eq!((master.state, backup.state), (State::MASTER, State::BACKUP));
    assert_eq!(master.send_errors, 0, "{}", a.log_text());
    // One advert per family per interval (advbase 1): both arrive.
    let received = backup.adverts_received - before;
    assert!(received >= 5, "{received} adverts in 3 s");
}
