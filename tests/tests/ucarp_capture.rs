//! A live ucarp advert captured in a namespace decodes with the values ucarp was given.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_common::wire::{self, CarpHeader};
use carp_tests::{
    netns::{Netns, veth},
    pcap,
};
use std::{process::Stdio, time::Duration};

#[test]
fn ucarp_adverts_decode() {
    let a = Netns::new("ua").unwrap();
    let b = Netns::new("ub").unwrap();
    veth(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24").unwrap();
    let dir = std::env::temp_dir().join(format!("carpt-ucarp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pass = dir.join("pass");
    carp_tests::agent::write_secret(&pass, "testpass").unwrap();
    let capture = dir.join("ucarp.pcap");

    let tcpdump = pcap::Capture::start(&b, "vb", "ip proto 112", 2, &capture).unwrap();
    let mut ucarp = a
        .command("ucarp")
        .args(["-i", "va", "-s", "192.0.2.1", "-v", "7", "-a", "192.0.2.50"])
        .args([
            "-b",
            "1",
            "-k",
            "20",
            "-u",
            "/bin/true",
            "-d",
            "/bin/true",
            "-o",
        ])
        .arg(&pass)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // ucarp waits 3 advbase as backup before it becomes master and advertises.
    let frames = tcpdump.frames(Duration::from_secs(10)).unwrap();
    ucarp.kill().unwrap();
    ucarp.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(frames.len(), 2, "no adverts captured from ucarp");
    for f in frames {
        assert_eq!(&f[..6], &wire::GROUP_MAC_V4);
        assert_eq!(f[14 + 8], wire::TTL);
        let h = CarpHeader::decode(&f[34..]).unwrap();
        assert_eq!((h.vhid, h.advskew, h.advbase, h.demote), (7, 20, 1, 0));
    }
}
