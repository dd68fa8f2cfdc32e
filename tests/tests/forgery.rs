//! An attacker on the link who captured a master's adverts, against both authentication
//! modes: BSD's digest covers neither advbase, advskew nor the source, and its counter is
//! never checked, so a captured advert altered into a bow-out makes the backup take over
//! from a live master, and captured adverts re-sent after the master died keep the backup
//! waiting. These tests show that this still moves BSD mode (the README's threat model
//! says so) and that nothing moves `auth = "strict"`, whose restarted peers are still
//! heard at once (more of strict mode's counters in strict_clock.rs). State and counters come from the typed status.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_common::{
    State,
    wire::{self, CarpHeader},
};
use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    lan::Lan,
    pcap::Capture,
    peers::Scripted,
};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

const PASSWORD: &str = "captured-secret";
/// Ethernet and IPv4 header: where the CARP header of a captured advert starts.
const CARP_AT: usize = 14 + 20;
/// The backup's master-down time: 3 × advbase + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);

/// A master (advskew 0, preempt) on host 0 and a backup (advskew 100) on host 1 in `auth`
/// mode; host 2 is the attacker.
struct Group {
    // Dropped in this order: the agents before their namespaces and files.
    master: Agent,
    backup: Agent,
    lan: Lan,
    dir: TempDir,
}

impl Group {
    fn start(tag: &str, auth: &str) -> Self {
        let dir = TempDir::new(tag).unwrap();
        let lan = Lan::new(tag, &["m", "b", "x"]).unwrap();
        let pw = dir.path().join("pass");
        write_secret(&pw, PASSWORD).unwrap();
        let config = |skew: u8| {
            format!(
                "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\
                 advskew = {skew}\npreempt = {}\nauth = \"{auth}\"\npass_file = \"{}\"\n",
                skew == 0,
                pw.display()
            )
        };
        let master = Agent::start(&lan.hosts[0].ns, dir.path(), "m", &config(0)).unwrap();
        master
            .wait_state(1, "MASTER", Duration::from_secs(8))
            .unwrap();
        let backup = Agent::start(&lan.hosts[1].ns, dir.path(), "b", &config(100)).unwrap();
        backup
            .wait_state(1, "BACKUP", Duration::from_secs(4))
            .unwrap();
        Self {
            master,
            backup,
            lan,
            dir,
        }
    }

    /// `n` of the master's adverts, as the attacker's interface sees them.
    fn capture(&self, n: usize) -> Vec<Vec<u8>> {
        let file = self.dir.path().join("adverts.pcap");
        let tcpdump = Capture::start(&self.lan.hosts[2].ns, "eth0", "ip proto 112", n, &file);
        let frames = tcpdump
            .unwrap()
            .frames(Duration::from_secs(u64::try_from(n).unwrap() + 3))
            .unwrap();
        assert_eq!(frames.len(), n, "adverts captured");
        frames
    }

    /// Sends `frames` in turn from the attacker's interface every `every`.
    fn replay(&self, frames: Vec<Vec<u8>>, every: Duration) -> Scripted {
        let mut next = frames.into_iter().cycle();
        Scripted::start(&self.lan.hosts[2].ns, every, move || next.next().unwrap())
    }

    fn backup_row(&self) -> carp_agent::control::VhidStatus {
        self.backup.status().unwrap().vhids.remove(0)
    }
}

/// A captured advert with advbase and advskew 255: what a master says when it stops, and
/// what makes a backup take over at once ("master will time out", carp_input_c).
fn bow_out(captured: &[u8]) -> Vec<u8> {
    let mut h = CarpHeader::decode(&captured[CARP_AT..]).unwrap();
    h.advbase = wire::BOW_OUT;
    h.advskew = wire::BOW_OUT;
    let mut frame = captured.to_vec();
    frame[CARP_AT..CARP_AT + wire::HEADER_LEN].copy_from_slice(&h.encode());
    frame
}

/// Forged bow-outs, ten a second for three seconds; returns the backup's transitions
/// meanwhile and asserts one master once they stop.
fn forge_bow_outs(g: &Group) -> u64 {
    let forged = bow_out(&g.capture(1)[0]);
    let before = g.backup.transitions();
    let attacker = g.replay(vec![forged], Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(3));
    drop(attacker);
    let moved = g.backup.transitions() - before;
    g.backup
        .wait_state(1, "BACKUP", Duration::from_secs(3))
        .unwrap();
    assert_eq!(g.master.state(1).as_deref(), Some("MASTER"));
    moved
}

#[test]
fn bsd_a_forged_bow_out_moves_the_backup() {
    let g = Group::start("bowbsd", "bsd");
    let moved = forge_bow_outs(&g);
    assert!(
        moved >= 2,
        "BACKUP -> MASTER -> BACKUP at least once: {moved}"
    );
}

#[test]
fn strict_a_forged_bow_out_moves_nothing() {
    let g = Group::start("bowstr", "strict");
    let refused = g.backup.xdp_counter("bad_hmac");
    let moved = forge_bow_outs(&g);
    assert_eq!(moved, 0, "{}", g.backup.log_text());
    let refused = g.backup.xdp_counter("bad_hmac") - refused;
    assert!(refused >= 20, "forgeries dropped as bad_hmac: {refused}");
}

/// Kills the master and replays its captured adverts every second, as it would send
/// them; returns when the backup became MASTER, if within twice its master-down time.
fn replay_after_death(g: &mut Group) -> (Option<Duration>, Scripted) {
    let captured = g.capture(3);
    g.master.signal(Signal::SIGKILL).unwrap();
    g.master.wait(Duration::from_secs(5)).unwrap();
    let died = Instant::now();
    let attacker = g.replay(captured, Duration::from_secs(1));
    let took = g
        .backup
        .wait_state(1, "MASTER", 2 * MASTER_DOWN)
        .ok()
        .map(|_| died.elapsed());
    (took, attacker)
}

#[test]
fn bsd_replayed_adverts_hold_the_backup_after_the_master_died() {
    let mut g = Group::start("rplbsd", "bsd");
    let (took, _attacker) = replay_after_death(&mut g);
    assert_eq!(took, None, "the backup took over despite the replay");
    assert_eq!(g.backup_row().state, State::BACKUP);
}

#[test]
fn strict_replayed_adverts_are_refused_and_a_restarted_master_is_heard() {
    let mut g = Group::start("rplstr", "strict");
    let (took, attacker) = replay_after_death(&mut g);
    let took = took.unwrap_or_else(|| panic!("still BACKUP:\n{}", g.backup.log_text()));
    // The master's last advert came up to a second before it died.
    assert!(took < MASTER_DOWN + Duration::from_millis(300), "{took:?}");
    let replays = g.backup.xdp_counter("old_counter");
    assert!(replays >= 1, "replays dropped as old_counter: {replays}");
    // The master comes back (preempt): its boot count went up, so the backup hears it at
    // once, while the attacker goes on replaying.
    g.master.spawn(&g.lan.hosts[0].ns).unwrap();
    g.master
        .wait_state(1, "MASTER", Duration::from_secs(6))
        .unwrap();
    g.backup
        .wait_state(1, "BACKUP", Duration::from_secs(3))
        .unwrap();
    assert_eq!(g.backup_row().auth, carp_agent::hmac::AuthMode::Strict);
    drop(attacker);
}
