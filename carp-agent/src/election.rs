//! The per-VHID state machine, pure and deterministic: the caller injects the time and the
//! events (timers, verified adverts, link changes, demotion, operator commands) and carries
//! out the returned [`Action`]s. No sockets, no clocks, no kernel.
//!
//! CARP mode mirrors FreeBSD `sys/netinet/ip_carp.c`; each rule names the function it
//! follows. VRRPv3 mode follows RFC 5798 section 6.4. Both share one shape: INIT, BACKUP
//! with a master-down timer, MASTER with an advertisement timer.

use carp_common::{vrrp, wire};
use std::{net::IpAddr, time::Duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Init,
    Backup,
    Master,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        })
    }
}

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
    /// The agent is stopping.
    Shutdown,
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
}

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
            state: State::Init,
            demotion: 0,
            master_interval_cs,
            advert_at: None,
            master_down_at: None,
            looped: 0,
            tie_since: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
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

    /// When the next timer fires, if one is armed.
    pub fn deadline(&self) -> Option<Duration> {
        self.advert_at.or(self.master_down_at)
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
                // demotion it also applies is the caller's (see `demotion`).
                self.stop_timers();
                self.set_state(State::Init, Reason::LinkDown, &mut out);
            }
            Event::Demotion(d) => {
                self.demotion = d;
                // carp_demote_adj queues carp_send_ad_all: every master advertises the new
                // skew at once, so preempting backups react without waiting.
                if self.state == State::Master {
                    self.advertise(now, &mut out);
                }
            }
            Event::Force(target) => self.on_force(now, target, &mut out),
            Event::Shutdown => {
                if self.state == State::Master {
                    // OpenBSD and FreeBSD <= 7 bow out with advbase 255 / advskew 255 so
                    // backups take over at once; VRRP sends priority 0 (RFC 5798 6.4.3).
                    out.push(Action::Advertise(match self.cfg.timing {
                        Timing::Carp { .. } => Timing::Carp {
                            advbase: wire::BOW_OUT,
                            advskew: wire::BOW_OUT,
                        },
                        Timing::Vrrp3 { interval_cs, .. } => Timing::Vrrp3 {
                            priority: vrrp::PRIORITY_STOP,
                            interval_cs,
                        },
                    }));
                }
                self.stop_timers();
                self.set_state(State::Init, Reason::Shutdown, &mut out);
            }
        }
        out
    }

    fn stop_timers(&mut self) {
        self.advert_at = None;
        self.master_down_at = None;
    }

    fn set_state(&mut self, to: State, reason: Reason, out: &mut Vec<Action>) {
        self.tie_since = None;
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
    fn become_master(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        self.master_down_at = None;
        self.set_state(State::Master, reason, out);
        self.advertise(now, out);
    }

    fn become_backup(&mut self, now: Duration, reason: Reason, out: &mut Vec<Action>) {
        self.set_state(State::Backup, reason, out);
        self.arm_master_down(now);
    }

    fn on_link_up(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.state != State::Init {
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
        if self.master_down_at.is_some_and(|t| t <= now) && self.state == State::Backup {
            // carp_master_down: BACKUP -> MASTER.
            self.become_master(now, Reason::MasterDown, out);
        } else if self.advert_at.is_some_and(|t| t <= now) && self.state == State::Master {
            self.advertise(now, out);
        }
    }

    fn on_force(&mut self, now: Duration, target: State, out: &mut Vec<Action>) {
        // carp_ioctl_set: only acts outside INIT and when the state differs.
        if self.state == State::Init || self.state == target {
            return;
        }
        match target {
            // "user requested": stop advertising, BACKUP, arm master-down. Not sticky: the
            // timer makes us master again if nobody else advertises. Unlike ip_carp.c it
            // waits one advert interval longer, so that another backup takes over even
            // when we are the preferred node (FreeBSD's plain timer would fire first and
            // the operator's "state backup" would undo itself after 3 x advbase).
            State::Backup => {
                self.become_backup(now, Reason::Forced, out);
                self.master_down_at =
                    Some(now + self.master_down_interval() + self.advert_interval());
            }
            State::Master => self.become_master(now, Reason::Forced, out),
            State::Init => {}
        }
    }

    fn on_advert(&mut self, now: Duration, ad: Advert, out: &mut Vec<Action>) {
        if !self.cfg.shared_source
            && (ad.src == self.cfg.local_addr || Some(ad.src) == self.cfg.local_other)
        {
            self.looped += 1;
            return;
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
            State::Init => {}
            // "If we receive an advertisement from a master who's going to be more
            // frequent than us, go into BACKUP state." FreeBSD also yields on a tie, so
            // two masters with equal settings both step down and can keep colliding when
            // their timers stay in step; ucarp breaks the tie by address instead, and so
            // do we, in ucarp's order, so that against ucarp exactly one side yields and
            // against FreeBSD at least one does.
            State::Master => {
                let local = self.cfg.local_for(src);
                // A tie with a sender of our own (shared) address: both yield, as FreeBSD's
                // carp_input_c does on any tie, and the first to time out wins.
                if demote == 0
                    && (ours > theirs || (ours == theirs && ucarp_order(src) <= ucarp_order(local)))
                {
                    self.become_backup(now, Reason::PreferredMaster, out);
                }
            }
            State::Backup => {
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
            State::Init => {}
            State::Backup => {
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
            State::Master => {
                if priority == vrrp::PRIORITY_STOP {
                    self.advertise(now, out);
                } else if priority > mine || (priority == mine && src > self.cfg.local_for(src)) {
                    self.master_interval_cs = interval_cs;
                    self.become_backup(now, Reason::PreferredMaster, out);
                } else if priority == mine {
                    // RFC 5798 6.4.3 makes the lower address yield; FreeBSD 15's
                    // vrrp_input_c keeps mastership on equal priority. When the peer has
                    // not yielded for a master-down interval, yield to it, so a mixed
                    // group still ends with one master.
                    let since = *self.tie_since.get_or_insert(now);
                    if now.saturating_sub(since) >= self.master_down_interval() {
                        self.master_interval_cs = interval_cs;
                        self.become_backup(now, Reason::PeerKeptMastership, out);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const T0: Duration = Duration::ZERO;

    fn ip(last: u8) -> IpAddr {
        Ipv4Addr::new(192, 0, 2, last).into()
    }

    fn carp(advskew: u8, preempt: bool) -> Machine {
        Machine::new(Config {
            timing: Timing::Carp {
                advbase: 1,
                advskew,
            },
            preempt,
            local_addr: ip(1),
            local_other: None,
            shared_source: false,
        })
    }

    fn vrrp(priority: u8, preempt: bool) -> Machine {
        Machine::new(Config {
            timing: Timing::Vrrp3 {
                priority,
                interval_cs: 100,
            },
            preempt,
            local_addr: ip(1),
            local_other: None,
            shared_source: false,
        })
    }

    fn carp_ad(src: u8, advbase: u8, advskew: u8) -> Event {
        Event::Advert(Advert {
            src: ip(src),
            timing: Timing::Carp { advbase, advskew },
            demote: 0,
        })
    }

    fn vrrp_ad(src: u8, priority: u8) -> Event {
        Event::Advert(Advert {
            src: ip(src),
            timing: Timing::Vrrp3 {
                priority,
                interval_cs: 100,
            },
            demote: 0,
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn carp_timers_follow_ip_carp_c() {
        let m = carp(100, false);
        // 3 * 1 s + 100/256 s
        assert_eq!(m.master_down_interval(), Duration::from_micros(3_390_625));
        assert_eq!(m.advert_interval(), Duration::from_micros(1_390_625));
        let mut d = carp(250, false);
        // DEMOTE_ADVSKEW clamps to CARP_MAXSKEW even without demotion.
        assert_eq!(
            d.advertised(),
            Timing::Carp {
                advbase: 1,
                advskew: 240
            }
        );
        d.handle(T0, Event::Demotion(-300));
        assert_eq!(
            d.advertised(),
            Timing::Carp {
                advbase: 1,
                advskew: 0
            }
        );
    }

    #[test]
    fn init_goes_to_backup_then_master_on_timeout() {
        let mut m = carp(0, true);
        assert_eq!(m.handle(T0, Event::Timer), vec![]);
        let a = m.handle(T0, Event::LinkUp);
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Init,
                to: State::Backup,
                reason: Reason::LinkUp
            }]
        );
        assert_eq!(m.deadline(), Some(ms(3000)));
        assert_eq!(m.handle(ms(2999), Event::Timer), vec![]);
        let a = m.handle(ms(3000), Event::Timer);
        assert_eq!(
            a,
            vec![
                Action::Transition {
                    from: State::Backup,
                    to: State::Master,
                    reason: Reason::MasterDown
                },
                Action::Advertise(Timing::Carp {
                    advbase: 1,
                    advskew: 0
                }),
            ]
        );
        assert_eq!(m.deadline(), Some(ms(4000)));
        assert_eq!(
            m.handle(ms(4000), Event::Timer),
            vec![Action::Advertise(Timing::Carp {
                advbase: 1,
                advskew: 0
            })]
        );
    }

    #[test]
    fn backup_rearms_on_adverts_and_preempts_only_when_allowed() {
        for preempt in [false, true] {
            let mut m = carp(0, preempt);
            m.handle(T0, Event::LinkUp);
            // An equally preferred master: wait.
            assert_eq!(m.handle(ms(1000), carp_ad(2, 1, 0)), vec![]);
            assert_eq!(m.deadline(), Some(ms(4000)));
            // A less preferred master (advskew 100).
            let a = m.handle(ms(2000), carp_ad(2, 1, 100));
            assert_eq!(m.state() == State::Master, preempt, "{a:?}");
        }
    }

    #[test]
    fn master_yields_to_equal_or_better_and_keeps_against_worse() {
        let mut m = carp(50, false);
        m.handle(T0, Event::LinkUp);
        m.handle(ms(3200), Event::Timer);
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.handle(ms(3300), carp_ad(2, 1, 51)), vec![]);
        // A tie with a sender that ucarp orders after us (192.0.2.2 > .1): keep it.
        assert_eq!(m.handle(ms(3350), carp_ad(2, 1, 50)), vec![]);
        // A tie with 192.0.3.0, which ucarp orders first (last octet 0 < 1): yield.
        let a = m.handle(
            ms(3400),
            Event::Advert(Advert {
                src: Ipv4Addr::new(192, 0, 3, 0).into(),
                timing: Timing::Carp {
                    advbase: 1,
                    advskew: 50,
                },
                demote: 0,
            }),
        );
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Master,
                to: State::Backup,
                reason: Reason::PreferredMaster
            }]
        );
        assert_eq!(m.deadline(), Some(ms(3400) + m.master_down_interval()));
    }

    #[test]
    fn bow_out_makes_the_backup_master_at_once() {
        let mut master = carp(0, false);
        master.handle(T0, Event::LinkUp);
        master.handle(ms(3000), Event::Timer);
        let a = master.handle(ms(3500), Event::Shutdown);
        assert_eq!(
            a[0],
            Action::Advertise(Timing::Carp {
                advbase: 255,
                advskew: 255
            })
        );
        assert_eq!(master.state(), State::Init);
        assert_eq!(master.deadline(), None);

        for preempt in [false, true] {
            let mut backup = carp(100, preempt);
            backup.handle(T0, Event::LinkUp);
            let a = backup.handle(ms(10), carp_ad(2, 255, 255));
            assert_eq!(
                a[0],
                Action::Transition {
                    from: State::Backup,
                    to: State::Master,
                    reason: Reason::MasterBowedOut
                },
                "preempt {preempt}"
            );
        }
    }

    #[test]
    fn a_lease_ends_before_any_backup_takes_over() {
        for advbase in 1..=255u8 {
            for advskew in [0, 1, 100, 239, 240, 254] {
                for demotion in [0, 1000] {
                    let mut m = carp(0, false);
                    m.cfg.timing = Timing::Carp { advbase, advskew };
                    m.demotion = demotion;
                    // The quickest backup: advskew 0, master-down 3 x advbase.
                    let quickest = Duration::from_secs(3 * u64::from(advbase));
                    assert!(m.lease() > m.advert_interval());
                    assert!(m.lease() < quickest, "{advbase} {advskew} {demotion}");
                }
            }
        }
        for interval_cs in [1, 100, 4095] {
            let mut m = carp(0, false);
            m.cfg.timing = Timing::Vrrp3 {
                priority: 100,
                interval_cs,
            };
            assert!(m.lease() < 3 * centiseconds(u32::from(interval_cs)));
        }
    }

    #[test]
    fn demotion_advertises_at_once_and_hands_over_to_a_preempting_backup() {
        let mut a = carp(0, true);
        let mut b = Machine::new(Config {
            local_addr: ip(2),
            ..*carp(100, true).config()
        });
        a.handle(T0, Event::LinkUp);
        b.handle(T0, Event::LinkUp);
        a.handle(ms(3000), Event::Timer);
        let out = a.handle(ms(3100), Event::Demotion(240));
        assert_eq!(
            out,
            vec![Action::Advertise(Timing::Carp {
                advbase: 1,
                advskew: 240
            })]
        );
        // b (skew 100) hears a worse master and preempts.
        b.handle(ms(3100), carp_ad(1, 1, 240));
        assert_eq!(b.state(), State::Master);
        // a hears b's better advert and steps down.
        a.handle(ms(3101), carp_ad(2, 1, 100));
        assert_eq!(a.state(), State::Backup);
        // Negative demotion (FreeBSD PR 259528) makes a preferred again.
        a.handle(ms(4000), Event::Demotion(-50));
        assert_eq!(
            a.advertised(),
            Timing::Carp {
                advbase: 1,
                advskew: 0
            }
        );
    }

    #[test]
    fn link_down_goes_init_and_link_up_returns_to_backup() {
        let mut m = carp(0, false);
        m.handle(T0, Event::LinkUp);
        m.handle(ms(3000), Event::Timer);
        let a = m.handle(ms(3100), Event::LinkDown);
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Master,
                to: State::Init,
                reason: Reason::LinkDown
            }]
        );
        assert_eq!(m.deadline(), None);
        // Adverts and timers do nothing in INIT.
        assert_eq!(m.handle(ms(9000), Event::Timer), vec![]);
        assert_eq!(m.handle(ms(9000), carp_ad(2, 1, 200)), vec![]);
        m.handle(ms(9100), Event::LinkUp);
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn forced_states() {
        let mut m = carp(0, false);
        assert_eq!(
            m.handle(T0, Event::Force(State::Master)),
            vec![],
            "ignored in INIT"
        );
        m.handle(T0, Event::LinkUp);
        let a = m.handle(ms(10), Event::Force(State::Master));
        assert_eq!(
            a[0],
            Action::Transition {
                from: State::Backup,
                to: State::Master,
                reason: Reason::Forced
            }
        );
        let a = m.handle(ms(20), Event::Force(State::Backup));
        assert_eq!(
            a,
            vec![Action::Transition {
                from: State::Master,
                to: State::Backup,
                reason: Reason::Forced
            }]
        );
        // Not sticky: alone on the segment it comes back, one advert interval after any
        // other backup (master-down 3 s + skew) would have taken over.
        let back = ms(20) + m.master_down_interval() + m.advert_interval();
        m.handle(back - ms(1), Event::Timer);
        assert_eq!(m.state(), State::Backup);
        m.handle(back, Event::Timer);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn own_adverts_are_ignored() {
        let mut m = carp(100, false);
        m.handle(T0, Event::LinkUp);
        m.handle(ms(4000), Event::Timer);
        assert_eq!(m.handle(ms(4100), carp_ad(1, 1, 0)), vec![]);
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.looped(), 1);
    }

    #[test]
    fn vrrp_timers_follow_rfc5798() {
        let m = vrrp(100, true);
        // 3 * 100 cs + (156 * 100 / 256) cs = 360 cs
        assert_eq!(m.master_down_interval(), ms(3600));
        assert_eq!(m.advert_interval(), ms(1000));
    }

    #[test]
    fn vrrp_owner_starts_master_and_ties_go_to_the_higher_address() {
        let mut owner = vrrp(255, true);
        let a = owner.handle(T0, Event::LinkUp);
        assert_eq!(
            a[0],
            Action::Transition {
                from: State::Init,
                to: State::Master,
                reason: Reason::Owner
            }
        );

        let mut m = vrrp(100, true);
        m.handle(T0, Event::LinkUp);
        m.handle(ms(3600), Event::Timer);
        assert_eq!(m.state(), State::Master);
        // Same priority from a lower address: stay. From a higher one: yield.
        m.handle(ms(3700), vrrp_ad(0, 100));
        assert_eq!(m.state(), State::Master);
        m.handle(ms(3800), vrrp_ad(9, 100));
        assert_eq!(m.state(), State::Backup);
    }

    /// OpenBSD's carp_proto_input_c compares demote counts before intervals: a demoted
    /// OpenBSD master is taken over from without preemption, and its adverts never make
    /// our master yield, however good its interval.
    #[test]
    fn openbsd_demote_byte() {
        let demoted = |advskew| {
            Event::Advert(Advert {
                src: ip(2),
                timing: Timing::Carp {
                    advbase: 1,
                    advskew,
                },
                demote: 1,
            })
        };
        let mut backup = carp(100, false);
        backup.handle(T0, Event::LinkUp);
        let a = backup.handle(ms(10), demoted(0));
        assert_eq!(
            a[0],
            Action::Transition {
                from: State::Backup,
                to: State::Master,
                reason: Reason::MasterDemoted
            }
        );
        let mut master = carp(100, false);
        master.handle(T0, Event::LinkUp);
        master.handle(ms(3400), Event::Timer);
        assert_eq!(master.state(), State::Master);
        assert_eq!(master.handle(ms(3500), demoted(0)), vec![]);
        assert_eq!(master.state(), State::Master);
        // With demote 0 the same advert wins as usual.
        master.handle(ms(3600), carp_ad(2, 1, 0));
        assert_eq!(master.state(), State::Backup);
    }

    /// A FreeBSD 15 master of equal priority and lower address keeps advertising (its
    /// vrrp_input_c breaks no ties): after a master-down interval we yield to it.
    #[test]
    fn vrrp_yields_to_an_equal_master_that_does_not() {
        let mut m = vrrp(100, true);
        m.handle(T0, Event::LinkUp);
        m.handle(ms(3600), Event::Timer);
        assert_eq!(m.state(), State::Master);
        let mut t = ms(3700);
        while m.state() == State::Master {
            assert!(
                t < ms(3700) + m.master_down_interval() + ms(1000),
                "never yielded"
            );
            m.handle(t, vrrp_ad(0, 100));
            t += ms(1000);
        }
        assert!(t > ms(3700) + m.master_down_interval());
        // A lower-priority master never makes it yield.
        let mut m = vrrp(100, true);
        m.handle(T0, Event::LinkUp);
        m.handle(ms(3600), Event::Timer);
        for i in 0..20 {
            m.handle(ms(4000 + 1000 * i), vrrp_ad(0, 99));
        }
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn vrrp_backup_preemption_and_priority_zero() {
        let mut m = vrrp(150, true);
        m.handle(T0, Event::LinkUp);
        // A lower priority master is ignored; the timer then preempts it.
        m.handle(ms(1000), vrrp_ad(2, 100));
        let due = m.deadline().unwrap();
        assert!(due <= ms(3000) + ms(600));
        m.handle(due, Event::Timer);
        assert_eq!(m.state(), State::Master);

        let mut b = vrrp(100, false);
        b.handle(T0, Event::LinkUp);
        b.handle(ms(1000), vrrp_ad(2, 200));
        b.handle(ms(1500), vrrp_ad(2, 0));
        // Skew_Time = 156 * 100 / 256 = 60 cs.
        assert_eq!(b.deadline(), Some(ms(1500 + 600)));
        // Master hearing priority 0 answers with an advert at once.
        let a = m.handle(due + ms(10), vrrp_ad(2, 0));
        assert!(matches!(
            a[..],
            [Action::Advertise(Timing::Vrrp3 { priority: 150, .. })]
        ));
        // Stopping master sends priority 0.
        let a = m.handle(due + ms(20), Event::Shutdown);
        assert_eq!(
            a[0],
            Action::Advertise(Timing::Vrrp3 {
                priority: 0,
                interval_cs: 100
            })
        );
    }

    #[test]
    fn protocols_do_not_mix() {
        let mut m = carp(0, true);
        m.handle(T0, Event::LinkUp);
        assert_eq!(m.handle(ms(100), vrrp_ad(2, 1)), vec![]);
        assert_eq!(
            m.deadline(),
            Some(ms(3000)),
            "a VRRP advert does not re-arm a CARP backup"
        );
    }

    /// Two hosts on a lossless segment, adverts arriving 1 ms after they are sent, started
    /// at the same instant. Returns the machines after `secs` seconds.
    fn converge(m: [Machine; 2], secs: u64) -> [Machine; 2] {
        converge_from(m, [T0, T0], secs)
    }

    /// [`converge`] with the hosts' links coming up at `starts`.
    fn converge_from(mut m: [Machine; 2], starts: [Duration; 2], secs: u64) -> [Machine; 2] {
        let end = Duration::from_secs(secs);
        let mut queue: Vec<(Duration, usize, Event)> =
            vec![(starts[0], 0, Event::LinkUp), (starts[1], 1, Event::LinkUp)];
        loop {
            for (i, x) in m.iter().enumerate() {
                if let Some(t) = x.deadline()
                    && !queue
                        .iter()
                        .any(|(q, j, e)| *j == i && *q == t && *e == Event::Timer)
                {
                    queue.push((t, i, Event::Timer));
                }
            }
            queue.sort_by_key(|(t, i, _)| (*t, *i));
            if queue.is_empty() || queue[0].0 > end {
                return m;
            }
            let (now, i, ev) = queue.remove(0);
            let src = m[i].cfg.local_addr;
            for action in m[i].handle(now, ev) {
                if let Action::Advertise(timing) = action {
                    let ad = Advert {
                        src,
                        timing,
                        demote: 0,
                    };
                    queue.push((now + ms(1), 1 - i, Event::Advert(ad)));
                }
            }
            // Timers that are no longer armed are dropped at the next turn.
            queue.retain(|(t, j, e)| *e != Event::Timer || m[*j].deadline() == Some(*t));
        }
    }

    fn carp_host(last: u8, advbase: u8, advskew: u8, demotion: i32, preempt: bool) -> Machine {
        let mut m = Machine::new(Config {
            timing: Timing::Carp { advbase, advskew },
            preempt,
            local_addr: ip(last),
            local_other: None,
            shared_source: false,
        });
        m.handle(T0, Event::Demotion(demotion));
        m
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Every advbase 1-255, advskew 0-254 and demotion, on the real machine: FreeBSD's
        /// master-down time (carp_setrun: 3 x advbase + advskew/256 s), no overflow (tests
        /// build with overflow checks), and two hosts started together end with exactly
        /// one master.
        #[test]
        fn carp_full_ranges_converge_to_one_master(
            advbase in 1u8..=255,
            skews in (0u8..=254, 0u8..=254),
            demotions in (proptest::prelude::any::<i32>(), -300i32..300),
            preempt: bool,
        ) {
            let a = carp_host(1, advbase, skews.0, demotions.0, preempt);
            let b = carp_host(2, advbase, skews.1, demotions.1, preempt);
            proptest::prop_assert_eq!(
                a.master_down_interval(),
                Duration::from_micros(
                    (3 * u64::from(advbase) * 256 + u64::from(skews.0)) * 1_000_000 / 256
                )
            );
            let [a, b] = converge([a, b], 12 * u64::from(advbase));
            let masters = [&a, &b].iter().filter(|m| m.state() == State::Master).count();
            proptest::prop_assert_eq!(masters, 1, "{:?} {:?}", a, b);
        }

        /// Any advert a peer may send (every byte value, OpenBSD's advbase 0 and demote
        /// byte, VRRP priorities and intervals) is handled without a panic in every state.
        #[test]
        fn any_advert_is_handled(
            advbase in 1u8..=255,
            advskew in 0u8..=254,
            their_base: u8,
            their_skew: u8,
            demote: u8,
            priority: u8,
            interval_cs in 0u16..0x1000,
            at in 0u64..2_000_000,
        ) {
            let mut c = carp_host(1, advbase, advskew, 0, true);
            let mut v = vrrp(priority.max(1), true);
            for m in [&mut c, &mut v] {
                m.handle(T0, Event::LinkUp);
                for timing in [
                    Timing::Carp { advbase: their_base, advskew: their_skew },
                    Timing::Vrrp3 { priority, interval_cs },
                ] {
                    let ad = Event::Advert(Advert { src: ip(9), timing, demote });
                    m.handle(Duration::from_millis(at), ad);
                    m.handle(Duration::from_millis(at) + Duration::from_secs(800), Event::Timer);
                    m.handle(Duration::from_millis(at) + Duration::from_secs(801), ad);
                }
            }
        }
    }

    /// Two hosts with equal settings started at the same instant, for both families and
    /// both protocols: one master (FreeBSD's defaults, advskew 0 on both, as carp.sh
    /// starts them; the tie-break compares the addresses each side sends from).
    #[test]
    fn equal_hosts_started_together_elect_one_master() {
        let pairs: [(IpAddr, IpAddr); 3] = [
            (ip(1), ip(2)),
            (
                "2001:db8:1::2".parse().unwrap(),
                "2001:db8:2::2".parse().unwrap(),
            ),
            ("fe80::2".parse().unwrap(), "fe80::3".parse().unwrap()),
        ];
        for (a, b) in pairs {
            for timing in [
                Timing::Carp {
                    advbase: 1,
                    advskew: 0,
                },
                Timing::Vrrp3 {
                    priority: 100,
                    interval_cs: 100,
                },
            ] {
                let host = |local_addr| {
                    Machine::new(Config {
                        timing,
                        preempt: false,
                        local_addr,
                        local_other: None,
                        shared_source: false,
                    })
                };
                let [x, y] = converge([host(a), host(b)], 30);
                let masters = [&x, &y]
                    .iter()
                    .filter(|m| m.state() == State::Master)
                    .count();
                assert_eq!(masters, 1, "{a} {b} {timing}: {x:?} {y:?}");
            }
        }
    }

    /// Hosts whose interface has no address but the VIP send from the VIP (carp.sh
    /// `switch`): equal adverts from it are a peer's; both yield on the tie (FreeBSD's
    /// rule) and the first to time out wins, so hosts that did not start in the same
    /// millisecond end with one master for either protocol. (Started in lockstep they
    /// could collide forever, as FreeBSD's would: hence the warning to give the
    /// interface an address.)
    #[test]
    fn hosts_sending_from_the_same_vip_elect_one_master() {
        for timing in [
            Timing::Carp {
                advbase: 1,
                advskew: 0,
            },
            Timing::Vrrp3 {
                priority: 100,
                interval_cs: 100,
            },
        ] {
            let host = || {
                Machine::new(Config {
                    timing,
                    preempt: false,
                    local_addr: ip(1),
                    local_other: None,
                    shared_source: true,
                })
            };
            let [x, y] = converge_from([host(), host()], [T0, ms(137)], 30);
            let masters = [&x, &y]
                .iter()
                .filter(|m| m.state() == State::Master)
                .count();
            assert_eq!(masters, 1, "{timing}: {x:?} {y:?}");
            assert_eq!(x.looped() + y.looped(), 0);
        }
    }

    /// VRRPv3 at every priority pair and the shortest and longest intervals: one master.
    #[test]
    fn vrrp_priorities_converge_to_one_master() {
        for interval_cs in [1u16, 10, 100, 4095] {
            for (pa, pb) in [
                (1u8, 1u8),
                (100, 100),
                (100, 200),
                (254, 254),
                (255, 100),
                (1, 254),
            ] {
                let host = |last, priority| {
                    Machine::new(Config {
                        timing: Timing::Vrrp3 {
                            priority,
                            interval_cs,
                        },
                        preempt: true,
                        local_addr: ip(last),
                        local_other: None,
                        shared_source: false,
                    })
                };
                let secs = 12 * u64::from(interval_cs) / 100 + 2;
                let [a, b] = converge([host(1, pa), host(2, pb)], secs);
                let masters = [&a, &b]
                    .iter()
                    .filter(|m| m.state() == State::Master)
                    .count();
                assert_eq!(masters, 1, "{interval_cs} {pa} {pb}: {a:?} {b:?}");
            }
        }
    }
}
