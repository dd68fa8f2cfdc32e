//! Path MTU discovery through a balanced group. A router joins the group's LAN to a
//! client subnet behind a 1300-byte link; each host's server answers with 1400 bytes. A
//! reply too big for that link draws the router's "fragmentation needed" (IPv4) or
//! "packet too big" (IPv6), sent from the router's address to the VIP's group MAC. As
//! OpenBSD's icmp_input does (carp_lsdrop by the quoted destination), the IPv4 error goes
//! to the host whose flow it quotes, not to the host the router's address hashes to; as
//! its icmp6_input does, packet too big reaches every host. Either way the flow's owner
//! learns the MTU (`ip -j route get`) and the flow's next reply, fragmented, reaches the
//! client. Host c serves from tc ingress.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_common::balance::{fold_v4, fold_v6, keeps};
use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    flows::{PORT, Server, add_sources, config, sources, wait_masks},
    lan::Lan,
    netns::{Netns, run, veth},
};
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    time::{Duration, Instant},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
const HOSTS: [&str; 3] = ["a", "b", "c"];
/// The router, the LAN's fourth host.
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 4);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 4);
/// The MTU of the router's link to the client.
const MTU: u64 = 1300;
/// The servers' replies: more than [`MTU`], less than the LAN's 1500.
const REPLY: usize = 1400;

/// The host whose share (masks 1, 2, 4) the flow of `fold` is.
fn owner(fold: u32) -> usize {
    (0..HOSTS.len())
        .find(|h| keeps(1 << h, HOSTS.len() as u8, fold))
        .unwrap()
}

/// The MTU the kernel of `ns` holds for `dst` from `src` (`ip -j route get`; a learnt
/// path MTU is a metric of the cached route), and the route.
fn route_mtu(ns: &Netns, dst: IpAddr, src: IpAddr) -> (Option<u64>, serde_json::Value) {
    let (dst, src) = (dst.to_string(), src.to_string());
    let out = ns.ip(&["-j", "route", "get", &dst, "from", &src]).unwrap();
    let route: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (route[0]["metrics"][0]["mtu"].as_u64(), route)
}

/// One request from `src` to the servers on `vip`, from inside `client`: the reply's
/// sender and length, or `None` when none comes within `wait`.
fn ask(client: &Netns, src: IpAddr, vip: IpAddr, wait: Duration) -> Option<(String, usize)> {
    client
        .enter(|| {
            let sock = UdpSocket::bind((src, 0))?;
            sock.set_read_timeout(Some(wait))?;
            sock.send_to(b"who", (vip, PORT))?;
            let mut buf = [0u8; 2 * REPLY];
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let name = buf[..n].split(|b| *b == b'/').next().unwrap_or_default();
                    Ok(Some((String::from_utf8_lossy(name).into_owned(), n)))
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .unwrap()
}

/// The group, the router and the client, dropped in this order: servers and agents
/// before their namespaces.
struct Net {
    _servers: Vec<Server>,
    agents: Vec<Agent>,
    client: Netns,
    lan: Lan,
}

/// The client subnet behind the router: 198.51.100.0/24 and 2001:db8:1::/64 on the
/// client, reached through 198.18.0.0/24 and 2001:db8:ff::/64, the router's 1300-byte
/// link.
fn start(dir: &TempDir, clients: &[IpAddr]) -> Net {
    let mut lan = Lan::new("pmtu", &HOSTS).unwrap();
    let router = lan.add_host("pmtu", "router").unwrap();
    assert_eq!((router.addr, router.addr6), (ROUTER, ROUTER6));
    let router = &lan.hosts[3].ns;
    let client = Netns::new("pmtu-client").unwrap();
    veth(
        router,
        "eth1",
        "198.18.0.1/24",
        &client,
        "eth0",
        "198.18.0.2/24",
    )
    .unwrap();
    for (ns, dev, addr) in [
        (router, "eth1", "2001:db8:ff::1/64"),
        (&client, "eth0", "2001:db8:ff::2/64"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]).unwrap();
        ns.ip(&["link", "set", dev, "mtu", &MTU.to_string()])
            .unwrap();
    }
    for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        run(router.command("sysctl").args(["-qw", sysctl])).unwrap();
    }
    router
        .ip(&["route", "add", "198.51.100.0/24", "via", "198.18.0.2"])
        .unwrap();
    router
        .ip(&["route", "add", "2001:db8:1::/64", "via", "2001:db8:ff::2"])
        .unwrap();
    client
        .ip(&["route", "add", "default", "via", "198.18.0.1"])
        .unwrap();
    client
        .ip(&["route", "add", "default", "via", "2001:db8:ff::1"])
        .unwrap();
    add_sources(&client, clients).unwrap();
    for host in &lan.hosts[..3] {
        let ns = &host.ns;
        ns.ip(&[
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            &ROUTER.to_string(),
        ])
        .unwrap();
        ns.ip(&[
            "route",
            "add",
            "2001:db8:1::/64",
            "via",
            &ROUTER6.to_string(),
        ])
        .unwrap();
    }
    let pass = dir.path().join("pass");
    write_secret(&pass, "pmtu-secret").unwrap();
    let vips = [&format!("{VIP}/24")[..], &format!("{VIP6}/64")];
    let agents: Vec<Agent> = (0..3)
        .map(|h| {
            let ns = lan.hosts[h].ns.name();
            let hook = if h == 2 { "tc" } else { "auto" };
            let conf = format!(
                "netns = \"{ns}\"\nxdp_mode = \"{hook}\"\n\n{}",
                config(h, 3, &vips, &pass)
            );
            Agent::start_on_host(dir.path(), HOSTS[h], &conf).unwrap()
        })
        .collect();
    let own = [Some(0b001), Some(0b010), Some(0b100)];
    wait_masks(&agents, &own, Duration::from_secs(12));
    let servers = (0..3)
        .flat_map(|h| {
            let ns = &lan.hosts[h].ns;
            [
                Server::padded(ns, VIP, HOSTS[h], REPLY).unwrap(),
                Server::padded(ns, VIP6, HOSTS[h], REPLY).unwrap(),
            ]
        })
        .collect();
    Net {
        _servers: servers,
        agents,
        client,
        lan,
    }
}

