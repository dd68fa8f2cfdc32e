//! Host-wide demotion as FreeBSD keeps it (`net.inet.carp.demotion`, `carp_demote_adj`),
//! plus OpenBSD-style demotion groups. The effective demotion of a VHID is the global
//! counter plus the counters of its groups; it is added to advskew (CARP) or subtracted
//! from priority (VRRP) by [`crate::election`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An operator's change of a demotion counter: `+N`, `-N` or `=N` on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Add(i32),
    Subtract(i32),
    Set(i32),
}

impl std::str::FromStr for Change {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |n: &str| {
            n.parse::<i32>()
                .map_err(|_| format!("demotion {s:?} needs a number after its sign"))
        };
        match s.split_at_checked(1) {
            Some(("+", n)) => number(n).map(Change::Add),
            Some(("-", n)) => number(n).map(Change::Subtract),
            Some(("=", n)) => number(n).map(Change::Set),
            _ => Err(format!("demotion {s:?} must start with +, - or =")),
        }
    }
}

/// `net.inet.carp.ifdown_demotion_factor` and `senderr_demotion_factor` default:
/// CARP_MAXSKEW.
pub const IFDOWN_FACTOR: i32 = carp_common::wire::MAXSKEW as i32;
pub const SENDERR_FACTOR: i32 = IFDOWN_FACTOR;
/// `CARP_SENDAD_MAX_ERRORS` / `CARP_SENDAD_MIN_SUCCESS`.
pub const SENDAD_MAX_ERRORS: u32 = 3;
pub const SENDAD_MIN_SUCCESS: u32 = 3;

/// Demotion state of one host; `K` names a VHID (e.g. interface and vhid).
#[derive(Clone, Debug, Default)]
pub struct Demotion<K: Ord + Clone> {
    global: i32,
    groups: BTreeMap<String, i32>,
    /// VHIDs whose interface is down (`sc_suppress`): each adds IFDOWN_FACTOR once.
    suppressed: BTreeSet<K>,
    /// Consecutive send errors and, after demotion, successes (`sc_sendad_errors`,
    /// `sc_sendad_success`).
    send: BTreeMap<K, (u32, u32)>,
}

impl<K: Ord + Clone> Demotion<K> {
    /// The global counter. Negative values are allowed and promote (FreeBSD PR 259528).
    pub fn global(&self) -> i32 {
        self.global
    }

    /// Adds `delta` to the global counter, as writing the sysctl does.
    pub fn adjust(&mut self, delta: i32) {
        self.global = self.global.saturating_add(delta);
    }

    /// Adds `delta` to a group's counter (OpenBSD `ifconfig -g group carpdemote`).
    pub fn adjust_group(&mut self, group: &str, delta: i32) {
        let v = self.groups.entry(group.to_owned()).or_default();
        *v = v.saturating_add(delta);
    }

    /// Adds `delta` to `group`'s counter, or to the global one when there is none.
    pub fn adjust_in(&mut self, group: Option<&str>, delta: i32) {
        match group {
            Some(g) => self.adjust_group(g, delta),
            None => self.adjust(delta),
        }
    }

    /// `carp-agent demote`: changes the host's counter or `group`'s; returns its new
    /// value. Arithmetic saturates.
    pub fn operate(&mut self, change: Change, group: Option<&str>) -> i32 {
        let counter = match group {
            Some(g) => self.groups.entry(g.to_owned()).or_default(),
            None => &mut self.global,
        };
        *counter = match change {
            Change::Add(n) => counter.saturating_add(n),
            Change::Subtract(n) => counter.saturating_sub(n),
            Change::Set(n) => n,
        };
        *counter
    }

    /// The demotion that applies to a VHID in `groups`.
    pub fn effective<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> i32 {
        groups
            .into_iter()
            .filter_map(|g| self.groups.get(g))
            .fold(self.global, |a, b| a.saturating_add(*b))
    }

