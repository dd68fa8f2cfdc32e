//! The XDP data plane of carp. For IP protocol 112 it validates and authenticates CARP and
//! VRRPv3 adverts of configured VHIDs, hands valid ones to the agent through a ring buffer
//! and drops them, and drops invalid ones with a counted reason; it answers ARP and NDP for
//! VIPs this host is MASTER of with XDP_TX and drops them while it is not. It never decides
//! an election: it reads the state the agent writes into its maps. The same code also runs
//! at tc ingress (`carp_tc`), for interfaces whose XDP hook another program holds.
//!
//! BPF constraints shape the code: a 512-byte stack for the whole call chain (large
//! buffers live in a per-CPU scratch map), reads of at least two bytes (LLVM folds a
//! one-byte bounds check into a form the verifier cannot use at variable offsets), and no
//! variable-length copies.
#![no_std]
#![no_main]

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{
        __sk_buff, TC_ACT_SHOT,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
        xdp_md,
    },
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    helpers::{bpf_ktime_get_ns, bpf_redirect, bpf_skb_change_type, bpf_skb_pull_data},
    macros::{btf_map, classifier, xdp},
    programs::{TcContext, XdpContext},
};
use carp_common::{
    Protocol, checksum,
    ether::{
        ARP_REPLY, ARP_REQUEST, ArpPacket, ETH_HLEN, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
        EthHeader, IPPROTO_ICMPV6, IPV6_HLEN, Ipv4Header, Ipv6Header, NA_OVERRIDE, NA_ROUTER,
        NA_SOLICITED, ND_LEN, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT, NdMessage, VLAN_HLEN,
        VlanTag,
    },
    maps::{
        AdvertEvent, EVENTS_BYTES, LOG_BURST, LOG_INTERVAL_NS, MAX_PEERS, MAX_VHIDS, MAX_VIPS,
        PeerEntry, PeerKey, ReplayEntry, VhidEntry, VhidKey, VhidKeys, VipEntry, VipKey, XdpStats,
        answers, ip_addr, repeat_gap_ns,
    },
    sha1, vrrp, wire,
};

/// Largest payload offset: a VLAN tag and an IPv4 header with 40 bytes of options.
const MAX_L4: usize = ETH_HLEN + VLAN_HLEN + 60;

/// The longest advert payload of either protocol: VRRPv3's (CARP's is 36 bytes).
const MAX_ADVERT: usize = vrrp::MAX_PAYLOAD;

#[btf_map]
static CARP_STATS: PerCpuArray<XdpStats, 1> = PerCpuArray::new();
#[btf_map]
static CARP_VHIDS: HashMap<VhidKey, VhidEntry, MAX_VHIDS> = HashMap::new();
#[btf_map]
static CARP_KEYS: HashMap<VhidKey, VhidKeys, MAX_VHIDS> = HashMap::new();
#[btf_map]
static CARP_VIPS: HashMap<VipKey, VipEntry, MAX_VIPS> = HashMap::new();
#[btf_map]
static CARP_REPLAY: HashMap<VhidKey, ReplayEntry, MAX_VHIDS> = HashMap::new();
#[btf_map]
static CARP_PEERS: LruHashMap<PeerKey, PeerEntry, MAX_PEERS> = LruHashMap::new();
#[btf_map]
/// Untyped, as libbpf requires of a ring buffer (value size 0): bpftool, iproute2 and
/// libxdp open the object too. The records are [`AdvertEvent`]s.
static CARP_EVENTS: RingBuf<(), EVENTS_BYTES> = RingBuf::new();

/// Per-CPU working memory for what does not fit the BPF stack.
#[repr(C)]
struct Scratch {
    event: AdvertEvent,
    /// The CARP header, copied out of the packet.
    header: [u8; wire::HEADER_LEN],
    /// What the digest covers after the VHID's prefix ([`wire::auth`]).
    suffix: [u8; wire::auth::SUFFIX_MAX],
    /// The source of a strict advert.
    peer: PeerKey,
    /// The HMAC's working memory.
    sha1: sha1::Work,
    na: Na,
    /// The advert being recorded in `CARP_REPLAY`.
    replay: ReplayEntry,
    ip: Ip,
}

/// The Neighbor Advertisement being built, and the address of the solicitor it goes to.
#[repr(C)]
struct Na {
    msg: [u8; ND_LEN],
    solicitor: [u8; 16],
}

/// The IP layer of a protocol-112 packet.
#[repr(C)]
struct Ip {
    /// Addresses, IPv4 in the first 4 bytes and zeros after them.
    src: [u8; 16],
    dst: [u8; 16],
    /// Offset of the payload.
    l4: usize,
    /// Payload length the IP header claims.
    len: usize,
    family: u8,
    ttl: u8,
}

#[btf_map]
static CARP_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// When the next drop may be logged (`bpf_ktime_get_ns` time): see [`log_drop`].
#[btf_map]
static CARP_LOG_NEXT: Array<u64, 1> = Array::new();

