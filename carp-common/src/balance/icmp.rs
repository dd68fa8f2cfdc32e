//! Which host of a balanced group takes an ICMP message. OpenBSD's ip_input and
//! ip6_input leave ICMP to icmp_input and icmp6_input, which call carp_lsdrop themselves:
//! an error about a packet the group sent goes to the host that sent it, hashed by the
//! quoted packet (VIP to client) as its flow (client to VIP) is, since the fold is a xor;
//! requests the kernel answers are hashed as any packet; everything else reaches every
//! host. Without this, a router's "fragmentation needed" would be hashed by the router's
//! address and miss the flow's host, whose large replies would then stall.

use super::fold_v4;
use crate::ether::IPPROTO_IPV6;

/// ICMP types and codes (RFC 792, 1191; OpenBSD netinet/ip_icmp.h).
pub const ICMP_UNREACH: u8 = 3;
pub const ICMP_UNREACH_NEEDFRAG: u8 = 4;
pub const ICMP_SOURCEQUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIMXCEED: u8 = 11;
pub const ICMP_PARAMPROB: u8 = 12;
pub const ICMP_TSTAMP: u8 = 13;
/// ICMPv6 types (RFC 4443).
pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
pub const ICMP6_ECHO_REQUEST: u8 = 128;

/// icmp_input's lengths, from the ICMP header on: the header, a timestamp request, and an
/// error quoting an IPv4 header and 8 bytes (40 after an IPv6-in-IPv4 header).
const ICMP_MINLEN: u16 = 8;
const ICMP_TSLEN: u16 = 20;
const ICMP_ADVLENMIN: u16 = 8 + 20 + 8;
const ICMP_V6ADVLENMIN: u16 = 8 + 20 + 40;
/// An ICMPv6 header (icmp6_input's `sizeof(struct icmp6_hdr)`).
pub const ICMP6_MINLEN: usize = 8;

/// Where a frame to a group's MAC goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// To the host whose share the flow of this fold is.
    Fold(u32),
    /// To every host.
    Every,
    /// To none: malformed, freed by OpenBSD's icmp_input / icmp6_input on every host.
    Drop,
}

/// How icmp_input decides an IPv4 ICMP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// By the outer addresses: requests the kernel answers (its `reflect:`).
    Outer,
    /// By the quoted packet's destination and the outer destination ([`quoted`]).
    Quote(Quote),
    Every,
    Drop,
}

/// The two kinds of messages icmp_input hashes by their quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    /// An error for the transport protocol (`deliver:`).
    Error,
    /// A redirect.
    Redirect,
}

/// The rule for an IPv4 ICMP message of `kind` and `code`, `len` bytes from its header on
/// (the IP total length less the IP header), as icmp_input's switch: echo requests and
/// timestamp requests long enough to answer by the outer addresses; unreachables
/// (codes 0-15, fragmentation needed among them), time exceeded and parameter problems
/// (0-1), source quench (0) and redirects (0-3) by their quote; a message shorter than
/// its 8-byte header is dropped (`icps_tooshort`); anything else, replies and unknown
/// types or codes, reaches every host, as icmp_input hands it to every host's raw
/// sockets. OpenBSD frees redirects unless `net.inet.icmp.rediraccept` is set; Linux's
/// `accept_redirects` decides that here, on the host the quote names.
pub fn rule(kind: u8, code: u8, len: u16) -> Rule {
    if len < ICMP_MINLEN {
        return Rule::Drop;
    }
    match (kind, code) {
        (ICMP_ECHO, _) => Rule::Outer,
        (ICMP_TSTAMP, _) if len >= ICMP_TSLEN => Rule::Outer,
        (ICMP_UNREACH, 0..=15)
        | (ICMP_TIMXCEED | ICMP_PARAMPROB, 0..=1)
        | (ICMP_SOURCEQUENCH, 0) => Rule::Quote(Quote::Error),
        (ICMP_REDIRECT, 0..=3) => Rule::Quote(Quote::Redirect),
        _ => Rule::Every,
    }
}

/// The fields of a quoted IPv4 header that decide.
#[derive(Clone, Copy, Debug)]
pub struct Quoted {
    pub version_ihl: u8,
    pub proto: u8,
    pub dst: [u8; 4],
}

/// Where a message of [`Rule::Quote`] goes, `len` bytes long with `quote` (None when the
/// frame ends before it), sent to `outer_dst`: the flow of `carp_lsdrop(quote.dst,
/// outer_dst)`, whose fold is that of the client's packets to the VIP (icmp_input). A
/// quote too short for its header and 8 bytes past it (40 past an IPv6-in-IPv4 header),
/// or with a header length under 20, is dropped for an error (`icps_badlen`, freed) and
/// reaches every host for a redirect (raw sockets); an error about a multicast packet
/// reaches every host (`badcode`, raw sockets). Lengths are bounded by 16 bits plus 68:
/// no overflow.
pub fn quoted(kind: Quote, len: u16, quote: Option<Quoted>, outer_dst: [u8; 4]) -> Share {
    let short = match kind {
        Quote::Error => Share::Drop,
        Quote::Redirect => Share::Every,
    };
    let Some(q) = quote else {
        return short;
    };
    let (len, hl) = (u32::from(len), u32::from(q.version_ihl & 0x0f) * 4);
    if len < u32::from(ICMP_ADVLENMIN) || len < 8 + hl + 8 || hl < 20 {
        return short;
    }
    if kind == Quote::Error {
        if q.dst[0] & 0xf0 == 0xe0 {
            return Share::Every;
        }
        if q.proto == IPPROTO_IPV6 && (len < u32::from(ICMP_V6ADVLENMIN) || len < 8 + hl + 40) {
            return Share::Drop;
        }
    }
    Share::Fold(fold_v4(q.dst, outer_dst))
}

