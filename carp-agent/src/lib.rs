//! carp-agent: the userspace side of carp.

pub mod election;
pub mod hmac;
pub mod xdp;
