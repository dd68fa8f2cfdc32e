//! Sharing the interface with another XDP program: xdp-filter (xdp-tools' DDoS filter, a
//! libxdp program) holding the XDP hook of one host, loaded before the agent starts or
//! after it runs. The agent serves from tc ingress then, ahead of other tc programs; both
//! programs keep working, and stopping either leaves the other attached.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use aya::programs::{SchedClassifier, TcAttachType};
use carp_agent::control::Attached;
use carp_tests::{
    agent::{Agent, TempDir, start_sharing},
    lan::{Lan, one_mac_answers},
    netns::Netns,
    rawbpf,
};
use nix::sys::signal::Signal;
use std::{os::fd::AsRawFd as _, process::Command, sync::Mutex, time::Duration};

/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
const WAIT: Duration = Duration::from_secs(8);
const VIP: &str = "192.0.2.50";
/// Where xdp-filter pins its maps: one directory for the whole host, hence [`ONE_AT_A_TIME`].
const PINS: &str = "/sys/fs/bpf/xdp-filter";
/// xdp-filter's statistics are by XDP action; XDP_PASS is 2.
const XDP_PASS: u32 = 2;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// xdp-filter loaded on `eth0` of a namespace, unloaded on drop. It runs in the host's mount
/// namespace (nsenter, not `ip netns exec`), where bpffs holds its pins.
struct XdpFilter<'a> {
    ns: &'a Netns,
}

impl<'a> XdpFilter<'a> {
    fn load(ns: &'a Netns) -> Self {
        let filter = Self { ns };
        filter.run(&["load", "--mode", "native", "eth0"]);
        filter
    }

    fn run(&self, args: &[&str]) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name()))
            .arg("xdp-filter")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xdp-filter {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Frames it passed, summed over CPUs, from its pinned statistics map.
    fn passed(&self) -> u64 {
        let out = Command::new("bpftool")
            .args(["-j", "map", "lookup", "pinned"])
            .arg(format!("{PINS}/xdp_stats_map"))
            .args(["key"])
            .args(XDP_PASS.to_le_bytes().map(|b| b.to_string()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // struct datarec { __u64 rx_packets; __u64 rx_bytes; }, one per CPU.
        v["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cpu| {
                let bytes: Vec<u8> = cpu["value"].as_array().unwrap()[..8]
                    .iter()
                    .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16))
                    .collect::<Result<_, _>>()
                    .unwrap();
                u64::from_le_bytes(bytes.try_into().unwrap())
            })
            .sum()
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let _ = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name()))
            .args(["xdp-filter", "unload", "--all"])
            .output();
        let _ = std::fs::remove_dir_all(PINS);
    }
}

