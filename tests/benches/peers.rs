//! carp-agent side by side with ucarp and keepalived in namespaces: failover gap when the
//! master dies (SIGKILL), loses its link or fails its health check, planned handover
//! (SIGTERM), flood resistance, and footprint. Prints markdown tables and writes `bench/results.json`.
//! TRIALS (default 5) and FLOOD_SECS (default 30) scale it down for a smoke run, which
//! (BENCH_SMOKE) writes no JSON.

use carp_agent::{frame, hmac::Auth};
use carp_common::wire::CarpHeader;
use carp_tests::{
    agent::{Agent, TempDir},
    lan::Lan,
    peers::{Keepalived, Ucarp, ucarp_state, wait_ucarp},
    probe::Probe,
    procfs::{cpu_seconds, rss_kib},
};
use nix::sys::signal::Signal;
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

const PASSWORD: &str = "bench-pass";
const VIP: &str = "192.0.2.50";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Impl {
    Carp,
    Ucarp,
    Keepalived,
    /// carp-agent in VRRPv3 mode with this advert interval in ms.
    CarpVrrp(u32),
    /// keepalived with this advert interval in ms.
    KeepalivedFast(u32),
}

impl Impl {
    fn name(self) -> String {
        match self {
            Impl::Carp => "carp-agent (CARP)".into(),
            Impl::Ucarp => "ucarp 1.5.2".into(),
            Impl::Keepalived => "keepalived 2.2.7 (VRRPv3)".into(),
            Impl::CarpVrrp(ms) => format!("carp-agent (VRRPv3, {ms} ms)"),
            Impl::KeepalivedFast(ms) => format!("keepalived (VRRPv3, {ms} ms)"),
        }
    }

    /// The theoretical master-down time of the backup.
    fn bound(self) -> Duration {
        match self {
            // 3 x advbase + 100/256 s.
            Impl::Carp | Impl::Ucarp => Duration::from_micros(3_390_625),
            // 3 x interval + (256 - 156)/256 x interval: priority 156 is advskew 100's twin.
            Impl::Keepalived => Duration::from_micros(3_390_625),
            Impl::CarpVrrp(ms) | Impl::KeepalivedFast(ms) => {
                Duration::from_micros(u64::from(ms) * 1000 * 3 + u64::from(ms) * 1000 * 100 / 256)
            }
        }
    }
}

/// One running member of a pair.
enum Member {
    Agent(Agent),
    Ucarp(Ucarp, std::path::PathBuf),
    Keepalived(Keepalived),
}

/// A health check that passes while its file exists: every second, 2 failures or
/// successes in a row to change, in both implementations that have one.
const CHECK_DETECT: Duration = Duration::from_secs(2);

impl Member {
    /// `check`: the group runs with a health check on this file (the master's; the backup
    /// preempts, which keepalived does by default).
    fn start(
        imp: Impl,
        lan: &Lan,
        host: usize,
        master: bool,
        dir: &Path,
        check: Option<&Path>,
    ) -> Self {
        let ns = &lan.hosts[host].ns;
        let name = format!("h{host}");
        let pass = dir.join("pass");
        carp_tests::agent::write_secret(&pass, PASSWORD).unwrap();
        if let (Impl::Keepalived, true, Some(flag)) = (imp, master, check) {
            let vip = format!("{VIP}/24");
            return Member::Keepalived(Keepalived::start_tracking(
                ns, dir, &name, 1, 200, &vip, flag,
            ));
        }
        match imp {
            Impl::Carp => {
                let checked = match check {
                    None => String::new(),
                    Some(_) if !master => "preempt = true\n".into(),
                    Some(flag) => format!(
                        "preempt = true\n\n[[check]]\nname = \"service\"\n\
                         command = [\"/usr/bin/test\", \"-e\", \"{}\"]\ninterval = 1\nfall = 2\nrise = 2\n",
                        flag.display()
                    ),
                };
                Member::Agent(
                    Agent::start(
                        ns,
                        dir,
                        &name,
                        &format!(
                            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\n\
                             advskew = {}\npass_file = \"{}\"\n{checked}",
                            if master { 0 } else { 100 },
                            pass.display()
                        ),
                    )
                    .unwrap(),
                )
            }
            Impl::CarpVrrp(ms) => Member::Agent(
                Agent::start(
                    ns,
                    dir,
                    &name,
                    &format!(
                        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nprotocol = \"vrrp3\"\n\
                         vips = [\"{VIP}/24\"]\npriority = {}\ninterval_ms = {ms}\n",
                        if master { 200 } else { 156 }
                    ),
                )
                .unwrap(),
            ),
            Impl::Ucarp => {
                // ucarp leaves the VIP to its scripts; each host its own, as rewriting one
                // the other host's ucarp is running fails with ETXTBSY.
                let up = dir.join(format!("{name}.up.sh"));
                let down = dir.join(format!("{name}.down.sh"));
                std::fs::write(&up, "#!/bin/sh\nip addr add $2/24 dev $1\n").unwrap();
                std::fs::write(&down, "#!/bin/sh\nip addr del $2/24 dev $1\n").unwrap();
                for s in [&up, &down] {
                    std::process::Command::new("chmod")
                        .arg("755")
                        .arg(s)
                        .status()
                        .unwrap();
                }
                let log = dir.join(format!("{name}.ucarp.log"));
                let src = lan.hosts[host].addr.to_string();
                let skew = if master { 0 } else { 100 };
                let u = Ucarp::start_with_scripts(ns, &src, skew, &pass, &log, &up, &down);
                Member::Ucarp(u, log)
            }
            Impl::Keepalived | Impl::KeepalivedFast(_) => {
                let ms = match imp {
                    Impl::KeepalivedFast(ms) => ms,
                    _ => 1000,
                };
                Member::Keepalived(Keepalived::start_with_interval(
                    ns,
                    dir,
                    &name,
                    1,
                    if master { 200 } else { 156 },
                    &format!("{VIP}/24"),
                    ms,
                ))
            }
        }
    }

