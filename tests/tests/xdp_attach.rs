//! The XDP program attached to a veth in namespaces, in skb and native mode, seeing real
//! traffic (needs root).
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use aya::programs::XdpMode;
use carp_agent::{
    hmac::Auth,
    send::PacketSocket,
    vlan_offload::rx_vlan_offload,
    xdp::{DataPlane, parse_event, vhid_entry, vhid_keys},
};
use carp_common::{
    State,
    maps::{Flags, VhidKey, XdpStats},
    wire::{self, CarpHeader, IPPROTO_CARP},
};
use carp_tests::{
    frames as frame,
    netns::{Netns, veth},
    rawbpf,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd as _,
    time::Duration,
};

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

/// Where the program runs on `vb` in these tests.
#[derive(Clone, Copy, Debug)]
enum Hook {
    Tc,
    Generic,
}

/// Attaches `dp` to `iface` of `ns` on `hook`, runs `f`, detaches, and returns what the
/// counters did meanwhile.
fn on_hook(dp: &mut DataPlane, ns: &Netns, iface: &str, hook: Hook, f: impl FnOnce()) -> XdpStats {
    let before = dp.stats().unwrap();
    match hook {
        Hook::Tc => {
            let link = ns.enter(|| dp.attach_tc(iface)).unwrap();
            f();
            dp.classifier().unwrap().detach(link).unwrap();
        }
        Hook::Generic => {
            let link = ns.enter(|| dp.attach(iface, XdpMode::Skb)).unwrap();
            f();
            dp.program().unwrap().detach(link).unwrap();
        }
    }
    dp.stats().unwrap().since(&before)
}