/// Adds one to a counter of this CPU.
macro_rules! count {
    ($field:ident) => {
        if let Some(s) = CARP_STATS.get_ptr_mut(0) {
            // SAFETY: this CPU's own slot; nothing else writes it while we run.
            unsafe { (*s).$field += 1 };
        }
    };
}

mod balance;

/// Counts `$field` for an advert from `$ip` to `$vhid` and logs it (see [`log_drop`]).
macro_rules! count_logged {
    ($field:ident, $ip:expr, $vhid:expr) => {{
        log_drop(stringify!($field), $ip, $vhid);
        count!($field);
    }};
}

/// Counts `$field` and drops the frame.
macro_rules! drop_as {
    ($field:ident) => {{
        count!($field);
        return Some(XDP_DROP);
    }};
}

#[xdp]
pub fn carp(ctx: XdpContext) -> u32 {
    let pkt = Pkt {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    handle(&pkt, ctx.ctx).unwrap_or(XDP_PASS)
}

/// The same work at tc ingress (tcx), for interfaces whose XDP hook another program holds:
/// the verdicts become tc's, XDP_TX a redirect out of the interface the frame came in by,
/// and a frame taken for a virtual MAC is marked for this host (see
/// [`Ingress::for_this_host`]).
///
/// What XDP passes goes on as `TCX_NEXT`, not `TC_ACT_OK`: in `tcx_run` (net/core/dev.c)
/// any verdict but `TCX_NEXT` ends the run, `TCX_PASS` (= `TC_ACT_OK`) included, and
/// `sch_handle_ingress` then skips the classic clsact filters too, so the programs behind
/// carp (a firewall) would never see the frame. Frames marked for this host go on the same
/// way: the mark is in the skb, and a firewall behind carp must still decide the flows of
/// a virtual MAC or a balanced group. What carp consumes keeps its verdict (its answers,
/// redirected; its drops). Tested in tests/tests/tc_chain.rs.
#[classifier]
pub fn carp_tc(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // Headers in the linear part, where direct access reaches: frames the kernel receives
    // have them there already, and the pull is a no-op then. Adverts are pulled whole
    // later ([`Ingress::whole`]), once their IP header says how long they are.
    let head = (ctx.len() as usize).min(MAX_L4);
    if ctx.data_end() - ctx.data() < head {
        let _ = ctx.pull_data(head as u32);
    }
    let pkt = Pkt {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    match handle(&pkt, skb).unwrap_or(XDP_PASS) {
        XDP_DROP => TC_ACT_SHOT,
        // SAFETY: the program's context, valid for the whole run; the helper only records
        // where the frame goes.
        XDP_TX => unsafe { bpf_redirect((*skb).ifindex, 0) as i32 },
        _ => carp_common::tc::TCX_NEXT,
    }
}

/// `skb->pkt_type` of a frame for this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

/// What [`handle`] needs of a hook's context, read only off the fast path: XDP's ingress
/// ifindex is three dependent loads (rxq, device, index).
trait Ingress: Copy {
    fn ifindex(self) -> u32;
    /// The VLAN of a frame whose tag the kernel took out before tc (skb_vlan_untag); XDP
    /// sees the tag in the frame.
    fn offloaded_vlan(self) -> u16;
    /// After the destination MAC became the interface's: tc runs after eth_type_trans
    /// classed the frame as another host's, and the stack would drop it.
    fn for_this_host(self);
    /// `pkt` with its first `end` bytes (where a protocol-112 packet ends, as its IP header
    /// says) readable, as far as the frame has them: an skb may hold most of a frame
    /// outside its linear part (virtio_net, GRO), which direct access does not reach, so tc
    /// pulls them in (bpf_skb_pull_data), at most a [`MAX_ADVERT`] advert. XDP has the
    /// frame whole: the program is not frags-aware, so drivers hand it one buffer.
    fn whole(self, pkt: &Pkt, end: usize) -> Pkt;
}

impl Ingress for *mut xdp_md {
    #[inline(always)]
    fn ifindex(self) -> u32 {
        // SAFETY: the program's context, valid for the whole run.
        unsafe { (*self).ingress_ifindex }
    }

    #[inline(always)]
    fn offloaded_vlan(self) -> u16 {
        0
    }

    #[inline(always)]
    fn for_this_host(self) {}

    #[inline(always)]
    fn whole(self, pkt: &Pkt, _end: usize) -> Pkt {
        *pkt
    }
}

impl Ingress for *mut __sk_buff {
    #[inline(always)]
    fn ifindex(self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self).ifindex }
    }

    #[inline(always)]
    fn offloaded_vlan(self) -> u16 {
        // SAFETY: as above.
        unsafe {
            if (*self).vlan_present != 0 {
                (*self).vlan_tci as u16 & 0x0fff
            } else {
                0
            }
        }
    }

    #[inline(always)]
    fn for_this_host(self) {
        // SAFETY: as above; the helper only sets the field.
        unsafe { bpf_skb_change_type(self, PACKET_HOST) };
    }

    #[inline(always)]
    fn whole(self, pkt: &Pkt, end: usize) -> Pkt {
        // SAFETY: as above.
        let len = unsafe { (*self).len } as usize;
        let want = end.min(len).min(MAX_L4 + MAX_ADVERT);
        if pkt.start + want <= pkt.end {
            return *pkt;
        }
        // SAFETY: as above. On failure the frame stays as it was, and the advert, cut
        // short, is dropped as `truncated`. The pull invalidates the old bounds: the new
        // ones are read back.
        unsafe {
            bpf_skb_pull_data(self, want as u32);
            Pkt {
                start: (*self).data as usize,
                end: (*self).data_end as usize,
            }
        }
    }
}

