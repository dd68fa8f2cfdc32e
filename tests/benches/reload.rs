//! Reload gap per change kind (issue #18): a master and a backup in namespaces, a client
//! pinging the VIP every 10 ms; the change is written to both configurations, then the
//! backup is reloaded, then the master, each reload waited for (`carp-agent reload`
//! answers when it is done; keepalived logs "Reload complete" after SIGHUP). Reports the
//! longest ping gap from the first reload on (and, as the noise floor, the longest of the
//! quiet second before) and the state changes either member made, carp-agent and keepalived
//! side by side on the same change. Prints a markdown table and writes
//! `bench/reload.json`. TRIALS (default 3) repeats each; BENCH_SMOKE runs one kind once
//! and writes no JSON.

use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    lan::Lan,
    peers::Keepalived,
    probe::Probe,
};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

const VIP: &str = "192.0.2.50";
/// A second VIP, for the kinds that add or remove one.
const VIP2: &str = "192.0.2.60";
/// How long the pair is watched after the master's reload: past the backup's master-down
/// time (3 x 1 s + 100/256 s), so a master that went quiet would be seen replaced.
const WATCH: Duration = Duration::from_secs(4);
/// A smoke run's watch: the code runs, the numbers are not the benchmark's.
const SMOKE_WATCH: Duration = Duration::from_secs(1);

/// The settings of a pair that a change kind moves between.
#[derive(Clone, Copy)]
struct Setting {
    two_vips: bool,
    /// Added to both members' advskew (master 0, backup 100), taken off keepalived's
    /// priorities (master 200, backup 156: advskew 100's VRRP twin).
    skew: u8,
    preempt: bool,
    hook: bool,
    /// The second password instead of the first.
    rotated: bool,
}

const BASE: Setting = Setting {
    two_vips: false,
    skew: 0,
    preempt: false,
    hook: false,
    rotated: false,
};

#[derive(Clone, Copy)]
struct Kind {
    name: &'static str,
    /// keepalived's name for the same change; None where it has no such thing.
    keepalived: Option<&'static str>,
    before: Setting,
    after: Setting,
}

const KINDS: [Kind; 7] = [
    Kind {
        name: "VIP added",
        keepalived: Some("virtual_ipaddress added"),
        before: BASE,
        after: Setting {
            two_vips: true,
            ..BASE
        },
    },
    Kind {
        name: "VIP removed",
        keepalived: Some("virtual_ipaddress removed"),
        before: Setting {
            two_vips: true,
            ..BASE
        },
        after: BASE,
    },
    Kind {
        name: "advskew up (+50)",
        keepalived: Some("priority down (-50)"),
        before: BASE,
        after: Setting { skew: 50, ..BASE },
    },
    Kind {
        name: "advskew down (-50)",
        keepalived: Some("priority up (+50)"),
        before: Setting { skew: 50, ..BASE },
        after: BASE,
    },
    Kind {
        name: "preempt on",
        keepalived: Some("nopreempt dropped"),
        before: BASE,
        after: Setting {
            preempt: true,
            ..BASE
        },
    },
    Kind {
        name: "hook added (up_script)",
        keepalived: Some("notify_master added"),
        before: BASE,
        after: Setting { hook: true, ..BASE },
    },
    Kind {
        name: "password rotated",
        // VRRPv3 has no authentication.
        keepalived: None,
        before: BASE,
        after: Setting {
            rotated: true,
            ..BASE
        },
    },
];

/// One member of a pair, carp-agent or keepalived.
enum Member {
    Agent(Agent),
    Keepalived(Keepalived),
}

impl Member {
    fn transitions(&self) -> u64 {
        match self {
            Member::Agent(a) => a.transitions(),
            Member::Keepalived(k) => k.transitions(),
        }
    }

    fn state(&self) -> Option<String> {
        match self {
            Member::Agent(a) => a.state(1),
            Member::Keepalived(k) => k.state(),
        }
    }

