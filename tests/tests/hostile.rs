//! What an attacker on the link or a careless local user tries against a running agent:
//! idle and oversized clients, a socket path over someone else's file, secrets offered to
//! hooks, adverts from strangers to a unicast group, and a stop that must give back what
//! the start changed. State and counters come from the typed status.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::{frame, hmac::Auth, send::PacketSocket};
use carp_common::{
    State,
    ether::ETH_HLEN,
    maps::{LOG_BURST, LOG_INTERVAL_NS},
    wire::{self, CarpHeader},
};
use carp_tests::{
    agent::{Agent, TempDir, agent_bin, write_secret},
    lan::Lan,
    netns::Netns,
    peers::Scripted,
};
use nix::sys::signal::Signal;
use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    time::{Duration, Instant},
};

const PASSWORD: &str = "hostile-secret";

fn vhid(dir: &TempDir, extra: &str) -> String {
    let pw = dir.path().join("carp.pass");
    write_secret(&pw, PASSWORD).unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\
         pass_file = \"{}\"\n{extra}\n",
        pw.display()
    )
}

/// 150 idle clients on the metrics port and on the control socket, and a request line of
/// a mebibyte: the operator still gets the status and a scrape, the oversized request an
/// error, and idle clients are dropped (they once held a core and made checks fail with
/// "Too many open files").
#[test]
fn idle_and_oversized_clients_do_not_lock_the_operator_out() {
    let dir = TempDir::new("flood").unwrap();
    let lan = Lan::new("flood", &["a"]).unwrap();
    let a = Agent::start(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &format!("metrics = \"127.0.0.1:9721\"\n\n{}", vhid(&dir, "")),
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let idle_control: Vec<UnixStream> = (0..150)
        .map(|_| UnixStream::connect(&a.socket).unwrap())
        .collect();
    let (scrape, closed) = lan.hosts[0]
        .ns
        .enter(|| {
            let idle: Vec<std::net::TcpStream> = (0..150)
                .map(|_| std::net::TcpStream::connect("127.0.0.1:9721"))
                .collect::<Result<_, _>>()?;
            let mut s = std::net::TcpStream::connect("127.0.0.1:9721")?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            // The oldest idle client was made to give way: end of stream.
            let mut first = &idle[0];
            first.set_read_timeout(Some(Duration::from_secs(5)))?;
            let closed = first.read(&mut [0u8; 1])? == 0;
            Ok((text, closed))
        })
        .unwrap();
    assert!(scrape.starts_with("HTTP/1.1 200 OK"), "{scrape}");
    assert!(closed, "an idle metrics client is never dropped");
    let t = Instant::now();
    let status = a.status().unwrap();
    println!("status under 150 idle clients: {:?}", t.elapsed());
    assert_eq!(status.vhids[0].state, State::MASTER);
    drop(idle_control);

    let mut big = UnixStream::connect(&a.socket).unwrap();
    let line = vec![b'x'; 1 << 20];
    // The agent stops reading at its bound: the rest may not be taken.
    let _ = big.write_all(&line);
    let mut reply = String::new();
    big.read_to_string(&mut reply).unwrap();
    assert!(
        reply.contains("not one line of at most 65536 bytes"),
        "{reply}"
    );
    assert_eq!(a.status().unwrap().vhids[0].state, State::MASTER);
}

/// The control socket replaces a stale socket and nothing else, and leaves the mode of a
/// directory it did not make (`--socket /tmp/x.sock` once made /tmp 0700).
#[test]
fn the_control_socket_takes_only_what_is_its_own() {
    let dir = TempDir::new("sockpath").unwrap();
    let lan = Lan::new("sockpath", &["a"]).unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let precious = shared.join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    let config = dir.path().join("a.toml");
    let write_config = |socket: &std::path::Path| {
        std::fs::write(
            &config,
            format!(
                "[agent]\nsocket = \"{}\"\n\n{}",
                socket.display(),
                vhid(&dir, "")
            ),
        )
        .unwrap();
    };
    write_config(&precious);
    let mut child = lan.hosts[0]
        .ns
        .command(agent_bin().to_str().unwrap())
        .arg("-c")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        child.try_wait().unwrap()
    });
    if exited.is_none() {
        let _ = child.kill();
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    assert!(
        exited.is_some_and(|s| !s.success()),
        "it took the path over"
    );
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");

    let socket = shared.join("agent.sock");
    write_config(&socket);
    let a = Agent::client(&socket);
    let mut child = lan.hosts[0]
        .ns
        .command(agent_bin().to_str().unwrap())
        .arg("-c")
        .arg(&config)
        .spawn()
        .unwrap();
    let answered = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        a.status().is_ok()
    });
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered);
    assert_eq!(mode, 0o755, "the directory's mode was changed");
}