/// The packet bounds, read from the context once. Passed by reference to the non-inlined
/// functions: as two integer arguments, LLVM rewrites the bounds checks into pointer
/// arithmetic the verifier refuses; and instead of the context, whose 32-bit fields it
/// would zero-extend there, likewise refused.
#[derive(Clone, Copy)]
struct Pkt {
    start: usize,
    end: usize,
}

/// A pointer to `T` at `off`, checked against the packet end for the verifier.
#[inline(always)]
fn ptr_at<T>(pkt: &Pkt, off: usize) -> Option<*mut T> {
    if pkt.start + off + size_of::<T>() > pkt.end {
        return None;
    }
    Some((pkt.start + off) as *mut T)
}

/// A copy of the `T` at `off`.
#[inline(always)]
fn read<T: Copy>(pkt: &Pkt, off: usize) -> Option<T> {
    // SAFETY: in bounds (ptr_at); packet data has no alignment guarantee, hence unaligned.
    ptr_at::<T>(pkt, off).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
fn write<T>(pkt: &Pkt, off: usize, value: T) -> Option<()> {
    // SAFETY: as in `read`.
    ptr_at::<T>(pkt, off).map(|p| unsafe { p.write_unaligned(value) })
}

#[inline(always)]
fn be16(pkt: &Pkt, off: usize) -> Option<u16> {
    read::<[u8; 2]>(pkt, off).map(u16::from_be_bytes)
}

/// Where a frame's layer 3 starts, and on which interface and VLAN it arrived.
#[derive(Clone, Copy)]
struct L2 {
    l3: usize,
    vlan: u16,
    ifindex: u32,
}

#[inline(always)]
fn handle(pkt: &Pkt, ingress: impl Ingress) -> Option<u32> {
    let mut ethertype = be16(pkt, offset_of!(EthHeader, ethertype))?;
    let mut l3 = ETH_HLEN;
    let mut tag = None;
    if ethertype == ETH_P_8021Q {
        tag = Some(be16(pkt, ETH_HLEN + offset_of!(VlanTag, tci))? & 0x0fff);
        ethertype = be16(pkt, ETH_HLEN + offset_of!(VlanTag, ethertype))?;
        l3 += VLAN_HLEN;
    }
    let vlan = || tag.unwrap_or_else(|| ingress.offloaded_vlan());
    let l2 = || L2 {
        l3,
        vlan: vlan(),
        ifindex: ingress.ifindex(),
    };
    let dst: [u8; 6] = read(pkt, offset_of!(EthHeader, dst))?;
    // 00:00:5e:00:01:xx (CARP, VRRP IPv4) or 00:00:5e:00:02:xx (VRRP IPv6), byte by byte:
    // this runs for every frame, and array `==` would be a call (see `same`).
    const V4: [u8; 6] = wire::virtual_mac(0);
    const V6: [u8; 6] = wire::virtual_mac_v6(0);
    if dst[0] == V4[0]
        && dst[1] == V4[1]
        && dst[2] == V4[2]
        && dst[3] == V4[3]
        && (dst[4] == V4[4] || dst[4] == V6[4])
        && let Some(verdict) = virtual_mac(pkt, l2(), dst, ingress)
    {
        return Some(verdict);
    }
    if balance::is_group_mac(&dst) && !balance::is_solicitation(pkt, l3, ethertype) {
        return Some(balance::frame(pkt, l3, vlan(), dst[5], ethertype, ingress));
    }
    match ethertype {
        ETH_P_IP => {
            // Fast path: anything but protocol 112 passes after one two-byte read.
            let [_, proto] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv4Header, ttl))?;
            if proto != wire::IPPROTO_CARP {
                return None;
            }
            let total = be16(pkt, l3 + offset_of!(Ipv4Header, total_len))?;
            Some(advert(
                &ingress.whole(pkt, l3 + usize::from(total)),
                l2(),
                4,
            ))
        }
        ETH_P_IPV6 => {
            let [next, _] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv6Header, next))?;
            match next {
                wire::IPPROTO_CARP => {
                    let len = be16(pkt, l3 + offset_of!(Ipv6Header, payload_len))?;
                    let end = l3 + IPV6_HLEN + usize::from(len);
                    Some(advert(&ingress.whole(pkt, end), l2(), 6))
                }
                IPPROTO_ICMPV6 => Some(neighbor_solicit(pkt, l2())),
                _ => None,
            }
        }
        ETH_P_ARP => Some(arp(pkt, l2())),
        _ => None,
    }
}

