//! The control socket: one JSON request per connection, one JSON reply. The socket lives
//! in a root-only directory; `carp-agent status`, `set-state`, `demote` and `reload` are
//! its clients.

use crate::{config::Protocol, demotion::Change};
use anyhow::{Context as _, Result, bail};
use carp_common::State;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::Path,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// ifconfig's `vhid N state master|backup`.
    SetState {
        vhid: u8,
        interface: Option<String>,
        state: Forced,
    },
    /// `+N`, `-N` or `=N`, on the global counter or a group.
    Demote {
        change: Change,
        group: Option<String>,
    },
    Reload,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Forced {
    Master,
    Backup,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status>,
}

impl Reply {
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    pub fn err(e: impl ToString) -> Self {
        Self {
            ok: false,
            error: Some(e.to_string()),
            status: None,
        }
    }
}

/// `carp-agent status --json`: the documented schema.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// Global demotion counter.
    pub demotion: i32,
    pub interfaces: Vec<InterfaceStatus>,
    pub vhids: Vec<VhidStatus>,
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
}

/// A `[[check]]` and its verdict.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CheckStatus {
    pub name: String,
    pub state: Verdict,
    pub demote: i32,
    /// The demotion group, if it demotes one group only.
    pub group: Option<String>,
    pub runs: u64,
    pub failures: u64,
    /// Why the last failed run failed.
    pub last_failure: Option<String>,
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No run finished yet.
    #[default]
    Pending,
    Healthy,
    /// The host or group is demoted by `demote`.
    Failing,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pending => "pending",
            Verdict::Healthy => "healthy",
            Verdict::Failing => "failing",
        })
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Attached {
    /// In the driver.
    Native,
    /// Generic XDP, on the skb.
    #[default]
    Skb,
    /// Tc ingress, through tcx: the XDP hook is another program's.
    Tc,
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attached::Native => "native",
            Attached::Skb => "skb",
            Attached::Tc => "tc",
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InterfaceStatus {
    pub name: String,
    pub up: bool,
    pub xdp_mode: Attached,
    /// XDP counters by name (see `XdpStats`).
    pub xdp: BTreeMap<String, u64>,
}

impl InterfaceStatus {
    /// Every XDP counter by name, zero or not (the README promises each is present).
    pub(crate) fn counters(stats: &carp_common::maps::XdpStats) -> BTreeMap<String, u64> {
        stats
            .fields()
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VhidStatus {
    pub interface: String,
    pub vhid: u8,
    pub protocol: Protocol,
    pub state: State,
    pub advbase: u8,
    pub advskew: u8,
    pub priority: u8,
    pub interval_ms: u32,
    /// Demotion applied to this VHID (global plus its groups).
    pub demotion: i32,
    pub preempt: bool,
    pub vips: Vec<String>,
    pub src: String,
    pub seconds_in_state: f64,
    pub last_reason: String,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Verified adverts from an address that is not one of the unicast `peers`: ignored.
    #[serde(default)]
    pub adverts_refused: u64,
    /// How adverts are authenticated: bsd (the default) or strict.
    #[serde(default)]
    pub auth: crate::hmac::AuthMode,
    pub send_errors: u64,
    /// VIPs, and routes to a VIP's own subnet, that something else removed from this
    /// master and the agent put back.
    #[serde(default)]
    pub vips_restored: u64,
    /// Gratuitous ARPs / unsolicited NAs (with an advert) this master sent on hearing a
    /// less preferred master, as a partition heals.
    #[serde(default)]
    pub reannounced: u64,
    /// Of those, ones not sent because one went out less than an advert interval before.
    #[serde(default)]
    pub reannounce_limited: u64,
    /// Left MASTER (`state` says for what) and still answering the VIPs, until the
    /// arriving master is heard or a master-down time passes: a make-before-break
    /// handover (shutdown, `set-state backup`, yielding to a preferred master).
    #[serde(default)]
    pub handing_over: bool,
    /// Why a VHID is in INIT without running: what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// For a VHID of a balanced group, its place and the host's share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<BalanceStatus>,
}

/// A balanced group as one of its VHIDs sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BalanceStatus {
    /// The leader VHID, whose multicast MAC 01:00:5e:00:01:leader is the group's.
    pub leader: u8,
    /// This VHID's bit in `mask` (the group's VHIDs ascending).
    pub index: usize,
    /// How many VHIDs the group has.
    pub count: usize,
    /// The group's VHIDs this host is MASTER of, bit by `index`: its share of the flows
    /// is the number of bits set out of `count`, as written into the CARP_BALANCE map.
    pub mask: u32,
}

/// What a VHID waits for before it can run (keepalived's FAULT): it comes up when netlink
/// reports it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Waiting {
    /// The interface does not exist (yet, or any more).
    #[serde(rename = "no interface")]
    NoInterface,
    /// The interface has no address to send adverts from (yet).
    #[serde(rename = "no address")]
    NoAddress,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiting::NoInterface => "no interface",
            Waiting::NoAddress => "no address",
        })
    }
}

