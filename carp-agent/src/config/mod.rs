//! Configuration: the TOML file (default /etc/carp/carp.toml) and ucarp's single-VHID
//! command line both become a [`Config`]; [`Config::validate`] turns it into [`Plan`]s or
//! a list of mistakes, each one sentence. Nothing is applied before it all validates.

use crate::{
    election::{Config as MachineConfig, Timing},
    hmac::AuthMode,
};
pub use carp_common::Protocol;
use carp_common::{maps::MAX_VIPS, vrrp};
use serde::Deserialize;
use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

pub mod manual;

pub const DEFAULT_PATH: &str = "/etc/carp/carp.toml";
pub const DEFAULT_SOCKET: &str = "/run/carp/agent.sock";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/carp";
/// The unit's `StateDirectory=carp`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/carp";

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub agent: Agent,
    #[serde(default, rename = "vhid")]
    pub vhids: Vec<VhidConfig>,
    #[serde(default, rename = "balance")]
    pub balanced: Vec<BalanceConfig>,
    #[serde(default, rename = "check")]
    pub checks: Vec<Check>,
}

/// A health check (keepalived's `vrrp_script` + `track_script`, OpenBSD's ifstated
/// running `carpdemote`): a command run every `interval`; while it fails the host, or
/// one demotion group, is demoted so that a preempting backup takes over.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Names it in logs, the status and metrics.
    pub name: String,
    /// Program and arguments, no shell; exit status 0 is healthy.
    pub command: Vec<String>,
    /// Seconds from the end of a run to the start of the next.
    #[serde(default = "default_check_interval")]
    pub interval: f64,
    /// Seconds a run may take; one that takes longer is killed and counts as failed.
    #[serde(default = "default_check_timeout")]
    pub timeout: f64,
    /// Failed runs in a row that make a healthy check failing.
    #[serde(default = "default_fall_rise")]
    pub fall: u32,
    /// Successful runs in a row that make a failing check healthy.
    #[serde(default = "default_fall_rise")]
    pub rise: u32,
    /// Demotion added while failing; the default, CARP_MAXSKEW like a downed link, makes
    /// this host lose to any backup.
    #[serde(default = "default_check_demote")]
    pub demote: i32,
    /// Demote only the VHIDs of this group, instead of the whole host.
    #[serde(default)]
    pub group: Option<String>,
}

fn default_check_interval() -> f64 {
    2.0
}
fn default_check_timeout() -> f64 {
    1.0
}
fn default_fall_rise() -> u32 {
    2
}
fn default_check_demote() -> i32 {
    crate::demotion::IFDOWN_FACTOR
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    /// Control socket for `carp-agent status` and friends.
    pub socket: PathBuf,
    /// bpffs directory the maps are pinned under, one subdirectory per interface.
    pub pin_dir: PathBuf,
    /// Where the boot count of strict counters and the strict peers' records are kept
    /// across restarts and reboots (`crate::state`).
    pub state_dir: PathBuf,
    /// Seconds a hook may run before it is killed.
    pub hook_timeout: f64,
    /// Initial global demotion (FreeBSD `net.inet.carp.demotion`).
    pub demotion: i32,
    /// Where the program attaches (XDP, or tc ingress).
    pub xdp_mode: XdpModeSetting,
    /// Where a master puts its VIPs.
    pub vips_on: VipPlacement,
    /// Address to serve Prometheus metrics on (e.g. "127.0.0.1:9720"); none by default.
    pub metrics: Option<std::net::SocketAddr>,
    /// Network namespace to run in, a name under /run/netns as `ip netns add` makes it
    /// (keepalived's `net_namespace`). Unlike `ip netns exec` it keeps the host's
    /// /sys/fs/bpf, so the pins stay visible to bpftool.
    pub netns: Option<String>,
}

