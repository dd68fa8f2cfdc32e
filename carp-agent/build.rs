//! Builds the XDP program (carp-ebpf) with the pinned nightly toolchain (CARP_EBPF_TOOLCHAIN,
//! set in .cargo/config.toml) and bpf-linker into OUT_DIR, where src/xdp.rs embeds it.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("{manifest} has no parent"))?
        .join("carp-ebpf");
    println!("cargo:rerun-if-env-changed=CARP_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("CARP_EBPF_TOOLCHAIN")
        .context("CARP_EBPF_TOOLCHAIN is not set: build from the workspace, whose .cargo/config.toml sets it")?;
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "carp-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context("building the XDP program failed; run `cargo xtask setup` (it installs the pinned nightly, rust-src and bpf-linker)")
}