/// A frame to a VHID's virtual MAC: ours to take (rewritten to the interface MAC, so the
/// stack accepts it) while MASTER of a virtual-MAC VHID, dropped otherwise. `None` when
/// the VHID is not ours in virtual-MAC mode or uses the other virtual MAC: the frame goes
/// on as usual.
#[inline(always)]
fn virtual_mac(pkt: &Pkt, l2: L2, dst: [u8; 6], ingress: impl Ingress) -> Option<u32> {
    let key = VhidKey {
        ifindex: l2.ifindex,
        vlan: l2.vlan,
        vhid: dst[5],
        _pad: 0,
    };
    // SAFETY: map values stay valid for the whole program run.
    let entry = unsafe { &*CARP_VHIDS.get_ptr(key)? };
    if !entry.flags.vmac || entry.mac[4] != dst[4] {
        return None;
    }
    if !answers(entry.state, entry.master_until, now()) {
        drop_as!(vmac_dropped);
    }
    write(pkt, offset_of!(EthHeader, dst), entry.if_mac)?;
    ingress.for_this_host();
    count!(vmac_passed);
    None
}

/// The verdict of a path whose `None` means "not ours": the frame passes. The paths that
/// are calls of their own return it as a plain `u32`: an `Option` goes back through the
/// caller's stack, and LLVM may then leave a stack pointer in r0, which the verifier
/// refuses ("cannot return stack pointer to the caller").
#[inline(always)]
fn verdict(path: impl FnOnce() -> Option<u32>) -> u32 {
    path().unwrap_or(XDP_PASS)
}

/// Whether two byte arrays are equal, without a call: `==` on arrays becomes a call of
/// compiler_builtins' global `memcmp`, which libbpf (unlike aya) verifies on its own,
/// with arguments it cannot bound, and refuses. Constant time, as digests want.
#[inline(always)]
fn same<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let mut diff = 0;
    let mut i = 0;
    while i < N {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
}

/// CLOCK_MONOTONIC, the clock of MASTER leases.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_ns() }
}

/// Logs at debug level, through aya-log, that an advert from `ip`'s source to `vhid` was
/// dropped and counted as `counter`: what an operator wants to see of a misconfigured peer
/// (a wrong password, a router between) or an attack, and not in a packet capture. At most
/// [`LOG_BURST`] lines at once and one per [`LOG_INTERVAL_NS`] after that (the generic cell
/// rate algorithm, one timestamp for all CPUs), so that a flood cannot fill the ring; the
/// counters stay exact. CPUs racing here may each let one line more through.
#[inline(never)]
fn log_drop(counter: &str, ip: &Ip, vhid: u8) {
    let Some(next) = CARP_LOG_NEXT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a map value, valid for the whole program run; a race loses a line's wait.
    let next = unsafe { &mut *next };
    let now = now();
    if next.saturating_sub(now) > (LOG_BURST - 1) * LOG_INTERVAL_NS {
        return;
    }
    *next = (*next).max(now) + LOG_INTERVAL_NS;
    aya_log_ebpf::debug!(
        // The macros ignore their context argument.
        &(),
        target: "carp::xdp",
        "advert from {} vhid {} dropped: {}",
        ip_addr(ip.family, ip.src),
        vhid,
        counter
    );
}

/// This CPU's scratch memory.
///
/// # Safety
/// Once per path of a program run: the slot is this CPU's, and nothing else uses it while
/// the program runs, but two references from two calls would alias.
#[inline(always)]
unsafe fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: see above; the caller takes it once.
    CARP_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The IPv4 layer of a protocol-112 packet at `l3` into `ip`: `None` when the frame ends
/// before the header does, `Some(false)` when the header's lengths do not add up.
#[inline(always)]
fn ipv4(pkt: &Pkt, l3: usize, ip: &mut Ip) -> Option<bool> {
    let [vihl, _] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv4Header, version_ihl))?;
    let total = usize::from(be16(pkt, l3 + offset_of!(Ipv4Header, total_len))?);
    let [ttl, _] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv4Header, ttl))?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || total < ihl {
        return Some(false);
    }
    ip.src = [0; 16];
    ip.dst = [0; 16];
    ip.src[..4].copy_from_slice(&read::<[u8; 4]>(pkt, l3 + offset_of!(Ipv4Header, src))?);
    ip.dst[..4].copy_from_slice(&read::<[u8; 4]>(pkt, l3 + offset_of!(Ipv4Header, dst))?);
    ip.family = 4;
    ip.ttl = ttl;
    ip.l4 = l3 + ihl;
    ip.len = total - ihl;
    Some(true)
}

