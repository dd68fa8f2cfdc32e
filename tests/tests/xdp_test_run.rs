//! The XDP program run on crafted frames with BPF_PROG_TEST_RUN (needs root): every path
//! and every drop reason, with verdict, output bytes, counters and ring buffer events.
//! Every case runs twice, as XDP and as the tc program (`xdp::` and `tc::`): one code for
//! both hooks, and the same verdicts in their tc form.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use aya::{
    maps::{MapData, RingBuf},
    programs::{TestRun as _, TestRunOptions},
};
use carp_agent::{
    hmac::{Auth, AuthMode},
    xdp::{DataPlane, parse_event, vhid_entry, vhid_keys},
};
use carp_common::{
    Protocol, State,
    maps::{AdvertEvent, Flags, VhidKey, VipEntry, VipKey, XdpStats},
    vrrp::Vrrp3Header,
    wire::{self, CarpHeader},
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_tests::frames as frame;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// tc's verdicts (linux/pkt_cls.h, linux/bpf.h), translated to XDP's by [`Fixture::run`]:
/// what XDP passes goes on to the tc programs behind carp.
const TCX_NEXT: u32 = carp_common::tc::TCX_NEXT as u32;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
/// BPF_PROG_TEST_RUN runs XDP programs as if received on the loopback device.
const LO: u32 = 1;
const VHID: u8 = 1;
const VRID: u8 = 51;
const PASSWORD: &[u8] = b"testpass";
const IF_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

fn vip4() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 50)
}
fn vip6() -> Ipv6Addr {
    "2001:db8::50".parse().unwrap()
}
fn peer4() -> IpAddr {
    Ipv4Addr::new(192, 0, 2, 2).into()
}

fn key(vhid: u8, vlan: u16) -> VhidKey {
    VhidKey::new(LO, vlan, vhid)
}

/// A data plane configured like an agent would for VHID 1 (CARP, VIPs 192.0.2.50 and
/// 2001:db8::50, virtual MAC) and VRID 51 (VRRPv3), in `st`.
struct Fixture {
    hook: Hook,
    dp: DataPlane,
    events: RingBuf<MapData>,
    auth: Auth,
}

/// The program under test: the XDP one, or the same code at tc ingress.
#[derive(Clone, Copy)]
enum Hook {
    Xdp,
    Tc,
}

/// Flags of a virtual-MAC VHID.
fn vmac_flags() -> Flags {
    Flags {
        vmac: true,
        ..Flags::default()
    }
}

impl Fixture {
    fn new(hook: Hook, st: State) -> Self {
        let mut dp = DataPlane::load().unwrap();
        let auth = Auth::new(PASSWORD, VHID, &[vip4().into(), vip6().into()]).unwrap();
        let events = dp.take_events().unwrap();
        let mut f = Self {
            hook,
            dp,
            events,
            auth,
        };
        f.set_state(st, vmac_flags());
        let vrrp = vhid_entry(Protocol::VRRPV3, st, Flags::default(), IF_MAC, IF_MAC, None);
        f.dp.set_vhid(&key(VRID, 0), &vrrp).unwrap();
        f
    }

    /// The VHID's state, a MASTER with a lease that never runs out.
    fn set_state(&mut self, st: State, fl: Flags) {
        self.set_state_until(st, fl, u64::MAX);
    }

    fn set_state_until(&mut self, st: State, fl: Flags, master_until: u64) {
        let vmac = wire::virtual_mac(VHID);
        let mut entry = vhid_entry(Protocol::CARP, st, fl, vmac, IF_MAC, Some(&self.auth));
        entry.master_until = master_until;
        let keys = vhid_keys(&self.auth);
        for vlan in [0, 7] {
            self.dp.set_keys(&key(VHID, vlan), &keys).unwrap();
            self.dp.set_vhid(&key(VHID, vlan), &entry).unwrap();
        }
        let v = VipEntry {
            vhid: VHID,
            _pad: [0; 3],
        };
        self.dp
            .set_vip(&VipKey::new(LO, 0, vip4().into()), &v)
            .unwrap();
        self.dp
            .set_vip(&VipKey::new(LO, 0, vip6().into()), &v)
            .unwrap();
    }

