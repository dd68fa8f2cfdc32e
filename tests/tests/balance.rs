//! OpenBSD's `balancing ip` between three hosts: one VIP, three VHIDs, each host MASTER of
//! one. A client with 300 flows (one source address each) gets exactly one reply per flow,
//! from the host the flow's hash names; a host that drops off the LAN hands its share to
//! the survivors within the master-down time while theirs never miss a reply, and takes
//! it back with preempt when it returns; a frozen agent's host lets go of its share before
//! the survivors take it, so no flow is answered twice. One host serves from tc ingress.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_common::balance::{fold_v4, fold_v6, keeps};
use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    bpftool::{Pins, dump},
    flows::{
        Server, add_sources, config, round, rounds, route_sources, sources, sources6, wait_masks,
    },
    lan::Lan,
    netns::Netns,
};
use nix::sys::signal::Signal;
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
const HOSTS: [&str; 3] = ["a", "b", "c"];
const FLOWS: usize = 300;
/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
/// How long a round waits for the replies it needs at most: it ends 50 ms after the last
/// of them, unless the machine is slow.
const ROUND: Duration = Duration::from_secs(2);

/// Whether the group's MAC is in `ns`'s eth0 multicast filter (`ip -j maddr`).
fn group_mac_accepted(ns: &Netns) -> bool {
    let out = ns.ip(&["-j", "maddr", "show", "dev", "eth0"]).unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mac = serde_json::json!("01:00:5e:00:01:01");
    list[0]["maddr"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["link"] == mac)
}

/// The host whose mask keeps the flow from `src` (OpenBSD carp_lsdrop, as the program).
fn owner(masks: &[u32], src: Ipv4Addr) -> usize {
    let fold = fold_v4(src.octets(), VIP.octets());
    let owners: Vec<usize> = (0..masks.len())
        .filter(|h| keeps(masks[*h], HOSTS.len() as u8, fold))
        .collect();
    assert_eq!(
        owners.len(),
        1,
        "flow from {src}: owners {owners:?} of {masks:?}"
    );
    owners[0]
}

/// Sends one request per flow and checks that each was answered once, by the host whose
/// share (all up, masks 1, 2, 4) it is; returns how many flows each host answered.
fn each_flow_answered_by_its_owner(client: &Netns, srcs: &[Ipv4Addr], when: &str) -> [usize; 3] {
    let replies = round(client, srcs, VIP, |_| true, ROUND).unwrap();
    let mut share = [0usize; 3];
    for (src, r) in srcs.iter().zip(&replies) {
        let want = owner(&[1, 2, 4], *src);
        assert_eq!(r, &vec![HOSTS[want].to_owned()], "flow from {src} {when}");
        share[want] += 1;
    }
    share
}

/// Rounds of one request per flow while host c's share moves to the survivors: each of
/// c's `c_flows` flows gets at most one reply, each survivor's flow exactly one, until a
/// survivor answers all of c's. How long that took; it must be within the master-down
/// time (and a round, some 60 ms while c's flows go unanswered).
fn until_moved(client: &Netns, srcs: &[Ipv4Addr], c_flows: usize) -> Duration {
    let start = Instant::now();
    while start.elapsed() < MASTER_DOWN + Duration::from_secs(3) {
        // Every survivor's flow must answer; c's may not.
        let survivors = |i: usize| owner(&[1, 2, 4], srcs[i]) != 2;
        let replies = round(client, srcs, VIP, survivors, ROUND).unwrap();
        let mut answered_c = 0;
        for (src, r) in srcs.iter().zip(&replies) {
            match owner(&[1, 2, 4], *src) {
                2 => {
                    assert!(r.len() <= 1, "flow from {src}: {r:?}");
                    answered_c += r.iter().filter(|name| *name != HOSTS[2]).count();
                }
                h => assert_eq!(r, &vec![HOSTS[h].to_owned()], "flow from {src} (survivor)"),
            }
        }
        if answered_c == c_flows {
            let moved = start.elapsed();
            assert!(
                moved < MASTER_DOWN + Duration::from_millis(600),
                "host c's share moved after {moved:?}"
            );
            return moved;
        }
    }
    panic!("host c's flows never came back");
}

/// Three hosts sharing VIP and VIP6, each MASTER of one VHID (host c from tc ingress), a
/// UDP server on each, and a client with [`FLOWS`] source addresses: the LAN, the agents
/// (whose masks are `OWN`), the servers and the sources.
struct Group {
    // Dropped in this order: the servers and agents before their namespaces, and the
    // lock once all is gone.
    _servers: Vec<Server>,
    agents: Vec<Agent>,
    lan: Lan,
    srcs: Vec<Ipv4Addr>,
    _alone: std::sync::MutexGuard<'static, ()>,
}

/// One group at a time: six agents starting at once on a loaded two-core machine take
/// longer than [`wait_masks`] allows, and one test's traffic would load the other's.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Each host's mask with all up.
const OWN: [Option<u32>; 3] = [Some(0b001), Some(0b010), Some(0b100)];

