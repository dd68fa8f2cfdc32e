//! The daemon. How carp works, as ip_carp.c opens with its design:
//!
//! - **Data path.** The XDP program (carp-ebpf) sees every frame on an interface first. It
//!   validates and authenticates adverts of configured VHIDs and hands them to the agent
//!   through a ring buffer (iface.rs reads it); it answers ARP and NS for VIPs of VHIDs
//!   that are MASTER with a live lease, and takes frames to their virtual MAC only then.
//!   It decides nothing.
//! - **State.** The agent owns the election: one `election::Machine` per VHID, inside
//!   `vhid::Vhid`, which also turns events into what to send and what to write. It writes
//!   each VHID's state and lease into `CARP_VHIDS` (its VIPs point there), and its
//!   digest keys, apart, into `CARP_KEYS`; the program owns `CARP_STATS` and
//!   `CARP_REPLAY`.
//! - **Clocks.** Machines run on the agent's monotonic time since start; leases in the
//!   maps are CLOCK_MONOTONIC nanoseconds, the program's `bpf_ktime_get_ns`, renewed by
//!   every advert sent, so a frozen agent's host goes quiet before a backup takes over.
//! - **Absence.** A VHID whose interface, or address to advertise from, is not there
//!   (yet: DHCP, a VLAN networkd makes later, a driver that loads late) is no mistake: it
//!   waits in INIT, shown in the status with what it waits for, while the others run, as
//!   keepalived keeps such an instance in FAULT. Link and address changes from netlink
//!   start it, the program attached to the interface then; an interface that goes away
//!   takes its program along and sends its VHIDs back to waiting (FreeBSD's
//!   carp_ifdetach).
//! - **This module.** The event loop (adverts, timers, link and address changes, the
//!   control socket, checks, hooks, signals), the work queue that feeds machines and
//!   carries out their actions, and shutdown; commands.rs answers the operator, reload.rs
//!   applies a new file.
//!   preflight.rs checks before anything is applied, iface.rs does the effects, checks.rs
//!   runs the health checks.

mod commands;
mod reload;

use crate::{
    addrs,
    checks::Checks,
    config::{Balance, MacMode, Plan},
    control::{self, Waiting},
    demotion::Demotion,
    election::{Action, Event, Reason, State, Timing},
    health,
    hmac::Sequence,
    hooks,
    iface::{Iface, Placement, ipv6_forwarding},
    metrics,
    netlink::{self, Change, Link, Netlink},
    preflight::{Options, vhids},
    send::{Memberships, PacketSocket},
    state,
    vhid::{Removed, Vhid},
    vlan_offload::{self, VlanFacts},
    xdp::DataPlane,
};
use anyhow::{Context as _, Result};
use carp_common::maps::AdvertEvent;
use futures_util::StreamExt as _;
use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

/// A VHID and the effects that live as long as it: its hook queue, its memberships.
struct Running {
    vhid: Vhid,
    hooks: hooks::Queue,
    _memberships: Memberships,
}

/// A VHID whose start cannot fail any more: what can (netlink, sockets, its settings
/// against the interface's addresses) is done. Dropped unstarted, it gives back what it
/// holds.
struct Ready {
    link: Link,
    vhid: Vhid,
    memberships: Memberships,
}

/// What starting VHIDs takes before it is applied: programs attached to interfaces not
/// served yet, and sockets holding interfaces promiscuous. Dropped unapplied, it gives
/// them back.
#[derive(Default)]
struct Staged {
    ifaces: BTreeMap<String, Iface>,
    promiscuous: BTreeMap<String, PacketSocket>,
}

/// A VHID that cannot run yet, and since when it waits for `why`.
struct Absent {
    plan: Plan,
    why: Waiting,
    since: Instant,
}

/// What the work queue does next.
enum Work {
    /// Feed one machine an event and carry out its actions.
    Feed(usize, Event),
    /// Tell every machine whose effective demotion changed (they advertise at once).
    Demotion,
}

