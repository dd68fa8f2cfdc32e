//! Names and `#[repr(C)]` layouts of the BPF maps and ring-buffer events. The XDP program
//! declares its maps with these types (as BTF maps, so `bpftool map dump` prints named
//! fields); the agent opens them by these names and writes them on every state change.

use crate::{Protocol, State, sha1::CounterHmac};

/// Per-CPU counters of the XDP program (one entry, index 0): [`XdpStats`].
pub const STATS: &str = "CARP_STATS";
/// Configured VHIDs: [`VhidKey`] → [`VhidEntry`], written by the agent. No key material:
/// operators dump it to see state.
pub const VHIDS: &str = "CARP_VHIDS";
/// The digest keys of each CARP VHID: [`VhidKey`] → [`VhidKeys`], written by the agent
/// when a VHID starts or a reload changes it. Password-equivalent (anyone with its pad
/// states can sign adverts), so kept apart from the state operators dump, and its pin is
/// made 0600 whatever the umask.
pub const KEYS: &str = "CARP_KEYS";
/// Virtual addresses: [`VipKey`] → [`VipEntry`], written by the agent.
pub const VIPS: &str = "CARP_VIPS";
/// Last advert handed to the agent per VHID: [`VhidKey`] → [`ReplayEntry`], written by the
/// program.
pub const REPLAY: &str = "CARP_REPLAY";
/// Last counter accepted per VHID and source under strict authentication: [`PeerKey`] →
/// [`PeerEntry`], written by the program once an advert passed every check (least recently
/// used entries give way); restored by the agent before the program is attached, from the
/// pin a killed agent left and from its state directory, where a stop stores it.
pub const PEERS: &str = "CARP_PEERS";
/// Ring buffer of [`AdvertEvent`]s for the agent.
pub const EVENTS: &str = "CARP_EVENTS";
/// Balanced groups (OpenBSD `balancing ip`) on the program's interface, untagged: an
/// array of [`BalanceEntry`] indexed by the leader VHID (a count of 0: no group), written
/// by the agent. An array, not a hash: its lookup is an address computation, and frames to
/// a group MAC pay it on every packet.
pub const BALANCE: &str = "CARP_BALANCE";

pub const MAX_VHIDS: usize = 1024;
pub const MAX_VIPS: usize = 4096;
pub const MAX_PEERS: usize = 4096;
/// Slots of [`BALANCE`]: one per VHID number.
pub const BALANCE_SLOTS: usize = 256;
/// Ring buffer size in bytes (a power of two, a multiple of the page size): 1170 adverts
/// of 56 bytes, half a second of a full segment's VRRPv3 adverts (255 VHIDs at 100 ms),
/// longer than those backups' master-down time, past which a stalled agent's adverts are
/// stale anyway. Its pages count in the agent's RSS twice (the data area is mapped twice
/// for wrap-around), so it is no larger.
pub const EVENTS_BYTES: usize = 64 * 1024;

/// The program logs the adverts it drops as `bad_hmac`, `bad_ttl` or `bad_version` at debug
/// level, at most this many lines at once...
pub const LOG_BURST: u64 = 10;
/// ...and one per this many nanoseconds after that: 10 a second.
pub const LOG_INTERVAL_NS: u64 = 100_000_000;