impl Status {
    /// The status in ifconfig's words, one block per VHID.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for v in &self.vhids {
            let timing = if v.protocol == Protocol::CARP {
                format!("advbase {} advskew {}", v.advbase, v.advskew)
            } else {
                format!("vrrp priority {} interval {}ms", v.priority, v.interval_ms)
            };
            out += &format!(
                "{}: carp: {} vhid {} {}{}{}\n",
                v.interface,
                v.state,
                v.vhid,
                timing,
                if v.preempt { " preempt" } else { "" },
                v.waiting
                    .map(|w| format!(" (waiting: {w})"))
                    .unwrap_or_default()
            );
            for vip in &v.vips {
                let family = if vip.contains(':') { "inet6" } else { "inet" };
                out += &format!("\t{family} {vip} vhid {}\n", v.vhid);
            }
            out += &format!(
                "\tsince {:.1}s ({}), {} transitions, adverts sent {} received {}, \
                 demotion {}, send errors {}\n",
                v.seconds_in_state,
                v.last_reason,
                v.transitions,
                v.adverts_sent,
                v.adverts_received,
                v.demotion,
                v.send_errors
            );
            // OpenBSD's ifconfig: "carp: carpdev em0 advbase 1 balancing ip".
            if let Some(b) = &v.balance {
                out += &format!(
                    "\tbalancing ip: leader vhid {}, node {} of {}, share {} of {}\n",
                    b.leader,
                    b.index + 1,
                    b.count,
                    b.mask.count_ones(),
                    b.count
                );
            }
        }
        for i in &self.interfaces {
            let counters: Vec<String> = i
                .xdp
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out += &format!(
                "{}: {} xdp {}: {}\n",
                i.name,
                if i.up { "up" } else { "down" },
                i.xdp_mode,
                if counters.is_empty() {
                    "no traffic".to_owned()
                } else {
                    counters.join(", ")
                }
            );
        }
        for c in &self.checks {
            out += &format!(
                "check {}: {} (demote {}{}), {} runs, {} failed{}\n",
                c.name,
                c.state,
                c.demote,
                c.group
                    .as_deref()
                    .map(|g| format!(" of group {g}"))
                    .unwrap_or_default(),
                c.runs,
                c.failures,
                c.last_failure
                    .as_deref()
                    .map(|f| format!(", last: {f}"))
                    .unwrap_or_default()
            );
        }
        out += &format!("demotion {}\n", self.demotion);
        out
    }
}

/// A request with the channel its reply goes back on.
pub type Incoming = (Request, oneshot::Sender<Reply>);

/// Bounds on a client of the control socket or the metrics server: what one connection
/// may cost before it is dropped. An operator's command is one short line; anything
/// slower or longer is a mistake or an attack, and must not hold the event loop's
/// helpers, file descriptors or memory.
pub mod limits {
    use std::time::Duration;

