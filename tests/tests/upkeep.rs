//! Upkeep of what MASTER promises the segment, with a client pinging the VIP every 10 ms:
//! a VIP (or the subnet route it needs) that something else removes from the master is
//! put back at once (keepalived#836, #1385, #2479, #2564, UCarp#26: networkd, DHCP,
//! NetworkManager), and a master that cannot put it back steps down; after a partition
//! that kept carrier heals, the remaining master announces itself (keepalived#166), in
//! both MAC modes.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::control::VhidStatus;
use carp_common::{State, wire};
use carp_tests::{
    agent::{Agent, TempDir, start_pair, write_secret},
    lan::{Lan, neighbour},
    probe::Probe,
};
use std::time::{Duration, Instant};

const PASSWORD: &str = "upkeep-secret";
const WAIT: Duration = Duration::from_secs(8);
/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
/// What the client may go without an answer after a removal or a heal (issue 29).
const WITHIN: Duration = Duration::from_secs(1);

/// A master "a" (advskew 0) and a backup "b" (advskew 100) of VHID 1 on `vips`, with
/// `agent` settings and `extra` VHID settings, and a client as host 2.
fn group(tag: &str, agent: &str, vips: &str, extra: &str) -> (TempDir, Lan, Agent, Agent) {
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let pw = dir.path().join("pass");
    write_secret(&pw, PASSWORD).unwrap();
    let conf = |advskew: u8| {
        format!(
            "{agent}\n\n[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [{vips}]\n\
             advskew = {advskew}\npass_file = \"{}\"\n{extra}\n",
            pw.display()
        )
    };
    let (a, b) = start_pair(&lan, dir.path(), 1, &conf(0), &conf(100)).unwrap();
    (dir, lan, a, b)
}

fn row(agent: &Agent) -> VhidStatus {
    let status = agent.status().unwrap_or_else(|e| panic!("{e:#}"));
    status.vhids.into_iter().next().expect("one VHID")
}

/// Pings `vip` from the client until it answers.
fn probe(lan: &Lan, vip: &str) -> Probe {
    let probe = Probe::start(&lan.hosts[2].ns, vip).unwrap();
    let start = Instant::now();
    while probe.count() < 10 {
        assert!(start.elapsed() < WAIT, "{vip} never answered the client");
        std::thread::sleep(Duration::from_millis(20));
    }
    probe
}

/// The longest time the client went without an answer since reply `first`, the time
/// since the last answer included (a VIP that never came back shows there).
fn gap_since(probe: &Probe, first: usize) -> Duration {
    probe.max_gap_from(first).max(probe.silence())
}

/// Removes something of the master's with `remove` (an `ip` command in its namespace)
/// and checks that within [`WITHIN`] the client is answered again, the master stayed
/// MASTER without a transition, and counted what it put back.
fn removed_and_put_back(lan: &Lan, a: &Agent, b: &Agent, probe: &Probe, remove: &[&str]) {
    let first = probe.count().saturating_sub(1);
    let (before, transitions) = (row(a).vips_restored, a.transitions());
    // A flush may give up after ten rounds when what it removes keeps coming back.
    let out = lan.hosts[0].ns.command("ip").args(remove).output().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let gap = gap_since(probe, first);
    let after = row(a);
    println!(
        "ip {remove:?} (exit {}): the client's longest gap {gap:.2?}, vips_restored {before} -> {}",
        out.status, after.vips_restored
    );
    assert!(gap < WITHIN, "ip {remove:?}: no answer for {gap:?}");
    assert_eq!(after.state, State::MASTER, "ip {remove:?}");
    assert_eq!(a.transitions(), transitions, "ip {remove:?}");
    assert!(
        after.vips_restored > before,
        "ip {remove:?}: nothing counted"
    );
    assert_eq!(row(b).state, State::BACKUP);
}

/// `ip addr del` of the VIP under the master, where each placement puts it: on lo
/// (the default) and on the interface. Before upkeep the VIP stayed removed and the agent
/// stayed MASTER.
#[test]
fn a_vip_deleted_under_the_master_is_put_back_within_a_second() {
    for (tag, agent, dev, vip) in [
        ("updel-lo", "", "lo", "192.0.2.50/32"),
        (
            "updel-if",
            "vips_on = \"interface\"",
            "eth0",
            "192.0.2.50/24",
        ),
    ] {
        let (_dir, lan, a, b) = group(tag, agent, "\"192.0.2.50/24\"", "");
        let probe = probe(&lan, "192.0.2.50");
        removed_and_put_back(&lan, &a, &b, &probe, &["addr", "del", vip, "dev", dev]);
        assert!(
            lan.hosts[0].has_address(dev, "192.0.2.50").unwrap(),
            "{dev}"
        );
        assert!(a.log_text().contains("removed by something else: put back"));
    }
}

