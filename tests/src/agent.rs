//! A carp-agent process in a namespace, killed when dropped, with helpers to read its
//! state through the control socket.

use crate::netns::Netns;
use anyhow::{Context as _, Result, bail};
use carp_agent::control::Status;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// The carp-agent binary: $CARP_AGENT_BIN, else the workspace's target/debug build
/// (`cargo test --workspace` builds it). Checked here: a path that is not there would
/// otherwise show only as agents that never answer (cargo runs tests and benches from the
/// package's directory, so a relative $CARP_AGENT_BIN is read from tests/).
pub fn agent_bin() -> PathBuf {
    let bin = std::env::var_os("CARP_AGENT_BIN").map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(
                    || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                    PathBuf::from,
                )
                .join("debug/carp-agent")
        },
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p carp-agent` (or set CARP_AGENT_BIN to an \
         absolute path)",
        bin.display()
    );
    bin
}

/// Starts agent "a" on host 0 of `lan` and waits until it is MASTER of `vhid`, then "b"
/// on host 1 until it is BACKUP: started together, whichever finished loading its XDP
/// program first could win the election.
pub fn start_pair(
    lan: &crate::lan::Lan,
    dir: &Path,
    vhid: u8,
    conf_a: &str,
    conf_b: &str,
) -> Result<(Agent, Agent)> {
    let a = Agent::start(&lan.hosts[0].ns, dir, "a", conf_a)?;
    a.wait_state(vhid, "MASTER", Duration::from_secs(8))?;
    let b = Agent::start(&lan.hosts[1].ns, dir, "b", conf_b)?;
    b.wait_state(vhid, "BACKUP", Duration::from_secs(8))?;
    Ok((a, b))
}

/// Starts agent "a" or "b" (host `h` of `lan`) with `xdp_mode` and VHID 1 on eth0 (`vip`/24,
/// `advskew`, its own password file), and waits until it is in `state`: the pair the
/// tests of sharing an interface with other programs run.
pub fn start_sharing(
    lan: &crate::lan::Lan,
    dir: &Path,
    h: usize,
    xdp_mode: &str,
    vip: &str,
    advskew: u8,
    state: &str,
) -> Result<Agent> {
    let pw = dir.join("pass");
    write_secret(&pw, "sharing-secret")?;
    let config = format!(
        "xdp_mode = \"{xdp_mode}\"\n\n[[vhid]]\ninterface = \"eth0\"\nvhid = 1\n\
         vips = [\"{vip}/24\"]\nadvskew = {advskew}\npass_file = \"{}\"\n",
        pw.display()
    );
    let agent = Agent::start(&lan.hosts[h].ns, dir, ["a", "b"][h], &config)?;
    agent.wait_state(1, state, Duration::from_secs(8))?;
    Ok(agent)
}

/// Writes a password file as an operator must: readable by its owner only (the agent
/// refuses others, as ssh does).
pub fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "{}{tag}-{}-{}",
            crate::netns::PREFIX,
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub struct Agent {
    child: Option<Child>,
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `carp-agent -c <dir>/<name>.toml` inside `ns`. `config` starts inside the
    /// [agent] section this adds (socket and state directory in `dir`): settings for it
    /// first, then the VHIDs.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> Result<Self> {
        Self::start_with_env(ns, dir, name, config, &[])
    }

    /// An agent not yet running: its files `<dir>/<name>.{toml,sock,log}`, the
    /// configuration written.
    fn prepare(dir: &Path, name: &str, config: &str) -> Result<Self> {
        let mut a = Self::client(&dir.join(format!("{name}.sock")));
        a.name = name.to_owned();
        a.config = dir.join(format!("{name}.toml"));
        a.log = dir.join(format!("{name}.log"));
        std::fs::write(&a.config, Self::with_agent_section(&a.socket, config))?;
        Ok(a)
    }

    /// A handle on an agent started some other way, for its control socket only.
    pub fn client(socket: &Path) -> Self {
        Self {
            child: None,
            name: socket.display().to_string(),
            config: PathBuf::new(),
            socket: socket.to_owned(),
            log: PathBuf::new(),
        }
    }

    /// The agent's own state directory (`[agent] state_dir`), beside its socket: agents of
    /// one test are hosts of their own.
    pub fn state_dir(&self) -> PathBuf {
        self.socket.with_extension("state")
    }

    fn with_agent_section(socket: &Path, config: &str) -> String {
        format!(
            "[agent]\nsocket = \"{}\"\nstate_dir = \"{}\"\n\n{config}",
            socket.display(),
            socket.with_extension("state").display()
        )
    }

    /// Rewrites the configuration file (keeping the [agent] section); for reloads.
    pub fn rewrite(&self, config: &str) -> Result<()> {
        std::fs::write(&self.config, Self::with_agent_section(&self.socket, config))?;
        Ok(())
    }

    /// Like [`Agent::start`], with extra environment variables for the process.
    pub fn start_with_env(
        ns: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut a = Self::prepare(dir, name, config)?;
        a.spawn_with_env(ns, env)?;
        Ok(a)
    }

    /// Like [`Agent::start`], logging JSON lines (see [`Agent::log_json`]) at the levels
    /// `filter` (`CARP_LOG`) sets.
    pub fn start_json(
        ns: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        filter: &str,
    ) -> Result<Self> {
        let mut a = Self::prepare(dir, name, config)?;
        let bin = agent_bin();
        let mut cmd = ns.command(bin.to_str().context("non-UTF-8 path")?);
        cmd.args(["--log-format", "json"]);
        a.launch(cmd, &[("CARP_LOG", filter)])?;
        Ok(a)
    }

    /// Like [`Agent::start`], with at most `nofile` file descriptors (`ulimit -n`,
    /// through prlimit, which execs the agent: the pid stays the agent's).
    pub fn start_with_nofile(
        ns: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        nofile: u64,
    ) -> Result<Self> {
        let mut a = Self::prepare(dir, name, config)?;
        let mut cmd = ns.command("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(agent_bin());
        a.launch(cmd, &[])?;
        Ok(a)
    }

    /// Like [`Agent::start`], but started from the host's namespace: for configurations
    /// whose `[agent] netns` moves the agent itself.
    pub fn start_on_host(dir: &Path, name: &str, config: &str) -> Result<Self> {
        let mut a = Self::prepare(dir, name, config)?;
        a.launch(Command::new(agent_bin()), &[])?;
        Ok(a)
    }

    /// (Re)starts the process.
    pub fn spawn(&mut self, ns: &Netns) -> Result<()> {
        self.spawn_with_env(ns, &[])
    }

    fn spawn_with_env(&mut self, ns: &Netns, env: &[(&str, &str)]) -> Result<()> {
        self.launch(
            ns.command(agent_bin().to_str().context("non-UTF-8 path")?),
            env,
        )
    }

    /// Runs `cmd` (the agent binary, perhaps behind `ip netns exec`) on this config.
    fn launch(&mut self, mut cmd: Command, env: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = cmd
            .arg("-c")
            .arg(&self.config)
            .env("CARP_LOG", "info")
            .envs(env.iter().copied())
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting carp-agent")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Sends a signal (e.g. "TERM", "KILL", "HUP", "STOP", "CONT").
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        let pid = self.pid().context("not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
        Ok(())
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("not running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a control command (`status`, `set-state 1 backup`, ...) against this agent.
    pub fn ctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(agent_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "carp-agent {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `carp-agent status --json`, typed: the agent's documented schema.
    pub fn status(&self) -> Result<Status> {
        let json = self.ctl(&["status", "--json"])?;
        serde_json::from_str(&json).with_context(|| format!("{}: status {json}", self.name))
    }

    /// The state of `vhid` (on its first interface), if the agent answers.
    pub fn state(&self, vhid: u8) -> Option<String> {
        let status = self.status().ok()?;
        status
            .vhids
            .into_iter()
            .find(|v| v.vhid == vhid)
            .map(|v| v.state.to_string())
    }

    /// Waits until `vhid` is in `state`; returns how long that took.
    pub fn wait_state(&self, vhid: u8, state: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.state(vhid).as_deref() == Some(state) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{}: vhid {vhid} not {state} after {timeout:?} (is {:?}); log:\n{}",
            self.name,
            self.state(vhid),
            self.log_text()
        )
    }

    /// An XDP counter of the agent's first interface; panics when the agent does not
    /// answer or has no such counter, so a typo or a dead agent never reads as 0.
    pub fn xdp_counter(&self, name: &str) -> u64 {
        let status = self.status().unwrap_or_else(|e| panic!("{e:#}"));
        let iface = status
            .interfaces
            .first()
            .unwrap_or_else(|| panic!("{}: no interface in {status:?}", self.name));
        *iface
            .xdp
            .get(name)
            .unwrap_or_else(|| panic!("{}: no XDP counter {name} in {:?}", self.name, iface.xdp))
    }

    /// The transitions of the agent's first VHID; panics when the agent does not answer.
    pub fn transitions(&self) -> u64 {
        let status = self.status().unwrap_or_else(|e| panic!("{e:#}"));
        status
            .vhids
            .first()
            .unwrap_or_else(|| panic!("{}: no VHID in {status:?}", self.name))
            .transitions
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log of an agent started with [`Agent::start_json`], one value per line; panics on
    /// a line that is not JSON, so a change of format cannot make a search come up empty.
    pub fn log_json(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: log line {l:?}: {e}", self.name))
            })
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