struct Agent {
    start: Instant,
    options: Options,
    nl: Netlink,
    placement: Placement,
    ifaces: BTreeMap<String, Iface>,
    vhids: Vec<Running>,
    /// VHIDs waiting for their interface or address.
    absent: Vec<Absent>,
    demotion: Demotion<(String, u8)>,
    events_tx: mpsc::Sender<AdvertEvent>,
    hooks_tx: mpsc::UnboundedSender<(u8, hooks::Outcome)>,
    /// The agent's network namespace under /run/netns, for hooks (CARP_NETNS).
    netns: Option<String>,
    checks: Checks,
    /// Random source for the CARP counter until a peer is heard.
    rng: rand::rngs::ThreadRng,
    /// The counter of strict adverts, one for every strict VHID (see [`Sequence`]).
    sequence: Sequence,
    /// Transitions by (interface, vhid, reason), for metrics.
    transitions: BTreeMap<(String, u8, String), u64>,
    /// Hook runs by outcome, for metrics.
    hook_runs: BTreeMap<String, u64>,
    /// SIGTERM came: masters hand over, then the agent exits (see [`Agent::begin_stop`]).
    stopping: bool,
    /// Hook runs queued or running: a stop waits for every one, the down hooks it starts
    /// and an up hook still running alike.
    hooks_pending: usize,
}

/// Half of systemd's WatchdogSec, or an hour when there is no watchdog.
fn watchdog_interval() -> Duration {
    std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|u| u.parse::<u64>().ok())
        .map(|u| Duration::from_micros(u / 2))
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(3600))
}

