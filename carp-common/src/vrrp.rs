//! The VRRPv3 advertisement (RFC 5798 section 5.1), which FreeBSD 15's carp and keepalived
//! speak on the same IP protocol 112 as CARP.

use crate::{checksum, wire::WireError};

/// VRRP protocol version this module speaks.
pub const VERSION: u8 = 3;
/// Fixed part of the header before the addresses.
pub const HEADER_LEN: usize = 8;
/// Priority of the address owner, which always wins.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a stopping master sends so backups take over at once.
pub const PRIORITY_STOP: u8 = 0;
/// Default priority of a backup.
pub const PRIORITY_DEFAULT: u8 = 100;
/// Most addresses an IPv4 advert carries: the count is one byte.
pub const MAX_ADDRS_V4: usize = 255;
/// Most addresses an IPv6 advert carries: one advert holds them all (RFC 5798 5.2.5,
/// Count IPvX Addr), and it must fit a 1500-byte Ethernet MTU: (1500 - 40 - 8) / 16.
pub const MAX_ADDRS_V6: usize = 90;
/// The longest advert payload either family carries.
pub const MAX_PAYLOAD: usize = HEADER_LEN + 16 * MAX_ADDRS_V6;
const _: () = assert!(MAX_PAYLOAD >= HEADER_LEN + 4 * MAX_ADDRS_V4);
/// The advert interval field is 12 bits of centiseconds.
pub const MAX_ADVER_INT_MASK: u16 = 0x0fff;

/// Source and destination the checksum's pseudo-header covers (RFC 5798 section 5.2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoHeader {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

impl PseudoHeader {
    /// Length of one virtual address of this family.
    pub const fn addr_len(&self) -> usize {
        match self {
            Self::V4 { .. } => 4,
            Self::V6 { .. } => 16,
        }
    }

    /// The running sum of the pseudo-header for a payload of `len` bytes, to continue with
    /// [`checksum::add`] over the payload.
    pub fn sum(&self, len: usize) -> u32 {
        let (src, dst): (&[u8], &[u8]) = match self {
            Self::V4 { src, dst } => (src, dst),
            Self::V6 { src, dst } => (src, dst),
        };
        checksum::pseudo(src, dst, crate::wire::IPPROTO_CARP, len)
    }
}

/// A decoded VRRPv3 advertisement header; the addresses follow it in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vrrp3Header {
    pub vrid: u8,
    pub priority: u8,
    pub count: u8,
    /// Max_Advert_Interval in centiseconds (12 bits).
    pub max_adver_int: u16,
}

