//! The per-VHID state machine, pure and deterministic: the caller injects the time and the
//! events (timers, verified adverts, link changes, demotion, operator commands) and carries
//! out the returned [`Action`]s. No sockets, no clocks, no kernel.
//!
//! CARP mode mirrors FreeBSD `sys/netinet/ip_carp.c`; each rule names the function it
//! follows. VRRPv3 mode follows RFC 5798 section 6.4. Both share one shape: INIT, BACKUP
//! with a master-down timer, MASTER with an advertisement timer.

use carp_common::{vrrp, wire};
use std::{net::IpAddr, time::Duration};

pub use carp_common::State;

/// What a VHID advertises, and what a received advert claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// CARP: interval `advbase` seconds plus `advskew`/256 s; smaller is more preferred.
    Carp { advbase: u8, advskew: u8 },
    /// VRRPv3: priority (255 owns the addresses, 0 means "stopping") and the advert
    /// interval in centiseconds; higher priority is more preferred.
    Vrrp3 { priority: u8, interval_cs: u16 },
}

/// In the status's words, for the log.
impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timing::Carp { advbase, advskew } => {
                write!(f, "carp advbase {advbase} advskew {advskew}")
            }
            Timing::Vrrp3 {
                priority,
                interval_cs,
            } => write!(
                f,
                "vrrp3 priority {priority} interval {}ms",
                u32::from(*interval_cs) * 10
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub timing: Timing,
    /// Take over from a less preferred master (FreeBSD `net.inet.carp.preempt`, default
    /// off; VRRP's Preempt_Mode, default on).
    pub preempt: bool,
    /// The address adverts are sent from. Adverts from it are our own and ignored; ties
    /// are broken against it.
    pub local_addr: IpAddr,
    /// The address adverts of the other family go out from, if any (a CARP VHID with VIPs
    /// or unicast peers of both families): ties with a sender of that family are broken
    /// against it, so both sides compare the addresses actually on the wire.
    pub local_other: Option<IpAddr>,
    /// `local_addr` is a VIP that peers may send from too (see
    /// `addrs::Sources::from_vip`): adverts from it are not our own.
    pub shared_source: bool,
    /// Yielding to a strictly more preferred master, send one advert of our own, so that
    /// a master that won without hearing us (its advert crossed a healed partition first)
    /// hears a less preferred one and announces itself (see [`Action::Announce`]): with
    /// `mac = "interface"` the clients still hold our MAC. Never with a virtual MAC, which
    /// the advert would pull back to our switch port.
    pub advert_on_yield: bool,
    /// Leaving MASTER with a peer heard, go on answering the VIPs until the arriving
    /// master has announced itself (see [`Machine::answering`]). Not for a balanced
    /// group, whose share two hosts holding it at once would both accept.
    pub hand_over: bool,
}

impl Config {
    /// Our address of `peer`'s family, to compare it with.
    fn local_for(&self, peer: IpAddr) -> IpAddr {
        self.local_other
            .filter(|o| o.is_ipv6() == peer.is_ipv6())
            .unwrap_or(self.local_addr)
    }
}

/// An authenticated advert, as the machine needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    pub src: IpAddr,
    pub timing: Timing,
    /// CARP byte 4: OpenBSD's demotion count of the sender (`carp_group_demote_count`);
    /// FreeBSD and ucarp send 0, and so do we, folding demotion into advskew instead.
    pub demote: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Time passed; fires whichever timer is due.
    Timer,
    Advert(Advert),
    /// The interface is up with carrier and the VIPs are configured.
    LinkUp,
    LinkDown,
    /// The effective demotion for this VHID changed (signed; positive is less preferred).
    Demotion(i32),
    /// Operator `state backup` / `state master`.
    Force(State),
    /// A VIP something else removed could not be put back: a MASTER must not go on
    /// claiming it.
    VipLost,
    /// The agent is stopping: a MASTER bows out and hands over (see
    /// [`Machine::answering`]).
    Shutdown,
    /// Stop answering now, handover or not: the agent exits or the VHID goes away.
    Release,
}

