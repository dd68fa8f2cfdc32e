//! The effects on an interface: the XDP program attached to it and its maps, the advert
//! reader, the sockets adverts and announcements leave by, and where a master's VIPs go.

use crate::{
    config::{Plan, VipPlacement, XdpModeSetting},
    control::{Attached, InterfaceStatus},
    netlink::{Link, Netlink},
    send::{PacketSocket, UnicastSocket},
    state,
    vhid::{Outgoing, Restore, Vhid, balance_entry},
    vlan_offload::{self, Choice, VlanFacts},
    xdp::{DataPlane, parse_event},
};
use anyhow::{Context as _, Result, anyhow};
use aya::{maps::RingBuf, programs::XdpMode};
use aya_log::EbpfLogger;
use carp_common::maps::AdvertEvent;
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::AbortHandle};

/// What status calls an XDP `mode`.
fn attached(mode: XdpMode) -> Attached {
    if mode == XdpMode::Driver {
        Attached::Native
    } else {
        Attached::Skb
    }
}

/// An attached interface.
pub struct Iface {
    pub link: Link,
    dp: DataPlane,
    hook: Attached,
    packet: PacketSocket,
    /// The socket that holds the interface promiscuous, for virtual MACs.
    promiscuous: Option<PacketSocket>,
    /// Where the maps are pinned for bpftool.
    pinned: Option<PathBuf>,
    /// Where the records of strict peers are stored when the interface is let go.
    state_dir: PathBuf,
    /// `arp_ignore` and `arp_announce` as they were before loopback placement set them,
    /// and the file that remembers them for a successor should this agent be killed.
    sysctls: Vec<(String, String)>,
    saved: Option<PathBuf>,
    /// Raw sockets for unicast adverts, one per source address.
    unicast: BTreeMap<IpAddr, UnicastSocket>,
    /// The advert reader, stopped with the interface: its ring buffer never wakes it again.
    reader: AbortHandle,
    /// The reader of the program's log lines, likewise.
    logger: AbortHandle,
}