    fn wait(&self, state: &str, timeout: Duration) -> Duration {
        match self {
            Member::Agent(a) => a.wait_state(1, state, timeout).unwrap(),
            Member::Ucarp(_, log) => wait_ucarp(log, state, timeout),
            Member::Keepalived(k) => k.wait(state, timeout),
        }
    }

    fn is(&self, state: &str) -> bool {
        match self {
            Member::Agent(a) => a.state(1).as_deref() == Some(state),
            Member::Ucarp(_, log) => ucarp_state(log).as_deref() == Some(state),
            Member::Keepalived(k) => k.state().as_deref() == Some(state),
        }
    }

    fn pid(&self) -> i32 {
        match self {
            Member::Agent(a) => a.pid().unwrap(),
            Member::Ucarp(u, _) => u.pid(),
            Member::Keepalived(k) => k.pid(),
        }
    }

    fn signal(&self, sig: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
}

struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    Stats {
        min: v[0],
        median: v[v.len() / 2],
        max: v[v.len() - 1],
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Cable,
    Term,
    /// The master's health check starts failing.
    Check,
}

/// One trial: master and backup elected, client pinging, then the fault. Returns the
/// takeover time (fault -> backup MASTER) and the longest ping gap.
fn trial(imp: Impl, fault: Fault, tag: &str) -> (f64, f64) {
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["m", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let flag = dir.path().join("service-up");
    std::fs::write(&flag, "").unwrap();
    let check = (fault == Fault::Check).then_some(flag.as_path());
    let m = Member::start(imp, &lan, 0, true, dir.path(), check);
    m.wait("MASTER", Duration::from_secs(10));
    let b = Member::start(imp, &lan, 1, false, dir.path(), check);
    b.wait("BACKUP", Duration::from_secs(10));
    let probe = Probe::start(&lan.hosts[2].ns, VIP).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let start = Instant::now();
    match fault {
        Fault::Kill => m.signal(Signal::SIGKILL),
        Fault::Term => m.signal(Signal::SIGTERM),
        Fault::Cable => lan.cable(0, false).unwrap(),
        Fault::Check => std::fs::remove_file(&flag).unwrap(),
    }
    while !b.is("MASTER") && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = start.elapsed().as_secs_f64();
    // Long enough for the pings to resume: the gap is measured between replies.
    std::thread::sleep(Duration::from_millis(400));
    (took, probe.max_gap().as_secs_f64())
}

/// What the flooder sends.
#[derive(Clone, Copy, PartialEq)]
enum Forgery {
    /// CARP adverts with a wrong digest (for keepalived: VRRPv3 with a bad checksum).
    BadDigest,
    /// One valid advert of the master, as captured, replayed (CARP only).
    Replay,
}

/// Floods the pair's segment with forged adverts for `secs`. Returns (pps sent, state
/// changes on both members, backup CPU %).
fn flood(imp: Impl, forgery: Forgery, secs: u64, tag: &str) -> (f64, u64, f64) {
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["m", "b", "flooder"]).unwrap();
    let m = Member::start(imp, &lan, 0, true, dir.path(), None);
    m.wait("MASTER", Duration::from_secs(10));
    let b = Member::start(imp, &lan, 1, false, dir.path(), None);
    b.wait("BACKUP", Duration::from_secs(10));
    let vip: Ipv4Addr = VIP.parse().unwrap();
    let payload = match imp {
        Impl::Keepalived | Impl::KeepalivedFast(_) => {
            let mut p = frame::vrrp_payload(
                Ipv4Addr::new(192, 0, 2, 3).into(),
                frame::group(Ipv4Addr::new(192, 0, 2, 3).into()),
                carp_common::vrrp::Vrrp3Header {
                    vrid: 1,
                    priority: 254,
                    count: 1,
                    max_adver_int: 100,
                },
                &[vip.into()],
            )
            .unwrap();
            p[6] ^= 0xff;
            p
        }
        _ => {
            // A replay is a valid advert (right password) sent again and again.
            let key: &[u8] = match forgery {
                Forgery::Replay => PASSWORD.as_bytes(),
                Forgery::BadDigest => b"not-the-pass",
            };
            let wrong = Auth::new(key, 1, &[vip.into()]).unwrap();
            CarpHeader {
                vhid: 1,
                advskew: 0,
                demote: 0,
                advbase: 1,
                counter: 1,
                digest: wrong.sign(1),
            }
            .encode()
            .to_vec()
        }
    };
    // A replay comes from the master's address, as captured; forgeries from elsewhere.
    let src = match forgery {
        Forgery::Replay => lan.hosts[0].addr,
        Forgery::BadDigest => Ipv4Addr::new(192, 0, 2, 3),
    };
    let f = frame::advert(src.into(), [2, 0, 0, 0, 0, 3], None, &payload);
    let before = (cpu_seconds(b.pid()), state_changes(&m), state_changes(&b));
    let sent = lan.hosts[2]
        .ns
        .enter(move || {
            let sock =
                carp_agent::send::PacketSocket::bind(nix::net::if_::if_nametoindex("eth0")?)?;
            let end = Instant::now() + Duration::from_secs(secs);
            let mut n = 0u64;
            while Instant::now() < end {
                for _ in 0..256 {
                    if sock.send(&f).is_ok() {
                        n += 1;
                    }
                }
            }
            Ok(n)
        })
        .unwrap();
    let cpu = (cpu_seconds(b.pid()) - before.0) / secs as f64 * 100.0;
    std::thread::sleep(Duration::from_secs(1));
    let changes = state_changes(&m) - before.1 + state_changes(&b) - before.2;
    (sent as f64 / secs as f64, changes, cpu)
}

/// State changes a member logged so far.
fn state_changes(m: &Member) -> u64 {
    let (text, needle) = match m {
        Member::Agent(a) => (a.log_text(), " -> "),
        Member::Ucarp(_, log) => (
            std::fs::read_to_string(log).unwrap_or_default(),
            "Switching to state",
        ),
        Member::Keepalived(k) => (k.log_text(), "Entering "),
    };
    text.lines().filter(|l| l.contains(needle)).count() as u64
}

/// Idle footprint of one process serving `n` groups: (RSS MiB, CPU % over 10 s).
fn footprint(imp: Impl, n: u8, tag: &str) -> (f64, f64) {
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["h"]).unwrap();
    let pass = dir.path().join("pass");
    carp_tests::agent::write_secret(&pass, PASSWORD).unwrap();
    let ns = &lan.hosts[0].ns;
    let (pid, _guard): (i32, Box<dyn std::any::Any>) = match imp {
        Impl::Carp | Impl::CarpVrrp(_) => {
            // IPv6 VIPs: 255 of them fit the documentation prefix next to the host's.
            let mut conf = String::new();
            for v in 1..=n {
                let vip = format!("2001:db8::100:{v:x}/64");
                let _ = match imp {
                    Impl::CarpVrrp(ms) => write!(
                        conf,
                        "[[vhid]]\ninterface = \"eth0\"\nvhid = {v}\nprotocol = \"vrrp3\"\n\
                         interval_ms = {ms}\nvips = [\"{vip}\"]\n"
                    ),
                    _ => write!(
                        conf,
                        "[[vhid]]\ninterface = \"eth0\"\nvhid = {v}\nvips = [\"{vip}\"]\n\
                         pass_file = \"{}\"\n",
                        pass.display()
                    ),
                };
            }
            let a = Agent::start(ns, dir.path(), "h", &conf).unwrap();
            a.wait_state(n, "MASTER", Duration::from_secs(15)).unwrap();
            (a.pid().unwrap(), Box::new(a))
        }
        Impl::Keepalived | Impl::KeepalivedFast(_) => {
            let k = Keepalived::start_many(ns, dir.path(), "h", n, 100);
            k.wait("MASTER", Duration::from_secs(15));
            (k.pid(), Box::new(k))
        }
        Impl::Ucarp => {
            let u = Ucarp::start(ns, "192.0.2.1", 0, &pass, &dir.path().join("u.log"));
            wait_ucarp(&dir.path().join("u.log"), "MASTER", Duration::from_secs(10));
            (u.pid(), Box::new(u))
        }
    };
    std::thread::sleep(Duration::from_secs(2));
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(10));
    let cpu = (cpu_seconds(pid) - c0) / 10.0 * 100.0;
    (rss_kib(pid) as f64 / 1024.0, cpu)
}

