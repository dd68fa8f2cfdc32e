//! The shipped unit, dist/carp-agent.service, under a real systemd (booted as PID 1 of
//! private namespaces): Type=notify readiness, the capability set, reload, the watchdog
//! restarting a frozen agent, and the bow-out on stop, with a plain agent as backup.

use carp_tests::{
    agent::{Agent, TempDir, agent_bin},
    lan::Lan,
    systemd::Systemd,
};
use std::time::{Duration, Instant};

const UNIT: &str = "carp-agent.service";
const PASSWORD: &str = "systemd-secret";
const ADVBASE: Duration = Duration::from_secs(1);
/// Master-down time of b (advbase 1, advskew 100): 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
const WAIT: Duration = Duration::from_secs(8);
/// Exactly what the unit's CapabilityBoundingSet= names: CAP_NET_ADMIN (12), CAP_NET_RAW
/// (13), CAP_PERFMON (38), CAP_BPF (39).
const CAPS: u64 = 1 << 12 | 1 << 13 | 1 << 38 | 1 << 39;

fn vhid(advskew: u8, pass_file: &str) -> String {
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\
         advskew = {advskew}\npreempt = true\npass_file = \"{pass_file}\"\n"
    )
}

/// Polls `f` every 20 ms until it holds; how long that took.
fn until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// A `Cap*:` line of /proc/PID/status.
fn caps(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

#[test]
fn shipped_unit_runs_under_systemd() {
    let dir = TempDir::new("systemd").unwrap();
    let lan = Lan::new("sd", &["a", "b"]).unwrap();
    let sd = Systemd::boot("sd", &[&lan.hosts[0].ns]).unwrap();
    println!("systemd booted as PID 1 in {:.2?}", sd.boot_time());
    let main_pid = || sd.show(UNIT, "MainPID").unwrap();
    let vip_on_a = || {
        let out = lan.hosts[0].ns.ip(&["-4", "addr", "show", "dev", "lo"]);
        String::from_utf8_lossy(&out.unwrap().stdout).contains("192.0.2.50/32")
    };

    // The unit verbatim (/etc/systemd/system is an empty tmpfs there, so nothing on the
    // host shadows it), and a drop-in for what this environment needs.
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/carp-agent.service"
    ))
    .unwrap();
    sd.write("/run/systemd/system/carp-agent.service", &unit)
        .unwrap();
    let bin = std::fs::canonicalize(agent_bin()).unwrap();
    let log = dir.path().join("a.log");
    let dropin = format!(
        "[Service]\n\
         # The binary under test. Its configuration lives in systemd's private /run:\n\
         # PrivateTmp=yes hides the test's temporary directory from the service.\n\
         ExecStart=\n\
         ExecStart={bin} --config /run/carp-test/carp.toml\n\
         # Host a is a network namespace of the test's LAN.\n\
         NetworkNamespacePath=/run/netns/{ns}\n\
         # Shorter than the shipped 10 s to save time, yet the agent pings every\n\
         # WatchdogSec/2: a frozen agent is killed 4 to 8 s after it froze, after b's\n\
         # 3.39 s master-down, in the order the shipped value gives.\n\
         WatchdogSec=8\n\
         # No journald here: the log (stderr follows stdout) goes to a file the test reads.\n\
         StandardOutput=append:{log}\n",
        bin = bin.display(),
        ns = lan.hosts[0].ns.name(),
        log = log.display(),
    );
    sd.write("/run/systemd/system/carp-agent.service.d/test.conf", dropin)
        .unwrap();
    // No [agent] section: the default socket is /run/carp/agent.sock (the unit's
    // RuntimeDirectory), pins go under /sys/fs/bpf (its ReadWritePaths), VIPs on lo.
    sd.write("/run/carp-test/carp.pass", PASSWORD).unwrap();
    sd.write(
        "/run/carp-test/carp.toml",
        vhid(0, "/run/carp-test/carp.pass"),
    )
    .unwrap();
    sd.systemctl(&["daemon-reload"]).unwrap();
    assert_eq!(
        sd.show(UNIT, "FragmentPath").unwrap(),
        "/run/systemd/system/carp-agent.service"
    );
    assert!(
        sd.show(UNIT, "DropInPaths")
            .unwrap()
            .ends_with("/test.conf"),
        "{}",
        sd.show(UNIT, "DropInPaths").unwrap()
    );
    let mut a = Agent::client(&sd.path("/run/carp/agent.sock"));
    a.name = "a (under systemd)".into();
    a.log = log;

    // 1. `systemctl start` returns once the agent sent READY=1, which it does after its
    // control socket listens and its VHIDs are set up: it answers at once.
    let t = Instant::now();
    sd.systemctl(&["start", UNIT]).unwrap();
    let started = t.elapsed();
    let status = a.ctl(&["status"]).expect("no status right after start");
    assert!(status.contains("vhid 1"), "{status}");
    assert_eq!(sd.show(UNIT, "ActiveState").unwrap(), "active");
    assert_eq!(sd.show(UNIT, "SubState").unwrap(), "running");
    let master = a.wait_state(1, "MASTER", WAIT).unwrap();
    println!(
        "systemctl start returned after {started:.2?} (READY=1); MASTER {:.2?} later",
        master
    );
    let pid = main_pid();
    let proc_status = sd.run(&["cat", &format!("/proc/{pid}/status")]).unwrap();
    for field in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(
            caps(&proc_status, field),
            CAPS,
            "{field} is not the unit's set"
        );
    }
    assert!(proc_status.contains("NoNewPrivs:\t1"), "{proc_status}");
    let cgroup = sd.run(&["cat", &format!("/proc/{pid}/cgroup")]).unwrap();
    assert!(
        cgroup
            .lines()
            .any(|l| l == "0::/system.slice/carp-agent.service"),
        "{cgroup}"
    );
    // It works in host a's namespace (NetworkNamespacePath=): the VIP on lo there, and
    // the arp_ignore it sets for VIPs on lo.
    assert!(vip_on_a(), "the VIP is not on a's lo");
    let arp_ignore = lan.hosts[0]
        .ns
        .command("cat")
        .arg("/proc/sys/net/ipv4/conf/eth0/arp_ignore")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&arp_ignore.stdout).trim(), "1");
    // The default dependencies pulled in sysinit.target: none of its units ran.
    let services = sd
        .systemctl(&[
            "list-units",
            "--type=service",
            "--state=active",
            "--plain",
            "--no-legend",
        ])
        .unwrap();
    let services: Vec<&str> = services
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(services, [UNIT]);

    let pw_b = dir.path().join("carp.pass");
    std::fs::write(&pw_b, PASSWORD).unwrap();
    let b = Agent::start(
        &lan.hosts[1].ns,
        dir.path(),
        "b",
        &vhid(100, pw_b.to_str().unwrap()),
    )
    .unwrap();
    b.wait_state(1, "BACKUP", WAIT).unwrap();

    // 2. Reload (ExecReload= sends SIGHUP): same process, still MASTER.
    let logged = a.log_text().len();
    let t = Instant::now();
    sd.systemctl(&["reload", UNIT]).unwrap();
    until("configuration reloaded", WAIT, || {
        a.log_text()[logged..].contains("configuration reloaded")
    });
    println!(
        "systemctl reload: configuration reloaded after {:.2?}",
        t.elapsed()
    );
    assert_eq!(main_pid(), pid, "reload restarted the agent");
    assert_eq!(sd.show(UNIT, "ActiveState").unwrap(), "active");
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));

    // 3. A frozen agent: b takes over when the adverts stop, the watchdog kills a and
    // systemd restarts it, and with preempt a is MASTER again.
    assert_eq!(sd.show(UNIT, "NRestarts").unwrap(), "0");
    let t = Instant::now();
    sd.run(&["kill", "-STOP", &pid]).unwrap();
    b.wait_state(1, "MASTER", WAIT).unwrap();
    let b_master = t.elapsed();
    until("watchdog restart", Duration::from_secs(20), || {
        sd.show(UNIT, "NRestarts").unwrap() == "1"
            && sd.show(UNIT, "ActiveState").unwrap() == "active"
    });
    let restarted = t.elapsed();
    assert_ne!(main_pid(), pid, "the frozen process is still the main one");
    a.wait_state(1, "MASTER", WAIT).unwrap();
    let a_back = t.elapsed();
    b.wait_state(1, "BACKUP", WAIT).unwrap();
    println!(
        "a frozen: b MASTER after {b_master:.2?}, watchdog restart done after \
         {restarted:.2?}, a MASTER again after {a_back:.2?}"
    );
    assert!(
        sd.console()
            .contains("carp-agent.service: Watchdog timeout"),
        "not restarted by the watchdog:\n{}",
        sd.console()
    );

    // 4. Stop: the master bows out, so b takes over sooner than it could have noticed
    // missing adverts (master-down after the last advert, which was at most advbase
    // before); the unit ends cleanly (inactive, not auto-restarting).
    let pid = main_pid();
    let t = Instant::now();
    sd.systemctl(&["stop", UNIT]).unwrap();
    let stopped = t.elapsed();
    let bound = MASTER_DOWN - ADVBASE;
    b.wait_state(1, "MASTER", bound.saturating_sub(t.elapsed()))
        .unwrap();
    println!(
        "systemctl stop returned after {stopped:.2?}; b MASTER {:.2?} after the stop \
         (without the bow-out no sooner than {bound:.2?})",
        t.elapsed()
    );
    assert_eq!(sd.show(UNIT, "ActiveState").unwrap(), "inactive");
    assert_eq!(sd.show(UNIT, "Result").unwrap(), "success");
    assert!(!vip_on_a(), "a left its VIP behind");
    assert!(
        !sd.path("/run/carp").exists(),
        "RuntimeDirectory left behind"
    );
    assert!(
        a.log_text().contains("carp-agent stopped"),
        "{}",
        a.log_text()
    );
    assert!(
        sd.run(&["kill", "-0", &pid]).is_err(),
        "pid {pid} still runs"
    );
}