impl Agent {
    /// The settings that differ in `new` and that a reload cannot apply: the agent binds,
    /// attaches, places VIPs and enters its namespace with them once, at start.
    pub fn restart_needed(&self, new: &Agent) -> Vec<&'static str> {
        [
            ("socket", self.socket != new.socket),
            ("pin_dir", self.pin_dir != new.pin_dir),
            ("state_dir", self.state_dir != new.state_dir),
            ("xdp_mode", self.xdp_mode != new.xdp_mode),
            ("vips_on", self.vips_on != new.vips_on),
            ("metrics", self.metrics != new.metrics),
            ("netns", self.netns != new.netns),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// Where the VIPs are configured while MASTER.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VipPlacement {
    /// On `lo` as host addresses, with arp_ignore=1 / arp_announce=2 on the CARP
    /// interface: only the XDP program answers ARP/NDP for them, so an agent killed
    /// before it could remove its VIPs leaves nothing answering for them (FreeBSD's
    /// carp_iamatch guarantee).
    #[default]
    Loopback,
    /// On the CARP interface itself, as FreeBSD shows them; the kernel answers ARP for
    /// them whenever no XDP program is attached, e.g. after the agent was killed.
    Interface,
}

/// Where the program attaches: XDP in one of its modes, or tc ingress.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeSetting {
    /// Native where the driver supports it, else generic; generic on veth, whose native
    /// XDP_TX needs an XDP program on the peer as well. Tc ingress where another program
    /// holds the XDP hook, or where rx VLAN offload hides the tags of VLAN interfaces on
    /// it from XDP ([`crate::vlan_offload`]).
    #[default]
    Auto,
    Native,
    Skb,
    /// Tc ingress (tcx) only, leaving the XDP hook to other programs, including those
    /// attached after the agent started.
    Tc,
}

impl Agent {
    /// Agents of several namespaces on one host must not share a control socket, pins or
    /// state: with `netns`, the default paths gain the namespace's name (as keepalived's
    /// pid files do).
    fn scope_to_netns(&mut self) {
        let Some(ns) = &self.netns else { return };
        if self.socket == Path::new(DEFAULT_SOCKET) {
            self.socket = Path::new(DEFAULT_SOCKET).with_file_name(format!("{ns}.sock"));
        }
        if self.pin_dir == Path::new(DEFAULT_PIN_DIR) {
            self.pin_dir = Path::new(DEFAULT_PIN_DIR).join(ns);
        }
        if self.state_dir == Path::new(DEFAULT_STATE_DIR) {
            self.state_dir = Path::new(DEFAULT_STATE_DIR).join(ns);
        }
    }
}

impl Default for Agent {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            pin_dir: DEFAULT_PIN_DIR.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            hook_timeout: 10.0,
            demotion: 0,
            xdp_mode: XdpModeSetting::Auto,
            vips_on: VipPlacement::Loopback,
            metrics: None,
            netns: None,
        }
    }
}

/// Which MAC answers for the VIPs and sources the adverts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MacMode {
    /// 00:00:5e:00:01:vhid, as BSD CARP and VRRP do; the interface goes promiscuous.
    #[default]
    Virtual,
    /// The interface's own MAC, as ucarp does.
    Interface,
}

/// A `[[vhid]]` table as written; [`Config::validate`] makes a [`Plan`] of it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VhidConfig {
    pub interface: String,
    pub vhid: u8,
    #[serde(default)]
    pub protocol: Protocol,
    /// Addresses with optional prefix length: "192.0.2.50/24", "2001:db8::50/64".
    pub vips: Vec<String>,
    #[serde(default = "default_advbase")]
    pub advbase: u8,
    #[serde(default)]
    pub advskew: u8,
    /// VRRPv3 priority (1..=255).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// VRRPv3 advert interval in milliseconds (10 ms steps).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    /// Where the password comes from (never the command line).
    #[serde(default)]
    pub pass_file: Option<PathBuf>,
    #[serde(default)]
    pub pass_env: Option<String>,
    /// A systemd credential name, read from $CREDENTIALS_DIRECTORY.
    #[serde(default)]
    pub pass_credential: Option<String>,
    /// What the digest covers: `bsd` (every CARP peer) or `strict` (carp-agents only).
    #[serde(default)]
    pub auth: AuthMode,
    #[serde(default)]
    pub preempt: bool,
    /// Demotion groups this VHID counts (OpenBSD `carpdemote`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Unicast peers instead of the multicast group (FreeBSD `peer`/`peer6`).
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    #[serde(default)]
    pub mac: MacMode,
    /// Gratuitous ARPs / unsolicited NAs sent on becoming master.
    #[serde(default = "default_garp")]
    pub garp_count: u8,
    /// Source address of adverts, one of the interface's (the VHID waits until it is
    /// there); default: the interface's first address of the family.
    #[serde(default)]
    pub src: Option<IpAddr>,
    #[serde(default)]
    pub up_script: Option<PathBuf>,
    #[serde(default)]
    pub down_script: Option<PathBuf>,
}

