//! A switched LAN in namespaces: one switch namespace with a Linux bridge, hosts with a
//! veth each (eth0) to it, addresses from 192.0.2.0/24 and 2001:db8::/64. Everything goes
//! when the `Lan` is dropped.

use crate::netns::Netns;
use anyhow::{Context as _, Result, bail};
use serde::Deserialize;
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Stdio,
};

pub struct Host {
    pub ns: Netns,
    pub name: String,
    pub addr: Ipv4Addr,
    pub addr6: Ipv6Addr,
    /// The host's port on the bridge, in the switch namespace.
    pub port: String,
}

pub struct Lan {
    // Hosts first: their namespaces go before the switch's.
    pub hosts: Vec<Host>,
    pub switch: Netns,
}

impl Host {
    /// The MAC of the host's eth0, as `ip` writes it ("02:ab:...").
    pub fn mac(&self) -> Result<String> {
        let out = self.ns.ip(&["-j", "link", "show", "eth0"])?;
        let links: Vec<Link> = serde_json::from_slice(&out.stdout)?;
        links
            .into_iter()
            .next()
            .map(|l| l.address)
            .context("no eth0")
    }

    /// Whether the host has `addr` on `dev` (`ip -j addr`).
    pub fn has_address(&self, dev: &str, addr: &str) -> Result<bool> {
        let out = self.ns.ip(&["-j", "addr", "show", "dev", dev])?;
        let links: Vec<AddrLink> = serde_json::from_slice(&out.stdout)?;
        Ok(links
            .iter()
            .flat_map(|l| &l.addr_info)
            .any(|a| a.local == addr))
    }
}

/// An `ip -j link` entry, the part read here.
#[derive(Deserialize)]
struct Link {
    address: String,
}

/// An `ip -j addr` entry, the part read here.
#[derive(Deserialize)]
struct AddrLink {
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: String,
}

/// A `bridge -j fdb` entry, the part read here.
#[derive(Deserialize)]
struct FdbEntry {
    mac: String,
    ifname: String,
}

/// An `ip -j neigh` entry: where a host sends frames for `dst`, and the entry's state
/// (REACHABLE, STALE, PROBE, ...).
#[derive(Clone, Debug, Deserialize)]
pub struct Neighbour {
    pub dst: String,
    pub lladdr: Option<String>,
    #[serde(default)]
    pub state: Vec<String>,
}

/// The neighbour entry `ns` has for `addr` on eth0, if any.
pub fn neighbour(ns: &Netns, addr: &str) -> Result<Option<Neighbour>> {
    let out = ns.ip(&["-j", "neigh", "show", addr, "dev", "eth0"])?;
    let entries: Vec<Neighbour> = serde_json::from_slice(&out.stdout)?;
    Ok(entries.into_iter().find(|n| n.dst == addr))
}

impl Lan {
    /// A bridge with `names.len()` hosts; host `i` gets 192.0.2.(i+1) and 2001:db8::(i+1).
    pub fn new(tag: &str, names: &[&str]) -> Result<Self> {
        let switch = Netns::new(&format!("{tag}-sw"))?;
        switch.bridge("br0")?;
        let mut lan = Self {
            hosts: Vec::new(),
            switch,
        };
        for name in names {
            lan.add_host(tag, name)?;
        }
        Ok(lan)
    }

    /// Adds one more host (e.g. a client that probes the VIP).
    pub fn add_host(&mut self, tag: &str, name: &str) -> Result<&Host> {
        let i = self.hosts.len();
        let ns = Netns::new(&format!("{tag}-{name}"))?;
        let port = format!("p{i}");
        self.switch.uplink(&ns, &port)?;
        self.switch.ip(&["link", "set", &port, "master", "br0"])?;
        let addr = Ipv4Addr::new(192, 0, 2, 1 + i as u8);
        let addr6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 + i as u16);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{addr6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        self.hosts.push(Host {
            ns,
            name: name.to_string(),
            addr,
            addr6,
            port,
        });
        Ok(&self.hosts[i])
    }

    /// Runs an nft script in the switch namespace (the bridge family filters what crosses
    /// the bridge without touching any port's carrier).
    pub fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write as _;
        let mut child = self
            .switch
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }

    /// The bridge port the switch has learned `mac` on (its forwarding database), if any.
    pub fn port_of(&self, mac: &str) -> Result<Option<String>> {
        let out = crate::netns::run(
            self.switch
                .command("bridge")
                .args(["-j", "fdb", "show", "br", "br0"]),
        )?;
        let entries: Vec<FdbEntry> = serde_json::from_slice(&out.stdout)?;
        Ok(entries
            .into_iter()
            .find(|e| e.mac.eq_ignore_ascii_case(mac))
            .map(|e| e.ifname))
    }

    /// Pulls (or plugs back) host `i`'s cable: its switch port goes down, so its eth0
    /// loses carrier.
    pub fn cable(&self, i: usize, plugged: bool) -> Result<()> {
        let state = if plugged { "up" } else { "down" };
        self.switch
            .ip(&["link", "set", &self.hosts[i].port, state])?;
        Ok(())
    }
}

/// Split-brain detector, from `client`: Habets' arping -d exits 1 when two different
/// MACs answer for `vip`. Returns the one MAC that answers; panics on none or two.
pub fn one_mac_answers(client: &Netns, vip: &str) -> String {
    let out = client
        .command("arping")
        .args(["-c", "3", "-d", "-I", "eth0", vip])
        .output()
        .expect("running arping");
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success(),
        "split brain or no answer for {vip}:\n{text}"
    );
    text.split_whitespace()
        .find(|w| w.len() == 17 && w.matches(':').count() == 5)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no MAC in {text}"))
}
