//! Frames only the tests build: requests a peer would send, and adverts with chosen
//! defects; with the agent's own frames, so one module has them all.

pub use carp_agent::frame::*;
use carp_common::{vrrp, wire};
use std::net::{IpAddr, Ipv6Addr};

/// A protocol-112 packet with a chosen VLAN and TTL, from `vhid`'s virtual MAC.
pub fn proto112(src: IpAddr, vhid: u8, vlan: Option<u16>, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = advert(src, wire::virtual_mac(vhid), vlan, payload);
    let l3 = if vlan.is_some() { 18 } else { 14 };
    match src {
        IpAddr::V4(_) => {
            f[l3 + 8] = ttl;
            f[l3 + 10] = 0;
            f[l3 + 11] = 0;
            let sum = carp_common::checksum::internet(&f[l3..l3 + 20]);
            f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        }
        IpAddr::V6(_) => f[l3 + 7] = ttl,
    }
    f
}

/// A CARP advert frame.
pub fn carp(src: IpAddr, header: &wire::CarpHeader) -> Vec<u8> {
    advert(src, wire::virtual_mac(header.vhid), None, &header.encode())
}

/// A VRRPv3 advert frame from an IPv4 source for IPv4 `addrs`.
pub fn vrrp_v4(src: [u8; 4], header: &vrrp::Vrrp3Header, addrs: &[[u8; 4]]) -> Vec<u8> {
    let vips: Vec<IpAddr> = addrs.iter().map(|a| IpAddr::from(*a)).collect();
    let src = IpAddr::from(src);
    let payload = vrrp_payload(src, group(src), *header, &vips).unwrap();
    advert(src, wire::virtual_mac(header.vrid), None, &payload)
}

/// A broadcast ARP request from `sender` asking for `target`.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], sender_mac, None, ETH_P_ARP);
    f.extend_from_slice(&carp_common::ether::ARP_REQUEST);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// A Neighbor Solicitation for `target` from `src`, with the source link-layer option, to
/// the target's solicited-node group.
pub fn neighbor_solicit(sender_mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target[13..]);
    let mut ns = vec![carp_common::ether::ND_NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&target);
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&sender_mac);
    let sum = icmpv6_checksum(&src, &group, &ns);
    ns[2..4].copy_from_slice(&sum.to_be_bytes());
    let mac = [0x33, 0x33, 0xff, target[13], target[14], target[15]];
    let mut f = ethernet(mac, sender_mac, None, ETH_P_IPV6);
    f.extend(ipv6(src, group, 255, IPPROTO_ICMPV6, &ns));
    f
}

/// The largest VRRPv3 adverts a configuration allows for `vrid` (priority 100, every
/// second): 255 IPv4 addresses from 192.0.2.`last`, and 90 IPv6 ones from fe80::`last`.
pub fn largest_vrrp3(vrid: u8, last: u8) -> (Vec<u8>, Vec<u8>) {
    let h = vrrp::Vrrp3Header {
        vrid,
        priority: 100,
        count: 255,
        max_adver_int: 100,
    };
    let addrs: Vec<[u8; 4]> = (0..255u32)
        .map(|i| (0xc633_6400 + i).to_be_bytes())
        .collect();
    let v4 = vrrp_v4([192, 0, 2, last], &h, &addrs);
    let src = IpAddr::from(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last.into()));
    let vips: Vec<IpAddr> = (0..90)
        .map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 2, i)))
        .collect();
    let payload = vrrp_payload(src, group(src), h, &vips).expect("90 IPv6 addresses fit");
    let v6 = advert(src, wire::virtual_mac_v6(vrid), None, &payload);
    (v4, v6)
}