    /// Runs one frame: verdict (tc's in XDP's terms), output bytes.
    fn run(&mut self, data: &[u8]) -> (u32, Vec<u8>) {
        let mut out = vec![0u8; data.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(data),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let r = match self.hook {
            Hook::Xdp => self.dp.program().unwrap().test_run(opts),
            Hook::Tc => self.dp.classifier().unwrap().test_run(opts),
        }
        .unwrap();
        out.truncate(r.data_size_out as usize);
        let verdict = match (self.hook, r.return_value) {
            (Hook::Xdp, v) => v,
            (Hook::Tc, TCX_NEXT) => XDP_PASS,
            (Hook::Tc, TC_ACT_SHOT) => XDP_DROP,
            (Hook::Tc, TC_ACT_REDIRECT) => XDP_TX,
            // No XDP verdict: fails every comparison.
            (Hook::Tc, v) => 1000 + v,
        };
        (verdict, out)
    }

    /// Whether BPF_PROG_TEST_RUN runs `frame`: never shorter than an Ethernet header, and
    /// for tc, whose skb it builds with its IP header, never an IP frame without one.
    fn builds(&self, frame: &[u8]) -> bool {
        let fixed = match (self.hook, frame.get(12..14)) {
            (Hook::Xdp, _) => 0,
            (Hook::Tc, Some([0x08, 0x00])) => 20,
            (Hook::Tc, Some([0x86, 0xdd])) => 40,
            (Hook::Tc, _) => 0,
        };
        frame.len() >= 14 + fixed
    }

    /// Runs one frame and returns the verdict and the change in counters.
    fn run_counted(&mut self, data: &[u8]) -> (u32, XdpStats) {
        let before = self.dp.stats().unwrap();
        let (verdict, _) = self.run(data);
        (verdict, self.dp.stats().unwrap().since(&before))
    }

    fn next_event(&mut self) -> Option<AdvertEvent> {
        self.events.next().and_then(|item| parse_event(&item))
    }

    fn advert(&self, counter: u64, advskew: u8) -> CarpHeader {
        CarpHeader {
            vhid: VHID,
            advskew,
            demote: 0,
            advbase: 1,
            counter,
            digest: self.auth.sign(counter),
        }
    }
}

/// A Neighbor Solicitation from 2001:db8::2 for the VIP6, and that source.
fn solicit_vip6() -> (Vec<u8>, [u8; 16]) {
    let src: [u8; 16] = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
    (frame::neighbor_solicit(PEER_MAC, src, vip6().octets()), src)
}

/// An IPv4 frame (protocol 6) for the VIP, to the virtual MAC.
fn to_vmac_flags() -> Vec<u8> {
    let mut f = frame::ethernet(wire::virtual_mac(VHID), PEER_MAC, None, frame::ETH_P_IP);
    f.extend(frame::ipv4(
        [192, 0, 2, 2],
        vip4().octets(),
        64,
        6,
        &[0; 20],
    ));
    f
}

/// The counters one protocol-112 packet moves: `proto112` and what `f` sets.
fn only(f: impl FnOnce(&mut XdpStats)) -> XdpStats {
    let mut s = XdpStats {
        proto112: 1,
        ..Default::default()
    };
    f(&mut s);
    s
}

fn valid_carp_advert_goes_to_the_agent_with_its_fields(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let h = fx.advert(0x1122334455667788, 100);
    let (verdict, delta) = fx.run_counted(&frame::carp(peer4(), &h));
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(delta, only(|s| s.adverts = 1));
    let ev = fx.next_event().expect("an event in the ring buffer");
    assert_eq!(
        (ev.ifindex, ev.vlan, ev.vhid, ev.version, ev.family),
        (LO, 0, VHID, 2, 4)
    );
    assert_eq!(
        (ev.advbase, ev.advskew, ev.counter),
        (1, 100, 0x1122334455667788)
    );
    assert_eq!(&ev.src[..4], &[192, 0, 2, 2]);
    assert!(ev.ktime_ns > 0);
    assert!(fx.next_event().is_none());
}

fn ipv6_and_vlan_tagged_adverts(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let src6: IpAddr = "2001:db8::2".parse().unwrap();
    let (verdict, delta) = fx.run_counted(&frame::carp(src6, &fx.advert(5, 0)));
    assert_eq!((verdict, delta), (XDP_DROP, only(|s| s.adverts = 1)));
    let ev = fx.next_event().unwrap();
    assert_eq!(ev.family, 6);
    let tagged = frame::proto112(peer4(), VHID, Some(7), wire::TTL, &fx.advert(6, 0).encode());
    let (verdict, delta) = fx.run_counted(&tagged);
    assert_eq!((verdict, delta), (XDP_DROP, only(|s| s.adverts = 1)));
    assert_eq!(fx.next_event().unwrap().vlan, 7);
    // VLAN 8 is not configured: someone else's.
    let other = frame::proto112(peer4(), VHID, Some(8), wire::TTL, &fx.advert(7, 0).encode());
    assert_eq!(fx.run_counted(&other), (XDP_PASS, only(|s| s.foreign = 1)));
}

fn every_invalid_carp_advert_is_dropped_with_its_reason(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let good = fx.advert(42, 0);
    let payload = good.encode();
    let with = |f: &dyn Fn(&mut [u8; 36])| {
        let mut p = payload;
        f(&mut p);
        p
    };
    let recksum = |p: &mut [u8; 36]| {
        p[6] = 0;
        p[7] = 0;
        let c = carp_common::checksum::internet(p);
        p[6..8].copy_from_slice(&c.to_be_bytes());
    };
    let cases: Vec<(&str, Vec<u8>, XdpStats)> = vec![
        (
            "ttl 64",
            frame::proto112(peer4(), VHID, None, 64, &payload),
            only(|s| s.bad_ttl = 1),
        ),
        (
            "version 4",
            frame::proto112(
                peer4(),
                VHID,
                None,
                255,
                &with(&|p| {
                    p[0] = 0x41;
                    recksum(p)
                }),
            ),
            only(|s| s.bad_version = 1),
        ),
        (
            "type 2",
            frame::proto112(
                peer4(),
                VHID,
                None,
                255,
                &with(&|p| {
                    p[0] = 0x22;
                    recksum(p)
                }),
            ),
            only(|s| s.bad_type = 1),
        ),
        (
            "authlen 6",
            frame::proto112(
                peer4(),
                VHID,
                None,
                255,
                &with(&|p| {
                    p[3] = 6;
                    recksum(p)
                }),
            ),
            only(|s| s.bad_authlen = 1),
        ),
        (
            "checksum",
            frame::proto112(peer4(), VHID, None, 255, &with(&|p| p[6] ^= 1)),
            only(|s| s.bad_checksum = 1),
        ),
        (
            "wrong digest",
            frame::proto112(
                peer4(),
                VHID,
                None,
                255,
                &with(&|p| {
                    p[20] ^= 1;
                    recksum(p)
                }),
            ),
            only(|s| s.bad_hmac = 1),
        ),
        (
            "truncated",
            frame::proto112(peer4(), VHID, None, 255, &payload[..30]),
            only(|s| s.bad_length = 1),
        ),
        (
            "trailing bytes",
            frame::proto112(peer4(), VHID, None, 255, &[&payload[..], &[0, 0]].concat()),
            only(|s| s.bad_length = 1),
        ),
    ];
    for (name, data, expected) in cases {
        assert_eq!(fx.run_counted(&data), (XDP_DROP, expected), "{name}");
    }
    assert!(
        fx.next_event().is_none(),
        "no invalid advert reaches the agent"
    );

    // A wrong password: same layout, other key.
    let other = Auth::new(b"wrong", VHID, &[vip4().into(), vip6().into()]).unwrap();
    let forged = CarpHeader {
        digest: other.sign(42),
        ..good
    };
    assert_eq!(
        fx.run_counted(&frame::carp(peer4(), &forged)),
        (XDP_DROP, only(|s| s.bad_hmac = 1))
    );
}

/// OpenBSD's carp_prepare_ad sends one cookie as the counter of every advert: a repeat of
/// the last advert is a keepalive and reaches the agent (dropping it split OpenBSD groups),
/// but not sooner than half its interval after the last, so a replay flood cannot.
fn an_advert_repeated_as_openbsd_does_reaches_the_agent_and_a_flood_does_not(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    // OpenBSD allows advbase 0: advskew 1 makes the interval 1/256 s, the gap 1/512 s.
    let cookie = CarpHeader {
        advbase: 0,
        advskew: 1,
        ..fx.advert(0x0bad_c0de_0bad_c0de, 1)
    };
    let f = frame::carp(peer4(), &cookie);
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.adverts = 1)));
    let mut flooded = XdpStats::default();
    let mut passed = XdpStats::default();
    for _ in 0..5 {
        // Back to back: inside the gap, a flood.
        let (verdict, delta) = fx.run_counted(&f);
        assert_eq!(verdict, XDP_DROP);
        flooded = XdpStats::total([&flooded, &delta]);
        // Past the gap: a keepalive.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (verdict, delta) = fx.run_counted(&f);
        assert_eq!(verdict, XDP_DROP);
        passed = XdpStats::total([&passed, &delta]);
    }
    assert_eq!((flooded.replay, flooded.adverts), (5, 0), "{flooded:?}");
    assert_eq!((passed.repeated, passed.adverts), (5, 5), "{passed:?}");
    let events = std::iter::from_fn(|| fx.next_event()).count();
    assert_eq!(events, 6);
    // The same counter with other timing (OpenBSD's advskew changed) is news.
    let moved = CarpHeader {
        advskew: 2,
        ..cookie
    };
    let f = frame::carp(peer4(), &moved);
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.adverts = 1)));
    // So is the same counter from another source (two masters after a heal).
    let other = frame::carp(Ipv4Addr::new(192, 0, 2, 3).into(), &moved);
    assert_eq!(fx.run_counted(&other), (XDP_DROP, only(|s| s.adverts = 1)));
    // Captured adverts sent in turn differ only in their counters: a flood all the same
    // (they once all reached the agent).
    let turn = [fx.advert(100, 7), fx.advert(101, 7)];
    let first = frame::carp(peer4(), &turn[0]);
    assert_eq!(fx.run_counted(&first), (XDP_DROP, only(|s| s.adverts = 1)));
    for h in turn.iter().cycle().skip(1).take(6) {
        let f = frame::carp(peer4(), h);
        assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.replay = 1)));
    }
}

/// README, threat model: "adverts from one source with the same advbase, advskew and
/// demote byte reach the agent at most twice per advert interval, whatever their
/// counters". At advbase 1 (interval 1 s) the same fields with a new counter 0.4 s after
/// the last advert that passed are a `replay`; 0.6 s after it they pass. Each verdict is
/// taken only from times that bound the program's clock on both sides, 100 ms from the
/// half-interval line.
fn the_same_fields_reach_the_agent_at_most_twice_per_interval(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    // The first test run of a program takes the kernel up to a second: not timed.
    let warm = frame::carp(peer4(), &fx.advert(99, 7));
    assert_eq!(fx.run_counted(&warm), (XDP_DROP, only(|s| s.adverts = 1)));
    let half = std::time::Duration::from_millis(500);
    let start = std::time::Instant::now();
    let f = frame::carp(peer4(), &fx.advert(100, 0));
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.adverts = 1)));
    let passed = start.elapsed();
    for (counter, at, expected) in [
        (101, 0.4, only(|s| s.replay = 1)),
        (102, 0.6, only(|s| s.adverts = 1)),
    ] {
        let at = half.mul_f64(2.0 * at);
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let sent = start.elapsed();
        let f = frame::carp(peer4(), &fx.advert(counter, 0));
        let verdict = fx.run_counted(&f);
        let (least, most) = (sent.saturating_sub(passed), start.elapsed());
        assert!(
            most < half || least > half,
            "between {least:?} and {most:?} after the last advert: too slow a machine to tell"
        );
        assert_eq!(verdict, (XDP_DROP, expected), "at {at:?}");
    }
}

