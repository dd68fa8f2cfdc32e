//! The XDP program run on crafted frames with BPF_PROG_TEST_RUN (needs root).

use aya::programs::{TestRun as _, TestRunOptions};
use carp_agent::xdp::DataPlane;
use carp_common::wire::{CarpHeader, GROUP_V6, IPPROTO_CARP, TTL};
use carp_tests::frame;

const XDP_PASS: u32 = 2;

fn run(dp: &mut DataPlane, data: &[u8]) -> u32 {
    let result = dp
        .program()
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(data),
            ..Default::default()
        })
        .unwrap();
    result.return_value
}

#[test]
fn counts_frames_and_protocol_112() {
    let mut dp = DataPlane::load().unwrap();
    let advert = CarpHeader {
        vhid: 1,
        advskew: 0,
        demote: 0,
        advbase: 1,
        counter: 1,
        digest: [0; 20],
    };
    let mac = [2, 0, 0, 0, 0, 1];
    let carp4 = frame::carp_v4([192, 0, 2, 1], &advert);
    let mut carp6_vlan =
        frame::ethernet([0x33, 0x33, 0, 0, 0, 0x12], mac, Some(7), frame::ETH_P_IPV6);
    let src6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    carp6_vlan.extend(frame::ipv6(
        src6,
        GROUP_V6,
        TTL,
        IPPROTO_CARP,
        &advert.encode(),
    ));
    let mut icmp = frame::ethernet(mac, mac, None, frame::ETH_P_IP);
    icmp.extend(frame::ipv4(
        [192, 0, 2, 1],
        [192, 0, 2, 2],
        64,
        1,
        &[8, 0, 0, 0, 0, 0, 0, 0],
    ));
    let arp = frame::arp_request(mac, [192, 0, 2, 1], [192, 0, 2, 50]);
    // The kernel's test_run needs at least an Ethernet header; this one claims IPv4 and ends.
    let runt = frame::ethernet(mac, mac, None, frame::ETH_P_IP);

    let before = dp.stats().unwrap();
    for f in [&carp4[..], &carp6_vlan, &icmp, &arp, &runt[..]] {
        assert_eq!(run(&mut dp, f), XDP_PASS);
    }
    let after = dp.stats().unwrap();
    assert_eq!(after.frames - before.frames, 5);
    assert_eq!(after.proto112 - before.proto112, 2);
}
