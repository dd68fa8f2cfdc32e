//! carp-agent: the userspace side of carp.

pub mod demotion;
pub mod election;
pub mod frame;
pub mod hmac;
pub mod xdp;
