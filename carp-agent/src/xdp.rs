//! The XDP data plane from the agent's side: loading and attaching the program, pinning
//! its maps for `bpftool`, writing VHID and VIP state, reading counters and advert events.

use crate::{
    election::{Advert, Timing},
    hmac::{Auth, AuthMode},
    memory,
};
use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        LinkOrder, Program, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{SchedClassifierLinkId, TcAttachOptions},
        xdp::XdpLinkId,
    },
};
use aya_log::EbpfLogger;
use carp_common::{
    Protocol, State,
    maps::{
        self, AdvertEvent, BalanceEntry, Flags, PeerEntry, PeerKey, VhidEntry, VhidKey, VhidKeys,
        VipEntry, VipKey, XdpStats,
    },
    wire,
};
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

/// The compiled XDP object, built by build.rs.
pub static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/carp"));

/// Name of the XDP program inside [`OBJECT`].
const PROGRAM: &str = "carp";

/// Name of the same program for tc ingress, where another program holds XDP.
const CLASSIFIER: &str = "carp_tc";

/// Where bpffs is mounted, and pins live by default.
const BPFFS: &str = "/sys/fs/bpf";

/// Whether `path` is on bpffs.
fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Maps pinned for inspection, and [`maps::KEYS`], pinned 0600 (see [`DataPlane::pin`]).
const PINNED: [&str; 7] = [
    maps::STATS,
    maps::VHIDS,
    maps::VIPS,
    maps::REPLAY,
    maps::PEERS,
    maps::BALANCE,
    maps::KEYS,
];

/// The mode of [`maps::KEYS`]'s pin: root's alone. The kernel pins with 0600 less the
/// umask (bpf_obj_do_pin), never more; this states it rather than trusting the umask.
const KEYS_PIN_MODE: u32 = 0o600;

/// One loaded instance of the program with its own maps.
pub struct DataPlane {
    ebpf: Ebpf,
}

/// The outcome of loading program `name` into the kernel.
fn verified(name: &str, load: Result<(), ProgramError>) -> Result<()> {
    load.with_context(|| format!("the kernel verifier rejected {name}"))?;
    // Loading parsed the kernel's BTF for the relocations (about 15 MB, freed now).
    memory::trim_heap();
    Ok(())
}

/// The map entry for a VHID: protocol, state and MACs, and for CARP whether `auth` has
/// OpenBSD's variant to verify too (its keys go to [`maps::KEYS`]: [`vhid_keys`]).
pub fn vhid_entry(
    protocol: Protocol,
    state: State,
    flags: Flags,
    mac: [u8; 6],
    if_mac: [u8; 6],
    auth: Option<&Auth>,
) -> VhidEntry {
    let mut entry = VhidEntry {
        state,
        protocol,
        flags,
        mac,
        if_mac,
        ..VhidEntry::default()
    };
    entry.flags.nov6ll = auth.is_some_and(|a| a.kernel_nov6ll().is_some());
    entry
}

/// What the program verifies a CARP VHID's digests with: the prepared HMACs, never the
/// password (but as good as it).
pub fn vhid_keys(auth: &Auth) -> VhidKeys {
    VhidKeys {
        auth: auth.kernel(),
        auth_nov6ll: auth.kernel_nov6ll().unwrap_or_default(),
        ..VhidKeys::default()
    }
}

/// What an advert the program handed over tells the election, and for CARP its counter
/// with the mode of the digest that verified it (a strict counter the program checked
/// against its record of the source; a BSD one is adopted, carp_input_c). The program verified the digest (or VRRP's
/// checksum) already.
pub fn advert_of(ev: &AdvertEvent) -> (Advert, Option<(u64, AuthMode)>) {
    let (timing, counter) = if ev.version == wire::VERSION {
        let timing = Timing::Carp {
            advbase: ev.advbase,
            advskew: ev.advskew,
        };
        let mode = if ev.strict != 0 {
            AuthMode::Strict
        } else {
            AuthMode::Bsd
        };
        (timing, Some((ev.counter, mode)))
    } else {
        let timing = Timing::Vrrp3 {
            priority: ev.priority,
            interval_cs: ev.interval_cs,
        };
        (timing, None)
    };
    let advert = Advert {
        src: ev.src_addr(),
        timing,
        demote: ev.demote,
    };
    (advert, counter)
}