/// A forged advert never moves the replay state: the genuine advert that follows it with
/// the same counter is not taken for a repeat (issue: the agent once recorded unverified
/// adverts).
fn a_forged_advert_does_not_touch_the_replay_state(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let genuine = fx.advert(41, 0);
    let mut forged = genuine;
    forged.digest[0] ^= 1;
    let f = frame::carp(peer4(), &forged);
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.bad_hmac = 1)));
    let f = frame::carp(peer4(), &genuine);
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.adverts = 1)));
}

/// carp_hmac_verify in the kernel for any VIP count: the prefix's whole SHA-1 blocks are in
/// the prepared state (16 IPv4 VIPs: 67 bytes; 300 VIPs of both families: thousands).
fn long_vip_lists_are_verified_in_the_kernel(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    // Each advert with an advskew of its own: the same fields again would be a flood.
    let mut advskew = 0;
    for (n4, n6) in [(12u32, 0u16), (16, 0), (11, 2), (3, 1), (200, 100)] {
        let mut vips: Vec<IpAddr> = (0..n4)
            .map(|i| Ipv4Addr::from(0xc000_0200 + i).into())
            .collect();
        vips.extend((0..n6).map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i))));
        fx.auth = Auth::new(PASSWORD, VHID, &vips).unwrap();
        fx.set_state(State::BACKUP, Flags::default());
        for counter in [0, 3, u64::MAX] {
            advskew += 1;
            let f = frame::carp(peer4(), &fx.advert(counter, advskew));
            assert_eq!(
                fx.run_counted(&f),
                (XDP_DROP, only(|s| s.adverts = 1)),
                "{n4} + {n6} VIPs"
            );
            assert_eq!(fx.next_event().unwrap().counter, counter);
            let mut forged = fx.advert(counter ^ 1, 0);
            forged.digest = fx.auth.sign(counter);
            let f = frame::carp(peer4(), &forged);
            assert_eq!(
                fx.run_counted(&f),
                (XDP_DROP, only(|s| s.bad_hmac = 1)),
                "{n4} + {n6} VIPs"
            );
        }
    }
}

fn vrrp3_adverts(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let h = Vrrp3Header {
        vrid: VRID,
        priority: 100,
        count: 1,
        max_adver_int: 100,
    };
    let f = frame::vrrp_v4([192, 0, 2, 2], &h, &[[192, 0, 2, 100]]);
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.adverts = 1)));
    let ev = fx.next_event().unwrap();
    assert_eq!(
        (ev.version, ev.vhid, ev.priority, ev.interval_cs),
        (3, VRID, 100, 100)
    );
    // Checksum covers the pseudo-header: the same payload from another source fails.
    let mut bad = f.clone();
    bad[14 + 15] = 9;
    let ipsum = carp_common::checksum::internet(&{
        let mut ip = bad[14..34].to_vec();
        ip[10] = 0;
        ip[11] = 0;
        ip
    });
    bad[24..26].copy_from_slice(&ipsum.to_be_bytes());
    assert_eq!(
        fx.run_counted(&bad),
        (XDP_DROP, only(|s| s.bad_checksum = 1))
    );
    // Count of addresses that does not match the length.
    let mut short = f.clone();
    short.truncate(short.len() - 4);
    assert_eq!(
        fx.run_counted(&short).0,
        XDP_DROP,
        "IP length now disagrees too"
    );
    // A CARP advert for a group numbered like our VRRP VRID is another group's: passed.
    let carp = CarpHeader {
        vhid: VRID,
        ..fx.advert(1, 0)
    };
    assert_eq!(
        fx.run_counted(&frame::carp(peer4(), &carp)),
        (XDP_PASS, only(|s| s.foreign = 1))
    );
}

/// OpenBSD's carp_hmac_verify accepts digests with and without IPv6 link-local VIPs and
/// sends the one without (`HMAC_NOV6LL`); FreeBSD hashes them all. A VHID with a
/// link-local VIP verifies both, and nothing else.
fn both_openbsd_hmac_variants_verify(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let ll: IpAddr = "fe80::50".parse().unwrap();
    fx.auth = Auth::new(PASSWORD, VHID, &[vip4().into(), ll]).unwrap();
    fx.set_state(State::BACKUP, Flags::default());
    let freebsd = fx.advert(11, 0);
    let openbsd = CarpHeader {
        digest: Auth::new(PASSWORD, VHID, &[vip4().into()])
            .unwrap()
            .sign(12),
        // Another advskew: the same fields right after the first would be a flood.
        ..fx.advert(12, 1)
    };
    for h in [freebsd, openbsd] {
        let f = frame::carp(peer4(), &h);
        assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.adverts = 1)));
    }
    let other = CarpHeader {
        digest: Auth::new(PASSWORD, VHID, &[ll]).unwrap().sign(13),
        ..fx.advert(13, 0)
    };
    let f = frame::carp(peer4(), &other);
    assert_eq!(fx.run_counted(&f), (XDP_DROP, only(|s| s.bad_hmac = 1)));
}

/// After a reload changed the VIPs or the password, the digest it replaced verifies until
/// `previous_until`, so a peer reloaded a little later does not look like a forger.
fn the_replaced_digest_verifies_for_a_while(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let old = Auth::new(b"old-pass", VHID, &[vip4().into(), vip6().into()]).unwrap();
    let now = {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    };
    let advert = |counter| CarpHeader {
        digest: old.sign(counter),
        ..fx.advert(counter, 0)
    };
    let (window, expired) = (advert(20), advert(21));
    for (until, header, counted) in [
        (now + 60_000_000_000, window, only(|s| s.adverts = 1)),
        (now - 1, expired, only(|s| s.bad_hmac = 1)),
    ] {
        let mut keys = vhid_keys(&fx.auth);
        keys.auth_previous = old.kernel();
        keys.previous_until = until;
        fx.dp.set_keys(&key(VHID, 0), &keys).unwrap();
        let f = frame::carp(peer4(), &header);
        assert_eq!(fx.run_counted(&f), (XDP_DROP, counted));
    }
}

/// VHID 1's advert from `src` (advbase 1, advskew 0), signed by `auth`.
fn signed_by(auth: &Auth, counter: u64, src: IpAddr) -> CarpHeader {
    let mut h = CarpHeader {
        vhid: VHID,
        advskew: 0,
        demote: 0,
        advbase: 1,
        counter,
        digest: [0; wire::DIGEST_LEN],
    };
    h.digest = auth.sign_header(&h, src);
    h
}

