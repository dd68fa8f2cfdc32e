//! OpenBSD's `balancing ip`: every host of a balanced group receives every frame to the
//! group's multicast MAC and keeps those whose flow hashes to a VHID it is MASTER of
//! (carp_lsdrop), rewritten to the interface MAC so the stack takes them as PACKET_HOST
//! (TCP drops anything else); the others are dropped.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    btf_maps::{Array, PerCpuArray},
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::btf_map,
};
use carp_common::{
    balance::{fold_in, fold_v4, group_mac, keeps},
    ether::{
        ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHeader, IPPROTO_ICMPV6, IPV6_HLEN, Ipv4Header,
        Ipv6Header, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, NdMessage,
    },
    maps::{BALANCE_SLOTS, BalanceEntry},
};

use crate::{CARP_STATS, Ingress, L2, Pkt, arp, read, write};

#[btf_map]
static CARP_BALANCE: Array<BalanceEntry, BALANCE_SLOTS> = Array::new();

/// Whether `dst` is a group MAC, 01:00:5e:00:01:xx, byte by byte: this runs for every
/// frame, and stops at the first byte for unicast frames.
#[inline(always)]
pub fn is_group_mac(dst: &[u8; 6]) -> bool {
    const G: [u8; 6] = group_mac(0);
    dst[0] == G[0] && dst[1] == G[1] && dst[2] == G[2] && dst[3] == G[3] && dst[4] == G[4]
}

/// Whether a frame is a neighbour solicitation, which goes the usual way even to the
/// group MAC (unicast ones do), where the leader's master answers it: read here, before
/// [`frame`], because that path's stack and [`verdict`]'s would not fit BPF's 512 bytes.
#[inline(always)]
pub fn is_solicitation(pkt: &Pkt, l3: usize, ethertype: u16) -> bool {
    ethertype == ETH_P_IPV6
        && read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv6Header, next))
            .is_some_and(|[next, _]| next == IPPROTO_ICMPV6)
        && read::<[u8; 2]>(pkt, l3 + IPV6_HLEN + offset_of!(NdMessage, kind))
            .is_some_and(|[kind, _]| kind == ND_NEIGHBOR_SOLICIT)
}

/// The verdict on a frame to the group MAC of leader VHID `leader`, the whole of it: the
/// entry returns it at once, so nothing of its own stays live across the call. IPv4
/// frames, most of a group's, are decided here without the call into [`verdict`], which
/// decides everything else.
#[inline(always)]
pub fn frame(
    pkt: &Pkt,
    l3: usize,
    vlan: u16,
    leader: u8,
    ethertype: u16,
    ingress: impl Ingress,
) -> u32 {
    if ethertype == ETH_P_IP {
        // Multicast (224.0.1.x shares these MACs) and broadcast pass to every host, where
        // OpenBSD hashes them too (carp_input tags frames to the group's MAC, and
        // carp_lsdrop clears their M_MCAST before it tests M_MCAST and M_BCAST): every
        // host's listeners of a 224.0.1.x group get its traffic. So do truncated headers,
        // tagged frames (see [`verdict`]) and frames of no group here.
        if vlan == 0
            && let Some([src, dst]) = read::<[[u8; 4]; 2]>(pkt, l3 + offset_of!(Ipv4Header, src))
            && dst[0] & 0xf0 != 0xe0
            && u32::from_ne_bytes(dst) != u32::MAX
            && let Some(group) = CARP_BALANCE.get_ptr(u32::from(leader))
        {
            // SAFETY: map values stay valid for the whole program run.
            let group = unsafe { &*group };
            if group.count != 0 {
                return decide(pkt, group, fold_v4(src, dst), ingress);
            }
        }
        return XDP_PASS;
    }
    let args = u64::from(leader) | (u64::from(vlan) << 8) | (u64::from(ethertype) << 32);
    verdict(pkt, l3, args, ingress)
}