    /// Connections served at once per server (control socket, metrics) at the most; a
    /// newer one makes the oldest give way, so a flood of idle clients cannot keep the
    /// operator out.
    pub const CONNECTIONS: usize = 32;
    /// Descriptors kept out of the servers' reach: the agent's own (sockets, BPF maps,
    /// netlink, about 30) and those a health check or hook takes to start.
    pub const RESERVED_FDS: u64 = 48;
    /// Longest request line.
    pub const REQUEST_BYTES: u64 = 64 * 1024;
    /// Time a client has to send its request and take the reply.
    pub const IO: Duration = Duration::from_secs(2);
    /// Pause after a failed accept that freeing a connection cannot help, instead of
    /// spinning.
    pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

    /// Connections per server under a descriptor limit of `nofile`: both servers' full
    /// share stays below it with [`RESERVED_FDS`] to spare, so idle clients alone never
    /// make an accept fail (at `ulimit -n 96`, 32 each left 5 descriptors and a status
    /// request waited for an idle client's 2 s to run out).
    pub fn connections(nofile: u64) -> usize {
        let share = nofile.saturating_sub(RESERVED_FDS) / 2;
        usize::try_from(share)
            .unwrap_or(CONNECTIONS)
            .clamp(1, CONNECTIONS)
    }

