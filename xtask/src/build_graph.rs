//! xtask must build on a machine that has only the stable toolchain: the first README
//! command runs it before setup has installed nightly's rust-src and bpf-linker. This test
//! walks xtask's build graph as cargo resolves it (normal and build dependencies) and fails
//! when it reaches a crate whose build needs the eBPF toolchain.

use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Crates that build the eBPF program, or are it.
const NEEDS_EBPF_TOOLCHAIN: &[&str] = &["carp-agent", "carp-ebpf", "aya-build"];

/// Package ids reached from `root` by normal and build dependencies (not dev).
fn reached(resolve: &Value, root: &str) -> HashSet<String> {
    let nodes: HashMap<&str, &Value> = resolve["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("node id"), n))
        .collect();
    let mut seen = HashSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        for dep in nodes[id.as_str()]["deps"].as_array().expect("deps") {
            let linked = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].as_str() != Some("dev"));
            if linked {
                todo.push(dep["pkg"].as_str().expect("dep pkg").to_owned());
            }
        }
    }
    seen
}

/// The names of packages in `ids` that need the eBPF toolchain: named in
/// NEEDS_EBPF_TOOLCHAIN, or with one of them as a build dependency.
fn offenders(metadata: &Value, ids: &HashSet<String>) -> Vec<String> {
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| ids.contains(p["id"].as_str().expect("package id")))
        .filter(|p| {
            let name = p["name"].as_str().expect("package name");
            NEEDS_EBPF_TOOLCHAIN.contains(&name)
                || p["dependencies"]
                    .as_array()
                    .expect("dependencies")
                    .iter()
                    .any(|d| {
                        d["kind"].as_str() == Some("build")
                            && NEEDS_EBPF_TOOLCHAIN
                                .contains(&d["name"].as_str().unwrap_or_default())
                    })
        })
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn xtask_builds_without_the_ebpf_toolchain() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let xtask = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "xtask")
        .and_then(|p| p["id"].as_str())
        .expect("the xtask package");
    let ids = reached(&metadata["resolve"], xtask);
    // The walk itself: xtask reaches its own dependencies.
    assert!(
        ids.iter().any(|id| id.contains("clap")),
        "walk found {ids:?}"
    );
    let bad = offenders(&metadata, &ids);
    assert!(
        bad.is_empty(),
        "xtask's build graph reaches {bad:?}, which need nightly's rust-src and bpf-linker: \
         on a fresh machine `cargo xtask setup` could not build. Run them through `cargo`."
    );
}