impl Iface {
    /// Loads and attaches the XDP program to `link` (at tc where XDP would not see the
    /// VLAN tags of `vlans`: [`vlan_offload::choose`]), pins its maps under `pin_dir`, and
    /// hands the adverts it verifies to `events`; what must survive a killed agent is kept
    /// beside its control `socket`. The program starts with the records of strict peers
    /// a killed agent left pinned and those stored in `state_dir`, so no advert it refused
    /// before is let in again.
    #[allow(clippy::too_many_arguments, reason = "each is a setting of its own")]
    pub fn attach(
        link: &Link,
        setting: XdpModeSetting,
        vlans: VlanFacts,
        pin_dir: &Path,
        state_dir: &Path,
        socket: &Path,
        vips_on: VipPlacement,
        events: mpsc::Sender<AdvertEvent>,
    ) -> Result<Self> {
        let mut dp = DataPlane::load()?;
        let pins = pin_dir.join(&link.name);
        let records = DataPlane::pinned_peers(&pins)
            .into_iter()
            .chain(state::load_peers(state_dir, &link.name, link.index));
        let restored = dp.restore_peers(link.index, records)?;
        if restored > 0 {
            tracing::info!("{}: {restored} records of strict peers restored", link.name);
        }
        let xdp = |dp: &mut DataPlane, mode| dp.attach(&link.name, mode).map(|_| attached(mode));
        let best_xdp = |dp: &mut DataPlane| {
            if link.veth {
                tracing::info!(
                    "{} is a veth: generic XDP, as native XDP_TX there needs an XDP program on the peer",
                    link.name
                );
                xdp(dp, XdpMode::Skb)
            } else {
                dp.attach_best(&link.name).map(|(_, mode)| attached(mode))
            }
        };
        let choice = vlan_offload::choose(setting, vlans);
        let hidden = "rx VLAN offload is on and VLAN interfaces sit on it, so XDP would see \
                      their frames as untagged";
        if choice == Choice::Warn {
            tracing::warn!(
                "{}: {hidden}; xdp_mode = \"auto\" or \"tc\" attaches at tc, which sees the tags",
                link.name
            );
        }
        let attached = match (choice, setting) {
            (Choice::Tc, _) => {
                tracing::info!(
                    "{}: {hidden}: attaching at tc ingress, which sees the tags",
                    link.name
                );
                dp.attach_tc(&link.name).map(|_| Attached::Tc).or_else(|e| {
                    tracing::warn!(
                        "{}: tc failed ({e:#}): XDP instead, blind to offloaded VLAN tags",
                        link.name
                    );
                    best_xdp(&mut dp)
                })
            }
            (_, XdpModeSetting::Native) => xdp(&mut dp, XdpMode::Driver),
            (_, XdpModeSetting::Skb) => xdp(&mut dp, XdpMode::Skb),
            (_, XdpModeSetting::Tc) => dp.attach_tc(&link.name).map(|_| Attached::Tc),
            (_, XdpModeSetting::Auto) => best_xdp(&mut dp).or_else(|e| {
                tracing::warn!(
                    "XDP on {} is taken ({e:#}): attaching at tc ingress instead, after the XDP programs",
                    link.name
                );
                dp.attach_tc(&link.name)
                    .map(|_| Attached::Tc)
                    .with_context(|| format!("XDP failed first: {e:#}"))
            }),
        };
        let hook = attached.map_err(|e| {
            anyhow!(
                "{e:#}; if another carp-agent already serves {}, stop it or add its VHIDs to \
                 this agent's configuration",
                link.name
            )
        })?;
        tracing::info!("attached to {} ({hook})", link.name);
        let pinned = match dp.pin(&pins) {
            Ok(()) => Some(pins),
            Err(e) => {
                tracing::warn!("maps not pinned for bpftool: {e:#}");
                None
            }
        };
        let ring = dp.take_events()?;
        let log = dp.take_logger()?;
        let mut sysctls = Vec::new();
        let mut saved = None;
        if vips_on == VipPlacement::Loopback {
            // Answer ARP only for the interface's own addresses, and never announce a
            // VIP from it: the VIPs on lo are the XDP program's to answer for. What they
            // were is kept in a file, so the successor of a killed agent restores it too.
            let file = socket.with_extension(format!("{}.sysctl", link.name));
            let left: Vec<String> = std::fs::read_to_string(&file)
                .map(|t| t.lines().map(str::to_owned).collect())
                .unwrap_or_default();
            for (i, (name, value)) in [("arp_ignore", "1"), ("arp_announce", "2")]
                .into_iter()
                .enumerate()
            {
                let path = format!("/proc/sys/net/ipv4/conf/{}/{name}", link.name);
                let before = match left.get(i) {
                    Some(v) => v.clone(),
                    None => std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {path}"))?
                        .trim()
                        .to_owned(),
                };
                std::fs::write(&path, value).with_context(|| format!("setting {path}"))?;
                sysctls.push((path, before));
            }
            let kept: Vec<&str> = sysctls.iter().map(|(_, v)| v.as_str()).collect();
            if let Err(e) = std::fs::write(&file, kept.join("\n")) {
                tracing::warn!("{}: {e}", file.display());
            }
            saved = Some(file);
        }
        let packet = PacketSocket::bind(link.index)?;
        // Last, so a failed attach leaves no reader behind.
        let reader = spawn_reader(ring, events)?;
        let logger = spawn_logger(log)?;
        Ok(Self {
            link: link.clone(),
            dp,
            hook,
            packet,
            promiscuous: None,
            sysctls,
            saved,
            pinned,
            state_dir: state_dir.to_owned(),
            unicast: BTreeMap::new(),
            reader,
            logger,
        })
    }

    /// A socket that makes the interface take frames to virtual MACs, unless one already
    /// does: taken before a start is applied, kept by [`Iface::hold_promiscuity`] when it is.
    pub fn promiscuity(&self) -> Result<Option<PacketSocket>> {
        if self.promiscuous.is_some() {
            return Ok(None);
        }
        let socket = PacketSocket::bind(self.link.index)?;
        socket.promiscuous(self.link.index)?;
        Ok(Some(socket))
    }

    /// Keeps the interface promiscuous until it is let go.
    pub fn hold_promiscuity(&mut self, socket: PacketSocket) {
        self.promiscuous.get_or_insert(socket);
    }