/// The IPv6 layer of a protocol-112 packet at `l3` into `ip`; `None` when the frame ends
/// before the header does.
#[inline(always)]
fn ipv6(pkt: &Pkt, l3: usize, ip: &mut Ip) -> Option<()> {
    let len = usize::from(be16(pkt, l3 + offset_of!(Ipv6Header, payload_len))?);
    let [_, hop_limit] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv6Header, next))?;
    ip.src = read(pkt, l3 + offset_of!(Ipv6Header, src))?;
    ip.dst = read(pkt, l3 + offset_of!(Ipv6Header, dst))?;
    ip.family = 6;
    ip.ttl = hop_limit;
    ip.l4 = l3 + IPV6_HLEN;
    ip.len = len;
    Some(())
}

/// Validates a protocol-112 packet of IP `family` (4 or 6) for a configured VHID; unknown
/// VHIDs pass untouched. The IP header is read here, not in a call of its own: a frame
/// more would count on the 512-byte stack under the HMAC's.
#[inline(never)]
fn advert(pkt: &Pkt, l2: L2, family: u8) -> u32 {
    verdict(|| {
        count!(proto112);
        // SAFETY: the protocol-112 path's one use.
        let s = unsafe { scratch() }?;
        if family == 4 {
            if !ipv4(pkt, l2.l3, &mut s.ip)? {
                drop_as!(bad_length);
            }
        } else {
            ipv6(pkt, l2.l3, &mut s.ip)?;
        }
        // Values read back from map memory are unbounded to the verifier: bound it again.
        let l4 = s.ip.l4;
        if l4 > MAX_L4 {
            return None;
        }
        let Some([version_type, vhid]) = read::<[u8; 2]>(pkt, l4) else {
            drop_as!(bad_length);
        };
        let key = VhidKey {
            ifindex: l2.ifindex,
            vlan: l2.vlan,
            vhid,
            _pad: 0,
        };
        let Some(entry) = CARP_VHIDS.get_ptr(key) else {
            count!(foreign);
            return Some(XDP_PASS);
        };
        // SAFETY: map values stay valid for the whole program run.
        let entry = unsafe { &*entry };
        let version = version_type >> 4;
        if version != entry.protocol.version() {
            // CARP (2) and VRRPv3 (3) groups may share a number on one segment: the other
            // protocol's adverts belong to whoever runs that group, here or elsewhere.
            if version == wire::VERSION || version == vrrp::VERSION {
                count!(foreign);
                return Some(XDP_PASS);
            }
            count_logged!(bad_version, &s.ip, vhid);
            return Some(XDP_DROP);
        }
        if !entry.flags.unicast && s.ip.ttl != wire::TTL {
            count_logged!(bad_ttl, &s.ip, vhid);
            return Some(XDP_DROP);
        }
        if version_type & 0x0f != wire::TYPE_ADVERTISEMENT {
            drop_as!(bad_type);
        }
        // The whole advert its IP header announces, or nothing: a frame that ends before it
        // (cut short on the way, or at tc not pulled whole) is never read as a shorter one.
        let len = s.ip.len;
        if len > MAX_ADVERT {
            drop_as!(bad_length);
        }
        if pkt.start + l4 + len > pkt.end {
            drop_as!(truncated);
        }
        let ev = &mut s.event;
        *ev = AdvertEvent::default();
        ev.ifindex = l2.ifindex;
        ev.vlan = l2.vlan;
        ev.vhid = vhid;
        ev.version = entry.protocol.version();
        ev.family = s.ip.family;
        ev.src = s.ip.src;
        let dropped = if entry.protocol == Protocol::CARP {
            carp_advert(pkt, l4, &key, entry, s)
        } else {
            vrrp_advert(pkt, l4, s)
        };
        if dropped.is_some() {
            return Some(XDP_DROP);
        }
        // SAFETY: a plain helper call.
        s.event.ktime_ns = now();
        #[allow(
            clippy::needless_borrows_for_generic_args,
            reason = "by value would copy the 48-byte event onto the 512-byte stack"
        )]
        let sent = CARP_EVENTS.output_untyped::<AdvertEvent>(&s.event, 0);
        if sent.is_err() {
            drop_as!(ringbuf_full);
        }
        // Recorded only now that every check passed and the agent has it.
        if s.event.strict != 0 {
            record_peer(s);
        }
        count!(adverts);
        Some(XDP_DROP)
    })
}

