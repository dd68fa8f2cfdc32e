//! Harness for carp's end-to-end tests: network namespaces, a switched LAN and agent
//! processes that clean up after themselves, and the captures they read.

pub mod agent;
pub mod bpftool;
pub mod flows;
pub mod frames;
pub mod lan;
pub mod netns;
pub mod pcap;
pub mod peers;
pub mod probe;
pub mod procfs;
pub mod prometheus;
pub mod rawbpf;
pub mod systemd;

/// A benchmark's scale from the environment variable `name` (REPEAT, TRIALS, ...), or
/// `default` when it is unset or unreadable.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
