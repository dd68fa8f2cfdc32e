#![no_std]
// The XDP program is the `carp` binary (src/main.rs); this empty library only lets
// carp-agent name the crate as a build-dependency so cargo rebuilds it when it changes.
