//! One VHID at run time, without I/O: the election machine and what surrounds it in
//! FreeBSD's `struct carp_softc` — the authentication, the advert counter, the sources and
//! MAC, the counters. It turns an XDP event into an election event, an advert into frames
//! or unicast payloads, its state into map entries and a status row; the agent carries
//! the results out.

use crate::{
    addrs::{self, Sources},
    config::{Balance, MacMode, Plan, Protocol, VipPlacement},
    control::{BalanceStatus, VhidStatus, Waiting},
    election::{Event, Machine, Reason, State, Timing},
    frame,
    hmac::{Auth, AuthMode, Counter},
    hooks,
    netlink::{Address, Link},
    xdp::{advert_of, vhid_entry, vhid_keys},
};
use anyhow::{Context as _, Result};
use carp_common::{
    maps::{
        AdvertEvent, BalanceEntry, Flags, PREVIOUS_AUTH_NS, VhidEntry, VhidKey, VhidKeys, VipEntry,
        VipKey,
    },
    sha1::CounterHmac,
    vrrp, wire,
};
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

/// An advert on its way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A whole Ethernet frame to the advert group, from the VHID's MAC.
    Frame(Vec<u8>),
    /// A payload to a unicast peer, from our address of its family.
    Unicast {
        from: IpAddr,
        to: IpAddr,
        payload: Vec<u8>,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    transitions: u64,
    adverts_sent: u64,
    adverts_received: u64,
    adverts_refused: u64,
    send_errors: u64,
    vips_restored: u64,
}

/// Something the kernel reports removed (RTM_DELADDR, RTM_DELROUTE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    /// An address left interface `index`; `vip`: it carried the VIPs' tag
    /// ([`crate::netlink::VIP_PROTO`]), so it was one this agent placed.
    Address { index: u32, addr: IpAddr, vip: bool },
    /// A route to `net`/`prefix` over interface `index`.
    Route { index: u32, net: IpAddr, prefix: u8 },
}

/// What a master puts back after a [`Removed`]: a VIP as configured (placed where
/// `vips_on` puts it), or the route to a VIP's own subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restore {
    Vip(IpAddr, u8),
    Route(IpAddr, u8),
}

impl std::fmt::Display for Restore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Restore::Vip(vip, prefix) => write!(f, "VIP {vip}/{prefix}"),
            Restore::Route(vip, prefix) => write!(
                f,
                "route to {}/{prefix} (for VIP {vip})",
                addrs::network(*vip, *prefix)
            ),
        }
    }
}

pub struct Vhid {
    pub plan: Plan,
    pub ifindex: u32,
    pub machine: Machine,
    auth: Option<Auth>,
    counter: Counter,
    sources: Sources,
    /// MAC that answers for the VIPs and sources multicast adverts.
    mac: [u8; 6],
    /// NAs carry the Router flag (see [`Flags::router`]).
    router: bool,
    /// VIPs (on lo) whose subnet the master routes over the interface.
    routed: Vec<(IpAddr, u8)>,
    /// The HMAC a reload replaced, and until when (CLOCK_MONOTONIC ns) the program still
    /// accepts it: see [`carp_common::maps::VhidKeys::auth_previous`].
    previous: Option<(CounterHmac, u64)>,
    n: Counters,
    since: Instant,
    last_reason: Reason,
}

impl Vhid {
    /// The VHID `plan` describes on `link`, whose addresses are `addrs`; `forwarding_v6`:
    /// the host routes IPv6 there.
    pub fn new(
        plan: Plan,
        link: &Link,
        addrs: &[Address],
        vips_on: VipPlacement,
        forwarding_v6: bool,
    ) -> Result<Self> {
        let sources = addrs::advert_sources(&plan, addrs)
            .with_context(|| format!("{} has no address to send adverts from", plan.interface))?;
        let src = sources.first;
        let mac = match &plan.balance {
            Some(b) if b.is_leader() => carp_common::balance::group_mac(b.leader()),
            Some(_) => wire::virtual_mac(plan.vhid),
            None => match plan.mac {
                // RFC 5798 7.3: IPv6 virtual routers have a MAC of their own.
                MacMode::Virtual => match plan.timing {
                    Timing::Vrrp3 { .. } if src.is_ipv6() => wire::virtual_mac_v6(plan.vhid),
                    _ => wire::virtual_mac(plan.vhid),
                },
                MacMode::Interface => link.mac,
            },
        };
        let auth = match plan.protocol() {
            Protocol::CARP => Some(Auth::with_mode(
                &plan.password,
                plan.vhid,
                &plan.vip_addrs(),
                plan.auth,
            )?),
            Protocol::VRRPV3 => None,
        };
        let at = format!("vhid {} on {}", plan.vhid, plan.interface);
        if plan.peers.is_empty()
            && plan.protocol() == Protocol::CARP
            && sources.other.is_none()
            && plan.vips.iter().any(|(v, _)| v.is_ipv6() != src.is_ipv6())
        {
            tracing::warn!(
                "{at}: no address of the VIPs' other family; adverts go out from {src} only"
            );
        }
        if sources.from_vip {
            tracing::warn!(
                "{at}: the interface has no address of its own of the VIP's family; adverts go \
                 out from the VIP {src}, which peers cannot break ties with: give the interface \
                 an address"
            );
        }
        // VIPs on lo leave their subnet unrouted when it is not one of the interface's.
        let own: Vec<&Address> = addrs.iter().filter(|a| !a.vip).collect();
        let routed = plan
            .vips
            .iter()
            .copied()
            .filter(|(vip, prefix)| {
                vips_on == VipPlacement::Loopback
                    && *prefix < if vip.is_ipv4() { 32 } else { 128 }
                    && !own
                        .iter()
                        .any(|o| addrs::same_subnet(o.addr, *vip, o.prefix))
            })
            .collect();
        let router = match plan.protocol() {
            Protocol::VRRPV3 => true,
            Protocol::CARP => forwarding_v6,
        };
        let vips: Vec<String> = plan.vips.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        tracing::info!(
            "{at}: {}, VIPs {}, adverts from {src}",
            plan.timing,
            vips.join(" ")
        );
        Ok(Self {
            ifindex: link.index,
            machine: Machine::new(plan.machine(&sources)),
            auth,
            counter: Counter::default(),
            sources,
            mac,
            router,
            routed,
            previous: None,
            n: Counters::default(),
            since: Instant::now(),
            last_reason: Reason::LinkDown,
            plan,
        })
    }

