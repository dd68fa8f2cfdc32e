//! carp at tc ingress is one link of a chain: frames it does not consume go on to the tc
//! programs behind it, a tcx program attached after its link (`tcx::`) or a classic clsact
//! direct-action filter (`clsact::`), which see them and decide them. A counting program
//! behind carp counts every frame sent to the host, those carp marks for it (a virtual
//! MAC's) included; a program that drops everything behind carp drops them, while carp
//! still takes its adverts and answers ARP for its VIPs ahead of it.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::control::Attached;
use carp_tests::{
    agent::{Agent, TempDir, start_sharing},
    lan::{Lan, one_mac_answers},
    netns::{Netns, run},
    rawbpf::{self, Filter},
};
use nix::sys::signal::Signal;
use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, OwnedFd},
    process::Command,
    time::Duration,
};

/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
const WAIT: Duration = Duration::from_secs(8);
const VIP: &str = "192.0.2.50";
/// Pings per check.
const PINGS: u64 = 5;

/// How the program behind carp is attached to the ingress of `eth0`.
#[derive(Clone, Copy)]
enum Behind {
    /// A tcx link, after the programs there (carp's link puts itself first).
    Tcx,
    /// A cls_bpf direct-action filter of a clsact qdisc, which runs after every tcx program.
    Clsact,
}

impl Behind {
    /// Attaches `filter` on `eth0` of `ns`; it stays while the returned link (tcx) or the
    /// namespace (clsact) does.
    fn attach(self, ns: &Netns, filter: &Filter) -> Option<OwnedFd> {
        match self {
            Self::Tcx => Some(
                ns.enter(|| {
                    let eth0 = nix::net::if_::if_nametoindex("eth0")?;
                    Ok(rawbpf::attach_tcx_ingress(filter.prog.as_raw_fd(), eth0))
                })
                .unwrap(),
            ),
            Self::Clsact => {
                run(ns
                    .command("tc")
                    .args(["qdisc", "add", "dev", "eth0", "clsact"]))
                .unwrap();
                // tc takes a program by its pin on bpffs, which `ip netns exec` would hide
                // behind a new /sys: nsenter joins the namespace's network alone. The
                // filter holds the program; the pin goes at once.
                let pin = format!("/sys/fs/bpf/{}-filter", ns.name());
                rawbpf::pin(filter.prog.as_raw_fd(), &CString::new(pin.clone()).unwrap());
                let added = run(Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", ns.name()))
                    .args(["tc", "filter", "add", "dev", "eth0", "ingress", "bpf"])
                    .args(["object-pinned", &pin, "direct-action"]));
                std::fs::remove_file(&pin).unwrap();
                added.unwrap();
                None
            }
        }
    }
}

/// Host `h`'s agent ("a" or "b") with `xdp_mode` and `advskew` for VHID 1, in `state`.
fn agent(lan: &Lan, dir: &TempDir, h: usize, xdp_mode: &str, advskew: u8, state: &str) -> Agent {
    start_sharing(lan, dir.path(), h, xdp_mode, VIP, advskew, state).unwrap()
}

/// Pings `to` from `client` [`PINGS`] times: whether any reply came. Panics when ping
/// fails otherwise (exit code 2), so a broken command never reads as a dropped ping.
fn answered(client: &Netns, to: &str) -> bool {
    let out = client
        .command("ping")
        .args(["-c", &PINGS.to_string(), "-i", "0.2", "-W", "1", to])
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("ping {to}: {out:?}"),
    }
}

/// Makes host `from` send to host `h`'s address without asking ARP, which a program that
/// drops everything behind carp on either would leave unanswered.
fn static_neighbour(lan: &Lan, from: usize, h: usize) {
    let out = run(lan.hosts[h]
        .ns
        .command("ip")
        .args(["-j", "link", "show", "dev", "eth0"]))
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mac = v[0]["address"].as_str().unwrap();
    let addr = lan.hosts[h].addr.to_string();
    lan.hosts[from]
        .ns
        .ip(&["neigh", "replace", &addr, "lladdr", mac, "dev", "eth0"])
        .unwrap();
}

