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
    balance::{
        fold_in, fold_v4, group_mac,
        icmp::{self, ICMP6_MINLEN, Quoted, Rule, Share},
        keeps,
    },
    ether::{
        ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHeader, IP_MF, IP_OFFMASK, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPV4_HLEN, IPV6_HLEN, Ipv4Header, Ipv6Header, ND_NEIGHBOR_SOLICIT,
        NdMessage,
    },
    maps::{BALANCE_SLOTS, BalanceEntry},
};

use crate::{CARP_STATS, Ingress, L2, Pkt, arp, be16, read, write};

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
        let Some([src, dst]) = read::<[[u8; 4]; 2]>(pkt, l3 + offset_of!(Ipv4Header, src)) else {
            return XDP_PASS;
        };
        if vlan != 0 || dst[0] & 0xf0 == 0xe0 || u32::from_ne_bytes(dst) == u32::MAX {
            return XDP_PASS;
        }
        // ICMP goes to [`verdict`] ([`fold`]): here, another call site would cost the
        // entry's stack, which counts in every call chain.
        let proto = l3 + offset_of!(Ipv4Header, ttl);
        if read::<[u8; 2]>(pkt, proto).is_none_or(|[_, p]| p != IPPROTO_ICMP) {
            if let Some(group) = CARP_BALANCE.get_ptr(u32::from(leader)) {
                // SAFETY: map values stay valid for the whole program run.
                let group = unsafe { &*group };
                if group.count != 0 {
                    return decide(pkt, group, fold_v4(src, dst), ingress);
                }
            }
            return XDP_PASS;
        }
    }
    let args = u64::from(leader) | (u64::from(vlan) << 8) | (u64::from(ethertype) << 32);
    verdict(pkt, l3, args, ingress)
}

/// A BPF frame of its own, called with four registers (the leader, VLAN and ethertype
/// packed into `args`): the entry's stack counts in every call chain, and an `L2`
/// argument would cost it a copy. ARP requests (unicast ones come to the
/// group MAC) go to the usual path, where the leader's master answers them; frames of no
/// group here, to multicast and broadcast addresses and of other protocols pass. The
/// group is looked up before the packet is read: the addresses, read before the lookup,
/// would be spilled to the stack across the helper call.
#[inline(never)]
fn verdict(pkt: &Pkt, l3: usize, args: u64, ingress: impl Ingress) -> u32 {
    let (leader, vlan, ethertype) = (args as u8, (args >> 8) as u16, (args >> 32) as u16);
    if ethertype == ETH_P_ARP {
        let ifindex = ingress.ifindex();
        return arp(pkt, L2 { l3, vlan, ifindex });
    }
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
    match fold(pkt, l3, ethertype) {
        Flow::Fold(fold) => decide(pkt, group, fold, ingress),
        Flow::Icmp => icmp(pkt, l3, group, ingress),
        Flow::Malformed => malformed(),
        Flow::Other => XDP_PASS,
    }
}

/// Drops a malformed ICMP message, as OpenBSD's icmp_input and icmp6_input free it.
#[inline(always)]
fn malformed() -> u32 {
    count!(balance_malformed);
    XDP_DROP
}

/// The verdict on an IPv4 ICMP message ([`icmp4_share`]) for `group`. A call of its own:
/// in [`verdict`], its reads would cost that stack and so the entry's, which count in
/// every call chain.
#[inline(never)]
fn icmp(pkt: &Pkt, l3: usize, group: &BalanceEntry, ingress: impl Ingress) -> u32 {
    match icmp4_share(pkt, l3) {
        Share::Fold(fold) => decide(pkt, group, fold, ingress),
        Share::Every => XDP_PASS,
        Share::Drop => malformed(),
    }
}

