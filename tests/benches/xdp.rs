//! XDP cost per path with BPF_PROG_TEST_RUN. Paths that leave the frame as it was (pass,
//! drop) run with `repeat` and the kernel's mean per run. Paths that rewrite the frame in
//! place (ARP/NS answers) or change state (a fresh advert) would see their own output on
//! the next repeat, so they run once per call and the median of the kernel-measured
//! durations is reported, next to the same measurement of the pass path as a baseline
//! (it includes the kernel timer's own cost). `cargo xtask bench` runs it; REPEAT and
//! CALLS override the counts.

use aya::programs::{TestRun as _, TestRunOptions};
use carp_agent::{
    hmac::{Auth, AuthMode},
    xdp::{DataPlane, vhid_entry, vhid_keys},
};
use carp_common::{
    Protocol, State,
    balance::{fold_v4, group_mac, keeps},
    maps::{BalanceEntry, Flags, VhidKey, VipEntry, VipKey},
    wire::{self, CarpHeader},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_tests::frames;

const LO: u32 = 1;

fn main() {
    let repeat: u32 = carp_tests::setting("REPEAT", 1_000_000);
    let mut dp = DataPlane::load().expect("loading the XDP program (root?)");
    let vip4 = Ipv4Addr::new(192, 0, 2, 50);
    let vip6: Ipv6Addr = "2001:db8::50".parse().unwrap();
    let auth = Auth::new(b"testpass", 1, &[vip4.into(), vip6.into()]).unwrap();
    let key = VhidKey::new(LO, 0, 1);
    let vmac = wire::virtual_mac(1);
    // MASTER with a lease that never runs out.
    let mut vhid = vhid_entry(
        Protocol::CARP,
        State::MASTER,
        Flags::default(),
        vmac,
        vmac,
        Some(&auth),
    );
    vhid.master_until = u64::MAX;
    dp.set_keys(&key, &vhid_keys(&auth)).unwrap();
    dp.set_vhid(&key, &vhid).unwrap();
    let entry = VipEntry {
        vhid: 1,
        _pad: [0; 3],
    };
    dp.set_vip(&VipKey::new(LO, 0, vip4.into()), &entry)
        .unwrap();
    dp.set_vip(&VipKey::new(LO, 0, vip6.into()), &entry)
        .unwrap();

    // VHIDs 2 and 3 with 16 and 12 IPv4 VIPs: the HMAC message spans two SHA-1 blocks
    // (one of them prepared by the agent), and for 12 the counter needs a second final one.
    let many = |vhid: u8, n: u32| {
        let vips: Vec<IpAddr> = (0..n)
            .map(|i| Ipv4Addr::from(0xc633_6400 + i).into())
            .collect();
        let auth = Auth::new(b"testpass", vhid, &vips).unwrap();
        let entry = vhid_entry(
            Protocol::CARP,
            State::BACKUP,
            Flags::default(),
            vmac,
            vmac,
            Some(&auth),
        );
        (auth, entry)
    };
    let (auth16, entry16) = many(2, 16);
    let (auth12, entry12) = many(3, 12);
    for (n, auth, entry) in [(2, &auth16, &entry16), (3, &auth12, &entry12)] {
        let key = VhidKey::new(LO, 0, n);
        dp.set_keys(&key, &vhid_keys(auth)).unwrap();
        dp.set_vhid(&key, entry).unwrap();
    }
    // VHID 4: VHID 1's VIPs under strict authentication (28 suffix bytes, a counter check).
    let vips = [vip4.into(), vip6.into()];
    let strict = Auth::with_mode(b"testpass", 4, &vips, AuthMode::Strict).unwrap();
    let entry4 = vhid_entry(
        Protocol::CARP,
        State::BACKUP,
        Flags::default(),
        vmac,
        vmac,
        Some(&strict),
    );
    dp.set_keys(&VhidKey::new(LO, 0, 4), &vhid_keys(&strict))
        .unwrap();
    dp.set_vhid(&VhidKey::new(LO, 0, 4), &entry4).unwrap();
    // A balanced group led by VHID 5 (three VHIDs), this host MASTER of the first: TCP
    // to the VIP from a source whose flow is ours, and from one whose flow is not. Kept
    // frames are rewritten to `if_mac`, here the group MAC itself, so that a kept frame
    // comes out as it went in and the kept path can run with `repeat` too.
    let group = BalanceEntry {
        mask: 0b001,
        count: 3,
        if_mac: group_mac(5),
        master_until: u64::MAX,
        ..BalanceEntry::default()
    };
    dp.set_balance(5, &group).unwrap();
    let flow = |ours: bool| {
        let src = (2..=254u8)
            .map(|i| [192, 0, 2, i])
            .find(|s| keeps(group.mask, group.count, fold_v4(*s, vip4.octets())) == ours)
            .unwrap();
        let mut f = frames::ethernet(group_mac(5), [2, 0, 0, 0, 0, 0xbb], None, frames::ETH_P_IP);
        f.extend(frames::ipv4(src, vip4.octets(), 64, 6, &[0; 20]));
        f
    };
    let (kept, dropped) = (flow(true), flow(false));

    let peer: IpAddr = Ipv4Addr::new(192, 0, 2, 2).into();
    let mac = [2, 0, 0, 0, 0, 0xbb];
    // advskew follows the counter: the same fields from the same source twice within half
    // an interval would be dropped as a replay flood, and this measures the verified path.
    let advert_of = |vhid, counter: u64, digest| CarpHeader {
        vhid,
        advskew: counter as u8,
        demote: 0,
        advbase: 1,
        counter,
        digest,
    };
    let advert = move |counter, digest| advert_of(1, counter, digest);
    let mut tcp = frames::ethernet([2, 0, 0, 0, 0, 0xaa], mac, None, frames::ETH_P_IP);
    tcp.extend(frames::ipv4(
        [192, 0, 2, 2],
        [192, 0, 2, 1],
        64,
        6,
        &[0; 20],
    ));
    let calls: usize = carp_tests::setting("CALLS", 20_000);
    let mut events = dp.take_events().unwrap();
    let mut run = |frame: &[u8], repeat: u32| {
        let r = dp
            .program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..Default::default()
            })
            .unwrap();
        while events.next().is_some() {}
        let verdict = match r.return_value {
            1 => "DROP",
            2 => "PASS",
            3 => "TX",
            _ => "?",
        };
        (r.duration.as_nanos() as u64, verdict)
    };
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };

    println!("| path | ns per packet | method | verdict |");
    println!("|---|---:|---|---|");
    let stateless = [
        ("non-CARP IPv4 (TCP), passed", tcp.clone()),
        (
            "CARP advert, bad HMAC, dropped",
            frames::carp(peer, &advert(0, [0; 20])),
        ),
        (
            "CARP advert, 16 IPv4 VIPs, bad HMAC, dropped",
            frames::carp(peer, &advert_of(2, 0, [0; 20])),
        ),
        (
            "CARP advert, 12 IPv4 VIPs (two final blocks), bad HMAC, dropped",
            frames::carp(peer, &advert_of(3, 0, [0; 20])),
        ),
        (
            "CARP advert, strict, bad HMAC, dropped",
            frames::carp(peer, &advert_of(4, 0, [0; 20])),
        ),
        (
            "IPv4 (TCP) to a balanced group's MAC, another host's flow, dropped",
            dropped,
        ),
        (
            "IPv4 (TCP) to a balanced group's MAC, this host's flow, kept (rewritten)",
            kept.clone(),
        ),
    ];
    for (name, frame) in &stateless {
        let (ns, verdict) = run(frame, repeat);
        println!("| {name} | {ns} | mean of repeat {repeat} | {verdict} |");
    }
    /// A frame for call `i`.
    type Make = Box<dyn Fn(u64) -> Vec<u8>>;
    let per_call: Vec<(&str, Make)> = vec![
        (
            "baseline: non-CARP IPv4, passed",
            Box::new(move |_| tcp.clone()),
        ),
        (
            "CARP advert, HMAC verified, to the agent",
            Box::new(move |i| frames::carp(peer, &advert(i, auth.sign(i)))),
        ),
        (
            "CARP advert, 16 IPv4 VIPs, HMAC verified, to the agent",
            Box::new(move |i| frames::carp(peer, &advert_of(2, i, auth16.sign(i)))),
        ),
        (
            "CARP advert, 12 IPv4 VIPs, HMAC verified, to the agent",
            Box::new(move |i| frames::carp(peer, &advert_of(3, i, auth12.sign(i)))),
        ),
        (
            "CARP advert, strict, HMAC verified, to the agent",
            Box::new(move |i| {
                let mut h = advert_of(4, i, [0; 20]);
                h.digest = strict.sign_header(&h, peer);
                frames::carp(peer, &h)
            }),
        ),
        (
            "IPv4 (TCP) to a balanced group's MAC, this host's flow, kept (rewritten)",
            Box::new(move |_| kept.clone()),
        ),
        (
            "ARP request for the VIP, answered (XDP_TX)",
            Box::new(move |_| frames::arp_request(mac, [192, 0, 2, 2], vip4.octets())),
        ),
        (
            "Neighbor Solicitation for the VIP6, answered (XDP_TX)",
            Box::new(move |_| {
                frames::neighbor_solicit(
                    mac,
                    "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
                    vip6.octets(),
                )
            }),
        ),
    ];
    for (name, make) in per_call {
        let mut verdict = "";
        let times = (0..calls as u64)
            .map(|i| {
                let (ns, v) = run(&make(i), 1);
                verdict = v;
                ns
            })
            .collect();
        println!(
            "| {name} | {} | median of {calls} single runs | {verdict} |",
            median(times)
        );
    }
}
