//! Resource exhaustion (issue #14): one agent in a namespace, metrics on, one health
//! check, started with 96 file descriptors (`ulimit -n 96`), flooded with idle
//! connections to the metrics port and the control socket and with oversized requests
//! (a 256 MiB request line without a newline, a 256 MiB HTTP header). While the flood is
//! held, the status is asked every half second over the control socket (the typed JSON
//! reply, each wait bounded: an unanswered request counts as a timeout, it never hangs
//! the bench); the agent's CPU over the window, its memory before, at the flood's peak
//! (VmHWM, reset when the flood starts) and after, the most descriptors it held,
//! and whether the VHID stayed MASTER with demotion 0 are read from /proc and the status.
//! Prints a markdown table and writes `bench/exhaust.json`. FLOOD_SECS (default 10) is
//! the window; BENCH_SMOKE runs one short combined flood and writes no JSON.
//!
//! CARP_AGENT_BIN may be an older agent: the configuration and the status request are
//! the ones agents before the hardening (19c03c9) read too.

use carp_agent::control::Reply;
use carp_common::State;
use carp_tests::{
    agent::{Agent, TempDir},
    lan::Lan,
    procfs::{cpu_seconds, status_kib},
};
use socket2::{Domain, SockAddr, Socket, Type};
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::{fd::OwnedFd, unix::net::UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The agent's file descriptor limit, as in the report that opened the issue.
const NOFILE: u64 = 96;
const METRICS: &str = "127.0.0.1:9720";
/// The oversized request: a line (or a header) this long, no end in sight.
const OVERSIZED: usize = 256 << 20;
/// How long one status request may take before it counts as unanswered.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Status requests are this far apart.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One flood.
#[derive(Clone, Copy)]
struct Flood {
    /// Idle connections to the metrics port, and as many to the control socket.
    idle: usize,
    /// Connections the agent closed are opened again, every second.
    reopen: bool,
    /// The 256 MiB request line and HTTP header.
    oversized: bool,
}

impl Flood {
    fn name(self) -> String {
        let mut parts = Vec::new();
        if self.idle > 0 {
            parts.push(format!(
                "{} idle to metrics + {} idle to the control socket{}",
                self.idle,
                self.idle,
                if self.reopen {
                    ", reopened each second"
                } else {
                    ", held"
                }
            ));
        }
        if self.oversized {
            parts.push("a 256 MiB request line + a 256 MiB HTTP header".into());
        }
        if parts.is_empty() {
            "none (baseline)".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Joins the calling thread to namespace `ns`, so the sockets it opens are there.
fn join_netns(ns: &str) {
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// A connection the flood holds.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// Starts a connection without waiting for it: a listener that no longer accepts
    /// leaves it pending, as a client of a hung server would be.
    fn open(to: &SockAddr) -> Option<Self> {
        let domain = if to.is_unix() {
            Domain::UNIX
        } else {
            Domain::IPV4
        };
        let sock = Socket::new(domain, Type::STREAM, None).ok()?;
        sock.set_nonblocking(true).ok()?;
        match sock.connect(to) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(_) => return None,
        }
        let fd = OwnedFd::from(sock);
        Some(if to.is_unix() {
            Conn::Unix(fd.into())
        } else {
            Conn::Tcp(fd.into())
        })
    }

    /// Whether the agent still holds it open (it sends nothing to an idle client).
    fn alive(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let read = match self {
            Conn::Tcp(s) => s.read(&mut buf),
            Conn::Unix(s) => s.read(&mut buf),
        };
        match read {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Idle connections to the metrics port and the control socket, held by a thread in the
/// agent's namespace until dropped.
struct IdleFlood {
    stop: Arc<AtomicBool>,
    /// Connections the agent closed (seen at the end or when reopening).
    closed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl IdleFlood {
    fn start(ns: &str, socket: &Path, flood: Flood) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicU64::new(0));
        let targets = [
            SockAddr::from(METRICS.parse::<SocketAddr>().unwrap()),
            SockAddr::unix(socket).unwrap(),
        ];
        let (ns, flag, count) = (ns.to_owned(), stop.clone(), closed.clone());
        let thread = std::thread::spawn(move || {
            join_netns(&ns);
            let mut conns: Vec<(usize, Option<Conn>)> = (0..flood.idle)
                .flat_map(|_| [0, 1])
                .map(|t| (t, Conn::open(&targets[t])))
                .collect();
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if !flood.reopen || last.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                last = Instant::now();
                for (t, c) in &mut conns {
                    if !c.as_mut().is_some_and(Conn::alive) {
                        count.fetch_add(u64::from(c.is_some()), Ordering::Relaxed);
                        *c = Conn::open(&targets[*t]);
                    }
                }
            }
            let gone = conns
                .iter_mut()
                .filter_map(|(_, c)| c.as_mut())
                .map(|c| !c.alive())
                .filter(|gone| *gone)
                .count();
            count.fetch_add(gone as u64, Ordering::Relaxed);
        });
        Self {
            stop,
            closed,
            thread: Some(thread),
        }
    }

    /// Ends the flood; returns how many of its connections the agent had closed.
    fn end(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `head` then `OVERSIZED` bytes of filler without a line end, as fast as the
/// agent takes them; stops at the first error (the agent closed) or after 2 s without
/// progress. Holds the connection until `stop`. Returns the bytes the agent took.
fn oversized(
    ns: &str,
    to: SockAddr,
    head: &'static [u8],
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        join_netns(&ns);
        let Ok(sock) = Socket::new(
            if to.is_unix() {
                Domain::UNIX
            } else {
                Domain::IPV4
            },
            Type::STREAM,
            None,
        ) else {
            return 0;
        };
        let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
        if sock.connect_timeout(&to, Duration::from_secs(2)).is_err() {
            return 0;
        }
        let mut sock: std::fs::File = OwnedFd::from(sock).into();
        let filler = vec![b'a'; 1 << 20];
        let mut sent = 0u64;
        if sock.write_all(head).is_ok() {
            while (sent as usize) < OVERSIZED {
                match sock.write(&filler) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sent += n as u64,
                }
            }
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        sent
    })
}

/// One status request over the control socket, as `carp-agent status` sends it: the
/// time to the typed reply, or None when there is none within [`STATUS_TIMEOUT`].
fn status(socket: &Path) -> Option<(Duration, carp_agent::control::Status)> {
    let start = Instant::now();
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None).ok()?;
    // A Unix connect waits for room in the backlog as long as the send timeout allows.
    sock.set_write_timeout(Some(STATUS_TIMEOUT)).ok()?;
    sock.set_read_timeout(Some(STATUS_TIMEOUT)).ok()?;
    sock.connect(&SockAddr::unix(socket).ok()?).ok()?;
    let mut stream = UnixStream::from(OwnedFd::from(sock));
    stream.write_all(b"{\"cmd\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream.take(16 << 20))
        .read_line(&mut line)
        .ok()?;
    let took = start.elapsed();
    if took >= STATUS_TIMEOUT {
        return None;
    }
    let reply: Reply = serde_json::from_str(&line).ok()?;
    Some((took, reply.status?))
}

/// The file descriptors `pid` has open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Whether the agent's one VHID is MASTER with demotion 0 in `s`.
fn master_undemoted(s: &carp_agent::control::Status) -> bool {
    s.vhids
        .first()
        .is_some_and(|v| v.state == State::MASTER && v.demotion == 0)
}

/// What one flood did to the agent.
struct Outcome {
    /// Status latencies in ms; None for an unanswered request.
    latencies: Vec<Option<f64>>,
    cpu_pct: f64,
    rss_before_mib: f64,
    hwm_mib: f64,
    rss_after_mib: f64,
    /// The most file descriptors the agent had open when the status was asked.
    fds_max: usize,
    /// Every answered status during the flood, and the one after it, said MASTER with
    /// demotion 0; None when the agent did not answer after the flood.
    master_kept: Option<bool>,
    check_failures: Option<u64>,
    /// Idle connections the agent closed.
    closed: u64,
    /// Accepts that failed for want of descriptors, as the agent logged them (agents
    /// before the hardening retried without a word).
    emfile: usize,
    /// Bytes of the oversized line and header the agent took.
    taken: (u64, u64),
}

fn run(flood: Flood, secs: u64, tag: &str) -> Outcome {
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["h"]).unwrap();
    let ns = &lan.hosts[0].ns;
    let pass = dir.path().join("pass");
    carp_tests::agent::write_secret(&pass, "bench-pass").unwrap();
    let conf = format!(
        "metrics = \"{METRICS}\"\n\n[[vhid]]\ninterface = \"eth0\"\nvhid = 1\n\
         vips = [\"192.0.2.50/24\"]\npass_file = \"{}\"\n\n[[check]]\nname = \"true\"\n\
         command = [\"/bin/true\"]\ninterval = 0.5\nfall = 1\nrise = 1\n",
        pass.display()
    );
    let agent = Agent::start_with_nofile(ns, dir.path(), "h", &conf, NOFILE).unwrap();
    agent
        .wait_state(1, "MASTER", Duration::from_secs(10))
        .unwrap();
    let pid = agent.pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    assert_eq!(nofile, Some(NOFILE), "the agent's limits:\n{limits}");
    let failures = |s: &carp_agent::control::Status| s.checks.first().map(|c| c.failures);
    let before = status(&agent.socket).expect("the agent answers before the flood");
    let mib = |kib: Option<u64>| kib.unwrap_or(0) as f64 / 1024.0;
    let rss_before_mib = mib(status_kib(pid, "VmRSS"));
    // The peak so far is the start's (the XDP program's load): start it again from here.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let mut fds_max = 0;
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let idle = IdleFlood::start(ns.name(), &agent.socket, flood);
    let stop = Arc::new(AtomicBool::new(false));
    let big = flood.oversized.then(|| {
        (
            oversized(
                ns.name(),
                SockAddr::unix(&agent.socket).unwrap(),
                b"{\"cmd\":\"status\",\"x\":\"",
                stop.clone(),
            ),
            oversized(
                ns.name(),
                SockAddr::from(METRICS.parse::<SocketAddr>().unwrap()),
                b"GET /metrics HTTP/1.1\r\nHost: bench\r\nX-Big: ",
                stop.clone(),
            ),
        )
    });
    let window = Duration::from_secs(secs);
    let mut latencies = Vec::new();
    let mut kept = true;
    let mut next = start;
    while start.elapsed() < window {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += SAMPLE_EVERY;
        let sample = status(&agent.socket);
        fds_max = fds_max.max(open_fds(pid));
        kept &= sample.as_ref().is_none_or(|(_, s)| master_undemoted(s));
        latencies.push(sample.map(|(t, _)| t.as_secs_f64() * 1000.0));
    }
    let cpu_pct = (cpu_seconds(pid) - cpu0) / start.elapsed().as_secs_f64() * 100.0;
    let hwm_mib = mib(status_kib(pid, "VmHWM"));
    stop.store(true, Ordering::Relaxed);
    let taken = big.map_or((0, 0), |(a, b)| {
        (a.join().unwrap_or(0), b.join().unwrap_or(0))
    });
    let closed = idle.end();
    // The flood is over: the agent has a few seconds to answer again.
    let deadline = Instant::now() + Duration::from_secs(6);
    let after = loop {
        match status(&agent.socket) {
            Some((_, s)) => break Some(s),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    let rss_after_mib = mib(status_kib(pid, "VmRSS"));
    Outcome {
        latencies,
        cpu_pct,
        rss_before_mib,
        hwm_mib,
        rss_after_mib,
        fds_max,
        master_kept: after.as_ref().map(|s| kept && master_undemoted(s)),
        check_failures: after
            .as_ref()
            .and_then(failures)
            .zip(failures(&before.1))
            .map(|(a, b)| a.saturating_sub(b)),
        closed,
        emfile: agent.log_text().matches("Too many open files").count(),
        taken,
    }
}

fn main() {
    let secs: u64 = carp_tests::setting("FLOOD_SECS", 10);
    let smoke = std::env::var_os("BENCH_SMOKE").is_some();
    // 2000 idle connections and then some: more descriptors than a shell's default.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let floods: Vec<Flood> = if smoke {
        vec![Flood {
            idle: 150,
            reopen: false,
            oversized: true,
        }]
    } else {
        vec![
            Flood {
                idle: 0,
                reopen: false,
                oversized: false,
            },
            Flood {
                idle: 150,
                reopen: false,
                oversized: false,
            },
            Flood {
                idle: 1000,
                reopen: false,
                oversized: false,
            },
            Flood {
                idle: 1000,
                reopen: true,
                oversized: false,
            },
            Flood {
                idle: 0,
                reopen: false,
                oversized: true,
            },
            Flood {
                idle: 1000,
                reopen: true,
                oversized: true,
            },
        ]
    };
    let bin = carp_tests::agent::agent_bin();
    println!(
        "\n### Exhaustion: one agent at `ulimit -n {NOFILE}`, metrics on, one health check \
         every 0.5 s; status asked every {} ms for {secs} s of flood\n",
        SAMPLE_EVERY.as_millis()
    );
    println!(
        "| flood | status median / max ms | unanswered (> {} s) | agent CPU % | RSS MiB before / flood's peak / after | most fds open (of {NOFILE}) | every answer: MASTER, demotion 0 | check failures | accepts failed (EMFILE, logged) | idle connections the agent closed | oversized bytes taken (line / header) |",
        STATUS_TIMEOUT.as_secs()
    );
    println!("|---|---|---:|---:|---|---:|---|---:|---:|---:|---|");
    let mut json = Vec::new();
    for (i, flood) in floods.into_iter().enumerate() {
        let o = run(flood, secs, &format!("exh{i}"));
        // An unanswered request is slower than any answer: it counts in the median.
        let mut all: Vec<f64> = o
            .latencies
            .iter()
            .map(|l| l.unwrap_or(f64::INFINITY))
            .collect();
        all.sort_by(f64::total_cmp);
        let unanswered = all.iter().filter(|l| l.is_infinite()).count();
        let ms = |l: Option<&f64>| match l {
            Some(l) if l.is_finite() => format!("{l:.1}"),
            _ => "timeout".into(),
        };
        let lat = format!("{} / {}", ms(all.get(all.len() / 2)), ms(all.last()));
        let kept = match o.master_kept {
            Some(true) => "yes",
            Some(false) => "no",
            None => "no answer after",
        };
        let failures = o
            .check_failures
            .map_or_else(|| "no answer".into(), |f| f.to_string());
        println!(
            "| {} | {lat} | {unanswered} of {} | {:.1} | {:.1} / {:.1} / {:.1} | {} | {kept} | {failures} | {} | {} | {} / {} |",
            flood.name(),
            o.latencies.len(),
            o.cpu_pct,
            o.rss_before_mib,
            o.hwm_mib,
            o.rss_after_mib,
            o.fds_max,
            o.emfile,
            o.closed,
            bytes(o.taken.0),
            bytes(o.taken.1),
        );
        json.push(serde_json::json!({
            "bench": "exhaust",
            "agent": bin.display().to_string(),
            "flood": flood.name(),
            "secs": secs,
            "nofile": NOFILE,
            "status_ms": o.latencies.iter().map(|l| l.map(|v| (v * 100.0).round() / 100.0)).collect::<Vec<_>>(),
            "cpu_pct": (o.cpu_pct * 100.0).round() / 100.0,
            "rss_before_mib": (o.rss_before_mib * 100.0).round() / 100.0,
            "hwm_mib": (o.hwm_mib * 100.0).round() / 100.0,
            "rss_after_mib": (o.rss_after_mib * 100.0).round() / 100.0,
            "fds_max": o.fds_max,
            "master_undemoted": o.master_kept,
            "check_failures": o.check_failures,
            "idle_closed": o.closed,
            "accept_emfile_logged": o.emfile,
            "oversized_taken": [o.taken.0, o.taken.1],
        }));
    }
    if !smoke {
        let out = std::env::var_os("EXHAUST_JSON").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/exhaust.json"),
            PathBuf::from,
        );
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let text = serde_json::to_string_pretty(&json).unwrap();
        std::fs::write(&out, text + "\n").unwrap();
    }
}

/// A byte count for the table.
fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}