/// Hooks get the CARP_* variables and a harmless few, never the agent's environment,
/// where `pass_env` keeps the password.
#[test]
fn hooks_never_see_the_password() {
    let dir = TempDir::new("hookenv").unwrap();
    let lan = Lan::new("hookenv", &["a"]).unwrap();
    let env_file = dir.path().join("env");
    let hook = dir.path().join("up.sh");
    std::fs::write(&hook, format!("#!/bin/sh\nenv > {}\n", env_file.display())).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let a = Agent::start_with_env(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\
             pass_env = \"CARP_HOSTILE_PW\"\nup_script = \"{}\"\n",
            hook.display()
        ),
        &[("CARP_HOSTILE_PW", PASSWORD)],
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let env = loop {
        match std::fs::read_to_string(&env_file) {
            Ok(t) if t.contains("CARP_STATE=MASTER") => break t,
            _ if Instant::now() > deadline => panic!("the hook did not run: {}", a.log_text()),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert!(!env.contains(PASSWORD), "{env}");
    assert!(!env.contains("CARP_HOSTILE_PW"), "{env}");
}

/// A unicast group hears its peers only (keepalived's check_unicast_src): a third host
/// that knows the password and sends the backup valid adverts, as attractive as can be,
/// is counted and moves nothing.
#[test]
fn a_unicast_group_ignores_strangers() {
    let dir = TempDir::new("stranger").unwrap();
    let lan = Lan::new("stranger", &["a", "b", "x"]).unwrap();
    let peer = |i: usize, skew: u8| {
        vhid(
            &dir,
            &format!("advskew = {skew}\npeers = [\"{}\"]", lan.hosts[1 - i].addr),
        )
    };
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &peer(0, 100)).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let b = Agent::start(&lan.hosts[1].ns, dir.path(), "b", &peer(1, 200)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(4)).unwrap();
    // The stranger: a bow-out, which would make the backup take over at once.
    let auth = Auth::new(PASSWORD.as_bytes(), 1, &["192.0.2.50".parse().unwrap()]).unwrap();
    let b_mac = mac_of(&lan.hosts[1].ns);
    let (from, to) = (lan.hosts[2].addr, lan.hosts[1].addr);
    let mut counter = 0u64;
    let stranger = Scripted::start(&lan.hosts[2].ns, Duration::from_millis(100), move || {
        counter += 1;
        let h = CarpHeader {
            vhid: 1,
            // Alternating, or XDP would drop all but the first as a flood of one advert.
            advskew: 254 + (counter % 2) as u8,
            demote: 0,
            advbase: 255,
            counter,
            digest: auth.sign(counter),
        };
        let mut f = frame::ethernet(b_mac, [2, 0, 0, 0, 0, 0x66], None, frame::ETH_P_IP);
        f.extend(frame::ipv4(
            from.octets(),
            to.octets(),
            64,
            112,
            &h.encode(),
        ));
        f
    });
    std::thread::sleep(Duration::from_secs(2));
    drop(stranger);
    let backup = &b.status().unwrap().vhids[0];
    assert_eq!(backup.state, State::BACKUP, "{}", b.log_text());
    assert!(backup.adverts_refused >= 15, "{backup:?}");
    assert_eq!(a.state(1).as_deref(), Some("MASTER"));
}

/// An advert signed with the wrong password is dropped by the XDP program, counted, and
/// logged at debug level (aya-log, bridged into the agent's log) naming its source and
/// VHID; a flood of them is counted exactly and logged only as far as the rate limit lets.
/// Adverts with TTL 64 and of version 1 are logged with their reasons too.
#[test]
fn bad_digests_are_counted_and_logged_within_a_limit() {
    let dir = TempDir::new("baddigest").unwrap();
    let lan = Lan::new("baddigest", &["a", "x"]).unwrap();
    let a = Agent::start_json(
        &lan.hosts[0].ns,
        dir.path(),
        "a",
        &vhid(&dir, ""),
        "info,carp::xdp=debug",
    )
    .unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    let wrong = Auth::new(b"not-the-password", 1, &["192.0.2.50".parse().unwrap()]).unwrap();
    let from = lan.hosts[1].addr;
    let mac = mac_of(&lan.hosts[1].ns);
    let adverts = |counters: std::ops::RangeInclusive<u64>| -> Vec<Vec<u8>> {
        counters
            .map(|counter| {
                let h = CarpHeader {
                    vhid: 1,
                    advskew: 0,
                    demote: 0,
                    advbase: 1,
                    counter,
                    digest: wrong.sign(counter),
                };
                frame::advert(from.into(), mac, None, &h.encode())
            })
            .collect()
    };
    // The messages of the debug lines about dropped adverts.
    let lines = || -> Vec<String> {
        a.log_json()
            .iter()
            .filter(|l| l["level"] == "DEBUG" && l["fields"]["log.target"] == "carp::xdp")
            .filter_map(|l| l["fields"]["message"].as_str())
            .filter(|m| m.contains(" dropped: "))
            .map(str::to_owned)
            .collect()
    };
    let expected = format!("advert from {from} vhid 1 dropped: bad_hmac");

    send(&lan.hosts[1].ns, &adverts(1..=1));
    wait_for(|| a.xdp_counter("bad_hmac") == 1 && !lines().is_empty());
    // Anything more would have come by now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lines(), std::slice::from_ref(&expected), "{}", a.log_text());

    const FLOOD: u64 = 2000;
    let start = Instant::now();
    send(&lan.hosts[1].ns, &adverts(2..=FLOOD + 1));
    wait_for(|| a.xdp_counter("bad_hmac") > FLOOD);
    let took = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.xdp_counter("bad_hmac"), FLOOD + 1);
    let flood = lines().len() as u64 - 1;
    let limit = LOG_BURST + u64::try_from(took.as_nanos()).unwrap() / LOG_INTERVAL_NS + 1;
    println!("{FLOOD} bad adverts in {took:?}: {flood} lines (at most {limit})");
    assert!(
        (1..=limit).contains(&flood),
        "{flood} lines for {FLOOD} bad adverts in {took:?}, limit {limit}"
    );
    assert!(lines().iter().all(|l| *l == expected), "{:?}", lines());

    // The two other reasons, once the limit lets a line through again: TTL 64 and version 1.
    std::thread::sleep(Duration::from_millis(300));
    let payload = adverts(1..=1)[0][ETH_HLEN + 20..].to_vec();
    let mut bad_ttl = frame::ethernet(wire::GROUP_MAC_V4, mac, None, frame::ETH_P_IP);
    bad_ttl.extend(frame::ipv4(
        from.octets(),
        wire::GROUP_V4,
        64,
        wire::IPPROTO_CARP,
        &payload,
    ));
    let mut v1 = payload;
    v1[0] = (1 << 4) | wire::TYPE_ADVERTISEMENT;
    send(
        &lan.hosts[1].ns,
        &[bad_ttl, frame::advert(from.into(), mac, None, &v1)],
    );
    wait_for(|| a.xdp_counter("bad_ttl") == 1 && a.xdp_counter("bad_version") == 1);
    std::thread::sleep(Duration::from_millis(300));
    let all = lines();
    assert_eq!(all.len() as u64, 1 + flood + 2, "{all:?}");
    assert_eq!(
        all[all.len() - 2..],
        [
            format!("advert from {from} vhid 1 dropped: bad_ttl"),
            format!("advert from {from} vhid 1 dropped: bad_version")
        ],
        "{all:?}"
    );
}

