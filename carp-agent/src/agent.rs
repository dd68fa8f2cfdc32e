//! The daemon: one tokio event loop drives one election machine per VHID with real
//! timers, feeds it the adverts the XDP program hands over, carries out its actions
//! (adverts, VIPs over netlink, BPF maps, gratuitous ARP/NA, hooks) and answers the
//! control socket, signals and link changes.

use crate::{
    config::{Check, Config, MacMode, Plan, Protocol, VipPlacement, XdpModeSetting},
    control::{self, CheckStatus, Forced, InterfaceStatus, Reply, Request, Status, VhidStatus},
    demotion::Demotion,
    election::{Action, Event, Machine, Reason, State, Timing},
    frame,
    health::{self, Health},
    hmac::{Auth, Counter},
    hooks, metrics,
    netlink::{self, Link, Netlink},
    send::{Memberships, PacketSocket, UnicastSocket},
    xdp::{DataPlane, advert_of, parse_event, vhid_entry},
};
use anyhow::{Context as _, Result, anyhow, bail};
use aya::{maps::RingBuf, programs::XdpMode};
use carp_common::{
    maps::{AdvertEvent, VhidKey, VipEntry, VipKey, flags, state},
    vrrp, wire,
};
use futures_util::StreamExt as _;
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

/// How the agent was started, for reloads.
pub struct Options {
    pub config: Config,
    /// The file to re-read on SIGHUP / `reload`; none for the ucarp-style command line.
    pub path: Option<PathBuf>,
}

/// An attached interface.
struct Iface {
    link: Link,
    dp: DataPlane,
    mode: XdpMode,
    packet: PacketSocket,
    /// Raw sockets for unicast adverts, one per source address.
    unicast: BTreeMap<IpAddr, UnicastSocket>,
}

#[derive(Default)]
struct Counters {
    transitions: u64,
    adverts_sent: u64,
    adverts_received: u64,
    send_errors: u64,
}

struct Vhid {
    plan: Plan,
    ifindex: u32,
    machine: Machine,
    auth: Option<Auth>,
    counter: Counter,
    /// Address adverts go out from.
    src: IpAddr,
    /// Source of adverts of the other family: for a CARP VHID with VIPs of both (FreeBSD's
    /// carp_send_ad_locked sends one per family the VHID has addresses of), or for its
    /// unicast peers of that family.
    also_from: Option<IpAddr>,
    /// MAC that answers for the VIPs and sources multicast adverts.
    mac: [u8; 6],
    /// NAs carry the Router flag (see [`flags::ROUTER`]).
    router: bool,
    /// VIPs (on lo) whose subnet the master routes over the interface.
    routed: Vec<(IpAddr, u8)>,
    _memberships: Memberships,
    hooks: hooks::Queue,
    since: Instant,
    last_reason: Reason,
    n: Counters,
}

impl Vhid {
    fn key(&self) -> VhidKey {
        VhidKey::new(self.ifindex, 0, self.plan.vhid)
    }

    fn id(&self) -> (String, u8) {
        (self.plan.interface.clone(), self.plan.vhid)
    }
}

/// A running `[[check]]`.
struct CheckRun {
    spec: Check,
    id: u64,
    health: Health,
    runs: u64,
    failures: u64,
    last_failure: Option<String>,
    _runner: health::Runner,
}

fn map_state(s: State) -> u8 {
    match s {
        State::Init => state::INIT,
        State::Backup => state::BACKUP,
        State::Master => state::MASTER,
    }
}

struct Agent {
    start: Instant,
    options: Options,
    nl: Netlink,
    ifaces: BTreeMap<String, Iface>,
    vhids: Vec<Vhid>,
    demotion: Demotion<(String, u8)>,
    events_tx: mpsc::Sender<AdvertEvent>,
    hooks_tx: mpsc::UnboundedSender<(u8, hooks::Outcome)>,
    /// The agent's network namespace under /run/netns, for hooks (CARP_NETNS).
    netns: Option<String>,
    checks: Vec<CheckRun>,
    checks_tx: mpsc::UnboundedSender<health::Report>,
    /// Id of the next check runner started.
    next_check: u64,
    /// Random source for the CARP counter until a peer is heard.
    rng: rand::rngs::ThreadRng,
    /// Send errors changed the demotion inside an action; applied after it.
    pending_demotion: bool,
    /// Index of `lo`, where VIPs go in loopback placement.
    lo: u32,
    /// Transitions by (interface, vhid, reason), for metrics.
    transitions: BTreeMap<(String, u8, String), u64>,
    /// Hook runs by outcome, for metrics.
    hook_runs: BTreeMap<String, u64>,
}