impl Vrrp3Header {
    /// Writes header and `addrs` (each `pseudo.addr_len()` bytes, `count` of them) into
    /// `out` with the checksum filled in; returns the payload length.
    pub fn encode(
        &self,
        addrs: &[u8],
        pseudo: &PseudoHeader,
        out: &mut [u8],
    ) -> Result<usize, WireError> {
        if addrs.len() != usize::from(self.count) * pseudo.addr_len() {
            return Err(WireError::BadAddressCount {
                count: self.count,
                len: addrs.len(),
            });
        }
        let len = HEADER_LEN + addrs.len();
        let Some(b) = out.get_mut(..len) else {
            return Err(WireError::BufferTooSmall {
                len: out.len(),
                need: len,
            });
        };
        b[0] = (VERSION << 4) | crate::wire::TYPE_ADVERTISEMENT;
        b[1] = self.vrid;
        b[2] = self.priority;
        b[3] = self.count;
        b[4..6].copy_from_slice(&(self.max_adver_int & MAX_ADVER_INT_MASK).to_be_bytes());
        b[6..8].fill(0);
        b[HEADER_LEN..].copy_from_slice(addrs);
        let sum = checksum::finish(checksum::add(pseudo.sum(len), b));
        b[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(len)
    }

    /// Decodes a payload received from `pseudo`'s source; returns the header and the
    /// address bytes.
    pub fn decode<'a>(
        payload: &'a [u8],
        pseudo: &PseudoHeader,
    ) -> Result<(Self, &'a [u8]), WireError> {
        let Some(b) = payload.first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated {
                len: payload.len(),
                need: HEADER_LEN,
            });
        };
        let version = b[0] >> 4;
        if version != VERSION {
            return Err(WireError::BadVersion(version, VERSION));
        }
        if b[0] & 0x0f != crate::wire::TYPE_ADVERTISEMENT {
            return Err(WireError::BadType(b[0] & 0x0f));
        }
        let count = b[3];
        let addrs = &payload[HEADER_LEN..];
        if addrs.len() != usize::from(count) * pseudo.addr_len() {
            return Err(WireError::BadAddressCount {
                count,
                len: addrs.len(),
            });
        }
        if checksum::finish(checksum::add(pseudo.sum(payload.len()), payload)) != 0 {
            return Err(WireError::BadChecksum);
        }
        let header = Self {
            vrid: b[1],
            priority: b[2],
            count,
            max_adver_int: u16::from_be_bytes([b[4], b[5]]) & MAX_ADVER_INT_MASK,
        };
        Ok((header, addrs))
    }

    /// Skew_Time in centiseconds: ((256 - priority) * interval) / 256.
    pub const fn skew_time(&self) -> u32 {
        (256 - self.priority as u32) * self.max_adver_int as u32 / 256
    }

    /// Master_Down_Interval in centiseconds: 3 * interval + skew.
    pub const fn master_down_interval(&self) -> u32 {
        3 * self.max_adver_int as u32 + self.skew_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V4: PseudoHeader = PseudoHeader::V4 {
        src: [192, 0, 2, 1],
        dst: [224, 0, 0, 18],
    };

    #[test]
    fn rfc_layout_and_pseudo_header() {
        // VRID 51, priority 100, interval 1 s, VIP 192.0.2.100, from 192.0.2.1.
        let h = Vrrp3Header {
            vrid: 51,
            priority: 100,
            count: 1,
            max_adver_int: 100,
        };
        let mut out = [0u8; 12];
        assert_eq!(h.encode(&[192, 0, 2, 100], &V4, &mut out), Ok(12));
        assert_eq!(&out[..6], &[0x31, 51, 100, 1, 0x00, 0x64]);
        let (d, addrs) = Vrrp3Header::decode(&out, &V4).unwrap();
        assert_eq!(d, h);
        assert_eq!(addrs, &[192, 0, 2, 100]);
        // The same bytes from another source fail: the pseudo-header is covered.
        let other = PseudoHeader::V4 {
            src: [192, 0, 2, 2],
            dst: [224, 0, 0, 18],
        };
        assert_eq!(
            Vrrp3Header::decode(&out, &other),
            Err(WireError::BadChecksum)
        );
    }

    /// An advert captured from keepalived 2.2.7 (`vrrp_version 3`, VRID 51, priority 200,
    /// advert_int 1, VIP 192.0.2.60) sent from 192.0.2.1 in a namespace.
    #[test]
    fn decodes_a_captured_keepalived_advert() {
        let payload = [
            0x31, 0x33, 0xc8, 0x01, 0x00, 0x64, 0xa1, 0x99, 192, 0, 2, 60,
        ];
        let (h, addrs) = Vrrp3Header::decode(&payload, &V4).unwrap();
        assert_eq!(
            h,
            Vrrp3Header {
                vrid: 51,
                priority: 200,
                count: 1,
                max_adver_int: 100
            }
        );
        assert_eq!(addrs, &[192, 0, 2, 60]);
        let mut out = [0u8; 12];
        h.encode(addrs, &V4, &mut out).unwrap();
        assert_eq!(out, payload, "our encoding is byte-identical");
    }

    #[test]
    fn timers_follow_rfc5798() {
        let h = Vrrp3Header {
            vrid: 1,
            priority: 100,
            count: 0,
            max_adver_int: 100,
        };
        assert_eq!(h.skew_time(), 60);
        assert_eq!(h.master_down_interval(), 360);
    }

    #[test]
    fn malformed() {
        let mut out = [0u8; 12];
        let h = Vrrp3Header {
            vrid: 1,
            priority: 100,
            count: 2,
            max_adver_int: 100,
        };
        assert_eq!(
            h.encode(&[1, 2, 3, 4], &V4, &mut out),
            Err(WireError::BadAddressCount { count: 2, len: 4 })
        );
        assert_eq!(
            Vrrp3Header::decode(&out[..7], &V4),
            Err(WireError::Truncated { len: 7, need: 8 })
        );
        let carp = [0x21u8, 1, 0, 7, 0, 1, 0, 0];
        assert_eq!(
            Vrrp3Header::decode(&carp, &V4),
            Err(WireError::BadVersion(2, 3))
        );
    }

    proptest! {
        #[test]
        fn round_trip_v6(vrid: u8, priority: u8, count in 0u8..4, int in 0u16..0x1000, src: [u8; 16]) {
            let pseudo = PseudoHeader::V6 { src, dst: crate::wire::GROUP_V6 };
            let h = Vrrp3Header { vrid, priority, count, max_adver_int: int };
            let addrs = vec![0x20u8; usize::from(count) * 16];
            let mut out = [0u8; 8 + 3 * 16];
            let n = h.encode(&addrs, &pseudo, &mut out).unwrap();
            prop_assert_eq!(Vrrp3Header::decode(&out[..n], &pseudo), Ok((h, &addrs[..])));
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok((h, addrs)) = Vrrp3Header::decode(&bytes, &V4) {
                let mut out = [0u8; 64];
                let n = h.encode(addrs, &V4, &mut out).unwrap();
                // The reserved bits of byte 4 are not kept; everything else is.
                prop_assert_eq!(&out[..4], &bytes[..4]);
                prop_assert_eq!(&out[5..6], &bytes[5..6]);
                prop_assert_eq!(&out[8..n], &bytes[8..]);
            }
        }
    }
}