/// During a switch of `auth` the digest of the mode it replaced verifies, by that mode's
/// rules: a BSD advert through a strict VHID's previous key takes the BSD path (any
/// counter, the event says BSD), a strict one through a BSD VHID's previous key the
/// strict one (its counter must grow, the event says strict).
fn the_other_modes_digest_verifies_by_its_own_rules_during_a_switch(hook: Hook) {
    let vips = [vip4().into(), vip6().into()];
    let bsd = Auth::new(PASSWORD, VHID, &vips).unwrap();
    let strict = Auth::with_mode(PASSWORD, VHID, &vips, AuthMode::Strict).unwrap();
    let signed = |auth: &Auth, counter: u64| signed_by(auth, counter, peer4());
    let passed = (XDP_DROP, only(|s| s.adverts = 1));
    let t = 1_800_000_000_000_000_000;
    for (current, previous) in [(&strict, &bsd), (&bsd, &strict)] {
        let mut fx = Fixture::new(hook, State::BACKUP);
        let mut keys = vhid_keys(current);
        keys.auth_previous = previous.kernel();
        keys.previous_until = u64::MAX;
        fx.dp.set_keys(&key(VHID, 0), &keys).unwrap();
        // A BSD counter below the strict one recorded: not a replay.
        for (auth, counter, was_strict) in [(&strict, t, 1), (&bsd, 5, 0), (&strict, t + 1, 1)] {
            let f = frame::carp(peer4(), &signed(auth, counter));
            assert_eq!(fx.run_counted(&f), passed, "{:?}", auth.mode());
            let ev = fx.next_event().unwrap();
            assert_eq!((ev.counter, ev.strict), (counter, was_strict));
        }
        let replayed = frame::carp(peer4(), &signed(&strict, t + 1));
        assert_eq!(
            fx.run_counted(&replayed),
            (XDP_DROP, only(|s| s.old_counter = 1))
        );
        fx.dp.set_keys(&key(VHID, 0), &vhid_keys(current)).unwrap();
        let other = frame::carp(peer4(), &signed(previous, t + 2));
        assert_eq!(fx.run_counted(&other), (XDP_DROP, only(|s| s.bad_hmac = 1)));
    }
}

/// RFC 5798 allows up to 255 addresses (IPv4) and as many as one packet holds (IPv6);
/// keepalived and FreeBSD 15 send them all. Longer than that is malformed.
fn vrrp3_adverts_with_every_address_count(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    for count in [0usize, 1, 16, 17, 100, 255] {
        let addrs: Vec<[u8; 4]> = (0..count)
            .map(|i| (0xc633_6400u32 + i as u32).to_be_bytes())
            .collect();
        let h = Vrrp3Header {
            vrid: VRID,
            priority: 100,
            count: count as u8,
            max_adver_int: 100,
        };
        let f = frame::vrrp_v4([192, 0, 2, 2], &h, &addrs);
        assert_eq!(
            fx.run_counted(&f),
            (XDP_DROP, only(|s| s.adverts = 1)),
            "{count} addresses"
        );
        assert_eq!(fx.next_event().unwrap().priority, 100);
        // One bit flipped in the last address: the checksum covers all of them.
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        if count > 0 {
            assert_eq!(
                fx.run_counted(&bad),
                (XDP_DROP, only(|s| s.bad_checksum = 1)),
                "{count} addresses"
            );
        }
    }
    let src: IpAddr = "fe80::2".parse().unwrap();
    for count in [1u16, 4, 5, 90] {
        let vips: Vec<IpAddr> = (0..count)
            .map(|i| IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 2, i)))
            .collect();
        let h = Vrrp3Header {
            vrid: VRID,
            priority: 200,
            count: 0,
            max_adver_int: 100,
        };
        let payload = frame::vrrp_payload(src, frame::group(src), h, &vips).unwrap();
        let f = frame::advert(src, wire::virtual_mac_v6(VRID), None, &payload);
        assert_eq!(
            fx.run_counted(&f),
            (XDP_DROP, only(|s| s.adverts = 1)),
            "{count} IPv6 addresses"
        );
        assert_eq!(fx.next_event().unwrap().priority, 200);
    }
}

/// An advert the frame holds only part of (its IP header announces more than the frame
/// has) is dropped as `truncated`, never read as a shorter one: a VRRPv3 advert cut short
/// once reached the agent with priority 0, "master stopping", and backups took over. The
/// largest adverts of each protocol and family, cut right after their header, midway and
/// one word short.
fn adverts_cut_short_are_dropped_as_truncated(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let (v4, v6) = frame::largest_vrrp3(VRID, 2);
    let carp = frame::carp(peer4(), &fx.advert(1, 0));
    for (name, f, l4) in [
        ("VRRPv3 IPv4", &v4, 34),
        ("VRRPv3 IPv6", &v6, 54),
        ("CARP", &carp, 34),
    ] {
        // Whole, it is an advert.
        assert_eq!(
            fx.run_counted(f),
            (XDP_DROP, only(|s| s.adverts = 1)),
            "{name}"
        );
        assert!(fx.next_event().is_some(), "{name}");
        for len in [l4 + 8, (l4 + f.len()) / 2, f.len() - 2] {
            assert_eq!(
                fx.run_counted(&f[..len]),
                (XDP_DROP, only(|s| s.truncated = 1)),
                "{name} cut to {len} of {} bytes",
                f.len()
            );
        }
    }
    assert!(
        fx.next_event().is_none(),
        "nothing cut short reached the agent"
    );
}

/// RFC 5798 7.3: an IPv6 virtual router's MAC is 00:00:5e:00:02:vrid. Frames to it are
/// the master's (clients of a VIP6 of keepalived or FreeBSD 15 send there); the IPv4
/// virtual MAC of the same number is not this VHID's.
fn frames_to_the_ipv6_vrrp_mac_are_ours_while_master(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let mac6 = wire::virtual_mac_v6(VRID);
    let mut entry = vhid_entry(
        Protocol::VRRPV3,
        State::MASTER,
        vmac_flags(),
        mac6,
        IF_MAC,
        None,
    );
    entry.master_until = u64::MAX;
    fx.dp.set_vhid(&key(VRID, 0), &entry).unwrap();
    let mut f = frame::ethernet(mac6, PEER_MAC, None, frame::ETH_P_IPV6);
    f.extend(frame::ipv6([0x20; 16], [0x20; 16], 64, 6, &[0; 20]));
    let before = fx.dp.stats().unwrap();
    let (verdict, out) = fx.run(&f);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(&out[..6], &IF_MAC, "rewritten to the interface MAC");
    assert_eq!(fx.dp.stats().unwrap().since(&before).vmac_passed, 1);
    let mut v4 = f.clone();
    v4[..6].copy_from_slice(&wire::virtual_mac(VRID));
    assert_eq!(fx.run(&v4), (XDP_PASS, v4.clone()), "not this VHID's MAC");
    entry.state = State::BACKUP;
    fx.dp.set_vhid(&key(VRID, 0), &entry).unwrap();
    let (verdict, delta) = fx.run_counted(&f);
    assert_eq!((verdict, delta.vmac_dropped), (XDP_DROP, 1));
}

fn unknown_vhids_and_other_traffic_pass_untouched(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let foreign = CarpHeader {
        vhid: 99,
        ..fx.advert(1, 0)
    };
    let f = frame::carp(peer4(), &foreign);
    let (verdict, out) = fx.run(&f);
    assert_eq!((verdict, &out[..]), (XDP_PASS, &f[..]));
    let mut icmp = frame::ethernet(IF_MAC, PEER_MAC, None, frame::ETH_P_IP);
    icmp.extend(frame::ipv4(
        [192, 0, 2, 2],
        [192, 0, 2, 1],
        64,
        1,
        &[8, 0, 0, 0, 0, 0, 0, 0],
    ));
    assert_eq!(fx.run_counted(&icmp), (XDP_PASS, XdpStats::default()));
    let runt = frame::ethernet(IF_MAC, PEER_MAC, None, frame::ETH_P_IP);
    if fx.builds(&runt) {
        assert_eq!(fx.run_counted(&runt), (XDP_PASS, XdpStats::default()));
    }
}

fn arp_for_a_vip_is_answered_while_master_and_dropped_otherwise(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let req = frame::arp_request(PEER_MAC, [192, 0, 2, 2], vip4().octets());
    let (verdict, out) = fx.run(&req);
    assert_eq!(verdict, XDP_TX);
    let vmac = wire::virtual_mac(VHID);
    let mut expected = frame::ethernet(PEER_MAC, vmac, None, frame::ETH_P_ARP);
    expected.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
    expected.extend_from_slice(&vmac);
    expected.extend_from_slice(&vip4().octets());
    expected.extend_from_slice(&PEER_MAC);
    expected.extend_from_slice(&[192, 0, 2, 2]);
    assert_eq!(out, expected);
    // Other addresses are the kernel's business.
    let other = frame::arp_request(PEER_MAC, [192, 0, 2, 2], [192, 0, 2, 1]);
    assert_eq!(fx.run(&other), (XDP_PASS, other.clone()));
    for st in [State::BACKUP, State::INIT] {
        fx.set_state(st, vmac_flags());
        let (verdict, delta) = fx.run_counted(&req);
        assert_eq!(verdict, XDP_DROP);
        assert_eq!(delta.arp_dropped, 1);
    }
}

