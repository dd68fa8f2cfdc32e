//! Entering the configured network namespace (`[agent] netns`), before any thread,
//! socket or BPF object exists: everything the agent makes afterwards lives there; and
//! naming the one the agent runs in, however it got there, for its hooks.

use std::{fs::File, os::unix::fs::MetadataExt, path::Path};

/// Where `ip netns add` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Moves this thread (the only one yet) into `/run/netns/<name>`.
pub fn enter(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "agent: netns {name:?} must be a name under {NETNS_DIR}"
        ));
    }
    let path = Path::new(NETNS_DIR).join(name);
    let file = File::open(&path).map_err(|e| {
        format!(
            "agent: netns {name:?}: cannot open {}: {e} (create it with `ip netns add {name}`)",
            path.display()
        )
    })?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("agent: netns {name:?}: cannot enter it: {e}"))
}

/// The name under /run/netns of the network namespace this process is in, as
/// `ip netns identify` finds it (same device and inode): set by `[agent] netns`,
/// `ip netns exec` or a unit's `NetworkNamespacePath=/run/netns/NAME`. None for an unnamed
/// one, such as the host's.
pub fn identify() -> Option<String> {
    identify_in(Path::new(NETNS_DIR), Path::new("/proc/self/ns/net"))
}

fn identify_in(dir: &Path, ns: &Path) -> Option<String> {
    let own = std::fs::metadata(ns).ok()?;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let m = std::fs::metadata(entry.path()).ok()?;
        (m.dev() == own.dev() && m.ino() == own.ino())
            .then(|| entry.file_name().into_string().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_finds_the_entry_for_the_same_file_only() {
        let dir = std::env::temp_dir().join(format!("carp-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "").unwrap();
        std::fs::write(dir.join("other"), "").unwrap();
        let none = identify_in(&dir, Path::new("/proc/self/ns/net"));
        let named = dir.join("named");
        std::fs::hard_link(&target, &named).unwrap();
        std::fs::remove_file(&target).unwrap();
        let found = identify_in(&dir, &named);
        let missing = identify_in(&dir.join("absent"), &named);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(none, None);
        assert_eq!(found.as_deref(), Some("named"));
        assert_eq!(missing, None);
    }
}