/// Checks what needs the system: interfaces exist, VIPs are not host addresses, a source
/// address exists. A VIP outside the interface's subnets is fine (carp.sh basic_v4: the
/// master routes the VIP's subnet over the interface). Returns one mistake per problem,
/// like config validation.
async fn check_system(nl: &Netlink, plans: &[Plan]) -> Result<BTreeMap<String, Link>, Vec<String>> {
    let mut links = BTreeMap::new();
    let mut mistakes = Vec::new();
    for p in plans {
        let at = format!("vhid {} on {}", p.vhid, p.interface);
        if !links.contains_key(&p.interface) {
            match nl.link(&p.interface).await {
                Ok(l) => {
                    links.insert(p.interface.clone(), l);
                }
                Err(e) => {
                    mistakes.push(format!("{at}: {e:#}"));
                    continue;
                }
            }
        }
        let index = links[&p.interface].index;
        let addrs = nl.addresses(index).await.unwrap_or_default();
        let mut host = addrs.clone();
        if let Ok(lo) = nl.link("lo").await {
            host.extend(nl.addresses(lo.index).await.unwrap_or_default());
        }
        for (vip, _) in &p.vips {
            // The agent adds and removes its VIPs: one that is already a host address would
            // be taken from the host when this VHID is not master.
            if host.iter().any(|a| a.addr == *vip && !a.vip) {
                mistakes.push(format!(
                    "{at}: VIP {vip} is already an address of this host; a VIP must be an address \
                     only the master holds"
                ));
            }
        }
        if crate::addrs::advert_sources(p, &addrs).is_none() {
            mistakes.push(format!(
                "{at}: {} has no address to send adverts from (to the peers' family and scope)",
                p.interface
            ));
        }
    }
    if mistakes.is_empty() {
        Ok(links)
    } else {
        Err(mistakes)
    }
}

/// Whether the host forwards IPv6 on `interface`, which makes CARP's NAs carry the Router
/// flag (nd6_na_output reads V_ip6_forwarding).
fn ipv6_forwarding(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}

/// A file's inode: tells our control socket from one a successor bound.
fn inode(path: &std::path::Path) -> Option<u64> {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).ok()?).into()
}

/// CLOCK_MONOTONIC in nanoseconds: the XDP program's `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

/// "1 VHID", "2 VHIDs": for the log and `check`.
pub fn vhids(n: usize) -> String {
    format!("{n} VHID{}", if n == 1 { "" } else { "s" })
}