/// Sends whole `frames` out of `iface` of `ns`, and gives the receiver a moment.
fn send_frames(ns: &Netns, iface: &str, frames: &[Vec<u8>]) {
    ns.enter(|| {
        let sock = PacketSocket::bind(nix::net::if_::if_nametoindex(iface)?)?;
        for f in frames {
            sock.send(f)?;
        }
        Ok(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
}

fn ifindex(ns: &Netns, iface: &str) -> u32 {
    ns.enter(|| Ok(nix::net::if_::if_nametoindex(iface)?))
        .unwrap()
}

/// An skb may hold most of a frame in page fragments (virtio_net, GRO), past the linear
/// part that direct packet access reaches; at tc the program pulls an advert in whole
/// (bpf_skb_pull_data), as long as its IP header says. Frames padded past a page make
/// AF_PACKET put all but the Ethernet header in fragments (packet_alloc_skb), and veth
/// hands the skb on as it is: the largest VRRPv3 adverts of each family (255 IPv4, 90 IPv6
/// addresses) reach the agent with their priority and interval, at tc as in generic XDP
/// (which linearizes). Before the pull, the tc program took them for valid adverts of
/// priority 0, "master stopping".
#[test]
fn adverts_mostly_in_page_fragments_are_read_whole() {
    let a = Netns::new("frag-a").unwrap();
    let b = Netns::new("frag-b").unwrap();
    veth(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24").unwrap();
    a.ip(&["link", "set", "va", "mtu", "9000"]).unwrap();
    b.ip(&["link", "set", "vb", "mtu", "9000"]).unwrap();
    let mut dp = DataPlane::load().unwrap();
    let mut events = dp.take_events().unwrap();
    const VRID: u8 = 51;
    let mac = wire::virtual_mac(VRID);
    let entry = vhid_entry(
        carp_common::Protocol::VRRPV3,
        State::BACKUP,
        Flags::default(),
        mac,
        mac,
        None,
    );
    dp.set_vhid(&VhidKey::new(ifindex(&b, "vb"), 0, VRID), &entry)
        .unwrap();
    let (v4, v6) = frame::largest_vrrp3(VRID, 1);
    let padded: Vec<Vec<u8>> = [v4, v6]
        .into_iter()
        .map(|mut f| {
            f.resize(5000, 0);
            f
        })
        .collect();
    for hook in [Hook::Tc, Hook::Generic] {
        let delta = on_hook(&mut dp, &b, "vb", hook, || send_frames(&a, "va", &padded));
        assert_eq!(
            (delta.proto112, delta.adverts, delta.truncated),
            (2, 2, 0),
            "{hook:?}: {delta:?}"
        );
        for family in [4, 6] {
            let ev = events
                .next()
                .and_then(|item| parse_event(&item))
                .unwrap_or_else(|| panic!("{hook:?}: no event for IPv{family}"));
            assert_eq!(
                (ev.family, ev.priority, ev.interval_cs),
                (family, 100, 100),
                "{hook:?}"
            );
        }
    }
}

/// With tx VLAN offload, veth hands its peer the tag a VLAN device (here
/// bpf_skb_vlan_push on the sender's egress) put in the skb's metadata, as a NIC with rx
/// VLAN offload hands it up: tc sees it (`skb->vlan_tci`), XDP sees the frame's bytes,
/// untagged. An advert of VLAN 10 for the number of vb's untagged VHID is someone else's
/// (`foreign`) at tc, and generic XDP takes it for vb's own: why `xdp_mode = "auto"`
/// attaches at tc where rx VLAN offload is on and VLAN interfaces sit on the interface
/// (`carp_agent::vlan_offload`). With the offload off the tag is in the bytes, and both
/// hooks agree. `rx_vlan_offload` reads the flag veth has on, and off once turned off.
#[test]
fn offloaded_vlan_tags_are_seen_at_tc_and_hidden_from_xdp() {
    let a = Netns::new("vlan-a").unwrap();
    let b = Netns::new("vlan-b").unwrap();
    veth(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24").unwrap();
    let offload = |ns: &Netns, iface: &str| ns.enter(|| Ok(rx_vlan_offload(iface)?)).unwrap();
    assert!(offload(&b, "vb"), "veth's rx VLAN offload is on by default");
    let ethtool = |ns: &Netns, args: &[&str]| {
        let out = ns.command("ethtool").args(args).output().unwrap();
        assert!(out.status.success(), "ethtool {args:?}: {out:?}");
    };
    ethtool(&b, &["-K", "vb", "rxvlan", "off"]);
    assert!(!offload(&b, "vb"));
    ethtool(&b, &["-K", "vb", "rxvlan", "on"]);

    let mut dp = DataPlane::load().unwrap();
    const VHID: u8 = 1;
    let vip: IpAddr = Ipv4Addr::new(192, 0, 2, 50).into();
    let auth = Auth::new(b"testpass", VHID, &[vip]).unwrap();
    let mac = wire::virtual_mac(VHID);
    let entry = vhid_entry(
        carp_common::Protocol::CARP,
        State::BACKUP,
        Flags::default(),
        mac,
        mac,
        Some(&auth),
    );
    let key = VhidKey::new(ifindex(&b, "vb"), 0, VHID);
    dp.set_keys(&key, &vhid_keys(&auth)).unwrap();
    dp.set_vhid(&key, &entry).unwrap();
    let tagger = rawbpf::vlan_push_program(10);
    let va = ifindex(&a, "va");
    let _tagging = a
        .enter(|| Ok(rawbpf::attach_tcx_egress(tagger.as_raw_fd(), va)))
        .unwrap();
    // Each advert with an advskew of its own, so none is a repeat of the last.
    let mut advskew = 0;
    let mut advert = || {
        advskew += 1;
        let h = CarpHeader {
            vhid: VHID,
            advskew,
            demote: 0,
            advbase: 1,
            counter: u64::from(advskew),
            digest: auth.sign(u64::from(advskew)),
        };
        vec![frame::carp(Ipv4Addr::new(192, 0, 2, 1).into(), &h)]
    };
    let foreign = |d: XdpStats| (d.proto112, d.foreign, d.adverts);
    // The tag in the skb's metadata: tc sees VLAN 10, XDP an untagged advert.
    let tc = on_hook(&mut dp, &b, "vb", Hook::Tc, || {
        send_frames(&a, "va", &advert())
    });
    assert_eq!(foreign(tc), (1, 1, 0), "tc: {tc:?}");
    let xdp = on_hook(&mut dp, &b, "vb", Hook::Generic, || {
        send_frames(&a, "va", &advert())
    });
    assert_eq!(foreign(xdp), (1, 0, 1), "generic XDP: {xdp:?}");
    // The tag in the bytes: both see VLAN 10.
    ethtool(&a, &["-K", "va", "txvlan", "off"]);
    for hook in [Hook::Tc, Hook::Generic] {
        let d = on_hook(&mut dp, &b, "vb", hook, || send_frames(&a, "va", &advert()));
        assert_eq!(foreign(d), (1, 1, 0), "{hook:?}, tag in the bytes: {d:?}");
    }
}
