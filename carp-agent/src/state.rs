//! What the agent keeps on disk across restarts and reboots, in `[agent] state_dir`
//! (/var/lib/carp, the unit's `StateDirectory=`): the boot count of its strict counters
//! ([`Sequence`], RFC 7474 section 4.1), and per interface the strict counters its XDP
//! program last accepted from each peer (`CARP_PEERS`), so that neither a restart nor a
//! reboot lets a captured advert in again. Each file is replaced whole: a temporary file
//! written, synced and renamed over it, then the directory synced, so a crash leaves the
//! old file or the new one.

use crate::hmac::{Sequence, boot_count};
use anyhow::{Context as _, Result, anyhow, bail};
use carp_common::maps::{PeerEntry, PeerKey, VhidKey};
use std::{
    io::Write as _,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

/// The boot count's file in the state directory: its decimal value and a newline.
pub const BOOT_FILE: &str = "boot-count";

/// The file of the records of interface `iface`: by name, as ifindexes change across
/// reboots.
pub fn peers_file(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("peers-{iface}"))
}

/// Counts this start ([`boot_count`] of the stored count, or of the clock's `unix_secs`
/// when there is none) and stores it, before any strict advert goes out. A file that holds
/// no count is an error: started from the clock instead, a host whose clock is behind
/// would send counters its peers refuse.
pub fn start(dir: &Path, unix_secs: u64) -> Result<Sequence> {
    let path = dir.join(BOOT_FILE);
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().parse::<u32>().map_err(|_| {
            anyhow!(
                "{} holds no boot count ({:?}): remove it to start from the clock",
                path.display(),
                text.chars().take(32).collect::<String>()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                "no boot count in {}: counting strict adverts from the clock ({unix_secs})",
                path.display()
            );
            None
        }
        Err(e) => bail!("reading {}: {e}", path.display()),
    };
    let boot = boot_count(stored, unix_secs)
        .with_context(|| format!("the boot count in {} is used up", path.display()))?;
    store_boot(dir, boot)?;
    Ok(Sequence::new(boot))
}

/// The next counter of `sequence`. When its boot's are used up, the next boot count is
/// stored first (RFC 7474 4.1: "the high-order 32 bits are incremented"), and until that
/// succeeds there is none: strict adverts stop rather than send a counter twice.
pub fn next_counter(sequence: &mut Sequence, dir: &Path) -> Option<u64> {
    if let Some(counter) = sequence.next() {
        return Some(counter);
    }
    let Some(boot) = sequence.next_boot() else {
        tracing::error!("the boot count is used up: no strict advert can go out");
        return None;
    };
    match store_boot(dir, boot) {
        Ok(()) => {
            tracing::info!(
                "boot {} used up its counters: boot count {boot}",
                sequence.boot()
            );
            sequence.raise(boot);
            sequence.next()
        }
        Err(e) => {
            tracing::error!("{e:#}: no strict advert goes out until it is stored");
            None
        }
    }
}

/// Stores `boot` as the boot count.
pub fn store_boot(dir: &Path, boot: u32) -> Result<()> {
    replace(dir, BOOT_FILE, format!("{boot}\n").as_bytes())
}

/// Stores the records of interface `iface`, one line each: VLAN, VHID, the source's 16
/// bytes in hex (IPv4 in the first 4), the counter.
pub fn save_peers(dir: &Path, iface: &str, records: &[(PeerKey, PeerEntry)]) -> Result<()> {
    let text: String = records
        .iter()
        .map(|(k, v)| {
            let src: String = k.src.iter().map(|b| format!("{b:02x}")).collect();
            format!("{} {} {src} {}\n", k.vhid.vlan, k.vhid.vhid, v.counter)
        })
        .collect();
    let name = peers_file(dir, iface);
    let name = name.file_name().context("an interface name")?;
    replace(dir, &name.to_string_lossy(), text.as_bytes())
}