    /// Whether `plan` can replace this VHID's in place (a reload keeps the state): the
    /// same interface, number and protocol, MAC mode, peers, source and balanced group.
    /// Anything else recreates the VHID.
    pub fn takes(&self, plan: &Plan) -> bool {
        let p = &self.plan;
        p.interface == plan.interface
            && p.vhid == plan.vhid
            && p.protocol() == plan.protocol()
            && p.mac == plan.mac
            && p.peers == plan.peers
            && p.src == plan.src
            && p.balance == plan.balance
    }

    /// Takes the settings of `fresh`, the same VHID made of its new plan (see
    /// [`Vhid::takes`]), in place: election settings, VIPs, password, `auth`, hooks and
    /// groups change, state and timers stay. Returns the words for the log. A changed
    /// digest (VIPs, password, `auth`) keeps the old one accepted for [`PREVIOUS_AUTH_NS`]
    /// from `now_ns`, so peers reloaded a little later still verify. A change of `auth`
    /// starts the BSD counter afresh (random until a peer is heard); strict adverts count
    /// with the agent's sequence, which a switch leaves where it is.
    pub fn reconfigure(&mut self, fresh: Vhid, now_ns: u64) -> String {
        let old = std::mem::replace(&mut self.plan, fresh.plan);
        self.machine.reconfigure(*fresh.machine.config());
        let kernel = |a: &Option<Auth>| a.as_ref().map(Auth::kernel);
        if let Some(old) = kernel(&self.auth)
            && kernel(&fresh.auth) != Some(old)
        {
            self.previous = Some((old, now_ns.saturating_add(PREVIOUS_AUTH_NS)));
        }
        if old.auth != self.plan.auth {
            self.counter = Counter::default();
        }
        self.auth = fresh.auth;
        self.sources = fresh.sources;
        self.mac = fresh.mac;
        self.router = fresh.router;
        self.routed = fresh.routed;
        changes(&old, &self.plan)
    }

    pub fn key(&self) -> VhidKey {
        VhidKey::new(self.ifindex, 0, self.plan.vhid)
    }

    /// The name demotion keeps it under.
    pub fn id(&self) -> (String, u8) {
        (self.plan.interface.clone(), self.plan.vhid)
    }

    pub fn state(&self) -> State {
        self.machine.state()
    }

    /// The election event an advert the XDP program verified carries. A unicast group
    /// hears its peers only (keepalived's `check_unicast_src`): an advert from anyone
    /// else is counted and ignored. A BSD VHID adopts a BSD advert's counter
    /// (carp_input_c); a strict advert's counter was checked by the program, before it
    /// recorded anything (above the last one from the source, `old_counter` otherwise).
    /// The mode is the advert's, not the VHID's: while a switch of `auth` rolls through
    /// the group, the previous mode's digest verifies too.
    pub fn receive(&mut self, ev: &AdvertEvent) -> Option<Event> {
        let (advert, counter) = advert_of(ev);
        if !self.plan.peers.is_empty() && !self.plan.peers.contains(&advert.src) {
            self.n.adverts_refused += 1;
            return None;
        }
        if let Some((counter, AuthMode::Bsd)) = counter
            && self.plan.auth == AuthMode::Bsd
        {
            self.counter.adopt(counter);
        }
        self.n.adverts_received += 1;
        Some(Event::Advert(advert))
    }

