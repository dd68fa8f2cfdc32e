//! Lost probes at 1 ms per planned event and mode (issue 29): a client pings the VIP every
//! 1 ms (`ping -i 0.001`, lost replies counted by sequence number) while the master a
//! hands the VIP to the backup b and takes it back: SIGTERM, the restart with preempt
//! (failback), `set-state backup`, `demote`, a reload that changes advskew/priority; for
//! CARP with the virtual MAC, CARP with `mac = "interface"`, VRRPv3 at 100 ms, and
//! keepalived 2.2.7 (VRRPv3) doing what it can of the same (SIGTERM, failback, reload) in
//! the same run. Then how long the client goes without an answer after the VIP is deleted
//! under the master and after a partition that kept carrier heals. TRIALS runs each
//! (default 5); BENCH_SMOKE runs one CARP pass of three events.

use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    lan::Lan,
    peers::Keepalived,
    probe::Probe,
};
use nix::sys::signal::Signal;
use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

const PASSWORD: &str = "bench-pass";
const VIP: &str = "192.0.2.50";
const WAIT: Duration = Duration::from_secs(10);
/// After the arriving host is MASTER: late replies come in and the leaving one is quiet.
const SETTLE: Duration = Duration::from_millis(500);
/// A partition that keeps carrier (tests/tests/upkeep.rs): the switch drops every frame
/// from and to a's port.
const PARTITION: &str = "table bridge split {\n\
     chain from_a { type filter hook prerouting priority 0; iifname \"p0\" drop; }\n\
     chain to_a { type filter hook forward priority 0; oifname \"p0\" drop; }\n}\n";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Carp,
    CarpInterfaceMac,
    Vrrp(u32),
    Keepalived(u32),
}

impl Mode {
    fn name(self) -> String {
        match self {
            Mode::Carp => "carp-agent, CARP (virtual MAC)".into(),
            Mode::CarpInterfaceMac => "carp-agent, CARP (`mac = \"interface\"`)".into(),
            Mode::Vrrp(ms) => format!("carp-agent, VRRPv3 {ms} ms"),
            Mode::Keepalived(ms) => format!("keepalived 2.2.7, VRRPv3 {ms} ms"),
        }
    }

    fn events(self) -> &'static [Event] {
        match self {
            Mode::Keepalived(_) => &[Event::Term, Event::Failback, Event::Reload],
            _ => &Event::ALL,
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Event {
    Term,
    Failback,
    SetState,
    Demote,
    Reload,
}

impl Event {
    const ALL: [Event; 5] = [
        Event::Term,
        Event::Failback,
        Event::SetState,
        Event::Demote,
        Event::Reload,
    ];

    fn name(self) -> &'static str {
        match self {
            Event::Term => "SIGTERM of the master",
            Event::Failback => "its restart, preempt (failback)",
            Event::SetState => "`set-state 1 backup`",
            Event::Demote => "`demote +150`",
            Event::Reload => "reload: advskew 0 -> 200 / priority 200 -> 100",
        }
    }
}

/// One host of the pair.
enum Member {
    Agent(Agent),
    Keepalived(Keepalived),
}

impl Member {
    fn wait(&self, state: &str) {
        match self {
            Member::Agent(a) => drop(a.wait_state(1, state, WAIT).unwrap()),
            Member::Keepalived(k) => drop(k.wait(state, WAIT)),
        }
    }

    /// State changes so far: b's first after an event is its takeover, which it may
    /// give back within milliseconds (after `set-state backup` a preempts at once).
    fn transitions(&self) -> u64 {
        match self {
            Member::Agent(a) => a.transitions(),
            Member::Keepalived(k) => k.transitions(),
        }
    }

    fn agent(&self) -> &Agent {
        match self {
            Member::Agent(a) => a,
            Member::Keepalived(_) => unreachable!("a carp-agent event for keepalived"),
        }
    }
}

/// A master a, a backup b (both preempting) and a client, in `mode`.
struct Pair {
    mode: Mode,
    lan: Lan,
    dir: TempDir,
    a: Member,
    b: Member,
}

impl Pair {
    fn new(mode: Mode, tag: &str) -> Self {
        let dir = TempDir::new(tag).unwrap();
        let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
        lan.add_host(tag, "client").unwrap();
        let pass = dir.path().join("pass");
        write_secret(&pass, PASSWORD).unwrap();
        let pair = Self {
            mode,
            a: Self::member(mode, &lan, &dir, 0, true),
            b: Self::member(mode, &lan, &dir, 1, false),
            lan,
            dir,
        };
        pair.a.wait("MASTER");
        pair.b.wait("BACKUP");
        pair
    }