/// Checks a CARP advert and fills the event; `Some` means it was dropped (and counted).
#[inline(never)]
fn carp_advert(
    pkt: &Pkt,
    l4: usize,
    key: &VhidKey,
    entry: &VhidEntry,
    s: &mut Scratch,
) -> Option<()> {
    if s.ip.len != wire::HEADER_LEN {
        count!(bad_length);
        return Some(());
    }
    let Some(h) = ptr_at::<[u8; wire::HEADER_LEN]>(pkt, l4) else {
        count!(truncated);
        return Some(());
    };
    // SAFETY: in bounds (ptr_at).
    s.header = unsafe { h.read_unaligned() };
    let h = &s.header;
    if h[wire::offset::AUTHLEN] != wire::AUTHLEN {
        count!(bad_authlen);
        return Some(());
    }
    if checksum::internet(h) != 0 {
        count!(bad_checksum);
        return Some(());
    }
    let ev = &mut s.event;
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&h[wire::offset::COUNTER..wire::offset::DIGEST]);
    ev.counter = u64::from_be_bytes(counter);
    ev.advbase = h[wire::offset::ADVBASE];
    ev.advskew = h[wire::offset::ADVSKEW];
    ev.demote = h[wire::offset::DEMOTE];
    // carp_hmac_verify before anything is recorded, as carp_input_c does.
    // The header's last 20 bytes, in place: a copy would cost the stack 20 more bytes.
    let Ok(digest) = <&[u8; wire::DIGEST_LEN]>::try_from(&h[wire::offset::DIGEST..]) else {
        return Some(());
    };
    wire::auth::suffix(
        &mut s.suffix,
        ev.counter,
        [ev.advbase, ev.advskew, ev.demote],
        s.ip.family,
        &s.ip.src,
    );
    let now = now();
    // The pads live in a map of their own, out of the state operators dump (one more
    // lookup per advert).
    let Some(keys) = CARP_KEYS.get_ptr(key) else {
        count_logged!(bad_hmac, &s.ip, key.vhid);
        return Some(());
    };
    // SAFETY: map values stay valid for the whole program run.
    let keys = unsafe { &*keys };
    // The digest that verifies says the mode: after a reload switched `auth`, the
    // previous one is the other mode's.
    let strict = if same(&keys.auth.digest(&s.suffix, &mut s.sha1), digest) {
        keys.auth.is_strict()
    } else if entry.flags.nov6ll && same(&keys.auth_nov6ll.digest(&s.suffix, &mut s.sha1), digest) {
        keys.auth_nov6ll.is_strict()
    } else if now < keys.previous_until
        && same(&keys.auth_previous.digest(&s.suffix, &mut s.sha1), digest)
    {
        keys.auth_previous.is_strict()
    } else {
        count_logged!(bad_hmac, &s.ip, key.vhid);
        return Some(());
    };
    if strict {
        s.event.strict = 1;
        return old_counter(key, s);
    }
    let fresh = &mut s.replay;
    fresh.src = ev.src;
    fresh.counter = ev.counter;
    fresh.seen_ns = now;
    fresh.advbase = ev.advbase;
    fresh.advskew = ev.advskew;
    fresh.demote = ev.demote;
    if let Some(last) = CARP_REPLAY.get_ptr_mut(key) {
        // SAFETY: map value, valid for the run; a racing CPU can only let one more through.
        let last = unsafe { &mut *last };
        if same(&last.src, &fresh.src)
            && last.advbase == fresh.advbase
            && last.advskew == fresh.advskew
            && last.demote == fresh.demote
        {
            // The same sender saying the same thing again so soon after its last advert
            // that only a replay flood explains it, whatever the counter: captured adverts
            // sent in turn differ only there. (A bow-out or a demotion changes the fields.)
            if now.wrapping_sub(last.seen_ns) < repeat_gap_ns(fresh.advbase, fresh.advskew) {
                count!(replay);
                return Some(());
            }
            // OpenBSD sends its cookie in every advert: a keepalive.
            if last.counter == fresh.counter {
                count!(repeated);
            }
        }
        *last = *fresh;
    } else {
        let _ = CARP_REPLAY.insert(key, fresh, 0);
    }
    None
}

/// Strict authentication's replay check: the sender's counter grows with every advert it
/// sends, across its restarts too (a boot count in its high half), so one not above the
/// last accepted from this source was sent before, and is now sent again by someone else.
/// `Some` means it was dropped (and counted); nothing is recorded here ([`record_peer`]).
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "by value would copy the 24-byte key onto the 512-byte stack"
)]
#[inline(always)]
fn old_counter(key: &VhidKey, s: &mut Scratch) -> Option<()> {
    s.peer.vhid = *key;
    s.peer.src = s.event.src;
    if let Some(last) = CARP_PEERS.get_ptr(&s.peer)
        // SAFETY: map value, valid for the run.
        && unsafe { (*last).counter } >= s.event.counter
    {
        count!(old_counter);
        return Some(());
    }
    None
}

/// Records the counter of a strict advert the agent was handed, for its source
/// ([`old_counter`] filled `s.peer`).
#[allow(
    clippy::needless_borrows_for_generic_args,
    reason = "by value would copy the 24-byte key onto the 512-byte stack"
)]
#[inline(always)]
fn record_peer(s: &Scratch) {
    let fresh = PeerEntry {
        counter: s.event.counter,
    };
    match CARP_PEERS.get_ptr_mut(&s.peer) {
        // SAFETY: map value, valid for the run. Never lowered: a CPU that recorded a later
        // advert meanwhile keeps its record.
        Some(last) => unsafe {
            if (*last).counter < fresh.counter {
                *last = fresh;
            }
        },
        None => {
            let _ = CARP_PEERS.insert(&s.peer, fresh, 0);
        }
    }
}