    /// What one advert with `timing` puts on the wire: a frame per family to the group
    /// (carp_send_ad_locked), or a payload per unicast peer from our address of its
    /// family. `random` seeds the BSD counter until a peer is heard; strict mode counts
    /// with `strict`, the agent's [`crate::hmac::Sequence`], and sends nothing when it has
    /// no counter left.
    pub fn adverts(
        &mut self,
        timing: Timing,
        mut strict: impl FnMut() -> Option<u64>,
        mut random: impl FnMut() -> u64,
    ) -> Vec<Outgoing> {
        let froms: Vec<IpAddr> = std::iter::once(self.sources.first)
            .chain(self.sources.other)
            .collect();
        if self.plan.peers.is_empty() {
            froms
                .into_iter()
                .filter_map(|src| {
                    let payload =
                        self.payload(timing, src, frame::group(src), &mut strict, &mut random)?;
                    Some(Outgoing::Frame(frame::advert(
                        src,
                        self.advert_mac(),
                        None,
                        &payload,
                    )))
                })
                .collect()
        } else {
            self.plan
                .peers
                .clone()
                .into_iter()
                .filter_map(|to| {
                    let from = *froms.iter().find(|s| s.is_ipv6() == to.is_ipv6())?;
                    let payload = self.payload(timing, from, to, &mut strict, &mut random)?;
                    Some(Outgoing::Unicast { from, to, payload })
                })
                .collect()
        }
    }

    /// The source MAC of multicast adverts: the VHID's MAC, but never a balanced group's
    /// multicast one, which no frame may come from (OpenBSD carp_start: "Do not leak the
    /// multicast address"); its leader advertises from its own virtual MAC.
    fn advert_mac(&self) -> [u8; 6] {
        match self.plan.balance {
            Some(_) => wire::virtual_mac(self.plan.vhid),
            None => self.mac,
        }
    }

    /// Whether the VIPs come and go with this VHID's MASTER state. A balanced group's VIPs
    /// stay on every host while the agent runs instead: the XDP balancer decides which
    /// frames reach them (see [`Vhid::holds_group_vips`]).
    pub fn vips_follow_state(&self) -> bool {
        self.plan.balance.is_none()
    }

    /// Whether this VHID places and registers its balanced group's VIPs: the leader does,
    /// once for the group.
    pub fn holds_group_vips(&self) -> bool {
        self.plan.balance.as_ref().is_some_and(Balance::is_leader)
    }

    /// The protocol-112 payload from `src` to `dst`: CARP with the next counter and its
    /// digest, or VRRPv3 with the VIPs of `src`'s family (its checksum covers both).
    fn payload(
        &mut self,
        timing: Timing,
        src: IpAddr,
        dst: IpAddr,
        strict: &mut impl FnMut() -> Option<u64>,
        random: &mut impl FnMut() -> u64,
    ) -> Option<Vec<u8>> {
        match timing {
            Timing::Carp { advbase, advskew } => {
                let auth = self.auth.as_ref()?;
                let counter = match auth.mode() {
                    AuthMode::Bsd => self.counter.next(random()),
                    AuthMode::Strict => strict()?,
                };
                let mut header = wire::CarpHeader {
                    vhid: self.plan.vhid,
                    advskew,
                    demote: 0,
                    advbase,
                    counter,
                    digest: [0; wire::DIGEST_LEN],
                };
                header.digest = auth.sign_header(&header, src);
                Some(header.encode().to_vec())
            }
            Timing::Vrrp3 {
                priority,
                interval_cs,
            } => {
                let header = vrrp::Vrrp3Header {
                    vrid: self.plan.vhid,
                    priority,
                    count: 0,
                    max_adver_int: interval_cs,
                };
                frame::vrrp_payload(src, dst, header, &self.plan.vip_addrs())
            }
        }
    }

    /// Counts an advert that went out, or did not.
    pub fn sent(&mut self, ok: bool) {
        if ok {
            self.n.adverts_sent += 1;
        } else {
            self.n.send_errors += 1;
        }
    }

    /// The VHID's map entry at `now_ns` (CLOCK_MONOTONIC): a MASTER's lease runs for
    /// [`Machine::lease`] from now, so each advert sent renews it. A VHID handing over
    /// after leaving MASTER (see [`Machine::answering`]) is still MASTER to the program,
    /// for [`Machine::handover_bound`] from when it left: the entry is written then, and
    /// again when the handover ends.
    pub fn entry(&self, if_mac: [u8; 6], now_ns: u64) -> VhidEntry {
        let flags = Flags {
            unicast: !self.plan.peers.is_empty(),
            vmac: self.plan.mac == MacMode::Virtual && self.plan.balance.is_none(),
            router: self.router,
            balanced: self.plan.balance.is_some(),
            ..Flags::default()
        };
        let state = match self.machine.answering() {
            true => State::MASTER,
            false => self.state(),
        };
        let mut entry = vhid_entry(
            self.plan.protocol(),
            state,
            flags,
            self.mac,
            if_mac,
            self.auth.as_ref(),
        );
        if self.state() == State::MASTER {
            entry.master_until = self.lease_until(now_ns);
        } else if state == State::MASTER {
            let bound = self.machine.handover_bound().as_nanos();
            entry.master_until = now_ns.saturating_add(u64::try_from(bound).unwrap_or(u64::MAX));
        }
        entry
    }

