//! A full segment: HOSTS carp-agents (default 8) on one bridge, each serving the same VHIDS
//! VHIDs (default 255), every VHID mastered by one host (the one with advskew 0 for it)
//! and backed by all the others. Once with CARP at advbase 1, once with VRRPv3 at 100 ms.
//! Per host: agent CPU and RSS in the steady state, adverts handled per second; for the
//! segment: the time until every VHID has exactly one master after all agents start, and
//! after one host is killed, until every VHID it mastered has a new one. Prints markdown
//! and writes `bench/scale.json` (not in a smoke run, BENCH_SMOKE). HOSTS, VHIDS and
//! STEADY_SECS scale it down.

use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    lan::Lan,
    procfs::{cpu_seconds, rss_kib},
    setting,
};
use nix::sys::signal::Signal;
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

#[derive(Clone, Copy)]
enum Mode {
    Carp,
    Vrrp100,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Carp => "CARP, advbase 1",
            Mode::Vrrp100 => "VRRPv3, 100 ms",
        }
    }

    /// One `[[vhid]]`, preferred on `host` when `master`; a less preferred rank otherwise.
    fn vhid(self, vhid: u32, rank: u32, pass: &std::path::Path) -> String {
        let vip = if vhid < 255 {
            format!("198.51.100.{vhid}")
        } else {
            "203.0.113.255".to_owned()
        };
        // Preempt, as keepalived defaults to: the agents start one after the other, and the
        // first would otherwise keep every VHID it took before the others were up.
        let common = format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = {vhid}\nvips = [\"{vip}/32\"]\npreempt = true\n"
        );
        match self {
            Mode::Carp => format!(
                "{common}advskew = {}\npass_file = \"{}\"\n",
                rank * 20,
                pass.display()
            ),
            Mode::Vrrp100 => format!(
                "{common}protocol = \"vrrp3\"\ninterval_ms = 100\npriority = {}\n",
                250 - rank * 20
            ),
        }
    }

    /// The longest a backup waits for a dead master: 3 intervals plus the skew.
    fn master_down(self) -> Duration {
        match self {
            Mode::Carp => Duration::from_secs_f64(3.0 + 20.0 / 256.0),
            Mode::Vrrp100 => Duration::from_secs_f64(0.3 + (256.0 - 230.0) / 256.0 * 0.1),
        }
    }
}

/// A VHID's master and the instant it became master (from the status read at some instant
/// and its `seconds_in_state`, so the polling interval is not in the figures).
type Master = Option<(usize, Instant)>;

/// Which host is MASTER of each VHID, per the agents' typed status (a dead or silent
/// agent counts for nothing); `None` where zero or two claim it.
fn masters(agents: &[Option<Agent>]) -> BTreeMap<u8, Master> {
    let mut out: BTreeMap<u8, Master> = BTreeMap::new();
    let mut seen: BTreeMap<u8, usize> = BTreeMap::new();
    for (i, a) in agents.iter().enumerate() {
        let Some(status) = a.as_ref().and_then(|a| a.status().ok()) else {
            continue;
        };
        let read = Instant::now();
        for v in status.vhids {
            out.entry(v.vhid).or_insert(None);
            if v.state == carp_common::State::MASTER {
                *seen.entry(v.vhid).or_default() += 1;
                let since = read - Duration::from_secs_f64(v.seconds_in_state);
                out.insert(v.vhid, Some((i, since)));
            }
        }
    }
    for (vhid, n) in seen {
        if n > 1 {
            out.insert(vhid, None);
        }
    }
    out
}