/// A `[[balance]]` table: OpenBSD's carp interface with several VHIDs (`carpnodes`) and
/// `balancing ip`, one VIP set shared by every host, each keeping the flows of the VHIDs
/// it is MASTER of. Each VHID runs its own election, as a `[[vhid]]` of its own would.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BalanceConfig {
    pub interface: String,
    /// `vhid:advskew` pairs, comma-separated, as OpenBSD's `carpnodes 1:0,2:100`: the same
    /// VHIDs on every host, each with this host's advskew.
    pub carpnodes: String,
    /// `ip`, the only mode supported (see the README).
    pub balancing: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub vips: Vec<String>,
    #[serde(default = "default_advbase")]
    pub advbase: u8,
    #[serde(default)]
    pub pass_file: Option<PathBuf>,
    #[serde(default)]
    pub pass_env: Option<String>,
    #[serde(default)]
    pub pass_credential: Option<String>,
    #[serde(default)]
    pub preempt: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub src: Option<IpAddr>,
}

/// A VHID's place in a balanced group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    /// The group's VHIDs, ascending: OpenBSD's carp_vhids_ioctl sorts `carpnodes` by
    /// VHID, so bit i of the mask is the i-th lowest and the lowest leads.
    pub vhids: Vec<u8>,
    /// This VHID's position in `vhids`.
    pub index: usize,
}

impl Balance {
    /// The leader VHID, whose (multicast) MAC is the group's and whose master answers ARP
    /// and NS for the VIPs.
    pub fn leader(&self) -> u8 {
        self.vhids[0]
    }

    pub fn is_leader(&self) -> bool {
        self.index == 0
    }
}

impl BalanceConfig {
    /// The group's VHIDs as `[[vhid]]` tables with their advskews, ascending, or what is
    /// wrong with them.
    fn nodes(&self) -> Result<Vec<VhidConfig>, Vec<String>> {
        let mut wrong = Vec::new();
        if self.balancing != "ip" {
            wrong.push(format!(
                "balancing = {:?} is not supported: only \"ip\" (OpenBSD's ip-stealth, \
                 ip-unicast and arp modes are not)",
                self.balancing
            ));
        }
        if self.protocol != Protocol::CARP {
            wrong.push("balancing is CARP's (OpenBSD carpnodes): VRRPv3 has none".into());
        }
        let mut nodes: Vec<(u8, u8)> = Vec::new();
        for pair in self.carpnodes.split(',') {
            let parsed = pair
                .trim()
                .split_once(':')
                .and_then(|(v, s)| Some((v.trim().parse::<u8>().ok()?, s.trim().parse().ok()?)));
            match parsed {
                Some((0, _)) => wrong.push("carpnodes: vhid must be 1..=255".into()),
                Some((_, 255)) => wrong.push("carpnodes: advskew must be 0..=254".into()),
                Some((vhid, _)) if nodes.iter().any(|(v, _)| *v == vhid) => {
                    wrong.push(format!("carpnodes: vhid {vhid} is listed twice"))
                }
                Some(node) => nodes.push(node),
                None => wrong.push(format!(
                    "carpnodes: {pair:?} is not vhid:advskew (as in \"1:0,2:100\")"
                )),
            }
        }
        if nodes.len() < 2 || nodes.len() > carp_common::balance::MAX_NODES {
            wrong.push(format!(
                "carpnodes: a balanced group has 2..={} VHIDs, this one {}",
                carp_common::balance::MAX_NODES,
                nodes.len()
            ));
        }
        if !wrong.is_empty() {
            return Err(wrong);
        }
        nodes.sort();
        Ok(nodes
            .into_iter()
            .map(|(vhid, advskew)| VhidConfig {
                advbase: self.advbase,
                advskew,
                pass_file: self.pass_file.clone(),
                pass_env: self.pass_env.clone(),
                pass_credential: self.pass_credential.clone(),
                preempt: self.preempt,
                groups: self.groups.clone(),
                src: self.src,
                ..VhidConfig::new(&self.interface, vhid, self.vips.clone())
            })
            .collect())
    }
}

