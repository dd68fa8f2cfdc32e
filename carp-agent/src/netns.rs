//! Entering the configured network namespace (`[agent] netns`), before any thread,
//! socket or BPF object exists: everything the agent makes afterwards lives there.

use std::{fs::File, path::Path};

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