/// How the program treats a VHID, one byte per flag so that `bpftool map dump` prints each
/// by name, `true` or `false`. A new flag takes a byte of `_spare`, which keeps the entry's
/// layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    /// Adverts arrive by unicast from configured peers: no TTL 255 check (as FreeBSD).
    pub unicast: bool,
    /// Virtual-MAC mode: frames to the VHID's MAC are ours while MASTER.
    pub vmac: bool,
    /// Neighbor Advertisements carry the Router flag: always for VRRPv3 (RFC 5798 6.4.1
    /// and 6.4.2: "send an unsolicited ND Neighbor Advertisement with the Router Flag (R)
    /// set"), for CARP when the host forwards IPv6 (OpenBSD's carp_send_na; FreeBSD's
    /// nd6_ns_input does so for solicited NAs, its carp_send_na never).
    pub router: bool,
    /// The VHID has IPv6 link-local VIPs: digests without them (OpenBSD's) verify too
    /// ([`VhidKeys::auth_nov6ll`]).
    pub nov6ll: bool,
    /// The leader of a balanced group ([`BalanceEntry`]): ARP replies and NAs carry the
    /// group's multicast MAC as the link-layer address but leave from the interface's own
    /// MAC, as a multicast source MAC is invalid (OpenBSD carp_iamatch sets `ether_shost`
    /// to the parent's address in `balancing ip`).
    pub balanced: bool,
    pub _spare: [u8; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VhidKey {
    pub ifindex: u32,
    /// 802.1Q VLAN id the adverts carry, 0 for untagged.
    pub vlan: u16,
    pub vhid: u8,
    pub _pad: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VhidEntry {
    /// The VHID's [`State`] and [`Protocol`]: BTF enums, so `bpftool map dump` prints
    /// their names.
    pub state: State,
    pub protocol: Protocol,
    pub flags: Flags,
    /// Source MAC of ARP replies and NAs, and the destination MAC of frames that are ours
    /// while MASTER in virtual-MAC mode: 00:00:5e:00:01:vhid, 00:00:5e:00:02:vrid for
    /// IPv6 VRRPv3 (RFC 5798 section 7.3), or the interface's.
    pub mac: [u8; 6],
    /// The interface's own MAC, which virtual-MAC frames are rewritten to.
    pub if_mac: [u8; 6],
    /// MASTER's lease, in `bpf_ktime_get_ns` time (CLOCK_MONOTONIC): the agent moves it on
    /// with every advert it sends, by less than a backup waits before taking over. A
    /// frozen agent cannot withdraw the program's answers; its lease runs out first, so
    /// the host goes quiet before a backup becomes master.
    pub master_until: u64,
}

/// What the program verifies a CARP VHID's digests with ([`KEYS`]): HMACs prepared from
/// the password's pad states (the password never enters the kernel, but the pad states
/// are as good as it). Each says by its `suffix_len` whether it is strict
/// ([`CounterHmac::is_strict`]), so during a switch of `auth` either mode verifies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VhidKeys {
    /// The HMAC over the constant prefix (version, type, vhid, VIPs) prepared for any
    /// counter.
    pub auth: CounterHmac,
    /// With [`Flags::nov6ll`]: the same over the VIPs without IPv6 link-local ones, the
    /// digest OpenBSD sends (carp_prepare_ad uses `HMAC_NOV6LL`; carp_hmac_verify accepts
    /// either).
    pub auth_nov6ll: CounterHmac,
    /// The HMAC before a reload changed the VIPs, the password or `auth`, accepted until
    /// `previous_until` (`bpf_ktime_get_ns` time): peers reloaded a little later still
    /// verify meanwhile, so a rolling change does not make a backup take over.
    pub auth_previous: CounterHmac,
    pub _pad_previous: [u8; 4],
    pub previous_until: u64,
}

/// How long a reload keeps accepting the digests of the VIPs, password and `auth` mode it
/// replaced.
pub const PREVIOUS_AUTH_NS: u64 = 300 * 1_000_000_000;

impl VhidKey {
    pub const fn new(ifindex: u32, vlan: u16, vhid: u8) -> Self {
        Self {
            ifindex,
            vlan,
            vhid,
            _pad: 0,
        }
    }
}

impl Default for VhidEntry {
    fn default() -> Self {
        Self {
            state: State::INIT,
            protocol: Protocol::CARP,
            flags: Flags::default(),
            mac: [0; 6],
            if_mac: [0; 6],
            master_until: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub ifindex: u32,
    pub vlan: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: u8,
    /// IPv4 addresses in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}

/// An address as the maps and the program hold it: the family (4 or 6) and 16 bytes, IPv4
/// in the first 4.
pub fn family_and_bytes(addr: core::net::IpAddr) -> (u8, [u8; 16]) {
    match addr {
        core::net::IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, b)
        }
        core::net::IpAddr::V6(a) => (6, a.octets()),
    }
}

impl VipKey {
    /// The key of `addr` on an interface and VLAN.
    pub fn new(ifindex: u32, vlan: u16, addr: core::net::IpAddr) -> Self {
        let (family, bytes) = family_and_bytes(addr);
        Self {
            ifindex,
            vlan,
            family,
            _pad: 0,
            addr: bytes,
        }
    }
}

/// A VIP's VHID: its state, MAC and lease are the VHID entry's, so a lease renewal writes
/// one entry however many VIPs the VHID has.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipEntry {
    pub vhid: u8,
    pub _pad: [u8; 3],
}

/// Whether a MASTER entry still holds its lease at `now_ns`.
#[inline(always)]
pub fn answers(state: State, master_until: u64, now_ns: u64) -> bool {
    state == State::MASTER && now_ns < master_until
}

/// The last CARP advert handed to the agent for a VHID. An advert from the same source
/// with the same advbase, advskew and demote byte is handed over again only once per half
/// of its sender's interval and dropped (counted) when it comes sooner, whatever its
/// counter, so neither a replayed advert nor captured ones sent in turn can flood the
/// agent. OpenBSD's `carp_prepare_ad` puts the same cookie in the counter of every advert,
/// so an advert equal to the last one is a legitimate keepalive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayEntry {
    /// Source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    pub counter: u64,
    /// `bpf_ktime_get_ns` when it was handed over.
    pub seen_ns: u64,
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    pub _pad: [u8; 5],
}

