//! Harness for carp's end-to-end tests: network namespaces that clean up after themselves
//! and the captures they read.

pub mod netns;
pub mod pcap;