/// `ip addr flush dev eth0` (what NetworkManager or a networkd restart does) with the
/// VIPs on the interface: the VIP comes back; the host's own address is not the agent's.
#[test]
fn a_flush_of_the_interface_puts_the_vip_back_within_a_second() {
    let (_dir, lan, a, b) = group(
        "upflush",
        "vips_on = \"interface\"",
        "\"192.0.2.50/24\"",
        "",
    );
    let probe = probe(&lan, "192.0.2.50");
    removed_and_put_back(&lan, &a, &b, &probe, &["addr", "flush", "dev", "eth0"]);
    assert!(lan.hosts[0].has_address("eth0", "192.0.2.50").unwrap());
    assert!(!lan.hosts[0].has_address("eth0", "192.0.2.1").unwrap());
}

/// A VIP on lo in a subnet the interface lacks is reached through the route the master
/// adds (FreeBSD's connected route for `ifconfig em0 vhid 1 198.51.100.50/24`): that route
/// deleted, and the VIP deleted (which takes the route along, as its preferred source),
/// both come back.
#[test]
fn the_route_of_a_vip_in_a_subnet_of_its_own_is_put_back_within_a_second() {
    let (_dir, lan, a, b) = group("uproute", "", "\"198.51.100.50/24\"", "");
    lan.hosts[2]
        .ns
        .ip(&["addr", "add", "198.51.100.3/24", "dev", "eth0"])
        .unwrap();
    let probe = probe(&lan, "198.51.100.50");
    let routed = || {
        let out = lan.hosts[0]
            .ns
            .ip(&["-j", "route", "show", "198.51.100.0/24", "dev", "eth0"])
            .unwrap();
        let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        routes.as_array().is_some_and(|r| !r.is_empty())
    };
    assert!(routed());
    removed_and_put_back(
        &lan,
        &a,
        &b,
        &probe,
        &["route", "del", "198.51.100.0/24", "dev", "eth0"],
    );
    assert!(routed());
    removed_and_put_back(
        &lan,
        &a,
        &b,
        &probe,
        &["addr", "del", "198.51.100.50/32", "dev", "lo"],
    );
    assert!(routed());
    assert!(lan.hosts[0].has_address("lo", "198.51.100.50").unwrap());
}