fn main() {
    let trials: usize = carp_tests::setting("TRIALS", 5);
    let flood_secs: u64 = carp_tests::setting("FLOOD_SECS", 30);
    let mut json = Vec::new();
    let mut n = 0;
    let mut tag = || {
        n += 1;
        format!("bench{n}")
    };

    for (fault, title) in [
        (Fault::Kill, "Failover: master SIGKILLed"),
        (Fault::Cable, "Failover: master's link down (cable pull)"),
        (Fault::Term, "Planned handover: master SIGTERM"),
        (
            Fault::Check,
            "Failover: the master's health check fails (bound = its detection, 2 x 1 s)",
        ),
    ] {
        println!("\n### {title} ({trials} trials; seconds)\n");
        println!(
            "| implementation | bound | takeover min / median / max | ping gap min / median / max |"
        );
        println!("|---|---:|---|---|");
        let mut impls = vec![Impl::Carp, Impl::Ucarp, Impl::Keepalived];
        if fault == Fault::Check {
            // ucarp has no health checks.
            impls.retain(|i| *i != Impl::Ucarp);
        }
        if fault == Fault::Cable {
            impls.extend([
                Impl::CarpVrrp(100),
                Impl::CarpVrrp(10),
                Impl::KeepalivedFast(10),
            ]);
        }
        for imp in impls {
            let runs: Vec<(f64, f64)> = (0..trials).map(|_| trial(imp, fault, &tag())).collect();
            let bound = if fault == Fault::Check {
                CHECK_DETECT
            } else {
                imp.bound()
            };
            let t = stats(runs.iter().map(|r| r.0).collect());
            let g = stats(runs.iter().map(|r| r.1).collect());
            println!(
                "| {} | {:.3} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} |",
                imp.name(),
                bound.as_secs_f64(),
                t.min,
                t.median,
                t.max,
                g.min,
                g.median,
                g.max
            );
            json.push(format!(
                "{{\"bench\":\"{title}\",\"impl\":\"{}\",\"bound_s\":{:.4},\"takeover_s\":{:?},\"gap_s\":{:?}}}",
                imp.name(),
                bound.as_secs_f64(),
                runs.iter().map(|r| (r.0 * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
                runs.iter().map(|r| (r.1 * 1000.0).round() / 1000.0).collect::<Vec<_>>()
            ));
        }
    }

    println!("\n### Flood: forged adverts into a master/backup pair for {flood_secs} s\n");
    println!(
        "| implementation | forgery | pps sent (AF_PACKET, 1 core) | state changes | backup CPU % |"
    );
    println!("|---|---|---:|---:|---:|");
    for (imp, forgery, what) in [
        (Impl::Carp, Forgery::BadDigest, "wrong HMAC"),
        (Impl::Ucarp, Forgery::BadDigest, "wrong HMAC"),
        (
            Impl::Keepalived,
            Forgery::BadDigest,
            "bad checksum (VRRPv3 has no HMAC)",
        ),
        (Impl::Carp, Forgery::Replay, "replayed valid advert"),
        (Impl::Ucarp, Forgery::Replay, "replayed valid advert"),
    ] {
        let (pps, flaps, cpu) = flood(imp, forgery, flood_secs, &tag());
        println!(
            "| {} | {what} | {pps:.0} | {flaps} | {cpu:.1} |",
            imp.name()
        );
        json.push(format!(
            "{{\"bench\":\"flood\",\"impl\":\"{}\",\"forgery\":\"{what}\",\"pps\":{pps:.0},\"state_changes\":{flaps},\"backup_cpu_pct\":{cpu:.2}}}",
            imp.name()
        ));
    }

    println!("\n### Footprint at idle (one process)\n");
    println!("| implementation | groups | RSS MiB | CPU % |");
    println!("|---|---:|---:|---:|");
    for (imp, groups) in [
        (Impl::Carp, 1),
        (Impl::Carp, 255),
        (Impl::CarpVrrp(10), 16),
        (Impl::Ucarp, 1),
        (Impl::Keepalived, 1),
        (Impl::Keepalived, 255),
    ] {
        let (rss, cpu) = footprint(imp, groups, &tag());
        println!("| {} | {groups} | {rss:.1} | {cpu:.2} |", imp.name());
        json.push(format!(
            "{{\"bench\":\"footprint\",\"impl\":\"{}\",\"groups\":{groups},\"rss_mib\":{rss:.2},\"cpu_pct\":{cpu:.3}}}",
            imp.name()
        ));
    }
    if std::env::var_os("BENCH_SMOKE").is_some() {
        // A smoke run's numbers are not the benchmark's.
        return;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("results.json"),
        format!("[\n{}\n]\n", json.join(",\n")),
    )
    .unwrap();
}