    /// The VHID's digest keys ([`carp_common::maps::KEYS`]), for CARP: the current HMACs
    /// and the one a reload replaced, while it is accepted.
    pub fn keys(&self) -> Option<VhidKeys> {
        let mut keys = vhid_keys(self.auth.as_ref()?);
        if let Some((auth, until)) = self.previous {
            keys.auth_previous = auth;
            keys.previous_until = until;
        }
        Some(keys)
    }

    /// When a MASTER lease written at `now_ns` runs out.
    fn lease_until(&self, now_ns: u64) -> u64 {
        let lease = u64::try_from(self.machine.lease().as_nanos()).unwrap_or(u64::MAX);
        now_ns.saturating_add(lease)
    }

    /// Whether this VHID belongs to the balanced group of `leader` on `interface`.
    pub fn in_group(&self, interface: &str, leader: u8) -> bool {
        self.plan.interface == interface
            && self
                .plan
                .balance
                .as_ref()
                .is_some_and(|b| b.leader() == leader)
    }

    /// The VIPs' map entries: each points at this VHID. A balanced group's point at its
    /// leader only, whose master alone answers ARP and NS (OpenBSD carp_iamatch).
    pub fn vip_entries(&self) -> Vec<(VipKey, VipEntry)> {
        let entry = VipEntry {
            vhid: self.plan.vhid,
            _pad: [0; 3],
        };
        if self.plan.balance.is_some() && !self.holds_group_vips() {
            return Vec::new();
        }
        self.plan
            .vips
            .iter()
            .map(|(vip, _)| (VipKey::new(self.ifindex, 0, *vip), entry))
            .collect()
    }

    /// Gratuitous ARPs and unsolicited NAs for every VIP, `garp_count` rounds (at least
    /// one), from the VHID's MAC: what a new master sends (carp_master_down_locked).
    pub fn announcements(&self) -> Vec<Vec<u8>> {
        // A balanced group's MAC never moves: OpenBSD's carp_master_down announces only
        // without balancing.
        if self.plan.balance.is_some() {
            return Vec::new();
        }
        (0..self.plan.garp_count.max(1))
            .flat_map(|_| {
                self.plan.vips.iter().map(|(vip, _)| match vip {
                    IpAddr::V4(a) => frame::gratuitous_arp(self.mac, *a, None),
                    IpAddr::V6(a) => frame::unsolicited_na(self.mac, *a, self.router, None),
                })
            })
            .collect()
    }

    /// VIPs whose subnet the master routes over the interface.
    pub fn routed(&self) -> &[(IpAddr, u8)] {
        &self.routed
    }

    /// Whether the VIPs are placed now: a MASTER's (or one handing over), or a balanced
    /// group's leader's while the agent runs.
    fn holds_vips(&self) -> bool {
        (self.vips_follow_state() && self.machine.answering()) || self.holds_group_vips()
    }

    /// Upkeep: what to put back after `removed`, so that the VIPs this VHID holds stay
    /// answered when something else removes them (keepalived#836, #2479: networkd, DHCP
    /// or NetworkManager remove addresses they did not add). A VIP of ours goes back
    /// with its route; an address gone from the interface may have taken the routes
    /// along (the kernel flushes a link's IPv4 routes with its last address, and a
    /// route with the address it prefers as source, without RTM_DELROUTE), so they go
    /// back too; so does a route deleted. What the agent removes itself is never asked
    /// back: it removes VIPs only from a VHID that no longer holds them (it left MASTER,
    /// or a reload dropped them) before the report arrives; and what is there already
    /// (the late report of a removal, after we added it again) the caller leaves alone.
    pub fn upkeep(&self, removed: &Removed) -> Vec<Restore> {
        if !self.holds_vips() {
            return Vec::new();
        }
        let routes = |keep: &dyn Fn(IpAddr, u8) -> bool| -> Vec<Restore> {
            self.routed
                .iter()
                .filter(|(vip, prefix)| keep(*vip, *prefix))
                .map(|(vip, prefix)| Restore::Route(*vip, *prefix))
                .collect()
        };
        match *removed {
            Removed::Address {
                addr, vip: true, ..
            } => self
                .plan
                .vips
                .iter()
                .filter(|(vip, _)| *vip == addr)
                .map(|(vip, prefix)| Restore::Vip(*vip, *prefix))
                .chain(routes(&|vip, _| vip == addr))
                .collect(),
            Removed::Address { index, .. } if index == self.ifindex => routes(&|_, _| true),
            Removed::Route { index, net, prefix } if index == self.ifindex => {
                routes(&|vip, p| p == prefix && addrs::network(vip, p) == net)
            }
            Removed::Address { .. } | Removed::Route { .. } => Vec::new(),
        }
    }