impl Group {
    fn start(dir: &TempDir, tag: &str) -> Self {
        let alone = ALONE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lan = Lan::new(tag, &HOSTS).unwrap();
        let client_addr = lan.add_host(tag, "client").unwrap().addr;
        let srcs = sources(FLOWS);
        let hosts: Vec<_> = lan.hosts[..3].iter().map(|h| &h.ns).collect();
        route_sources(&lan.hosts[3].ns, &srcs, &hosts, client_addr).unwrap();
        let pass = dir.path().join("pass");
        write_secret(&pass, "balance-secret").unwrap();
        let agents: Vec<Agent> = (0..3)
            .map(|h| {
                let ns = lan.hosts[h].ns.name();
                let vips = [&format!("{VIP}/24")[..], &format!("{VIP6}/64")];
                // Host c serves from tc ingress, as where another program holds XDP.
                let hook = if h == 2 { "tc" } else { "auto" };
                let conf = format!(
                    "netns = \"{ns}\"\nxdp_mode = \"{hook}\"\n\n{}",
                    config(h, 3, &vips, &pass)
                );
                Agent::start_on_host(dir.path(), HOSTS[h], &conf).unwrap()
            })
            .collect();
        wait_masks(&agents, &OWN, Duration::from_secs(12));
        // The leader places the VIP on every host at start: the servers can bind it.
        let servers = (0..3)
            .flat_map(|h| {
                let ns = &lan.hosts[h].ns;
                [
                    Server::start(ns, VIP, HOSTS[h]).unwrap(),
                    Server::start(ns, VIP6, HOSTS[h]).unwrap(),
                ]
            })
            .collect();
        Self {
            lan,
            agents,
            _servers: servers,
            srcs,
            _alone: alone,
        }
    }

    fn client(&self) -> &Netns {
        &self.lan.hosts[3].ns
    }
}

#[test]
fn three_hosts_share_one_vip_and_a_failed_or_frozen_hosts_share_moves_and_returns() {
    let dir = TempDir::new("balance").unwrap();
    let mut group = Group::start(&dir, "bal");
    let Group {
        lan, agents, srcs, ..
    } = &mut group;
    // Started from the host with `[agent] netns`, so their pins are on the host's bpffs.
    let pins: Vec<Pins> = (0..3)
        .map(|h| Pins(format!("/sys/fs/bpf/carp/{}", lan.hosts[h].ns.name())))
        .collect();
    let own = OWN;
    assert_eq!(
        agents[2].status().unwrap().interfaces[0].xdp_mode,
        carp_agent::control::Attached::Tc
    );
    // The share as the program reads it, and the group MAC in each interface's filter.
    for h in 0..3 {
        let map = dump(&std::path::Path::new(&pins[h].0).join("eth0/CARP_BALANCE"));
        let groups: Vec<_> = map.iter().filter(|(_, v)| v["count"] != 0).collect();
        let [(key, value)] = &groups[..] else {
            panic!("{groups:?}")
        };
        assert_eq!(*key, 1, "indexed by the leader VHID");
        assert_eq!(
            (&value["mask"], &value["count"]),
            (&(1 << h).into(), &3.into())
        );
        assert!(group_mac_accepted(&lan.hosts[h].ns), "host {}", HOSTS[h]);
    }
    let client = &lan.hosts[3].ns;

    // All up: each flow answered exactly once, by the host its hash names.
    let share = each_flow_answered_by_its_owner(client, srcs, "with all up");
    for (h, n) in share.iter().enumerate() {
        assert!(
            (85..=115).contains(n),
            "host {} keeps {n} of {FLOWS} flows: {share:?}",
            HOSTS[h]
        );
    }
    for a in agents.iter() {
        assert!(a.xdp_counter("balance_kept") > 0 && a.xdp_counter("balance_dropped") > 0);
    }
    // IPv6 flows too: the xor of all eight words names the host.
    let srcs6 = sources6(60);
    add_sources(client, &srcs6).unwrap();
    let replies = round(client, &srcs6, VIP6, |_| true, ROUND).unwrap();
    for (src, r) in srcs6.iter().zip(&replies) {
        let fold = fold_v6(&src.octets(), &VIP6.octets());
        let want = (0..3).find(|h| keeps(1 << h, 3, fold)).unwrap();
        assert_eq!(r, &vec![HOSTS[want].to_owned()], "flow from {src}");
    }
    // The client took the multicast group MAC from the leader's ARP reply and NA.
    for vip in [VIP.to_string(), VIP6.to_string()] {
        let out = client.ip(&["-j", "neigh", "show", &vip]).unwrap();
        let neigh: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(neigh[0]["lladdr"], "01:00:5e:00:01:01", "{neigh}");
    }

    // Host c drops off the LAN: its flows go silent until a survivor takes VHID 3; the
    // survivors' own flows never miss a reply.
    lan.cable(2, false).unwrap();
    let moved = until_moved(client, srcs, share[2]);
    let survivors = carp_tests::flows::masks(&agents[..2]);
    assert_eq!(
        survivors[0].unwrap() | survivors[1].unwrap(),
        0b111,
        "the survivors hold every VHID: {survivors:?}"
    );

    // Plugged back: with preempt it takes VHID 3, and its flows, back.
    lan.cable(2, true).unwrap();
    wait_masks(agents, &own, Duration::from_secs(8));
    // The survivor hears the returning master's first advert a moment after it took
    // over: let that pass.
    std::thread::sleep(Duration::from_millis(100));
    each_flow_answered_by_its_owner(client, srcs, "after the return");
    // Host c's agent freezes: its lease runs out before a survivor takes VHID 3, so no
    // flow is answered twice meanwhile, and c's flows come back within the master-down
    // time. Thawed, it takes them back.
    agents[2].signal(Signal::SIGSTOP).unwrap();
    let thawed = until_moved(client, srcs, share[2]);
    agents[2].signal(Signal::SIGCONT).unwrap();
    wait_masks(agents, &own, Duration::from_secs(8));
    std::thread::sleep(Duration::from_millis(100));
    each_flow_answered_by_its_owner(client, srcs, "after the thaw");
    eprintln!(
        "shares {share:?} of {FLOWS}; host c's share moved after {moved:?} (cable) and \
         {thawed:?} (frozen)"
    );
    // A reload of an unchanged file keeps the group as it is.
    agents[1].ctl(&["reload"]).unwrap();
    assert_eq!(carp_tests::flows::masks(agents), own);
    each_flow_answered_by_its_owner(client, srcs, "after a reload");
    // A stop lets go of the group MAC.
    agents[0].signal(Signal::SIGTERM).unwrap();
    agents[0].wait(Duration::from_secs(5)).unwrap();
    assert!(!group_mac_accepted(&lan.hosts[0].ns));
}