/// Where an IPv4 ICMP message goes, as OpenBSD's icmp_input decides it
/// ([`icmp::rule`], [`icmp::quoted`]), every field read bounds-checked: a frame that ends
/// before a field it needs, or an IPv4 header whose lengths do not add up (ipv4_check), is
/// malformed. Fragments go by the outer addresses, as any packet: OpenBSD decides after
/// reassembly, which a frame at a time cannot do, and a datagram's fragments must meet on
/// one host (an echo request's, the likely ones, are hashed by those addresses anyway).
#[inline(always)]
fn icmp4_share(pkt: &Pkt, l3: usize) -> Share {
    header4(pkt, l3).unwrap_or(Share::Drop)
}

/// [`icmp4_share`] with `None` for a frame that ends before the outer header or the ICMP
/// header does: each read returns at once when it fails, as LLVM would otherwise compute
/// the others from a register the failed one left unset, which the verifier refuses.
#[inline(always)]
fn header4(pkt: &Pkt, l3: usize) -> Option<Share> {
    let [vihl, _] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv4Header, version_ihl))?;
    let total = be16(pkt, l3 + offset_of!(Ipv4Header, total_len))?;
    let frag = be16(pkt, l3 + offset_of!(Ipv4Header, frag))?;
    let [src, dst] = read::<[[u8; 4]; 2]>(pkt, l3 + offset_of!(Ipv4Header, src))?;
    let ihl = u16::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || usize::from(ihl) < IPV4_HLEN || total < ihl {
        return Some(Share::Drop);
    }
    if frag & (IP_MF | IP_OFFMASK) != 0 {
        return Some(Share::Fold(fold_v4(src, dst)));
    }
    let at = l3 + usize::from(ihl);
    let [kind, code] = read::<[u8; 2]>(pkt, at)?;
    let len = total - ihl;
    Some(match icmp::rule(kind, code, len) {
        Rule::Outer => Share::Fold(fold_v4(src, dst)),
        Rule::Quote(kind) => icmp::quoted(kind, len, quote4(pkt, at + 8), dst),
        Rule::Every => Share::Every,
        Rule::Drop => Share::Drop,
    })
}

/// The fields of the IPv4 header quoted at `at`, if the frame holds them.
#[inline(always)]
fn quote4(pkt: &Pkt, at: usize) -> Option<Quoted> {
    let [version_ihl, _] = read::<[u8; 2]>(pkt, at + offset_of!(Ipv4Header, version_ihl))?;
    let [_, proto] = read::<[u8; 2]>(pkt, at + offset_of!(Ipv4Header, ttl))?;
    let dst = read::<[u8; 4]>(pkt, at + offset_of!(Ipv4Header, dst))?;
    Some(Quoted {
        version_ihl,
        proto,
        dst,
    })
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
    /// An IPv4 ICMP message for [`icmp`].
    Icmp,
    /// An ICMPv6 message shorter than its header, which icmp6_input frees
    /// (`icp6s_tooshort`).
    Malformed,
    /// Anything else, truncated IP headers included: every host gets it.
    Other,
}

/// Where a frame other than IPv4 goes (see [`frame`]; OpenBSD carp_lsdrop), its fold
/// read word by word off the packet.
#[inline(always)]
fn fold(pkt: &Pkt, l3: usize, ethertype: u16) -> Flow {
    match ethertype {
        // Only ICMP comes here (see [`frame`]).
        ETH_P_IP => Flow::Icmp,
        ETH_P_IPV6 => {
            let Some([next, _]) = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv6Header, next)) else {
                return Flow::Other;
            };
            let dst = l3 + offset_of!(Ipv6Header, dst);
            if read::<[u8; 2]>(pkt, dst).is_none_or(|[first, _]| first == 0xff) {
                return Flow::Other;
            }
            // OpenBSD's icmp6_input hashes echo requests alone ([`icmp::hashed6`]): packet
            // too big and advertisements reach every host (solicitations never come
            // here); it frees a message shorter than its header.
            if next == IPPROTO_ICMPV6 {
                match read::<[u8; ICMP6_MINLEN]>(pkt, l3 + IPV6_HLEN) {
                    None => return Flow::Malformed,
                    Some([kind, ..]) if !icmp::hashed6(kind) => return Flow::Other,
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
        _ => Flow::Other,
    }
}
