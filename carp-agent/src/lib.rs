//! carp-agent: the userspace side of carp.

pub mod xdp;