    /// Sends one advert's frames and payloads; whether all of them went out.
    pub fn send(&mut self, out: &[Outgoing]) -> bool {
        let mut ok = true;
        for o in out {
            ok &= match o {
                Outgoing::Frame(f) => self.packet.send(f).is_ok(),
                Outgoing::Unicast { from, to, payload } => {
                    // Bound to the source, so the peer sees the address ties are broken on.
                    let sock = match self.unicast.entry(*from) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            match UnicastSocket::bind(&self.link, *from) {
                                Ok(s) => e.insert(s),
                                Err(err) => {
                                    tracing::error!("{err:#}");
                                    ok = false;
                                    continue;
                                }
                            }
                        }
                    };
                    sock.send(payload, *to).is_ok()
                }
            };
        }
        ok
    }

    /// Sends gratuitous ARPs and NAs (best effort, as BSD's).
    pub fn announce(&self, frames: &[Vec<u8>]) {
        for f in frames {
            let _ = self.packet.send(f);
        }
    }

    /// Writes a VHID's entry (its state and lease) into the map.
    pub fn program(&mut self, v: &Vhid) -> Result<()> {
        self.dp
            .set_vhid(&v.key(), &v.entry(self.link.mac, monotonic_ns()))
    }

    /// Adds a VHID's entries: its keys, its own and its VIPs'. The keys first: the entry
    /// makes the program verify adverts, with them. The maps hold as many as a valid
    /// configuration has (`Config::validate` counts the VIPs per interface), so a write
    /// fails only when the kernel is out of memory: logged, as [`Iface::program`]'s are,
    /// for it cannot be undone once the VHID runs.
    pub fn register(&mut self, v: &Vhid) {
        let keys = v.keys();
        let written = keys
            .as_ref()
            .map_or(Ok(()), |k| self.dp.set_keys(&v.key(), k))
            .and_then(|()| self.program(v))
            .and_then(|()| {
                v.vip_entries()
                    .iter()
                    .try_for_each(|(key, entry)| self.dp.set_vip(key, entry))
            });
        if let Err(e) = written {
            tracing::error!("vhid {}: writing the XDP maps failed: {e:#}", v.plan.vhid);
        }
    }

    /// Removes a VHID's entries: the program no longer knows it. The VIPs' only when they
    /// point at it, not when they are a balanced group's, which its leader holds.
    pub fn unregister(&mut self, v: &Vhid) {
        let _ = self.dp.remove_vhid(&v.key());
        let _ = self.dp.remove_keys(&v.key());
        for (key, _) in v.vip_entries() {
            let _ = self.dp.remove_vip(&key);
        }
    }

    /// Writes the share of the balanced group of `leader` whose VHIDs running here are
    /// `members` (see [`balance_entry`]).
    pub fn program_balance(&mut self, leader: u8, members: &[&Vhid]) -> Result<()> {
        let Some(group) = members.iter().find_map(|v| v.plan.balance.as_ref()) else {
            return Ok(());
        };
        let entry = balance_entry(
            group,
            members.iter().copied(),
            self.link.mac,
            monotonic_ns(),
        );
        self.dp.set_balance(leader, &entry)
    }

    /// Removes a balanced group's entry: frames to its MAC pass untouched again.
    pub fn forget_balance(&mut self, leader: u8) {
        let _ = self.dp.remove_balance(leader);
    }

    /// Removes the entries of VIPs a VHID no longer has.
    pub fn forget(&mut self, ifindex: u32, vips: &[(IpAddr, u8)]) {
        for (vip, _) in vips {
            let _ = self
                .dp
                .remove_vip(&carp_common::maps::VipKey::new(ifindex, 0, *vip));
        }
    }

    pub fn status(&self) -> InterfaceStatus {
        InterfaceStatus {
            name: self.link.name.clone(),
            up: self.link.up,
            xdp_mode: self.hook,
            xdp: self
                .dp
                .stats()
                .map(|s| InterfaceStatus::counters(&s))
                .unwrap_or_default(),
        }
    }
}

/// Letting go of an interface gives back what attaching changed: the program goes with its
/// link, promiscuity with the socket, the sysctls are set back; the records of strict
/// peers are stored for the next start.
impl Drop for Iface {
    fn drop(&mut self) {
        self.reader.abort();
        self.logger.abort();
        let stored = self
            .dp
            .peers()
            .and_then(|r| state::save_peers(&self.state_dir, &self.link.name, &r));
        if let Err(e) = stored {
            tracing::error!(
                "{}: storing the records of strict peers: {e:#}",
                self.link.name
            );
        }
        for (path, before) in &self.sysctls {
            match std::fs::write(path, before) {
                // The interface went away, and its settings with it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!("restoring {path}: {e}"),
                Ok(()) => {}
            }
        }
        if let Some(file) = &self.saved {
            let _ = std::fs::remove_file(file);
        }
        if let Some(dir) = &self.pinned {
            DataPlane::unpin(dir);
        }
    }
}

/// Whether the host forwards IPv6 on `interface`, which makes CARP's NAs carry the Router
/// flag (see `maps::Flags::router`).
pub fn ipv6_forwarding(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{interface}/forwarding"))
        .is_ok_and(|v| v.trim() == "1")
}

/// CLOCK_MONOTONIC in nanoseconds: the XDP program's `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

