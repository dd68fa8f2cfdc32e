//! Harness for carp's end-to-end tests: network namespaces, a switched LAN and agent
//! processes that clean up after themselves, and the captures they read.

pub mod agent;
pub mod frames;
pub mod lan;
pub mod netns;
pub mod pcap;
pub mod peers;
pub mod probe;
pub mod procfs;
pub mod systemd;
