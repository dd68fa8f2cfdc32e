//! Network namespaces created by a test and removed when dropped, even when the test
//! panics, with helpers to run commands or code inside them.

use anyhow::{Context as _, Result, bail};
use std::{
    fs::File,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// Every namespace this harness creates starts with this, so leftovers can be found.
pub const PREFIX: &str = "carpt-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `cmd`, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// A named network namespace owned by the test.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `carpt-<tag>-<pid>-<n>`: unique per process and call, so tests run in parallel.
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `f` on a thread that has joined this namespace, so sockets and netlink calls it
    /// makes (aya's XDP attach included) act here.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let file = File::open(format!("/var/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Netns {
    /// A bridge `name` here, up, with multicast snooping off: multicast adverts reach
    /// every port from the start.
    pub fn bridge(&self, name: &str) -> Result<()> {
        self.ip(&["link", "add", name, "type", "bridge", "mcast_snooping", "0"])?;
        self.ip(&["link", "set", name, "up"])?;
        Ok(())
    }

    /// `host`'s eth0, a veth whose other end is `port` here, both up. The port has GRO on:
    /// native XDP on a veth only delivers XDP_TX frames when its peer has GRO on.
    pub fn uplink(&self, host: &Netns, port: &str) -> Result<()> {
        veth_pair(host, "eth0", self, port)?;
        run(self.command("ethtool").args(["-K", port, "gro", "on"]))?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A veth pair, `a_if` in `a` and `b_if` in `b`, both up, without addresses.
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Connects `a` and `b` with a veth pair named `a_if` / `b_if`, both up, with the given
/// addresses (CIDR notation).
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Result<()> {
    veth_pair(a, a_if, b, b_if)?;
    a.ip(&["addr", "add", a_addr, "dev", a_if])?;
    b.ip(&["addr", "add", b_addr, "dev", b_if])?;
    Ok(())
}

/// Namespaces this harness created in processes that have exited: left behind. Names
/// carry the creating process's pid, so a suite running elsewhere at the same time is
/// not mistaken for a leak.
pub fn leftovers() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX) && owner_gone(n))
        .map(str::to_owned)
        .collect())
}

/// Whether the process a harness name was made by (`...-<pid>-<n>`) has exited: names of
/// running test processes are theirs, not leftovers.
pub fn owner_gone(name: &str) -> bool {
    let pid = name.rsplit('-').nth(1).unwrap_or_default();
    !std::path::Path::new("/proc").join(pid).exists()
}
