//! Builds the XDP program (carp-ebpf) with the nightly toolchain and bpf-linker into OUT_DIR,
//! where src/xdp.rs embeds it.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("{manifest} has no parent"))?
        .join("carp-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "carp-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program failed; run `cargo xtask setup` (needs nightly, rust-src and bpf-linker)")
}
