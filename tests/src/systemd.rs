//! systemd as PID 1 of private pid/mount/uts/ipc/cgroup/net namespaces, to run the shipped
//! unit under a real service manager on hosts whose own PID 1 is not systemd. The host
//! stays untouched: /proc/sys (but per-netns /proc/sys/net) and /sys are read-only binds,
//! /run and /etc/systemd/system are private tmpfs, the distribution's wanted units and
//! generators are masked, systemd-shutdown is /bin/true (tests/systemd/boot.sh). Dropping
//! the guard powers it off (SIGKILL if that hangs) and removes its cgroup, even on panic.

use crate::{
    agent::TempDir,
    netns::{Netns, PREFIX, run},
};
use anyhow::{Context as _, Result, bail};
use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

static NEXT: AtomicU32 = AtomicU32::new(0);
const BOOT_TIMEOUT: Duration = Duration::from_secs(15);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Systemd {
    /// `script`, which gives PID 1 a pty as /dev/console; it exits when PID 1 does.
    child: Option<Child>,
    /// PID 1's pid on the host, once it has exec'd systemd.
    pid: Option<i32>,
    /// Our child of the host's cgroup2 hierarchy: the root of the namespace's cgroup tree.
    cgroup: PathBuf,
    dir: TempDir,
    booted: Duration,
}

