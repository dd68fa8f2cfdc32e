//! Everything the XDP program and the agent must agree on, defined once: the CARP and
//! VRRPv3 wire formats, their constants, and the `#[repr(C)]` layouts and names of the
//! BPF maps.
#![cfg_attr(not(test), no_std)]

pub mod balance;
pub mod checksum;
pub mod ether;
pub mod maps;
pub mod protocol;
pub mod sha1;
pub mod state;
pub mod tc;
pub mod vrrp;
pub mod wire;

pub use protocol::Protocol;
pub use state::State;
