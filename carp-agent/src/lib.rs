//! carp-agent: the userspace side of carp.

pub mod hmac;
pub mod xdp;
