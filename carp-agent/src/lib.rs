//! carp-agent: the userspace side of carp.

pub mod addrs;
pub mod agent;
pub mod checks;
pub mod child;
pub mod config;
pub mod control;
pub mod demotion;
pub mod election;
pub mod frame;
pub mod health;
pub mod hmac;
pub mod hooks;
pub mod iface;
pub mod memory;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod preflight;
pub mod send;
pub mod state;
pub mod vhid;
pub mod vlan_offload;
pub mod xdp;
