//! What an operator relies on: systemd's notify protocol and watchdog, Prometheus metrics,
//! and secrets that never show in logs, `ps` or the status.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_tests::{
    agent::{Agent, TempDir, agent_bin},
    bpftool::{Pins, dump},
    lan::Lan,
};
use nix::sys::signal::Signal;
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixDatagram,
    process::Command,
    time::{Duration, Instant},
};

const SECRET: &str = "s3cr3t-0ps-pw";

fn vhid(dir: &TempDir) -> String {
    let pw = dir.path().join("carp.pass");
    carp_tests::agent::write_secret(&pw, SECRET).unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\npass_file = \"{}\"\n",
        pw.display()
    )
}

#[test]
fn systemd_notify_ready_and_watchdog() {
    let dir = TempDir::new("notify").unwrap();
    let lan = Lan::new("notify", &["a"]).unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let a = Agent::start_with_env(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &vhid(&dir),
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    )
    .unwrap();
    let mut ready = false;
    let mut pings = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    while start.elapsed() < Duration::from_secs(5) && pings.len() < 4 {
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]);
        ready |= msg.contains("READY=1");
        if msg.contains("WATCHDOG=1") {
            pings.push(Instant::now());
        }
    }
    assert!(ready, "no READY=1");
    // README: "`WatchdogSec=10`, the agent pings every half of it". With WatchdogSec=2 s,
    // no two pings more than 1.2 s apart (a ping per whole WatchdogSec would be late).
    assert_eq!(pings.len(), 4, "pings at {pings:?}");
    let spacing = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    println!("the longest time between two watchdog pings: {spacing:?}");
    assert!(spacing <= Duration::from_millis(1200), "{spacing:?}");
    drop(a);
}

#[test]
fn prometheus_metrics_are_served() {
    let dir = TempDir::new("metrics").unwrap();
    let lan = Lan::new("metrics", &["a"]).unwrap();
    let a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &format!("metrics = \"127.0.0.1:9720\"\n\n{}", vhid(&dir)),
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let scrape = lan.hosts[0]
        .ns
        .enter(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9720")?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })
        .unwrap();
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    for needle in [
        "carp_vhid_state{interface=\"eth0\",vhid=\"1\"} 2",
        "carp_transitions_total{interface=\"eth0\",vhid=\"1\",reason=\"master timed out\"} 1",
        "carp_adverts_sent_total{interface=\"eth0\",vhid=\"1\"}",
        "carp_xdp_packets_total{interface=\"eth0\",counter=\"bad_hmac\"} 0",
    ] {
        assert!(scrape.contains(needle), "missing {needle}:\n{scrape}");
    }
}

#[test]
fn the_password_never_shows_in_logs_ps_or_status() {
    let dir = TempDir::new("secret").unwrap();
    let lan = Lan::new("secret", &["a"]).unwrap();
    // At trace, the most verbose level: every line info and debug would print, and more.
    let env = [("CARP_LOG", "trace")];
    let mut a =
        Agent::start_with_env(&lan.hosts[0].ns, dir.path(), "a", &vhid(&dir), &env).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", a.pid().unwrap())).unwrap();
    let status = a.ctl(&["status", "--json"]).unwrap() + &a.ctl(&["status"]).unwrap();
    a.signal(Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    a.signal(Signal::SIGTERM).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    let log = a.log_text();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains(" TRACE "),
        "CARP_LOG=trace took no effect:\n{log}"
    );
    for (what, text) in [
        ("ps", String::from_utf8_lossy(&cmdline).into_owned()),
        ("status", status),
        ("log", log),
    ] {
        assert!(!text.contains(SECRET), "the password shows in the {what}");
    }
}

/// `carp-agent status` run by a user who may not open the root-only control socket says
/// whose it is and what to run instead, not that no agent runs (the unit test
/// `a_client_that_cannot_connect_is_told_why` covers a missing and a stale socket).
#[test]
fn status_as_a_user_says_the_socket_is_roots() {
    let dir = TempDir::new("user").unwrap();
    let lan = Lan::new("user", &["a"]).unwrap();
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &vhid(&dir)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let socket = a.socket.to_str().unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(agent_bin())
        .args(["--socket", socket, "status", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{socket} is root's (mode 0600): run `sudo carp-agent --socket {socket} status --json`"
        )),
        "{err}"
    );
    // Root is answered.
    assert_eq!(a.status().unwrap().vhids.len(), 1);
}

