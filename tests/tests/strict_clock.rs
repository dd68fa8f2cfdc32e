//! `auth = "strict"` without trusting any wall clock, and with memory across restarts:
//! counters are a boot count kept on disk and a count within the boot (RFC 7474), and
//! receivers keep the last counter of each peer across their own restarts. A master whose
//! clock is 2 h ahead (libfaketime), then corrected and restarted; a master whose clock is
//! stepped back and forward while it runs; a backup restarted between a capture and its
//! replay (the bow-out included); a master whose state was lost, heard by a backup that
//! holds a counter of the clock-nanosecond kind (from 2 h ahead, as the release before
//! boot counts sent them). In each: one master after convergence, the master heard at once
//! after its restart, every replay counted as `old_counter` and moving nothing.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::{
    hmac::{Auth, AuthMode},
    send::PacketSocket,
    state::BOOT_FILE,
};
use carp_common::{State, wire::CarpHeader};
use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    frames,
    lan::Lan,
    pcap::Capture,
};
use nix::sys::signal::Signal;
use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

const PASSWORD: &str = "boot-count-secret";
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// The backup's master-down time: 3 × advbase + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);
/// How long a restarted master may take to be heard: its start (the program loaded and
/// attached) and one advert interval.
const HEARD_WITHIN: Duration = Duration::from_secs(3);
/// Debian's libfaketime.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const TWO_HOURS: u64 = 2 * 3600;

/// A master "a" (advskew 0, preempt) on host 0 and a backup "b" (advskew 100) on host 1,
/// strict; host 2 is the attacker.
struct Group {
    a: Agent,
    b: Agent,
    lan: Lan,
    dir: TempDir,
}

fn config(dir: &TempDir, skew: u8) -> String {
    let pw = dir.path().join("pass");
    write_secret(&pw, PASSWORD).unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\nadvskew = {skew}\n\
         preempt = {}\nauth = \"strict\"\npass_file = \"{}\"\n",
        skew == 0,
        pw.display()
    )
}

