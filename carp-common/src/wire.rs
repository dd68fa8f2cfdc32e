//! The CARP advertisement as FreeBSD and OpenBSD put it on the wire (`struct carp_header`
//! in `sys/netinet/ip_carp.h`), and the addresses and constants around it.

use crate::checksum;

/// IP protocol number of CARP (shared with VRRP).
pub const IPPROTO_CARP: u8 = 112;
/// IPv4 multicast group of adverts (224.0.0.18).
pub const GROUP_V4: [u8; 4] = [224, 0, 0, 18];
/// IPv6 multicast group of adverts (ff02::12).
pub const GROUP_V6: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12];
/// Ethernet destination of IPv4 adverts (the group mapped per RFC 1112).
pub const GROUP_MAC_V4: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
/// Ethernet destination of IPv6 adverts (the group mapped per RFC 2464).
pub const GROUP_MAC_V6: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x12];
/// TTL / hop limit adverts are sent with; receivers drop anything else, so an advert
/// cannot have crossed a router.
pub const TTL: u8 = 255;

/// CARP protocol version (`CARP_VERSION`).
pub const VERSION: u8 = 2;
/// The only message type (`CARP_ADVERTISEMENT`).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of counter plus digest in 32-bit words, as every implementation sends it.
pub const AUTHLEN: u8 = 7;
/// Length of `struct carp_header`.
pub const HEADER_LEN: usize = 36;
/// Length of the HMAC-SHA1 digest.
pub const DIGEST_LEN: usize = crate::sha1::DIGEST_LEN;
/// Largest advskew plus demotion an advert carries (`CARP_MAXSKEW`).
pub const MAXSKEW: u8 = 240;
/// Default advbase in seconds (`CARP_DFLTINTV`).
pub const DEFAULT_ADVBASE: u8 = 1;
/// advbase and advskew of the "bow-out" advert a master sends when it stops (OpenBSD):
/// larger than any backup's master-down time, so backups take over at once.
pub const BOW_OUT: u8 = 255;

/// What the HMAC covers after the per-VHID prefix (`carp_hmac_prepare`: version, type,
/// vhid, VIPs). BSD mode covers the counter only (`carp_hmac_generate`), as FreeBSD,
/// OpenBSD and ucarp do, so neither advbase, advskew, the demote byte nor the source is
/// authenticated. Strict mode, carp-agent's opt-in, covers them too: a captured advert can
/// neither be altered (into a bow-out) nor re-sent from another address, and its counter,
/// which grows with every advert its sender sends (a boot count, then a count within the
/// boot), tells a re-sent advert from a fresh one.
pub mod auth {
    /// Room for the longest suffix.
    pub const SUFFIX_MAX: usize = 32;
    /// BSD: the counter.
    pub const BSD_SUFFIX: u8 = 8;
    /// Strict: counter ‖ advbase ‖ advskew ‖ demote ‖ family (4 or 6) ‖ source (16 bytes,
    /// IPv4 in the first 4).
    pub const STRICT_SUFFIX: u8 = 28;

    /// Writes the strict suffix into `out`; its first [`BSD_SUFFIX`] bytes are BSD's.
    #[inline(always)]
    pub fn suffix(
        out: &mut [u8; SUFFIX_MAX],
        counter: u64,
        [advbase, advskew, demote]: [u8; 3],
        family: u8,
        src: &[u8; 16],
    ) {
        out[..8].copy_from_slice(&counter.to_be_bytes());
        out[8] = advbase;
        out[9] = advskew;
        out[10] = demote;
        out[11] = family;
        out[12..28].copy_from_slice(src);
    }
}

/// Byte offsets inside the header, for code that patches a header in place.
pub mod offset {
    pub const VERSION_TYPE: usize = 0;
    pub const VHID: usize = 1;
    pub const ADVSKEW: usize = 2;
    pub const AUTHLEN: usize = 3;
    pub const DEMOTE: usize = 4;
    pub const ADVBASE: usize = 5;
    pub const CHECKSUM: usize = 6;
    pub const COUNTER: usize = 8;
    pub const DIGEST: usize = 16;
}

