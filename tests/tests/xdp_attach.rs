//! The XDP program attached to a veth in namespaces, in skb and native mode, seeing real
//! traffic (needs root).
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use aya::programs::XdpMode;
use carp_agent::xdp::DataPlane;
use carp_common::wire::{CarpHeader, IPPROTO_CARP};
use carp_tests::netns::{Netns, veth};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{Ipv4Addr, SocketAddrV4};

/// Sends `n` CARP adverts as raw IP packets from inside `ns` to `dst`.
fn send_adverts(ns: &Netns, dst: Ipv4Addr, n: u64) -> anyhow::Result<()> {
    ns.enter(|| {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_CARP))),
        )?;
        for counter in 0..n {
            let advert = CarpHeader {
                vhid: 1,
                advskew: 0,
                demote: 0,
                advbase: 1,
                counter,
                digest: [0; 20],
            };
            sock.send_to(&advert.encode(), &SocketAddrV4::new(dst, 0).into())?;
        }
        Ok(())
    })
}

fn ping(ns: &Netns, dst: &str, count: u32) {
    let out = ns
        .command("ping")
        .args(["-c", &count.to_string(), "-i", "0.05", "-W", "1", dst])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn counts_traffic_in_skb_and_native_mode() {
    let a = Netns::new("xa").unwrap();
    let b = Netns::new("xb").unwrap();
    veth(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24").unwrap();
    let mut dp = DataPlane::load().unwrap();
    for mode in [XdpMode::Skb, XdpMode::Driver] {
        let link = b.enter(|| dp.attach("vb", mode)).unwrap();
        let before = dp.stats().unwrap();
        ping(&a, "192.0.2.2", 5);
        send_adverts(&a, Ipv4Addr::new(192, 0, 2, 2), 3).unwrap();
        // Raw sends are asynchronous to the receiver; give the stack a moment.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let delta = dp.stats().unwrap().since(&before);
        // No VHID is configured, so the adverts are someone else's and pass on.
        assert_eq!(
            (delta.proto112, delta.foreign),
            (3, 3),
            "{mode:?}: {delta:?}"
        );
        dp.program().unwrap().detach(link).unwrap();
    }
}

/// libbpf opens the object as the ecosystem's tools do: `bpftool prog load` loads it (a
/// ring buffer declared with a value type once made libbpf refuse it: "conflicting value
/// size 72 != 0"), and iproute2 attaches it in generic mode. libxdp, which the busy-host
/// work relies on, loads programs through libbpf too.
#[test]
fn libbpf_tools_load_the_object() {
    let dir = carp_tests::agent::TempDir::new("libbpf").unwrap();
    let object = dir.path().join("carp.o");
    std::fs::write(&object, carp_agent::xdp::OBJECT).unwrap();
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/carpt-libbpf-{}", std::process::id()));
    let load = std::process::Command::new("bpftool")
        .arg("prog")
        .arg("load")
        .arg(&object)
        .arg(&pin)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&pin);
    assert!(
        load.status.success(),
        "bpftool prog load: {}",
        String::from_utf8_lossy(&load.stderr)
    );

    let a = Netns::new("libbpf-a").unwrap();
    let b = Netns::new("libbpf-b").unwrap();
    veth(&a, "eth0", "192.0.2.1/24", &b, "eth0", "192.0.2.2/24").unwrap();
    let object = object.to_str().unwrap();
    a.ip(&[
        "link",
        "set",
        "dev",
        "eth0",
        "xdpgeneric",
        "obj",
        object,
        "sec",
        "xdp",
    ])
    .unwrap();
    let out = a.ip(&["-j", "link", "show", "eth0"]).unwrap();
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        link[0]["xdp"]["prog"]["id"].as_u64().is_some(),
        "not attached: {link}"
    );
    // The program passes what is not CARP: the link still carries traffic.
    ping(&a, "192.0.2.2", 3);
    a.ip(&["link", "set", "dev", "eth0", "xdpgeneric", "off"])
        .unwrap();
}
