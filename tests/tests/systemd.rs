//! The shipped unit, dist/carp-agent.service, under a real systemd (booted as PID 1 of
//! private namespaces): Type=notify readiness, the capability set, reload, the watchdog
//! restarting a frozen agent, and the bow-out on stop, with a plain agent as backup; and
//! hooks that need root's full powers run through dist/hooks/carp-hook-unsandboxed while
//! the agent stays in its sandbox.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::control::Verdict;
use carp_tests::{
    agent::{Agent, TempDir, agent_bin},
    lan::Lan,
    netns::Netns,
    systemd::Systemd,
};
use std::{
    path::Path,
    time::{Duration, Instant},
};

const UNIT: &str = "carp-agent.service";
const PASSWORD: &str = "systemd-secret";
/// In systemd's private /run.
const PASS_FILE: &str = "/run/carp-test/carp.pass";
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

/// Asserts that a hook printed each of `lines`.
fn has_lines(out: &[String], lines: &[&str]) {
    for line in lines {
        assert!(out.iter().any(|l| l == line), "no {line:?} in {out:#?}");
    }
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

/// Installs the shipped unit verbatim (/etc/systemd/system is an empty tmpfs there, so
/// nothing on the host shadows it) and a drop-in for what this environment needs: the
/// agent under test runs in `ns` with `config` (and the password in `PASS_FILE`), logging
/// to `log`. A client of its control socket.
fn install_unit(sd: &Systemd, ns: &Netns, log: &Path, config: &str) -> Agent {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/carp-agent.service"
    ))
    .unwrap();
    sd.write("/run/systemd/system/carp-agent.service", &unit)
        .unwrap();
    // The binary under test, copied into systemd's private /run with its configuration:
    // PrivateTmp=yes hides /tmp from the service, where a checkout (and its target) may be.
    let bin = "/run/carp-test/carp-agent";
    sd.write(bin, std::fs::read(agent_bin()).unwrap()).unwrap();
    std::fs::set_permissions(
        sd.path(bin),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dropin = format!(
        "[Service]\n\
         # The binary under test and its configuration, in systemd's private /run.\n\
         ExecStart=\n\
         ExecStart={bin} --config /run/carp-test/carp.toml\n\
         # The host is a network namespace of the test's LAN.\n\
         NetworkNamespacePath=/run/netns/{ns}\n\
         # Shorter than the shipped 10 s to save time, yet the agent pings every\n\
         # WatchdogSec/2: a frozen agent is killed 4 to 8 s after it froze, after b's\n\
         # 3.39 s master-down, in the order the shipped value gives.\n\
         WatchdogSec=8\n\
         # No journald here: the log (stderr follows stdout) goes to a file the test reads.\n\
         StandardOutput=append:{log}\n",
        ns = ns.name(),
        log = log.display(),
    );
    sd.write("/run/systemd/system/carp-agent.service.d/test.conf", dropin)
        .unwrap();
    sd.write(PASS_FILE, PASSWORD).unwrap();
    carp_tests::agent::write_secret(&sd.path(PASS_FILE), PASSWORD).unwrap();
    sd.write("/run/carp-test/carp.toml", config).unwrap();
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
    a.log = log.to_owned();
    a
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

    // No [agent] section: the default socket is /run/carp/agent.sock (the unit's
    // RuntimeDirectory), pins go under /sys/fs/bpf (its ReadWritePaths), VIPs on lo.
    let mut a = install_unit(
        &sd,
        &lan.hosts[0].ns,
        &dir.path().join("a.log"),
        &vhid(0, PASS_FILE),
    );
    a.name = "a (under systemd)".into();

    // 1. `systemctl start` returns once the agent sent READY=1, which it does after its
    // control socket listens and its VHIDs are set up: it answers at once.
    let t = Instant::now();
    sd.systemctl(&["start", UNIT]).unwrap();
    let started = t.elapsed();
    let status = a.status().expect("no status right after start");
    assert_eq!(status.vhids[0].vhid, 1, "{status:?}");
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
    carp_tests::agent::write_secret(&pw_b, PASSWORD).unwrap();
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

/// README: `KillMode=mixed` "(SIGTERM to the agent only, so a hook still running is not
/// killed with it and the down hooks it starts on the way out run after it)".
/// `systemctl stop` while the up hook is still running: the agent waits for it, then runs
/// the down hook, and both finish their work (a second each). Under
/// `KillMode=control-group` the SIGTERM kills the up hook; before the fix the agent took
/// the up hook's end for the down hook's and exited without running it.
#[test]
fn a_stop_kills_no_hook_of_the_agent() {
    let dir = TempDir::new("systemd-stop").unwrap();
    let lan = Lan::new("sds", &["a"]).unwrap();
    let sd = Systemd::boot("sds", &[&lan.hosts[0].ns]).unwrap();
    let hook = "/run/carp-test/slow-hook";
    sd.write(hook, "#!/bin/sh\nsleep 1\necho \"$CARP_STATE written\"\n")
        .unwrap();
    sd.run(&["chmod", "755", hook]).unwrap();
    let config = format!(
        "{}up_script = \"{hook}\"\ndown_script = \"{hook}\"\n",
        vhid(0, PASS_FILE)
    );
    let a = install_unit(&sd, &lan.hosts[0].ns, &dir.path().join("a.log"), &config);
    sd.systemctl(&["start", UNIT]).unwrap();
    a.wait_state(1, "MASTER", WAIT).unwrap();
    // The up hook sleeps for a second from here.
    sd.systemctl(&["stop", UNIT]).unwrap();
    assert_eq!(sd.show(UNIT, "Result").unwrap(), "success");
    let log = a.log_text();
    for outcome in ["BACKUP -> MASTER done", "MASTER -> INIT done"] {
        assert!(log.contains(&format!("hook {hook} {outcome}")), "{log}");
    }
    assert_eq!(
        hook_output(&log, hook),
        ["MASTER written", "INIT written"],
        "{log}"
    );
}

/// Stands in for dist/hooks/carp-hast-switch: what it does on becoming MASTER (record the
/// new role under /var/lib, mount the replicated device where MySQL keeps its data, start
/// MySQL) and on leaving it, with a tmpfs for the device, and reports each step, the argv,
/// the CARP_* environment and the powers it runs with. Its exit status is the number of
/// steps that failed.
const SWITCH_HOOK: &str = r#"#!/bin/sh
data=/var/lib/carpt-mysql-$CARP_VHID
failed=0
step() { # step NAME COMMAND...
	what=$1
	shift
	if "$@" 2>&1; then echo "$what: ok"; else echo "$what: FAILED"; failed=$((failed + 1)); fi
}
echo "argv: $*"
env | grep '^CARP_' | sort
grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\t'
echo "cgroup: $(grep '^0::' /proc/self/cgroup)"
echo "eth0: $(ip -4 -br addr show dev eth0 2>&1)"
case "$CARP_STATE" in
MASTER)
	step role sh -c "echo primary >/var/lib/carpt-role-$CARP_VHID"
	step mount mount -t tmpfs carpt-hast "$data"
	step data sh -c "echo innodb >$data/ibdata1"
	step mysql-start systemctl start "carpt-mysql@$CARP_VHID.service"
	;;