/// Waits until `ok` holds for the masters; returns how long after `from` the last of
/// `vhids` became master then.
fn until(
    agents: &[Option<Agent>],
    from: Instant,
    vhids: &[u8],
    ok: impl Fn(&BTreeMap<u8, Master>) -> bool,
) -> Option<Duration> {
    while from.elapsed() < Duration::from_secs(60) {
        let m = masters(agents);
        if ok(&m) {
            return vhids
                .iter()
                .filter_map(|v| m.get(v).copied().flatten())
                .map(|(_, since)| since.saturating_duration_since(from))
                .max();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

struct Row {
    mode: Mode,
    start: Option<Duration>,
    failover: Option<Duration>,
    cpu: Vec<f64>,
    rss_mib: Vec<f64>,
    adverts_per_s: Vec<f64>,
}

fn run(mode: Mode, hosts: usize, vhids: u32, steady: Duration) -> Row {
    let tag = match mode {
        Mode::Carp => "scc",
        Mode::Vrrp100 => "scv",
    };
    let dir = TempDir::new(tag).unwrap();
    let names: Vec<String> = (0..hosts).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let lan = Lan::new(tag, &names).unwrap();
    let pass = dir.path().join("pass");
    write_secret(&pass, "scale-secret").unwrap();
    let configs: Vec<String> = (0..hosts)
        .map(|h| {
            (1..=vhids)
                .map(|v| {
                    // VHID v is mastered by host v % hosts, then the next ones in turn.
                    let rank = (h + hosts - v as usize % hosts) % hosts;
                    mode.vhid(v, rank as u32, &pass)
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut agents: Vec<Option<Agent>> = (0..hosts)
        .map(|h| Some(Agent::start(&lan.hosts[h].ns, dir.path(), names[h], &configs[h]).unwrap()))
        .collect();
    let all: Vec<u8> = (1..=vhids).map(|v| v as u8).collect();
    let intended = |v: u8| v as usize % hosts;
    let converged = until(&agents, started, &all, |m| {
        m.len() == all.len()
            && all
                .iter()
                .all(|v| matches!(m.get(v), Some(Some((h, _))) if *h == intended(*v)))
    });
    // The steady state.
    let pids: Vec<i32> = agents
        .iter()
        .map(|a| a.as_ref().unwrap().pid().unwrap())
        .collect();
    let received = |agents: &[Option<Agent>]| -> Vec<u64> {
        agents
            .iter()
            .map(|a| {
                a.as_ref()
                    .and_then(|a| a.status().ok())
                    .map_or(0, |s| s.vhids.iter().map(|v| v.adverts_received).sum())
            })
            .collect()
    };
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let rx0 = received(&agents);
    let t0 = Instant::now();
    std::thread::sleep(steady);
    let secs = t0.elapsed().as_secs_f64();
    let cpu: Vec<f64> = pids
        .iter()
        .zip(&cpu0)
        .map(|(p, c)| (cpu_seconds(*p) - c) / secs * 100.0)
        .collect();
    let adverts_per_s: Vec<f64> = received(&agents)
        .iter()
        .zip(&rx0)
        .map(|(a, b)| (a - b) as f64 / secs)
        .collect();
    let rss_mib: Vec<f64> = pids.iter().map(|p| rss_kib(*p) as f64 / 1024.0).collect();
    // Host 0 dies: every VHID it mastered must have a new master.
    let lost: Vec<u8> = all.iter().copied().filter(|v| intended(*v) == 0).collect();
    if let Some(a) = &agents[0] {
        a.signal(Signal::SIGKILL).unwrap();
    }
    let killed = Instant::now();
    agents[0] = None;
    let failover = until(&agents, killed, &lost, |m| {
        lost.iter()
            .all(|v| matches!(m.get(v), Some(Some((h, _))) if *h != 0))
    });
    Row {
        mode,
        start: converged,
        failover,
        cpu,
        rss_mib,
        adverts_per_s,
    }
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or("not reached".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    format!("{min:.digits$} / {mean:.digits$} / {max:.digits$}")
}

fn main() {
    let hosts: usize = setting("HOSTS", 8);
    let vhids: u32 = setting("VHIDS", 255);
    let steady = Duration::from_secs_f64(setting("STEADY_SECS", 10.0));
    let rows: Vec<Row> = [Mode::Carp, Mode::Vrrp100]
        .into_iter()
        .map(|m| run(m, hosts, vhids, steady))
        .collect();
    let mut md = format!(
        "{hosts} carp-agents (release build) on one bridge, each serving the same {vhids} VHIDs \
         with one VIP each; VHID v is mastered by host v mod {hosts} and backed by the others. \
         Start: from launching all agents to every VHID having exactly one master, the \
         intended one. Failover: from SIGKILL of host 0 to every VHID it mastered having a \
         new master (bound: the backups' master-down time). Per host, min / mean / max over \
         the hosts in a steady {:.0} s window.\n\n",
        steady.as_secs_f64()
    );
    md += "| mode | start (s) | failover (s) | bound (s) | agent CPU % | RSS (MiB) | adverts handled/s |\n";
    md += "|---|---:|---:|---:|---|---|---|\n";
    let mut json = Vec::new();
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {:.2} | {} | {} | {} |",
            r.mode.name(),
            seconds(r.start),
            seconds(r.failover),
            r.mode.master_down().as_secs_f64(),
            spread(&r.cpu, 2),
            spread(&r.rss_mib, 1),
            spread(&r.adverts_per_s, 0),
        )
        .unwrap();
        json.push(serde_json::json!({
            "mode": r.mode.name(),
            "hosts": hosts,
            "vhids": vhids,
            "start_s": r.start.map(|d| d.as_secs_f64()),
            "failover_s": r.failover.map(|d| d.as_secs_f64()),
            "cpu_percent": r.cpu,
            "rss_mib": r.rss_mib,
            "adverts_per_s": r.adverts_per_s,
        }));
    }
    print!("{md}");
    if std::env::var_os("BENCH_SMOKE").is_none() {
        let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join("scale.json"),
            serde_json::to_string_pretty(&json).unwrap(),
        )
        .unwrap();
    }
    for r in &rows {
        assert!(
            r.start.is_some() && r.failover.is_some(),
            "{}: the segment did not converge",
            r.mode.name()
        );
    }
}
