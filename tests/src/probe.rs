//! A continuous ping to a VIP from a client namespace (`ping -D -i 0.01`, 100 probes a
//! second, or every 1 ms with [`Probe::every`]) that records every reply with its sequence
//! number, so the longest silence, the failover gap, and the probes lost can be read
//! afterwards.

use crate::netns::Netns;
use anyhow::{Context as _, Result};
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

pub struct Probe {
    child: Child,
    replies: Arc<Mutex<Vec<f64>>>,
    /// The replies' sequence numbers, unwrapped past 65535 (ping's is 16 bits: 65 s at 1 ms).
    seqs: Arc<Mutex<Vec<u64>>>,
    /// When it started, in ping's clock (seconds since the epoch).
    started: f64,
}

/// Seconds since the epoch, ping -D's clock.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Probe {
    /// Starts pinging `target` from `ns` every 10 ms.
    pub fn start(ns: &Netns, target: &str) -> Result<Self> {
        Self::start_from(ns, target, None)
    }

    /// Like [`Probe::start`], from source address `src` (`ping -I`): one flow of a
    /// balanced group.
    pub fn start_from(ns: &Netns, target: &str, src: Option<&str>) -> Result<Self> {
        Self::spawn(ns, target, src, "0.01")
    }

    /// Pings `target` from `ns` every `interval` (ping's `-i`, seconds: "0.001" for 1 ms,
    /// which needs root) and counts lost replies by sequence number ([`Probe::lost`]).
    pub fn every(ns: &Netns, target: &str, interval: &str) -> Result<Self> {
        Self::spawn(ns, target, None, interval)
    }

    fn spawn(ns: &Netns, target: &str, src: Option<&str>, interval: &str) -> Result<Self> {
        let mut cmd = ns.command("ping");
        if let Some(src) = src {
            cmd.args(["-I", src]);
        }
        let mut child = cmd
            .args(["-D", "-n", "-i", interval, "-W", "1", target])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        let out = child.stdout.take().context("ping stdout")?;
        let replies = Arc::new(Mutex::new(Vec::new()));
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let (sink, seq_sink) = (replies.clone(), seqs.clone());
        std::thread::spawn(move || {
            let mut wraps = 0;
            let mut last = None;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // "[1732540000.123456] 64 bytes from 192.0.2.50: icmp_seq=1 ttl=64 time=0.1 ms"
                if let Some(ts) = line
                    .strip_prefix('[')
                    .and_then(|l| l.split(']').next())
                    .and_then(|t| t.parse::<f64>().ok())
                    .filter(|_| line.contains("bytes from"))
                {
                    sink.lock().expect("probe lock").push(ts);
                    if let Some(seq) = icmp_seq(&line) {
                        // A late reply is at most a second (-W 1) behind: a drop by more
                        // than half the range is the counter wrapping.
                        if last.is_some_and(|l: u64| l > seq + 32_768) {
                            wraps += 1;
                        }
                        last = Some(seq);
                        seq_sink
                            .lock()
                            .expect("probe lock")
                            .push(wraps * 65_536 + seq);
                    }
                }
            }
        });
        Ok(Self {
            child,
            replies,
            seqs,
            started: now(),
        })
    }

    /// Replies so far.
    pub fn count(&self) -> usize {
        self.replies.lock().expect("probe lock").len()
    }

    /// The longest time between two consecutive replies so far.
    pub fn max_gap(&self) -> Duration {
        self.max_gap_from(0)
    }

    /// The time since the last reply (since the start, when none came): a VIP that
    /// stopped answering for good shows here, not in the gaps between replies.
    pub fn silence(&self) -> Duration {
        let r = self.replies.lock().expect("probe lock");
        let last = r.last().copied().unwrap_or(self.started);
        Duration::from_secs_f64((now() - last).max(0.0))
    }

    /// The longest time between two consecutive replies from reply `first` on (a
    /// [`Probe::count`] taken earlier): the gaps since then.
    pub fn max_gap_from(&self, first: usize) -> Duration {
        let r = self.replies.lock().expect("probe lock");
        let gap = r
            .get(first..)
            .unwrap_or_default()
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(0.0, f64::max);
        Duration::from_secs_f64(gap.max(0.0))
    }

    /// Probes sent between the first and the last reply that got no reply, and replies
    /// that came twice (two hosts answering). Read once the VIP answers again: probes
    /// after the last reply are not counted.
    pub fn lost(&self) -> (u64, u64) {
        let mut seqs = self.seqs.lock().expect("probe lock").clone();
        let replies = seqs.len() as u64;
        seqs.sort_unstable();
        seqs.dedup();
        let (Some(first), Some(last)) = (seqs.first(), seqs.last()) else {
            return (0, 0);
        };
        (
            last - first + 1 - seqs.len() as u64,
            replies - seqs.len() as u64,
        )
    }
}

/// The `icmp_seq=N` of a ping reply line.
fn icmp_seq(line: &str) -> Option<u64> {
    let rest = line.split("icmp_seq=").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
