//! The keys stay out of what operators dump: the HMAC pad states of a VHID's password sign
//! adverts as well as the password does, so they live in `CARP_KEYS` alone, pinned 0600,
//! and no map the README tells people to dump holds them.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::iface::monotonic_ns;
use carp_common::{maps, sha1::PadStates};
use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    bpftool::{Pins, dump, raw},
    lan::Lan,
};
use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

const OLD: &str = "keys-old-secret";
const NEW: &str = "keys-new-secret";
const WAIT: Duration = Duration::from_secs(8);

/// VHID 1 in strict mode (its sources land in `CARP_PEERS`) and VHID 2 in BSD mode (in
/// `CARP_REPLAY`), both under `password`, in namespace `ns`.
fn config(dir: &TempDir, ns: &str, password: &str, advskew: u8) -> String {
    let pw = dir.path().join(format!("pass-{password}"));
    write_secret(&pw, password).unwrap();
    let vhid = |n: u8, vip: &str, auth: &str| {
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = {n}\nvips = [\"{vip}\"]\nadvskew = {advskew}\n\
             auth = \"{auth}\"\npass_file = \"{}\"\n",
            pw.display()
        )
    };
    format!(
        "netns = \"{ns}\"\n\n{}\n{}",
        vhid(1, "192.0.2.50/24", "strict"),
        vhid(2, "192.0.2.60/24", "bsd")
    )
}

/// The SHA-1 states after `password`'s inner and outer HMAC pad blocks, as the maps hold
/// them (`[u32; 5]` each, in host byte order).
fn pad_states(password: &str) -> [[u8; 20]; 2] {
    let pads = PadStates::from_key(password.as_bytes()).unwrap();
    [pads.inner, pads.outer].map(|state| {
        let mut bytes = [0u8; 20];
        for (i, word) in state.iter().enumerate() {
            bytes[4 * i..4 * i + 4].copy_from_slice(&word.to_ne_bytes());
        }
        bytes
    })
}