fn neighbor_solicitation_for_a_vip6_is_answered_while_master(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let (ns, src) = solicit_vip6();
    let (verdict, out) = fx.run(&ns);
    assert_eq!(verdict, XDP_TX);
    let vmac = wire::virtual_mac(VHID);
    assert_eq!(&out[..6], &PEER_MAC);
    assert_eq!(&out[6..12], &vmac);
    let ip = &out[14..54];
    assert_eq!((ip[6], ip[7]), (frame::IPPROTO_ICMPV6, 255));
    assert_eq!(&ip[8..24], &vip6().octets());
    assert_eq!(&ip[24..40], &src);
    let na = &out[54..];
    assert_eq!(na.len(), 32);
    assert_eq!(
        (na[0], na[1], na[4]),
        (136, 0, 0x60),
        "NA, Solicited + Override"
    );
    assert_eq!(&na[8..24], &vip6().octets());
    assert_eq!(&na[24..26], &[2, 1], "target link-layer address option");
    assert_eq!(&na[26..32], &vmac);
    let dst: [u8; 16] = ip[24..40].try_into().unwrap();
    assert_eq!(frame::icmpv6_checksum(&vip6().octets(), &dst, na), 0);

    // A router's NAs carry the Router flag (VRRPv3 always, RFC 5798; CARP when forwarding).
    fx.set_state(
        State::MASTER,
        Flags {
            router: true,
            ..vmac_flags()
        },
    );
    let (verdict, out) = fx.run(&ns);
    assert_eq!(
        (verdict, out[54 + 4]),
        (XDP_TX, 0xe0),
        "Router + Solicited + Override"
    );
    let dst: [u8; 16] = out[14 + 24..54].try_into().unwrap();
    assert_eq!(
        frame::icmpv6_checksum(&vip6().octets(), &dst, &out[54..]),
        0
    );

    fx.set_state(State::BACKUP, vmac_flags());
    let (verdict, delta) = fx.run_counted(&ns);
    assert_eq!((verdict, delta.ns_dropped), (XDP_DROP, 1));
}

/// RFC 4861 7.1.1: an NS with a hop limit below 255 or a multicast source is invalid; the
/// program leaves it to the kernel, which discards it, instead of answering.
fn invalid_neighbor_solicitations_are_not_answered(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let (ns, _) = solicit_vip6();
    let mut routed = ns.clone();
    routed[14 + 7] = 254;
    assert_eq!(fx.run(&routed), (XDP_PASS, routed.clone()));
    let group: [u8; 16] = "ff02::1".parse::<Ipv6Addr>().unwrap().octets();
    let multicast = frame::neighbor_solicit(PEER_MAC, group, vip6().octets());
    let (verdict, delta) = fx.run_counted(&multicast);
    assert_eq!((verdict, delta.ns_not_answered), (XDP_PASS, 1));
}

/// An on-link attacker's ARP: a request from a broadcast sender address is dropped (as
/// FreeBSD's arpintr drops it); one in a frame to another host's MAC, which the
/// promiscuous interface sees, is not answered. To us, to the VHID's MAC or broadcast, it
/// is.
fn arp_requests_not_for_us_are_not_answered(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let req = frame::arp_request(PEER_MAC, [192, 0, 2, 2], vip4().octets());
    let mut bad_sender = req.clone();
    bad_sender[14 + 8..14 + 14].copy_from_slice(&[0xff; 6]);
    let (verdict, delta) = fx.run_counted(&bad_sender);
    assert_eq!((verdict, delta.arp_bad_sender), (XDP_DROP, 1));
    let mut elsewhere = req.clone();
    elsewhere[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xcc]);
    let (verdict, delta) = fx.run_counted(&elsewhere);
    assert_eq!(
        (verdict, delta.arp_not_ours, delta.arp_replied),
        (XDP_PASS, 1, 0)
    );
    for to in [IF_MAC, wire::virtual_mac(VHID)] {
        let mut unicast = req.clone();
        unicast[..6].copy_from_slice(&to);
        assert_eq!(fx.run(&unicast).0, XDP_TX, "to {to:02x?}");
    }
}

fn frames_to_the_virtual_mac_are_ours_only_while_master(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let f = to_vmac_flags();
    let (verdict, out) = fx.run(&f);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(&out[..6], &IF_MAC, "rewritten to the interface MAC");
    assert_eq!(&out[6..], &f[6..]);
    fx.set_state(State::BACKUP, vmac_flags());
    let (verdict, delta) = fx.run_counted(&f);
    assert_eq!((verdict, delta.vmac_dropped), (XDP_DROP, 1));
    // Interface-MAC mode: the virtual MAC is nobody's, the frame goes on untouched.
    fx.set_state(State::BACKUP, Flags::default());
    assert_eq!(fx.run(&f), (XDP_PASS, f.clone()));
}

/// A MASTER whose lease ran out (its agent stopped renewing it) answers nothing.
fn a_master_whose_lease_ran_out_answers_nothing(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    // 1 ns after boot: long past.
    fx.set_state_until(State::MASTER, vmac_flags(), 1);
    let arp = frame::arp_request(PEER_MAC, [192, 0, 2, 2], vip4().octets());
    let (ns, _) = solicit_vip6();
    let to_vmac = to_vmac_flags();
    let (verdict, delta) = fx.run_counted(&arp);
    assert_eq!((verdict, delta.arp_dropped), (XDP_DROP, 1));
    let (verdict, delta) = fx.run_counted(&ns);
    assert_eq!((verdict, delta.ns_dropped), (XDP_DROP, 1));
    let (verdict, delta) = fx.run_counted(&to_vmac);
    assert_eq!((verdict, delta.vmac_dropped), (XDP_DROP, 1));
    // Renewed: answered again.
    fx.set_state_until(State::MASTER, vmac_flags(), u64::MAX);
    assert_eq!(fx.run(&arp).0, XDP_TX);
}

fn random_and_truncated_frames_never_fail(hook: Hook) {
    let mut fx = Fixture::new(hook, State::MASTER);
    let mut valid = vec![
        frame::carp(peer4(), &fx.advert(1, 0)),
        frame::arp_request(PEER_MAC, [192, 0, 2, 2], vip4().octets()),
        frame::neighbor_solicit(
            PEER_MAC,
            "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets(),
            vip6().octets(),
        ),
    ];
    let h = Vrrp3Header {
        vrid: VRID,
        priority: 100,
        count: 1,
        max_adver_int: 100,
    };
    valid.push(frame::vrrp_v4([192, 0, 2, 2], &h, &[[192, 0, 2, 100]]));
    let mut ran = 0;
    for f in &valid {
        for len in 14..=f.len().min(128) {
            if !fx.builds(&f[..len]) {
                continue;
            }
            ran += 1;
            let (verdict, _) = fx.run(&f[..len]);
            assert!(
                [XDP_DROP, XDP_PASS, XDP_TX].contains(&verdict),
                "len {len}: {verdict}"
            );
        }
    }
    // Random bytes, and random bytes behind a valid Ethernet/IP prefix.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..2000 {
        let len = 14 + (rand() % 115) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        if i % 2 == 0 {
            let prefix = &valid[i % valid.len()];
            let n = prefix.len().min(len).min(34);
            f[..n].copy_from_slice(&prefix[..n]);
        }
        if !fx.builds(&f) {
            continue;
        }
        ran += 1;
        let (verdict, _) = fx.run(&f);
        assert!(
            [XDP_DROP, XDP_PASS, XDP_TX].contains(&verdict),
            "frame {f:02x?}"
        );
    }
    // Most frames are long enough for either hook's test_run.
    assert!(ran > 1500, "{ran} frames ran");
}

