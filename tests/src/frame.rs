//! Ethernet frames the tests inject or feed to `test_run`.

use carp_common::{checksum, vrrp, wire};
use std::net::IpAddr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Ethernet header, with one 802.1Q tag when `vlan` is set.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(18);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(id) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (no options, DF, header checksum filled in) followed by `payload`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0x10];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = checksum::internet(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 header followed by `payload`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop_limit]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A protocol-112 packet to the advert group of `src`'s family, from the virtual MAC of
/// `vhid`, as BSD sends it.
pub fn proto112(src: IpAddr, vhid: u8, vlan: Option<u16>, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mac = wire::virtual_mac(vhid);
    match src {
        IpAddr::V4(a) => {
            let mut f = ethernet(wire::GROUP_MAC_V4, mac, vlan, ETH_P_IP);
            f.extend(ipv4(
                a.octets(),
                wire::GROUP_V4,
                ttl,
                wire::IPPROTO_CARP,
                payload,
            ));
            f
        }
        IpAddr::V6(a) => {
            let mut f = ethernet(wire::GROUP_MAC_V6, mac, vlan, ETH_P_IPV6);
            f.extend(ipv6(
                a.octets(),
                wire::GROUP_V6,
                ttl,
                wire::IPPROTO_CARP,
                payload,
            ));
            f
        }
    }
}

/// A CARP advert frame.
pub fn carp(src: IpAddr, header: &wire::CarpHeader) -> Vec<u8> {
    proto112(src, header.vhid, None, wire::TTL, &header.encode())
}

/// A VRRPv3 advert frame from an IPv4 source for IPv4 `addrs`.
pub fn vrrp_v4(src: [u8; 4], header: &vrrp::Vrrp3Header, addrs: &[[u8; 4]]) -> Vec<u8> {
    let pseudo = vrrp::PseudoHeader::V4 {
        src,
        dst: wire::GROUP_V4,
    };
    let mut payload = vec![0u8; vrrp::HEADER_LEN + 4 * addrs.len()];
    let n = header
        .encode(&addrs.concat(), &pseudo, &mut payload)
        .unwrap();
    proto112(
        IpAddr::from(src),
        header.vrid,
        None,
        wire::TTL,
        &payload[..n],
    )
}

/// A broadcast ARP request from `sender` asking for `target`.
pub fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], sender_mac, None, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// The ICMPv6 checksum of `message` between `src` and `dst`.
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], message: &[u8]) -> u16 {
    let mut sum = checksum::add(checksum::add(0, src), dst);
    sum += message.len() as u32 + u32::from(IPPROTO_ICMPV6);
    checksum::finish(checksum::add(sum, message))
}

/// A Neighbor Solicitation for `target` from `src`, with the source link-layer option, to
/// the target's solicited-node group.
pub fn neighbor_solicit(sender_mac: [u8; 6], src: [u8; 16], target: [u8; 16]) -> Vec<u8> {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13..].copy_from_slice(&target[13..]);
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
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
