//! The peers carp is compared with and must interoperate with, run in namespaces:
//! Debian's ucarp and keepalived (VRRPv3). Each is killed when dropped.

use crate::netns::Netns;
use nix::sys::signal::Signal;
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

/// ucarp in `ns` with `advskew`, logging to `log`; killed on drop.
pub struct Ucarp(Child);

impl Ucarp {
    pub fn start(ns: &Netns, src: &str, advskew: u8, pass: &Path, log: &Path) -> Self {
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
            .args([
                "-k",
                &advskew.to_string(),
                "-u",
                "/bin/true",
                "-d",
                "/bin/true",
                "-o",
            ])
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
}

impl Keepalived {
    pub fn start(ns: &Netns, dir: &Path, name: &str, vrid: u8, priority: u8, vip: &str) -> Self {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  vrrp_version 3\n  router_id {name}\n}}\n\
                 vrrp_instance VI_{vrid} {{\n  state BACKUP\n  interface eth0\n  \
                 virtual_router_id {vrid}\n  priority {priority}\n  advert_int 1\n  \
                 virtual_ipaddress {{\n    {vip}\n  }}\n}}\n"
            ),
        )
        .unwrap();
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
        Self { child, log }
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
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