/// Sends `frames` from `ns`'s eth0, pausing every 100 so that no queue on the way (their
/// default length is 1000, netdev_max_backlog) drops one.
fn send(ns: &Netns, frames: &[Vec<u8>]) {
    ns.enter(|| {
        let sock = PacketSocket::bind(nix::net::if_::if_nametoindex("eth0")?)?;
        for (i, f) in frames.iter().enumerate() {
            sock.send(f)?;
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    })
    .unwrap();
}

/// Waits up to 5 s for `done`.
fn wait_for(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(5), "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The MAC of a namespace's eth0.
fn mac_of(ns: &Netns) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", "eth0"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v[0]["address"].as_str().unwrap();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The interface's promiscuity count and its two ARP sysctls.
fn changes(ns: &Netns) -> (u64, String) {
    let out = ns.ip(&["-d", "-j", "link", "show", "eth0"]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let promiscuity = v[0]["promiscuity"].as_u64().unwrap();
    let sysctls = ns
        .command("sysctl")
        .args([
            "-n",
            "net.ipv4.conf.eth0.arp_ignore",
            "net.ipv4.conf.eth0.arp_announce",
        ])
        .output()
        .unwrap();
    let sysctls = String::from_utf8_lossy(&sysctls.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (promiscuity, sysctls)
}

/// A stop gives back what the start changed: promiscuity (counted with every other user,
/// so an operator's own `promisc on` stays), and arp_ignore / arp_announce, also after a
/// SIGKILLed agent, by its successor.
#[test]
fn a_stop_restores_the_interface() {
    let dir = TempDir::new("restore").unwrap();
    let lan = Lan::new("restore", &["a"]).unwrap();
    let ns = &lan.hosts[0].ns;
    let before = changes(ns);
    assert_eq!(before, (0, "0 0".into()));
    let mut a = Agent::start(ns, dir.path(), "a", &vhid(&dir, "")).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    assert_eq!(changes(ns), (1, "1 2".into()));
    a.signal(Signal::SIGTERM).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(changes(ns), before, "after a stop");

    // Someone else's promiscuity stays.
    ns.ip(&["link", "set", "eth0", "promisc", "on"]).unwrap();
    a.spawn(ns).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    assert_eq!(changes(ns).0, 2);
    a.signal(Signal::SIGTERM).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(changes(ns), (1, "0 0".into()));
    ns.ip(&["link", "set", "eth0", "promisc", "off"]).unwrap();

    // Killed: the kernel drops the promiscuity with the socket; the successor restores the
    // sysctls the killed agent set.
    a.spawn(ns).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    a.signal(Signal::SIGKILL).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(
        changes(ns),
        (0, "1 2".into()),
        "as the killed agent left it"
    );
    a.spawn(ns).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
    a.signal(Signal::SIGTERM).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    assert_eq!(changes(ns), before, "after the successor's stop");
}