/// A source of strict adverts for a VHID.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    pub vhid: VhidKey,
    /// IPv4 in the first 4 bytes.
    pub src: [u8; 16],
}

/// The last strict advert accepted from a [`PeerKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEntry {
    /// Its counter: the sender's boot count and its count of adverts within the boot,
    /// growing with every advert, so anything not above it is a replay.
    pub counter: u64,
}

/// How long after an advert of interval `advbase` + `advskew`/256 s the same advert is
/// handed to the agent again: half the interval, at least 1/512 s (OpenBSD allows advbase 0).
#[inline(always)]
pub const fn repeat_gap_ns(advbase: u8, advskew: u8) -> u64 {
    let units = advbase as u64 * 256 + advskew as u64;
    let units = if units == 0 { 1 } else { units };
    // 1/256 s is 3_906_250 ns; half of it per unit.
    units * 1_953_125
}

/// A balanced group on one interface: which of its VHIDs this host is MASTER of. OpenBSD's
/// `sc_lsmask` and `sc_lscount` (carp_update_lsmask), with the MASTER lease of
/// [`VhidEntry::master_until`] so a frozen agent's host stops taking its share.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalanceEntry {
    /// Bit i: MASTER of the group's i-th VHID (ascending VHID order, as OpenBSD's
    /// carp_vhids_ioctl sorts `carpnodes`).
    pub mask: u32,
    /// How many VHIDs the group has, MASTER or not (2..=[`crate::balance::MAX_NODES`]; 0
    /// for no group).
    pub count: u8,
    pub _pad: u8,
    /// The interface's own MAC, which kept frames are rewritten to.
    pub if_mac: [u8; 6],
    /// Until when (`bpf_ktime_get_ns`) `mask` holds: the agent renews it with every advert
    /// a MASTER of the group sends; after it, every frame of the group is dropped.
    pub master_until: u64,
}

/// A valid advert handed to the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdvertEvent {
    /// `bpf_ktime_get_ns` at arrival (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// CARP counter (0 for VRRP).
    pub counter: u64,
    pub ifindex: u32,
    pub vlan: u16,
    pub vhid: u8,
    /// 2 (CARP) or 3 (VRRPv3).
    pub version: u8,
    /// 4 or 6.
    pub family: u8,
    /// CARP: 1 when a strict digest verified it ([`CounterHmac::is_strict`]), so the
    /// program checked its counter against its source's record; 0 for a BSD one.
    pub strict: u8,
    pub advbase: u8,
    pub advskew: u8,
    /// Byte 4 of a CARP advert: OpenBSD's demotion count, 0 from FreeBSD and ucarp.
    pub demote: u8,
    /// VRRPv3 priority.
    pub priority: u8,
    /// VRRPv3 Max_Advert_Interval in centiseconds.
    pub interval_cs: u16,
    pub src: [u8; 16],
}

