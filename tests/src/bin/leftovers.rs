//! `cargo xtask test` runs this after the tests and after the benchmarks: it fails when
//! they left network namespaces or systemd test cgroups behind. A binary of its own, so
//! that xtask links nothing that needs the eBPF toolchain.

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let netns = carp_tests::netns::leftovers()?;
    let cgroups = carp_tests::systemd::leftover_cgroups()?;
    if !netns.is_empty() || !cgroups.is_empty() {
        bail!(
            "left behind: network namespaces [{}], cgroups [{}]",
            netns.join(" "),
            cgroups.join(" ")
        );
    }
    Ok(())
}