/// Runs the agent until SIGTERM/SIGINT; strict adverts count with `sequence`, this start's
/// (`state::start`).
pub async fn run(options: Options, plans: Vec<Plan>, sequence: Sequence) -> Result<()> {
    let listener = control::listen(&options.config.agent.socket).await?;
    let socket_inode = control::inode(&options.config.agent.socket);
    let (control_tx, mut control_rx) = mpsc::channel(16);
    tokio::spawn(control::serve(listener, control_tx));
    let (events_tx, mut events_rx) = mpsc::channel(1024);
    let (hooks_tx, mut hooks_rx) = mpsc::unbounded_channel();
    let (checks_tx, mut checks_rx) = mpsc::unbounded_channel();
    let (scrape_tx, mut scrape_rx) = mpsc::channel::<metrics::Scrape>(4);
    if let Some(addr) = options.config.agent.metrics {
        metrics::serve(addr, scrape_tx).await?;
    }
    let mut demotion = Demotion::default();
    demotion.adjust(options.config.agent.demotion);
    let nl = Netlink::new()?;
    let mut agent = Agent {
        start: Instant::now(),
        placement: Placement::new(nl.clone(), options.config.agent.vips_on).await?,
        nl,
        options,
        ifaces: BTreeMap::new(),
        vhids: Vec::new(),
        absent: Vec::new(),
        demotion,
        events_tx,
        hooks_tx,
        netns: crate::netns::identify(),
        checks: Checks::new(checks_tx),
        rng: rand::rng(),
        sequence,
        transitions: BTreeMap::new(),
        hook_runs: BTreeMap::new(),
        stopping: false,
        hooks_pending: 0,
    };
    // Subscribed before the first look, so nothing that appears in between is missed.
    let mut changes = Box::pin(netlink::changes()?);
    let serving: Vec<&str> = plans.iter().map(|p| p.interface.as_str()).collect();
    DataPlane::sweep(&agent.options.config.agent.pin_dir, &serving);
    agent.add_vhids(plans).await?;
    agent.sync_checks().await;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut watchdog = tokio::time::interval(watchdog_interval());
    // Its first tick is at once: starting hundreds of VHIDs leaves temporaries too.
    let mut trim = tokio::time::interval(crate::memory::TRIM_INTERVAL);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(
        "carp-agent running: {}{}",
        vhids(agent.vhids.len()),
        match agent.absent.len() {
            0 => String::new(),
            n => format!(", {n} waiting for an interface or address"),
        }
    );
    loop {
        if agent.stopping && !agent.handing_over() {
            break;
        }
        let deadline = agent
            .vhids
            .iter()
            .filter_map(|r| r.vhid.machine.deadline())
            .min()
            .map(|d| agent.start + d)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(ev) = events_rx.recv() => agent.on_advert(ev).await,
            Some(change) = changes.next() => agent.on_change(change).await,
            Some((req, reply)) = control_rx.recv() => {
                let r = agent.on_control(req).await;
                let _ = reply.send(r);
            }
            Some((vhid, outcome)) = hooks_rx.recv() => {
                tracing::debug!(vhid, "hook finished: {outcome:?}");
                agent.hooks_pending -= 1;
                *agent.hook_runs.entry(format!("{outcome:?}").to_lowercase()).or_default() += 1;
            }
            Some(report) = checks_rx.recv() => agent.on_check(report).await,
            Some(reply) = scrape_rx.recv() => {
                let _ = reply.send(metrics::render(&agent.status(), &agent.transitions, &agent.hook_runs));
            }
            _ = tokio::time::sleep_until(deadline.into()) => agent.on_timer().await,
            _ = hup.recv(), if !agent.stopping => {
                if let Err(e) = agent.reload().await {
                    tracing::error!("reload failed, keeping the running configuration: {e:#}");
                }
            }
            _ = watchdog.tick() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = trim.tick() => crate::memory::trim_heap(),
            // A second signal stops at once.
            _ = term.recv() => {
                if agent.stopping {
                    break;
                }
                agent.begin_stop().await;
            }
            _ = int.recv() => {
                if agent.stopping {
                    break;
                }
                agent.begin_stop().await;
            }
        }
    }
    agent.shutdown(&mut hooks_rx).await;
    // Only our own socket: an agent started while this one stopped may have bound anew.
    let socket = &agent.options.config.agent.socket;
    if control::inode(socket) == socket_inode {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

impl Agent {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Starts the VHIDs of `plans` that can run; the others wait.
    async fn add_vhids(&mut self, plans: Vec<Plan>) -> Result<()> {
        for plan in plans {
            if let Some(why) = self.start_vhid(&plan).await? {
                self.wait(plan, why, None);
            }
        }
        self.drive(Work::Demotion).await;
        Ok(())
    }

    /// Starts a VHID when its interface and an address to advertise from are there;
    /// otherwise what it waits for. An error leaves nothing behind.
    async fn start_vhid(&mut self, plan: &Plan) -> Result<Option<Waiting>> {
        let mut staged = Staged::default();
        match self.prepare_start(plan, &mut staged).await? {
            Ok(ready) => {
                self.adopt(staged);
                self.launch(ready).await;
                Ok(None)
            }
            Err(why) => Ok(Some(why)),
        }
    }

    /// What can fail of starting `plan`: the interface and its addresses (not there: what
    /// it waits for), the program attached to it (into `staged` unless already attached),
    /// promiscuity, memberships, the settings against the addresses.
    async fn prepare_start(
        &self,
        plan: &Plan,
        staged: &mut Staged,
    ) -> Result<Result<Ready, Waiting>> {
        let Some(link) = self.nl.find_link(&plan.interface).await? else {
            return Ok(Err(Waiting::NoInterface));
        };
        let addrs = self.nl.addresses(link.index).await?;
        if addrs::advert_sources(plan, &addrs).is_none() {
            return Ok(Err(Waiting::NoAddress));
        }
        if !self.ifaces.contains_key(&link.name) && !staged.ifaces.contains_key(&link.name) {
            let rx_offload = vlan_offload::rx_vlan_offload(&link.name).unwrap_or_else(|e| {
                tracing::warn!("{}: reading rx VLAN offload: {e}; taken as on", link.name);
                true
            });
            let facts = VlanFacts {
                rx_offload,
                vlans: self.nl.has_vlans(link.index).await?,
            };
            let a = &self.options.config.agent;
            let iface = Iface::attach(
                &link,
                a.xdp_mode,
                facts,
                &a.pin_dir,
                &a.state_dir,
                &a.socket,
                a.vips_on,
                self.events_tx.clone(),
            )?;
            staged.ifaces.insert(link.name.clone(), iface);
        }
        if plan.mac == MacMode::Virtual && !staged.promiscuous.contains_key(&link.name) {
            let iface = self.ifaces.get(&link.name);
            if let Some(held) = iface
                .or(staged.ifaces.get(&link.name))
                .map(Iface::promiscuity)
                .transpose()?
                .flatten()
            {
                staged.promiscuous.insert(link.name.clone(), held);
            }
        }
        let memberships = Memberships::join(link.index, plan)
            .with_context(|| format!("joining multicast groups on {}", plan.interface))?;
        let vhid = Vhid::new(
            plan.clone(),
            &link,
            &addrs,
            self.options.config.agent.vips_on,
            ipv6_forwarding(&link.name),
        )?;
        Ok(Ok(Ready {
            link,
            vhid,
            memberships,
        }))
    }

    /// Keeps what starting VHIDs attached.
    fn adopt(&mut self, staged: Staged) {
        self.ifaces.extend(staged.ifaces);
        for (name, held) in staged.promiscuous {
            if let Some(iface) = self.ifaces.get_mut(&name) {
                iface.hold_promiscuity(held);
            }
        }
    }

    /// Starts a prepared VHID (see [`Agent::prepare_start`]), on an interface adopted.
    async fn launch(&mut self, ready: Ready) {
        let Ready {
            link,
            vhid,
            memberships,
        } = ready;
        // A balanced group's VIPs are its leader's to place.
        if vhid.plan.balance.as_ref().is_none_or(Balance::is_leader) {
            self.placement.clear(&vhid.plan, &link).await;
        }
        if let Some(iface) = self.ifaces.get_mut(&link.name) {
            iface.register(&vhid);
        }
        if vhid.holds_group_vips() {
            self.placement.add(&vhid).await;
        }
        self.vhids.push(Running {
            vhid,
            hooks: hooks::Queue::new(self.hooks_tx.clone()),
            _memberships: memberships,
        });
        let i = self.vhids.len() - 1;
        self.program_balance(i);
        let effective = self.effective_demotion(i);
        self.feed(i, Event::Demotion(effective)).await;
        if link.up {
            self.feed(i, Event::LinkUp).await;
        } else {
            self.demotion.link(&self.vhids[i].vhid.id(), false);
        }
    }

    /// Keeps `plan` waiting for `why`. Logged when the reason is new, not at every
    /// re-check: `before` is what it waited for until now, and since when.
    fn wait(&mut self, plan: Plan, why: Waiting, before: Option<(Waiting, Instant)>) {
        let since = match before {
            Some((was, since)) if was == why => since,
            _ => {
                let what = match why {
                    Waiting::NoInterface => format!("there is no interface {}", plan.interface),
                    Waiting::NoAddress => format!(
                        "{} lacks the address to send adverts from (its src, or one of the \
                         peers' family and scope)",
                        plan.interface
                    ),
                };
                tracing::warn!(
                    "vhid {} on {} waits in INIT: {what}; it starts when that changes",
                    plan.vhid,
                    plan.interface
                );
                Instant::now()
            }
        };
        self.absent.push(Absent { plan, why, since });
    }

    /// Starts the waiting VHIDs `which` selects that can run now; the others wait on.
    async fn retry(&mut self, which: impl Fn(&Absent) -> bool) {
        let (now, rest): (Vec<Absent>, Vec<Absent>) = std::mem::take(&mut self.absent)
            .into_iter()
            .partition(which);
        self.absent = rest;
        if now.is_empty() {
            return;
        }
        for a in now {
            match self.start_vhid(&a.plan).await {
                Ok(None) => tracing::info!(
                    "vhid {} on {} started: {} is there with an address",
                    a.plan.vhid,
                    a.plan.interface,
                    a.plan.interface
                ),
                Ok(Some(why)) => self.wait(a.plan, why, Some((a.why, a.since))),
                Err(e) => {
                    tracing::error!(
                        "vhid {} on {}: starting failed, waiting for the next change: {e:#}",
                        a.plan.vhid,
                        a.plan.interface
                    );
                    self.wait(a.plan, a.why, Some((a.why, a.since)));
                }
            }
        }
        self.drive(Work::Demotion).await;
    }

    /// Lets go of interfaces no running VHID uses (dropping their program).
    fn detach_unused(&mut self) {
        let vhids = &self.vhids;
        self.ifaces
            .retain(|name, _| vhids.iter().any(|r| r.vhid.plan.interface == *name));
    }

    fn effective_demotion(&self, i: usize) -> i32 {
        let groups = &self.vhids[i].vhid.plan.groups;
        self.demotion.effective(groups.iter().map(String::as_str))
    }

    async fn feed(&mut self, i: usize, event: Event) {
        self.drive(Work::Feed(i, event)).await;
    }

    /// Feeds machines and carries out their actions until nothing is left to do: a send
    /// error that changes the demotion queues the demotion for every machine after the
    /// current one, instead of re-entering it.
    async fn drive(&mut self, first: Work) {
        let mut work = VecDeque::from([first]);
        while let Some(next) = work.pop_front() {
            match next {
                Work::Demotion => {
                    for i in 0..self.vhids.len() {
                        let d = self.effective_demotion(i);
                        if self.vhids[i].vhid.machine.demotion() != d {
                            work.push_back(Work::Feed(i, Event::Demotion(d)));
                        }
                    }
                }
                Work::Feed(i, event) => {
                    let now = self.now();
                    for action in self.vhids[i].vhid.machine.handle(now, event) {
                        match action {
                            Action::Advertise(timing) => {
                                if self.advertise(i, timing) {
                                    work.push_back(Work::Demotion);
                                }
                            }
                            Action::Transition { from, to, reason } => {
                                self.transition(i, from, to, reason).await;
                            }
                            Action::Announce => self.reannounce(i),
                            Action::Withdraw => self.withdraw(i).await,
                        }
                    }
                }
            }
        }
    }

    /// Sends an advert; whether send errors changed the demotion (carp_send_ad_error:
    /// three failures in a row demote the whole host).
    fn advertise(&mut self, i: usize, timing: Timing) -> bool {
        let v = &mut self.vhids[i].vhid;
        let Some(iface) = self.ifaces.get_mut(&v.plan.interface) else {
            return false;
        };
        let rng = &mut self.rng;
        let (sequence, dir) = (&mut self.sequence, &self.options.config.agent.state_dir);
        let out = v.adverts(
            timing,
            || state::next_counter(sequence, dir),
            || rand::Rng::random(rng),
        );
        let ok = iface.send(&out);
        v.sent(ok);
        // An advert that went out renews the XDP program's MASTER lease; one that did not
        // lets it run out, as the backups will stop hearing us.
        let master = v.state() == State::MASTER;
        if ok
            && master
            && let Err(e) = iface.program(v)
        {
            tracing::error!("vhid {}: renewing the lease: {e:#}", v.plan.vhid);
        }
        if ok && master {
            self.program_balance(i);
        }
        let v = &self.vhids[i].vhid;
        let changed = self.demotion.send_result(&v.id(), ok);
        if changed {
            tracing::warn!("send errors changed demotion to {}", self.demotion.global());
        }
        changed
    }

    /// Carries out a transition: maps, VIPs, announcements, hooks, metrics.
    async fn transition(&mut self, i: usize, from: State, to: State, reason: Reason) {
        let r = &mut self.vhids[i];
        let took = r.vhid.transitioned(reason);
        let v = &r.vhid;
        let key = (v.plan.interface.clone(), v.plan.vhid, reason.to_string());
        *self.transitions.entry(key).or_default() += 1;
        tracing::info!(
            "vhid {} on {} {from} -> {to}: {reason} (after {:.1} s)",
            v.plan.vhid,
            v.plan.interface,
            took.as_secs_f64()
        );
        if let Some(iface) = self.ifaces.get_mut(&v.plan.interface)
            && let Err(e) = iface.program(v)
        {
            tracing::error!("vhid {}: updating the XDP maps failed: {e:#}", v.plan.vhid);
        }
        self.program_balance(i);
        let r = &mut self.vhids[i];
        let v = &r.vhid;
        // A balanced group's VIPs stay put: its share moved with the map entry.
        let placed = v.vips_follow_state();
        // Handing over, it goes on answering until `Action::Withdraw`, and the down hook
        // runs then.
        let handing_over = from == State::MASTER && v.machine.answering();
        if handing_over {
            tracing::info!(
                "vhid {} on {}: still answering the VIPs until the arriving master is heard \
                 (at most {:.1} s)",
                v.plan.vhid,
                v.plan.interface,
                v.machine.handover_bound().as_secs_f64()
            );
        } else if placed && to == State::MASTER {
            self.placement.add(v).await;
            if let Some(iface) = self.ifaces.get(&v.plan.interface) {
                iface.announce(&v.announcements());
            }
        } else if placed && from == State::MASTER {
            self.placement.remove(v).await;
        }
        if !handing_over {
            self.run_hook(i, from, to);
        }
    }

    /// Starts VHID `i`'s hook for a transition `from` -> `to`, if it has one.
    fn run_hook(&mut self, i: usize, from: State, to: State) {
        let timeout = Duration::from_secs_f64(self.options.config.agent.hook_timeout);
        let r = &mut self.vhids[i];
        if let Some(run) = r.vhid.hook(from, to, self.netns.clone(), timeout) {
            r.hooks.push(run);
            self.hooks_pending += 1;
        }
    }

    /// Ends VHID `i`'s handover (`Action::Withdraw`): the program stops answering, the VIPs
    /// go, the down hook runs.
    async fn withdraw(&mut self, i: usize) {
        let v = &self.vhids[i].vhid;
        tracing::info!(
            "vhid {} on {}: handover over, the VIPs are no longer answered here",
            v.plan.vhid,
            v.plan.interface
        );
        if let Some(iface) = self.ifaces.get_mut(&v.plan.interface)
            && let Err(e) = iface.program(v)
        {
            tracing::error!("vhid {}: updating the XDP maps failed: {e:#}", v.plan.vhid);
        }
        if v.vips_follow_state() {
            self.placement.remove(v).await;
        }
        let to = v.state();
        self.run_hook(i, State::MASTER, to);
    }

    /// Announces VHID `i`'s VIPs again, staying MASTER: it heard another master (see
    /// `Machine::reannounce`; the advert went out with the action before).
    fn reannounce(&self, i: usize) {
        let v = &self.vhids[i].vhid;
        tracing::info!(
            "vhid {} on {}: another master heard, announcing the VIPs again",
            v.plan.vhid,
            v.plan.interface
        );
        if let Some(iface) = self.ifaces.get(&v.plan.interface) {
            iface.announce(&v.announcements());
        }
    }

    /// Upkeep: puts back what something else removed from the VHIDs that hold their VIPs
    /// (see `Vhid::upkeep`), logged and counted; a VHID that cannot have it back leaves
    /// MASTER rather than claim a VIP it does not hold.
    async fn upkeep(&mut self, removed: Removed) {
        for i in 0..self.vhids.len() {
            let v = &self.vhids[i].vhid;
            let (vhid, ifindex) = (v.plan.vhid, v.ifindex);
            let at = format!("vhid {vhid} on {}", v.plan.interface);
            for what in v.upkeep(&removed) {
                match self.placement.restore(ifindex, what).await {
                    // There already: the late report of a removal we undid.
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::warn!("{at}: {what} removed by something else: put back");
                        self.vhids[i].vhid.restored();
                    }
                    Err(e) => {
                        tracing::error!(
                            "{at}: {what} removed by something else could not be put back \
                             ({e:#}): leaving MASTER"
                        );
                        self.feed(i, Event::VipLost).await;
                        break;
                    }
                }
            }
        }
    }

    async fn on_timer(&mut self) {
        let now = self.now();
        for i in 0..self.vhids.len() {
            if self.vhids[i]
                .vhid
                .machine
                .deadline()
                .is_some_and(|d| d <= now)
            {
                self.feed(i, Event::Timer).await;
            }
        }
    }

    async fn on_advert(&mut self, ev: AdvertEvent) {
        let found = self
            .vhids
            .iter()
            .position(|r| r.vhid.ifindex == ev.ifindex && r.vhid.plan.vhid == ev.vhid);
        if let Some(i) = found
            && let Some(event) = self.vhids[i].vhid.receive(&ev)
        {
            self.feed(i, event).await;
        }
    }

    /// A link, address or route change: interfaces that went away (deleted, or renamed)
    /// take their VHIDs back to waiting, waiting VHIDs it concerns are looked at again,
    /// and what something else removed from a master is put back.
    async fn on_change(&mut self, change: Change) {
        match change {
            Change::Link(link) => {
                // Under another name, or another interface under this name (a deletion
                // whose message was lost): the interface this agent attached to is gone.
                let stale = self
                    .ifaces
                    .iter()
                    .find(|(name, i)| (i.link.index == link.index) != (**name == link.name))
                    .map(|(name, _)| name.clone());
                if let Some(name) = stale {
                    self.vanish(&name).await;
                }
                let name = link.name.clone();
                self.on_link(link).await;
                self.retry(|a| a.plan.interface == name).await;
            }
            Change::Gone(link) => {
                if self
                    .ifaces
                    .get(&link.name)
                    .is_some_and(|i| i.link.index == link.index)
                {
                    self.vanish(&link.name).await;
                }
                self.retry(|a| a.plan.interface == link.name).await;
            }
            Change::Address {
                index,
                address,
                removed,
            } => {
                if removed {
                    self.upkeep(Removed::Address {
                        index,
                        addr: address.addr,
                        vip: address.vip,
                    })
                    .await;
                }
                self.retry(|a| a.why == Waiting::NoAddress).await;
            }
            Change::RouteGone { index, net, prefix } => {
                self.upkeep(Removed::Route { index, net, prefix }).await;
            }
        }
    }

    /// The interface `name` is gone: its VHIDs leave their state as on a link down (VIPs,
    /// hooks), the program and sockets go with it, and the VHIDs wait for it to come back
    /// without the link-down demotion, as FreeBSD's carp_ifdetach destroys them.
    async fn vanish(&mut self, name: &str) {
        tracing::warn!("{name} is gone: its VHIDs wait for it to come back");
        for i in (0..self.vhids.len()).rev() {
            if self.vhids[i].vhid.plan.interface != name {
                continue;
            }
            self.feed(i, Event::LinkDown).await;
            self.demotion.link(&self.vhids[i].vhid.id(), true);
            let plan = self.vhids.remove(i).vhid.plan;
            self.wait(plan, Waiting::NoInterface, None);
        }
        self.ifaces.remove(name);
        self.drive(Work::Demotion).await;
    }

    async fn on_link(&mut self, link: Link) {
        let Some(iface) = self.ifaces.get_mut(&link.name) else {
            return;
        };
        if iface.link.index != link.index || iface.link.up == link.up {
            iface.link.mac = link.mac;
            return;
        }
        iface.link.up = link.up;
        tracing::info!("{} link {}", link.name, if link.up { "up" } else { "down" });
        for i in 0..self.vhids.len() {
            if self.vhids[i].vhid.plan.interface != link.name {
                continue;
            }
            // carp_sc_state: link down -> INIT and demote by 240; up reverses both.
            self.demotion.link(&self.vhids[i].vhid.id(), link.up);
            let ev = if link.up {
                Event::LinkUp
            } else {
                Event::LinkDown
            };
            self.feed(i, ev).await;
        }
        self.drive(Work::Demotion).await;
    }

    async fn sync_checks(&mut self) {
        if self
            .checks
            .sync(&self.options.config.checks, &mut self.demotion)
        {
            self.drive(Work::Demotion).await;
        }
    }

    async fn on_check(&mut self, report: health::Report) {
        if self.checks.record(report, &mut self.demotion) {
            self.drive(Work::Demotion).await;
        }
    }

    /// Stops VHID `i` now: bow-out as master, VIPs removed, map entries removed.
    async fn stop_vhid(&mut self, i: usize) {
        self.feed(i, Event::Shutdown).await;
        self.feed(i, Event::Release).await;
        let v = &self.vhids[i].vhid;
        if let Some(iface) = self.ifaces.get_mut(&v.plan.interface) {
            iface.unregister(v);
            if v.holds_group_vips() {
                iface.forget_balance(v.plan.vhid);
            }
        }
        if v.holds_group_vips() {
            self.placement.remove(v).await;
        }
    }

    /// Writes the share of VHID `i`'s balanced group into the program's map, if it is in
    /// one: after each of the group's transitions and each advert a master of it sends.
    fn program_balance(&mut self, i: usize) {
        let v = &self.vhids[i].vhid;
        let Some(leader) = v.plan.balance.as_ref().map(Balance::leader) else {
            return;
        };
        let interface = &v.plan.interface;
        let members: Vec<&Vhid> = self
            .vhids
            .iter()
            .map(|r| &r.vhid)
            .filter(|m| m.in_group(interface, leader))
            .collect();
        if let Some(iface) = self.ifaces.get_mut(interface)
            && let Err(e) = iface.program_balance(leader, &members)
        {
            tracing::error!("balanced group of vhid {leader}: updating the XDP map: {e:#}");
        }
    }

    /// SIGTERM: masters bow out so backups take over at once, and hand over (see
    /// `Machine::answering`): the event loop runs on until none answers any more, at most
    /// a master-down time.
    async fn begin_stop(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        self.stopping = true;
        for i in 0..self.vhids.len() {
            self.feed(i, Event::Shutdown).await;
        }
    }

    /// Whether a VHID still answers after leaving MASTER.
    fn handing_over(&self) -> bool {
        self.vhids
            .iter()
            .any(|r| r.vhid.state() != State::MASTER && r.vhid.machine.answering())
    }

    /// Graceful stop, after [`Agent::begin_stop`] and the handovers: VIPs go, VHIDs are
    /// removed from the program, down hooks run. Every hook run queued or running is
    /// awaited (each up to the timeout): a master stopped while its up hook runs gets its
    /// down hook after it.
    async fn shutdown(&mut self, hooks_rx: &mut mpsc::UnboundedReceiver<(u8, hooks::Outcome)>) {
        for i in 0..self.vhids.len() {
            self.stop_vhid(i).await;
        }
        let timeout = Duration::from_secs_f64(self.options.config.agent.hook_timeout);
        while self.hooks_pending > 0 {
            match tokio::time::timeout(timeout, hooks_rx.recv()).await {
                Ok(Some(_)) => self.hooks_pending -= 1,
                _ => break,
            }
        }
        tracing::info!("carp-agent stopped");
    }
}
