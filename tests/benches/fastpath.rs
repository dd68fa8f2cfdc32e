//! What carp's XDP program costs traffic that is not CARP, next to an empty XDP program in
//! the same run: (a) BPF_PROG_TEST_RUN with `repeat` on the same frames, the kernel's mean
//! per run, both programs run through the same syscall so the harness costs the same, and
//! the same for its tc program against an empty tc program;
//! (b) live frames over a veth pair in native XDP mode at the highest rate one sending
//! core reaches, counted by the receiving interface, with no program, the empty one and
//! carp's. The empty program is two instructions loaded with bpf(2) directly: aya loads
//! programs from objects only. REPEAT, TRIALS and LIVE_SECS scale it down for a smoke run.

use carp_agent::{send::PacketSocket, xdp::DataPlane};
use carp_tests::{
    frames,
    netns::{Netns, veth},
    rawbpf::{BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, attach_native, empty_program, test_run},
    setting,
};
use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Packets `ns`'s `dev` received, from the kernel's 64-bit counters.
fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", dev]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no rx packets in {v}"))
}

fn main() {
    let repeat: u32 = setting("REPEAT", 1_000_000);
    let trials: usize = setting("TRIALS", 5);
    let live = Duration::from_secs_f64(setting("LIVE_SECS", 5.0));

    let mut carp = DataPlane::load().expect("loading the XDP program (root?)");
    let carp_fd = carp.program().unwrap().fd().unwrap().as_fd().as_raw_fd();
    let carp_tc = carp.classifier().unwrap().fd().unwrap().as_fd().as_raw_fd();
    let empty = empty_program(BPF_PROG_TYPE_XDP, 2, "empty_xdp");
    let empty_tc = empty_program(BPF_PROG_TYPE_SCHED_CLS, 0, "empty_tc");
    let mac = [2, 0, 0, 0, 0, 0xbb];
    // A UDP datagram from 198.51.100.1 to .2, to `dst`.
    let udp = |dst, vlan| {
        let mut f = frames::ethernet(dst, mac, vlan, frames::ETH_P_IP);
        f.extend(frames::ipv4(
            [198, 51, 100, 1],
            [198, 51, 100, 2],
            64,
            17,
            &[0; 18],
        ));
        f
    };
    let mut tcp6 = frames::ethernet([2, 0, 0, 0, 0, 0xaa], mac, None, frames::ETH_P_IPV6);
    tcp6.extend(frames::ipv6(
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        64,
        6,
        &[0; 20],
    ));
    let arp = frames::arp_request(mac, [198, 51, 100, 1], [198, 51, 100, 9]);
    println!("### BPF_PROG_TEST_RUN: carp against an empty program\n");
    println!(
        "Mean ns per run of {repeat} repeats, median of {trials} trials; the empty program's \
         time is the harness's own (at tc it builds an skb each run). XDP is carp's hook; tc \
         ingress where another program holds XDP.\n"
    );
    println!("| hook | frame | empty program | carp | overhead | ratio |");
    println!("|---|---|---:|---:|---:|---:|");
    let cases = [
        ("IPv4 UDP", udp([2, 0, 0, 0, 0, 0xaa], None)),
        ("IPv4 UDP, VLAN-tagged", udp([2, 0, 0, 0, 0, 0xaa], Some(7))),
        ("IPv6 TCP", tcp6),
        ("ARP request, not for a VIP", arp),
    ];
    let hooks = [
        ("XDP", empty.as_raw_fd(), carp_fd),
        ("tc", empty_tc.as_raw_fd(), carp_tc),
    ];
    // A discarded round first: the first runs find the CPU at a lower clock.
    for (_, empty, carp) in hooks {
        test_run(empty, &cases[0].1, repeat);
        test_run(carp, &cases[0].1, repeat);
    }
    for (hook, empty, carp) in hooks {
        for (name, frame) in &cases {
            let (mut e, mut c) = (Vec::new(), Vec::new());
            for _ in 0..trials {
                e.push(test_run(empty, frame, repeat));
                c.push(test_run(carp, frame, repeat));
            }
            let (e, c) = (median(e), median(c));
            println!(
                "| {hook} | {name} | {e} | {c} | {} | {:.2} |",
                c as i64 - e as i64,
                c as f64 / e.max(1) as f64
            );
        }
    }

    // (b) Live frames: one core sends, the other receives through veth's NAPI.
    let gen_ns = Netns::new("fpgen").unwrap();
    let dut = Netns::new("fpdut").unwrap();
    veth(
        &gen_ns,
        "gen",
        "198.51.100.1/24",
        &dut,
        "dut",
        "198.51.100.2/24",
    )
    .unwrap();
    let dut_mac = {
        let out = dut.ip(&["-j", "link", "show", "dut"]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let text = v[0]["address"].as_str().unwrap().to_owned();
        let b: Vec<u8> = text
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        <[u8; 6]>::try_from(b).unwrap()
    };
    let frame = udp(dut_mac, None);
    let dut_index = dut
        .enter(|| Ok(nix::net::if_::if_nametoindex("dut")?))
        .unwrap();
    // Packets per second `dut` receives while one thread sends as fast as it can.
    let rate = |secs: Duration| -> f64 {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let frame = frame.clone();
        let file = std::fs::File::open(format!("/var/run/netns/{}", gen_ns.name())).unwrap();
        let sender = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let sock = PacketSocket::bind(nix::net::if_::if_nametoindex("gen").unwrap()).unwrap();
            while !flag.load(Ordering::Relaxed) {
                // A full ring on the receiving side refuses some; that is the point.
                let _ = sock.send(&frame);
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let (before, start) = (rx_packets(&dut, "dut"), Instant::now());
        std::thread::sleep(secs);
        let got = rx_packets(&dut, "dut") - before;
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        got as f64 / took.as_secs_f64()
    };
    let mut none = Vec::new();
    let mut empty_live = Vec::new();
    let mut carp_live = Vec::new();
    for _ in 0..trials {
        none.push(rate(live) as u64);
        let link = dut
            .enter(|| Ok(attach_native(empty.as_raw_fd(), dut_index)))
            .unwrap();
        empty_live.push(rate(live) as u64);
        drop(link);
        let link = dut
            .enter(|| carp.attach("dut", aya::programs::XdpMode::Driver))
            .unwrap();
        carp_live.push(rate(live) as u64);
        carp.program().unwrap().detach(link).unwrap();
    }
    let (none, empty_live, carp_live) = (median(none), median(empty_live), median(carp_live));
    println!(
        "\n### Live frames over veth, native XDP\n\nIPv4 UDP frames from one sending thread \
         (AF_PACKET) to a veth whose peer runs the program in native mode; packets per second \
         the receiving interface counted, median of {trials} trials of {:.1} s. The frames \
         pass to the stack either way.\n",
        live.as_secs_f64()
    );
    println!("| receiver | packets/s | of the empty program's |");
    println!("|---|---:|---:|");
    for (name, pps) in [
        ("no XDP program", none),
        ("empty XDP program", empty_live),
        ("carp", carp_live),
    ] {
        println!(
            "| {name} | {pps} | {:.1} % |",
            100.0 * pps as f64 / empty_live.max(1) as f64
        );
    }
}