impl Systemd {
    /// Boots systemd and waits until it is `running`. `netns` are bound under its private
    /// /run/netns, so a unit can join one with `NetworkNamespacePath=/run/netns/<name>`.
    pub fn boot(tag: &str, netns: &[&Netns]) -> Result<Self> {
        let start = Instant::now();
        let name = format!(
            "{PREFIX}sd-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = TempDir::new(&format!("sd-{tag}"))?;
        let cgroup = cgroup2_root()?.join(&name);
        std::fs::create_dir(&cgroup).with_context(|| format!("creating {}", cgroup.display()))?;
        // From here on Drop cleans up whatever got started.
        let mut sd = Self {
            child: None,
            pid: None,
            cgroup,
            dir,
            booted: Duration::ZERO,
        };
        let boot_sh = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/boot.sh");
        let mut inner = format!(
            "unshare --pid --fork --mount --uts --ipc --cgroup --net --propagation private \
             --mount-proc {} {name}",
            quote(boot_sh.to_str().context("non-UTF-8 path")?)
        );
        for ns in netns {
            inner += &format!(" {}", quote(ns.name()));
        }
        let log = File::create(sd.dir.path().join("script.log"))?;
        // The shell joins the cgroup first, so everything it starts is in it (and in the
        // cgroup namespace unshare makes there).
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ >"$1/cgroup.procs" && exec script -qfec "$2" "$3""#)
            .arg("sh")
            .arg(&sd.cgroup)
            .arg(&inner)
            .arg(sd.console_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting script/unshare")?;
        let script = child.id() as i32;
        sd.child = Some(child);
        let systemd = std::fs::canonicalize("/lib/systemd/systemd")?;
        let deadline = start + BOOT_TIMEOUT;
        // PID 1 is the shallowest systemd under script: unshare's child, and script may
        // run unshare through a `$SHELL -c` of its own (dash, or no $SHELL, forks one).
        while sd.pid.is_none() {
            sd.check_alive()?;
            if let Some(pid) = shallowest_descendant(script, &systemd) {
                sd.pid = Some(pid);
            } else if Instant::now() > deadline {
                bail!("no systemd after {BOOT_TIMEOUT:?}:\n{}", sd.console());
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        loop {
            sd.check_alive()?;
            let out = sd.command("systemctl").arg("is-system-running").output()?;
            match String::from_utf8_lossy(&out.stdout).trim() {
                "running" => break,
                "degraded" => bail!(
                    "systemd is degraded:\n{}\n{}",
                    sd.systemctl(&["--failed"]).unwrap_or_default(),
                    sd.console()
                ),
                state if Instant::now() > deadline => {
                    bail!(
                        "systemd is {state:?} after {BOOT_TIMEOUT:?}:\n{}",
                        sd.console()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        sd.booted = start.elapsed();
        Ok(sd)
    }

    /// From starting the namespaces to `is-system-running` = running.
    pub fn boot_time(&self) -> Duration {
        self.booted
    }

    /// PID 1's pid on the host.
    pub fn pid(&self) -> i32 {
        self.pid.expect("booted")
    }

    /// `inside` (an absolute path in the namespace) as seen from the host, through
    /// /proc/<pid>/root: for files the test writes or sockets it connects to.
    pub fn path(&self, inside: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.pid())).join(inside.trim_start_matches('/'))
    }

    /// Writes a file inside the namespace (parents created), e.g. a unit under
    /// /run/systemd/system.
    pub fn write(&self, inside: &str, contents: impl AsRef<[u8]>) -> Result<()> {
        let path = self.path(inside);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {inside}"))
    }

    /// Makes each of `dirs` (absolute paths) a writable copy of the host's inside the
    /// namespace: overlayfs with its upper layer on a tmpfs, gone with the namespace, so a
    /// package installed inside (dpkg writes /usr, /etc and /var) changes nothing on the
    /// host. Mounts under them (the private /etc/systemd/system, the systemd-shutdown
    /// safety belt) are bound on top again.
    pub fn overlay(&self, dirs: &[&str]) -> Result<()> {
        let script = r#"
            base=/run/carp-overlay
            mkdir -p "$base" && mount -t tmpfs -o mode=700 carp-overlay "$base"
            n=0
            for d in "$@"; do
                subs=$(findmnt -rn -o TARGET | grep "^$d/" || true)
                n=$((n + 1)); o="$base/$n"; mkdir -p "$o/upper" "$o/work" "$o/keep"
                i=0
                for m in $subs; do
                    i=$((i + 1)); [ -d "$m" ] && mkdir "$o/keep/$i" || : >"$o/keep/$i"
                    mount --bind "$m" "$o/keep/$i"
                done
                mount -t overlay carp-overlay -o "lowerdir=$d,upperdir=$o/upper,workdir=$o/work" "$d"
                i=0
                for m in $subs; do
                    i=$((i + 1)); mount --bind "$o/keep/$i" "$m"
                done
            done"#;
        let mut args = vec!["sh", "-ec", script, "overlay"];
        args.extend_from_slice(dirs);
        self.run(&args).map(drop)
    }

    /// `program` run inside all of PID 1's namespaces (its netns too, so nothing run this
    /// way touches the host's network).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string()])
            .args(["-m", "-p", "-u", "-i", "-C", "-n", program]);
        cmd
    }

    /// Runs `args` inside; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let (program, rest) = args.split_first().context("no command")?;
        let out = run(self.command(program).args(rest))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["systemctl", "--no-pager"];
        full.extend_from_slice(args);
        self.run(&full)
    }

    /// One property of a unit (`systemctl show -P`).
    pub fn show(&self, unit: &str, prop: &str) -> Result<String> {
        Ok(self
            .systemctl(&["show", "-P", prop, unit])?
            .trim()
            .to_owned())
    }

    /// What PID 1 and units without their own output wrote to /dev/console.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.console_path())
            .unwrap_or_default()
            .replace('\r', "")
    }

    fn console_path(&self) -> PathBuf {
        self.dir.path().join("console.log")
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.as_mut().context("not started")?.try_wait()? {
            bail!(
                "the namespace exited ({status}) during boot:\n{}{}",
                std::fs::read_to_string(self.dir.path().join("script.log")).unwrap_or_default(),
                self.console()
            );
        }
        Ok(())
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.pid.is_some() && matches!(child.try_wait(), Ok(None)) {
                // Plain `systemctl poweroff` would first try logind over D-Bus.
                let _ = self
                    .command("systemctl")
                    .args(["--no-block", "--job-mode=replace-irreversibly"])
                    .args(["start", "poweroff.target"])
                    .output();
                let deadline = Instant::now() + POWEROFF_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "cleanup: systemd {name} did not power off: killed",
                    name = self.cgroup.display()
                );
            }
            // Whatever is left (a boot that failed halfway, a hung poweroff) dies at once.
            let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
            if let Some(pid) = self.pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // systemd leaves its cgroups (init.scope, ...) behind; they can go once empty.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = remove_tree(&self.cgroup) {
            if Instant::now() > deadline {
                eprintln!("cleanup: {}: {e}", self.cgroup.display());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Cgroups a finished test process left behind (possible only if it was killed before its
/// guards ran), for `cargo xtask test`'s leak check.
pub fn leftover_cgroups() -> Result<Vec<String>> {
    let Ok(root) = cgroup2_root() else {
        return Ok(Vec::new());
    };
    let prefix = format!("{PREFIX}sd-");
    Ok(std::fs::read_dir(root)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix) && crate::netns::owner_gone(n))
        .collect())
}

/// The host's cgroup2 mount: /sys/fs/cgroup (unified) or /sys/fs/cgroup/unified (hybrid).
fn cgroup2_root() -> Result<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.controllers").exists())
        .context("no cgroup2 hierarchy under /sys/fs/cgroup")
}

/// Breadth-first through /proc/<pid>/task/<pid>/children: the first descendant of `root`
/// running `exe` (its forked children, deeper, still show the same exe until they exec).
fn shallowest_descendant(root: i32, exe: &Path) -> Option<i32> {
    let mut level = vec![root];
    while !level.is_empty() {
        let mut next = Vec::new();
        for pid in level {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            next.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
        if let Some(&pid) = next.iter().find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .ok()
                .as_deref()
                == Some(exe)
        }) {
            return Some(pid);
        }
        level = next;
    }
    None
}

/// rmdir of a cgroup and its descendants, deepest first.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_tree(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

/// Single-quotes `s` for the shell `script -c` runs.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
