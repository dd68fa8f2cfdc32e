//! Names and `#[repr(C)]` value layouts of the BPF maps. The XDP program declares its maps
//! with these types; the agent opens them by these names.

/// Per-CPU receive statistics of the XDP program (one entry, index 0).
pub const STATS: &str = "CARP_STATS";

/// What the XDP program saw on one CPU. Named fields so `bpftool map dump` prints them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Every frame the program ran on.
    pub frames: u64,
    /// IPv4 and IPv6 packets of IP protocol 112 (CARP or VRRP).
    pub proto112: u64,
}

impl XdpStats {
    /// Sums the per-CPU values the kernel returns.
    pub fn total<'a>(per_cpu: impl IntoIterator<Item = &'a Self>) -> Self {
        per_cpu.into_iter().fold(Self::default(), |a, b| Self {
            frames: a.frames + b.frames,
            proto112: a.proto112 + b.proto112,
        })
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` integers, no padding, every bit pattern valid.
unsafe impl aya::Pod for XdpStats {}