    /// The soft limit on open descriptors (`ulimit -n`).
    fn nofile() -> u64 {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given, nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            1024
        }
    }

    /// Accepts with `accept` for ever and serves each connection with `serve` for at most
    /// [`IO`], ending the oldest beyond [`connections`]. When descriptors run out anyway
    /// (hooks, checks, the other server), the oldest connection gives way at once rather
    /// than the newest waiting for an idle one's time to run out; with none to end, it
    /// backs off.
    pub async fn serve_each<S, A, F>(
        what: &str,
        mut accept: impl FnMut() -> A,
        serve: impl Fn(S) -> F,
    ) where
        A: Future<Output = std::io::Result<S>>,
        F: Future<Output = ()> + Send + 'static,
    {
        let most = connections(nofile());
        let mut live = std::collections::VecDeque::<tokio::task::AbortHandle>::new();
        loop {
            let stream = match accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    live.retain(|h| !h.is_finished());
                    let exhausted = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    match live.pop_front() {
                        Some(oldest) if exhausted => {
                            oldest.abort();
                            // The aborted task closes its descriptor when next polled.
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        _ => {
                            tracing::warn!("{what}: {e}");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                    }
                    continue;
                }
            };
            live.retain(|h| !h.is_finished());
            while live.len() >= most {
                if let Some(oldest) = live.pop_front() {
                    oldest.abort();
                }
            }
            let task = tokio::spawn(tokio::time::timeout(IO, serve(stream)));
            live.push_back(task.abort_handle());
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn both_servers_leave_descriptors_to_spare() {
            assert_eq!(connections(1024), CONNECTIONS);
            assert_eq!(connections(96), 24);
            assert_eq!(connections(50), 1);
            assert_eq!(connections(0), 1);
            assert_eq!(connections(u64::MAX), CONNECTIONS);
            for nofile in 96..200 {
                assert!(2 * connections(nofile) as u64 + RESERVED_FDS <= nofile);
            }
        }

        /// Descriptors exhausted with three idle clients connected (fewer than the cap):
        /// the oldest is ended at once, not after its 2 s (it used to wait them out).
        #[tokio::test]
        async fn out_of_descriptors_the_oldest_client_gives_way() {
            use std::sync::{
                Arc,
                atomic::{AtomicUsize, Ordering},
            };
            struct Ended(Arc<AtomicUsize>);
            impl Drop for Ended {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let ended = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<u32>>();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let count = ended.clone();
            let server = tokio::spawn(serve_each(
                "test",
                move || {
                    let rx = rx.clone();
                    async move { rx.lock().await.recv().await.expect("the test holds tx") }
                },
                move |_client: u32| {
                    let idle = Ended(count.clone());
                    async move {
                        let _idle = idle;
                        std::future::pending::<()>().await
                    }
                },
            ));
            for client in 0..3 {
                tx.send(Ok(client)).unwrap();
            }
            tx.send(Err(std::io::Error::from_raw_os_error(libc::EMFILE)))
                .unwrap();
            tx.send(Ok(3)).unwrap();
            // Well inside the idle clients' 2 s.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(ended.load(Ordering::SeqCst), 1);
            server.abort();
        }

        /// README (Control): "serve 32 clients at a time each (a newer one makes the oldest
        /// give way) ... give each 2 s", the cap told apart from the time limit on tokio's
        /// paused clock: the 33rd idle client ends the oldest at once, and the others last
        /// until their 2 s are up.
        #[tokio::test(start_paused = true)]
        async fn the_33rd_client_ends_the_oldest_at_once_and_the_others_last_2_s() {
            use std::sync::{Arc, Mutex};
            use tokio::time::Instant;
            assert_eq!(connections(nofile()), CONNECTIONS, "ulimit -n too low");
            let start = Instant::now();
            // Which clients ended, when.
            let ended = Arc::new(Mutex::new(Vec::<(usize, Duration)>::new()));
            struct Idle(usize, Arc<Mutex<Vec<(usize, Duration)>>>, Instant);
            impl Drop for Idle {
                fn drop(&mut self) {
                    self.1.lock().unwrap().push((self.0, self.2.elapsed()));
                }
            }
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<usize>>();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let log = ended.clone();
            let server = tokio::spawn(serve_each(
                "test",
                move || {
                    let rx = rx.clone();
                    async move { rx.lock().await.recv().await.expect("the test holds tx") }
                },
                move |client: usize| {
                    let idle = Idle(client, log.clone(), start);
                    async move {
                        let _idle = idle;
                        std::future::pending::<()>().await
                    }
                },
            ));
            let ended = || ended.lock().unwrap().clone();
            for client in 0..CONNECTIONS {
                tx.send(Ok(client)).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(ended(), [], "{CONNECTIONS} fit");
            tx.send(Ok(CONNECTIONS)).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let first = ended();
            assert_eq!(first.len(), 1, "{first:?}");
            assert_eq!(first[0].0, 0, "the oldest gives way");
            tokio::time::sleep_until(start + IO - Duration::from_millis(100)).await;
            assert_eq!(ended(), first, "idle clients keep their 2 s");
            tokio::time::sleep_until(start + IO + Duration::from_millis(100)).await;
            let all = ended();
            assert_eq!(all.len(), CONNECTIONS + 1);
            assert!(all[1..].iter().all(|(_, when)| *when >= IO), "{all:?}");
            server.abort();
        }
    }
}

/// Binds the socket, in a directory of its own. Fails clearly when another agent answers
/// on it; replaces a stale socket (a killed agent's) and nothing else.
pub async fn listen(path: &Path) -> Result<UnixListener> {
    if UnixStream::connect(path).await.is_ok() {
        bail!(
            "another carp-agent is already running (it answers on {}); one agent serves all \
             interfaces and VHIDs: add them to its configuration instead",
            path.display()
        );
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => bail!(
            "{} exists and is not a socket: choose another control socket path",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        // Only a directory made here is made root-only; an existing one (/tmp, /run) keeps
        // its mode, and the socket's own 0600 guards it.
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections forever, at most [`limits::CONNECTIONS`] at a time, forwarding
/// requests to the event loop.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    let listener = &listener;
    limits::serve_each(
        "control socket",
        || async move { listener.accept().await.map(|(s, _)| s) },
        |stream| answer(stream, tx.clone()),
    )
    .await;
}

/// Reads one request line of at most [`limits::REQUEST_BYTES`] and writes the reply.
async fn answer(stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(limits::REQUEST_BYTES));
    let reply = match reader.read_line(&mut line).await {
        Err(e) => Reply::err(format!("bad request: {e}")),
        Ok(_) if !line.ends_with('\n') => Reply::err(format!(
            "bad request: not one line of at most {} bytes",
            limits::REQUEST_BYTES
        )),
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Reply::err(format!("bad request: {e}")),
            Ok(req) => {
                let (rtx, rrx) = oneshot::channel();
                if tx.send((req, rtx)).await.is_err() {
                    return;
                }
                rrx.await
                    .unwrap_or_else(|_| Reply::err("the agent is stopping"))
            }
        },
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let bytes = text.len();
    drop((text, reply));
    crate::memory::after_answer(bytes);
}

/// Sends one request to a running agent; `command` is what the operator ran, for the
/// advice when they may not use the socket.
pub async fn request(path: &Path, req: &Request, command: &str) -> Result<Reply> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| anyhow::anyhow!(unreachable(path, &e, command)))?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(req)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line).context("unreadable reply from the agent")
}