/// Checks a VRRPv3 advert (RFC 5798 5.1: count of addresses, checksum with the IP
/// pseudo-header) and fills the event; `Some` means it was dropped (and counted).
#[inline(never)]
fn vrrp_advert(pkt: &Pkt, l4: usize, s: &mut Scratch) -> Option<()> {
    let ip = &s.ip;
    let Some(h) = read::<[u8; vrrp::HEADER_LEN]>(pkt, l4) else {
        count!(truncated);
        return Some(());
    };
    let addr_len = if ip.family == 4 { 4 } else { 16 };
    let len = vrrp::HEADER_LEN + usize::from(h[3]) * addr_len;
    if ip.len != len || len > vrrp::MAX_PAYLOAD {
        count!(bad_length);
        return Some(());
    }
    // The checksum with the pseudo-header, the addresses summed in place (IPv4's are
    // zero-padded, and zeros add nothing: a copy would cost the stack 32 bytes), the
    // payload straight off the packet in words (VRRPv3 lengths are even) under a constant
    // loop bound.
    let mut sum = checksum::pseudo(&ip.src, &ip.dst, wire::IPPROTO_CARP, len);
    let mut i = 0;
    while i < vrrp::MAX_PAYLOAD && i < len {
        // In the frame ([`advert`] checked), but the verifier wants each read checked: a
        // miss is a drop, never a checksum skipped.
        let Some(word) = read::<[u8; 2]>(pkt, l4 + i) else {
            count!(truncated);
            return Some(());
        };
        sum = checksum::add(sum, &word);
        i += 2;
    }
    if checksum::finish(sum) != 0 {
        count!(bad_checksum);
        return Some(());
    }
    s.event.priority = h[2];
    s.event.interval_cs = u16::from_be_bytes([h[4], h[5]]) & vrrp::MAX_ADVER_INT_MASK;
    None
}

/// The entry of the VHID an address on this interface and VLAN is a VIP of.
#[inline(always)]
fn vip(l2: L2, family: u8, addr: [u8; 16]) -> Option<&'static VhidEntry> {
    let key = VipKey {
        ifindex: l2.ifindex,
        vlan: l2.vlan,
        family,
        _pad: 0,
        addr,
    };
    // SAFETY: map values stay valid for the whole program run.
    let vhid = unsafe { (*CARP_VIPS.get_ptr(key)?).vhid };
    let key = VhidKey {
        ifindex: l2.ifindex,
        vlan: l2.vlan,
        vhid,
        _pad: 0,
    };
    // SAFETY: as above.
    CARP_VHIDS.get_ptr(key).map(|p| unsafe { &*p })
}

/// The Ethernet source of a reply for a VIP: the VHID's MAC, or for a balanced group,
/// whose MAC is multicast, the interface's own (OpenBSD carp_iamatch).
#[inline(always)]
fn frame_source(vip: &VhidEntry) -> [u8; 6] {
    if vip.flags.balanced {
        vip.if_mac
    } else {
        vip.mac
    }
}

/// An ARP request for one of our VIPs: answered in place while MASTER, dropped otherwise.
#[inline(never)]
fn arp(pkt: &Pkt, l2: L2) -> u32 {
    verdict(|| {
        let a = l2.l3;
        if u64::from_ne_bytes(read(pkt, a)?) != u64::from_ne_bytes(ARP_REQUEST) {
            return None;
        }
        let target_ip: [u8; 4] = read(pkt, a + offset_of!(ArpPacket, target_ip))?;
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&target_ip);
        let vip = vip(l2, 4, addr)?;
        if !answers(vip.state, vip.master_until, now()) {
            drop_as!(arp_dropped);
        }
        let sender_mac: [u8; 6] = read(pkt, a + offset_of!(ArpPacket, sender_mac))?;
        if sender_mac[0] & 1 != 0 {
            drop_as!(arp_bad_sender);
        }
        let dst: [u8; 6] = read(pkt, offset_of!(EthHeader, dst))?;
        if !same(&dst, &[0xff; 6]) && !same(&dst, &vip.mac) && !same(&dst, &vip.if_mac) {
            count!(arp_not_ours);
            return None;
        }
        let sender_ip: [u8; 4] = read(pkt, a + offset_of!(ArpPacket, sender_ip))?;
        if same(&sender_ip, &target_ip) {
            count!(arp_gratuitous);
            return None;
        }
        // Turn the request into the reply: to the asker, from the VHID's MAC.
        write(pkt, offset_of!(EthHeader, dst), sender_mac)?;
        write(pkt, offset_of!(EthHeader, src), frame_source(vip))?;
        write(pkt, a + offset_of!(ArpPacket, op), ARP_REPLY.to_be_bytes())?;
        write(pkt, a + offset_of!(ArpPacket, sender_mac), vip.mac)?;
        write(pkt, a + offset_of!(ArpPacket, sender_ip), target_ip)?;
        write(pkt, a + offset_of!(ArpPacket, target_mac), sender_mac)?;
        write(pkt, a + offset_of!(ArpPacket, target_ip), sender_ip)?;
        count!(arp_replied);
        Some(XDP_TX)
    })
}