/// `[agent] netns` (keepalived's `net_namespace`): started from the host, the agent works
/// in the namespace, pins under the host's bpffs in a directory named for it, and
/// `carp-agent -c FILE status` finds it through the file. bpftool prints the pinned maps
/// with names: states, protocol and flags, the counters, the VIPs and the last advert.
#[test]
fn netns_setting_runs_the_agent_in_its_namespace() {
    let dir = TempDir::new("nsset").unwrap();
    let lan = Lan::new("nsset", &["a", "b"]).unwrap();
    let ns = lan.hosts[0].ns.name();
    let pins = Pins(format!("/sys/fs/bpf/carp/{ns}"));
    // What agents killed before their clean stop left: the pins of an interface this one
    // does not serve, and those of a namespace that is gone.
    let gone = Pins(format!(
        "/sys/fs/bpf/carp/carpt-gone-{}",
        std::process::id()
    ));
    let stale = [
        format!("{}/ethgone/CARP_STATS", pins.0),
        format!("{}/eth0/CARP_STATS", gone.0),
    ];
    for pin in &stale {
        std::fs::create_dir_all(std::path::Path::new(pin).parent().unwrap()).unwrap();
        let made = Command::new("bpftool")
            .args(["map", "create", pin, "type", "array"])
            .args(["key", "4", "value", "8", "entries", "1", "name", "stale"])
            .status()
            .unwrap();
        assert!(made.success(), "bpftool map create {pin}");
    }
    let a = Agent::start_on_host(
        dir.path(),
        "a",
        &format!("netns = \"{ns}\"\n\n{}", vhid(&dir)),
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let ns_b = lan.hosts[1].ns.name();
    let pins_b = Pins(format!("/sys/fs/bpf/carp/{ns_b}"));
    let b = Agent::start_on_host(
        dir.path(),
        "b",
        &format!("netns = \"{ns_b}\"\n\n{}advskew = 100\n", vhid(&dir)),
    )
    .unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(8)).unwrap();
    // Until b has a's advert in its CARP_REPLAY.
    let start = std::time::Instant::now();
    while b.xdp_counter("adverts") == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "b hears no advert"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(agent_bin())
        .arg("-c")
        .arg(&a.config)
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("eth0: carp: MASTER vhid 1"), "{status}");
    let lo = lan.hosts[0]
        .ns
        .ip(&["-4", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("192.0.2.50"),
        "the VIP is not in the namespace"
    );
    let pinned = |pins: &Pins, map: &str| {
        let pin = std::path::Path::new(&pins.0).join("eth0").join(map);
        // Root's alone, as every pin (the HMAC pads are in CARP_KEYS: tests/tests/keys.rs).
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&pin).unwrap());
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", pin.display());
        dump(&pin)
    };
    for (pins, state) in [(&pins, "MASTER"), (&pins_b, "BACKUP")] {
        let vhids = pinned(pins, "CARP_VHIDS");
        let [(key, value)] = &vhids[..] else {
            panic!("{vhids:?}")
        };
        assert_eq!(key["vhid"], 1);
        assert_eq!(value["state"], state);
        assert_eq!(value["protocol"], "CARP");
        let flags = &value["flags"];
        assert_eq!(
            [
                &flags["unicast"],
                &flags["vmac"],
                &flags["router"],
                &flags["nov6ll"],
                &flags["balanced"]
            ],
            [false, true, false, false, false],
            "{value}"
        );
    }
    let stats = pinned(&pins_b, "CARP_STATS");
    assert!(stats[0].1["adverts"].as_u64().unwrap() >= 1, "{stats:?}");
    assert_eq!(stats[0].1["bad_hmac"], 0, "{stats:?}");
    let vips = pinned(&pins, "CARP_VIPS");
    let [(key, value)] = &vips[..] else {
        panic!("{vips:?}")
    };
    let addr = |a: std::net::Ipv4Addr| {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&a.octets());
        serde_json::json!(bytes)
    };
    assert_eq!(key["family"], 4);
    assert_eq!(key["addr"], addr([192, 0, 2, 50].into()));
    assert_eq!(value["vhid"], 1);
    // The backup's record of the master's last advert.
    let replay = pinned(&pins_b, "CARP_REPLAY");
    let [(key, value)] = &replay[..] else {
        panic!("{replay:?}")
    };
    assert_eq!(key["vhid"], 1);
    assert_eq!(value["src"], addr(lan.hosts[0].addr));
    for pin in &stale {
        let dir = std::path::Path::new(pin).parent().unwrap();
        assert!(!dir.exists(), "{} left in place", dir.display());
    }
    assert!(!std::path::Path::new(&gone.0).exists());
    // A clean stop takes its pins away.
    let pinned = std::path::Path::new(&pins.0).join("eth0");
    assert!(pinned.exists());
    let mut a = a;
    a.signal(Signal::SIGTERM).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    assert!(!pinned.exists(), "{} left behind", pinned.display());
}