/// The environment that runs an agent on a clock `FAKETIME_TIMESTAMP_FILE` sets (an offset
/// such as "+2h", read at every call), its monotonic clock left alone: the XDP program's
/// leases are on the kernel's.
fn faked(file: &Path) -> [(&'static str, String); 4] {
    [
        ("LD_PRELOAD", FAKETIME.to_owned()),
        ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
        ("FAKETIME_NO_CACHE", "1".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ]
}

impl Group {
    /// Starts the group, "a" with `a_env`, and waits for it to converge.
    fn start(tag: &str, a_env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new(tag).unwrap();
        let lan = Lan::new(tag, &["a", "b", "x"]).unwrap();
        let a = Agent::start_with_env(&lan.hosts[0].ns, dir.path(), "a", &config(&dir, 0), a_env)
            .unwrap();
        a.wait_state(1, "MASTER", Duration::from_secs(8)).unwrap();
        let b = Agent::start(&lan.hosts[1].ns, dir.path(), "b", &config(&dir, 100)).unwrap();
        b.wait_state(1, "BACKUP", Duration::from_secs(4)).unwrap();
        Self { a, b, lan, dir }
    }

    /// One master, "a", with "b" hearing it and staying BACKUP over a master-down time and
    /// more, no advert refused as `old_counter` meanwhile.
    fn one_master(&self, at: &str) {
        let heard = self.b.status().unwrap().vhids[0].adverts_received;
        let moved = self.b.transitions();
        let refused = self.b.xdp_counter("old_counter");
        std::thread::sleep(MASTER_DOWN + Duration::from_secs(1));
        let (sa, sb) = (self.a.status().unwrap(), self.b.status().unwrap());
        assert_eq!(
            (sa.vhids[0].state, sb.vhids[0].state),
            (State::MASTER, State::BACKUP),
            "{at}: {}",
            self.b.log_text()
        );
        assert_eq!(self.b.transitions(), moved, "{at}: b moved");
        assert!(
            sb.vhids[0].adverts_received >= heard + 3,
            "{at}: b stopped hearing a"
        );
        assert_eq!(self.b.xdp_counter("old_counter"), refused, "{at}");
    }

    /// Stops "a" cleanly (its bow-out makes "b" MASTER at once).
    fn stop_a(&mut self) {
        self.a.signal(Signal::SIGTERM).unwrap();
        self.a.wait(Duration::from_secs(10)).unwrap();
        self.b
            .wait_state(1, "MASTER", Duration::from_secs(2))
            .unwrap();
    }

    /// Restarts "a" (with the right clock) and returns once "b" heard it, within
    /// [`HEARD_WITHIN`] of the restart: "a" preempts, "b" goes back to BACKUP.
    fn restart_a(&mut self, at: &str) {
        let old = self.b.xdp_counter("old_counter");
        let started = Instant::now();
        self.a.spawn(&self.lan.hosts[0].ns).unwrap();
        self.b
            .wait_state(1, "BACKUP", HEARD_WITHIN)
            .unwrap_or_else(|e| panic!("{at}: a not heard after its restart: {e:#}"));
        assert_eq!(
            self.b.xdp_counter("old_counter"),
            old,
            "{at}: a's adverts refused ({:?} after its restart)",
            started.elapsed()
        );
    }

    /// The boot count "a" stored.
    fn a_boot(&self) -> u64 {
        let text = std::fs::read_to_string(self.a.state_dir().join(BOOT_FILE)).unwrap();
        text.trim().parse().unwrap()
    }

    /// Sends `frames` once each from the attacker's eth0.
    fn send(&self, frames: &[Vec<u8>]) {
        self.lan.hosts[2]
            .ns
            .enter(|| {
                let sock = PacketSocket::bind(nix::net::if_::if_nametoindex("eth0")?)?;
                frames.iter().try_for_each(|f| sock.send(f))?;
                Ok(())
            })
            .unwrap();
    }

    /// Captures the next `n` adverts of "a" as the attacker's interface sees them.
    fn capture(&self, n: usize) -> Capture {
        let file = self.dir.path().join(format!("a{n}.pcap"));
        let filter = format!("ip proto 112 and src host {}", self.lan.hosts[0].addr);
        Capture::start(&self.lan.hosts[2].ns, "eth0", &filter, n, &file).unwrap()
    }

    /// Captures the bow-out of "a" (advskew 255, the CARP header's third byte).
    fn capture_bow_out(&self) -> Capture {
        let file = self.dir.path().join("bow-out.pcap");
        let filter = format!(
            "ip proto 112 and src host {} and ip[22] = 255",
            self.lan.hosts[0].addr
        );
        Capture::start(&self.lan.hosts[2].ns, "eth0", &filter, 1, &file).unwrap()
    }
}

/// The `n` frames `capture` has.
fn captured(capture: Capture, n: usize) -> Vec<Vec<u8>> {
    let frames = capture
        .frames(Duration::from_secs(u64::try_from(n).unwrap() + 3))
        .unwrap();
    assert_eq!(frames.len(), n, "adverts captured");
    frames
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A master first started with its clock 2 h ahead is heard by a backup with the right
/// clock (its counter is a boot count, the clock only its first floor); stopped, and
/// restarted with its clock corrected, it is heard at once (its boot count went up by one),
/// no advert refused, and stays the one master.
#[test]
fn a_master_started_2h_ahead_then_corrected_is_heard_at_once() {
    let dir = TempDir::new("ahead-clock").unwrap();
    let clock = dir.path().join("a.faketime");
    std::fs::write(&clock, "+2h\n").unwrap();
    let env = faked(&clock);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut g = Group::start("ahead", &env);
    g.one_master("a 2 h ahead");
    // libfaketime did set the clock: the first boot count is that clock's seconds.
    let boot = g.a_boot();
    assert!(
        boot.abs_diff(unix_secs() + TWO_HOURS) < 120,
        "boot count {boot}, now {}",
        unix_secs()
    );
    g.stop_a();
    g.restart_a("a corrected");
    assert_eq!(g.a_boot(), boot + 1);
    g.one_master("a corrected");
}

/// A master's clock stepped back 2 h while it runs, past the 30 s the clock-counter
/// window allowed, then 4 h forward: nothing changes, as no clock decides a counter.
#[test]
fn a_clock_stepped_back_and_forward_while_running_changes_nothing() {
    let dir = TempDir::new("step-clock").unwrap();
    let clock = dir.path().join("a.faketime");
    std::fs::write(&clock, "+0\n").unwrap();
    let env = faked(&clock);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let g = Group::start("step", &env);
    g.one_master("before the steps");
    std::fs::write(&clock, "-2h\n").unwrap();
    std::thread::sleep(Duration::from_secs(35));
    g.one_master("2 h back for 35 s");
    std::fs::write(&clock, "+2h\n").unwrap();
    g.one_master("2 h ahead");
}

/// Adverts of the master captured (two ordinary ones, and the bow-out of its stop), the
/// master restarted, then the backup restarted while the master is frozen: replayed to the
/// backup right after its restart, before it could hear the master again, each is an
/// `old_counter` (its record came back from the state directory) and the backup hears
/// nothing and stays BACKUP; the master thawed, one master.
#[test]
fn a_restarted_backup_still_refuses_captured_adverts() {
    let mut g = Group::start("rcvrst", &[]);
    let mut adverts = captured(g.capture(2), 2);
    let tcpdump = g.capture_bow_out();
    g.stop_a();
    let mut bow_out = captured(tcpdump, 1);
    let h = CarpHeader::decode(&bow_out[0][34..]).unwrap();
    assert_eq!((h.advbase, h.advskew), (255, 255), "the bow-out");
    adverts.append(&mut bow_out);
    g.restart_a("a restarted");
    g.one_master("a restarted");
    g.a.signal(Signal::SIGSTOP).unwrap();
    g.b.signal(Signal::SIGTERM).unwrap();
    g.b.wait(Duration::from_secs(10)).unwrap();
    let restarted = Instant::now();
    g.b.spawn(&g.lan.hosts[1].ns).unwrap();
    g.b.wait_state(1, "BACKUP", Duration::from_secs(2)).unwrap();
    let moved = g.b.transitions();
    g.send(&adverts);
    std::thread::sleep(Duration::from_millis(300));
    let row = g.b.status().unwrap().vhids.remove(0);
    // Well within the backup's master-down time since its start.
    assert!(
        restarted.elapsed() < MASTER_DOWN,
        "{:?}",
        restarted.elapsed()
    );
    assert_eq!(g.b.xdp_counter("old_counter"), 3, "{}", g.b.log_text());
    assert_eq!(
        (row.state, row.adverts_received, g.b.transitions()),
        (State::BACKUP, 0, moved)
    );
    g.a.signal(Signal::SIGCONT).unwrap();
    g.b.wait_state(1, "BACKUP", Duration::from_secs(3)).unwrap();
    g.one_master("a thawed");
}

/// A backup alone hears "a" as the release before boot counts sent it: the sender's
/// clock in ns as the counter, and 2 h ahead at that. Then "a" starts with no state (an
/// upgrade): it counts from the clock's seconds in the high half, above that counter, so it
/// is heard at once. Stopped, its state file deleted and restarted, it counts from the
/// clock again, above its last boot: heard at once again, one master.
#[test]
fn a_master_without_state_is_heard_at_once() {
    let dir = TempDir::new("lost").unwrap();
    let lan = Lan::new("lost", &["a", "b", "x"]).unwrap();
    let b = Agent::start(&lan.hosts[1].ns, dir.path(), "b", &config(&dir, 100)).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(4)).unwrap();
    let src = IpAddr::V4(lan.hosts[0].addr);
    let auth = Auth::with_mode(PASSWORD.as_bytes(), 1, &[VIP.into()], AuthMode::Strict).unwrap();
    let mut header = CarpHeader {
        vhid: 1,
        advskew: 0,
        demote: 0,
        advbase: 1,
        counter: (unix_secs() + TWO_HOURS) * 1_000_000_000,
        digest: [0; 20],
    };
    header.digest = auth.sign_header(&header, src);
    let heard = b.status().unwrap().vhids[0].adverts_received;
    let a = Agent::client(&dir.path().join("a.sock"));
    let mut g = Group { a, b, lan, dir };
    g.send(&[frames::carp(src, &header)]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        g.b.status().unwrap().vhids[0].adverts_received,
        heard + 1,
        "the old-style advert was heard: {}",
        g.b.log_text()
    );
    g.b.wait_state(1, "MASTER", MASTER_DOWN + Duration::from_secs(1))
        .unwrap();
    g.a = Agent::start(&g.lan.hosts[0].ns, g.dir.path(), "a", &config(&g.dir, 0)).unwrap();
    g.b.wait_state(1, "BACKUP", HEARD_WITHIN)
        .unwrap_or_else(|e| panic!("a not heard after its first start: {e:#}"));
    g.one_master("a upgraded");
    let first = g.a_boot();
    g.stop_a();
    let boot = g.a.state_dir().join(BOOT_FILE);
    std::fs::remove_file(&boot).unwrap_or_else(|e| panic!("{}: {e}", boot.display()));
    g.restart_a("a without its state");
    assert!(g.a_boot() > first, "{} <= {first}", g.a_boot());
    g.one_master("a without its state");
}