/// Whether any key or value of the dump holds `needle`.
fn holds(dump: &[Vec<u8>], needle: &[u8]) -> bool {
    dump.iter()
        .any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

/// The names of the maps README.md mentions (`CARP_` and capitals, among them the hooks'
/// environment variables; the caller keeps those that are pins).
fn readme_names() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    readme
        .match_indices("CARP_")
        .map(|(at, _)| {
            readme[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect()
        })
        .collect()
}

/// An agent with a password, a master and a backup of a strict and a BSD VHID, the
/// password rotated by a reload (so the replaced digest is kept too): every map it pins
/// that the README mentions, dumped as bpftool shows it, holds neither password's pad
/// states; `CARP_KEYS` holds both (the search finds what is there), is named in the README,
/// and its pin is root's alone. The README walkthrough's dump of `CARP_VHIDS` still works.
#[test]
fn no_map_an_operator_dumps_holds_the_pads() {
    let dir = TempDir::new("keys").unwrap();
    let lan = Lan::new("keys", &["a", "b"]).unwrap();
    let (ns_a, ns_b) = (lan.hosts[0].ns.name(), lan.hosts[1].ns.name());
    let pins = [ns_a, ns_b].map(|ns| Pins(format!("/sys/fs/bpf/carp/{ns}")));
    let a = Agent::start_on_host(dir.path(), "a", &config(&dir, ns_a, OLD, 0)).unwrap();
    for vhid in [1, 2] {
        a.wait_state(vhid, "MASTER", WAIT).unwrap();
    }
    let b = Agent::start_on_host(dir.path(), "b", &config(&dir, ns_b, OLD, 100)).unwrap();
    for vhid in [1, 2] {
        b.wait_state(vhid, "BACKUP", WAIT).unwrap();
    }
    for (agent, ns, skew) in [(&b, ns_b, 100), (&a, ns_a, 0)] {
        agent.rewrite(&config(&dir, ns, NEW, skew)).unwrap();
        agent.ctl(&["reload"]).unwrap();
    }
    // The backup hears the master under the new password, so its records are fresh.
    let heard = b.xdp_counter("adverts");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(b.xdp_counter("adverts") >= heard + 2, "b hears no advert");
    assert_eq!(b.xdp_counter("bad_hmac"), 0);
    let readme = readme_names();
    let secrets = [pad_states(OLD), pad_states(NEW)].concat();
    for pins in &pins {
        let eth0 = Path::new(&pins.0).join("eth0");
        let pinned: BTreeSet<String> = std::fs::read_dir(&eth0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let dumped: Vec<&String> = pinned.iter().filter(|m| *m != maps::KEYS).collect();
        assert!(
            [
                maps::VHIDS,
                maps::STATS,
                maps::VIPS,
                maps::REPLAY,
                maps::PEERS,
                maps::BALANCE
            ]
            .iter()
            .all(|m| dumped.contains(&&m.to_string())),
            "{pinned:?}"
        );
        for map in &dumped {
            assert!(
                readme.contains(*map),
                "{map} is pinned but not in the README"
            );
            let dump = raw(&eth0.join(map));
            for (i, state) in secrets.iter().enumerate() {
                assert!(
                    !holds(&dump, state),
                    "{}/{map} holds the {} pad state of the {} password",
                    eth0.display(),
                    ["inner", "outer"][i % 2],
                    ["old", "new"][i / 2]
                );
            }
            for password in [OLD, NEW] {
                assert!(!holds(&dump, password.as_bytes()), "{map} holds a password");
            }
        }
        let keys = eth0.join(maps::KEYS);
        let dump = raw(&keys);
        assert!(
            secrets.iter().all(|s| holds(&dump, s)),
            "{} lacks pad states: the search would miss them",
            keys.display()
        );
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&keys).unwrap());
        assert_eq!(mode & 0o7777, 0o600, "{} has mode {mode:o}", keys.display());
    }
    assert!(
        readme.contains(maps::KEYS),
        "the README does not name {}",
        maps::KEYS
    );
    // The README's walkthrough command, as it prints.
    let out = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(Path::new(&pins[0].0).join("eth0").join(maps::VHIDS))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("\"state\": \"MASTER\"").count(), 2, "{text}");
}

/// README: "after a reload that changes them, the agent accepts the digest it replaced for
/// 5 more minutes". A password rotation writes the old HMAC into `auth_previous` of
/// `CARP_KEYS` with `previous_until` 300 s past the reload (CLOCK_MONOTONIC, the program's
/// `bpf_ktime_get_ns`); before it, no previous digest is accepted.
#[test]
fn a_reload_keeps_the_replaced_digest_for_five_minutes() {
    let dir = TempDir::new("keep").unwrap();
    let lan = Lan::new("keep", &["a"]).unwrap();
    let ns = lan.hosts[0].ns.name();
    let pins = Pins(format!("/sys/fs/bpf/carp/{ns}"));
    let a = Agent::start_on_host(dir.path(), "a", &config(&dir, ns, OLD, 0)).unwrap();
    a.wait_state(2, "BACKUP", WAIT).unwrap();
    let keys = Path::new(&pins.0).join("eth0").join(maps::KEYS);
    let until = || -> Vec<u64> {
        dump(&keys)
            .iter()
            .map(|(_, v)| v["previous_until"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(until(), [0, 0], "a previous digest before any reload");
    a.rewrite(&config(&dir, ns, NEW, 0)).unwrap();
    let before = monotonic_ns();
    a.ctl(&["reload"]).unwrap();
    let after = monotonic_ns();
    const FIVE_MINUTES: u64 = 300_000_000_000;
    for t in until() {
        assert!(
            (before + FIVE_MINUTES..=after + FIVE_MINUTES).contains(&t),
            "previous_until is {:.1} s after the reload, not 300 s",
            (t as f64 - before as f64) / 1e9
        );
    }
}