fn default_advbase() -> u8 {
    carp_common::wire::DEFAULT_ADVBASE
}
fn default_priority() -> u8 {
    carp_common::vrrp::PRIORITY_DEFAULT
}
fn default_interval_ms() -> u32 {
    1000
}
fn default_garp() -> u8 {
    2
}

impl VhidConfig {
    /// A VHID on `interface` with every optional setting at its default.
    pub fn new(interface: &str, vhid: u8, vips: Vec<String>) -> Self {
        Self {
            interface: interface.to_owned(),
            vhid,
            protocol: Protocol::CARP,
            vips,
            advbase: default_advbase(),
            advskew: 0,
            priority: default_priority(),
            interval_ms: default_interval_ms(),
            pass_file: None,
            pass_env: None,
            pass_credential: None,
            auth: AuthMode::Bsd,
            preempt: false,
            groups: Vec::new(),
            peers: Vec::new(),
            mac: MacMode::Virtual,
            garp_count: default_garp(),
            src: None,
            up_script: None,
            down_script: None,
        }
    }
}

/// One configuration mistake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mistake {
    /// Where: "vhid 1 on eth0", or "config".
    pub at: String,
    pub what: String,
}

impl fmt::Display for Mistake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

/// A validated VHID, ready to run (the password read, the VIPs parsed).
#[derive(Clone, PartialEq)]
pub struct Plan {
    pub interface: String,
    pub vhid: u8,
    pub vips: Vec<(IpAddr, u8)>,
    pub timing: Timing,
    pub preempt: bool,
    pub password: Vec<u8>,
    pub auth: AuthMode,
    pub groups: Vec<String>,
    pub peers: Vec<IpAddr>,
    pub mac: MacMode,
    pub garp_count: u8,
    pub src: Option<IpAddr>,
    pub up_script: Option<PathBuf>,
    pub down_script: Option<PathBuf>,
    /// Set for a VHID of a balanced group.
    pub balance: Option<Balance>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password never reaches a log.
        f.debug_struct("Plan")
            .field("interface", &self.interface)
            .field("vhid", &self.vhid)
            .field("vips", &self.vips)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// The protocol, as the timing says.
    pub fn protocol(&self) -> Protocol {
        match self.timing {
            Timing::Carp { .. } => Protocol::CARP,
            Timing::Vrrp3 { .. } => Protocol::VRRPV3,
        }
    }

    pub fn vip_addrs(&self) -> Vec<IpAddr> {
        self.vips.iter().map(|(a, _)| *a).collect()
    }

    /// The election settings, given the addresses adverts go out from.
    pub fn machine(&self, sources: &crate::addrs::Sources) -> MachineConfig {
        MachineConfig {
            timing: self.timing,
            preempt: self.preempt,
            local_addr: sources.first,
            local_other: sources.other,
            shared_source: sources.from_vip,
            advert_on_yield: self.mac == MacMode::Interface && self.balance.is_none(),
            hand_over: self.balance.is_none(),
        }
    }
}

/// Parses "addr" or "addr/len".
pub fn parse_vip(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?} has a prefix length outside 0..={max}"))?,
    };
    Ok((addr, len))
}