/// The virtual router MAC 00:00:5e:00:01:vhid (RFC 5798 section 7.3), which BSD CARP uses
/// for both address families.
pub const fn virtual_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid]
}

/// The IPv6 virtual router MAC 00:00:5e:00:02:vrid that VRRPv3 uses for IPv6 groups.
pub const fn virtual_mac_v6(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x02, vrid]
}

/// Why a buffer is not a valid advertisement. Each is a counted drop reason on receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated: {len} bytes, at least {need} needed")]
    Truncated { len: usize, need: usize },
    #[error("version {0} where {1} was expected")]
    BadVersion(u8, u8),
    #[error("message type {0}, only 1 (advertisement) exists")]
    BadType(u8),
    #[error("authlen {0}, CARP always sends 7")]
    BadAuthLen(u8),
    #[error("checksum does not verify")]
    BadChecksum,
    #[error("{count} addresses announced but {len} bytes of addresses present")]
    BadAddressCount { count: u8, len: usize },
    #[error("output buffer too small: {len} bytes, {need} needed")]
    BufferTooSmall { len: usize, need: usize },
}

/// A decoded CARP advertisement (`struct carp_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CarpHeader {
    pub vhid: u8,
    /// Skew added to advbase, in 1/256 s.
    pub advskew: u8,
    /// OpenBSD's demotion counter of the sender's groups; `pad1` (0) on FreeBSD and ucarp.
    pub demote: u8,
    /// Advertisement interval in seconds.
    pub advbase: u8,
    /// 64-bit counter covered by the HMAC (two network-order words on the wire).
    pub counter: u64,
    /// HMAC-SHA1 over version, type, vhid, the VIPs and the counter.
    pub digest: [u8; DIGEST_LEN],
}