    /// a's or b's configuration; `preferred` a's usual one, else the less preferred one.
    fn config(mode: Mode, dir: &TempDir, preferred: bool) -> String {
        let pass = dir.path().join("pass");
        let (skew, prio) = if preferred { (0, 200) } else { (200, 100) };
        match mode {
            Mode::Carp | Mode::CarpInterfaceMac => format!(
                "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\n\
                 advskew = {skew}\npreempt = true\npass_file = \"{}\"\n{}",
                pass.display(),
                if mode == Mode::CarpInterfaceMac {
                    "mac = \"interface\"\n"
                } else {
                    ""
                }
            ),
            Mode::Vrrp(ms) => format!(
                "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nprotocol = \"vrrp3\"\n\
                 vips = [\"{VIP}/24\"]\npriority = {prio}\ninterval_ms = {ms}\npreempt = true\n"
            ),
            Mode::Keepalived(ms) => Keepalived::instance(1, prio, &format!("{VIP}/24"), ms, ""),
        }
    }

    fn member(mode: Mode, lan: &Lan, dir: &TempDir, host: usize, master: bool) -> Member {
        let ns = &lan.hosts[host].ns;
        let name = ["a", "b"][host];
        match mode {
            Mode::Keepalived(ms) => Member::Keepalived(Keepalived::start_with_interval(
                ns,
                dir.path(),
                name,
                1,
                if master { 200 } else { 156 },
                &format!("{VIP}/24"),
                ms,
            )),
            _ => {
                // b: advskew 100 / priority 156 between a's two settings.
                let config = if master {
                    Self::config(mode, dir, true)
                } else {
                    Self::config(mode, dir, true)
                        .replace("advskew = 0", "advskew = 100")
                        .replace("priority = 200", "priority = 156")
                };
                Member::Agent(Agent::start(ns, dir.path(), name, &config).unwrap())
            }
        }
    }