/// Whether icmp6_input hashes an ICMPv6 message of `kind`: echo requests alone, by the
/// outer addresses; every other message (packet too big, unreachables, NDP) reaches every
/// host. ip6_input hashes what carries ICMPv6 after an extension header as any packet.
pub fn hashed6(kind: u8) -> bool {
    kind == ICMP6_ECHO_REQUEST
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: [u8; 4] = [192, 0, 2, 50];
    const CLIENT: [u8; 4] = [198, 51, 100, 7];

    fn quote(version_ihl: u8, proto: u8, dst: [u8; 4]) -> Option<Quoted> {
        Some(Quoted {
            version_ihl,
            proto,
            dst,
        })
    }

    #[test]
    fn an_error_goes_to_the_host_of_the_flow_it_quotes() {
        let need_frag = rule(ICMP_UNREACH, ICMP_UNREACH_NEEDFRAG, 8 + 20 + 8);
        assert_eq!(need_frag, Rule::Quote(Quote::Error));
        // The quoted packet went VIP to client; the fold is the client's to the VIP.
        let share = quoted(Quote::Error, 36, quote(0x45, 6, CLIENT), VIP);
        assert_eq!(share, Share::Fold(fold_v4(CLIENT, VIP)));
        assert_eq!(
            quoted(Quote::Redirect, 36, quote(0x45, 17, CLIENT), VIP),
            Share::Fold(fold_v4(VIP, CLIENT))
        );
    }

    #[test]
    fn rules_as_icmp_input() {
        assert_eq!(rule(ICMP_ECHO, 0, 8), Rule::Outer);
        assert_eq!(rule(ICMP_TSTAMP, 0, 20), Rule::Outer);
        assert_eq!(rule(ICMP_TSTAMP, 0, 19), Rule::Every);
        assert_eq!(rule(ICMP_UNREACH, 15, 36), Rule::Quote(Quote::Error));
        assert_eq!(rule(ICMP_UNREACH, 16, 36), Rule::Every);
        assert_eq!(rule(ICMP_TIMXCEED, 1, 36), Rule::Quote(Quote::Error));
        assert_eq!(rule(ICMP_PARAMPROB, 2, 36), Rule::Every);
        assert_eq!(rule(ICMP_SOURCEQUENCH, 1, 36), Rule::Every);
        assert_eq!(rule(ICMP_REDIRECT, 3, 36), Rule::Quote(Quote::Redirect));
        assert_eq!(rule(ICMP_REDIRECT, 4, 36), Rule::Every);
        // Replies, router adverts, mask requests, unknown types: every host.
        for kind in [0, 9, 14, 17, 18, 41, 255] {
            assert_eq!(rule(kind, 0, 64), Rule::Every, "type {kind}");
        }
        for len in 0..8 {
            assert_eq!(rule(ICMP_ECHO, 0, len), Rule::Drop);
        }
        assert!(hashed6(ICMP6_ECHO_REQUEST));
        assert!(!hashed6(ICMP6_PACKET_TOO_BIG) && !hashed6(129) && !hashed6(136));
    }

    #[test]
    fn short_or_odd_quotes() {
        let e = Quote::Error;
        // Under 20 + 8 bytes, past the header length, or a header length under 20.
        assert_eq!(quoted(e, 35, quote(0x45, 6, CLIENT), VIP), Share::Drop);
        assert_eq!(
            quoted(e, 8 + 24 + 7, quote(0x46, 6, CLIENT), VIP),
            Share::Drop
        );
        assert!(matches!(
            quoted(e, 40, quote(0x46, 6, CLIENT), VIP),
            Share::Fold(_)
        ));
        assert_eq!(quoted(e, 60, quote(0x44, 6, CLIENT), VIP), Share::Drop);
        assert_eq!(quoted(e, 60, None, VIP), Share::Drop);
        assert_eq!(
            quoted(e, u16::MAX, quote(0xff, 6, CLIENT), VIP),
            Share::Fold(fold_v4(CLIENT, VIP))
        );
        // A redirect's short quote goes to the raw sockets of every host.
        assert_eq!(
            quoted(Quote::Redirect, 35, quote(0x45, 6, CLIENT), VIP),
            Share::Every
        );
        assert_eq!(quoted(Quote::Redirect, 60, None, VIP), Share::Every);
        // Errors about multicast packets: every host, even with a short IPv6 quote.
        assert_eq!(
            quoted(e, 36, quote(0x45, 17, [224, 0, 1, 1]), VIP),
            Share::Every
        );
        assert_eq!(
            quoted(e, 36, quote(0x45, 41, [239, 1, 1, 1]), VIP),
            Share::Every
        );
        // IPv6 in IPv4: 40 bytes past the quoted header.
        assert_eq!(quoted(e, 67, quote(0x45, 41, CLIENT), VIP), Share::Drop);
        assert!(matches!(
            quoted(e, 68, quote(0x45, 41, CLIENT), VIP),
            Share::Fold(_)
        ));
    }
}