/// Strict authentication (`auth = "strict"`): the digest covers advbase, advskew, the
/// demote byte and the source, and each source's counter must grow. What BSD mode lets
/// through — a captured advert altered into a bow-out, re-sent from another address or
/// re-sent as it was — is dropped with its reason; a peer's next advert, or its first
/// after a restart (its boot count went up), passes.
fn strict_adverts_cannot_be_altered_moved_or_replayed(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let vips = [vip4().into(), vip6().into()];
    fx.auth = Auth::with_mode(PASSWORD, VHID, &vips, AuthMode::Strict).unwrap();
    fx.set_state(State::BACKUP, vmac_flags());
    let auth = fx.auth.clone();
    let signed = |counter: u64, src: IpAddr| signed_by(&auth, counter, src);
    let t = 1_800_000_000_000_000_000;
    let h = signed(t, peer4());
    let passed = (XDP_DROP, only(|s| s.adverts = 1));
    assert_eq!(fx.run_counted(&frame::carp(peer4(), &h)), passed);
    assert_eq!(fx.next_event().unwrap().counter, t);
    let replayed = (XDP_DROP, only(|s| s.old_counter = 1));
    assert_eq!(fx.run_counted(&frame::carp(peer4(), &h)), replayed);
    assert_eq!(
        fx.run_counted(&frame::carp(peer4(), &signed(t - 1, peer4()))),
        replayed
    );
    let forged = (XDP_DROP, only(|s| s.bad_hmac = 1));
    let bow_out = CarpHeader {
        advbase: wire::BOW_OUT,
        advskew: wire::BOW_OUT,
        ..h
    };
    assert_eq!(fx.run_counted(&frame::carp(peer4(), &bow_out)), forged);
    let demoted = CarpHeader { demote: 1, ..h };
    assert_eq!(fx.run_counted(&frame::carp(peer4(), &demoted)), forged);
    let stranger: IpAddr = Ipv4Addr::new(192, 0, 2, 66).into();
    assert_eq!(fx.run_counted(&frame::carp(stranger, &h)), forged);
    let bsd = CarpHeader {
        counter: t + 1,
        digest: Auth::new(PASSWORD, VHID, &vips).unwrap().sign(t + 1),
        ..h
    };
    assert_eq!(fx.run_counted(&frame::carp(peer4(), &bsd)), forged);
    assert!(fx.next_event().is_none(), "nothing reached the agent");
    // The peer restarted: its boot count, the counter's high half, went up.
    let restarted = signed(t + (1 << 32), peer4());
    assert_eq!(fx.run_counted(&frame::carp(peer4(), &restarted)), passed);
    // Each source has its record: another peer's lower counter, and our peer over IPv6.
    let other: IpAddr = Ipv4Addr::new(192, 0, 2, 3).into();
    assert_eq!(
        fx.run_counted(&frame::carp(other, &signed(t, other))),
        passed
    );
    let v6: IpAddr = "2001:db8::2".parse().unwrap();
    assert_eq!(fx.run_counted(&frame::carp(v6, &signed(t, v6))), passed);
}

/// README (Status): `ringbuf_full` counted. Valid adverts, each from its own source (so
/// none is a flood), into a ring buffer nobody drains: once the 64 KiB are full, each
/// further one is dropped and counted as `ringbuf_full` (not as an advert), and every
/// advert either reached the ring or was counted. Drained, the ring takes adverts again.
fn a_full_ring_buffer_is_counted(hook: Hook) {
    let mut fx = Fixture::new(hook, State::BACKUP);
    let n: u16 = 3000;
    let mut total = XdpStats::default();
    for i in 0..n {
        let [hi, lo] = i.to_be_bytes();
        let src = Ipv4Addr::new(198, 18, hi, lo).into();
        let (verdict, delta) = fx.run_counted(&frame::carp(src, &fx.advert(u64::from(i), 7)));
        assert_eq!(verdict, XDP_DROP);
        total = XdpStats::total([&total, &delta]);
    }
    let events = std::iter::from_fn(|| fx.next_event()).count() as u64;
    assert!(
        total.ringbuf_full > 0,
        "{n} adverts fit in the ring: {total:?}"
    );
    assert_eq!(events + total.ringbuf_full, u64::from(n), "{total:?}");
    assert_eq!(
        total.adverts, events,
        "only those in the ring count as adverts"
    );
    let again = frame::carp(Ipv4Addr::new(198, 19, 0, 1).into(), &fx.advert(1, 7));
    assert_eq!(fx.run_counted(&again).1.ringbuf_full, 0);
    assert!(fx.next_event().is_some());
}

/// Each case once per hook.
macro_rules! on_both_hooks {
    ($($case:ident),* $(,)?) => {
        mod xdp {
            $(#[test]
            fn $case() {
                super::$case(super::Hook::Xdp);
            })*
        }
        mod tc {
            $(#[test]
            fn $case() {
                super::$case(super::Hook::Tc);
            })*
        }
    };
}

on_both_hooks!(
    valid_carp_advert_goes_to_the_agent_with_its_fields,
    a_full_ring_buffer_is_counted,
    ipv6_and_vlan_tagged_adverts,
    every_invalid_carp_advert_is_dropped_with_its_reason,
    an_advert_repeated_as_openbsd_does_reaches_the_agent_and_a_flood_does_not,
    the_same_fields_reach_the_agent_at_most_twice_per_interval,
    a_forged_advert_does_not_touch_the_replay_state,
    long_vip_lists_are_verified_in_the_kernel,
    vrrp3_adverts,
    both_openbsd_hmac_variants_verify,
    the_replaced_digest_verifies_for_a_while,
    the_other_modes_digest_verifies_by_its_own_rules_during_a_switch,
    vrrp3_adverts_with_every_address_count,
    adverts_cut_short_are_dropped_as_truncated,
    frames_to_the_ipv6_vrrp_mac_are_ours_while_master,
    unknown_vhids_and_other_traffic_pass_untouched,
    arp_for_a_vip_is_answered_while_master_and_dropped_otherwise,
    neighbor_solicitation_for_a_vip6_is_answered_while_master,
    invalid_neighbor_solicitations_are_not_answered,
    arp_requests_not_for_us_are_not_answered,
    frames_to_the_virtual_mac_are_ours_only_while_master,
    a_master_whose_lease_ran_out_answers_nothing,
    random_and_truncated_frames_never_fail,
    strict_adverts_cannot_be_altered_moved_or_replayed,
);

/// A balanced group led by VHID 5 (OpenBSD `balancing ip`, three VHIDs) whose first share
/// is this host's, its leader MASTER: the frame of a flow from `src` to its VIP
/// 192.0.2.60, to the group MAC.
mod balanced {
    use super::*;
    use carp_common::{
        balance::{
            fold_v4, fold_v6, group_mac,
            icmp::{
                ICMP_ECHO, ICMP_REDIRECT, ICMP_UNREACH, ICMP_UNREACH_NEEDFRAG, ICMP6_ECHO_REQUEST,
                ICMP6_PACKET_TOO_BIG,
            },
            keeps,
        },
        ether::IPPROTO_ICMP,
        maps::BalanceEntry,
    };

    const LEADER: u8 = 5;
    const VIP: [u8; 4] = [192, 0, 2, 60];
    const VIP6: &str = "2001:db8::60";