/// A Neighbor Solicitation for one of our VIP6s: answered with a Neighbor Advertisement in
/// place while MASTER, dropped otherwise. Solicitations of other shapes (DAD from ::, no
/// source link-layer option) go to the kernel while MASTER, and so do invalid ones (RFC
/// 4861 7.1.1: hop limit not 255, a multicast source), which it discards.
#[inline(never)]
fn neighbor_solicit(pkt: &Pkt, l2: L2) -> u32 {
    verdict(|| {
        let l3 = l2.l3;
        let icmp = l3 + IPV6_HLEN;
        let [kind, _] = read::<[u8; 2]>(pkt, icmp + offset_of!(NdMessage, kind))?;
        if kind != ND_NEIGHBOR_SOLICIT {
            return None;
        }
        let target: [u8; 16] = read(pkt, icmp + offset_of!(NdMessage, target))?;
        let vip = vip(l2, 6, target)?;
        if !answers(vip.state, vip.master_until, now()) {
            drop_as!(ns_dropped);
        }
        // The addresses are kept in scratch memory from here on: 16-byte locals, moved
        // byte by byte, would cost the stack hundreds of bytes of spills.
        // SAFETY: the NS path's one use.
        let na = &mut unsafe { scratch() }?.na;
        let msg = &mut na.msg;
        *msg = [0; ND_LEN];
        msg[offset_of!(NdMessage, target)..][..16].copy_from_slice(&target);
        na.solicitor = read(pkt, l3 + offset_of!(Ipv6Header, src))?;
        let src = &na.solicitor;
        let payload_len = usize::from(be16(pkt, l3 + offset_of!(Ipv6Header, payload_len))?);
        let [_, hop_limit] = read::<[u8; 2]>(pkt, l3 + offset_of!(Ipv6Header, next))?;
        // Option type, length and the solicitor's link-layer address.
        let option: [u8; 8] = read(pkt, icmp + offset_of!(NdMessage, option))?;
        if payload_len != ND_LEN
            || option[0] != 1
            || option[1] != 1
            || same(src, &[0; 16])
            || src[0] == 0xff
            || hop_limit != wire::TTL
        {
            count!(ns_not_answered);
            return None;
        }
        let router = vip.flags.router;
        // The advertisement: Solicited + Override (+ Router), target, target link-layer option.
        let msg = &mut na.msg;
        msg[offset_of!(NdMessage, kind)] = ND_NEIGHBOR_ADVERT;
        msg[offset_of!(NdMessage, flags)] =
            NA_SOLICITED | NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
        msg[offset_of!(NdMessage, option)] = 2;
        msg[offset_of!(NdMessage, option_len)] = 1;
        msg[offset_of!(NdMessage, lladdr)..].copy_from_slice(&vip.mac);
        let target = &msg[offset_of!(NdMessage, target)..][..16];
        // ICMPv6 checksum over the pseudo-header (RFC 8200 8.1) and the message.
        let sum = checksum::pseudo(target, &na.solicitor, IPPROTO_ICMPV6, ND_LEN);
        let csum = checksum::finish(checksum::add(sum, msg));
        msg[offset_of!(NdMessage, check)..][..2].copy_from_slice(&csum.to_be_bytes());
        let [_, _, mac @ ..] = option;
        write(pkt, offset_of!(EthHeader, dst), mac)?;
        write(pkt, offset_of!(EthHeader, src), frame_source(vip))?;
        write(
            pkt,
            l3 + offset_of!(Ipv6Header, next),
            [IPPROTO_ICMPV6, wire::TTL],
        )?;
        let target = ptr_at::<[u8; 16]>(pkt, l3 + offset_of!(Ipv6Header, src))?;
        let solicitor = ptr_at::<[u8; 16]>(pkt, l3 + offset_of!(Ipv6Header, dst))?;
        let message = ptr_at::<[u8; ND_LEN]>(pkt, icmp)?;
        // SAFETY: in bounds (ptr_at), and scratch memory does not overlap the packet.
        unsafe {
            core::ptr::copy_nonoverlapping(
                msg[offset_of!(NdMessage, target)..].as_ptr(),
                target.cast(),
                16,
            );
            core::ptr::copy_nonoverlapping(na.solicitor.as_ptr(), solicitor.cast(), 16);
            core::ptr::copy_nonoverlapping(msg.as_ptr(), message.cast(), ND_LEN);
        }
        count!(na_sent);
        Some(XDP_TX)
    })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