/// A MASTER at tc ingress and a program that only counts behind it: the client's pings to
/// the host's address, which carp passes untouched, and to the VIP, whose frames to the
/// virtual MAC carp rewrites and marks for the host, all reach the program and are
/// answered.
fn a_counting_program_behind_carp_sees_every_frame_to_the_host(behind: Behind) {
    let tag = "tcc";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let a = agent(&lan, &dir, 0, "tc", 0, "MASTER");
    assert_eq!(a.status().unwrap().interfaces[0].xdp_mode, Attached::Tc);
    let counter = Filter::new("counter", Filter::NEXT, Filter::NEXT);
    let _link = behind.attach(&lan.hosts[0].ns, &counter);

    let client = &lan.hosts[1].ns;
    let seen = counter.count(Filter::ECHO_REQUESTS);
    assert!(answered(client, &lan.hosts[0].addr.to_string()));
    assert!(
        counter.count(Filter::ECHO_REQUESTS) >= seen + PINGS,
        "{} of {PINGS} pings to the host's address",
        counter.count(Filter::ECHO_REQUESTS) - seen
    );

    let marked = a.xdp_counter("vmac_passed");
    let seen = counter.count(Filter::ECHO_REQUESTS);
    assert!(answered(client, VIP));
    assert!(a.xdp_counter("vmac_passed") >= marked + PINGS);
    assert!(
        counter.count(Filter::ECHO_REQUESTS) >= seen + PINGS,
        "{} of {PINGS} pings to the VIP",
        counter.count(Filter::ECHO_REQUESTS) - seen
    );
}

/// A program that drops everything, behind carp on host a (attached before the agent
/// starts): the BACKUP there still takes the master's adverts (it stays BACKUP, its advert
/// counter grows), takes over when the master dies and answers ARP for the VIP; and the
/// pings to the host's address and to the VIP reach the program and go unanswered.
fn a_dropping_program_behind_carp_still_drops_and_carp_still_serves(behind: Behind) {
    let tag = "tcd";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let wall = Filter::new("wall", Filter::DROP, Filter::DROP);
    let _link = behind.attach(&lan.hosts[0].ns, &wall);
    let b = agent(&lan, &dir, 1, "auto", 0, "MASTER");
    let a = agent(&lan, &dir, 0, "tc", 100, "BACKUP");
    assert_eq!(a.status().unwrap().interfaces[0].xdp_mode, Attached::Tc);

    let adverts = a.xdp_counter("adverts");
    std::thread::sleep(2 * MASTER_DOWN);
    assert_eq!(a.state(1).as_deref(), Some("BACKUP"));
    assert!(a.xdp_counter("adverts") >= adverts + 4);

    let client = &lan.hosts[2].ns;
    // Both ways: the echo requests reach the program, and an answer, had one gone through,
    // would not wait for an ARP reply that the program drops too.
    static_neighbour(&lan, 2, 0);
    static_neighbour(&lan, 0, 2);
    let seen = wall.count(Filter::ECHO_REQUESTS);
    assert!(
        !answered(client, &lan.hosts[0].addr.to_string()),
        "the host answered pings its tc filter drops"
    );
    assert!(wall.count(Filter::ECHO_REQUESTS) >= seen + PINGS);

    b.signal(Signal::SIGKILL).unwrap();
    let took = a.wait_state(1, "MASTER", WAIT).unwrap();
    assert!(took <= MASTER_DOWN + Duration::from_millis(500), "{took:?}");
    let replied = a.xdp_counter("arp_replied");
    assert_eq!(one_mac_answers(client, VIP), "00:00:5e:00:01:01");
    assert!(a.xdp_counter("arp_replied") >= replied + 3);

    let marked = a.xdp_counter("vmac_passed");
    let seen = wall.count(Filter::ECHO_REQUESTS);
    assert!(
        !answered(client, VIP),
        "the VIP answered pings its tc filter drops"
    );
    assert!(a.xdp_counter("vmac_passed") >= marked + PINGS);
    assert!(wall.count(Filter::ECHO_REQUESTS) >= seen + PINGS);
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
}

/// Each case once per way of attaching.
macro_rules! behind_both {
    ($($case:ident),* $(,)?) => {
        mod tcx {
            $(#[test]
            fn $case() {
                super::$case(super::Behind::Tcx);
            })*
        }
        mod clsact {
            $(#[test]
            fn $case() {
                super::$case(super::Behind::Clsact);
            })*
        }
    };
}

behind_both!(
    a_counting_program_behind_carp_sees_every_frame_to_the_host,
    a_dropping_program_behind_carp_still_drops_and_carp_still_serves,
);