    fn group(fx: &mut Fixture, mask: u32, master_until: u64) {
        let fl = Flags {
            balanced: true,
            ..Flags::default()
        };
        let mac = group_mac(LEADER);
        let mut leader = vhid_entry(Protocol::CARP, State::MASTER, fl, mac, IF_MAC, None);
        leader.master_until = u64::MAX;
        fx.dp.set_vhid(&key(LEADER, 0), &leader).unwrap();
        let v = VipEntry {
            vhid: LEADER,
            _pad: [0; 3],
        };
        for vip in [IpAddr::from(VIP), VIP6.parse().unwrap()] {
            fx.dp.set_vip(&VipKey::new(LO, 0, vip), &v).unwrap();
        }
        let entry = BalanceEntry {
            mask,
            count: 3,
            if_mac: IF_MAC,
            master_until,
            ..BalanceEntry::default()
        };
        fx.dp.set_balance(LEADER, &entry).unwrap();
    }

    fn flow(src: [u8; 4]) -> Vec<u8> {
        let mut f = frame::ethernet(group_mac(LEADER), PEER_MAC, None, frame::ETH_P_IP);
        f.extend(frame::ipv4(src, VIP, 64, 17, &[0; 8]));
        f
    }

    /// Sources of 192.0.2.0/24 whose flow this host (mask 0b001) keeps, and does not.
    fn sources() -> (Vec<[u8; 4]>, Vec<[u8; 4]>) {
        (1..=254u8)
            .map(|i| [192, 0, 2, i])
            .partition(|s| keeps(0b001, 3, fold_v4(*s, VIP)))
    }

