//! Switching a group's `auth` (bsd <-> strict) as the README says, like a password
//! rotation, backups first: applied in place, the other mode's digest accepted for 5
//! minutes, so no backup takes over while the switch rolls through the group.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::hmac::AuthMode;
use carp_common::State;
use carp_tests::{
    agent::{TempDir, start_pair, write_secret},
    lan::Lan,
};
use std::time::Duration;

/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);

fn vhid(dir: &TempDir, advskew: u8, auth: AuthMode) -> String {
    let pw = dir.path().join("carp.pass");
    write_secret(&pw, "switch-secret").unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\n\
         advskew = {advskew}\nauth = \"{auth}\"\npass_file = \"{}\"\n",
        pw.display()
    )
}

/// A master "a" and a backup "b" in BSD mode switch to strict, the backup reloaded first
/// and the master only after the backup's master-down time, then back to BSD the same
/// way: neither changes state (status `state`, `transitions`), each reload says it
/// changed `auth` in place, and the backup keeps hearing the master throughout, no digest
/// refused.
#[test]
fn switching_auth_backups_first_leaves_one_master() {
    let dir = TempDir::new("authsw").unwrap();
    let lan = Lan::new("authsw", &["a", "b"]).unwrap();
    let (a, b) = start_pair(
        &lan,
        dir.path(),
        1,
        &vhid(&dir, 0, AuthMode::Bsd),
        &vhid(&dir, 100, AuthMode::Bsd),
    )
    .unwrap();
    let (ta, tb) = (a.transitions(), b.transitions());
    for (from, to) in [
        (AuthMode::Bsd, AuthMode::Strict),
        (AuthMode::Strict, AuthMode::Bsd),
    ] {
        for (agent, skew) in [(&b, 100), (&a, 0)] {
            agent.rewrite(&vhid(&dir, skew, to)).unwrap();
            agent.ctl(&["reload"]).unwrap();
            let heard = b.status().unwrap().vhids[0].adverts_received;
            std::thread::sleep(MASTER_DOWN + Duration::from_secs(1));
            let (sa, sb) = (a.status().unwrap(), b.status().unwrap());
            let at = format!("{from} -> {to}, {} reloaded", agent.name);
            assert_eq!(
                (sa.vhids[0].state, sb.vhids[0].state),
                (State::MASTER, State::BACKUP),
                "{at}"
            );
            assert_eq!((a.transitions(), b.transitions()), (ta, tb), "{at}");
            assert_eq!(agent.status().unwrap().vhids[0].auth, to, "{at}");
            assert!(
                sb.vhids[0].adverts_received >= heard + 3,
                "{at}: b stopped hearing a"
            );
            assert_eq!(b.xdp_counter("bad_hmac"), 0, "{at}");
            assert_eq!(b.xdp_counter("old_counter"), 0, "{at}");
            let log = agent.log_text();
            assert!(
                log.contains(&format!("changed (auth {from} -> {to})")),
                "{at}: {log}"
            );
        }
    }
}
