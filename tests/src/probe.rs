//! A continuous ping to a VIP from a client namespace (`ping -D -i 0.01`, 100 probes a
//! second, or faster) that records every reply, so the longest silence, the failover gap,
//! and the probes that got no answer can be read afterwards.

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
    /// Each reply's time and icmp_seq.
    replies: Arc<Mutex<Vec<(f64, u64)>>>,
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
        Self::start_with(ns, target, src, "0.01")
    }

    /// Like [`Probe::start`], one probe every millisecond (root's `ping -i 0.001`): what
    /// a handover may lose shows as [`Probe::lost`].
    pub fn start_fast(ns: &Netns, target: &str) -> Result<Self> {
        Self::start_with(ns, target, None, "0.001")
    }

    fn start_with(ns: &Netns, target: &str, src: Option<&str>, interval: &str) -> Result<Self> {
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
        let sink = replies.clone();
        std::thread::spawn(move || {
            let mut wraps = 0;
            let mut last = None;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                // "[1732540000.123456] 64 bytes from 192.0.2.50: icmp_seq=1 ttl=64 time=0.1 ms"
                let ts = line
                    .strip_prefix('[')
                    .and_then(|l| l.split(']').next())
                    .and_then(|t| t.parse::<f64>().ok());
                let seq = line
                    .split_once("icmp_seq=")
                    .and_then(|(_, r)| r.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok());
                if let (Some(ts), Some(seq)) = (ts, seq)
                    && line.contains("bytes from")
                {
                    // ping's icmp_seq is 16 bits (65 s at 1 ms); a late reply is at most a
                    // second (-W 1) behind, so a drop by more than half the range is a wrap.
                    if last.is_some_and(|l: u64| l > seq + 32_768) {
                        wraps += 1;
                    }
                    last = Some(seq);
                    sink.lock()
                        .expect("probe lock")
                        .push((ts, wraps * 65_536 + seq));
                }
            }
        });
        Ok(Self {
            child,
            replies,
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
        let last = r.last().map_or(self.started, |(ts, _)| *ts);
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
            .map(|w| w[1].0 - w[0].0)
            .fold(0.0, f64::max);
        Duration::from_secs_f64(gap.max(0.0))
    }
}

impl Probe {
    /// Of the probes since a [`Probe::count`] of `first` replies was taken, from the last
    /// reply before it to the last reply: how many got no reply, and how many did. Ping
    /// numbers its probes, so a sequence number missing between two replies is a probe
    /// lost (icmp_seq, 16 bits, is unwrapped as replies come). Ping sends fewer while no
    /// reply comes, so a silence loses fewer probes than it lasts milliseconds.
    pub fn lost_from(&self, first: usize) -> (u64, u64) {
        let r = self.replies.lock().expect("probe lock");
        let r = r.get(first.saturating_sub(1)..).unwrap_or_default();
        let mut seqs: Vec<u64> = r.iter().map(|(_, seq)| *seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let answered = seqs.len() as u64;
        let sent = match (seqs.first(), seqs.last()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        };
        (sent - answered, answered)
    }

    /// Over the whole run: probes that got no reply between the first and the last reply,
    /// and replies that came twice (two hosts answering).
    pub fn lost(&self) -> (u64, u64) {
        let replies = self.count() as u64;
        let (lost, answered) = self.lost_from(0);
        (lost, replies - answered)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
