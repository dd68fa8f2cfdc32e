//! Harness for carp's end-to-end tests: network namespaces that clean up after themselves,
//! and the frames the tests send.

pub mod frame;
pub mod netns;
pub mod pcap;