/// Validates the configuration against the system; errors here exit with code 2.
pub async fn preflight(options: &Options) -> Result<Vec<Plan>, Vec<String>> {
    let base = options
        .path
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let plans = options
        .config
        .validate(&base)
        .map_err(|m| m.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let nl = Netlink::new().map_err(|e| vec![format!("{e:#}")])?;
    check_system(&nl, &plans).await?;
    Ok(plans)
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(options: Options, plans: Vec<Plan>) -> Result<()> {
    let listener = control::listen(&options.config.agent.socket).await?;
    let socket_inode = inode(&options.config.agent.socket);
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
    let mut agent = Agent {
        start: Instant::now(),
        nl: Netlink::new()?,
        options,
        ifaces: BTreeMap::new(),
        vhids: Vec::new(),
        demotion,
        events_tx,
        hooks_tx,
        netns: crate::netns::identify(),
        checks: Vec::new(),
        checks_tx,
        next_check: 0,
        rng: rand::rng(),
        pending_demotion: false,
        lo: 0,
        transitions: BTreeMap::new(),
        hook_runs: BTreeMap::new(),
    };
    agent.lo = agent.nl.link("lo").await?.index;
    let mut links = Box::pin(netlink::link_events()?);
    agent.add_vhids(plans).await?;
    agent.sync_checks().await;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut watchdog = tokio::time::interval(watchdog_interval());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("carp-agent running: {}", vhids(agent.vhids.len()));
    loop {
        let deadline = agent
            .vhids
            .iter()
            .filter_map(|v| v.machine.deadline())
            .min()
            .map(|d| agent.start + d)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            Some(ev) = events_rx.recv() => agent.on_advert(ev).await,
            Some(link) = links.next() => agent.on_link(link).await,
            Some((req, reply)) = control_rx.recv() => {
                let r = agent.on_control(req).await;
                let _ = reply.send(r);
            }
            Some((vhid, outcome)) = hooks_rx.recv() => {
                tracing::debug!(vhid, "hook finished: {outcome:?}");
                *agent.hook_runs.entry(format!("{outcome:?}").to_lowercase()).or_default() += 1;
            }
            Some(report) = checks_rx.recv() => agent.on_check(report).await,
            Some(reply) = scrape_rx.recv() => {
                let _ = reply.send(metrics::render(&agent.status(), &agent.transitions, &agent.hook_runs));
            }
            _ = tokio::time::sleep_until(deadline.into()) => agent.on_timer().await,
            _ = hup.recv() => {
                if let Err(e) = agent.reload().await {
                    tracing::error!("reload failed, keeping the running configuration: {e:#}");
                }
            }
            _ = watchdog.tick() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    agent.shutdown(&mut hooks_rx).await;
    // Only our own socket: an agent started while this one stopped may have bound anew.
    let socket = &agent.options.config.agent.socket;
    if inode(socket) == socket_inode {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
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

/// Reads a data plane's ring buffer forever, forwarding events to the loop.
fn spawn_reader(rb: RingBuf<aya::maps::MapData>, tx: mpsc::Sender<AdvertEvent>) -> Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long
    // as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the advert ring buffer: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            let rb = guard.get_inner_mut();
            while let Some(item) = rb.next() {
                if let Some(ev) = parse_event(&item)
                    && tx.send(ev).await.is_err()
                {
                    return;
                }
            }
            guard.clear_ready();
        }
    });
    Ok(())
}

impl Agent {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Attaches to `link` unless already attached.
    async fn attach(&mut self, link: &Link, vmac: bool) -> Result<()> {
        if let Some(iface) = self.ifaces.get(&link.name) {
            if vmac && iface.link.index == link.index {
                self.nl.set_promisc(link.index, true).await?;
            }
            return Ok(());
        }
        let mut dp = DataPlane::load()?;
        let attached = match self.options.config.agent.xdp_mode {
            XdpModeSetting::Native => dp
                .attach(&link.name, XdpMode::Driver)
                .map(|l| (l, XdpMode::Driver)),
            XdpModeSetting::Skb => dp
                .attach(&link.name, XdpMode::Skb)
                .map(|l| (l, XdpMode::Skb)),
            XdpModeSetting::Auto if link.veth => {
                tracing::info!(
                    "{} is a veth: generic XDP, as native XDP_TX there needs an XDP program on the peer",
                    link.name
                );
                dp.attach(&link.name, XdpMode::Skb)
                    .map(|l| (l, XdpMode::Skb))
            }
            XdpModeSetting::Auto => dp.attach_best(&link.name),
        };
        let (_, mode) = attached.map_err(|e| {
            anyhow!(
                "{e:#}; if another program (or another carp-agent) already holds XDP on {}, \
                 stop it or add its VHIDs to this agent's configuration",
                link.name
            )
        })?;
        tracing::info!(
            "XDP attached to {} in {} mode",
            link.name,
            if mode == XdpMode::Driver {
                "native"
            } else {
                "skb (generic)"
            }
        );
        let pin = self.options.config.agent.pin_dir.join(&link.name);
        if let Err(e) = dp.pin(&pin) {
            tracing::warn!("maps not pinned for bpftool: {e:#}");
        }
        spawn_reader(dp.take_events()?, self.events_tx.clone())?;
        if vmac {
            self.nl.set_promisc(link.index, true).await?;
        }
        if self.options.config.agent.vips_on == VipPlacement::Loopback {
            // Answer ARP only for the interface's own addresses, and never announce a
            // VIP from it: the VIPs on lo are the XDP program's to answer for.
            for (name, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                let path = format!("/proc/sys/net/ipv4/conf/{}/{name}", link.name);
                std::fs::write(&path, value).with_context(|| format!("setting {path}"))?;
            }
        }
        let packet = PacketSocket::bind(link.index)?;
        self.ifaces.insert(
            link.name.clone(),
            Iface {
                link: link.clone(),
                dp,
                mode,
                packet,
                unicast: BTreeMap::new(),
            },
        );
        Ok(())
    }

    async fn add_vhids(&mut self, plans: Vec<Plan>) -> Result<()> {
        for plan in plans {
            let link = self.nl.link(&plan.interface).await?;
            // Crash safety: a killed predecessor may have left our VIPs behind.
            for (vip, _) in &plan.vips {
                for (index, name) in [(link.index, link.name.as_str()), (self.lo, "lo")] {
                    if self.nl.del_vip(index, *vip).await? {
                        tracing::info!("removed {vip} from {name}, left by a previous agent");
                    }
                }
            }
            self.attach(&link, plan.mac == MacMode::Virtual).await?;
            let addrs = self.nl.addresses(link.index).await?;
            let sources = crate::addrs::advert_sources(&plan, &addrs).with_context(|| {
                format!("{} has no address to send adverts from", plan.interface)
            })?;
            let src = sources.first;
            let mac = match plan.mac {
                MacMode::Virtual => match plan.timing {
                    Timing::Vrrp3 { .. } if src.is_ipv6() => wire::virtual_mac_v6(plan.vhid),
                    _ => wire::virtual_mac(plan.vhid),
                },
                MacMode::Interface => link.mac,
            };
            let auth = match plan.protocol {
                Protocol::Carp => Some(Auth::new(&plan.password, plan.vhid, &plan.vip_addrs())?),
                Protocol::Vrrp3 => None,
            };
            if plan.peers.is_empty()
                && plan.protocol == Protocol::Carp
                && sources.other.is_none()
                && plan.vips.iter().any(|(v, _)| v.is_ipv6() != src.is_ipv6())
            {
                tracing::warn!(
                    "vhid {} on {}: no address of the VIPs' other family; adverts go out from {src} only",
                    plan.vhid,
                    plan.interface
                );
            }
            // VIPs on lo leave their subnet unrouted when it is not one of the interface's.
            let own: Vec<_> = addrs.iter().filter(|a| !a.vip).collect();
            let routed = plan
                .vips
                .iter()
                .copied()
                .filter(|(vip, prefix)| {
                    self.options.config.agent.vips_on == VipPlacement::Loopback
                        && *prefix < if vip.is_ipv4() { 32 } else { 128 }
                        && !own
                            .iter()
                            .any(|o| crate::addrs::same_subnet(o.addr, *vip, o.prefix))
                })
                .collect();
            let router = match plan.protocol {
                Protocol::Vrrp3 => true,
                Protocol::Carp => ipv6_forwarding(&link.name),
            };
            let memberships = Memberships::join(link.index, &plan)
                .with_context(|| format!("joining multicast groups on {}", plan.interface))?;
            if sources.from_vip {
                tracing::warn!(
                    "vhid {} on {}: the interface has no address of its own of the VIP's family; \
                     adverts go out from the VIP {src}, which peers cannot break ties with: \
                     give the interface an address",
                    plan.vhid,
                    plan.interface
                );
            }
            let machine = Machine::new(plan.machine(&sources));
            let hooks = hooks::Queue::start(self.hooks_tx.clone());
            let v = Vhid {
                ifindex: link.index,
                machine,
                auth,
                counter: Counter::default(),
                src,
                also_from: sources.other,
                mac,
                router,
                routed,
                _memberships: memberships,
                hooks,
                since: Instant::now(),
                last_reason: Reason::LinkDown,
                n: Counters::default(),
                plan,
            };
            let vips: Vec<String> = v
                .plan
                .vips
                .iter()
                .map(|(a, l)| format!("{a}/{l}"))
                .collect();
            tracing::info!(
                "vhid {} on {}: {}, VIPs {}, adverts from {src}",
                v.plan.vhid,
                v.plan.interface,
                v.plan.timing,
                vips.join(" ")
            );
            self.vhids.push(v);
            let i = self.vhids.len() - 1;
            self.program_maps(i)?;
            let effective = self.effective_demotion(i);
            self.feed(i, Event::Demotion(effective)).await;
            if link.up {
                self.feed(i, Event::LinkUp).await;
            } else {
                self.demotion.link(&self.vhids[i].id(), false);
            }
        }
        self.broadcast_demotion().await;
        Ok(())
    }

    /// The interface index and prefix length a VIP is configured with.
    fn vip_home(&self, ifindex: u32, vip: IpAddr, prefix: u8) -> (u32, u8) {
        match self.options.config.agent.vips_on {
            VipPlacement::Interface => (ifindex, prefix),
            // A host address: a subnet on lo would make the whole subnet local.
            VipPlacement::Loopback => (self.lo, if vip.is_ipv4() { 32 } else { 128 }),
        }
    }

    fn effective_demotion(&self, i: usize) -> i32 {
        self.demotion
            .effective(self.vhids[i].plan.groups.iter().map(String::as_str))
    }

    /// Writes a VHID's state into its interface's maps.
    fn program_maps(&mut self, i: usize) -> Result<()> {
        let v = &self.vhids[i];
        let st = map_state(v.machine.state());
        let iface = self
            .ifaces
            .get_mut(&v.plan.interface)
            .context("interface not attached")?;
        let mut fl = 0;
        if !v.plan.peers.is_empty() {
            fl |= flags::UNICAST;
        }
        if v.plan.mac == MacMode::Virtual {
            fl |= flags::VMAC;
        }
        if v.router {
            fl |= flags::ROUTER;
        }
        let version = match v.plan.protocol {
            Protocol::Carp => wire::VERSION,
            Protocol::Vrrp3 => vrrp::VERSION,
        };
        // Renewed by every advert: see Machine::lease.
        let master_until = if st == state::MASTER {
            let lease = u64::try_from(v.machine.lease().as_nanos()).unwrap_or(u64::MAX);
            monotonic_ns().saturating_add(lease)
        } else {
            0
        };
        let mut entry = vhid_entry(version, st, fl, v.mac, iface.link.mac, v.auth.as_ref());
        entry.master_until = master_until;
        iface.dp.set_vhid(&v.key(), &entry)?;
        for (vip, _) in &v.plan.vips {
            let e = VipEntry {
                vhid: v.plan.vhid,
                state: st,
                mac: v.mac,
                master_until,
            };
            iface.dp.set_vip(&VipKey::new(v.ifindex, 0, *vip), &e)?;
        }
        Ok(())
    }

    /// Feeds one event to a machine and carries out what it says.
    async fn feed(&mut self, i: usize, event: Event) {
        let now = self.now();
        let actions = self.vhids[i].machine.handle(now, event);
        for a in actions {
            match a {
                Action::Advertise(timing) => self.advertise(i, timing),
                Action::Transition { from, to, reason } => {
                    self.transition(i, from, to, reason).await
                }
            }
        }
    }

    fn advertise(&mut self, i: usize, timing: Timing) {
        let v = &mut self.vhids[i];
        let Some(iface) = self.ifaces.get_mut(&v.plan.interface) else {
            return;
        };
        let payload_for = |v: &mut Vhid,
                           rng: &mut rand::rngs::ThreadRng,
                           src: IpAddr,
                           dst: IpAddr| match timing {
            Timing::Carp { advbase, advskew } => {
                let counter = v.counter.next(rand::Rng::random(rng));
                let digest = v.auth.as_ref().map(|a| a.sign(counter)).unwrap_or_default();
                Some(
                    wire::CarpHeader {
                        vhid: v.plan.vhid,
                        advskew,
                        demote: 0,
                        advbase,
                        counter,
                        digest,
                    }
                    .encode()
                    .to_vec(),
                )
            }
            Timing::Vrrp3 {
                priority,
                interval_cs,
            } => frame::vrrp_payload(
                src,
                dst,
                vrrp::Vrrp3Header {
                    vrid: v.plan.vhid,
                    priority,
                    count: 0,
                    max_adver_int: interval_cs,
                },
                &v.plan.vip_addrs(),
            ),
        };
        let mut ok = true;
        if v.plan.peers.is_empty() {
            for src in std::iter::once(v.src).chain(v.also_from) {
                if let Some(payload) = payload_for(v, &mut self.rng, src, frame::group(src)) {
                    let f = frame::advert(src, v.mac, None, &payload);
                    ok &= iface.packet.send(&f).is_ok();
                }
            }
        } else {
            for peer in v.plan.peers.clone() {
                // From our address of the peer's family, bound, so the peer sees the address
                // the tie-break compares.
                let Some(from) = std::iter::once(v.src)
                    .chain(v.also_from)
                    .find(|s| s.is_ipv6() == peer.is_ipv6())
                else {
                    continue;
                };
                let sock = match iface.unicast.entry(from) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        match UnicastSocket::bind(&iface.link, from) {
                            Ok(s) => e.insert(s),
                            Err(err) => {
                                tracing::error!("vhid {}: {err:#}", v.plan.vhid);
                                ok = false;
                                continue;
                            }
                        }
                    }
                };
                if let Some(payload) = payload_for(v, &mut self.rng, from, peer) {
                    ok &= sock.send(&payload, peer).is_ok();
                }
            }
        }
        if ok {
            v.n.adverts_sent += 1;
        } else {
            v.n.send_errors += 1;
        }
        // carp_send_ad_error: three failures in a row demote the whole host.
        let id = v.id();
        if self.demotion.send_result(&id, ok) {
            tracing::warn!("send errors changed demotion to {}", self.demotion.global());
            // Applied on the next loop turn: machines must not re-enter from here.
            self.pending_demotion = true;
        }
        // An advert that went out renews the XDP program's MASTER lease; one that did not
        // lets it run out, as the backups will stop hearing us.
        if ok
            && self.vhids[i].machine.state() == State::Master
            && let Err(e) = self.program_maps(i)
        {
            tracing::error!(
                "vhid {}: renewing the lease: {e:#}",
                self.vhids[i].plan.vhid
            );
        }
    }

    async fn transition(&mut self, i: usize, from: State, to: State, reason: Reason) {
        let key = (
            self.vhids[i].plan.interface.clone(),
            self.vhids[i].plan.vhid,
            reason.to_string(),
        );
        *self.transitions.entry(key).or_default() += 1;
        let took = {
            let v = &mut self.vhids[i];
            v.n.transitions += 1;
            let took = v.since.elapsed();
            v.since = Instant::now();
            v.last_reason = reason;
            took
        };
        if let Err(e) = self.program_maps(i) {
            tracing::error!(
                "vhid {}: updating the XDP maps failed: {e:#}",
                self.vhids[i].plan.vhid
            );
        }
        let v = &self.vhids[i];
        tracing::info!(
            "vhid {} on {} {from} -> {to}: {reason} (after {:.1} s)",
            v.plan.vhid,
            v.plan.interface,
            took.as_secs_f64()
        );
        if to == State::Master {
            for (vip, prefix) in &v.plan.vips {
                let (index, prefix) = self.vip_home(v.ifindex, *vip, *prefix);
                if let Err(e) = self.nl.add_vip(index, *vip, prefix).await {
                    tracing::error!("vhid {}: {e:#}", v.plan.vhid);
                }
            }
            for (vip, prefix) in &v.routed {
                if let Err(e) = self.nl.add_subnet_route(v.ifindex, *vip, *prefix).await {
                    tracing::error!("vhid {}: {e:#}", v.plan.vhid);
                }
            }
            if let Some(iface) = self.ifaces.get(&v.plan.interface) {
                for _ in 0..v.plan.garp_count.max(1) {
                    for (vip, _) in &v.plan.vips {
                        let f = match vip {
                            IpAddr::V4(a) => frame::gratuitous_arp(v.mac, *a, None),
                            IpAddr::V6(a) => frame::unsolicited_na(v.mac, *a, v.router, None),
                        };
                        let _ = iface.packet.send(&f);
                    }
                }
            }
        } else if from == State::Master {
            for (vip, prefix) in &v.routed {
                if let Err(e) = self.nl.del_subnet_route(v.ifindex, *vip, *prefix).await {
                    tracing::error!("vhid {}: {e:#}", v.plan.vhid);
                }
            }
            for (vip, prefix) in &v.plan.vips {
                let (index, _) = self.vip_home(v.ifindex, *vip, *prefix);
                if let Err(e) = self.nl.del_vip(index, *vip).await {
                    tracing::error!("vhid {}: {e:#}", v.plan.vhid);
                }
            }
        }
        let script = match (from, to) {
            (_, State::Master) => v.plan.up_script.clone(),
            (State::Master, _) => v.plan.down_script.clone(),
            _ => None,
        };
        if let Some(script) = script {
            v.hooks.push(hooks::Run {
                script,
                interface: v.plan.interface.clone(),
                vhid: v.plan.vhid,
                vips: v.plan.vips.iter().map(|(a, _)| a.to_string()).collect(),
                netns: self.netns.clone(),
                timeout: Duration::from_secs_f64(self.options.config.agent.hook_timeout),
                from,
                to,
            });
        }
    }

    async fn on_timer(&mut self) {
        let now = self.now();
        for i in 0..self.vhids.len() {
            if self.vhids[i].machine.deadline().is_some_and(|d| d <= now) {
                self.feed(i, Event::Timer).await;
            }
        }
        self.apply_pending_demotion().await;
    }

    async fn on_advert(&mut self, ev: AdvertEvent) {
        let Some(i) = self
            .vhids
            .iter()
            .position(|v| v.ifindex == ev.ifindex && v.plan.vhid == ev.vhid)
        else {
            return;
        };
        let (advert, counter) = advert_of(&ev);
        let v = &mut self.vhids[i];
        if let Some(counter) = counter {
            v.counter.adopt(counter);
        }
        v.n.adverts_received += 1;
        self.feed(i, Event::Advert(advert)).await;
        self.apply_pending_demotion().await;
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
        let mut changed = false;
        for i in 0..self.vhids.len() {
            if self.vhids[i].plan.interface != link.name {
                continue;
            }
            // carp_sc_state: link down -> INIT and demote by 240; up reverses both.
            changed |= self.demotion.link(&self.vhids[i].id(), link.up);
            let ev = if link.up {
                Event::LinkUp
            } else {
                Event::LinkDown
            };
            self.feed(i, ev).await;
        }
        if changed {
            self.broadcast_demotion().await;
        }
    }

    async fn apply_pending_demotion(&mut self) {
        if std::mem::take(&mut self.pending_demotion) {
            self.broadcast_demotion().await;
        }
    }

    /// Tells every machine its demotion (those whose value changed advertise at once).
    async fn broadcast_demotion(&mut self) {
        for i in 0..self.vhids.len() {
            let d = self.effective_demotion(i);
            if self.vhids[i].machine.demotion() != d {
                self.feed(i, Event::Demotion(d)).await;
            }
        }
    }

    /// Runs the configured checks: unchanged ones keep their runner and verdict, removed
    /// ones stop and give back their demotion, new ones start (pending until their first
    /// run, which decides alone).
    async fn sync_checks(&mut self) {
        let specs = self.options.config.checks.clone();
        let mut changed = false;
        let mut kept = Vec::new();
        for c in std::mem::take(&mut self.checks) {
            if specs.contains(&c.spec) {
                kept.push(c);
            } else {
                if c.health.failing() {
                    self.demotion
                        .adjust_in(c.spec.group.as_deref(), -c.spec.demote);
                    changed = true;
                }
                tracing::info!("check {} removed", c.spec.name);
            }
        }
        for spec in specs {
            if !kept.iter().any(|c| c.spec == spec) {
                let id = self.next_check;
                self.next_check += 1;
                kept.push(CheckRun {
                    health: Health::new(spec.fall, spec.rise),
                    id,
                    runs: 0,
                    failures: 0,
                    last_failure: None,
                    _runner: health::Runner::start(id, spec.clone(), self.checks_tx.clone()),
                    spec,
                });
            }
        }
        self.checks = kept;
        if changed {
            self.broadcast_demotion().await;
        }
    }

    /// A check run finished: a verdict that turns failing demotes, one that turns healthy
    /// again undoes it.
    async fn on_check(&mut self, report: health::Report) {
        let Some(c) = self.checks.iter_mut().find(|c| c.id == report.id) else {
            return; // A runner a reload replaced.
        };
        c.runs += 1;
        if let Err(why) = &report.result {
            c.failures += 1;
            tracing::debug!("check {}: {why}", c.spec.name);
            c.last_failure = Some(why.clone());
        }
        let was_failing = c.health.failing();
        if !c.health.record(report.result.is_ok()) {
            return;
        }
        let spec = c.spec.clone();
        let whom = spec
            .group
            .as_deref()
            .map(|g| format!("group {g}"))
            .unwrap_or_else(|| "the host".into());
        match (was_failing, c.health.failing()) {
            (false, true) => {
                tracing::warn!(
                    "check {} failing ({}): demoting {whom} by {}",
                    spec.name,
                    report.result.err().unwrap_or_default(),
                    spec.demote
                );
                self.demotion.adjust_in(spec.group.as_deref(), spec.demote);
            }
            (true, false) => {
                tracing::info!("check {} healthy again: {whom} promoted back", spec.name);
                self.demotion.adjust_in(spec.group.as_deref(), -spec.demote);
            }
            _ => {
                tracing::info!("check {} healthy", spec.name);
                return;
            }
        }
        self.broadcast_demotion().await;
    }

    fn find(&self, vhid: u8, interface: Option<&str>) -> Result<Vec<usize>> {
        let found: Vec<usize> = (0..self.vhids.len())
            .filter(|&i| {
                self.vhids[i].plan.vhid == vhid
                    && interface.is_none_or(|n| n == self.vhids[i].plan.interface)
            })
            .collect();
        if found.is_empty() {
            bail!(
                "no vhid {vhid} is configured{}",
                interface.map(|i| format!(" on {i}")).unwrap_or_default()
            );
        }
        Ok(found)
    }

    async fn on_control(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply {
                ok: true,
                error: None,
                status: Some(self.status()),
            },
            Request::SetState {
                vhid,
                interface,
                state,
            } => match self.find(vhid, interface.as_deref()) {
                Err(e) => Reply::err(e),
                Ok(found) => {
                    let target = match state {
                        Forced::Master => State::Master,
                        Forced::Backup => State::Backup,
                    };
                    for i in found {
                        self.feed(i, Event::Force(target)).await;
                    }
                    Reply::ok()
                }
            },
            Request::Demote { op, value, group } => {
                let current = match &group {
                    Some(g) => self.demotion.effective([g.as_str()]) - self.demotion.global(),
                    None => self.demotion.global(),
                };
                let delta = match op {
                    '+' => value,
                    '-' => -value,
                    '=' => value - current,
                    _ => return Reply::err(format!("unknown demotion operator {op:?}")),
                };
                self.demotion.adjust_in(group.as_deref(), delta);
                tracing::info!(
                    "demotion {}{delta:+} by operator",
                    group
                        .as_deref()
                        .map(|g| format!("of group {g} "))
                        .unwrap_or_default()
                );
                self.broadcast_demotion().await;
                Reply::ok()
            }
            Request::Reload => match self.reload().await {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::err(format!("{e:#}")),
            },
        }
    }

    fn status(&self) -> Status {
        let vhids = self
            .vhids
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (advbase, advskew, priority, interval_ms) = match v.machine.advertised() {
                    Timing::Carp { advbase, advskew } => (advbase, advskew, 0, 0),
                    Timing::Vrrp3 {
                        priority,
                        interval_cs,
                    } => (0, 0, priority, u32::from(interval_cs) * 10),
                };
                VhidStatus {
                    interface: v.plan.interface.clone(),
                    vhid: v.plan.vhid,
                    protocol: match v.plan.protocol {
                        Protocol::Carp => "carp",
                        Protocol::Vrrp3 => "vrrp3",
                    }
                    .into(),
                    state: v.machine.state().to_string(),
                    advbase,
                    advskew,
                    priority,
                    interval_ms,
                    demotion: self.effective_demotion(i),
                    preempt: v.plan.preempt,
                    vips: v
                        .plan
                        .vips
                        .iter()
                        .map(|(a, l)| format!("{a}/{l}"))
                        .collect(),
                    src: v.src.to_string(),
                    seconds_in_state: v.since.elapsed().as_secs_f64(),
                    last_reason: v.last_reason.to_string(),
                    transitions: v.n.transitions,
                    adverts_sent: v.n.adverts_sent,
                    adverts_received: v.n.adverts_received,
                    send_errors: v.n.send_errors,
                }
            })
            .collect();
        let interfaces = self
            .ifaces
            .values()
            .map(|f| InterfaceStatus {
                name: f.link.name.clone(),
                up: f.link.up,
                xdp_mode: if f.mode == XdpMode::Driver {
                    "native"
                } else {
                    "skb"
                }
                .into(),
                xdp: f
                    .dp
                    .stats()
                    .map(|s| {
                        s.fields()
                            .iter()
                            .map(|(k, v)| (k.to_string(), *v))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        let checks = self
            .checks
            .iter()
            .map(|c| CheckStatus {
                name: c.spec.name.clone(),
                state: match c.health.healthy() {
                    None => "pending",
                    Some(true) => "healthy",
                    Some(false) => "failing",
                }
                .into(),
                demote: c.spec.demote,
                group: c.spec.group.clone(),
                runs: c.runs,
                failures: c.failures,
                last_failure: c.last_failure.clone(),
            })
            .collect();
        Status {
            demotion: self.demotion.global(),
            interfaces,
            vhids,
            checks,
        }
    }

    /// Stops VHID `i`: bow-out as master, VIPs removed, map entries removed.
    async fn stop_vhid(&mut self, i: usize) {
        self.feed(i, Event::Shutdown).await;
        let v = &self.vhids[i];
        let key = v.key();
        let vips: Vec<IpAddr> = v.plan.vip_addrs();
        if let Some(iface) = self.ifaces.get_mut(&v.plan.interface) {
            let _ = iface.dp.remove_vhid(&key);
            for vip in vips {
                let _ = iface.dp.remove_vip(&VipKey::new(key.ifindex, 0, vip));
            }
        }
    }

    /// SIGHUP / `reload`: VHIDs whose settings did not change keep their state (and
    /// mastership); removed ones stop, new or changed ones start.
    async fn reload(&mut self) -> Result<()> {
        let Some(path) = self.options.path.clone() else {
            bail!("started from the command line: there is no file to reload");
        };
        let config = Config::load(&path).map_err(|e| anyhow!(e))?;
        let fixed = self.options.config.agent.restart_needed(&config.agent);
        if !fixed.is_empty() {
            bail!(
                "[agent] {} cannot change on reload: restart the agent",
                fixed.join(", ")
            );
        }
        if config.agent.demotion != self.options.config.agent.demotion {
            tracing::warn!(
                "[agent] demotion is the value at start; the demotion now stays {} \
                 (change it with `carp-agent demote`)",
                self.demotion.global()
            );
        }
        let options = Options {
            config,
            path: Some(path),
        };
        let plans = preflight(&options)
            .await
            .map_err(|m| anyhow!(m.join("; ")))?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        let mut keep = vec![false; self.vhids.len()];
        let mut fresh = Vec::new();
        for plan in plans {
            match self.vhids.iter().position(|v| v.plan == plan) {
                Some(i) => keep[i] = true,
                None => fresh.push(plan),
            }
        }
        for i in (0..self.vhids.len()).rev() {
            if !keep[i] {
                self.stop_vhid(i).await;
                let v = self.vhids.remove(i);
                tracing::info!("vhid {} on {} removed", v.plan.vhid, v.plan.interface);
            }
        }
        let unchanged = self.vhids.len();
        self.options.config = options.config;
        self.add_vhids(fresh).await?;
        // Interfaces no VHID uses any more are detached (dropping the link).
        let used: Vec<String> = self
            .vhids
            .iter()
            .map(|v| v.plan.interface.clone())
            .collect();
        self.ifaces.retain(|name, _| used.contains(name));
        self.sync_checks().await;
        tracing::info!(
            "configuration reloaded: {} unchanged, {} started",
            vhids(unchanged),
            self.vhids.len() - unchanged
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        Ok(())
    }

    /// Graceful stop: masters bow out so backups take over at once, VIPs go, down hooks
    /// run (awaited up to their timeout).
    async fn shutdown(&mut self, hooks_rx: &mut mpsc::UnboundedReceiver<(u8, hooks::Outcome)>) {
        let masters = self
            .vhids
            .iter()
            .filter(|v| v.machine.state() == State::Master && v.plan.down_script.is_some())
            .count();
        for i in 0..self.vhids.len() {
            self.stop_vhid(i).await;
        }
        let timeout = Duration::from_secs_f64(self.options.config.agent.hook_timeout);
        for _ in 0..masters {
            if tokio::time::timeout(timeout, hooks_rx.recv())
                .await
                .is_err()
            {
                break;
            }
        }
        tracing::info!("carp-agent stopped");
    }
}