/// Every entry of a [`maps::PEERS`] map.
fn peers_of<T: std::borrow::Borrow<MapData>>(
    map: &HashMap<T, PeerKey, PeerEntry>,
) -> Result<Vec<(PeerKey, PeerEntry)>> {
    Ok(map.iter().collect::<Result<_, _>>()?)
}

/// Decodes a ring buffer record.
pub fn parse_event(bytes: &[u8]) -> Option<AdvertEvent> {
    (bytes.len() >= size_of::<AdvertEvent>())
        // SAFETY: long enough, and AdvertEvent is plain old data.
        .then(|| unsafe { bytes.as_ptr().cast::<AdvertEvent>().read_unaligned() })
}

impl DataPlane {
    /// Loads the object and creates its maps; the programs load when first used (see
    /// [`DataPlane::program`]), so only the hook in use passes the verifier. The programs
    /// log (see [`DataPlane::take_logger`]) at the levels the `log` crate lets through at
    /// this time: none before logging is set up, nothing below info unless `CARP_LOG` asks
    /// for debug.
    pub fn load() -> Result<Self> {
        // aya-log's levels are log's, from Error = 1 to Trace = 5 (aya_log_common::Level).
        let level = log::max_level() as u8;
        let ebpf = EbpfLoader::new()
            .override_global(aya_log::LEVEL, &level, true)
            .load(OBJECT)
            .context("loading the carp XDP object (are you root, with BPF enabled?)")?;
        memory::release(OBJECT);
        Ok(Self { ebpf })
    }

    fn program_mut(&mut self, name: &str) -> Result<&mut Program> {
        self.ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from object"))
    }

