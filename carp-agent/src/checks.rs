//! The running `[[check]]`s (keepalived's vrrp_track): each runner reports its runs, the
//! verdicts (health.rs) move the demotion of the host or a group.

use crate::{
    config::Check,
    control::{CheckStatus, Verdict},
    demotion::Demotion,
    health::{self, Health},
};
use tokio::sync::mpsc;

/// A running check.
struct Run {
    spec: Check,
    id: u64,
    health: Health,
    runs: u64,
    failures: u64,
    last_failure: Option<String>,
    _runner: health::Runner,
}

/// Every running check, and where their runners report.
pub struct Checks {
    runs: Vec<Run>,
    tx: mpsc::UnboundedSender<health::Report>,
    /// Id of the next runner started.
    next: u64,
}

impl Checks {
    pub fn new(tx: mpsc::UnboundedSender<health::Report>) -> Self {
        Self {
            runs: Vec::new(),
            tx,
            next: 0,
        }
    }

    /// Runs `specs`: unchanged checks keep their runner and verdict, removed ones stop and
    /// give back their demotion, new ones start (pending until their first run, which
    /// decides alone). Whether the demotion changed.
    pub fn sync<K: Ord + Clone>(&mut self, specs: &[Check], demotion: &mut Demotion<K>) -> bool {
        let mut changed = false;
        let mut kept = Vec::new();
        for c in std::mem::take(&mut self.runs) {
            if specs.contains(&c.spec) {
                kept.push(c);
            } else {
                if c.health.failing() {
                    demotion.adjust_in(c.spec.group.as_deref(), -c.spec.demote);
                    changed = true;
                }
                tracing::info!("check {} removed", c.spec.name);
            }
        }
        for spec in specs {
            if !kept.iter().any(|c| c.spec == *spec) {
                let id = self.next;
                self.next += 1;
                kept.push(Run {
                    health: Health::new(spec.fall, spec.rise),
                    id,
                    runs: 0,
                    failures: 0,
                    last_failure: None,
                    _runner: health::Runner::start(id, spec.clone(), self.tx.clone()),
                    spec: spec.clone(),
                });
            }
        }
        self.runs = kept;
        changed
    }

    /// A run finished: a verdict that turns failing demotes, one that turns healthy again
    /// undoes it. Whether the demotion changed.
    pub fn record<K: Ord + Clone>(
        &mut self,
        report: health::Report,
        demotion: &mut Demotion<K>,
    ) -> bool {
        let Some(c) = self.runs.iter_mut().find(|c| c.id == report.id) else {
            return false; // A runner a reload replaced.
        };
        c.runs += 1;
        if let Err(why) = &report.result {
            c.failures += 1;
            tracing::debug!("check {}: {why}", c.spec.name);
            c.last_failure = Some(why.clone());
        }
        let was_failing = c.health.failing();
        if !c.health.record(report.result.is_ok()) {
            return false;
        }
        let spec = &c.spec;
        let whom = spec
            .group
            .as_deref()
            .map(|g| format!("group {g}"))
            .unwrap_or_else(|| "the host".into());
        match (was_failing, c.health.failing()) {
            (false, true) => {
                tracing::warn!(
                    "check {} failing ({}): demoting {whom} by {}",
                    spec.name,
                    report.result.err().unwrap_or_default(),
                    spec.demote
                );
                demotion.adjust_in(spec.group.as_deref(), spec.demote);
                true
            }
            (true, false) => {
                tracing::info!("check {} healthy again: {whom} promoted back", spec.name);
                demotion.adjust_in(spec.group.as_deref(), -spec.demote);
                true
            }
            _ => {
                tracing::info!("check {} healthy", spec.name);
                false
            }
        }
    }

    pub fn status(&self) -> Vec<CheckStatus> {
        self.runs
            .iter()
            .map(|c| CheckStatus {
                name: c.spec.name.clone(),
                state: match c.health.healthy() {
                    None => Verdict::Pending,
                    Some(true) => Verdict::Healthy,
                    Some(false) => Verdict::Failing,
                },
                demote: c.spec.demote,
                group: c.spec.group.clone(),
                runs: c.runs,
                failures: c.failures,
                last_failure: c.last_failure.clone(),
            })
            .collect()
    }
}