    /// Runs `event` with the client pinging; the probes lost and the replies duplicated.
    /// Then undoes it, unmeasured, so the next event starts from a MASTER (after SIGTERM
    /// the next event is the failback).
    fn event(&mut self, event: Event) -> (u64, u64) {
        let probe = answered(&self.lan);
        let b_changes = self.b.transitions();
        match event {
            Event::Term => match &mut self.a {
                Member::Agent(a) => {
                    a.signal(Signal::SIGTERM).unwrap();
                    a.wait(WAIT).unwrap();
                }
                Member::Keepalived(k) => {
                    k.signal(Signal::SIGTERM);
                    k.wait_exit(WAIT);
                }
            },
            Event::Failback => {
                if let Member::Agent(a) = &mut self.a {
                    a.spawn(&self.lan.hosts[0].ns).unwrap();
                } else {
                    self.a = Self::member(self.mode, &self.lan, &self.dir, 0, true);
                }
            }
            Event::SetState => drop(self.a.agent().ctl(&["set-state", "1", "backup"]).unwrap()),
            Event::Demote => drop(self.a.agent().ctl(&["demote", "+150"]).unwrap()),
            Event::Reload => self.reload(false),
        }
        if event == Event::Failback {
            self.a.wait("MASTER");
            self.b.wait("BACKUP");
        } else {
            let start = Instant::now();
            while self.b.transitions() == b_changes {
                assert!(start.elapsed() < WAIT, "b did not take over");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(SETTLE);
        let lost = probe.lost();
        drop(probe);
        match event {
            Event::Term => return lost,
            Event::Demote => drop(self.a.agent().ctl(&["demote", "=0"]).unwrap()),
            Event::Reload => self.reload(true),
            _ => {}
        }
        self.a.wait("MASTER");
        self.b.wait("BACKUP");
        lost
    }

    /// Rewrites a's configuration, `preferred` or not, and reloads it.
    fn reload(&self, preferred: bool) {
        let config = Self::config(self.mode, &self.dir, preferred);
        match &self.a {
            Member::Agent(a) => {
                a.rewrite(&config).unwrap();
                a.ctl(&["reload"]).unwrap();
            }
            Member::Keepalived(k) => {
                k.rewrite(&config);
                k.reload(WAIT);
            }
        }
    }
}

/// A 1 ms probe of the VIP from the client, once the VIP answers it.
fn answered(lan: &Lan) -> Probe {
    let probe = Probe::start_fast(&lan.hosts[2].ns, VIP).unwrap();
    let start = Instant::now();
    while probe.count() < 100 {
        assert!(start.elapsed() < WAIT, "the VIP does not answer the client");
        std::thread::sleep(Duration::from_millis(10));
    }
    probe
}

/// How long the client goes without an answer after the VIP is deleted under a, or
/// after a partition heals (b took over while a was cut off): None when the VIP does not
/// answer again within [`GIVE_UP`].
fn unanswered(pair: &Pair, fault: Fault) -> Option<Duration> {
    let lan = &pair.lan;
    let probe = answered(lan);
    let first = match fault {
        Fault::VipDeleted => {
            let first = probe.count().saturating_sub(1);
            let (vip, dev) = match pair.a {
                // keepalived and `vips_on = "interface"` put it on eth0, the agent on lo.
                Member::Keepalived(_) => (format!("{VIP}/24"), "eth0"),
                Member::Agent(_) => (format!("{VIP}/32"), "lo"),
            };
            lan.hosts[0]
                .ns
                .ip(&["addr", "del", &vip, "dev", dev])
                .unwrap();
            first
        }
        Fault::Partition => {
            lan.nft(PARTITION).unwrap();
            pair.b.wait("MASTER");
            let start = Instant::now();
            while probe.silence() > Duration::from_millis(50) {
                assert!(start.elapsed() < WAIT, "the client never reached b");
                std::thread::sleep(Duration::from_millis(10));
            }
            let first = probe.count().saturating_sub(1);
            lan.nft("delete table bridge split").unwrap();
            first
        }
    };
    std::thread::sleep(GIVE_UP);
    let gap = probe.max_gap_from(first).max(probe.silence());
    (gap < GIVE_UP).then_some(gap)
}

/// How long [`unanswered`] waits for the VIP to answer again.
const GIVE_UP: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// `ip addr del` of the VIP under the master.
    VipDeleted,
    /// The master cut off by a bridge filter (carrier kept), b taking over, then healed.
    Partition,
}

/// min / median / max of `v`.
fn spread<T: Copy + Ord>(mut v: Vec<T>) -> (T, T, T) {
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let smoke = std::env::var_os("BENCH_SMOKE").is_some();
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(5);
    let modes: &[Mode] = if smoke {
        &[Mode::Carp]
    } else {
        &[
            Mode::Carp,
            Mode::CarpInterfaceMac,
            Mode::Vrrp(100),
            Mode::Keepalived(100),
            Mode::Keepalived(1000),
        ]
    };
    let mut table = String::from(
        "| mode | event | lost probes min / median / max | duplicated replies (max) |\n\
         |---|---|---|---|\n",
    );
    for &mode in modes {
        let events: &[Event] = if smoke {
            &[Event::Term, Event::Failback, Event::Demote]
        } else {
            mode.events()
        };
        let mut lost = vec![Vec::new(); events.len()];
        let mut dups = vec![0; events.len()];
        for trial in 0..trials {
            let mut pair = Pair::new(mode, &format!("ho{trial}"));
            for (i, &event) in events.iter().enumerate() {
                let (l, d) = pair.event(event);
                lost[i].push(l);
                dups[i] = dups[i].max(d);
            }
        }
        for (i, &event) in events.iter().enumerate() {
            let (min, median, max) = spread(lost[i].clone());
            writeln!(
                table,
                "| {} | {} | {min} / {median} / {max} | {} |",
                mode.name(),
                event.name(),
                dups[i]
            )
            .unwrap();
        }
    }
    println!(
        "\n### Lost probes at 1 ms per planned event ({trials} runs each)\n\n\
         A client pings the VIP every 1 ms; a master (advskew 0 / priority 200) and a backup \
         (advskew 100 / priority 156), both preempting; CARP advbase 1. A probe is lost when \
         no reply with its sequence number came.\n\n{table}"
    );
    if smoke {
        return;
    }
    let mut table =
        String::from("| mode | what | no answer for, min / median / max |\n|---|---|---|\n");
    for mode in [Mode::Carp, Mode::CarpInterfaceMac, Mode::Keepalived(1000)] {
        for (fault, what) in [
            (
                Fault::VipDeleted,
                "`ip addr del` of the VIP under the master",
            ),
            (Fault::Partition, "a partition (carrier kept) heals"),
        ] {
            let runs: Vec<Option<Duration>> = (0..trials)
                .map(|trial| unanswered(&Pair::new(mode, &format!("hu{trial}")), fault))
                .collect();
            let cell = if runs.iter().any(Option::is_none) {
                format!(
                    "not within {GIVE_UP:?} in {} of {trials}",
                    runs.iter().filter(|r| r.is_none()).count()
                )
            } else {
                let (min, median, max) = spread(runs.into_iter().flatten().collect());
                format!("{min:.3?} / {median:.3?} / {max:.3?}")
            };
            writeln!(table, "| {} | {what} | {cell} |", mode.name()).unwrap();
        }
    }
    println!(
        "\n### Time to reach the VIP again ({trials} runs each)\n\n\
         The longest time the 1 ms client went without an answer from the `ip addr del` or \
         the heal on.\n\n{table}"
    );
}
