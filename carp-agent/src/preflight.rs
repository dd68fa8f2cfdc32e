//! What `carp-agent check` and every start and reload check before anything is applied:
//! the configuration, then the system (interfaces, addresses). One line per mistake.

use crate::{addrs, config::Config, config::Plan, netlink::Netlink};
use std::path::PathBuf;

/// How the agent was started, for reloads.
pub struct Options {
    pub config: Config,
    /// The file to re-read on SIGHUP / `reload`; none for the ucarp-style command line.
    pub path: Option<PathBuf>,
}

/// "1 VHID", "2 VHIDs": for the log and `check`.
pub fn vhids(n: usize) -> String {
    format!("{n} VHID{}", if n == 1 { "" } else { "s" })
}

/// Validates the configuration against the system; errors here exit with code 2.
pub async fn preflight(options: &Options) -> Result<Vec<Plan>, Vec<String>> {
    let base = options
        .path
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_default();
    let plans = options
        .config
        .validate(&base)
        .map_err(|m| m.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let nl = Netlink::new().map_err(|e| vec![format!("{e:#}")])?;
    let mistakes = check_system(&nl, &plans).await;
    if mistakes.is_empty() {
        Ok(plans)
    } else {
        Err(mistakes)
    }
}

/// Checks what needs the system: interfaces exist, VIPs are not host addresses, a source
/// address exists. A VIP outside the interface's subnets is fine (carp.sh basic_v4: the
/// master routes the VIP's subnet over the interface).
async fn check_system(nl: &Netlink, plans: &[Plan]) -> Vec<String> {
    let mut mistakes = Vec::new();
    let lo = match nl.link("lo").await {
        Ok(lo) => nl.addresses(lo.index).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    for p in plans {
        let at = format!("vhid {} on {}", p.vhid, p.interface);
        let link = match nl.link(&p.interface).await {
            Ok(l) => l,
            Err(e) => {
                mistakes.push(format!("{at}: {e:#}"));
                continue;
            }
        };
        let addrs = nl.addresses(link.index).await.unwrap_or_default();
        for (vip, _) in &p.vips {
            // The agent adds and removes its VIPs: one that is already a host address would
            // be taken from the host when this VHID is not master.
            if addrs.iter().chain(&lo).any(|a| a.addr == *vip && !a.vip) {
                mistakes.push(format!(
                    "{at}: VIP {vip} is already an address of this host; a VIP must be an address \
                     only the master holds"
                ));
            }
        }
        if addrs::advert_sources(p, &addrs).is_none() {
            mistakes.push(format!(
                "{at}: {} has no address to send adverts from (to the peers' family and scope)",
                p.interface
            ));
        }
    }
    mistakes
}
