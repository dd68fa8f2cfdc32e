//! The `.deb` upgraded over itself under a real systemd (booted as PID 1 of private
//! namespaces, with /etc, /usr and /var overlays there, so dpkg changes nothing on the
//! host): the maintainer scripts restart a running agent on the new binary, leave a stopped
//! one stopped and start nothing on first install (Debian's try-restart convention,
//! dist/debian/postinst). A client pings the VIP every 1 ms across the upgrade-restart of
//! the master, with a plain agent as backup; the probes lost are printed, not asserted.
// Needs root (namespaces, BPF, dpkg) and the package: `cargo xtask test` builds it first.
#![cfg(feature = "root")]

use carp_tests::{
    agent::{Agent, TempDir},
    lan::Lan,
    probe::Probe,
    systemd::Systemd,
};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

const UNIT: &str = "carp-agent.service";
const PACKAGE: &str = "carp";
const VIP: &str = "192.0.2.50";
const PASSWORD: &str = "upgrade-secret";
const WAIT: Duration = Duration::from_secs(10);

/// The package under test: `$CARP_DEB` (set by `cargo xtask test`), else the newest
/// target/debian/carp_*.deb that `cargo xtask package` built.
fn deb() -> PathBuf {
    if let Some(p) = std::env::var_os("CARP_DEB") {
        return p.into();
    }
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debian"));
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("carp_") && name.ends_with(".deb")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: run `cargo xtask package` (or set CARP_DEB)",
                dir.display()
            )
        })
}

fn vhid(advskew: u8, pass_file: &str) -> String {
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\n\
         advskew = {advskew}\npreempt = true\npass_file = \"{pass_file}\"\n"
    )
}

/// Purges the package inside the namespace when dropped, also when the test fails (the
/// overlays go with the namespace anyway: this is dpkg's own removal path).
struct Installed<'a>(&'a Systemd);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.run(&["dpkg", "--purge", PACKAGE]) {
            eprintln!("cleanup: dpkg --purge {PACKAGE}: {e:#}");
        }
    }
}

/// The agent's MainPID (0 when it is not running) and where its /proc/PID/exe points.
fn main_pid(sd: &Systemd) -> (u32, String) {
    let pid: u32 = sd.show(UNIT, "MainPID").unwrap().parse().unwrap();
    let exe = if pid == 0 {
        String::new()
    } else {
        sd.run(&["readlink", &format!("/proc/{pid}/exe")])
            .unwrap()
            .trim()
            .to_owned()
    };
    (pid, exe)
}

fn dpkg_install(sd: &Systemd, deb: &str) -> Duration {
    let t = Instant::now();
    sd.run(&["dpkg", "-i", deb]).unwrap();
    t.elapsed()
}

#[test]
fn upgrade_restarts_a_running_agent_and_leaves_a_stopped_one_stopped() {
    let deb = deb();
    let deb = deb.to_str().unwrap();
    let dir = TempDir::new("upgrade").unwrap();
    let mut lan = Lan::new("upg", &["a", "b"]).unwrap();
    lan.add_host("upg", "client").unwrap();
    let sd = Systemd::boot("upg", &[&lan.hosts[0].ns]).unwrap();
    sd.overlay(&["/etc", "/usr", "/var"]).unwrap();
    // A host where maintainer scripts may act on services: this machine's image has a
    // policy-rc.d that forbids it (exit 101), as Docker images do.
    sd.run(&["rm", "-f", "/usr/sbin/policy-rc.d"]).unwrap();
    // What the operator puts in place; the drop-in runs the packaged unit in a's namespace
    // and logs to a file (no journald there).
    let pass = "/etc/carp/carp.pass";
    sd.write(pass, PASSWORD).unwrap();
    carp_tests::agent::write_secret(&sd.path(pass), PASSWORD).unwrap();
    sd.write("/etc/carp/carp.toml", vhid(0, pass)).unwrap();
    let log = dir.path().join("a.log");
    sd.write(
        "/etc/systemd/system/carp-agent.service.d/test.conf",
        format!(
            "[Service]\nNetworkNamespacePath=/run/netns/{}\nStandardOutput=append:{}\n",
            lan.hosts[0].ns.name(),
            log.display()
        ),
    )
    .unwrap();
    let b_pass = dir.path().join("b.pass");
    carp_tests::agent::write_secret(&b_pass, PASSWORD).unwrap();
    let b = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "b",
        &vhid(100, b_pass.to_str().unwrap()),
    )
    .unwrap();
    b.wait_state(1, "MASTER", WAIT).unwrap();

    // First install: the unit is in place, nothing is started.
    let installed = Installed(&sd);
    dpkg_install(&sd, deb);
    let fragment = sd.show(UNIT, "FragmentPath").unwrap();
    assert!(
        fragment.ends_with("/lib/systemd/system/carp-agent.service"),
        "{fragment}"
    );
    assert_eq!(sd.show(UNIT, "ActiveState").unwrap(), "inactive");
    assert_eq!(main_pid(&sd).0, 0);

    sd.systemctl(&["start", UNIT]).unwrap();
    let mut a = Agent::client(&sd.path("/run/carp/agent.sock"));
    a.name = "a (packaged, under systemd)".into();
    a.log = log;
    a.wait_state(1, "MASTER", WAIT).unwrap();
    b.wait_state(1, "BACKUP", WAIT).unwrap();
    let (old, old_exe) = main_pid(&sd);
    assert_eq!(old_exe, "/usr/sbin/carp-agent");

    // Upgrade with the agent running: restarted on the installed binary. With the old
    // postinst (daemon-reload only) the old process runs on, its exe "(deleted)".
    let probe = Probe::start_fast(&lan.hosts[2].ns, VIP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let took = dpkg_install(&sd, deb);
    let (new, new_exe) = main_pid(&sd);
    assert!(
        new != 0 && new != old,
        "the upgrade did not restart the agent: MainPID {old} -> {new} ({new_exe})"
    );
    assert_eq!(new_exe, "/usr/sbin/carp-agent", "MainPID {new}");
    assert_eq!(sd.show(UNIT, "ActiveState").unwrap(), "active");
    // With preempt the restarted master takes the VIP back from b.
    let back = a.wait_state(1, "MASTER", WAIT).unwrap();
    b.wait_state(1, "BACKUP", WAIT).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (lost, dups) = probe.lost();
    drop(probe);
    println!(
        "dpkg -i over itself took {took:.2?}; a MASTER again {back:.2?} later; \
         1 ms probes across the restart: {lost} lost, {dups} duplicated"
    );

    // Upgrade with the agent stopped: it stays stopped.
    sd.systemctl(&["stop", UNIT]).unwrap();
    b.wait_state(1, "MASTER", WAIT).unwrap();
    dpkg_install(&sd, deb);
    assert_eq!(sd.show(UNIT, "ActiveState").unwrap(), "inactive");
    assert_eq!(main_pid(&sd).0, 0);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.state(1).as_deref(), Some("MASTER"));

    drop(installed);
    assert!(
        sd.run(&["dpkg-query", "-W", PACKAGE]).is_err(),
        "not purged"
    );
    assert_eq!(sd.show(UNIT, "LoadState").unwrap(), "not-found");
}
