//! Prometheus metrics (`--metrics 127.0.0.1:9720`): the status, as the text exposition
//! format that prometheus-client writes, served on GET /metrics.

use crate::control::{Status, Verdict, limits};
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

/// A scrape waiting for the event loop to render the metrics.
pub type Scrape = oneshot::Sender<String>;

/// Serves GET /metrics on `addr` with hyper, asking the event loop for the text each
/// time; bounded as the control socket is ([`limits`]): a flood of idle or slow clients
/// costs a fixed number of descriptors and is dropped after [`limits::IO`].
pub async fn serve(addr: SocketAddr, tx: mpsc::Sender<Scrape>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        let listener = &listener;
        limits::serve_each(
            "metrics",
            || async move { listener.accept().await.map(|(s, _)| s) },
            |stream| {
                let tx = tx.clone();
                async move {
                    let service = service_fn(move |req| respond(req, tx.clone()));
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits::IO)
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = conn.await;
                }
            },
        )
        .await;
    });
    Ok(())
}

/// The metrics for GET /metrics, 404 for anything else.
async fn respond(
    req: Request<Incoming>,
    tx: mpsc::Sender<Scrape>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        let mut r = Response::new(Full::from("only GET /metrics is served here\n"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    }
    let (rtx, rrx) = oneshot::channel();
    let body = match tx.send(rtx).await {
        Ok(()) => rrx.await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut r = Response::new(Full::from(body));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    Ok(r)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VhidLabels {
    interface: String,
    vhid: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    interface: String,
    vhid: u8,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct XdpLabels {
    interface: String,
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    outcome: String,
}

/// Renders `status` (plus transition and hook counts) in the Prometheus text format.
pub fn render(
    status: &Status,
    transitions: &BTreeMap<(String, u8, String), u64>,
    hooks: &BTreeMap<String, u64>,
) -> String {
    let mut registry = Registry::with_prefix("carp");
    let state = Family::<VhidLabels, Gauge>::default();
    let demotion = Family::<VhidLabels, Gauge>::default();
    let sent = Family::<VhidLabels, Counter>::default();
    let received = Family::<VhidLabels, Counter>::default();
    let restored = Family::<VhidLabels, Counter>::default();
    let reannounced = Family::<VhidLabels, Counter>::default();
    let limited = Family::<VhidLabels, Counter>::default();
    let trans = Family::<ReasonLabels, Counter>::default();
    let xdp = Family::<XdpLabels, Counter>::default();
    let hook = Family::<HookLabels, Counter>::default();
    let waiting = Family::<ReasonLabels, Gauge>::default();
    let share = Family::<VhidLabels, Gauge>::default();
    for v in &status.vhids {
        let l = VhidLabels {
            interface: v.interface.clone(),
            vhid: v.vhid,
        };
        let code = i64::from(v.state as u8);
        state.get_or_create(&l).set(code);
        demotion.get_or_create(&l).set(i64::from(v.demotion));
        sent.get_or_create(&l).inc_by(v.adverts_sent);
        received.get_or_create(&l).inc_by(v.adverts_received);
        restored.get_or_create(&l).inc_by(v.vips_restored);
        reannounced.get_or_create(&l).inc_by(v.reannounced);
        limited.get_or_create(&l).inc_by(v.reannounce_limited);
        // A balanced group's share, once, under its leader.
        if let Some(b) = v.balance.as_ref().filter(|b| b.index == 0) {
            share
                .get_or_create(&VhidLabels {
                    interface: v.interface.clone(),
                    vhid: b.leader,
                })
                .set(i64::from(b.mask.count_ones()));
        }
        if let Some(why) = v.waiting {
            waiting
                .get_or_create(&ReasonLabels {
                    interface: v.interface.clone(),
                    vhid: v.vhid,
                    reason: why.to_string(),
                })
                .set(1);
        }
    }
    for ((interface, vhid, reason), n) in transitions {
        trans
            .get_or_create(&ReasonLabels {
                interface: interface.clone(),
                vhid: *vhid,
                reason: reason.clone(),
            })
            .inc_by(*n);
    }
    for i in &status.interfaces {
        for (name, n) in &i.xdp {
            xdp.get_or_create(&XdpLabels {
                interface: i.name.clone(),
                counter: name.clone(),
            })
            .inc_by(*n);
        }
    }
    for (outcome, n) in hooks {
        hook.get_or_create(&HookLabels {
            outcome: outcome.clone(),
        })
        .inc_by(*n);
    }
    registry.register(
        "vhid_state",
        "VHID state: 0 INIT, 1 BACKUP, 2 MASTER",
        state,
    );
    registry.register("vhid_demotion", "Demotion applied to the VHID", demotion);
    registry.register(
        "vhid_waiting",
        "1 while the VHID waits in INIT for what reason names (no interface, no address)",
        waiting,
    );
    registry.register(
        "balance_share",
        "VHIDs of the balanced group (labelled with its leader) this host is MASTER of",
        share,
    );
    registry.register("adverts_sent", "Adverts sent", sent);
    registry.register("adverts_received", "Valid adverts received", received);
    registry.register(
        "vips_restored",
        "VIPs and VIP subnet routes something else removed from a master, put back",
        restored,
    );
    registry.register(
        "reannounced",
        "Gratuitous ARP/NA sent again by a master that heard another master",
        reannounced,
    );
    registry.register(
        "reannounce_limited",
        "Re-announcements held back: one went out less than an advert interval before",
        limited,
    );
    registry.register("transitions", "State changes by reason", trans);
    registry.register(
        "xdp_packets",
        "XDP program counters (drops by reason, replies)",
        xdp,
    );
    registry.register("hook_runs", "Hook runs by outcome", hook);
    let healthy = Family::<CheckLabels, Gauge>::default();
    let check_runs = Family::<CheckLabels, Counter>::default();
    let check_failures = Family::<CheckLabels, Counter>::default();
    for c in &status.checks {
        let l = CheckLabels {
            check: c.name.clone(),
        };
        let code = match c.state {
            Verdict::Healthy => 1,
            Verdict::Failing => 0,
            Verdict::Pending => -1,
        };
        healthy.get_or_create(&l).set(code);
        check_runs.get_or_create(&l).inc_by(c.runs);
        check_failures.get_or_create(&l).inc_by(c.failures);
    }
    registry.register(
        "check_healthy",
        "Health check verdict: 1 healthy, 0 failing (demoting), -1 pending",
        healthy,
    );
    registry.register("check_runs", "Health check runs", check_runs);
    registry.register("check_failures", "Failed health check runs", check_failures);
    let global = Gauge::<i64>::default();
    global.set(i64::from(status.demotion));
    registry.register("demotion", "Global demotion counter", global);
    let mut out = String::new();
    encode(&mut out, &registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Attached, CheckStatus, InterfaceStatus, VhidStatus};

    #[test]
    fn renders_every_family() {
        let status = Status {
            demotion: 240,
            interfaces: vec![InterfaceStatus {
                name: "eth0".into(),
                up: true,
                xdp_mode: Attached::Skb,
                xdp: [("bad_hmac".to_string(), 7)].into_iter().collect(),
            }],
            vhids: vec![
                VhidStatus {
                    interface: "eth0".into(),
                    vhid: 1,
                    state: carp_common::State::MASTER,
                    demotion: 480,
                    adverts_sent: 3,
                    adverts_received: 9,
                    vips_restored: 2,
                    reannounced: 1,
                    ..VhidStatus::default()
                },
                VhidStatus {
                    interface: "eth0".into(),
                    vhid: 4,
                    balance: Some(crate::control::BalanceStatus {
                        leader: 4,
                        index: 0,
                        count: 3,
                        mask: 0b101,
                    }),
                    ..VhidStatus::default()
                },
                VhidStatus {
                    interface: "eth1".into(),
                    vhid: 2,
                    waiting: Some(crate::control::Waiting::NoInterface),
                    ..VhidStatus::default()
                },
            ],
            checks: vec![
                CheckStatus {
                    name: "nginx".into(),
                    state: Verdict::Failing,
                    runs: 5,
                    failures: 2,
                    ..CheckStatus::default()
                },
                CheckStatus {
                    name: "db".into(),
                    state: Verdict::Healthy,
                    runs: 4,
                    ..CheckStatus::default()
                },
                CheckStatus {
                    name: "slow".into(),
                    state: Verdict::Pending,
                    ..CheckStatus::default()
                },
            ],
        };
        let transitions = [(("eth0".to_string(), 1, "master timed out".to_string()), 1)].into();
        let hooks = [("ok".to_string(), 2), ("timedout".to_string(), 1)].into();
        let text = render(&status, &transitions, &hooks);
        for line in [
            "carp_vhid_state{interface=\"eth0\",vhid=\"1\"} 2",
            "carp_vhid_state{interface=\"eth1\",vhid=\"2\"} 0",
            "carp_vhid_demotion{interface=\"eth0\",vhid=\"1\"} 480",
            "carp_adverts_received_total{interface=\"eth0\",vhid=\"1\"} 9",
            "carp_vhid_waiting{interface=\"eth1\",vhid=\"2\",reason=\"no interface\"} 1",
            "carp_adverts_sent_total{interface=\"eth0\",vhid=\"1\"} 3",
            "carp_vips_restored_total{interface=\"eth0\",vhid=\"1\"} 2",
            "carp_reannounced_total{interface=\"eth0\",vhid=\"1\"} 1",
            "carp_reannounce_limited_total{interface=\"eth0\",vhid=\"1\"} 0",
            "carp_transitions_total{interface=\"eth0\",vhid=\"1\",reason=\"master timed out\"} 1",
            "carp_xdp_packets_total{interface=\"eth0\",counter=\"bad_hmac\"} 7",
            "carp_hook_runs_total{outcome=\"ok\"} 2",
            "carp_hook_runs_total{outcome=\"timedout\"} 1",
            "carp_demotion 240",
            "carp_balance_share{interface=\"eth0\",vhid=\"4\"} 2",
            "carp_check_healthy{check=\"nginx\"} 0",
            "carp_check_runs_total{check=\"nginx\"} 5",
            "carp_check_failures_total{check=\"nginx\"} 2",
            "carp_check_healthy{check=\"db\"} 1",
            "carp_check_runs_total{check=\"db\"} 4",
            "carp_check_healthy{check=\"slow\"} -1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