/// The stored records of interface `iface`, keyed for its index now, `ifindex`. None when
/// there are none (a first start); a line that is not a record is skipped with a warning:
/// the records only ever refuse more.
pub fn load_peers(dir: &Path, iface: &str, ifindex: u32) -> Vec<(PeerKey, PeerEntry)> {
    let path = peers_file(dir, iface);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(
                "reading {}: {e}; no records of strict peers",
                path.display()
            );
            return Vec::new();
        }
    };
    text.lines()
        .filter_map(|line| {
            let record = parse_record(line, ifindex);
            if record.is_none() {
                tracing::warn!("{}: not a record, skipped: {line:?}", path.display());
            }
            record
        })
        .collect()
}

fn parse_record(line: &str, ifindex: u32) -> Option<(PeerKey, PeerEntry)> {
    let mut fields = line.split_ascii_whitespace();
    let vlan = fields.next()?.parse().ok()?;
    let vhid = fields.next()?.parse().ok()?;
    let hex = fields.next()?;
    let counter = fields.next()?.parse().ok()?;
    if fields.next().is_some() || hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut src = [0u8; 16];
    for (i, b) in src.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    let key = PeerKey {
        vhid: VhidKey::new(ifindex, vlan, vhid),
        src,
    };
    Some((key, PeerEntry { counter }))
}

/// Replaces `dir`/`name` with `bytes`, creating `dir` (root's only) if need be.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("carp-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A first start counts from the clock, every start after it one up; a file that holds
    /// no count stops the start, naming the file.
    #[test]
    fn the_boot_count_goes_up_at_every_start() {
        let d = dir("boot");
        assert_eq!(start(&d, 1_700_000_000).unwrap().boot(), 1_700_000_000);
        assert_eq!(start(&d, 5).unwrap().boot(), 1_700_000_001);
        assert_eq!(
            std::fs::read_to_string(d.join(BOOT_FILE)).unwrap(),
            "1700000001\n"
        );
        std::fs::write(d.join(BOOT_FILE), "12 junk").unwrap();
        let e = start(&d, 5).unwrap_err().to_string();
        assert!(e.contains("boot-count holds no boot count"), "{e}");
        std::fs::remove_file(d.join(BOOT_FILE)).unwrap();
        assert_eq!(start(&d, 1_800_000_000).unwrap().boot(), 1_800_000_000);
        let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A boot whose counters are used up stores the next count before its first counter;
    /// when it cannot, nothing goes out.
    #[test]
    fn a_used_up_boot_stores_the_next_before_counting_on() {
        let d = dir("wrap");
        let mut seq = Sequence::used_up(7);
        assert_eq!(next_counter(&mut seq, &d), Some(8 << 32));
        assert_eq!(std::fs::read_to_string(d.join(BOOT_FILE)).unwrap(), "8\n");
        assert_eq!(next_counter(&mut seq, &d), Some((8 << 32) + 1));
        let blocked = d.join("blocked");
        std::fs::write(&blocked, "a file where the directory should be").unwrap();
        let mut seq = Sequence::used_up(7);
        assert_eq!(next_counter(&mut seq, &blocked), None);
        assert_eq!(next_counter(&mut seq, &blocked), None);
        assert_eq!(next_counter(&mut seq, &d), Some(8 << 32));
        let mut seq = Sequence::used_up(u32::MAX);
        assert_eq!(next_counter(&mut seq, &d), None);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Records come back keyed for the interface's index now; lines that are not records
    /// are skipped.
    #[test]
    fn records_come_back_under_the_new_index() {
        let d = dir("peers");
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[192, 0, 2, 1]);
        let record = |ifindex, counter| {
            (
                PeerKey {
                    vhid: VhidKey::new(ifindex, 7, 1),
                    src,
                },
                PeerEntry { counter },
            )
        };
        assert_eq!(load_peers(&d, "eth0", 3), vec![]);
        save_peers(&d, "eth0", &[record(2, u64::MAX)]).unwrap();
        assert_eq!(load_peers(&d, "eth0", 3), vec![record(3, u64::MAX)]);
        assert_eq!(load_peers(&d, "eth1", 3), vec![]);
        let text = std::fs::read_to_string(peers_file(&d, "eth0")).unwrap();
        std::fs::write(
            peers_file(&d, "eth0"),
            format!("{text}1 2 zz 3\n1 2\n0 1 {} 9 9\n", "0".repeat(32)),
        )
        .unwrap();
        assert_eq!(load_peers(&d, "eth0", 3), vec![record(3, u64::MAX)]);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
