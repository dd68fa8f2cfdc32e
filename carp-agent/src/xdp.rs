//! Loading the XDP program, attaching it to interfaces and reading its maps.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader, include_bytes_aligned,
    maps::PerCpuArray,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use carp_common::maps::{self, XdpStats};

/// The compiled XDP object, built by build.rs.
pub static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/carp"));

/// Name of the XDP program inside [`OBJECT`].
const PROGRAM: &str = "carp";

/// The loaded object with its program verified by the kernel, ready to attach.
pub struct DataPlane {
    ebpf: Ebpf,
}

impl DataPlane {
    /// Loads the object and the program into the kernel.
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .load(OBJECT)
            .context("loading the carp XDP object (are you root, with BPF enabled?)")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .context("XDP program missing from object")?
            .try_into()?;
        prog.load()
            .context("the kernel verifier rejected the XDP program")?;
        Ok(Self { ebpf })
    }

    /// The XDP program, for attaching or `test_run`.
    pub fn program(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(PROGRAM)
            .context("XDP program missing from object")?
            .try_into()?)
    }

    /// Attaches to `iface` through a bpf_link, so the program goes when this process does.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<XdpLinkId> {
        self.program()?
            .attach(iface, mode)
            .with_context(|| format!("attaching XDP to {iface} in {mode:?} mode"))
    }

    /// Statistics summed over all CPUs.
    pub fn stats(&self) -> Result<XdpStats> {
        let map: PerCpuArray<_, XdpStats> = PerCpuArray::try_from(
            self.ebpf
                .map(maps::STATS)
                .with_context(|| format!("map {} missing", maps::STATS))?,
        )?;
        Ok(XdpStats::total(map.get(&0, 0)?.iter()))
    }
}