/// Why a client cannot reach the agent on `path`, in words that say what to do: the socket
/// is root's ([`listen`] makes it 0600), there is none, or no agent is behind it.
fn unreachable(path: &Path, e: &std::io::Error, command: &str) -> String {
    let at = path.display();
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "{at} is root's (mode 0600): run `sudo {command}`, or read the agent's \
             Prometheus metrics where [agent] metrics serves them"
        ),
        std::io::ErrorKind::NotFound => format!(
            "no carp-agent is running with the control socket {at} (start it: `systemctl \
             start carp-agent`; an agent of another file is found with -c FILE or --socket)"
        ),
        std::io::ErrorKind::ConnectionRefused => format!(
            "no carp-agent is running on {at}: the socket was left by one that was killed \
             (start it: `systemctl start carp-agent`; it replaces the socket)"
        ),
        _ => format!("no carp-agent answers on {at}: {e}"),
    }
}

/// A file's inode: tells our control socket from one a successor bound.
pub fn inode(path: &Path) -> Option<u64> {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).ok()?).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        for r in [
            Request::Status,
            Request::SetState {
                vhid: 1,
                interface: None,
                state: Forced::Backup,
            },
            Request::Demote {
                change: Change::Add(20),
                group: Some("db".into()),
            },
            Request::Reload,
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        }
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
    }

    #[test]
    fn status_reads_like_ifconfig() {
        let s = Status {
            demotion: 0,
            interfaces: vec![],
            vhids: vec![
                VhidStatus {
                    interface: "em0".into(),
                    vhid: 1,
                    protocol: Protocol::CARP,
                    state: State::MASTER,
                    advbase: 1,
                    advskew: 0,
                    vips: vec!["192.0.2.50/24".into()],
                    balance: Some(BalanceStatus {
                        leader: 1,
                        index: 0,
                        count: 3,
                        mask: 0b101,
                    }),
                    ..VhidStatus::default()
                },
                VhidStatus {
                    interface: "vlan7".into(),
                    vhid: 2,
                    advbase: 1,
                    waiting: Some(Waiting::NoInterface),
                    ..VhidStatus::default()
                },
            ],
            checks: vec![
                CheckStatus {
                    name: "nginx".into(),
                    state: Verdict::Failing,
                    demote: 240,
                    group: Some("web".into()),
                    runs: 9,
                    failures: 2,
                    last_failure: Some("exit status: 3".into()),
                },
                CheckStatus {
                    name: "web".into(),
                    state: Verdict::Healthy,
                    demote: 240,
                    group: Some("web".into()),
                    runs: 41,
                    ..CheckStatus::default()
                },
                CheckStatus {
                    name: "disk".into(),
                    demote: 50,
                    ..CheckStatus::default()
                },
            ],
        };
        let text = s.text();
        assert!(
            text.starts_with("em0: carp: MASTER vhid 1 advbase 1 advskew 0\n"),
            "{text}"
        );
        assert!(text.contains("\tinet 192.0.2.50/24 vhid 1\n"));
        assert!(
            text.contains("\tbalancing ip: leader vhid 1, node 1 of 3, share 2 of 3\n"),
            "{text}"
        );
        assert!(
            text.contains("vlan7: carp: INIT vhid 2 advbase 1 advskew 0 (waiting: no interface)\n"),
            "{text}"
        );
        // The JSON names the reason in the status's words; a running VHID has none.
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""waiting":"no interface""#), "{json}");
        assert_eq!(json.matches("waiting").count(), 1, "{json}");
        assert!(
            json.contains(r#""balance":{"leader":1,"index":0,"count":3,"mask":5}"#),
            "{json}"
        );
        assert_eq!(
            json.matches("balance").count(),
            1,
            "only a balanced VHID has one"
        );
        assert!(
            text.contains(
                "check nginx: failing (demote 240 of group web), 9 runs, 2 failed, \
                 last: exit status: 3\n"
            ),
            "{text}"
        );
        // The README's example line, and a check without a group (the host's demotion).
        assert!(
            text.contains("check web: healthy (demote 240 of group web), 41 runs, 0 failed\n"),
            "{text}"
        );
        assert!(
            text.contains("check disk: pending (demote 50), 0 runs, 0 failed\n"),
            "{text}"
        );
    }

    /// Each reason a client cannot connect has its own sentence: a socket that is root's
    /// says how to ask as root, a missing one that no agent runs, a stale one that the
    /// agent was killed.
    #[tokio::test]
    async fn a_client_that_cannot_connect_is_told_why() {
        let dir = std::env::temp_dir().join(format!("carp-ctl-why-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let err = |e: anyhow::Error| e.to_string();
        let missing = err(request(&path, &Request::Status, "carp-agent status")
            .await
            .unwrap_err());
        assert!(
            missing.contains("no carp-agent is running with the control socket"),
            "{missing}"
        );
        // A socket with no agent behind it, as a SIGKILLed agent leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let stale = err(request(&path, &Request::Status, "carp-agent status")
            .await
            .unwrap_err());
        assert!(stale.contains("left by one that was killed"), "{stale}");
        std::fs::remove_dir_all(&dir).unwrap();
        // Root opens any socket: the namespace test `status_as_a_user_says_the_socket_is_roots`
        // connects as nobody.
        let denied = unreachable(
            &path,
            &std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            "carp-agent status --json",
        );
        assert!(
            denied.contains("is root's (mode 0600): run `sudo carp-agent status --json`"),
            "{denied}"
        );
    }

    /// README (Status): "every XDP counter is present, zero or not; the text status lists
    /// the non-zero ones ("no traffic" when none)".
    #[test]
    fn every_xdp_counter_is_in_the_json_and_the_text_lists_those_not_zero() {
        use carp_common::maps::XdpStats;
        let quiet = XdpStats::default();
        let busy = XdpStats {
            adverts: 3,
            bad_hmac: 1,
            ..quiet
        };
        let iface = |name: &str, xdp_mode, stats: &XdpStats| InterfaceStatus {
            name: name.into(),
            up: true,
            xdp_mode,
            xdp: InterfaceStatus::counters(stats),
        };
        let s = Status {
            interfaces: vec![
                iface("eth0", Attached::Skb, &quiet),
                iface("eth1", Attached::Tc, &busy),
            ],
            ..Status::default()
        };
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        let keys: Vec<&str> = json["interfaces"][0]["xdp"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names: Vec<&str> = quiet.fields().iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        assert_eq!(keys, names);
        assert_eq!(
            s.text(),
            "eth0: up xdp skb: no traffic\neth1: up xdp tc: adverts 3, bad_hmac 1\ndemotion 0\n"
        );
    }

    #[tokio::test]
    async fn a_second_agent_is_refused() {
        let dir = std::env::temp_dir().join(format!("carp-ctl-{}", std::process::id()));
        let path = dir.join("agent.sock");
        let first = listen(&path).await.unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(serve(first, tx));
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Reply::ok());
            }
        });
        let err = listen(&path).await.unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        assert!(request(&path, &Request::Status, "").await.unwrap().ok);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