/// How long a client waits for a reply before it takes the request for lost.
const PATIENCE: Duration = Duration::from_millis(400);
/// How long after the leader's host drops off the LAN its flows may go unanswered: until
/// VHID 1's first backup (host b, advskew 110) takes over, 3 + 110/256 s after the last
/// advert it heard, and the 600 ms `until_moved` allows for the takeover.
const HANDOVER: Duration = Duration::from_micros(3_429_688 + 600_000);

/// The leader's host (a, MASTER of VHID 1, which answers ARP and NS for the group) drops
/// off the LAN while a client sends one request per flow every 400 ms: every flow of the
/// survivors' shares (b's, and c's served from tc) is answered within 400 ms in every
/// round, across the takeover; a's flows, from [`HANDOVER`] on, by one survivor within
/// 400 ms too. Reply times are the client kernel's receive timestamps.
#[test]
fn survivors_flows_are_answered_within_400ms_in_every_round_across_a_takeover() {
    const PULLED: usize = 0;
    let dir = TempDir::new("balance").unwrap();
    let group = Group::start(&dir, "bsv");
    let srcs = &group.srcs;
    // From 2 s before the cable is pulled to 2 s after a's flows must have moved.
    let count = (Duration::from_secs(4) + HANDOVER).as_millis() / PATIENCE.as_millis();
    let client = rounds(group.client(), srcs, VIP, PATIENCE, count as usize).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pulled = Instant::now();
    group.lan.cable(PULLED, false).unwrap();
    let seen = client.join().unwrap().unwrap();
    let mut misses = Vec::new();
    let mut slowest = Duration::ZERO;
    for (r, replies) in seen.replies.iter().enumerate() {
        let since = seen.sent[r].checked_duration_since(pulled);
        for (src, got) in srcs.iter().zip(replies) {
            // Every flow is answered by one host at most, however late.
            assert!(got.len() <= 1, "round {r} flow from {src}: {got:?}");
            let in_time: Vec<&str> = got
                .iter()
                .filter(|g| g.after <= PATIENCE)
                .map(|g| g.host.as_str())
                .collect();
            let owner = owner(&[1, 2, 4], *src);
            let ok = if owner != PULLED {
                slowest = got.iter().map(|g| g.after).fold(slowest, Duration::max);
                in_time == [HOSTS[owner]]
            } else if since.is_some_and(|s| s >= HANDOVER) {
                in_time.len() == 1 && in_time != [HOSTS[PULLED]]
            } else {
                true
            };
            if !ok {
                misses.push(format!(
                    "round {r} ({since:?} after the pull) {src}: {got:?}"
                ));
            }
        }
    }
    let counters: Vec<_> = group
        .agents
        .iter()
        .map(|a| {
            (
                a.xdp_counter("balance_kept"),
                a.xdp_counter("balance_dropped"),
            )
        })
        .collect();
    assert!(
        misses.is_empty(),
        "{} flows missed a round (kept/dropped per host {counters:?}):\n{}",
        misses.len(),
        misses.join("\n")
    );
    let masks = carp_tests::flows::masks(&group.agents[1..]);
    assert_eq!(masks[0].unwrap() | masks[1].unwrap(), 0b111, "{masks:?}");
    eprintln!("{count} rounds; the survivors' slowest reply took {slowest:?}");
}