    /// Counts one thing [`Vhid::upkeep`] put back.
    pub fn restored(&mut self) {
        self.n.vips_restored += 1;
    }

    /// Records a transition; returns how long the previous state lasted.
    pub fn transitioned(&mut self, reason: Reason) -> Duration {
        self.n.transitions += 1;
        self.last_reason = reason;
        let took = self.since.elapsed();
        self.since = Instant::now();
        took
    }

    /// The hook a transition runs: the up script into MASTER, the down script out of it.
    pub fn hook(
        &self,
        from: State,
        to: State,
        netns: Option<String>,
        timeout: Duration,
    ) -> Option<hooks::Run> {
        let script = match (from, to) {
            (_, State::MASTER) => self.plan.up_script.clone(),
            (State::MASTER, _) => self.plan.down_script.clone(),
            _ => None,
        }?;
        Some(hooks::Run {
            script,
            interface: self.plan.interface.clone(),
            vhid: self.plan.vhid,
            vips: self.plan.vips.iter().map(|(a, _)| a.to_string()).collect(),
            netns,
            timeout,
            from,
            to,
        })
    }

    /// The status row, given the VHID's effective demotion.
    pub fn status(&self, demotion: i32) -> VhidStatus {
        VhidStatus {
            state: self.state(),
            src: self.sources.first.to_string(),
            seconds_in_state: self.since.elapsed().as_secs_f64(),
            last_reason: self.last_reason.to_string(),
            transitions: self.n.transitions,
            adverts_sent: self.n.adverts_sent,
            adverts_received: self.n.adverts_received,
            adverts_refused: self.n.adverts_refused,
            send_errors: self.n.send_errors,
            vips_restored: self.n.vips_restored,
            reannounced: self.machine.reannounced(),
            reannounce_limited: self.machine.reannounce_limited(),
            handing_over: self.state() != State::MASTER && self.machine.answering(),
            ..settings(&self.plan, self.machine.advertised(), demotion)
        }
    }
}

/// A balanced group's map entry at `now_ns`, from its VHIDs running here (`members`): the
/// mask of those that are MASTER (OpenBSD carp_update_lsmask), the group's size, and a
/// lease as long as the longest of the masters', renewed with their adverts.
pub fn balance_entry<'a>(
    group: &Balance,
    members: impl IntoIterator<Item = &'a Vhid>,
    if_mac: [u8; 6],
    now_ns: u64,
) -> BalanceEntry {
    let mut entry = BalanceEntry {
        count: u8::try_from(group.vhids.len()).unwrap_or(0),
        if_mac,
        ..BalanceEntry::default()
    };
    for v in members {
        if let Some(b) = &v.plan.balance
            && v.state() == State::MASTER
            && b.index < carp_common::balance::MAX_NODES
        {
            entry.mask |= 1 << b.index;
            entry.master_until = entry.master_until.max(v.lease_until(now_ns));
        }
    }
    entry
}

/// The status row of a VHID that waits in INIT for `why`, since `since` ago.
pub fn waiting_status(plan: &Plan, why: Waiting, since: Duration, demotion: i32) -> VhidStatus {
    VhidStatus {
        state: State::INIT,
        seconds_in_state: since.as_secs_f64(),
        last_reason: format!("waiting: {why}"),
        waiting: Some(why),
        ..settings(plan, plan.timing, demotion)
    }
}

/// The configured part of a status row.
fn settings(plan: &Plan, timing: Timing, demotion: i32) -> VhidStatus {
    let (advbase, advskew, priority, interval_ms) = match timing {
        Timing::Carp { advbase, advskew } => (advbase, advskew, 0, 0),
        Timing::Vrrp3 {
            priority,
            interval_cs,
        } => (0, 0, priority, u32::from(interval_cs) * 10),
    };
    VhidStatus {
        interface: plan.interface.clone(),
        vhid: plan.vhid,
        protocol: plan.protocol(),
        advbase,
        advskew,
        priority,
        interval_ms,
        demotion,
        preempt: plan.preempt,
        auth: plan.auth,
        vips: plan.vips.iter().map(|(a, l)| format!("{a}/{l}")).collect(),
        balance: plan.balance.as_ref().map(|b| BalanceStatus {
            leader: b.leader(),
            index: b.index,
            count: b.vhids.len(),
            mask: 0,
        }),
        ..VhidStatus::default()
    }
}