    fn flows_of_our_share_are_kept_as_ours_and_the_others_dropped(hook: Hook) {
        let mut fx = Fixture::new(hook, State::MASTER);
        group(&mut fx, 0b001, u64::MAX);
        let (ours, theirs) = sources();
        assert!(ours.len() > 70 && theirs.len() > 150, "{ours:?}");
        for src in &ours {
            let f = flow(*src);
            let before = fx.dp.stats().unwrap();
            let (verdict, out) = fx.run(&f);
            assert_eq!(verdict, XDP_PASS);
            assert_eq!(&out[..6], &IF_MAC, "rewritten to the interface MAC");
            assert_eq!(&out[6..], &f[6..]);
            let delta = fx.dp.stats().unwrap().since(&before);
            assert_eq!(delta.balance_kept, 1);
        }
        for src in &theirs {
            let (verdict, delta) = fx.run_counted(&flow(*src));
            assert_eq!((verdict, delta.balance_dropped), (XDP_DROP, 1), "{src:?}");
        }
        // IPv6: the xor of all eight words.
        let vip6: Ipv6Addr = VIP6.parse().unwrap();
        for i in 1..=30u16 {
            let src = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, i, 2 * i).octets();
            let mut f = frame::ethernet(group_mac(LEADER), PEER_MAC, None, frame::ETH_P_IPV6);
            f.extend(frame::ipv6(src, vip6.octets(), 64, 17, &[0; 8]));
            let want = if keeps(0b001, 3, fold_v6(&src, &vip6.octets())) {
                XDP_PASS
            } else {
                XDP_DROP
            };
            assert_eq!(fx.run(&f).0, want, "from {i}");
        }
        // A master that stopped renewing its lease keeps nothing.
        group(&mut fx, 0b001, 1);
        let (verdict, delta) = fx.run_counted(&flow(ours[0]));
        assert_eq!((verdict, delta.balance_dropped), (XDP_DROP, 1));
        // Another group's MAC, not configured here (224.0.1.9 multicast has it): untouched.
        let mut other = flow(ours[0]);
        other[5] = 9;
        assert_eq!(fx.run(&other), (XDP_PASS, other.clone()));
        // Multicast (224.0.1.5 has this group's MAC) and broadcast addresses, IPv4 and
        // IPv6, pass untouched from every source (OpenBSD hashes them: see README).
        group(&mut fx, 0b001, u64::MAX);
        for src in [ours[0], theirs[0]] {
            for dst in [[224, 0, 1, 5], [255; 4]] {
                let mut f = frame::ethernet(group_mac(LEADER), PEER_MAC, None, frame::ETH_P_IP);
                f.extend(frame::ipv4(src, dst, 64, 17, &[0; 8]));
                assert_eq!(fx.run(&f), (XDP_PASS, f.clone()), "{src:?} to {dst:?}");
            }
        }
        let mut f = frame::ethernet(group_mac(LEADER), PEER_MAC, None, frame::ETH_P_IPV6);
        let ff02 = "ff02::1:3".parse::<Ipv6Addr>().unwrap().octets();
        f.extend(frame::ipv6(vip6.octets(), ff02, 1, 17, &[0; 8]));
        assert_eq!(fx.run(&f), (XDP_PASS, f.clone()));
    }

    fn the_leaders_master_answers_arp_and_ns_with_the_group_mac_from_its_own(hook: Hook) {
        let mut fx = Fixture::new(hook, State::MASTER);
        group(&mut fx, 0b010, u64::MAX);
        let mac = group_mac(LEADER);
        // Broadcast, and a unicast refresh to the group MAC, which the balancer leaves to
        // the ARP path whatever the share.
        let broadcast = frame::arp_request(PEER_MAC, [192, 0, 2, 2], VIP);
        let mut unicast = broadcast.clone();
        unicast[..6].copy_from_slice(&mac);
        for req in [broadcast, unicast] {
            let (verdict, out) = fx.run(&req);
            assert_eq!(verdict, XDP_TX);
            let mut expected = frame::ethernet(PEER_MAC, IF_MAC, None, frame::ETH_P_ARP);
            expected.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 2]);
            expected.extend_from_slice(&mac);
            expected.extend_from_slice(&VIP);
            expected.extend_from_slice(&PEER_MAC);
            expected.extend_from_slice(&[192, 0, 2, 2]);
            assert_eq!(out, expected);
        }
        // A unicast solicitation to the group MAC goes the NS path too.
        let src = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let target = VIP6.parse::<Ipv6Addr>().unwrap().octets();
        let mut ns = frame::neighbor_solicit(PEER_MAC, src, target);
        ns[..6].copy_from_slice(&mac);
        let (verdict, out) = fx.run(&ns);
        assert_eq!(verdict, XDP_TX);
        assert_eq!(&out[..12], &[PEER_MAC, IF_MAC].concat()[..]);
        assert_eq!(&out[out.len() - 6..], &mac, "target link-layer address");
    }

    /// An ICMP message to the VIP from `src` to the group MAC, its checksum filled in.
    fn icmp(src: [u8; 4], kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut msg = vec![kind, code, 0, 0];
        msg.extend_from_slice(&rest);
        msg.extend_from_slice(body);
        let sum = carp_common::checksum::internet(&msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = frame::ethernet(group_mac(LEADER), PEER_MAC, None, frame::ETH_P_IP);
        f.extend(frame::ipv4(src, VIP, 64, IPPROTO_ICMP, &msg));
        f
    }

    /// A router's "fragmentation needed" (next-hop MTU 1300) about a TCP segment of ours
    /// to `client`: its IPv4 header and first 8 bytes.
    fn frag_needed(router: [u8; 4], client: [u8; 4]) -> Vec<u8> {
        let quote = frame::ipv4(VIP, client, 63, 6, &[0x0f, 0xa0, 0xc3, 0x50, 0, 0, 0, 1]);
        icmp(
            router,
            ICMP_UNREACH,
            ICMP_UNREACH_NEEDFRAG,
            [0, 0, 0x05, 0x14],
            &quote,
        )
    }

    /// OpenBSD's icmp_input: an error about a packet the group sent goes to the host whose
    /// flow it quotes, whatever the router's address; echo requests go by their own
    /// addresses; replies, errors about multicast packets and unknown codes reach every
    /// host untouched; short quotes and broken headers are dropped, counted.
    fn icmp_errors_go_to_the_host_of_the_flow_they_quote(hook: Hook) {
        let mut fx = Fixture::new(hook, State::MASTER);
        group(&mut fx, 0b001, u64::MAX);
        const ROUTER: [u8; 4] = [192, 0, 2, 1];
        let router_ours = keeps(0b001, 3, fold_v4(ROUTER, VIP));
        let (mut ours, mut theirs) = (0, 0);
        for i in 1..=60u8 {
            let client = [198, 51, 100, i];
            let f = frag_needed(ROUTER, client);
            let before = fx.dp.stats().unwrap();
            let (verdict, out) = fx.run(&f);
            let delta = fx.dp.stats().unwrap().since(&before);
            if keeps(0b001, 3, fold_v4(client, VIP)) {
                assert_eq!(verdict, XDP_PASS, "about {client:?}");
                assert_eq!(&out[..6], &IF_MAC, "rewritten to the interface MAC");
                assert_eq!(delta.balance_kept, 1);
                ours += 1;
            } else {
                assert_eq!(
                    (verdict, delta.balance_dropped),
                    (XDP_DROP, 1),
                    "{client:?}"
                );
                theirs += 1;
            }
        }
        // Both kinds, so hashing by the router's address would have got some wrong.
        assert!(
            ours > 10 && theirs > 10,
            "{ours} {theirs} (router ours: {router_ours})"
        );
        let (mine, other) = sources();
        let client = [
            198,
            51,
            100,
            (1..=60u8)
                .find(|i| keeps(0b001, 3, fold_v4([198, 51, 100, *i], VIP)))
                .unwrap(),
        ];
        let kept = frag_needed(ROUTER, client);
        // Every prefix that ends before the quoted destination is malformed; the others
        // go by the lengths the headers claim, as the full frame.
        let quote_dst_end = 14 + 20 + 8 + 20;
        for len in 14 + 20..kept.len() {
            let (verdict, delta) = fx.run_counted(&kept[..len]);
            if len < quote_dst_end {
                assert_eq!(
                    (verdict, delta.balance_malformed),
                    (XDP_DROP, 1),
                    "len {len}"
                );
            } else {
                assert_eq!((verdict, delta.balance_kept), (XDP_PASS, 1), "len {len}");
            }
        }
        // A quote shorter than its header and 8 bytes, as the IP length says: dropped
        // (icps_badlen), as a quoted header length under 20 and an outer one.
        let short = icmp(
            ROUTER,
            ICMP_UNREACH,
            ICMP_UNREACH_NEEDFRAG,
            [0; 4],
            &kept[42..42 + 27],
        );
        let mut bad_hl = kept.clone();
        bad_hl[42] = 0x44;
        let mut bad_outer = kept.clone();
        bad_outer[14] = 0x44;
        let mut bad_total = kept.clone();
        bad_total[16..18].copy_from_slice(&19u16.to_be_bytes());
        let too_short_icmp = icmp(ROUTER, 0, 0, [0; 4], &[])[..14 + 20 + 7].to_vec();
        let mut too_short = too_short_icmp.clone();
        too_short[16..18].copy_from_slice(&27u16.to_be_bytes());
        for f in [&short, &bad_hl, &bad_outer, &bad_total, &too_short] {
            let (verdict, delta) = fx.run_counted(f);
            assert_eq!(
                (verdict, delta.balance_malformed),
                (XDP_DROP, 1),
                "{f:02x?}"
            );
        }
        // Every host: an error about a multicast packet, an unknown code, an echo reply,
        // a redirect with a short quote (icmp_input's raw sockets).
        let mut every = Vec::new();
        for src in [mine[0], other[0]] {
            let mcast = frame::ipv4(VIP, [224, 0, 1, 1], 1, 17, &[0; 8]);
            every.push(icmp(src, ICMP_UNREACH, 3, [0; 4], &mcast));
            every.push(icmp(src, ICMP_UNREACH, 16, [0; 4], &kept[42..]));
            every.push(icmp(src, 0, 0, [0, 1, 0, 1], &[0; 8]));
            every.push(icmp(src, ICMP_REDIRECT, 1, ROUTER, &kept[42..42 + 27]));
        }
        for f in every {
            assert_eq!(fx.run(&f), (XDP_PASS, f.clone()), "{f:02x?}");
        }
        // Echo requests (and their fragments), by their own addresses.
        for src in mine.iter().take(20) {
            let (verdict, delta) = fx.run_counted(&icmp(*src, ICMP_ECHO, 0, [0, 1, 0, 1], &[]));
            assert_eq!((verdict, delta.balance_kept), (XDP_PASS, 1), "{src:?}");
        }
        for src in other.iter().take(20) {
            let mut f = icmp(*src, ICMP_ECHO, 0, [0, 1, 0, 1], &[0; 16]);
            let (verdict, delta) = fx.run_counted(&f);
            assert_eq!((verdict, delta.balance_dropped), (XDP_DROP, 1), "{src:?}");
            // A later fragment, whose bytes are not an ICMP header.
            f[20..22].copy_from_slice(&0x0003u16.to_be_bytes());
            f[34..36].copy_from_slice(&[0xff, 0xff]);
            let (verdict, delta) = fx.run_counted(&f);
            assert_eq!((verdict, delta.balance_dropped), (XDP_DROP, 1), "{src:?}");
        }
    }

    /// OpenBSD's icmp6_input: packet too big, echo replies and advertisements reach every
    /// host untouched, whatever its share; echo requests are hashed; a message shorter
    /// than its header is dropped.
    fn icmpv6_packet_too_big_reaches_every_host_and_echo_requests_are_hashed(hook: Hook) {
        let mut fx = Fixture::new(hook, State::MASTER);
        let vip6 = VIP6.parse::<Ipv6Addr>().unwrap().octets();
        let router = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let icmp6 = |src: [u8; 16], kind: u8, body: &[u8]| {
            let mut msg = vec![kind, 0, 0, 0, 0, 0, 0x05, 0x14];
            msg.extend_from_slice(body);
            let sum = frame::icmpv6_checksum(&src, &vip6, &msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut f = frame::ethernet(group_mac(LEADER), PEER_MAC, None, frame::ETH_P_IPV6);
            f.extend(frame::ipv6(src, vip6, 64, frame::IPPROTO_ICMPV6, &msg));
            f
        };
        let client = |i: u16| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i).octets();
        for mask in [0b001, 0b010, 0b100] {
            group(&mut fx, mask, u64::MAX);
            for i in 1..=10 {
                let quote = frame::ipv6(vip6, client(i), 63, 6, &[0; 8]);
                let ptb = icmp6(router, ICMP6_PACKET_TOO_BIG, &quote);
                assert_eq!(fx.run(&ptb), (XDP_PASS, ptb.clone()), "mask {mask:b}, {i}");
                let reply = icmp6(client(i), 129, &[]);
                assert_eq!(fx.run(&reply), (XDP_PASS, reply.clone()));
                let request = icmp6(client(i), ICMP6_ECHO_REQUEST, &[]);
                let (verdict, out) = fx.run(&request);
                if keeps(mask, 3, fold_v6(&client(i), &vip6)) {
                    assert_eq!((verdict, &out[..6]), (XDP_PASS, &IF_MAC[..]), "{i}");
                } else {
                    assert_eq!(verdict, XDP_DROP, "mask {mask:b}, {i}");
                }
            }
        }
        let request = icmp6(client(1), ICMP6_ECHO_REQUEST, &[]);
        for len in 14 + 40..14 + 40 + 8 {
            let (verdict, delta) = fx.run_counted(&request[..len]);
            assert_eq!(
                (verdict, delta.balance_malformed),
                (XDP_DROP, 1),
                "len {len}"
            );
        }
    }

    on_both_hooks!(
        flows_of_our_share_are_kept_as_ours_and_the_others_dropped,
        the_leaders_master_answers_arp_and_ns_with_the_group_mac_from_its_own,
        icmp_errors_go_to_the_host_of_the_flow_they_quote,
        icmpv6_packet_too_big_reaches_every_host_and_echo_requests_are_hashed,
    );
}