    /// carp_sc_state: link down demotes by IFDOWN_FACTOR once per VHID, link up undoes it.
    /// Returns whether the global counter changed.
    pub fn link(&mut self, vhid: &K, up: bool) -> bool {
        let changed = if up {
            self.suppressed.remove(vhid)
        } else {
            self.suppressed.insert(vhid.clone())
        };
        if changed {
            self.adjust(if up { -IFDOWN_FACTOR } else { IFDOWN_FACTOR });
        }
        changed
    }

    /// carp_send_ad_error: the third error in a row demotes, three successes afterwards
    /// undo it. Returns whether the global counter changed.
    pub fn send_result(&mut self, vhid: &K, ok: bool) -> bool {
        let (errors, successes) = self.send.entry(vhid.clone()).or_default();
        if !ok {
            *errors = errors.saturating_add(1);
            *successes = 0;
            if *errors == SENDAD_MAX_ERRORS {
                self.adjust(SENDERR_FACTOR);
                return true;
            }
        } else if *errors > 0 {
            *successes += 1;
            if *successes >= SENDAD_MIN_SUCCESS {
                let demoted = *errors >= SENDAD_MAX_ERRORS;
                *errors = 0;
                if demoted {
                    self.adjust(-SENDERR_FACTOR);
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator's `demote`, at the ends of i32 too (`demote -- -2147483648` overflowed).
    #[test]
    fn operator_demotion() {
        let mut d = Demotion::<u8>::default();
        let op = |s: &str| s.parse::<Change>().unwrap();
        assert_eq!(d.operate(op("+50"), None), 50);
        assert_eq!(d.operate(op("=20"), Some("web")), 20);
        assert_eq!(d.operate(op("-15"), Some("web")), 5);
        assert_eq!(d.effective(["web"]), 55);
        assert_eq!(d.operate(op("--2147483648"), None), i32::MAX);
        assert_eq!(d.operate(op("=-2147483648"), None), i32::MIN);
        assert_eq!(d.operate(op("+-2147483648"), None), i32::MIN);
        for bad in ["*1", "50", "+", "=x", ""] {
            assert!(bad.parse::<Change>().is_err(), "{bad}");
        }
    }

    #[test]
    fn link_down_demotes_once_per_vhid() {
        let mut d = Demotion::<u8>::default();
        assert!(d.link(&1, false));
        assert!(!d.link(&1, false));
        assert!(d.link(&2, false));
        assert_eq!(d.global(), 480);
        assert!(d.link(&1, true));
        assert!(!d.link(&1, true));
        assert_eq!(d.global(), 240);
    }

    #[test]
    fn send_errors_demote_after_three_and_recover_after_three_successes() {
        let mut d = Demotion::<u8>::default();
        assert!(!d.send_result(&1, false));
        assert!(!d.send_result(&1, false));
        assert!(d.send_result(&1, false));
        assert_eq!(d.global(), SENDERR_FACTOR);
        assert!(!d.send_result(&1, false), "only the third in a row counts");
        assert!(!d.send_result(&1, true));
        assert!(!d.send_result(&1, true));
        assert!(d.send_result(&1, true));
        assert_eq!(d.global(), 0);
        // Two errors then successes never demoted, so nothing to undo.
        d.send_result(&1, false);
        d.send_result(&1, false);
        for _ in 0..3 {
            assert!(!d.send_result(&1, true));
        }
        assert_eq!(d.global(), 0);
    }

    #[test]
    fn groups_add_to_the_global_counter_and_may_be_negative() {
        let mut d = Demotion::<u8>::default();
        d.adjust(10);
        d.adjust_group("db", 100);
        d.adjust_group("web", -30);
        assert_eq!(d.effective(["db"]), 110);
        assert_eq!(d.effective(["db", "web"]), 80);
        assert_eq!(d.effective(["other"]), 10);
        d.adjust(-50);
        assert_eq!(d.effective([]), -40);
    }
}
