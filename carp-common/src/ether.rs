//! Ethernet, IP, ARP and NDP numbers and header layouts the XDP program parses and the
//! agent writes. The program reads fields in place at `offset_of!` these headers.

use core::mem::size_of;

/// Ethernet header without a VLAN tag.
pub const ETH_HLEN: usize = 14;
/// One 802.1Q tag.
pub const VLAN_HLEN: usize = 4;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
/// The first 8 bytes of an Ethernet/IPv4 ARP request (RFC 826): hardware type 1, protocol
/// type 0x0800, address lengths 6 and 4, operation 1. A reply has operation 2.
pub const ARP_REQUEST: [u8; 8] = [0, 1, 0x08, 0, 6, 4, 0, 1];
/// ARP operation of a reply.
pub const ARP_REPLY: u16 = 2;
/// Fixed IPv6 header ([`Ipv6Header`]).
pub const IPV6_HLEN: usize = 40;
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 in IPv4 (RFC 4213): an ICMP error quoting such a packet quotes 40 bytes past its
/// IPv4 header.
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 types of Neighbor Solicitation and Advertisement (RFC 4861 4.3, 4.4).
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
/// NA flags: Router, Solicited and Override (RFC 4861 4.4).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// The Ethernet header (IEEE 802.3).
#[repr(C)]
pub struct EthHeader {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

/// An 802.1Q tag after the source MAC: tag control information, then the inner type.
#[repr(C)]
pub struct VlanTag {
    pub tci: [u8; 2],
    pub ethertype: [u8; 2],
}

/// The IPv4 header without options (RFC 791).
#[repr(C)]
pub struct Ipv4Header {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub frag: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}
/// Its length without options.
pub const IPV4_HLEN: usize = size_of::<Ipv4Header>();
/// The fragment field's flag bit "more fragments" and the offset's bits (RFC 791).
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFMASK: u16 = 0x1fff;

/// The fixed IPv6 header (RFC 8200).
#[repr(C)]
pub struct Ipv6Header {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
const _: () = assert!(size_of::<Ipv6Header>() == IPV6_HLEN);

/// An Ethernet/IPv4 ARP packet (RFC 826); its first 8 bytes are [`ARP_REQUEST`] in a
/// request.
#[repr(C)]
pub struct ArpPacket {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub op: [u8; 2],
    pub sender_mac: [u8; 6],
    pub sender_ip: [u8; 4],
    pub target_mac: [u8; 6],
    pub target_ip: [u8; 4],
}

/// A Neighbor Solicitation or Advertisement with one link-layer address option (RFC 4861
/// 4.3, 4.4): the shape carp reads and writes.
#[repr(C)]
pub struct NdMessage {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
    /// NA: Router, Solicited, Override in the first byte; NS: reserved.
    pub flags: [u8; 4],
    pub target: [u8; 16],
    /// 1: source link-layer address (NS), 2: target link-layer address (NA).
    pub option: u8,
    /// In units of 8 bytes: 1.
    pub option_len: u8,
    pub lladdr: [u8; 6],
}
/// Its length.
pub const ND_LEN: usize = size_of::<NdMessage>();