/// Why a transition happened, for logs, hooks and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    LinkUp,
    LinkDown,
    MasterDown,
    Preempt,
    /// The master announced an interval so long it is certain to time out (BSD bow-out).
    MasterBowedOut,
    /// The master announced an OpenBSD demotion count above ours (0).
    MasterDemoted,
    /// A master heard an equal or more preferred master.
    PreferredMaster,
    /// VRRP: a master of equal priority and lower address went on advertising for a
    /// master-down interval (FreeBSD 15 breaks no ties), so we yield instead.
    PeerKeptMastership,
    /// VRRP: the priority is 255, the addresses are ours.
    Owner,
    Forced,
    /// A VIP something else removed could not be put back.
    VipLost,
    Shutdown,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reason::LinkUp => "link up",
            Reason::LinkDown => "link down",
            Reason::MasterDown => "master timed out",
            Reason::Preempt => "preempting a less preferred master",
            Reason::MasterBowedOut => "master bowed out",
            Reason::MasterDemoted => "master is demoted",
            Reason::PreferredMaster => "more preferred master heard",
            Reason::PeerKeptMastership => "an equal master did not yield",
            Reason::Owner => "address owner",
            Reason::Forced => "operator request",
            Reason::VipLost => "a VIP could not be put back",
            Reason::Shutdown => "shutdown",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send one advert with this timing now (the caller adds counter and digest).
    Advertise(Timing),
    /// The state changed. On MASTER the caller adds the VIPs and sends gratuitous ARP and
    /// unsolicited NA; on leaving MASTER it removes them.
    Transition {
        from: State,
        to: State,
        reason: Reason,
    },
    /// Send gratuitous ARP and unsolicited NA for the VIPs again, staying MASTER: another
    /// master was heard, so clients and switches may point at it (see
    /// [`Machine::reannounce`]).
    Announce,
    /// A handover is over (see [`Machine::answering`]): stop answering the VIPs, which
    /// the caller kept since the transition out of MASTER, and run the down hook.
    Withdraw,
}

/// One VHID's election.
#[derive(Clone, Debug)]
pub struct Machine {
    cfg: Config,
    state: State,
    demotion: i32,
    /// VRRP's Master_Adver_Interval, learned from the master's adverts.
    master_interval_cs: u16,
    advert_at: Option<Duration>,
    master_down_at: Option<Duration>,
    /// Adverts from our own address, ignored (looped back by a switch or a second agent).
    looped: u64,
    /// VRRP MASTER: since when an equal-priority master that should yield has not.
    tie_since: Option<Duration>,
    /// When gratuitous ARP / unsolicited NA last went out (becoming MASTER, or
    /// [`Machine::reannounce`]): at most one re-announcement per advert interval.
    announced_at: Option<Duration>,
    /// Re-announcements made, and ones the rate limit held back.
    reannounced: u64,
    reannounce_limited: u64,
    /// Handing over after leaving MASTER: until when it goes on answering the VIPs, unless
    /// the arriving master is heard first.
    leaving: Option<Duration>,
    /// Another host's advert was heard since start: there is someone to hand over to.
    peer_heard: bool,
}

/// How long a leaving master goes on answering after it heard the arriving one. That
/// master sends its gratuitous ARP / unsolicited NA before its advert, from the same tick
/// and socket (the agent carries out a transition before the advert that follows it), so
/// they are on the segment already; this covers the clients' frames sent before the
/// announcement reached them, still in flight or queued on a loaded host. Short, as
/// both answer ARP and NS meanwhile: a virtual MAC's switch port follows the last reply.
pub const HANDOVER_GRACE: Duration = Duration::from_millis(5);

/// 1/256 s in the units CARP compares in.
const SKEW_UNITS: u32 = 256;
/// Seconds as CARP compares them: advbase * 256 + advskew.
fn carp_units(advbase: u8, advskew: u32) -> u32 {
    u32::from(advbase) * SKEW_UNITS + advskew
}
fn carp_duration(units: u32) -> Duration {
    Duration::from_micros(u64::from(units) * 1_000_000 / u64::from(SKEW_UNITS))
}
/// The order in which ucarp breaks CARP ties: it compares the raw `in_addr` words, which
/// on the little-endian hosts it runs on orders IPv4 addresses by their last octet first.
/// The lower one keeps mastership. IPv6 (which ucarp does not speak) compares bytewise.
fn ucarp_order(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from_le_bytes(a.octets())),
        IpAddr::V6(a) => u128::from_be_bytes(a.octets()),
    }
}