    /// The XDP program, loaded, for attaching or `test_run`.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        let prog: &mut Xdp = self.program_mut(PROGRAM)?.try_into()?;
        if prog.fd().is_err() {
            verified(PROGRAM, prog.load())?;
        }
        Ok(prog)
    }

    /// The tc program, loaded, for attaching or `test_run`.
    pub fn classifier(&mut self) -> Result<&mut SchedClassifier> {
        let prog: &mut SchedClassifier = self.program_mut(CLASSIFIER)?.try_into()?;
        if prog.fd().is_err() {
            verified(CLASSIFIER, prog.load())?;
        }
        Ok(prog)
    }

    /// Attaches to `iface` through a bpf_link, so the program goes when this process does.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<XdpLinkId> {
        self.program()?
            .attach(iface, mode)
            .with_context(|| format!("attaching XDP to {iface} in {mode:?} mode"))
    }

    /// Attaches in native (driver) mode, falling back to generic (skb) mode where the
    /// driver has no XDP support; returns the mode it got.
    pub fn attach_best(&mut self, iface: &str) -> Result<(XdpLinkId, XdpMode)> {
        match self.attach(iface, XdpMode::Driver) {
            Ok(link) => Ok((link, XdpMode::Driver)),
            Err(native) => self
                .attach(iface, XdpMode::Skb)
                .map(|link| (link, XdpMode::Skb))
                .with_context(|| format!("native mode failed too: {native:#}")),
        }
    }

    /// Attaches the tc program to `iface`'s ingress through a tcx link (Linux 6.6), first
    /// among the tc programs there, so adverts and ARP reach it before any other
    /// classifier; XDP programs all run before it. The link goes with this process.
    pub fn attach_tc(&mut self, iface: &str) -> Result<SchedClassifierLinkId> {
        self.classifier()?
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .with_context(|| {
                format!("attaching to tc ingress of {iface} (tcx, Linux 6.6 or later)")
            })
    }

    /// Pins the inspectable maps under `dir` (e.g. /sys/fs/bpf/carp/eth0), replacing pins
    /// a previous agent left: a stale pin would otherwise show old state. Mounts bpffs on
    /// /sys/fs/bpf first where it is missing, as bpftool does: `ip netns exec` gives a
    /// fresh /sys without it (pins made there live in that mount namespace only; `[agent]
    /// netns` keeps the host's /sys/fs/bpf).
    pub fn pin(&self, dir: &Path) -> Result<()> {
        if dir.starts_with(BPFFS) && !is_bpffs(Path::new(BPFFS)) {
            std::fs::create_dir_all(BPFFS)?;
            nix::mount::mount(
                Some("bpf"),
                BPFFS,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .with_context(|| format!("mounting bpffs on {BPFFS}"))?;
            tracing::info!("mounted bpffs on {BPFFS} (it was missing)");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for name in PINNED {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("removing stale pin {}: {e}", path.display()),
            }
            self.ebpf
                .map(name)
                .with_context(|| format!("map {name} missing"))?
                .pin(&path)
                .with_context(|| format!("pinning {}", path.display()))?;
        }
        let keys = dir.join(maps::KEYS);
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(KEYS_PIN_MODE))
            .with_context(|| format!("making {} root-only", keys.display()))?;
        Ok(())
    }

    /// Removes the pins [`DataPlane::pin`] made under `dir`, and `dir` when it is left
    /// empty: a clean stop leaves nothing behind for bpftool to show.
    pub fn unpin(dir: &Path) {
        for name in PINNED {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(dir);
    }

    /// Removes pins that agents killed before their clean stop left behind, so bpftool
    /// shows no state nobody keeps: under `pin_dir`, the directories of interfaces
    /// `serving` does not name; under the default pin directory, those of `[agent] netns`
    /// namespaces that no longer exist (/run/netns has no such name).
    pub fn sweep(pin_dir: &Path, serving: &[&str]) {
        let has_pins = |dir: &Path| PINNED.iter().any(|name| dir.join(name).exists());
        let subdirs = |dir: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default()
        };
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        for dir in subdirs(pin_dir) {
            if has_pins(&dir) && name(&dir).is_some_and(|n| !serving.contains(&n.as_str())) {
                tracing::info!("removing stale pins {}", dir.display());
                Self::unpin(&dir);
            }
        }
        let base = Path::new(crate::config::DEFAULT_PIN_DIR);
        if pin_dir.starts_with(base) {
            for ns in subdirs(base) {
                let gone = name(&ns).is_some_and(|n| !Path::new("/run/netns").join(n).exists());
                if !has_pins(&ns) && gone {
                    tracing::info!(
                        "removing the pins of a namespace that is gone: {}",
                        ns.display()
                    );
                    subdirs(&ns).iter().for_each(|d| Self::unpin(d));
                    let _ = std::fs::remove_dir(&ns);
                }
            }
        }
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<HashMap<&mut MapData, K, V>> {
        Ok(HashMap::try_from(
            self.ebpf
                .map_mut(name)
                .with_context(|| format!("map {name} missing"))?,
        )?)
    }

    pub fn set_vhid(&mut self, key: &VhidKey, entry: &VhidEntry) -> Result<()> {
        self.hash_map::<VhidKey, VhidEntry>(maps::VHIDS)?
            .insert(key, entry, 0)?;
        Ok(())
    }

    pub fn remove_vhid(&mut self, key: &VhidKey) -> Result<()> {
        self.hash_map::<VhidKey, VhidEntry>(maps::VHIDS)?
            .remove(key)?;
        Ok(())
    }

    pub fn set_keys(&mut self, key: &VhidKey, keys: &VhidKeys) -> Result<()> {
        self.hash_map::<VhidKey, VhidKeys>(maps::KEYS)?
            .insert(key, keys, 0)?;
        Ok(())
    }

    pub fn remove_keys(&mut self, key: &VhidKey) -> Result<()> {
        self.hash_map::<VhidKey, VhidKeys>(maps::KEYS)?
            .remove(key)?;
        Ok(())
    }

    pub fn set_vip(&mut self, key: &VipKey, entry: &VipEntry) -> Result<()> {
        self.hash_map::<VipKey, VipEntry>(maps::VIPS)?
            .insert(key, entry, 0)?;
        Ok(())
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        self.hash_map::<VipKey, VipEntry>(maps::VIPS)?.remove(key)?;
        Ok(())
    }

    /// Writes the entry of the balanced group led by `leader`.
    pub fn set_balance(&mut self, leader: u8, entry: &BalanceEntry) -> Result<()> {
        let map = self
            .ebpf
            .map_mut(maps::BALANCE)
            .with_context(|| format!("map {} missing", maps::BALANCE))?;
        Array::<_, BalanceEntry>::try_from(map)?.set(u32::from(leader), entry, 0)?;
        Ok(())
    }

    /// Forgets the group led by `leader`: frames to its MAC pass untouched again.
    pub fn remove_balance(&mut self, leader: u8) -> Result<()> {
        self.set_balance(leader, &BalanceEntry::default())
    }

    /// The program's records of strict peers (see [`maps::PEERS`]).
    pub fn peers(&mut self) -> Result<Vec<(PeerKey, PeerEntry)>> {
        peers_of(&self.hash_map::<PeerKey, PeerEntry>(maps::PEERS)?)
    }

    /// The records of strict peers in the [`maps::PEERS`] pinned under `dir` by an agent
    /// that was killed (a clean stop removes its pins and stores them instead); none when
    /// there is no such pin.
    pub fn pinned_peers(dir: &Path) -> Vec<(PeerKey, PeerEntry)> {
        let path = dir.join(maps::PEERS);
        if !path.exists() {
            return Vec::new();
        }
        let read = || -> Result<Vec<(PeerKey, PeerEntry)>> {
            let map = aya::maps::Map::from_map_data(MapData::from_pin(&path)?)?;
            peers_of(&HashMap::<_, PeerKey, PeerEntry>::try_from(map)?)
        };
        read().unwrap_or_else(|e| {
            tracing::warn!("reading the records left in {}: {e:#}", path.display());
            Vec::new()
        })
    }

    /// Gives the program `records` of strict peers before it is attached, keyed for
    /// interface `ifindex`: the highest counter of each source wins.
    pub fn restore_peers(
        &mut self,
        ifindex: u32,
        records: impl IntoIterator<Item = (PeerKey, PeerEntry)>,
    ) -> Result<usize> {
        let mut map = self.hash_map::<PeerKey, PeerEntry>(maps::PEERS)?;
        let mut n = 0;
        for (mut key, entry) in records {
            key.vhid.ifindex = ifindex;
            if map.get(&key, 0).is_ok_and(|e| e.counter >= entry.counter) {
                continue;
            }
            map.insert(key, entry, 0)?;
            n += 1;
        }
        Ok(n)
    }

    /// Statistics summed over all CPUs.
    pub fn stats(&self) -> Result<XdpStats> {
        let map: PerCpuArray<_, XdpStats> = PerCpuArray::try_from(
            self.ebpf
                .map(maps::STATS)
                .with_context(|| format!("map {} missing", maps::STATS))?,
        )?;
        Ok(XdpStats::total(map.get(&0, 0)?.iter()))
    }

    /// The program's log records (see [`DataPlane::load`]), taken out of the instance (once):
    /// [`EbpfLogger::flush`] hands them to the `log` crate, which tracing-subscriber
    /// forwards to the agent's log (its `tracing-log` feature).
    pub fn take_logger(&mut self) -> Result<EbpfLogger<&'static dyn log::Log>> {
        EbpfLogger::init(&mut self.ebpf).context("opening the XDP program's log")
    }

    /// The advert ring buffer, taken out of the instance (once) for the event loop.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        Ok(RingBuf::try_from(
            self.ebpf
                .take_map(maps::EVENTS)
                .with_context(|| format!("map {} missing or already taken", maps::EVENTS))?,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{Config, Event, Machine, State};
    use proptest::prelude::*;

    proptest! {
        /// Any record the ring buffer could hold, every field arbitrary, goes through the
        /// agent's receive path (decode, convert, the election in every state) without a
        /// panic or an overflow.
        #[test]
        fn any_event_is_handled(bytes in proptest::collection::vec(any::<u8>(), 0..80), carp: bool, at in 0u64..1_000_000) {
            let Some(ev) = parse_event(&bytes) else {
                prop_assert!(bytes.len() < size_of::<AdvertEvent>());
                return Ok(());
            };
            let (advert, counter) = advert_of(&ev);
            prop_assert_eq!(counter.is_some(), ev.version == wire::VERSION);
            let timing = if carp {
                Timing::Carp { advbase: 1, advskew: 0 }
            } else {
                Timing::Vrrp3 { priority: 100, interval_cs: 100 }
            };
            let mut m = Machine::new(Config {
                timing,
                preempt: true,
                local_addr: "192.0.2.1".parse().unwrap(),
                local_other: None,
                shared_source: false,
                advert_on_yield: false,
                hand_over: true,
            });
            let now = std::time::Duration::from_millis(at);
            for event in [Event::Advert(advert), Event::LinkUp, Event::Advert(advert), Event::Timer] {
                m.handle(now, event);
            }
            m.handle(now + std::time::Duration::from_secs(1000), Event::Timer);
            prop_assert!(m.state() != State::INIT);
            m.handle(now + std::time::Duration::from_secs(1001), Event::Advert(advert));
        }
    }
}
