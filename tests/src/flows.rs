//! Many flows to one VIP, one per source address: a UDP echo of each host's name run
//! inside its namespace, and a client that sends one request per flow and collects every
//! reply, so a test can see which host answered each flow, and how many did.

use crate::{agent::Agent, netns::Netns};
use anyhow::{Context as _, Result};
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The port the servers answer on.
pub const PORT: u16 = 4000;

/// A UDP server bound to `vip` inside a namespace, answering every request with its
/// name, a `/` and the request (so a client tells which request a reply is to); stopped
/// when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Server {
    pub fn start(ns: &Netns, vip: impl Into<IpAddr>, name: &str) -> Result<Self> {
        Self::padded(ns, vip, name, 0)
    }

    /// A server whose replies are padded with zeros to at least `size` bytes: sent with
    /// DF (UDP's IP_PMTUDISC_WANT) while the path MTU the host knows allows it.
    pub fn padded(ns: &Netns, vip: impl Into<IpAddr>, name: &str, size: usize) -> Result<Self> {
        let vip = vip.into();
        let file = File::open(format!("/var/run/netns/{}", ns.name()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_owned());
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || -> Result<()> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
            let sock = UdpSocket::bind((vip, PORT));
            let _ = ready_tx.send(sock.as_ref().map(drop).map_err(|e| e.to_string()));
            let sock = sock?;
            sock.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut buf = [0u8; 64];
            let mut reply = name.into_bytes();
            reply.push(b'/');
            let head = reply.len();
            while !flag.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    reply.truncate(head);
                    reply.extend_from_slice(&buf[..n]);
                    reply.resize(reply.len().max(size), 0);
                    let _ = sock.send_to(&reply, from);
                }
            }
            Ok(())
        });
        ready
            .recv()
            .context("server thread")?
            .map_err(|e| anyhow::anyhow!("binding {vip}:{PORT}: {e}"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` source addresses for flows, from 198.51.100.1 on and then 203.0.113.1 on (at most
/// 508), each its own flow to a VIP.
pub fn sources(n: usize) -> Vec<Ipv4Addr> {
    (1..=254u8)
        .map(|i| Ipv4Addr::new(198, 51, 100, i))
        .chain((1..=254u8).map(|i| Ipv4Addr::new(203, 0, 113, i)))
        .take(n)
        .collect()
}

/// `n` IPv6 source addresses for flows, 2001:db8::1:1 on: on the LAN's 2001:db8::/64.
pub fn sources6(n: u16) -> Vec<Ipv6Addr> {
    (1..=n)
        .map(|i| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i))
        .collect()
}

/// Gives the client `srcs` on its eth0 (IPv6 ones without duplicate address detection).
pub fn add_sources(client: &Netns, srcs: &[impl Into<IpAddr> + Copy]) -> Result<()> {
    let batch =
        std::env::temp_dir().join(format!("{}flows-{}", crate::netns::PREFIX, client.name()));
    let lines: String = srcs
        .iter()
        .map(|a| match (*a).into() {
            IpAddr::V4(a) => format!("addr add {a}/32 dev eth0\n"),
            IpAddr::V6(a) => format!("addr add {a}/128 dev eth0 nodad\n"),
        })
        .collect();
    std::fs::write(&batch, lines)?;
    let added = client.ip(&["-batch", batch.to_str().context("path")?]);
    let _ = std::fs::remove_file(&batch);
    added?;
    Ok(())
}

/// Gives the client `srcs` (from [`sources`]) on its eth0, and routes them back from each
/// of `hosts` through the client's address `via`.
pub fn route_sources(
    client: &Netns,
    srcs: &[Ipv4Addr],
    hosts: &[&Netns],
    via: Ipv4Addr,
) -> Result<()> {
    add_sources(client, srcs)?;
    for h in hosts {
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            h.ip(&["route", "add", net, "via", &via.to_string()])?;
        }
    }
    Ok(())
}

/// How long a round goes on listening after its last reply, for a second one (two hosts
/// answering one flow reply within microseconds of each other).
const SETTLE: Duration = Duration::from_millis(50);

/// One request per source to `vip` from inside `client`, sent within a few ms; every reply, per
/// source in order: the names of the hosts that answered. The round ends [`SETTLE`] after
/// the last reply once every source `needed` names has one, and at `wait` at the latest,
/// so a loaded machine's slow reply is not taken for a lost one.
pub fn round(
    client: &Netns,
    srcs: &[impl Into<IpAddr> + Copy + Sync],
    vip: impl Into<IpAddr>,
    needed: impl Fn(usize) -> bool + Sync,
    wait: Duration,
) -> Result<Vec<Vec<String>>> {
    let vip = vip.into();
    client.enter(|| {
        let socks = srcs
            .iter()
            .map(|s| {
                let sock = UdpSocket::bind(((*s).into(), 0))?;
                sock.set_nonblocking(true)?;
                Ok(sock)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let to = SocketAddr::from((vip, PORT));
        // In bursts of 25, 1 ms apart: all at once, the requests a host keeps after a
        // failover (two shares) would overflow its server's receive buffer.
        for burst in socks.chunks(25) {
            for s in burst {
                s.send_to(b"who", to)?;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut replies = vec![Vec::new(); socks.len()];
        let start = Instant::now();
        let mut last = start;
        let mut buf = [0u8; 64];
        while start.elapsed() < wait {
            let mut idle = true;
            for (i, s) in socks.iter().enumerate() {
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    replies[i].push(host(&buf[..n]).to_owned());
                    idle = false;
                    last = Instant::now();
                }
            }
            let complete = (0..replies.len()).all(|i| !needed(i) || !replies[i].is_empty());
            if complete && last.elapsed() >= SETTLE {
                break;
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(replies)
    })
}

/// The host's name in a reply ([`Server`]'s, up to the `/`).
fn host(reply: &[u8]) -> &str {
    parse(reply).0
}

/// A reply of [`Server`]'s to a request of [`rounds`]: the host's name, and the round
/// number it echoes.
fn parse(reply: &[u8]) -> (&str, Option<usize>) {
    let mut parts = reply.splitn(2, |b| *b == b'/');
    let name = parts.next().and_then(|n| std::str::from_utf8(n).ok());
    let round = parts
        .next()
        .and_then(|r| <[u8; 4]>::try_from(r).ok())
        .and_then(|r| usize::try_from(u32::from_be_bytes(r)).ok());
    (name.unwrap_or("?"), round)
}

/// A reply to one request of [`Rounds`]: who sent it, and how long after the request it
/// reached the client's socket (the kernel's receive timestamp, so a client thread the
/// scheduler kept waiting does not make a reply late).
#[derive(Clone, Debug)]
pub struct Reply {
    pub host: String,
    pub after: Duration,
}

/// What [`rounds`] saw: when each round was sent, and per round and source every reply to
/// that round's request, however late.
pub struct Rounds {
    pub sent: Vec<Instant>,
    pub replies: Vec<Vec<Vec<Reply>>>,
}

/// One request per source to `vip` every `period`, `count` rounds, as many clients that
/// each ask once a `period`: a socket per source for the whole run, the requests of a round
/// spread evenly over its first half, each carrying its round's number, which the reply
/// echoes. Runs on a thread of its own inside `client` (join it for the result), so the
/// caller can change the LAN meanwhile.
pub fn rounds(
    client: &Netns,
    srcs: &[impl Into<IpAddr> + Copy],
    vip: impl Into<IpAddr>,
    period: Duration,
    count: usize,
) -> Result<JoinHandle<Result<Rounds>>> {
    use nix::{
        poll::{PollFd, PollFlags, PollTimeout, poll},
        sys::socket::{
            ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt,
            sockopt::ReceiveTimestampns,
        },
    };
    use std::os::fd::{AsFd, AsRawFd};
    let file = File::open(format!("/var/run/netns/{}", client.name()))?;
    let srcs: Vec<IpAddr> = srcs.iter().map(|s| (*s).into()).collect();
    let to = SocketAddr::from((vip.into(), PORT));
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || -> Result<Rounds> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        let socks = srcs
            .iter()
            .map(|s| {
                let sock = UdpSocket::bind((*s, 0))?;
                sock.set_nonblocking(true)?;
                setsockopt(&sock, ReceiveTimestampns, &true)?;
                Ok(sock)
            })
            .collect::<Result<Vec<_>>>()?;
        let _ = ready_tx.send(());
        let mut out = Rounds {
            sent: Vec::with_capacity(count),
            replies: vec![vec![Vec::new(); socks.len()]; count],
        };
        // Per round and source, when the request left (CLOCK_REALTIME, as the timestamps).
        let mut sent_at = vec![vec![std::time::SystemTime::UNIX_EPOCH; socks.len()]; count];
        let gap = period / 2 / u32::try_from(socks.len().max(1))?;
        let start = Instant::now();
        let mut next = 0usize;
        let mut buf = [0u8; 64];
        let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
        // Source i of round r is due at r * period + i * gap; the last round's requests
        // have a period to be answered.
        let due = |k: usize| period * (k / socks.len()) as u32 + gap * (k % socks.len()) as u32;
        let end = period * u32::try_from(count + 1)?;
        while start.elapsed() < end {
            while next < count * socks.len() && due(next) <= start.elapsed() {
                let (r, i) = (next / socks.len(), next % socks.len());
                if i == 0 {
                    out.sent.push(Instant::now());
                }
                sent_at[r][i] = std::time::SystemTime::now();
                socks[i].send_to(&u32::try_from(r)?.to_be_bytes(), to)?;
                next += 1;
            }
            let wake = if next < count * socks.len() {
                due(next)
            } else {
                end
            };
            let mut fds: Vec<PollFd> = socks
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            let wait = wake.saturating_sub(start.elapsed());
            poll(
                &mut fds,
                PollTimeout::try_from(wait.as_millis()).unwrap_or(PollTimeout::MAX),
            )?;
            let ready: Vec<usize> = (0..fds.len())
                .filter(|i| fds[*i].any().unwrap_or(false))
                .collect();
            for i in ready {
                loop {
                    let (n, stamp) = {
                        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
                        let Ok(msg) = recvmsg::<SockaddrStorage>(
                            socks[i].as_raw_fd(),
                            &mut iov,
                            Some(&mut cmsg),
                            MsgFlags::MSG_DONTWAIT,
                        ) else {
                            break;
                        };
                        let stamp = msg.cmsgs()?.find_map(|c| match c {
                            ControlMessageOwned::ScmTimestampns(t) => Some(
                                std::time::SystemTime::UNIX_EPOCH
                                    + Duration::new(
                                        u64::try_from(t.tv_sec()).ok()?,
                                        u32::try_from(t.tv_nsec()).ok()?,
                                    ),
                            ),
                            _ => None,
                        });
                        (msg.bytes, stamp)
                    };
                    let (name, round) = parse(&buf[..n]);
                    let Some(r) = round.filter(|r| *r < count) else {
                        continue;
                    };
                    let after = stamp
                        .and_then(|t| t.duration_since(sent_at[r][i]).ok())
                        .unwrap_or(Duration::MAX);
                    out.replies[r][i].push(Reply {
                        host: name.to_owned(),
                        after,
                    });
                }
            }
        }
        Ok(out)
    });
    if ready.recv().is_err() {
        // The thread ended before its sockets were ready: its error says why.
        return match thread.join() {
            Ok(Err(e)) => Err(e),
            _ => Err(anyhow::anyhow!("client thread")),
        };
    }
    Ok(thread)
}

/// Host `h`'s configuration of a balanced group of `n` VHIDs (1..=n) sharing `vips`
/// ("addr/len"): advskew 0 for VHID h+1, 100 + 10 h for the others (backups of one VHID
/// time out 39 ms apart, so two never take it over at once), preempt, the password in
/// `pass`.
pub fn config(h: usize, n: usize, vips: &[&str], pass: &Path) -> String {
    let nodes: Vec<String> = (0..n)
        .map(|v| format!("{}:{}", v + 1, if v == h { 0 } else { 100 + 10 * h }))
        .collect();
    format!(
        "[[balance]]\ninterface = \"eth0\"\ncarpnodes = \"{}\"\nbalancing = \"ip\"\n\
         vips = {vips:?}\npreempt = true\npass_file = \"{}\"\n",
        nodes.join(","),
        pass.display()
    )
}

/// Each agent's share, the mask of its group's VHIDs it is MASTER of (status JSON).
pub fn masks(agents: &[Agent]) -> Vec<Option<u32>> {
    agents
        .iter()
        .map(|a| {
            let status = a.status().ok()?;
            status
                .vhids
                .iter()
                .find_map(|v| v.balance.as_ref())
                .map(|b| b.mask)
        })
        .collect()
}

/// Waits until the agents' masks are `want` (None: that agent's is not looked at); panics
/// with their logs after `timeout`.
pub fn wait_masks(agents: &[Agent], want: &[Option<u32>], timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = masks(agents);
        if now.iter().zip(want).all(|(m, w)| w.is_none() || m == w) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "masks {now:?}, want {want:?}, after {timeout:?}; logs:\n{}",
            agents.iter().map(Agent::log_text).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
