//! What `carp-agent check` and every start and reload check before anything is applied:
//! the configuration, then the system (interfaces, addresses). One line per mistake; an
//! interface or address that is not there yet is no mistake (the VHID waits for it), but
//! a line `check` warns with.

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

/// A configuration that passed: the VHIDs, and what some of them wait for.
pub struct Checked {
    pub plans: Vec<Plan>,
    /// One line per VHID whose interface or address is not there yet.
    pub absent: Vec<String>,
}

/// Validates the configuration against the system; errors here exit with code 2.
pub async fn preflight(options: &Options) -> Result<Checked, Vec<String>> {
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
    let (mistakes, absent) = check_system(&nl, &plans).await;
    if mistakes.is_empty() {
        Ok(Checked { plans, absent })
    } else {
        Err(mistakes)
    }
}

/// Checks what needs the system: VIPs are not host addresses (mistakes); interfaces and
/// source addresses exist (absent ones are waited for). A VIP outside the interface's
/// subnets is fine (carp.sh basic_v4: the master routes the VIP's subnet over the
/// interface).
async fn check_system(nl: &Netlink, plans: &[Plan]) -> (Vec<String>, Vec<String>) {
    let mut mistakes = Vec::new();
    let mut absent = Vec::new();
    let lo = match nl.link("lo").await {
        Ok(lo) => nl.addresses(lo.index).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    for p in plans {
        let at = format!("vhid {} on {}", p.vhid, p.interface);
        let link = match nl.find_link(&p.interface).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                absent.push(format!(
                    "{at}: there is no interface {} yet: the VHID waits in INIT until it appears",
                    p.interface
                ));
                continue;
            }
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
            absent.push(format!(
                "{at}: {} lacks the address to send adverts from (its src, or one of the \
                 peers' family and scope) yet: the VHID waits in INIT until it has it",
                p.interface
            ));
        }
    }
    (mistakes, absent)
}