    fn wait(&self, state: &str) {
        let timeout = Duration::from_secs(10);
        match self {
            Member::Agent(a) => {
                a.wait_state(1, state, timeout).unwrap();
            }
            Member::Keepalived(k) => {
                k.wait(state, timeout);
            }
        }
    }
}

/// The hook both implementations run: does nothing.
fn hook(dir: &Path) -> PathBuf {
    let hook = dir.join("hook.sh");
    if !hook.exists() {
        std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    hook
}

fn vips(s: Setting) -> Vec<String> {
    let mut v = vec![format!("{VIP}/24")];
    if s.two_vips {
        v.push(format!("{VIP2}/24"));
    }
    v
}

/// carp-agent's configuration for `s`; writes the member's password file.
fn carp_conf(s: Setting, master: bool, dir: &Path, name: &str) -> String {
    let pass = dir.join(format!("{name}.pass"));
    let password = if s.rotated {
        "bench-pass-2"
    } else {
        "bench-pass"
    };
    write_secret(&pass, password).unwrap();
    let mut conf = format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = {:?}\nadvskew = {}\npass_file = \"{}\"\n",
        vips(s),
        if master { 0 } else { 100 } + s.skew,
        pass.display()
    );
    if s.preempt {
        conf += "preempt = true\n";
    }
    if s.hook {
        conf += &format!("up_script = \"{}\"\n", hook(dir).display());
    }
    conf
}

/// keepalived's instance for `s`.
fn keepalived_conf(s: Setting, master: bool, dir: &Path) -> String {
    let mut extra = String::new();
    if !s.preempt {
        extra += "  nopreempt\n";
    }
    if s.hook {
        extra += &format!("  notify_master \"{}\"\n", hook(dir).display());
    }
    let vips = vips(s).join("\n    ");
    Keepalived::instance(
        1,
        if master { 200 } else { 156 } - s.skew,
        &vips,
        1000,
        &extra,
    )
}

fn start(keepalived: bool, s: Setting, lan: &Lan, host: usize, dir: &Path) -> Member {
    let ns = &lan.hosts[host].ns;
    let master = host == 0;
    let name = format!("h{host}");
    if keepalived {
        Member::Keepalived(Keepalived::start_config(
            ns,
            dir,
            &name,
            &keepalived_conf(s, master, dir),
        ))
    } else {
        Member::Agent(Agent::start(ns, dir, &name, &carp_conf(s, master, dir, &name)).unwrap())
    }
}

/// Writes the change to `m`'s configuration and reloads it, waiting until it is done.
fn reload(m: &Member, s: Setting, master: bool, dir: &Path) {
    match m {
        Member::Agent(a) => {
            a.rewrite(&carp_conf(s, master, dir, &a.name)).unwrap();
            a.ctl(&["reload"]).unwrap();
        }
        Member::Keepalived(k) => {
            k.rewrite(&keepalived_conf(s, master, dir));
            k.reload(Duration::from_secs(5));
        }
    }
}

/// What one trial saw.
struct Trial {
    /// The longest ping gap from the first reload on, s.
    gap: f64,
    /// The longest ping gap in the second before the reloads, s: the noise floor.
    quiet: f64,
    /// State changes of both members.
    changes: u64,
    /// Master and backup in their roles at the end.
    kept: bool,
}