impl CarpHeader {
    /// The 36 wire bytes, checksum filled in.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[offset::VERSION_TYPE] = (VERSION << 4) | TYPE_ADVERTISEMENT;
        b[offset::VHID] = self.vhid;
        b[offset::ADVSKEW] = self.advskew;
        b[offset::AUTHLEN] = AUTHLEN;
        b[offset::DEMOTE] = self.demote;
        b[offset::ADVBASE] = self.advbase;
        b[offset::COUNTER..offset::DIGEST].copy_from_slice(&self.counter.to_be_bytes());
        b[offset::DIGEST..].copy_from_slice(&self.digest);
        let sum = checksum::internet(&b);
        b[offset::CHECKSUM..offset::COUNTER].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Decodes the IP payload of a protocol-112 packet. As FreeBSD's `carp_input` does, the
    /// checksum covers the whole payload, so trailing bytes must be accounted for by it.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        let Some(b) = payload.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                len: payload.len(),
                need: HEADER_LEN,
            });
        };
        let version = b[offset::VERSION_TYPE] >> 4;
        if version != VERSION {
            return Err(WireError::BadVersion(version, VERSION));
        }
        let kind = b[offset::VERSION_TYPE] & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(WireError::BadType(kind));
        }
        if b[offset::AUTHLEN] != AUTHLEN {
            return Err(WireError::BadAuthLen(b[offset::AUTHLEN]));
        }
        if checksum::internet(payload) != 0 {
            return Err(WireError::BadChecksum);
        }
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&b[offset::COUNTER..offset::DIGEST]);
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(&b[offset::DIGEST..]);
        Ok(Self {
            vhid: b[offset::VHID],
            advskew: b[offset::ADVSKEW],
            demote: b[offset::DEMOTE],
            advbase: b[offset::ADVBASE],
            counter: u64::from_be_bytes(counter),
            digest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The header of the notes' test vector: password "love", vhid 42, VIP 10.1.1.252.
    #[test]
    fn encodes_the_reference_header() {
        let h = CarpHeader {
            vhid: 42,
            advskew: 0,
            demote: 0,
            advbase: 1,
            counter: 0x0102030405060708,
            digest: hex("2fa27458019cf0f5b3213320729727a7c3a7aaff")
                .try_into()
                .unwrap(),
        };
        let b = h.encode();
        assert_eq!(
            &b[..],
            &hex("212a0007000149050102030405060708\
                  2fa27458019cf0f5b3213320729727a7c3a7aaff")[..]
        );
        assert_eq!(CarpHeader::decode(&b), Ok(h));
    }

    /// An Ethernet frame captured from ucarp 1.5.2 in a namespace (`ucarp -i va -s 192.0.2.1
    /// -v 1 -o <file with "testpass"> -a 192.0.2.50 -b 1 -k 0`, tcpdump on the peer).
    const UCARP_FRAME: &str = "01005e00001200005e00000108004510\
        003851a64000ff70878bc0000201e000\
        001221010007000189eeef6fd8789314\
        0fa1dabdc1f8f31ea9fd2287963a5856\
        e43bbd4efdf3";

    #[test]
    fn decodes_a_captured_ucarp_advert() {
        let frame = hex(UCARP_FRAME);
        // ucarp sends from 00:00:5e:00:00:vhid, not the BSD virtual MAC.
        assert_eq!(&frame[6..12], &[0, 0, 0x5e, 0, 0, 1]);
        assert_eq!(frame[14 + 8], TTL);
        assert_eq!(frame[14 + 9], IPPROTO_CARP);
        assert_eq!(&frame[14 + 16..14 + 20], &GROUP_V4);
        let payload = &frame[34..];
        assert_eq!(payload.len(), HEADER_LEN);
        let h = CarpHeader::decode(payload).unwrap();
        assert_eq!((h.vhid, h.advskew, h.demote, h.advbase), (1, 0, 0, 1));
        assert_eq!(h.counter, 0xef6fd87893140fa1);
        assert_eq!(u16::from_be_bytes([payload[6], payload[7]]), 0x89ee);
        assert_eq!(h.encode(), *payload);
    }

    #[test]
    fn every_malformation_has_its_error() {
        let good = CarpHeader {
            vhid: 1,
            advskew: 100,
            demote: 0,
            advbase: 1,
            counter: 7,
            digest: [9; 20],
        }
        .encode();
        assert_eq!(
            CarpHeader::decode(&good[..35]),
            Err(WireError::Truncated { len: 35, need: 36 })
        );
        let mut b = good;
        b[0] = 0x31;
        assert_eq!(CarpHeader::decode(&b), Err(WireError::BadVersion(3, 2)));
        b[0] = 0x22;
        assert_eq!(CarpHeader::decode(&b), Err(WireError::BadType(2)));
        let mut b = good;
        b[3] = 6;
        assert_eq!(CarpHeader::decode(&b), Err(WireError::BadAuthLen(6)));
        let mut b = good;
        b[20] ^= 1;
        assert_eq!(CarpHeader::decode(&b), Err(WireError::BadChecksum));
        let mut long = good.to_vec();
        long.extend_from_slice(&[0, 1]);
        assert_eq!(CarpHeader::decode(&long), Err(WireError::BadChecksum));
    }

    #[test]
    fn virtual_macs() {
        assert_eq!(virtual_mac(7), [0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(virtual_mac_v6(7), [0, 0, 0x5e, 0, 2, 7]);
    }

    proptest! {
        #[test]
        fn round_trip(vhid: u8, advskew: u8, demote: u8, advbase: u8, counter: u64, digest: [u8; 20]) {
            let h = CarpHeader { vhid, advskew, demote, advbase, counter, digest };
            prop_assert_eq!(CarpHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(h) = CarpHeader::decode(&bytes) {
                // Trailing bytes may shift the checksum field; every other byte must survive.
                let b = h.encode();
                prop_assert_eq!(&b[..offset::CHECKSUM], &bytes[..offset::CHECKSUM]);
                prop_assert_eq!(&b[offset::COUNTER..], &bytes[offset::COUNTER..HEADER_LEN]);
                if bytes.len() == HEADER_LEN {
                    prop_assert_eq!(&b[..], &bytes[..]);
                }
            }
        }
    }
}