fn clock_ns(clock: nix::time::ClockId) -> u64 {
    let t = nix::time::clock_gettime(clock).expect("the clock is always there");
    u64::try_from(t.tv_sec())
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
}

/// Reads a data plane's ring buffer until aborted, forwarding events to the loop.
fn spawn_reader(
    rb: RingBuf<aya::maps::MapData>,
    tx: mpsc::Sender<AdvertEvent>,
) -> Result<AbortHandle> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long
    // as the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the advert ring buffer: {e}"))?;
    let task = tokio::spawn(async move {
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
    Ok(task.abort_handle())
}

/// Forwards the program's log records to the agent's log as they come, forever.
fn spawn_logger(logger: EbpfLogger<&'static dyn log::Log>) -> Result<AbortHandle> {
    // SAFETY: the logger owns its ring buffer's map fd, which stays open and the same for as
    // long as the AsyncFd owns the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow!("polling the XDP program's log: {e}"))?;
    let task = tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(task.abort_handle())
}

/// Where a master's VIPs go: on `lo` as host addresses (with a route for a subnet the
/// interface lacks) or on the interface; added on becoming MASTER, removed on leaving it.
pub struct Placement {
    nl: Netlink,
    lo: u32,
    on: VipPlacement,
}

impl Placement {
    pub async fn new(nl: Netlink, on: VipPlacement) -> Result<Self> {
        let lo = nl.link("lo").await?.index;
        Ok(Self { nl, lo, on })
    }

    /// The interface index and prefix length a VIP is configured with.
    fn home(&self, ifindex: u32, vip: IpAddr, prefix: u8) -> (u32, u8) {
        match self.on {
            VipPlacement::Interface => (ifindex, prefix),
            // A host address: a subnet on lo would make the whole subnet local.
            VipPlacement::Loopback => (self.lo, if vip.is_ipv4() { 32 } else { 128 }),
        }
    }

    /// Crash safety: removes the VIPs of `plan` a killed predecessor left on `link` or lo
    /// (best effort, as [`Placement::add`]).
    pub async fn clear(&self, plan: &Plan, link: &Link) {
        for (vip, _) in &plan.vips {
            for (index, name) in [(link.index, link.name.as_str()), (self.lo, "lo")] {
                match self.nl.del_vip(index, *vip).await {
                    Ok(true) => {
                        tracing::info!("removed {vip} from {name}, left by a previous agent");
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!("vhid {}: {e:#}", plan.vhid),
                }
            }
        }
    }

    /// Configures a new master's VIPs, and routes for subnets the interface lacks.
    pub async fn add(&self, v: &Vhid) {
        for (vip, prefix) in &v.plan.vips {
            let (index, prefix) = self.home(v.ifindex, *vip, *prefix);
            if let Err(e) = self.nl.add_vip(index, *vip, prefix).await {
                tracing::error!("vhid {}: {e:#}", v.plan.vhid);
            }
        }
        for (vip, prefix) in v.routed() {
            if let Err(e) = self.nl.add_subnet_route(v.ifindex, *vip, *prefix).await {
                tracing::error!("vhid {}: {e:#}", v.plan.vhid);
            }
        }
    }

    /// Puts back one VIP or route of a master on `ifindex` that something else removed
    /// (see [`Vhid::upkeep`]); whether it was missing.
    pub async fn restore(&self, ifindex: u32, what: Restore) -> Result<bool> {
        match what {
            Restore::Vip(vip, prefix) => {
                let (index, prefix) = self.home(ifindex, vip, prefix);
                self.nl.add_vip(index, vip, prefix).await
            }
            Restore::Route(vip, prefix) => self.nl.add_subnet_route(ifindex, vip, prefix).await,
        }
    }

    /// Removes what [`Placement::add`] configured.
    pub async fn remove(&self, v: &Vhid) {
        self.withdraw(v.ifindex, &v.plan.vips, v.routed()).await;
    }

    /// Removes `vips` and the routes of `routed` from a master on `ifindex`.
    pub async fn withdraw(&self, ifindex: u32, vips: &[(IpAddr, u8)], routed: &[(IpAddr, u8)]) {
        for (vip, prefix) in routed {
            if let Err(e) = self.nl.del_subnet_route(ifindex, *vip, *prefix).await {
                tracing::error!("{e:#}");
            }
        }
        for (vip, prefix) in vips {
            let (index, _) = self.home(ifindex, *vip, *prefix);
            if let Err(e) = self.nl.del_vip(index, *vip).await {
                tracing::error!("{e:#}");
            }
        }
    }
}
