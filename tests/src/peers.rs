//! The peers carp is compared with and must interoperate with, run in namespaces:
//! Debian's ucarp and keepalived (VRRPv3), and scripted peers that send whatever frames a
//! test builds. Each is stopped when dropped.

use crate::netns::Netns;
use carp_agent::send::PacketSocket;
use nix::sys::signal::Signal;
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// ucarp in `ns` with `advskew`, logging to `log`; killed on drop.
pub struct Ucarp(Child);

impl Ucarp {
    pub fn start(ns: &Netns, src: &str, advskew: u8, pass: &Path, log: &Path) -> Self {
        let no_op = Path::new("/bin/true");
        Self::start_with_scripts(ns, src, advskew, pass, log, no_op, no_op)
    }

    /// ucarp for VHID 1 / VIP 192.0.2.50 on eth0, with up and down scripts.
    pub fn start_with_scripts(
        ns: &Netns,
        src: &str,
        advskew: u8,
        pass: &Path,
        log: &Path,
        up: &Path,
        down: &Path,
    ) -> Self {
        let child = ns
            .command("ucarp")
            .args([
                "-i",
                "eth0",
                "-s",
                src,
                "-v",
                "1",
                "-a",
                "192.0.2.50",
                "-b",
                "1",
            ])
            .args(["-k", &advskew.to_string(), "-z", "-u"])
            .arg(up)
            .arg("-d")
            .arg(down)
            .arg("-o")
            .arg(pass)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Ucarp {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
}

impl Drop for Ucarp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The state ucarp last logged.
pub fn ucarp_state(log: &Path) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .rev()
        .find_map(|l| l.split("Switching to state: ").nth(1).map(str::to_owned))
}

/// Waits until ucarp logs `state`; returns how long that took.
pub fn wait_ucarp(log: &Path, state: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ucarp_state(log).as_deref() == Some(state) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "ucarp not {state} after {timeout:?}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// keepalived (VRRPv3) in `ns` for VRID `vrid` with `priority`; killed on drop.
pub struct Keepalived {
    child: Child,
    log: PathBuf,
    conf: PathBuf,
    name: String,
}

impl Keepalived {
    pub fn start(ns: &Netns, dir: &Path, name: &str, vrid: u8, priority: u8, vip: &str) -> Self {
        Self::start_with_interval(ns, dir, name, vrid, priority, vip, 1000)
    }

    /// One VRRPv3 instance with an advert interval in milliseconds.
    pub fn start_with_interval(
        ns: &Netns,
        dir: &Path,
        name: &str,
        vrid: u8,
        priority: u8,
        vip: &str,
        interval_ms: u32,
    ) -> Self {
        let instance = Self::instance(vrid, priority, vip, interval_ms, "");
        Self::spawn(ns, dir, name, &instance)
    }

    /// One VRRPv3 instance (1 s adverts) that tracks a health check, as keepalived users
    /// write it: `vrrp_script` + `track_script`, the check passing while `flag` exists
    /// (every second, 2 falls or rises to change, the priority 60 lower while it fails).
    pub fn start_tracking(
        ns: &Netns,
        dir: &Path,
        name: &str,
        vrid: u8,
        priority: u8,
        vip: &str,
        flag: &Path,
    ) -> Self {
        let script = format!(
            "vrrp_script chk {{\n  script \"/usr/bin/test -e {}\"\n  interval 1\n  fall 2\n  \
             rise 2\n  weight -60\n}}\n",
            flag.display()
        );
        let track = "  track_script {\n    chk\n  }\n";
        let instance = Self::instance(vrid, priority, vip, 1000, track);
        Self::spawn(ns, dir, name, &(script + &instance))
    }

    /// `n` instances (VRIDs 1..=n, IPv6 VIPs 2001:db8::100:vrid) in one keepalived.
    pub fn start_many(ns: &Netns, dir: &Path, name: &str, n: u8, priority: u8) -> Self {
        let instances: String = (1..=n)
            .map(|v| Self::instance(v, priority, &format!("2001:db8::100:{v:x}/64"), 1000, ""))
            .collect();
        Self::spawn(ns, dir, name, &instances)
    }

    /// keepalived running `instances` (`vrrp_instance` blocks and what they use), as
    /// written, after the global definitions of the others.
    pub fn start_config(ns: &Netns, dir: &Path, name: &str, instances: &str) -> Self {
        Self::spawn(ns, dir, name, instances)
    }

    /// A `vrrp_instance` block; `extra` goes in it as it is.
    pub fn instance(vrid: u8, priority: u8, vip: &str, interval_ms: u32, extra: &str) -> String {
        format!(
            "vrrp_instance VI_{vrid} {{\n  state BACKUP\n  interface eth0\n  \
             virtual_router_id {vrid}\n  priority {priority}\n  advert_int {}\n  \
             virtual_ipaddress {{\n    {vip}\n  }}\n{extra}}}\n",
            f64::from(interval_ms) / 1000.0
        )
    }

    fn config(name: &str, instances: &str) -> String {
        format!("global_defs {{\n  vrrp_version 3\n  router_id {name}\n}}\n{instances}")
    }

    fn spawn(ns: &Netns, dir: &Path, name: &str, instances: &str) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, Self::config(name, instances)).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = ns
            .command("keepalived")
            .args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join(format!("{name}.pid")))
            .arg("-r")
            .arg(dir.join(format!("{name}.vrrp.pid")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            conf,
            name: name.to_owned(),
        }
    }

    /// Rewrites the configuration file with these instances, for a reload.
    pub fn rewrite(&self, instances: &str) {
        std::fs::write(&self.conf, Self::config(&self.name, instances)).unwrap();
    }

    /// SIGHUP, then waits until keepalived logs that the reload is complete; returns how
    /// long that took.
    pub fn reload(&self, timeout: Duration) -> Duration {
        let done = || self.log_text().matches("Reload complete").count();
        let before = done();
        let start = Instant::now();
        self.signal(Signal::SIGHUP);
        while done() == before {
            assert!(
                start.elapsed() < timeout,
                "keepalived did not reload within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        start.elapsed()
    }

    /// The state changes keepalived logged so far.
    pub fn transitions(&self) -> u64 {
        self.log_text().matches("Entering ").count() as u64
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The state keepalived last logged.
    pub fn state(&self) -> Option<String> {
        std::fs::read_to_string(&self.log)
            .ok()?
            .lines()
            .rev()
            .find_map(|l| {
                l.split("Entering ")
                    .nth(1)
                    .and_then(|s| s.split(" STATE").next())
                    .map(str::to_owned)
            })
    }

    /// Waits until keepalived logs `state`; returns how long that took.
    pub fn wait(&self, state: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.state().as_deref() == Some(state) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "keepalived not {state} after {timeout:?}:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits until keepalived has exited (after SIGTERM it sends its priority-0 adverts
    /// first); until it is reaped, its pid file keeps a new one from starting.
    pub fn wait_exit(&mut self, timeout: Duration) {
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < timeout,
                "keepalived still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scripted peer: sends what `frame` returns from `ns`'s eth0 every `every`, until
/// dropped. Its frames are whole, so it can be anything on the link: an OpenBSD master, a
/// stranger, an attacker.
pub struct Scripted {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    pub fn start(
        ns: &Netns,
        every: Duration,
        mut frame: impl FnMut() -> Vec<u8> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name())).unwrap();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let ifindex = nix::net::if_::if_nametoindex("eth0").unwrap();
            let sock = PacketSocket::bind(ifindex).unwrap();
            while !flag.load(Ordering::Relaxed) {
                sock.send(&frame()).unwrap();
                std::thread::sleep(every);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