/// A BPF frame of its own, called with four registers (the leader, VLAN and ethertype
/// packed into `args`): the entry's stack counts in every call chain, and an `L2`
/// argument would cost it a copy. ARP requests (unicast ones come to the
/// group MAC) go to the usual path, where the leader's master answers them; frames of no
/// group here, to multicast and broadcast addresses and of other protocols pass.
#[inline(never)]
fn verdict(pkt: &Pkt, l3: usize, args: u64, ingress: impl Ingress) -> u32 {
    let (leader, vlan, ethertype) = (args as u8, (args >> 8) as u16, (args >> 32) as u16);
    let fold = match fold(pkt, l3, ethertype) {
        Flow::Fold(fold) => fold,
        Flow::Arp => {
            let ifindex = ingress.ifindex();
            return arp(pkt, L2 { l3, vlan, ifindex });
        }
        Flow::Other => return XDP_PASS,
    };
    // Groups run on untagged interfaces (a VLAN interface has a program of its own).
    if vlan != 0 {
        return XDP_PASS;
    }
    let Some(group) = CARP_BALANCE.get_ptr(u32::from(leader)) else {
        return XDP_PASS;
    };
    // SAFETY: map values stay valid for the whole program run.
    let group = unsafe { &*group };
    if group.count == 0 {
        return XDP_PASS;
    }
    decide(pkt, group, fold, ingress)
}

/// Keeps the flow of `fold` if it is this host's and its lease runs, rewritten to the
/// interface MAC; drops it otherwise.
#[inline(always)]
fn decide(pkt: &Pkt, group: &BalanceEntry, fold: u32, ingress: impl Ingress) -> u32 {
    // Another host's flow is dropped before the clock is read: most frames are.
    if !keeps(group.mask, group.count, fold) || coarse_now() >= group.master_until {
        count!(balance_dropped);
        return XDP_DROP;
    }
    // As a word and a half-word: a 6-byte array would be a call of memcpy.
    let [a, b, c, d, e, f] = group.if_mac;
    let dst = offset_of!(EthHeader, dst);
    if write(pkt, dst, u32::from_ne_bytes([a, b, c, d])).is_none()
        || write(pkt, dst + 4, u16::from_ne_bytes([e, f])).is_none()
    {
        return XDP_PASS;
    }
    ingress.for_this_host();
    count!(balance_kept);
    XDP_PASS
}

/// This CPU's last reading of the coarse clock and the jiffy it was taken in.
#[btf_map]
static CARP_BALANCE_CLOCK: PerCpuArray<[u64; 2], 1> = PerCpuArray::new();

/// CLOCK_MONOTONIC at tick resolution (`bpf_ktime_get_coarse_ns`, ample for a lease of
/// seconds), read once per jiffy and CPU: the kernel inlines `bpf_jiffies64` into one
/// load, where the clock is a helper call that costs a kept frame some 25 ns.
#[inline(always)]
fn coarse_now() -> u64 {
    // SAFETY: helpers without arguments or side effects.
    let (jiffies, read) = unsafe { (bpf_jiffies64(), || bpf_ktime_get_coarse_ns()) };
    let Some(cache) = CARP_BALANCE_CLOCK.get_ptr_mut(0) else {
        return read();
    };
    // SAFETY: this CPU's own slot; nothing else writes it while we run.
    let cache = unsafe { &mut *cache };
    if cache[0] != jiffies || cache[1] == 0 {
        *cache = [jiffies, read()];
    }
    cache[1]
}

/// What a frame to the group MAC carries.
enum Flow {
    /// An IP flow and its fold.
    Fold(u32),
    Arp,
    /// Anything else, truncated headers included.
    Other,
}

/// The flow's fold for frames other than IPv4 (see [`frame`]; OpenBSD carp_lsdrop), read
/// word by word off the packet.
#[inline(always)]
fn fold(pkt: &Pkt, l3: usize, ethertype: u16) -> Flow {
    match ethertype {
        ETH_P_IPV6 => {
            let Some([next, _]) = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv6Header, next)) else {
                return Flow::Other;
            };
            let dst = l3 + offset_of!(Ipv6Header, dst);
            if read::<[u8; 2]>(pkt, dst).is_none_or(|[first, _]| first == 0xff) {
                return Flow::Other;
            }
            // Advertisements are the kernel's (solicitations never come here).
            if next == IPPROTO_ICMPV6 {
                let icmp = l3 + IPV6_HLEN + offset_of!(NdMessage, kind);
                match read::<[u8; 2]>(pkt, icmp) {
                    Some([ND_NEIGHBOR_ADVERT, _]) | None => return Flow::Other,
                    Some(_) => {}
                }
            }
            // Source and destination, 8 words: fold_v6 without a 32-byte copy.
            let mut fold = 0;
            let mut i = 0;
            while i < 32 {
                let Some(word) = read::<[u8; 4]>(pkt, l3 + offset_of!(Ipv6Header, src) + i) else {
                    return Flow::Other;
                };
                fold = fold_in(fold, word);
                i += 4;
            }
            Flow::Fold(fold)
        }
        ETH_P_ARP => Flow::Arp,
        _ => Flow::Other,
    }
}