fn trial(kind: Kind, keepalived: bool, watch: Duration, tag: &str) -> Trial {
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["m", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let m = start(keepalived, kind.before, &lan, 0, dir.path());
    m.wait("MASTER");
    let b = start(keepalived, kind.before, &lan, 1, dir.path());
    b.wait("BACKUP");
    let probe = Probe::start(&lan.hosts[2].ns, VIP).unwrap();
    // Until the client has the VIP's MAC and the first replies, then a quiet second.
    let start = Instant::now();
    while probe.count() < 10 && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = probe.count();
    assert!(first >= 10, "{tag}: the VIP does not answer the client");
    std::thread::sleep(Duration::from_secs(1));
    let last = probe.count();
    let quiet = probe.max_gap_from(first.saturating_sub(1));
    let before = m.transitions() + b.transitions();
    reload(&b, kind.after, false, dir.path());
    reload(&m, kind.after, true, dir.path());
    std::thread::sleep(watch);
    Trial {
        // A VIP silent since some reply is a gap up to now.
        gap: probe
            .max_gap_from(last.saturating_sub(1))
            .max(probe.silence())
            .as_secs_f64(),
        quiet: quiet.as_secs_f64(),
        changes: m.transitions() + b.transitions() - before,
        kept: m.state().as_deref() == Some("MASTER") && b.state().as_deref() == Some("BACKUP"),
    }
}

fn main() {
    let trials: usize = carp_tests::setting("TRIALS", 3);
    let smoke = std::env::var_os("BENCH_SMOKE").is_some();
    let (kinds, watch) = if smoke {
        (&KINDS[..1], SMOKE_WATCH)
    } else {
        (&KINDS[..], WATCH)
    };
    println!(
        "\n### Reload, backup then master, per change kind ({trials} trials; longest ping gap \
         to the VIP every 10 ms from the first reload to {} s after the last, max over the \
         trials, ms, and in brackets the longest gap of the quiet second before; state changes \
         of both members)\n",
        watch.as_secs()
    );
    println!(
        "| change | carp-agent gap (quiet) ms | carp-agent state changes | keepalived 2.2.7 change | keepalived gap (quiet) ms | keepalived state changes |"
    );
    println!("|---|---:|---:|---|---:|---:|");
    let mut json = Vec::new();
    let mut n = 0;
    for kind in kinds {
        let mut cells = Vec::new();
        for (keepalived, name) in [(false, "carp-agent"), (true, "keepalived")] {
            if keepalived && kind.keepalived.is_none() {
                cells.push(("n/a".to_owned(), "n/a".to_owned()));
                json.push(serde_json::json!({
                    "bench": "reload",
                    "change": kind.name,
                    "impl": name,
                    "applicable": false,
                }));
                continue;
            }
            let runs: Vec<Trial> = (0..trials)
                .map(|_| {
                    n += 1;
                    trial(*kind, keepalived, watch, &format!("rl{n}"))
                })
                .collect();
            let max = |f: fn(&Trial) -> f64| runs.iter().map(f).fold(0.0, f64::max) * 1000.0;
            let changes: u64 = runs.iter().map(|r| r.changes).sum();
            let lost = runs.iter().filter(|r| !r.kept).count();
            cells.push((
                format!("{:.0} ({:.0})", max(|r| r.gap), max(|r| r.quiet)),
                if lost == 0 {
                    changes.to_string()
                } else {
                    format!("{changes} (roles swapped in {lost})")
                },
            ));
            json.push(serde_json::json!({
                "bench": "reload",
                "change": kind.name,
                "impl": name,
                "same_change": if keepalived { kind.keepalived } else { Some(kind.name) },
                "gap_ms": runs.iter().map(|r| (r.gap * 1e4).round() / 10.0).collect::<Vec<_>>(),
                "quiet_gap_ms": runs.iter().map(|r| (r.quiet * 1e4).round() / 10.0).collect::<Vec<_>>(),
                "state_changes": runs.iter().map(|r| r.changes).collect::<Vec<_>>(),
                "roles_kept": runs.iter().map(|r| r.kept).collect::<Vec<_>>(),
            }));
        }
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            kind.name,
            cells[0].0,
            cells[0].1,
            kind.keepalived
                .unwrap_or("n/a (VRRPv3 has no authentication)"),
            cells[1].0,
            cells[1].1
        );
    }
    if !smoke {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/reload.json");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&json).unwrap();
        std::fs::write(&out, text + "\n").unwrap();
    }
}