/// The XDP program on `eth0` of `ns`: its id and name, from `ip -j link`.
fn xdp_program(ns: &Netns) -> Option<(u64, String)> {
    let out = ns
        .command("ip")
        .args(["-j", "-d", "link", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let prog = &v[0]["xdp"]["prog"];
    Some((prog["id"].as_u64()?, prog["name"].as_str()?.to_owned()))
}

/// The names of the tcx ingress programs on `eth0` of `ns`, in order (BPF_PROG_QUERY;
/// this bpftool predates tcx).
fn tc_programs(ns: &Netns) -> Vec<String> {
    ns.enter(|| Ok(SchedClassifier::query_tcx("eth0", TcAttachType::Ingress)?))
        .unwrap()
        .1
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Host `h`'s agent ("a" or "b") with `xdp_mode` and `advskew` for VHID 1, in `state`.
fn agent(lan: &Lan, dir: &TempDir, h: usize, xdp_mode: &str, advskew: u8, state: &str) -> Agent {
    start_sharing(lan, dir.path(), h, xdp_mode, VIP, advskew, state).unwrap()
}

fn attached(agent: &Agent) -> Attached {
    agent.status().unwrap().interfaces[0].xdp_mode
}

/// xdp-filter first, and a tc program; the backup's agent (default `xdp_mode = "auto"`)
/// finds XDP taken and serves from tc ingress, first among the tc programs. It stays BACKUP while the master advertises, takes over within
/// its master-down time when the master dies and answers ARP for the VIP; the filter passes
/// frames all along, and after the agent stops it is still attached and counting.
#[test]
fn an_xdp_program_loaded_before_the_agent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = "xfb";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let filter = XdpFilter::load(&lan.hosts[0].ns);
    let before = xdp_program(&lan.hosts[0].ns).expect("xdp-filter attached");
    assert!(before.1.starts_with("xdpfilt"), "{before:?}");
    let other_tc = rawbpf::empty_program(rawbpf::BPF_PROG_TYPE_SCHED_CLS, 0, "other_tc");
    let _other_link = lan.hosts[0]
        .ns
        .enter(|| {
            let eth0 = nix::net::if_::if_nametoindex("eth0")?;
            Ok(rawbpf::attach_tcx_ingress(other_tc.as_raw_fd(), eth0))
        })
        .unwrap();

    let b = agent(&lan, &dir, 1, "auto", 0, "MASTER");
    let mut a = agent(&lan, &dir, 0, "auto", 100, "BACKUP");
    assert_eq!(attached(&a), Attached::Tc);
    assert_eq!(xdp_program(&lan.hosts[0].ns), Some(before.clone()));
    assert_eq!(tc_programs(&lan.hosts[0].ns), ["carp_tc", "other_tc"]);
    // b's adverts cross both programs: a stays BACKUP through several master-down times.
    let passed = filter.passed();
    std::thread::sleep(2 * MASTER_DOWN);
    assert_eq!(a.state(1).as_deref(), Some("BACKUP"));
    assert!(
        a.xdp_counter("adverts") >= 6,
        "{}",
        a.ctl(&["status"]).unwrap()
    );
    assert!(filter.passed() >= passed + 6);

    b.signal(Signal::SIGKILL).unwrap();
    let took = a.wait_state(1, "MASTER", WAIT).unwrap();
    assert!(took <= MASTER_DOWN + Duration::from_millis(500), "{took:?}");
    // The answer leaves by redirect from tc ingress: a's virtual MAC, and only that.
    assert_eq!(one_mac_answers(&lan.hosts[2].ns, VIP), "00:00:5e:00:01:01");
    assert!(a.xdp_counter("arp_replied") >= 3);

    a.signal(Signal::SIGTERM).unwrap();
    assert!(a.wait(Duration::from_secs(5)).unwrap().success());
    assert_eq!(tc_programs(&lan.hosts[0].ns), ["other_tc"]);
    assert_eq!(xdp_program(&lan.hosts[0].ns), Some(before));
    let passed = filter.passed();
    let ping = lan.hosts[2]
        .ns
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "1"])
        .arg(lan.hosts[0].addr.to_string())
        .output()
        .unwrap();
    assert!(ping.status.success(), "{ping:?}");
    assert!(filter.passed() >= passed + 3);
}

/// The agent first, at tc ingress by choice (`xdp_mode = "tc"`): xdp-filter attaches after
/// it and filters (its counters grow) while the agent stays MASTER and answers ARP;
/// unloading the filter leaves the agent attached and answering.
#[test]
fn an_xdp_program_loaded_after_the_agent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = "xfa";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let a = agent(&lan, &dir, 0, "tc", 0, "MASTER");
    let b = agent(&lan, &dir, 1, "auto", 100, "BACKUP");
    assert_eq!(attached(&a), Attached::Tc);
    assert_eq!(xdp_program(&lan.hosts[0].ns), None);
    let moves = (a.transitions(), b.transitions());

    let filter = XdpFilter::load(&lan.hosts[0].ns);
    assert!(xdp_program(&lan.hosts[0].ns).is_some_and(|(_, name)| name.starts_with("xdpfilt")));
    let passed = filter.passed();
    let replied = a.xdp_counter("arp_replied");
    assert_eq!(one_mac_answers(&lan.hosts[2].ns, VIP), "00:00:5e:00:01:01");
    assert!(a.xdp_counter("arp_replied") >= replied + 3);
    assert!(filter.passed() >= passed + 3);

    drop(filter);
    assert_eq!(xdp_program(&lan.hosts[0].ns), None);
    assert_eq!(tc_programs(&lan.hosts[0].ns), ["carp_tc"]);
    let replied = a.xdp_counter("arp_replied");
    assert_eq!(one_mac_answers(&lan.hosts[2].ns, VIP), "00:00:5e:00:01:01");
    assert!(a.xdp_counter("arp_replied") >= replied + 3);
    // Neither host moved through all of it.
    assert_eq!((a.transitions(), b.transitions()), moves);
}
