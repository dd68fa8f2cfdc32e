//! The Internet checksum (RFC 1071), in pieces so a pseudo-header can be folded in and so
//! the XDP program can run it over a header it copied to its stack.

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum.
#[inline(always)]
pub fn add(mut sum: u32, data: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        sum += u32::from(data[i]) << 8;
    }
    sum
}

/// Folds the carries back in and complements: the value to put in a checksum field, or 0
/// when checking data that already contains its checksum. Two folds always suffice for a
/// 32-bit sum, and straight-line code keeps the BPF verifier's path short.
#[inline(always)]
pub fn finish(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The checksum of `data` alone.
#[inline(always)]
pub fn internet(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// The running sum of an IP pseudo-header (RFC 768 for IPv4, RFC 8200 8.1 for IPv6; the
/// same words either way): source, destination, upper-layer protocol and length. VRRPv3
/// and ICMPv6 checksums continue from it with [`add`] over their message.
#[inline(always)]
pub fn pseudo(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u32 {
    add(add(0, src), dst) + u32::from(proto) + len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet(&data), !0xddf2);
    }

    #[test]
    fn folding_handles_the_largest_sums() {
        assert_eq!(finish(0xffff_ffff), !0xffff);
        assert_eq!(finish(0x0001_fffe), !0xffff);
        assert_eq!(finish(0x1234), !0x1234);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            internet(&[0x12, 0x34, 0x56]),
            internet(&[0x12, 0x34, 0x56, 0x00])
        );
    }

    #[test]
    fn data_with_its_checksum_verifies_to_zero() {
        let mut data = [0x45, 0x00, 0x00, 0x1c, 0xab, 0xcd, 0x00, 0x00];
        let c = internet(&data);
        data[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(internet(&data), 0);
    }
}
