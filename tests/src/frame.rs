//! Ethernet frames the tests inject or feed to `test_run`.

use carp_common::{checksum, wire};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

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

/// An IPv4 CARP advert frame as BSD sends it: from the virtual MAC to the group.
pub fn carp_v4(src_ip: [u8; 4], header: &wire::CarpHeader) -> Vec<u8> {
    let mut f = ethernet(
        wire::GROUP_MAC_V4,
        wire::virtual_mac(header.vhid),
        None,
        ETH_P_IP,
    );
    f.extend(ipv4(
        src_ip,
        wire::GROUP_V4,
        wire::TTL,
        wire::IPPROTO_CARP,
        &header.encode(),
    ));
    f
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