impl AdvertEvent {
    /// The advert's source address.
    pub fn src_addr(&self) -> core::net::IpAddr {
        ip_addr(self.family, self.src)
    }
}

/// The address of a family (4 or 6) held as in the maps: IPv4 in the first 4 bytes.
#[inline(always)]
pub fn ip_addr(family: u8, addr: [u8; 16]) -> core::net::IpAddr {
    if family == 4 {
        core::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    } else {
        core::net::IpAddr::from(addr)
    }
}

macro_rules! stats {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// What the XDP program did, per CPU. Named fields so `bpftool map dump` prints
        /// them; every drop has its reason.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct XdpStats {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl XdpStats {
            /// Sums the per-CPU values the kernel returns.
            pub fn total<'a>(per_cpu: impl IntoIterator<Item = &'a Self>) -> Self {
                per_cpu.into_iter().fold(Self::default(), |a, b| Self {
                    $($field: a.$field + b.$field,)*
                })
            }

            /// What happened since `earlier` was read.
            pub fn since(&self, earlier: &Self) -> Self {
                Self {
                    $($field: self.$field.wrapping_sub(earlier.$field),)*
                }
            }

            /// Every counter with its name, for status output and metrics.
            pub fn fields(&self) -> [(&'static str, u64); [$(stringify!($field)),*].len()] {
                [$((stringify!($field), self.$field)),*]
            }
        }
    };
}