/// A TOML error by line and column, without the line itself: it may hold a secret the
/// operator put in the wrong place, and errors go to the journal.
fn toml_error(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

/// The longest hook timeout, check interval or check timeout: a day. Anything longer is a
/// mistake, and infinite or huge values do not fit a `Duration`.
pub const MAX_SECONDS: f64 = 86_400.0;

/// A positive, finite number of seconds up to [`MAX_SECONDS`].
/// Whether `name` could ever be an interface's (the kernel's dev_valid_name): a name that
/// cannot is a mistake, while one that is merely absent is waited for.
pub fn interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface is empty".into());
    }
    if name.len() >= IFNAMSIZ {
        return Err(format!(
            "interface {name:?} is longer than {} bytes: no interface can have that name",
            IFNAMSIZ - 1
        ));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "interface {name:?} is not a valid name ('/', ':', blanks, \".\" and \"..\" are not allowed)"
        ));
    }
    Ok(())
}

/// Linux's IFNAMSIZ: names are at most 15 bytes and a NUL.
const IFNAMSIZ: usize = 16;

fn seconds_ok(s: f64) -> bool {
    s > 0.0 && s <= MAX_SECONDS
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Reads the password from the one source configured.
fn password(v: &VhidConfig, base: &Path) -> Result<Vec<u8>, String> {
    let sources = [
        v.pass_file.is_some(),
        v.pass_env.is_some(),
        v.pass_credential.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => return Ok(Vec::new()),
        1 => {}
        _ => return Err("set only one of pass_file, pass_env and pass_credential".into()),
    }
    let mut pw = if let Some(file) = &v.pass_file {
        let path = base.join(file);
        let pw = std::fs::read(&path)
            .map_err(|e| format!("cannot read pass_file {}: {e}", path.display()))?;
        // As ssh refuses a private key others can read.
        let mode = std::os::unix::fs::MetadataExt::mode(
            &std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        if mode & 0o077 != 0 {
            return Err(format!(
                "pass_file {} is readable by others (mode {:o}): chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
        pw
    } else if let Some(var) = &v.pass_env {
        crate::child::hide(var);
        std::env::var_os(var)
            .ok_or_else(|| format!("pass_env names {var}, which is not set"))?
            .into_encoded_bytes()
    } else {
        let name = v.pass_credential.as_deref().unwrap_or_default();
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            format!(
                "pass_credential {name:?} needs systemd's CREDENTIALS_DIRECTORY (LoadCredential=)"
            )
        })?;
        let path = Path::new(&dir).join(name);
        std::fs::read(&path)
            .map_err(|e| format!("cannot read credential {}: {e}", path.display()))?
    };
    // A trailing newline from `echo pass > file` is not part of the password (as ucarp).
    while pw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        pw.pop();
    }
    crate::hmac::check_password(&pw).map_err(|e| e.to_string())?;
    Ok(pw)
}

impl Config {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut config: Self = toml::from_str(text).map_err(|e| toml_error(&e, text))?;
        config.agent.scope_to_netns();
        Ok(config)
    }

    /// The control socket of the agent running `path`, for the client commands. Only the
    /// `[agent]` table must be right: a VHID mistake made while editing the file must not
    /// hide the running agent. `None` when there is no such file.
    pub fn socket_of(path: &Path) -> Result<Option<PathBuf>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), toml_error(&e, &text)))?;
        let mut agent: Agent = match table.remove("agent") {
            Some(value) => value
                .try_into()
                .map_err(|e| format!("{}: [agent]: {e}", path.display()))?,
            None => Agent::default(),
        };
        agent.scope_to_netns();
        Ok(Some(agent.socket))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks everything that can be checked without the system; relative pass files are
    /// resolved against `base` (the config file's directory).
    pub fn validate(&self, base: &Path) -> Result<Vec<Plan>, Vec<Mistake>> {
        let mut mistakes = Vec::new();
        let mut plans = Vec::new();
        let mut seen = BTreeSet::new();
        if self.vhids.is_empty() && self.balanced.is_empty() {
            mistakes.push(Mistake {
                at: "config".into(),
                what: "no [[vhid]] or [[balance]] is configured".into(),
            });
        }
        // Plain VHIDs, then each balanced group's, which share the group's VIPs.
        let mut tables: Vec<(VhidConfig, Option<Balance>)> =
            self.vhids.iter().map(|v| (v.clone(), None)).collect();
        for b in &self.balanced {
            match b.nodes() {
                Ok(nodes) => {
                    let vhids: Vec<u8> = nodes.iter().map(|n| n.vhid).collect();
                    tables.extend(nodes.into_iter().enumerate().map(|(index, n)| {
                        let vhids = vhids.clone();
                        (n, Some(Balance { vhids, index }))
                    }));
                }
                Err(wrong) => mistakes.extend(wrong.into_iter().map(|what| Mistake {
                    at: format!("balanced group {:?} on {}", b.carpnodes, b.interface),
                    what,
                })),
            }
        }
        if !seconds_ok(self.agent.hook_timeout) {
            mistakes.push(Mistake {
                at: "agent".into(),
                what: format!("hook_timeout must be a number of seconds in (0, {MAX_SECONDS}]"),
            });
        }
        // Where each VIP is configured: one VIP in two VHIDs would have two masters.
        let mut owners: std::collections::BTreeMap<IpAddr, String> = Default::default();
        let mut per_interface: std::collections::BTreeMap<&str, usize> = Default::default();
        for (v, balance) in &tables {
            let at = format!("vhid {} on {}", v.vhid, v.interface);
            // A group's VHIDs share its VIPs: the leader stands for all of them.
            let owner = match balance {
                Some(b) => format!(
                    "the balanced group of vhid {} on {}",
                    b.leader(),
                    v.interface
                ),
                None => at.clone(),
            };
            let mut bad = |what: String| {
                mistakes.push(Mistake {
                    at: at.clone(),
                    what,
                })
            };
            if let Err(e) = interface_name(&v.interface) {
                bad(e);
            }
            if v.vhid == 0 {
                bad("vhid must be 1..=255".into());
            }
            if !seen.insert((v.interface.clone(), v.vhid)) {
                bad("this VHID is configured twice on the same interface".into());
            }
            let mut vips = Vec::new();
            for text in &v.vips {
                match parse_vip(text) {
                    Ok(vip) => vips.push(vip),
                    Err(e) => bad(e),
                }
            }
            let leads = balance.as_ref().is_none_or(Balance::is_leader);
            for (vip, _) in vips.iter().filter(|_| leads) {
                match owners.get(vip) {
                    Some(other) if *other != owner => {
                        bad(format!("VIP {vip} is also a VIP of {other}"));
                    }
                    Some(_) => bad(format!("VIP {vip} is listed twice")),
                    None => {
                        owners.insert(*vip, owner.clone());
                    }
                }
            }
            let on_interface = per_interface.entry(&v.interface).or_default();
            *on_interface += if leads { vips.len() } else { 0 };
            if *on_interface > MAX_VIPS {
                bad(format!(
                    "more than {MAX_VIPS} VIPs on {}: the XDP program's map holds no more",
                    v.interface
                ));
            }
            if v.vips.is_empty() {
                bad("at least one VIP is needed".into());
            }
            let timing = match v.protocol {
                Protocol::CARP => {
                    if v.advbase == 0 {
                        bad("advbase must be 1..=255 seconds".into());
                    }
                    if v.advskew == 255 {
                        bad("advskew must be 0..=254".into());
                    }
                    Timing::Carp {
                        advbase: v.advbase,
                        advskew: v.advskew,
                    }
                }
                Protocol::VRRPV3 => {
                    if v.priority == 0 {
                        bad(
                            "priority must be 1..=255 (0 is reserved for a stopping master)".into(),
                        );
                    }
                    if v.interval_ms < 10 || v.interval_ms > 40950 || v.interval_ms % 10 != 0 {
                        bad("interval_ms must be a multiple of 10 in 10..=40950".into());
                    }
                    if v.pass_file.is_some() || v.pass_env.is_some() || v.pass_credential.is_some()
                    {
                        bad("VRRPv3 has no authentication: drop the password".into());
                    }
                    if v.auth == AuthMode::Strict {
                        bad("VRRPv3 has no authentication: auth = \"strict\" is for CARP".into());
                    }
                    // RFC 5798 5.2.5: one advert carries every address of its family.
                    let v4 = vips.iter().filter(|(a, _)| a.is_ipv4()).count();
                    let v6 = vips.len() - v4;
                    if v4 > vrrp::MAX_ADDRS_V4 || v6 > vrrp::MAX_ADDRS_V6 {
                        bad(format!(
                            "a VRRPv3 advert carries at most {} IPv4 or {} IPv6 addresses \
                             (one 1500-byte packet); this VHID has {v4} and {v6}",
                            vrrp::MAX_ADDRS_V4,
                            vrrp::MAX_ADDRS_V6
                        ));
                    }
                    Timing::Vrrp3 {
                        priority: v.priority,
                        interval_cs: (v.interval_ms / 10) as u16,
                    }
                }
            };
            for s in [&v.up_script, &v.down_script].into_iter().flatten() {
                if !s.is_absolute() {
                    bad(format!("hook {} must be an absolute path", s.display()));
                }
            }
            let password = match password(v, base) {
                Ok(pw) => pw,
                Err(e) => {
                    bad(e);
                    Vec::new()
                }
            };
            if v.auth == AuthMode::Strict && v.protocol == Protocol::CARP && password.is_empty() {
                bad(
                    "auth = \"strict\" needs a password (pass_file, pass_env or pass_credential)"
                        .into(),
                );
            }
            plans.push(Plan {
                interface: v.interface.clone(),
                vhid: v.vhid,
                vips,
                timing,
                preempt: v.preempt,
                password,
                auth: v.auth,
                groups: v.groups.clone(),
                peers: v.peers.clone(),
                mac: v.mac,
                garp_count: v.garp_count,
                src: v.src,
                up_script: v.up_script.clone(),
                down_script: v.down_script.clone(),
                balance: balance.clone(),
            });
        }
        self.validate_checks(&mut mistakes);
        if mistakes.is_empty() {
            Ok(plans)
        } else {
            Err(mistakes)
        }
    }

    fn validate_checks(&self, mistakes: &mut Vec<Mistake>) {
        let mut names = BTreeSet::new();
        for c in &self.checks {
            let mut bad = |what: String| {
                mistakes.push(Mistake {
                    at: format!("check {:?}", c.name),
                    what,
                })
            };
            if c.name.is_empty() {
                bad("name is empty".into());
            }
            if !names.insert(&c.name) {
                bad("this name is used by another check".into());
            }
            match c.command.first() {
                None => bad("command is empty: give the program and its arguments".into()),
                Some(p) if !Path::new(p).is_absolute() => {
                    bad(format!("command {p:?} must be an absolute path"))
                }
                // A program that cannot start fails every run: the host would stay demoted.
                Some(p) if !is_executable(Path::new(p)) => {
                    bad(format!("command {p:?} is not an executable file"))
                }
                Some(_) => {}
            }
            // A process every few milliseconds would only burn the CPU the adverts need.
            if !(c.interval >= 0.1 && seconds_ok(c.interval)) {
                bad(format!("interval must be 0.1 to {MAX_SECONDS} seconds"));
            }
            if !seconds_ok(c.timeout) {
                bad(format!(
                    "timeout must be a number of seconds in (0, {MAX_SECONDS}]"
                ));
            }
            if c.fall == 0 || c.rise == 0 {
                bad("fall and rise must be at least 1".into());
            }
            if c.demote <= 0 {
                bad("demote must be positive".into());
            }
            if let Some(g) = &c.group
                && !self.vhids.iter().any(|v| v.groups.contains(g))
            {
                bad(format!("group {g:?} is not in the groups of any [[vhid]]"));
            }
        }
    }
}

#[cfg(test)]
mod tests;
