//! The XDP data plane: counts what it sees and recognises CARP/VRRP (IP protocol 112).
//! It never decides elections; it only reads state the agent writes into maps.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, btf_maps::PerCpuArray, macros::btf_map, macros::xdp, programs::XdpContext,
};
use carp_common::{maps::XdpStats, wire::IPPROTO_CARP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const VLAN_HLEN: usize = 4;
/// Offset of the protocol byte in an IPv4 header and of next-header in an IPv6 header.
const IPV4_PROTO_OFF: usize = 9;
const IPV6_NEXT_OFF: usize = 6;

#[btf_map]
static CARP_STATS: PerCpuArray<XdpStats, 1> = PerCpuArray::new();

#[xdp]
pub fn carp(ctx: XdpContext) -> u32 {
    // A one-entry array always has slot 0; the check is for the verifier.
    let Some(stats) = CARP_STATS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let proto112 = is_proto112(&ctx);
    // SAFETY: this CPU's own slot; nothing else writes it while the program runs.
    unsafe {
        (*stats).frames += 1;
        (*stats).proto112 += u64::from(proto112);
    }
    xdp_action::XDP_PASS
}

/// One byte at `off`, bounds-checked against the packet end for the verifier.
#[inline(always)]
fn byte(ctx: &XdpContext, off: usize) -> Option<u8> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + 1 > end {
        return None;
    }
    // SAFETY: checked to lie inside the packet just above.
    Some(unsafe { *((start + off) as *const u8) })
}

#[inline(always)]
fn be16(ctx: &XdpContext, off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([byte(ctx, off)?, byte(ctx, off + 1)?]))
}

/// Whether the frame is an IPv4 or IPv6 packet of protocol 112, after at most one 802.1Q tag.
#[inline(always)]
fn is_proto112(ctx: &XdpContext) -> bool {
    let Some(mut ethertype) = be16(ctx, ETH_HLEN - 2) else {
        return false;
    };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        let Some(inner) = be16(ctx, ETH_HLEN + 2) else {
            return false;
        };
        ethertype = inner;
        l3 += VLAN_HLEN;
    }
    let proto = match ethertype {
        ETH_P_IP => byte(ctx, l3 + IPV4_PROTO_OFF),
        ETH_P_IPV6 => byte(ctx, l3 + IPV6_NEXT_OFF),
        _ => None,
    };
    proto == Some(IPPROTO_CARP)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
