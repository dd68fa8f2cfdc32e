//! Reloads (SIGHUP, `carp-agent reload`): unchanged VHIDs keep running, changed ones change
//! in place where they can (FreeBSD's `ifconfig em0 vhid 1 advskew 10`), the rest stop or
//! start. A reload applies whole or not at all: every step that can fail (netlink, sockets,
//! programs, the new settings against the interface's addresses) is done for every change
//! before the first is applied, and what those steps hold is given back when one fails.

use super::{Agent, Ready, Staged};
use crate::{
    config::{Config, Plan},
    election::State,
    iface::{ipv6_forwarding, monotonic_ns},
    preflight::{Options, preflight, vhids},
    send::Memberships,
    vhid::Vhid,
};
use anyhow::{Context as _, Result, anyhow, bail};

/// A running VHID's new settings, ready to apply: they hold for its interface's addresses
/// and its multicast memberships are joined.
struct Update {
    vhid: Vhid,
    memberships: Memberships,
}

impl Agent {
    /// SIGHUP / `reload`: VHIDs keep their state (and mastership) when their settings did
    /// not change or changed in place (see `Vhid::takes`); removed ones stop (a master
    /// bows out), new ones and ones moved to another interface, number or protocol start.
    /// An error means nothing changed.
    pub(super) async fn reload(&mut self) -> Result<()> {
        let Some(path) = self.options.path.clone() else {
            bail!("started from the command line: there is no file to reload");
        };
        let config = Config::load(&path).map_err(|e| anyhow!(e))?;
        let fixed = self.options.config.agent.restart_needed(&config.agent);
        if !fixed.is_empty() {
            bail!(
                "[agent] {} cannot change on reload: restart the agent",
                fixed.join(", ")
            );
        }
        let options = Options {
            config,
            path: Some(path),
        };
        let plans = preflight(&options)
            .await
            .map_err(|m| anyhow!(m.join("; ")))?
            .plans;
        let mut keep = vec![false; self.vhids.len()];
        let mut fresh = Vec::new();
        let mut changed = Vec::new();
        for plan in plans {
            let same = self.vhids.iter().position(|r| r.vhid.plan == plan);
            let takes = self.vhids.iter().position(|r| r.vhid.takes(&plan));
            match (same, takes) {
                (Some(i), _) => keep[i] = true,
                (None, Some(i)) if !keep[i] => {
                    keep[i] = true;
                    changed.push((i, plan));
                }
                _ => fresh.push(plan),
            }
        }
        // What can fail, for every change; nothing is applied yet.
        let mut updates = Vec::new();
        for (i, plan) in changed {
            let at = format!("vhid {} on {}", plan.vhid, plan.interface);
            updates.push((i, self.prepare_update(plan).await.context(at)?));
        }
        let mut staged = Staged::default();
        let mut starts: Vec<Ready> = Vec::new();
        let mut waits = Vec::new();
        for plan in fresh {
            let at = format!("vhid {} on {}", plan.vhid, plan.interface);
            match self.prepare_start(&plan, &mut staged).await.context(at)? {
                Ok(ready) => starts.push(ready),
                Err(why) => waits.push((plan, why)),
            }
        }
        // Applied: nothing from here on fails.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        if options.config.agent.demotion != self.options.config.agent.demotion {
            tracing::warn!(
                "[agent] demotion is the value at start; the demotion now stays {} \
                 (change it with `carp-agent demote`)",
                self.demotion.global()
            );
        }
        // Removed VHIDs go first: a VIP or VHID number one of them had is free for the
        // VHIDs changed or started after.
        for i in (0..self.vhids.len()).rev() {
            if !keep[i] {
                self.stop_vhid(i).await;
                let plan = &self.vhids.remove(i).vhid.plan;
                tracing::info!("vhid {} on {} removed", plan.vhid, plan.interface);
            }
        }
        for (i, update) in updates {
            let now = keep[..i].iter().filter(|k| **k).count();
            self.update(now, update).await;
        }
        let unchanged = self.vhids.len();
        self.options.config = options.config;
        // Waiting VHIDs are among the fresh ones: they start, or wait again, as new.
        self.absent.clear();
        self.adopt(staged);
        for ready in starts {
            self.launch(ready).await;
        }
        for (plan, why) in waits {
            self.wait(plan, why, None);
        }
        self.drive(super::Work::Demotion).await;
        self.detach_unused();
        self.sync_checks().await;
        tracing::info!(
            "configuration reloaded: {} kept (changed ones in place), {} started",
            vhids(unchanged),
            self.vhids.len() - unchanged
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        Ok(())
    }

    /// What can fail of changing a VHID to `plan` in place: the interface and its
    /// addresses, the memberships, the new settings.
    async fn prepare_update(&self, plan: Plan) -> Result<Update> {
        let link = self.nl.link(&plan.interface).await?;
        let addrs = self.nl.addresses(link.index).await?;
        let memberships = Memberships::join(link.index, &plan)
            .with_context(|| format!("joining multicast groups on {}", plan.interface))?;
        let vhid = Vhid::new(
            plan,
            &link,
            &addrs,
            self.options.config.agent.vips_on,
            ipv6_forwarding(&link.name),
        )?;
        Ok(Update { vhid, memberships })
    }

    /// Applies an update to VHID `i` in place: a master keeps answering, gives up the
    /// VIPs it lost and announces the ones it gained.
    async fn update(&mut self, i: usize, update: Update) {
        let r = &mut self.vhids[i];
        let (old_vips, old_routed) = (r.vhid.plan.vips.clone(), r.vhid.routed().to_vec());
        let what = r.vhid.reconfigure(update.vhid, monotonic_ns());
        r._memberships = update.memberships;
        let v = &r.vhid;
        let gone: Vec<_> = old_vips
            .into_iter()
            .filter(|x| !v.plan.vips.contains(x))
            .collect();
        let unrouted: Vec<_> = old_routed
            .into_iter()
            .filter(|x| !v.routed().contains(x))
            .collect();
        if let Some(iface) = self.ifaces.get_mut(&v.plan.interface) {
            iface.forget(v.ifindex, &gone);
            iface.register(v);
        }
        if (v.state() == State::MASTER && v.vips_follow_state()) || v.holds_group_vips() {
            self.placement.withdraw(v.ifindex, &gone, &unrouted).await;
            self.placement.add(v).await;
            if let Some(iface) = self.ifaces.get(&v.plan.interface) {
                iface.announce(&v.announcements());
            }
        }
        tracing::info!(
            "vhid {} on {} changed ({what}), {} kept",
            v.plan.vhid,
            v.plan.interface,
            v.state()
        );
    }
}