/// What a reload changed, in the log's words: "advskew 0 -> 50, VIPs +192.0.2.60/24".
fn changes(old: &Plan, new: &Plan) -> String {
    let mut out = Vec::new();
    if old.timing != new.timing {
        out.push(format!("{} -> {}", old.timing, new.timing));
    }
    if old.preempt != new.preempt {
        out.push(format!("preempt {} -> {}", old.preempt, new.preempt));
    }
    let added: Vec<String> = new
        .vips
        .iter()
        .filter(|v| !old.vips.contains(v))
        .map(|(a, l)| format!("+{a}/{l}"))
        .collect();
    let removed: Vec<String> = old
        .vips
        .iter()
        .filter(|v| !new.vips.contains(v))
        .map(|(a, l)| format!("-{a}/{l}"))
        .collect();
    if !added.is_empty() || !removed.is_empty() {
        out.push(format!("VIPs {}", [added, removed].concat().join(" ")));
    }
    if old.password != new.password {
        out.push("password".into());
    }
    if old.auth != new.auth {
        out.push(format!("auth {} -> {}", old.auth, new.auth));
    }
    if old.groups != new.groups {
        out.push(format!("groups {:?} -> {:?}", old.groups, new.groups));
    }
    if (&old.up_script, &old.down_script) != (&new.up_script, &new.down_script) {
        out.push("hooks".into());
    }
    if old.garp_count != new.garp_count {
        out.push(format!(
            "garp_count {} -> {}",
            old.garp_count, new.garp_count
        ));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hmac::Sequence;
    use std::net::Ipv4Addr;

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn vhid(auth: AuthMode) -> Vhid {
        balanced(1, auth, None)
    }

    /// VHID `n` with the password "pw" and VIP 192.0.2.50 (in a balanced group if given).
    fn balanced(n: u8, auth: AuthMode, balance: Option<Balance>) -> Vhid {
        let (plan, link, own) = parts(n, auth, balance);
        Vhid::new(plan, &link, &[own], VipPlacement::Loopback, false).unwrap()
    }

    /// What [`balanced`] makes its VHID of: the plan, the link and its address.
    fn parts(n: u8, auth: AuthMode, balance: Option<Balance>) -> (Plan, Link, Address) {
        let plan = Plan {
            interface: "eth0".into(),
            vhid: n,
            vips: vec![(Ipv4Addr::new(192, 0, 2, 50).into(), 24)],
            timing: Timing::Carp {
                advbase: 1,
                advskew: 0,
            },
            preempt: false,
            password: b"pw".to_vec(),
            auth,
            groups: Vec::new(),
            peers: Vec::new(),
            mac: MacMode::Virtual,
            garp_count: 1,
            src: Some(Ipv4Addr::new(192, 0, 2, 1).into()),
            up_script: None,
            down_script: None,
            balance,
        };
        (plan, link(), own())
    }

    fn link() -> Link {
        Link {
            index: 2,
            name: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 1],
            up: true,
            veth: false,
        }
    }

    /// The interface's own address, 192.0.2.1/24.
    fn own() -> Address {
        Address {
            addr: Ipv4Addr::new(192, 0, 2, 1).into(),
            prefix: 24,
            vip: false,
        }
    }

    /// Applies the plan of VHID 1 in `auth` mode by a reload at `now_ns`.
    fn switch(v: &mut Vhid, auth: AuthMode, now_ns: u64) {
        let (plan, link, own) = parts(1, auth, None);
        let fresh = Vhid::new(plan, &link, &[own], VipPlacement::Loopback, false).unwrap();
        v.reconfigure(fresh, now_ns);
    }

    fn advert(counter: u64) -> AdvertEvent {
        let mut ev = AdvertEvent {
            counter,
            vhid: 1,
            version: wire::VERSION,
            family: 4,
            advbase: 1,
            advskew: 100,
            ..Default::default()
        };
        ev.src[..4].copy_from_slice(&[192, 0, 2, 2]);
        ev
    }

    /// An advert a strict digest verified.
    fn strict(counter: u64) -> AdvertEvent {
        AdvertEvent {
            strict: 1,
            ..advert(counter)
        }
    }

    fn counter_of(out: &[Outgoing]) -> u64 {
        let Outgoing::Frame(frame) = &out[0] else {
            panic!("{out:?}")
        };
        // Ethernet 14 + IPv4 20: the CARP header.
        wire::CarpHeader::decode(&frame[34..]).unwrap().counter
    }

    /// A strict VHID hears any counter the program let through (it checked it against
    /// its record of the source), however far from any clock, and adopts none: its own
    /// counters are the agent's sequence's.
    #[test]
    fn strict_adverts_are_heard_and_counted_by_the_sequence() {
        let mut v = vhid(AuthMode::Strict);
        assert!(v.receive(&strict(1)).is_some());
        assert!(v.receive(&strict(u64::MAX)).is_some());
        let row = v.status(0);
        assert_eq!((row.adverts_received, row.auth), (2, AuthMode::Strict));
        let timing = v.machine.advertised();
        let mut seq = Sequence::new(9);
        let out = v.adverts(
            timing,
            || seq.next(),
            || panic!("strict counters are not random"),
        );
        assert_eq!(counter_of(&out), 9 << 32);
        assert_eq!(
            counter_of(&v.adverts(timing, || seq.next(), || 0)),
            (9 << 32) + 1
        );
        // A sequence used up: nothing goes out rather than a counter sent before.
        assert_eq!(v.adverts(timing, || None, || 0), vec![]);
    }

    /// BSD mode takes any counter and counts on from the peer's (carp_input_c).
    #[test]
    fn bsd_adverts_carry_any_counter() {
        let mut v = vhid(AuthMode::Bsd);
        assert!(v.receive(&advert(5)).is_some());
        let timing = v.machine.advertised();
        let out = v.adverts(
            timing,
            || panic!("BSD counters are not the sequence's"),
            || 99,
        );
        assert_eq!(counter_of(&out), 6);
    }

    /// A switch of `auth` applies in place, as a password change: the other mode's digest
    /// stays accepted for [`PREVIOUS_AUTH_NS`], and adverts it verifies are heard by their
    /// own mode's rules while the switch rolls through the group. The BSD counter starts
    /// afresh; strict adverts go on with the agent's sequence, so strict → bsd → strict
    /// sends no counter twice.
    #[test]
    fn an_auth_switch_keeps_the_other_modes_digest_for_a_while() {
        let mut seq = Sequence::new(3);
        let mut v = vhid(AuthMode::Bsd);
        assert!(v.receive(&advert(u64::MAX - 7)).is_some());
        let bsd = v.keys().unwrap();
        assert!(!bsd.auth.is_strict());
        assert!(v.takes(&parts(1, AuthMode::Strict, None).0));
        switch(&mut v, AuthMode::Strict, 10);
        let keys = v.keys().unwrap();
        assert!(keys.auth.is_strict());
        assert_eq!(
            (keys.auth_previous, keys.previous_until),
            (bsd.auth, 10 + PREVIOUS_AUTH_NS)
        );
        let timing = v.machine.advertised();
        assert_eq!(counter_of(&v.adverts(timing, || seq.next(), || 0)), 3 << 32);
        // A backup not yet switched: heard, its counter not adopted.
        assert!(v.receive(&advert(3)).is_some());
        assert_eq!(
            counter_of(&v.adverts(timing, || seq.next(), || 0)),
            (3 << 32) + 1
        );
        // And back: the strict digest stays accepted.
        switch(&mut v, AuthMode::Bsd, 20);
        let keys = v.keys().unwrap();
        assert!(!keys.auth.is_strict() && keys.auth_previous.is_strict());
        assert!(v.receive(&strict(5)).is_some());
        assert_eq!(counter_of(&v.adverts(timing, || seq.next(), || 99)), 99);
        // Strict again: on from where the sequence is.
        switch(&mut v, AuthMode::Strict, 30);
        assert_eq!(
            counter_of(&v.adverts(timing, || seq.next(), || 0)),
            (3 << 32) + 2
        );
        let row = v.status(0);
        assert_eq!((row.auth, row.adverts_received), (AuthMode::Strict, 3));
    }

    /// An OpenBSD host of a `balancing ip` group (`carpnodes 1:0,2:0,3:0`) verifies our
    /// adverts: each digest is the one ip_carp.c 1.270 builds, derived here from its steps.
    /// carp_set_vhe_enaddr gives the leader (the first, lowest VHID) 01:00:5e:00:01:vhid
    /// and the others 00:00:5e:00:01:vhid; carp_set_enaddr copies the leader's into the
    /// carp interface's lladdr (`ac_enaddr`, all zero before); carp_hmac_prepare_ctx hashes
    /// version and type, then `ac_enaddr` if `!sc_realmac && vhe_leader && ac_enaddr !=
    /// vhe_enaddr`, then the vhid and the VIPs; carp_hmac_generate appends the counter.
    #[test]
    fn balanced_adverts_carry_the_digest_openbsd_builds() {
        use hmac::{Hmac, KeyInit as _, Mac as _};
        let vhids = vec![1, 2, 3];
        let carpdev = [2, 0, 0, 0, 0, 1];
        let leader_enaddr = [1, 0, 0x5e, 0, 1, 1];
        let ac_enaddr = leader_enaddr;
        for (index, &n) in vhids.iter().enumerate() {
            let group = Balance {
                vhids: vhids.clone(),
                index,
            };
            let mut v = balanced(n, AuthMode::Bsd, Some(group));
            let out = v.adverts(v.machine.advertised(), || None, || 0x0102_0304_0506_0708);
            let [Outgoing::Frame(frame)] = &out[..] else {
                panic!("{out:?}")
            };
            let header =
                wire::CarpHeader::decode(&frame[frame.len() - wire::HEADER_LEN..]).unwrap();
            let vhe_enaddr = [u8::from(index == 0), 0, 0x5e, 0, 1, n];
            let realmac = carpdev == ac_enaddr;
            let mut md = Hmac::<sha1::Sha1>::new_from_slice(b"pw").unwrap();
            md.update(&[2, 1]);
            if !realmac && index == 0 && ac_enaddr != vhe_enaddr {
                md.update(&ac_enaddr);
            }
            md.update(&[n, 192, 0, 2, 50]);
            md.update(&header.counter.to_be_bytes());
            let want: [u8; 20] = md.finalize().into_bytes().into();
            assert_eq!(header.digest, want, "vhid {n}");
            // Never from the multicast group MAC (OpenBSD carp_start).
            assert_eq!(frame[6..12], wire::virtual_mac(n), "vhid {n}");
            let entry = v.entry(carpdev, NOW);
            assert_eq!(entry.mac, vhe_enaddr, "vhid {n}");
            assert!(entry.flags.balanced && !entry.flags.vmac);
            assert_eq!(v.vip_entries().len(), usize::from(index == 0));
        }
    }

    /// OpenBSD's carp_update_lsmask: bit i for each of the group's VHIDs that is MASTER
    /// here, the group's size whatever the states, and the masters' lease.
    #[test]
    fn a_groups_entry_has_its_masters_bits_and_their_lease() {
        let group = |index| Balance {
            vhids: vec![1, 2, 3],
            index,
        };
        let mut vs: Vec<Vhid> = (0..3)
            .map(|i| balanced(i as u8 + 1, AuthMode::Bsd, Some(group(i))))
            .collect();
        for v in &mut vs {
            v.machine.handle(Duration::ZERO, Event::LinkUp);
        }
        // VHIDs 1 and 3 hear nobody: MASTER after their master-down time.
        for i in [0, 2] {
            vs[i].machine.handle(Duration::from_secs(10), Event::Timer);
            assert_eq!(vs[i].state(), State::MASTER);
        }
        let mac = [2, 0, 0, 0, 0, 1];
        let e = balance_entry(&group(0), &vs, mac, NOW);
        assert_eq!((e.mask, e.count, e.if_mac), (0b101, 3, mac));
        assert_eq!(e.master_until, vs[0].lease_until(NOW));
        let backup = balance_entry(&group(0), &vs[1..2], mac, NOW);
        assert_eq!((backup.mask, backup.count, backup.master_until), (0, 3, 0));
    }

    /// Upkeep asks back what something else removed from a master: a tagged VIP with
    /// its route, the route alone, routes after an address left the interface; nothing
    /// while BACKUP (the agent's own removals), nothing for an untagged address equal to
    /// a VIP (a host address the agent never touches), nothing for other routes.
    #[test]
    fn upkeep_puts_back_what_a_master_lost() {
        let v = vhid(AuthMode::Bsd);
        let vips = vec![
            ("192.0.2.50".parse().unwrap(), 24),
            ("198.51.100.50".parse().unwrap(), 24),
        ];
        let mut v = Vhid::new(
            Plan { vips, ..v.plan },
            &link(),
            &[own()],
            VipPlacement::Loopback,
            false,
        )
        .unwrap();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let (on_subnet, routed) = (
            Restore::Vip(a("192.0.2.50"), 24),
            Restore::Route(a("198.51.100.50"), 24),
        );
        assert_eq!(v.routed(), &[(a("198.51.100.50"), 24)]);
        let gone = |addr: &str, vip: bool, index: u32| Removed::Address {
            index,
            addr: a(addr),
            vip,
        };
        let route = |net: &str, prefix: u8, index: u32| Removed::Route {
            index,
            net: a(net),
            prefix,
        };
        let all = [
            gone("192.0.2.50", true, 1),
            gone("198.51.100.50", true, 1),
            gone("192.0.2.1", false, 2),
            route("198.51.100.0", 24, 2),
        ];
        for r in &all {
            assert_eq!(v.upkeep(r), vec![], "BACKUP: {r:?}");
        }
        v.machine.handle(Duration::ZERO, Event::LinkUp);
        v.machine.handle(Duration::from_secs(10), Event::Timer);
        assert_eq!(v.state(), State::MASTER);
        let want = [
            vec![on_subnet],
            vec![Restore::Vip(a("198.51.100.50"), 24), routed],
            vec![routed],
            vec![routed],
        ];
        for (r, want) in all.iter().zip(want) {
            assert_eq!(v.upkeep(r), want, "{r:?}");
        }
        for r in [
            gone("192.0.2.50", false, 1),
            gone("192.0.2.60", true, 1),
            gone("192.0.2.1", false, 3),
            route("198.51.100.0", 25, 2),
            route("198.51.100.0", 24, 3),
            route("203.0.113.0", 24, 2),
        ] {
            assert_eq!(v.upkeep(&r), vec![], "{r:?}");
        }
        v.restored();
        assert_eq!(v.status(0).vips_restored, 1);
        assert_eq!(
            routed.to_string(),
            "route to 198.51.100.0/24 (for VIP 198.51.100.50)"
        );
    }
}