/// A VIP that cannot be put back (IPv6 disabled on the interface takes the IPv6 VIP and
/// refuses it back): the master leaves MASTER rather than claim it, and the backup takes
/// over.
#[test]
fn a_master_that_cannot_put_a_vip_back_steps_down() {
    let (_dir, lan, a, b) = group(
        "upfail",
        "vips_on = \"interface\"",
        "\"192.0.2.50/24\", \"2001:db8::50/64\"",
        "",
    );
    carp_tests::netns::run(
        lan.hosts[0]
            .ns
            .command("sysctl")
            .args(["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]),
    )
    .unwrap();
    let took = b.wait_state(1, "MASTER", WAIT).unwrap();
    let left = row(&a);
    println!(
        "IPv6 disabled under the master: a {} ({}), b MASTER after {took:.2?}",
        left.state, left.last_reason
    );
    assert_eq!(left.state, State::BACKUP);
    assert_eq!(left.last_reason, "a VIP could not be put back");
    assert!(a.log_text().contains("could not be put back"));
}

/// A partition that keeps carrier: the switch drops every frame from and to a's port
/// (before it learns their source, as a cut link would).
const PARTITION: &str = "table bridge split {\n\
     chain from_a { type filter hook prerouting priority 0; iifname \"p0\" drop; }\n\
     chain to_a { type filter hook forward priority 0; oifname \"p0\" drop; }\n}\n";

/// Heals the partition; returns how many replies the client had just before. With
/// `b_first`, at a moment when b's advert crosses first (see [`until_b_advertises_first`]).
fn heal(lan: &Lan, a: &Agent, b: &Agent, probe: &Probe, b_first: bool) -> usize {
    if b_first {
        until_b_advertises_first(a, b);
    }
    let first = probe.count().saturating_sub(1);
    lan.nft("delete table bridge split").unwrap();
    first
}

/// Waits until b's next advert is due shortly and a's well after it (a's usually comes
/// first, its interval being shorter). When each advert went out is read from the
/// agents' `adverts_sent`, polled: a few tens of milliseconds late, which the margins
/// cover.
fn until_b_advertises_first(a: &Agent, b: &Agent) {
    let intervals = [Duration::from_secs(1), Duration::from_micros(1_390_625)];
    let mut last: [(u64, Option<Instant>); 2] =
        [(row(a).adverts_sent, None), (row(b).adverts_sent, None)];
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < WAIT * 2, "no moment to heal at");
        for (i, agent) in [a, b].into_iter().enumerate() {
            let sent = row(agent).adverts_sent;
            if sent != last[i].0 {
                last[i] = (sent, Some(Instant::now()));
            }
        }
        if let [(_, Some(at_a)), (_, Some(at_b))] = last {
            let now = Instant::now();
            let (next_a, next_b) = (at_a + intervals[0], at_b + intervals[1]);
            if next_b > now + Duration::from_millis(60)
                && next_b < now + Duration::from_millis(250)
                && next_a > next_b + Duration::from_millis(200)
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Cuts a off, lets b take over and the client reach the VIP through b, heals, and
/// checks that within [`WITHIN`] the client reaches the VIP through a again, and where
/// the client's or the switch's idea of the VIP points: `mac` is what the client's
/// neighbour entry must name (a's or b's interface MAC, or the virtual MAC).
fn partition_and_heal(tag: &str, mac_mode: &str, rounds: usize) {
    let (_dir, lan, a, b) = group(tag, "", "\"192.0.2.50/24\"", mac_mode);
    let client = &lan.hosts[2].ns;
    let vip = "192.0.2.50";
    let interface_mac = mac_mode.contains("interface");
    let (mac_a, mac_b) = if interface_mac {
        (lan.hosts[0].mac().unwrap(), lan.hosts[1].mac().unwrap())
    } else {
        let v = wire::virtual_mac(1).map(|b| format!("{b:02x}")).join(":");
        (v.clone(), v)
    };
    let probe = probe(&lan, vip);
    let points_to = || neighbour(client, vip).unwrap().and_then(|n| n.lladdr);
    assert_eq!(points_to().as_deref(), Some(mac_a.as_str()));
    for round in 1..=rounds {
        lan.nft(PARTITION).unwrap();
        b.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(2))
            .unwrap();
        assert_eq!(row(&a).state, State::MASTER, "two masters while cut off");
        // The client reaches the VIP through b.
        let start = Instant::now();
        while points_to().as_deref() != Some(mac_b.as_str())
            || probe.silence() > Duration::from_millis(100)
        {
            assert!(
                start.elapsed() < WAIT,
                "the client never reached b: {:?}",
                neighbour(client, vip)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if !interface_mac {
            assert_eq!(lan.port_of(&mac_b).unwrap().as_deref(), Some("p1"));
        }
        let before = row(&a);
        // Every other round b's advert crosses first: a hears another master while
        // MASTER.
        let b_first = round % 2 == 0;
        let first = heal(&lan, &a, &b, &probe, b_first);
        b.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let gap = gap_since(&probe, first);
        let entry = neighbour(client, vip).unwrap();
        let port = lan.port_of(&mac_a).unwrap();
        let after = row(&a);
        // Whether a heard b after the heal: b's advert crossed first, or b's parting
        // advert came (only with interface MACs: a virtual MAC's would pull the MAC
        // back to b's port).
        let heard = after.adverts_received - before.adverts_received;
        println!(
            "{tag} round {round} (b's advert first: {b_first}): after the heal the client's longest gap {gap:.2?}; its \
             neighbour entry {entry:?}; the switch has {mac_a} on {port:?}; a heard {heard} \
             adverts of b, reannounced {} -> {} (limited {} -> {})",
            before.reannounced,
            after.reannounced,
            before.reannounce_limited,
            after.reannounce_limited
        );
        assert!(gap < WITHIN, "round {round}: no answer for {gap:?}");
        assert_eq!(entry.and_then(|n| n.lladdr), Some(mac_a.clone()));
        if !interface_mac {
            assert_eq!(port.as_deref(), Some("p0"), "the switch relearned the MAC");
        }
        assert_eq!(after.state, State::MASTER);
        if interface_mac || b_first {
            assert!(heard > 0, "round {round}: b stepped down unheard");
        }
        assert_eq!(
            after.reannounced - before.reannounced,
            u64::from(heard > 0),
            "round {round}: a announces itself once when it hears b"
        );
    }
}

/// `mac = "interface"`: after the heal b steps down, and the client, which learned b's
/// MAC, must learn a's again: a announces itself when it hears b (and b, stepping down
/// without having been heard, sends one advert so that it is).
#[test]
fn after_a_partition_heals_the_master_announces_itself_with_interface_macs() {
    partition_and_heal("upsplit-if", "mac = \"interface\"", 3);
}

/// The virtual MAC: the switch learned it on b's port during the partition and must
/// learn it back on a's.
#[test]
fn after_a_partition_heals_the_master_announces_itself_with_the_virtual_mac() {
    partition_and_heal("upsplit-vm", "", 4);
}
