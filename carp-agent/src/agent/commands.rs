//! The operator's requests on the control socket (`carp-agent status`, `set-state`,
//! `demote`, `reload`), as ifconfig's carp_ioctl and the demotion sysctl take them.

use super::{Agent, Work};
use crate::{
    control::{Forced, Reply, Request, Status},
    election::{Event, State},
    iface::Iface,
    vhid::{balance_entry, waiting_status},
};
use anyhow::{Result, bail};

impl Agent {
    fn find(&self, vhid: u8, interface: Option<&str>) -> Result<Vec<usize>> {
        let found: Vec<usize> = (0..self.vhids.len())
            .filter(|&i| {
                let plan = &self.vhids[i].vhid.plan;
                plan.vhid == vhid && interface.is_none_or(|n| n == plan.interface)
            })
            .collect();
        if found.is_empty() {
            if let Some(a) = self
                .absent
                .iter()
                .find(|a| a.plan.vhid == vhid && interface.is_none_or(|n| n == a.plan.interface))
            {
                bail!(
                    "vhid {vhid} on {} waits in INIT ({}): there is nothing to set yet",
                    a.plan.interface,
                    a.why
                );
            }
            bail!(
                "no vhid {vhid} is configured{}",
                interface.map(|i| format!(" on {i}")).unwrap_or_default()
            );
        }
        Ok(found)
    }

    pub(super) async fn on_control(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply {
                ok: true,
                error: None,
                status: Some(self.status()),
            },
            Request::SetState {
                vhid,
                interface,
                state,
            } => match self.find(vhid, interface.as_deref()) {
                Err(e) => Reply::err(e),
                Ok(found) => {
                    let target = match state {
                        Forced::Master => State::MASTER,
                        Forced::Backup => State::BACKUP,
                    };
                    for i in found {
                        self.feed(i, Event::Force(target)).await;
                    }
                    Reply::ok()
                }
            },
            Request::Demote { change, group } => {
                let now = self.demotion.operate(change, group.as_deref());
                tracing::info!(
                    "demotion {}now {now} by operator",
                    group
                        .as_deref()
                        .map(|g| format!("of group {g} "))
                        .unwrap_or_default()
                );
                self.drive(Work::Demotion).await;
                Reply::ok()
            }
            Request::Reload if self.stopping => Reply::err("the agent is stopping"),
            Request::Reload => match self.reload().await {
                Ok(()) => Reply::ok(),
                Err(e) => Reply::err(format!("{e:#}")),
            },
        }
    }

    pub(super) fn status(&self) -> Status {
        Status {
            demotion: self.demotion.global(),
            interfaces: self.ifaces.values().map(Iface::status).collect(),
            vhids: (0..self.vhids.len())
                .map(|i| {
                    let v = &self.vhids[i].vhid;
                    let mut status = v.status(self.effective_demotion(i));
                    if let (Some(b), Some(group)) = (&mut status.balance, &v.plan.balance) {
                        let members = self.vhids.iter().map(|r| &r.vhid);
                        let members = members.filter(|m| m.in_group(&v.plan.interface, b.leader));
                        b.mask = balance_entry(group, members, [0; 6], 0).mask;
                    }
                    status
                })
                .chain(self.absent.iter().map(|a| {
                    let groups = a.plan.groups.iter().map(String::as_str);
                    waiting_status(
                        &a.plan,
                        a.why,
                        a.since.elapsed(),
                        self.demotion.effective(groups),
                    )
                }))
                .collect(),
            checks: self.checks.status(),
        }
    }
}
