//! Ethernet frames the agent sends: adverts with the source MAC BSD uses, gratuitous ARP
//! and unsolicited Neighbor Advertisements when it becomes master.

use carp_common::{checksum, vrrp, wire};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_common::ether::{ARP_REQUEST, NA_OVERRIDE, NA_ROUTER, ND_NEIGHBOR_ADVERT};
pub use carp_common::ether::{ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6};
/// DSCP 56 (CS7, network control) in the TOS byte, as modern FreeBSD marks adverts.
pub const TOS_CS7: u8 = 56 << 2;
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, all nodes.
const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Ethernet header, with one 802.1Q tag when `vlan` is set.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(96);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(id) = vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (no options, DF, CS7, header checksum filled in) followed by `payload`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], ttl: u8, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, TOS_CS7];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = checksum::internet(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// IPv6 header (traffic class CS7) followed by `payload`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], hop_limit: u8, next: u8, payload: &[u8]) -> Vec<u8> {
    let tc = u32::from(TOS_CS7) << 20;
    let mut h = (0x6000_0000 | tc).to_be_bytes().to_vec();
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop_limit]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A protocol-112 payload to the advert group of `src`'s family from `mac`.
pub fn advert(src: IpAddr, mac: [u8; 6], vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    match src {
        IpAddr::V4(a) => {
            let mut f = ethernet(wire::GROUP_MAC_V4, mac, vlan, ETH_P_IP);
            f.extend(ipv4(
                a.octets(),
                wire::GROUP_V4,
                wire::TTL,
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
                wire::TTL,
                wire::IPPROTO_CARP,
                payload,
            ));
            f
        }
    }
}

/// A VRRPv3 advert payload for the VIPs of `src`'s family (RFC 5798 5.1), to `dst`: the
/// group, or a unicast peer (the checksum covers it). `None` when the families differ.
pub fn vrrp_payload(
    src: IpAddr,
    dst: IpAddr,
    header: vrrp::Vrrp3Header,
    vips: &[IpAddr],
) -> Option<Vec<u8>> {
    let (addrs, pseudo): (Vec<u8>, _) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (
            vips.iter()
                .filter_map(|a| match a {
                    IpAddr::V4(a) => Some(a.octets()),
                    IpAddr::V6(_) => None,
                })
                .flatten()
                .collect(),
            vrrp::PseudoHeader::V4 {
                src: s.octets(),
                dst: d.octets(),
            },
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => (
            vips.iter()
                .filter_map(|a| match a {
                    IpAddr::V6(a) => Some(a.octets()),
                    IpAddr::V4(_) => None,
                })
                .flatten()
                .collect(),
            vrrp::PseudoHeader::V6 {
                src: s.octets(),
                dst: d.octets(),
            },
        ),
        _ => return None,
    };
    let header = vrrp::Vrrp3Header {
        count: (addrs.len() / pseudo.addr_len()) as u8,
        ..header
    };
    let mut out = vec![0u8; vrrp::HEADER_LEN + addrs.len()];
    let n = header
        .encode(&addrs, &pseudo, &mut out)
        .expect("buffer sized for the addresses");
    out.truncate(n);
    Some(out)
}

/// The advert group of `src`'s family.
pub fn group(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => IpAddr::from(wire::GROUP_V4),
        IpAddr::V6(_) => IpAddr::from(wire::GROUP_V6),
    }
}

/// A gratuitous ARP request announcing `vip` at `mac` (what BSD's arp_announce sends).
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr, vlan: Option<u16>) -> Vec<u8> {
    let mut f = ethernet(BROADCAST, mac, vlan, ETH_P_ARP);
    f.extend_from_slice(&ARP_REQUEST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    f
}

/// The ICMPv6 checksum of `message` between `src` and `dst` (RFC 8200 8.1).
pub fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], message: &[u8]) -> u16 {
    let sum = checksum::pseudo(src, dst, IPPROTO_ICMPV6, message.len());
    checksum::finish(checksum::add(sum, message))
}

/// An unsolicited Neighbor Advertisement for `vip` at `mac` to all nodes, Override set
/// (what BSD's carp_send_na sends), Router set for a router (see `maps::Flags::router`).
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr, router: bool, vlan: Option<u16>) -> Vec<u8> {
    let flags = NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    let mut na = vec![ND_NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0];
    na.extend_from_slice(&vip.octets());
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&vip.octets(), &ALL_NODES, &na);
    na[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = ethernet([0x33, 0x33, 0, 0, 0, 1], mac, vlan, ETH_P_IPV6);
    f.extend(ipv6(vip.octets(), ALL_NODES, 255, IPPROTO_ICMPV6, &na));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = ipv4([192, 0, 2, 1], wire::GROUP_V4, 255, 112, &[0; 36]);
        assert_eq!(checksum::internet(&p[..20]), 0);
        assert_eq!((p[1], p[8], p[9]), (TOS_CS7, 255, 112));
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 56);
    }

    #[test]
    fn na_checksum_verifies() {
        let vip: Ipv6Addr = "2001:db8::50".parse().unwrap();
        let f = unsolicited_na([0, 0, 0x5e, 0, 1, 1], vip, false, None);
        assert_eq!(icmpv6_checksum(&vip.octets(), &ALL_NODES, &f[54..]), 0);
        assert_eq!(f[54 + 4], NA_OVERRIDE);
        let f = unsolicited_na([0, 0, 0x5e, 0, 2, 1], vip, true, None);
        assert_eq!(icmpv6_checksum(&vip.octets(), &ALL_NODES, &f[54..]), 0);
        assert_eq!(f[54 + 4], NA_OVERRIDE | NA_ROUTER);
    }

    #[test]
    fn vrrp_payload_carries_the_family_addresses() {
        let src: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let vips: Vec<IpAddr> = vec![
            Ipv4Addr::new(192, 0, 2, 50).into(),
            "2001:db8::50".parse().unwrap(),
        ];
        let h = vrrp::Vrrp3Header {
            vrid: 5,
            priority: 100,
            count: 0,
            max_adver_int: 100,
        };
        let p = vrrp_payload(src, group(src), h, &vips).unwrap();
        let pseudo = vrrp::PseudoHeader::V4 {
            src: [192, 0, 2, 1],
            dst: wire::GROUP_V4,
        };
        let (d, addrs) = vrrp::Vrrp3Header::decode(&p, &pseudo).unwrap();
        assert_eq!((d.count, addrs), (1, &[192, 0, 2, 50][..]));
    }
}
