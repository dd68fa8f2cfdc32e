//! Reloads (SIGHUP, `carp-agent reload`): unchanged VHIDs keep running, changed ones change
//! in place where they can (FreeBSD's `ifconfig em0 vhid 1 advskew 10`), the rest stop or
//! start.

use super::Agent;
use crate::{
    config::{Config, Plan},
    election::State,
    iface::{ipv6_forwarding, monotonic_ns},
    preflight::{Options, preflight, vhids},
    send::Memberships,
};
use anyhow::{Result, anyhow, bail};

impl Agent {
    /// SIGHUP / `reload`: VHIDs keep their state (and mastership) when their settings did
    /// not change or changed in place (see `Vhid::takes`); removed ones stop (a master
    /// bows out), new ones and ones moved to another interface, number or protocol start.
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
        if config.agent.demotion != self.options.config.agent.demotion {
            tracing::warn!(
                "[agent] demotion is the value at start; the demotion now stays {} \
                 (change it with `carp-agent demote`)",
                self.demotion.global()
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
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
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
        for (i, plan) in changed {
            self.update(i, plan).await?;
        }
        for i in (0..self.vhids.len()).rev() {
            if !keep[i] {
                self.stop_vhid(i).await;
                let plan = &self.vhids.remove(i).vhid.plan;
                tracing::info!("vhid {} on {} removed", plan.vhid, plan.interface);
            }
        }
        let unchanged = self.vhids.len();
        self.options.config = options.config;
        // Waiting VHIDs are among the fresh ones: they start, or wait again, as new.
        self.absent.clear();
        self.add_vhids(fresh).await?;
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

    /// Applies a changed plan to VHID `i` in place: a master keeps answering, gives up
    /// the VIPs it lost and announces the ones it gained.
    async fn update(&mut self, i: usize, plan: Plan) -> Result<()> {
        let link = self.nl.link(&plan.interface).await?;
        let addrs = self.nl.addresses(link.index).await?;
        let memberships = Memberships::join(link.index, &plan)?;
        let vips_on = self.options.config.agent.vips_on;
        let r = &mut self.vhids[i];
        let (old_vips, old_routed) = (r.vhid.plan.vips.clone(), r.vhid.routed().to_vec());
        let what = r.vhid.reconfigure(
            plan,
            &link,
            &addrs,
            vips_on,
            ipv6_forwarding(&link.name),
            monotonic_ns(),
        )?;
        r._memberships = memberships;
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
            iface.register(v)?;
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
        Ok(())
    }
}