fn centiseconds(cs: u32) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}

impl Machine {
    pub fn new(cfg: Config) -> Self {
        let master_interval_cs = match cfg.timing {
            Timing::Vrrp3 { interval_cs, .. } => interval_cs,
            Timing::Carp { .. } => 0,
        };
        Self {
            cfg,
            state: State::INIT,
            demotion: 0,
            master_interval_cs,
            advert_at: None,
            master_down_at: None,
            looped: 0,
            tie_since: None,
            announced_at: None,
            reannounced: 0,
            reannounce_limited: 0,
            leaving: None,
            peer_heard: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// New settings for a running VHID (a reload; FreeBSD's `ifconfig em0 vhid 1 advskew
    /// 50`): state and timers stay, the new timing goes out with the next advert and
    /// applies to the next master-down wait, as carp_ioctl_set's changes do.
    pub fn reconfigure(&mut self, cfg: Config) {
        if let Timing::Vrrp3 { interval_cs, .. } = cfg.timing
            && self.state != State::BACKUP
        {
            self.master_interval_cs = interval_cs;
        }
        self.cfg = cfg;
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The demotion last fed in.
    pub fn demotion(&self) -> i32 {
        self.demotion
    }

    /// Adverts from our own address ignored so far.
    pub fn looped(&self) -> u64 {
        self.looped
    }

    /// Re-announcements made so far ([`Action::Announce`]).
    pub fn reannounced(&self) -> u64 {
        self.reannounced
    }

    /// Re-announcements the rate limit held back so far.
    pub fn reannounce_limited(&self) -> u64 {
        self.reannounce_limited
    }

    /// When the next timer fires, if one is armed.
    pub fn deadline(&self) -> Option<Duration> {
        [self.advert_at.or(self.master_down_at), self.leaving]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the VIPs are answered here: as MASTER, and while handing over after
    /// leaving it. Make-before-break: a master that leaves (shutdown, `set-state backup`,
    /// yielding to a preferred master) bows out, then goes on answering until it hears
    /// the arriving master, whose announcement precedes its advert, plus
    /// [`HANDOVER_GRACE`]; or, if none is heard, for [`Machine::handover_bound`]. OpenBSD
    /// stops answering with the bow-out, before a backup has taken over (carp_ioctl:
    /// `sc_bow_out`, carp_vhe_send_ad_all, then carp_set_state_all(INIT)).
    pub fn answering(&self) -> bool {
        self.state == State::MASTER || self.leaving.is_some()
    }

    /// How long a leaving master answers at most. With a peer heard since start: the
    /// longest master-down time a peer can wait after our last advert, should the bow-out
    /// be lost (CARP: 3 x advbase plus an advskew of at most 255/256 s, a peer's not
    /// being known; VRRPv3: 3 x Master_Adver_Interval plus a Skew_Time below one
    /// interval). Backups are silent, so a master may never have heard the one it hands
    /// over to: then its [`Machine::lease`], as long as its program answers after any
    /// advert, which covers a backup's answer to the bow-out (at once in CARP, after a
    /// Skew_Time below one interval in VRRPv3) and keeps the stop of a lone host short.
    pub fn handover_bound(&self) -> Duration {
        if !self.peer_heard {
            return self.lease();
        }
        match self.cfg.timing {
            Timing::Carp { advbase, .. } => {
                carp_duration((3 * u32::from(advbase) + 1) * SKEW_UNITS)
            }
            Timing::Vrrp3 { interval_cs, .. } => centiseconds(4 * u32::from(interval_cs)),
        }
    }

    /// The timing our adverts carry now, demotion applied.
    pub fn advertised(&self) -> Timing {
        match self.cfg.timing {
            // DEMOTE_ADVSKEW: advskew + demotion clamped to 0..=CARP_MAXSKEW.
            Timing::Carp { advbase, .. } => Timing::Carp {
                advbase,
                advskew: self.demoted_skew() as u8,
            },
            Timing::Vrrp3 { interval_cs, .. } => Timing::Vrrp3 {
                priority: self.priority(),
                interval_cs,
            },
        }
    }

    /// How long the XDP program may go on answering as MASTER after an advert of ours:
    /// the advert interval plus one advbase (CARP) or interval (VRRPv3) for a late timer.
    /// A backup waits at least 3 x advbase (3 x interval) after our last advert, and a
    /// CARP interval stays under advbase + 1 s, so a frozen agent's lease runs out before
    /// any backup takes over.
    pub fn lease(&self) -> Duration {
        self.advert_interval()
            + match self.cfg.timing {
                Timing::Carp { advbase, .. } => Duration::from_secs(u64::from(advbase)),
                Timing::Vrrp3 { interval_cs, .. } => centiseconds(u32::from(interval_cs)),
            }
    }

    /// The interval between our adverts as MASTER.
    pub fn advert_interval(&self) -> Duration {
        match self.cfg.timing {
            // carp_send_ad_locked reschedules itself after advbase + DEMOTE_ADVSKEW/256.
            Timing::Carp { advbase, .. } => carp_duration(carp_units(advbase, self.demoted_skew())),
            Timing::Vrrp3 { interval_cs, .. } => centiseconds(u32::from(interval_cs)),
        }
    }

    /// How long a BACKUP waits without adverts before it takes over.
    pub fn master_down_interval(&self) -> Duration {
        match self.cfg.timing {
            // carp_setrun, BACKUP: 3 * advbase + advskew/256 with the configured advskew.
            Timing::Carp { advbase, advskew } => {
                carp_duration(3 * u32::from(advbase) * SKEW_UNITS + u32::from(advskew))
            }
            // RFC 5798 6.1: 3 * Master_Adver_Interval + Skew_Time.
            Timing::Vrrp3 { .. } => {
                centiseconds(3 * u32::from(self.master_interval_cs) + self.skew_time_cs())
            }
        }
    }

    fn demoted_skew(&self) -> u32 {
        match self.cfg.timing {
            Timing::Carp { advskew, .. } => i32::from(advskew)
                .saturating_add(self.demotion)
                .clamp(0, i32::from(wire::MAXSKEW))
                as u32,
            Timing::Vrrp3 { .. } => 0,
        }
    }

    /// VRRP priority with demotion subtracted, kept in 1..=254 unless it is the owner's 255
    /// and nothing demotes it.
    fn priority(&self) -> u8 {
        match self.cfg.timing {
            Timing::Vrrp3 { priority, .. } if self.demotion == 0 => priority,
            Timing::Vrrp3 { priority, .. } => i32::from(priority)
                .saturating_sub(self.demotion)
                .clamp(1, 254) as u8,
            Timing::Carp { .. } => 0,
        }
    }

    /// RFC 5798: Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256.
    fn skew_time_cs(&self) -> u32 {
        (256 - u32::from(self.priority())) * u32::from(self.master_interval_cs) / 256
    }

    /// Feeds one event at time `now`; returns what to do, in order.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Timer => self.on_timer(now, &mut out),
            Event::Advert(ad) => self.on_advert(now, ad, &mut out),
            Event::LinkUp => self.on_link_up(now, &mut out),
            Event::LinkDown => {
                // carp_sc_state: interface down -> INIT, timers stopped. The host-wide
                // demotion it also applies is the caller's (see `demotion`). Nothing is
                // answered on a link that is down: a handover ends.
                self.stop_timers();
                self.set_state(State::INIT, Reason::LinkDown, &mut out);
                self.withdraw(&mut out);
            }
            Event::Demotion(d) => {
                self.demotion = d;
                // carp_demote_adj queues carp_send_ad_all: every master advertises the new
                // skew at once, so preempting backups react without waiting.
                if self.state == State::MASTER {
                    self.advertise(now, &mut out);
                }
            }
            Event::Force(target) => self.on_force(now, target, &mut out),
            Event::VipLost => {
                if self.state == State::MASTER {
                    self.step_down(now, Reason::VipLost, &mut out);
                }
            }
            Event::Shutdown => {
                if self.state == State::MASTER {
                    out.push(Action::Advertise(self.bow_out()));
                    self.hand_over(now);
                }
                self.stop_timers();
                self.set_state(State::INIT, Reason::Shutdown, &mut out);
            }
            Event::Release => self.withdraw(&mut out),
        }
        out
    }

    /// The advert of a master that stops: OpenBSD and FreeBSD <= 7 bow out with advbase
    /// 255 / advskew 255 (carp_ifdetach, via carp_send_ad with the interface going) so
    /// backups take over at once; VRRP sends priority 0 (RFC 5798 6.4.3).
    fn bow_out(&self) -> Timing {
        match self.cfg.timing {
            Timing::Carp { .. } => Timing::Carp {
                advbase: wire::BOW_OUT,
                advskew: wire::BOW_OUT,
            },
            Timing::Vrrp3 { interval_cs, .. } => Timing::Vrrp3 {
                priority: vrrp::PRIORITY_STOP,
                interval_cs,
            },
        }
    }

    /// Goes on answering after leaving MASTER, when configured, for
    /// [`Machine::handover_bound`] at the latest (see [`Machine::answering`]).
    fn hand_over(&mut self, now: Duration) {
        if self.cfg.hand_over {
            self.leaving = Some(now + self.handover_bound());
        }
    }

    /// Hands over (see [`Machine::hand_over`]) to a master already heard, whose
    /// announcement went out before its advert: for [`HANDOVER_GRACE`].
    fn hand_over_to_heard(&mut self, now: Duration) {
        if self.cfg.hand_over {
            self.leaving = Some(now + HANDOVER_GRACE);
        }
    }

    /// Ends a handover: the VIPs are no longer answered here.
    fn withdraw(&mut self, out: &mut Vec<Action>) {
        if self.leaving.take().is_some() {
            out.push(Action::Withdraw);
        }
    }

    fn stop_timers(&mut self) {
        self.advert_at = None;
        self.master_down_at = None;
    }

    fn set_state(&mut self, to: State, reason: Reason, out: &mut Vec<Action>) {
        self.tie_since = None;
        if to == State::MASTER {
            // Master again while handing over: it never stopped answering.
            self.leaving = None;
        }
        if self.state != to {
            out.push(Action::Transition {
                from: self.state,
                to,
                reason,
            });
            self.state = to;
        }
    }

    /// Sends an advert now and schedules the next one (carp_send_ad_locked).
    fn advertise(&mut self, now: Duration, out: &mut Vec<Action>) {
        out.push(Action::Advertise(self.advertised()));
        self.advert_at = Some(now + self.advert_interval());
    }

    /// carp_setrun for BACKUP: stop advertising, (re)arm the master-down timer.
    fn arm_master_down(&mut self, now: Duration) {
        self.advert_at = None;
        self.master_down_at = Some(now + self.master_down_interval());
    }

    /// carp_master_down_locked: BACKUP -> MASTER, advertise at once, then on the timer.
    /// The caller announces the VIPs (carp_send_arp, carp_send_na) with the transition.
    fn become_master(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        self.master_down_at = None;
        self.set_state(State::MASTER, reason, out);
        self.advertise(now, out);
        self.announced_at = Some(now);
    }

    /// Leaves MASTER for BACKUP and waits one advert interval longer than a backup does
    /// before it may come back, so that another backup takes over even when we are the
    /// preferred node (a plain master-down timer would make us master again first).
    fn step_down(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        self.become_backup(now, reason, out);
        self.master_down_at = Some(now + self.master_down_interval() + self.advert_interval());
    }

    /// A MASTER that hears another master it wins against stays MASTER (carp_input_c,
    /// vrrp_input_c and OpenBSD's carp_proto_input_c, which do nothing more there), and
    /// here also advertises and announces its VIPs again as carp_master_down_locked does
    /// on taking over (carp_send_ad_locked, then carp_send_arp and carp_send_na): two
    /// masters mean a partition healed, and while it lasted the clients (`mac =
    /// "interface"`) or the switches (a virtual MAC) learned the other master, which now
    /// steps down. keepalived does the same by default (its master answers a lower
    /// priority advert with its own, and `garp_lower_prio_repeat` with gratuitous ARP).
    /// At most once per advert interval, so a flood of adverts cannot make us spray;
    /// whether it advertised.
    fn reannounce(&mut self, now: Duration, out: &mut Vec<Action>) -> bool {
        if self
            .announced_at
            .is_some_and(|at| now < at + self.advert_interval())
        {
            self.reannounce_limited += 1;
            return false;
        }
        self.announced_at = Some(now);
        self.reannounced += 1;
        self.advertise(now, out);
        out.push(Action::Announce);
        true
    }

    /// Yields to a more preferred master, with one parting advert when configured (see
    /// [`Config::advert_on_yield`]) and the winner is strictly more preferred: on a tie a
    /// FreeBSD master would yield to that advert in turn.
    /// The master it yields to announced itself before this advert, so it answers on for
    /// [`HANDOVER_GRACE`] only.
    fn yield_to(&mut self, now: Duration, strictly: bool, out: &mut Vec<Action>) {
        self.become_backup(now, Reason::PreferredMaster, out);
        self.hand_over_to_heard(now);
        if strictly && self.cfg.advert_on_yield {
            out.push(Action::Advertise(self.advertised()));
        }
    }

    fn become_backup(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        self.set_state(State::BACKUP, reason, out);
        self.arm_master_down(now);
    }

    fn on_link_up(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.state != State::INIT {
            return;
        }
        match self.cfg.timing {
            // RFC 5798 6.4.1: the owner starts as master.
            Timing::Vrrp3 { .. } if self.priority() == vrrp::PRIORITY_OWNER => {
                self.become_master(now, Reason::Owner, out)
            }
            // carp_setrun, INIT: "initialization complete" -> BACKUP, never straight to
            // MASTER; RFC 5798 6.4.1 likewise for non-owners.
            _ => {
                if let Timing::Vrrp3 { interval_cs, .. } = self.cfg.timing {
                    self.master_interval_cs = interval_cs;
                }
                self.become_backup(now, Reason::LinkUp, out)
            }
        }
    }

    fn on_timer(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.leaving.is_some_and(|t| t <= now) {
            self.withdraw(out);
        }
        if self.master_down_at.is_some_and(|t| t <= now) && self.state == State::BACKUP {
            // carp_master_down: BACKUP -> MASTER.
            self.become_master(now, Reason::MasterDown, out);
        } else if self.advert_at.is_some_and(|t| t <= now) && self.state == State::MASTER {
            self.advertise(now, out);
        }
    }

    fn on_force(&mut self, now: Duration, target: State, out: &mut Vec<Action>) {
        // carp_ioctl_set: only acts outside INIT and when the state differs.
        if self.state == State::INIT || self.state == target {
            return;
        }
        match target {
            // "user requested": stop advertising, BACKUP, arm master-down. Not sticky: the
            // timer makes us master again if nobody else advertises. Unlike ip_carp.c it
            // waits one advert interval longer, so that another backup takes over even
            // when we are the preferred node (FreeBSD's plain timer would fire first and
            // the operator's "state backup" would undo itself after 3 x advbase). Going
            // further, it bows out as a stopping master does, so that a backup takes over
            // at once, and hands over (see `Machine::answering`).
            State::BACKUP => {
                self.step_down(now, Reason::Forced, out);
                if self.cfg.hand_over {
                    out.push(Action::Advertise(self.bow_out()));
                    self.hand_over(now);
                }
            }
            State::MASTER => self.become_master(now, Reason::Forced, out),
            State::INIT => {}
        }
    }

    fn on_advert(&mut self, now: Duration, ad: Advert, out: &mut Vec<Action>) {
        if !self.cfg.shared_source
            && (ad.src == self.cfg.local_addr || Some(ad.src) == self.cfg.local_other)
        {
            self.looped += 1;
            return;
        }
        self.peer_heard = true;
        // An arriving master: its announcement went out before this advert.
        let stopping = match ad.timing {
            Timing::Carp { advbase, advskew } => {
                advbase == wire::BOW_OUT && advskew == wire::BOW_OUT
            }
            Timing::Vrrp3 { priority, .. } => priority == vrrp::PRIORITY_STOP,
        };
        if !stopping {
            self.leaving = self.leaving.map(|t| t.min(now + HANDOVER_GRACE));
        }
        match (self.cfg.timing, ad.timing) {
            (
                Timing::Carp { advbase, .. },
                Timing::Carp {
                    advbase: their_base,
                    advskew: their_skew,
                },
            ) => self.carp_advert(
                now,
                ad.src,
                advbase,
                carp_units(their_base, u32::from(their_skew)),
                ad.demote,
                out,
            ),
            (
                Timing::Vrrp3 { .. },
                Timing::Vrrp3 {
                    priority,
                    interval_cs,
                },
            ) => self.vrrp_advert(now, ad.src, priority, interval_cs, out),
            // A CARP advert for a VRRP VHID or the reverse: not ours to judge.
            _ => {}
        }
    }

    /// carp_input_c, after the digest verified. A non-zero demote byte comes from OpenBSD,
    /// whose carp_proto_input_c compares it before the intervals: a master yields only to
    /// a sender whose demote count is not above its own, and a backup takes over from a
    /// master whose count is above its own even without preemption. Ours is always 0.
    fn carp_advert(
        &mut self,
        now: Duration,
        src: IpAddr,
        advbase: u8,
        theirs: u32,
        demote: u8,
        out: &mut Vec<Action>,
    ) {
        let ours = carp_units(advbase, self.demoted_skew());
        match self.state {
            State::INIT => {}
            // "If we receive an advertisement from a master who's going to be more
            // frequent than us, go into BACKUP state." FreeBSD also yields on a tie, so
            // two masters with equal settings both step down and can keep colliding when
            // their timers stay in step; ucarp breaks the tie by address instead, and so
            // do we, in ucarp's order, so that against ucarp exactly one side yields and
            // against FreeBSD at least one does.
            State::MASTER => {
                let local = self.cfg.local_for(src);
                // A tie with a sender of our own (shared) address: both yield, as FreeBSD's
                // carp_input_c does on any tie, and the first to time out wins.
                if demote == 0
                    && (ours > theirs || (ours == theirs && ucarp_order(src) <= ucarp_order(local)))
                {
                    self.yield_to(now, ours > theirs, out);
                } else {
                    self.reannounce(now, out);
                }
            }
            State::BACKUP => {
                // "the master is going to advertise at such a low frequency that he's
                // guaranteed to time out": the bow-out advert lands here.
                // In u32: 3 x advbase overflows a byte above 85 (FreeBSD computes in int).
                let bowed_out = 3 * u32::from(advbase) * SKEW_UNITS + self.demoted_skew() < theirs;
                if demote > 0 {
                    self.become_master(now, Reason::MasterDemoted, out);
                } else if self.cfg.preempt && ours < theirs {
                    let reason = if bowed_out {
                        Reason::MasterBowedOut
                    } else {
                        Reason::Preempt
                    };
                    self.become_master(now, reason, out);
                } else if bowed_out {
                    self.become_master(now, Reason::MasterBowedOut, out);
                } else {
                    self.arm_master_down(now);
                }
            }
        }
    }

    /// RFC 5798 section 6.4.2 (BACKUP) and 6.4.3 (MASTER).
    fn vrrp_advert(
        &mut self,
        now: Duration,
        src: IpAddr,
        priority: u8,
        interval_cs: u16,
        out: &mut Vec<Action>,
    ) {
        let mine = self.priority();
        match self.state {
            State::INIT => {}
            State::BACKUP => {
                if priority == vrrp::PRIORITY_STOP {
                    // The master is stopping: take over after Skew_Time only.
                    self.master_down_at = Some(now + centiseconds(self.skew_time_cs()));
                } else if !self.cfg.preempt || priority >= mine {
                    self.master_interval_cs = interval_cs;
                    self.arm_master_down(now);
                }
                // Otherwise a lower priority master is ignored, so preemption happens when
                // the master-down timer fires.
            }
            State::MASTER => {
                if priority == vrrp::PRIORITY_STOP {
                    // Another master stopping: we were two (RFC 5798 6.4.3 has us
                    // advertise; the re-announcement does, unless it is held back).
                    if !self.reannounce(now, out) {
                        self.advertise(now, out);
                    }
                } else if priority > mine || (priority == mine && src > self.cfg.local_for(src)) {
                    self.master_interval_cs = interval_cs;
                    self.yield_to(now, priority > mine, out);
                } else if priority < mine {
                    self.reannounce(now, out);
                } else {
                    // RFC 5798 6.4.3 makes the lower address yield; FreeBSD 15's
                    // vrrp_input_c keeps mastership on equal priority. When the peer has
                    // not yielded for a master-down interval, yield to it, so a mixed
                    // group still ends with one master.
                    let since = *self.tie_since.get_or_insert(now);
                    if now.saturating_sub(since) >= self.master_down_interval() {
                        self.master_interval_cs = interval_cs;
                        self.become_backup(now, Reason::PeerKeptMastership, out);
                        self.hand_over_to_heard(now);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
