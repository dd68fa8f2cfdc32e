//! OpenBSD's `balancing ip` (carp(4)): one VIP shared by several VHIDs on every host; each
//! host receives every frame to the group's multicast MAC and keeps the flows whose hash
//! selects a VHID it is MASTER of. The XDP program and the agent both use these.

pub mod icmp;

/// At most this many VHIDs in a group: OpenBSD's `sc_lsmask` is 32 bits.
pub const MAX_NODES: usize = 32;

/// The group's MAC: the leader VHID's virtual MAC with the multicast bit,
/// 01:00:5e:00:01:leader, so switches flood it to every host (OpenBSD
/// carp_set_vhe_enaddr, `vhe_enaddr[0] = 1` for the leader in `balancing ip`).
pub const fn group_mac(leader: u8) -> [u8; 6] {
    [0x01, 0x00, 0x5e, 0x00, 0x01, leader]
}

/// `fold` with one more 32-bit address word xored in, in host order: OpenBSD carp_lsdrop
/// xors the words and takes `ntohl` of the result, which is the same.
#[inline(always)]
pub fn fold_in(fold: u32, word: [u8; 4]) -> u32 {
    fold ^ u32::from_be_bytes(word)
}

/// The fold of an IPv4 flow, `ntohl(src ^ dst)` (OpenBSD carp_lsdrop).
#[inline(always)]
pub fn fold_v4(src: [u8; 4], dst: [u8; 4]) -> u32 {
    fold_in(fold_in(0, src), dst)
}

/// The fold of an IPv6 flow: the xor of all four 32-bit words of both addresses (OpenBSD
/// carp_lsdrop).
#[inline(always)]
pub fn fold_v6(src: &[u8; 16], dst: &[u8; 16]) -> u32 {
    let mut fold = 0;
    let mut i = 0;
    while i < 16 {
        fold = fold_in(fold, [src[i], src[i + 1], src[i + 2], src[i + 3]]);
        fold = fold_in(fold, [dst[i], dst[i + 1], dst[i + 2], dst[i + 3]]);
        i += 4;
    }
    fold
}

/// Whether a host whose MASTER VHIDs are `mask`, in a group of `count`, keeps the flow
/// of `fold`: bit `fold % count` of the mask (OpenBSD carp_lsdrop; an empty group keeps
/// nothing).
#[inline(always)]
pub fn keeps(mask: u32, count: u8, fold: u32) -> bool {
    if count == 0 || usize::from(count) > MAX_NODES {
        return false;
    }
    let slot = fold % u32::from(count);
    mask & (1 << slot) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_as_openbsd() {
        // 192.0.2.10 ^ 192.0.2.50: only the last byte differs, 10 ^ 50 = 56.
        assert_eq!(fold_v4([192, 0, 2, 10], [192, 0, 2, 50]), 56);
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a[3] = 1;
        b[7] = 2;
        b[15] = 4;
        assert_eq!(fold_v6(&a, &b), 1 ^ 2 ^ 4);
        // 56 % 3 = 2: the third VHID's master keeps it, the others drop it.
        assert!(keeps(0b100, 3, 56));
        assert!(!keeps(0b011, 3, 56));
        assert!(!keeps(u32::MAX, 0, 56));
        assert!(keeps(1 << 31, 32, 31));
    }

    #[test]
    fn every_flow_has_exactly_one_keeper() {
        let masks = [0b001, 0b010, 0b100];
        for fold in 0..1000 {
            assert_eq!(masks.iter().filter(|m| keeps(**m, 3, fold)).count(), 1);
        }
    }
}