stats! {
    /// IPv4/IPv6 packets of IP protocol 112 seen.
    proto112,
    /// Valid adverts handed to the agent (then dropped).
    adverts,
    /// Of those, CARP adverts equal to the last one from the same source: what OpenBSD
    /// sends every time (one counter cookie), or a replay.
    repeated,
    /// Protocol 112 for a VHID not configured here, or for the other protocol's group of
    /// the same number (VRRPv3 vs CARP): passed on untouched.
    foreign,
    /// Dropped: TTL / hop limit not 255.
    bad_ttl,
    /// Dropped: neither CARP's version 2 nor VRRP's 3.
    bad_version,
    /// Dropped: not an advertisement.
    bad_type,
    /// Dropped: a length that no advert has (CARP's not 36 bytes, VRRP's not its count of
    /// addresses, an IP header shorter than 20 bytes).
    bad_length,
    /// Dropped: the frame ends before the advert its IP header announces: cut short on the
    /// way, or at tc not pulled whole into the skb's linear part. Never read as a shorter
    /// advert (one once reached the agent as VRRP priority 0, "master stopping").
    truncated,
    /// Dropped: CARP authlen not 7.
    bad_authlen,
    /// Dropped: checksum does not verify.
    bad_checksum,
    /// Dropped: wrong HMAC (wrong password, VIPs or VHID).
    bad_hmac,
    /// Dropped: another advert from the same source with the same advbase, advskew and
    /// demote byte, sooner than half its interval after the last (a replay flood; see
    /// [`ReplayEntry`]).
    replay,
    /// Dropped (strict authentication): a counter not above the last one accepted from
    /// the same source, a captured advert sent again.
    old_counter,
    /// Dropped: the ring buffer to the agent was full.
    ringbuf_full,
    /// ARP requests for a VIP answered with XDP_TX while MASTER.
    arp_replied,
    /// ARP requests for a VIP dropped while not MASTER.
    arp_dropped,
    /// ARP requests for a VIP from a broadcast or multicast sender address: dropped, as
    /// FreeBSD's in_arpinput drops them.
    arp_bad_sender,
    /// ARP requests for a VIP in a frame to another host's MAC (seen only because the
    /// interface is promiscuous): not answered, passed on.
    arp_not_ours,
    /// Gratuitous ARP requests for a VIP (sender address = target: another master of it
    /// announcing itself): an announcement, not a question, so not answered (the kernel
    /// does not answer them either), passed on. An answer, from our MAC, would teach the
    /// switch our port for the virtual MAC just as the other master took it over.
    arp_gratuitous,
    /// Neighbor Solicitations for a VIP answered with XDP_TX while MASTER.
    na_sent,
    /// Neighbor Solicitations for a VIP dropped while not MASTER.
    ns_dropped,
    /// Neighbor Solicitations for a VIP that RFC 4861 7.1.1 makes invalid (hop limit not
    /// 255, a multicast source) or that are not of the shape answered here (DAD from ::, no
    /// source link-layer option): not answered, passed to the kernel.
    ns_not_answered,
    /// Frames to the virtual MAC rewritten to the interface MAC while MASTER.
    vmac_passed,
    /// Frames to the virtual MAC dropped while not MASTER.
    vmac_dropped,
    /// Frames to a balanced group's MAC whose flow hashes to a VHID this host is MASTER
    /// of: rewritten to the interface MAC and passed (OpenBSD carp_lsdrop keeps them).
    balance_kept,
    /// Frames to a balanced group's MAC whose flow belongs to another host: dropped.
    balance_dropped,
    /// ICMP messages to a balanced group's MAC shorter than their header, errors whose
    /// quote is shorter than the header it quotes and 8 bytes, and ICMP in an IPv4 header
    /// whose lengths do not add up: dropped on every host, as OpenBSD's icmp_input and
    /// icmp6_input free them (see `balance::icmp`).
    balance_malformed,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): `#[repr(C)]` structs of integers and byte arrays with explicit padding
    // fields; every bit pattern is valid.
    unsafe impl aya::Pod for super::XdpStats {}
    unsafe impl aya::Pod for super::VhidKey {}
    // SAFETY: as above, but for `state` (a `State`, valid as 0, 1 or 2 only), `protocol`
    // (2 or 3) and the flags (`bool`s, 0 or 1). The agent is the map's only writer and never
    // reads an entry back: bytes only go from a valid value into the kernel.
    unsafe impl aya::Pod for super::VhidEntry {}
    unsafe impl aya::Pod for super::VhidKeys {}
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipEntry {}
    unsafe impl aya::Pod for super::ReplayEntry {}
    unsafe impl aya::Pod for super::AdvertEvent {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerEntry {}
    unsafe impl aya::Pod for super::BalanceEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    /// The layouts are ABI between the program and the agent: no implicit padding.
    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<VhidKey>(), 8);
        assert_eq!(size_of::<Flags>(), 10);
        assert_eq!(size_of::<VhidEntry>(), 1 + 1 + 10 + 6 + 6 + 8);
        assert_eq!(size_of::<VhidKeys>(), 3 * (40 + 128 + 4) + 4 + 8);
        assert_eq!(size_of::<VipKey>(), 24);
        assert_eq!(size_of::<VipEntry>(), 4);
        assert_eq!(size_of::<ReplayEntry>(), 40);
        assert_eq!(size_of::<PeerKey>(), 24);
        assert_eq!(size_of::<PeerEntry>(), 8);
        assert_eq!(size_of::<BalanceEntry>(), 24);
        assert_eq!(size_of::<AdvertEvent>(), 48);
        assert_eq!(align_of::<AdvertEvent>(), 8);
        assert_eq!(
            size_of::<XdpStats>(),
            8 * XdpStats::default().fields().len()
        );
    }

    #[test]
    fn keys_and_addresses() {
        use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let k = VipKey::new(3, 7, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)));
        assert_eq!((k.family, &k.addr[..5]), (4, &[192, 0, 2, 50, 0][..]));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(VipKey::new(3, 0, v6).family, 6);
        let mut ev = AdvertEvent {
            family: 4,
            ..Default::default()
        };
        ev.src[..4].copy_from_slice(&[192, 0, 2, 9]);
        assert_eq!(ev.src_addr(), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
        ev.family = 6;
        ev.src = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(ev.src_addr(), v6);
    }

    #[test]
    fn totals_sum_every_field() {
        let a = XdpStats {
            adverts: 2,
            bad_hmac: 1,
            ..Default::default()
        };
        let b = XdpStats {
            adverts: 3,
            vmac_dropped: 4,
            ..Default::default()
        };
        let t = XdpStats::total([&a, &b]);
        assert_eq!((t.adverts, t.bad_hmac, t.vmac_dropped), (5, 1, 4));
        assert!(t.fields().contains(&("adverts", 5)));
        assert_eq!(t.since(&a), b);
    }
}