*)
	step mysql-stop systemctl stop "carpt-mysql@$CARP_VHID.service"
	step umount umount "$data"
	step role sh -c "echo secondary >/var/lib/carpt-role-$CARP_VHID"
	;;
esac
exit $failed
"#;

/// Stands in for MySQL: starts only with its data in place.
const MYSQL_UNIT: &str = "[Unit]\n\
    Description=stand-in for MySQL: needs its data on the replicated device\n\
    [Service]\n\
    Type=oneshot\n\
    RemainAfterExit=yes\n\
    ExecStart=/bin/sh -c 'test -s /var/lib/carpt-mysql-%i/ibdata1'\n";

/// What hook `script` wrote, as the agent logged it ("hook SCRIPT: LINE vhid=N").
fn hook_output(log: &str, script: &str) -> Vec<String> {
    let prefix = format!("hook {script}: ");
    log.lines()
        .filter_map(|l| l.split_once(&prefix))
        .map(|(_, rest)| rest.rsplit_once(" vhid=").map_or(rest, |(line, _)| line))
        .map(str::to_owned)
        .collect()
}

/// `inside` is a mount point in systemd's mount namespace (not the host's).
fn mounted(sd: &Systemd, inside: &str) -> Option<String> {
    sd.run(&["findmnt", "-rn", "-o", "SOURCE,FSTYPE", inside])
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The host's mounts whose source is one of this test's (`carpt-...`).
fn host_mounts() -> String {
    let out = std::process::Command::new("findmnt")
        .args(["-rn", "-o", "SOURCE,TARGET"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("carpt-hast ") || l.starts_with("carpt-var-lib "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// dist/hooks/carp-hook-unsandboxed: under the shipped unit, a hook run through it has
/// root's full powers (mounts, writes /var/lib, starts a service that needs both), gets
/// ucarp's argv and the CARP_* environment, is waited for, logged and stopped at
/// hook_timeout by the agent as a direct hook is; the same hook run directly cannot.
#[test]
fn hooks_run_unsandboxed_through_the_wrapper() {
    let t0 = Instant::now();
    let dir = TempDir::new("systemd-hooks").unwrap();
    let lan = Lan::new("sdh", &["a"]).unwrap();
    let sd = Systemd::boot("sdh", &[&lan.hosts[0].ns]).unwrap();
    println!("systemd booted as PID 1 in {:.2?}", sd.boot_time());
    // The host is never written to: everything below happens in systemd's private mount
    // namespace, /var/lib there is a tmpfs of the test's, /run there is private.
    let host_var_lib = |vhid: u8| {
        Path::new(&format!("/var/lib/carpt-mysql-{vhid}")).exists()
            || Path::new(&format!("/var/lib/carpt-role-{vhid}")).exists()
    };
    assert!(
        !host_var_lib(1) && !host_var_lib(2),
        "leftovers on the host"
    );
    assert_eq!(host_mounts(), "", "leftover mounts on the host");
    sd.run(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "mode=755",
        "carpt-var-lib",
        "/var/lib",
    ])
    .unwrap();
    assert_eq!(
        mounted(&sd, "/var/lib").as_deref(),
        Some("carpt-var-lib tmpfs")
    );
    // The mount points exist, as the replicated device's would.
    for n in 1..=2 {
        sd.run(&["mkdir", &format!("/var/lib/carpt-mysql-{n}")])
            .unwrap();
    }

    // VHID 1 runs the hook through the wrapper, VHID 2 runs it directly, VHID 3 runs a
    // hook through the wrapper that hangs until the agent kills it, and fails on the way
    // down.
    let hooks = "/run/carp-test/hooks";
    let wrapper = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dist/hooks/carp-hook-unsandboxed"
    ))
    .unwrap();
    sd.write(&format!("{hooks}/carp-hook-unsandboxed"), wrapper)
        .unwrap();
    sd.write(&format!("{hooks}/carpt-switch"), SWITCH_HOOK)
        .unwrap();
    sd.write(
        &format!("{hooks}/carpt-hang"),
        "#!/bin/sh\n\
         case \"$CARP_STATE\" in\n\
         MASTER) echo hanging; exec sleep 987 ;;\n\
         *) echo \"giving up: $CARP_OLD_STATE -> $CARP_STATE\" >&2; exit 7 ;;\n\
         esac\n",
    )
    .unwrap();
    sd.run(&["chmod", "755", hooks]).unwrap();
    for hook in ["carp-hook-unsandboxed", "carpt-switch", "carpt-hang"] {
        sd.run(&["chmod", "755", &format!("{hooks}/{hook}")])
            .unwrap();
    }
    for hook in ["carpt-switch", "carpt-hang"] {
        sd.run(&[
            "ln",
            "-s",
            "carp-hook-unsandboxed",
            &format!("{hooks}/{hook}.unsandboxed"),
        ])
        .unwrap();
    }
    sd.write("/run/systemd/system/carpt-mysql@.service", MYSQL_UNIT)
        .unwrap();
    let wrapped = format!("{hooks}/carpt-switch.unsandboxed");
    let direct = format!("{hooks}/carpt-switch");
    let hang = format!("{hooks}/carpt-hang.unsandboxed");
    let vhid = |n: u8, script: &str| {
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = {n}\nvips = [\"192.0.2.5{n}/24\"]\n\
             pass_file = \"{PASS_FILE}\"\nup_script = \"{script}\"\ndown_script = \"{script}\"\n"
        )
    };
    // And a health check from inside the sandbox: is the MySQL of VHID 1 running?
    let check = "[[check]]\nname = \"mysql\"\ninterval = 0.2\nfall = 1\nrise = 1\n\
                 command = [\"/usr/bin/systemctl\", \"is-active\", \"--quiet\", \"carpt-mysql@1.service\"]\n";
    let config = format!(
        "[agent]\nhook_timeout = 3\n\n{}{}{}{check}",
        vhid(1, &wrapped),
        vhid(2, &direct),
        vhid(3, &hang),
    );
    // A setting for the hook, given to the agent as an operator would (the wrapper passes
    // every CARP_* variable on).
    sd.write(
        "/run/systemd/system/carp-agent.service.d/hast.conf",
        "[Service]\nEnvironment=CARP_HAST_RESOURCES=test\n",
    )
    .unwrap();
    let a = install_unit(&sd, &lan.hosts[0].ns, &dir.path().join("a.log"), &config);
    // The agent runs in a named namespace (NetworkNamespacePath=/run/netns/NAME): the
    // wrapper's units carry its name, so agents of one host with the same VHID never meet.
    let hook_unit = |n: u8| format!("carp-hook-{}-eth0-{n}.service", lan.hosts[0].ns.name());

    sd.systemctl(&["start", UNIT]).unwrap();
    let t = Instant::now();
    for n in 1..=3 {
        a.wait_state(n, "MASTER", WAIT).unwrap();
    }
    let master = t.elapsed();
    // The agent logs each hook's outcome as "hook SCRIPT OUTCOME".
    let done = |script: &str, outcome: &str| {
        let wanted = format!("hook {script} {outcome}");
        let start = Instant::now();
        while !a.log_text().contains(&wanted) {
            assert!(
                start.elapsed() < WAIT,
                "no {wanted:?} after {WAIT:?}:\n{}",
                a.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    done(&wrapped, "BACKUP -> MASTER done");
    let up = t.elapsed();
    done(&direct, "failed: exit status: 4");
    println!("MASTER after {master:.2?}, the wrapped up hook done {up:.2?} after the start");

    // Through the wrapper: every step worked, in systemd's mount namespace, as root with
    // every capability, in a unit of its own, in the agent's network namespace.
    let log = a.log_text();
    let out = hook_output(&log, &wrapped);
    println!("wrapped up hook:\n  {}", out.join("\n  "));
    has_lines(
        &out,
        &[
            "argv: eth0 192.0.2.51",
            "CARP_HAST_RESOURCES=test",
            "CARP_INTERFACE=eth0",
            "CARP_OLD_STATE=BACKUP",
            "CARP_STATE=MASTER",
            "CARP_VHID=1",
            "CARP_VIPS=192.0.2.51",
            "NoNewPrivs:0",
            &format!("CARP_NETNS={}", lan.hosts[0].ns.name()),
            &format!("cgroup: 0::/system.slice/{}", hook_unit(1)),
            "role: ok",
            "mount: ok",
            "data: ok",
            "mysql-start: ok",
        ],
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("eth0: ") && l.contains(" 192.0.2.1/24")),
        "not in the agent's network namespace: {out:#?}"
    );
    let cap_eff = out
        .iter()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .unwrap();
    assert_ne!(cap_eff & 1 << 21, 0, "no CAP_SYS_ADMIN: {cap_eff:x}");
    assert_eq!(
        mounted(&sd, "/var/lib/carpt-mysql-1").as_deref(),
        Some("carpt-hast tmpfs")
    );
    assert_eq!(
        sd.run(&["cat", "/var/lib/carpt-mysql-1/ibdata1"]).unwrap(),
        "innodb\n"
    );
    assert_eq!(
        sd.run(&["cat", "/var/lib/carpt-role-1"]).unwrap(),
        "primary\n"
    );
    assert_eq!(
        sd.show("carpt-mysql@1.service", "ActiveState").unwrap(),
        "active"
    );
    // Waited for and gone: the start job of the oneshot lasted as long as the hook.
    assert_eq!(sd.show(&hook_unit(1), "LoadState").unwrap(), "not-found");

    // The check sees what systemctl sees from inside the agent's sandbox.
    let check_is = |state: Verdict| {
        until(&format!("check mysql {state}"), WAIT, || {
            a.status().is_ok_and(|s| {
                s.checks
                    .iter()
                    .any(|c| c.name == "mysql" && c.state == state)
            })
        })
    };
    check_is(Verdict::Healthy);
    sd.systemctl(&["stop", "carpt-mysql@1.service"]).unwrap();
    let failing = check_is(Verdict::Failing);
    assert_eq!(a.status().unwrap().demotion, 240);
    sd.systemctl(&["start", "carpt-mysql@1.service"]).unwrap();
    let healthy = check_is(Verdict::Healthy);
    assert_eq!(a.status().unwrap().demotion, 0);
    println!(
        "check `systemctl is-active` under the sandbox: failing {failing:.2?} after the \
         service stopped, healthy {healthy:.2?} after it started"
    );

    // Directly: the sandbox refuses each step; the agent logs the hook's failure.
    let out = hook_output(&log, &direct);
    println!("direct up hook:\n  {}", out.join("\n  "));
    has_lines(
        &out,
        &[
            "argv: eth0 192.0.2.52",
            "CARP_VHID=2",
            "CARP_STATE=MASTER",
            "NoNewPrivs:1",
            "cgroup: 0::/system.slice/carp-agent.service",
            "role: FAILED",
            "mount: FAILED",
            "data: FAILED",
            "mysql-start: FAILED",
        ],
    );
    assert_eq!(mounted(&sd, "/var/lib/carpt-mysql-2"), None);
    assert!(sd.run(&["cat", "/var/lib/carpt-role-2"]).is_err());
    assert_eq!(
        sd.show("carpt-mysql@2.service", "ActiveState").unwrap(),
        "failed"
    );

    // The hook that hangs: killed by the agent at hook_timeout, and its unit is stopped
    // with it (the agent's SIGKILL reaches the wrapper only; the wrapper's lifeline).
    done(&hang, "killed after 3s");
    let killed = t.elapsed();
    let stopped = until("the hanging hook's unit stopped", WAIT, || {
        sd.show(&hook_unit(3), "ActiveState").unwrap() == "failed"
    });
    assert_eq!(sd.show(&hook_unit(3), "Result").unwrap(), "signal");
    assert!(
        sd.run(&["pgrep", "-f", "sleep 987"]).is_err(),
        "the hanging hook still runs"
    );
    println!(
        "hanging hook killed {killed:.2?} after the start, its unit stopped {stopped:.2?} later"
    );

    // Stop: the down hooks run (the agent waits for them): the wrapped one stops MySQL
    // and unmounts.
    let t = Instant::now();
    sd.systemctl(&["stop", UNIT]).unwrap();
    let stop = t.elapsed();
    let log = a.log_text();
    assert!(
        log.contains(&format!("hook {wrapped} MASTER -> INIT done")),
        "{log}"
    );
    let out = hook_output(&log, &wrapped);
    has_lines(
        &out,
        &[
            "CARP_STATE=INIT",
            "CARP_OLD_STATE=MASTER",
            "mysql-stop: ok",
            "umount: ok",
            "role: ok",
        ],
    );
    assert!(
        hook_output(&log, &direct)
            .iter()
            .any(|l| l == "umount: FAILED"),
        "{log}"
    );
    assert_eq!(mounted(&sd, "/var/lib/carpt-mysql-1"), None);
    assert_eq!(
        sd.show("carpt-mysql@1.service", "ActiveState").unwrap(),
        "inactive"
    );
    assert_eq!(
        sd.run(&["cat", "/var/lib/carpt-role-1"]).unwrap(),
        "secondary\n"
    );
    // The failing one: its output, its exit status, and its unit kept for a look (it
    // reused the name the killed run left behind).
    assert!(
        log.contains(&format!("hook {hang} failed: exit status: 7")),
        "{log}"
    );
    let out = hook_output(&log, &hang);
    has_lines(
        &out,
        &[
            "giving up: MASTER -> INIT",
            &format!(
                "carpt-hang.unsandboxed: {0} failed (exit-code), see: systemctl status {0}",
                hook_unit(3)
            ),
        ],
    );
    assert_eq!(sd.show(&hook_unit(3), "ExecMainStatus").unwrap(), "7");
    assert!(log.contains("carp-agent stopped"), "{log}");
    println!("hook outcomes as the agent logged them:");
    // "hook SCRIPT OUTCOME", not "hook SCRIPT: LINE".
    for l in log.lines().filter(|l| {
        l.split_once(" hook /")
            .and_then(|(_, rest)| rest.split_once(' '))
            .is_some_and(|(path, _)| !path.ends_with(':'))
    }) {
        println!("  {l}");
    }
    println!("systemctl stop returned after {stop:.2?}, down hooks included");

    // Power off with the agent running (VHID 1 only): the down hook's unit still starts
    // while the host shuts down (DefaultDependencies=no) and the agent waits for it.
    sd.write(
        "/run/carp-test/carp.toml",
        format!("[agent]\nhook_timeout = 3\n\n{}", vhid(1, &wrapped)),
    )
    .unwrap();
    sd.systemctl(&["start", UNIT]).unwrap();
    a.wait_state(1, "MASTER", WAIT).unwrap();
    let count = |what: &str| {
        a.log_text()
            .matches(&format!("hook {wrapped} {what}"))
            .count()
    };
    until("the second up hook", WAIT, || {
        count("BACKUP -> MASTER done") == 2
    });
    assert_eq!(
        sd.show("carpt-mysql@1.service", "ActiveState").unwrap(),
        "active"
    );
    assert_eq!(host_mounts(), "", "mounts leaked to the host");
    let t = Instant::now();
    drop(sd);
    let poweroff = t.elapsed();
    assert_eq!(count("MASTER -> INIT done"), 2, "{}", a.log_text());
    let out = hook_output(&a.log_text(), &wrapped);
    assert_eq!(
        out.iter().filter(|l| *l == "umount: ok").count(),
        2,
        "{out:#?}"
    );
    println!("poweroff took {poweroff:.2?}, the down hook included");

    // The host saw none of it.
    assert_eq!(host_mounts(), "", "mounts leaked to the host");
    assert!(
        !host_var_lib(1) && !host_var_lib(2),
        "the host's /var/lib was written"
    );
    println!("total {:.2?}", t0.elapsed());
}