#[test]
fn the_flows_owner_learns_the_path_mtu_from_the_routers_icmp() {
    // The router's address hashes to host a; one client flow owned by b (XDP) and one
    // by c (tc ingress), each family.
    let router_owner = owner(fold_v4(ROUTER.octets(), VIP.octets()));
    let router_owner6 = owner(fold_v6(&ROUTER6.octets(), &VIP6.octets()));
    assert_eq!((router_owner, router_owner6), (0, 0));
    let v4: Vec<(IpAddr, u32)> = sources(100)
        .into_iter()
        .map(|c| (c.into(), fold_v4(c.octets(), VIP.octets())))
        .collect();
    let v6: Vec<(IpAddr, u32)> = (1..=100)
        .map(|i| {
            let c = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i);
            (c.into(), fold_v6(&c.octets(), &VIP6.octets()))
        })
        .collect();
    let pick = |flows: &[(IpAddr, u32)], h| flows.iter().find(|f| owner(f.1) == h).unwrap().0;
    // (client, the VIP it asks, its flow's owner)
    let flows: Vec<(IpAddr, IpAddr, usize)> = [1, 2]
        .into_iter()
        .flat_map(|h| {
            [
                (pick(&v4, h), IpAddr::from(VIP), h),
                (pick(&v6, h), IpAddr::from(VIP6), h),
            ]
        })
        .collect();
    let clients: Vec<IpAddr> = flows.iter().map(|f| f.0).collect();
    let dir = TempDir::new("balance_pmtu").unwrap();
    let net = start(&dir, &clients);
    for &(client, vip, h) in &flows {
        let host = &net.lan.hosts[h].ns;
        assert_eq!(route_mtu(host, client, vip).0, None, "{client} at first");
        // The first reply, 1400 bytes with DF (or IPv6), cannot pass the router's link.
        let first = ask(&net.client, client, vip, Duration::from_secs(1));
        assert_eq!(first, None, "{client}: the reply went through whole");
        let start = Instant::now();
        let learnt = loop {
            let (mtu, route) = route_mtu(host, client, vip);
            if mtu.is_some() || start.elapsed() > Duration::from_secs(5) {
                break (mtu, route);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let counters: Vec<_> = net
            .agents
            .iter()
            .map(|a| {
                (
                    a.xdp_counter("balance_kept"),
                    a.xdp_counter("balance_dropped"),
                    a.xdp_counter("balance_malformed"),
                )
            })
            .collect();
        assert_eq!(
            learnt.0,
            Some(MTU),
            "host {} about {client}: {} (kept/dropped/malformed per host {counters:?})",
            HOSTS[h],
            learnt.1
        );
        // Fragmented to the MTU now, the next reply reaches the client whole.
        let next = ask(&net.client, client, vip, Duration::from_secs(2));
        assert_eq!(next, Some((HOSTS[h].to_owned(), REPLY)), "{client}");
        // The error went to the flow's owner alone; packet too big, to every host.
        for other in (0..3).filter(|o| *o != h) {
            let (mtu, route) = route_mtu(&net.lan.hosts[other].ns, client, vip);
            let want = if vip.is_ipv6() { Some(MTU) } else { None };
            assert_eq!(mtu, want, "host {} about {client}: {route}", HOSTS[other]);
        }
    }
}
