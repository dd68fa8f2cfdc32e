//! The election against FreeBSD's and RFC 5798's rules, and over every parameter.

use super::*;
use std::net::Ipv4Addr;

const T0: Duration = Duration::ZERO;

fn ip(last: u8) -> IpAddr {
    Ipv4Addr::new(192, 0, 2, last).into()
}

/// A machine with `timing` that sends from `local_addr`, an address of its own.
fn host(timing: Timing, preempt: bool, local_addr: IpAddr) -> Machine {
    Machine::new(Config {
        timing,
        preempt,
        local_addr,
        local_other: None,
        shared_source: false,
        advert_on_yield: false,
        hand_over: false,
    })
}

fn carp(advskew: u8, preempt: bool) -> Machine {
    let timing = Timing::Carp {
        advbase: 1,
        advskew,
    };
    host(timing, preempt, ip(1))
}

fn vrrp(priority: u8, preempt: bool) -> Machine {
    let timing = Timing::Vrrp3 {
        priority,
        interval_cs: 100,
    };
    host(timing, preempt, ip(1))
}

/// How many of the machines are MASTER.
fn masters(m: [&Machine; 2]) -> usize {
    m.iter().filter(|m| m.state() == State::MASTER).count()
}

fn carp_ad(src: u8, advbase: u8, advskew: u8) -> Event {
    Event::Advert(Advert {
        src: ip(src),
        timing: Timing::Carp { advbase, advskew },
        demote: 0,
    })
}

fn vrrp_ad(src: u8, priority: u8) -> Event {
    Event::Advert(Advert {
        src: ip(src),
        timing: Timing::Vrrp3 {
            priority,
            interval_cs: 100,
        },
        demote: 0,
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn carp_timers_follow_ip_carp_c() {
    let m = carp(100, false);
    // 3 * 1 s + 100/256 s
    assert_eq!(m.master_down_interval(), Duration::from_micros(3_390_625));
    assert_eq!(m.advert_interval(), Duration::from_micros(1_390_625));
    let mut d = carp(250, false);
    // DEMOTE_ADVSKEW clamps to CARP_MAXSKEW even without demotion.
    assert_eq!(
        d.advertised(),
        Timing::Carp {
            advbase: 1,
            advskew: 240
        }
    );
    d.handle(T0, Event::Demotion(-300));
    assert_eq!(
        d.advertised(),
        Timing::Carp {
            advbase: 1,
            advskew: 0
        }
    );
}

#[test]
fn init_goes_to_backup_then_master_on_timeout() {
    let mut m = carp(0, true);
    assert_eq!(m.handle(T0, Event::Timer), vec![]);
    let a = m.handle(T0, Event::LinkUp);
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::INIT,
            to: State::BACKUP,
            reason: Reason::LinkUp
        }]
    );
    assert_eq!(m.deadline(), Some(ms(3000)));
    assert_eq!(m.handle(ms(2999), Event::Timer), vec![]);
    let a = m.handle(ms(3000), Event::Timer);
    assert_eq!(
        a,
        vec![
            Action::Transition {
                from: State::BACKUP,
                to: State::MASTER,
                reason: Reason::MasterDown
            },
            Action::Advertise(Timing::Carp {
                advbase: 1,
                advskew: 0
            }),
        ]
    );
    assert_eq!(m.deadline(), Some(ms(4000)));
    assert_eq!(
        m.handle(ms(4000), Event::Timer),
        vec![Action::Advertise(Timing::Carp {
            advbase: 1,
            advskew: 0
        })]
    );
}

#[test]
fn backup_rearms_on_adverts_and_preempts_only_when_allowed() {
    for preempt in [false, true] {
        let mut m = carp(0, preempt);
        m.handle(T0, Event::LinkUp);
        // An equally preferred master: wait.
        assert_eq!(m.handle(ms(1000), carp_ad(2, 1, 0)), vec![]);
        assert_eq!(m.deadline(), Some(ms(4000)));
        // A less preferred master (advskew 100).
        let a = m.handle(ms(2000), carp_ad(2, 1, 100));
        assert_eq!(m.state() == State::MASTER, preempt, "{a:?}");
    }
}

#[test]
fn master_yields_to_equal_or_better_and_keeps_against_worse() {
    let mut m = carp(50, false);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(3200), Event::Timer);
    assert_eq!(m.state(), State::MASTER);
    assert_eq!(m.handle(ms(3300), carp_ad(2, 1, 51)), vec![]);
    // A tie with a sender that ucarp orders after us (192.0.2.2 > .1): keep it.
    assert_eq!(m.handle(ms(3350), carp_ad(2, 1, 50)), vec![]);
    // A tie with 192.0.3.0, which ucarp orders first (last octet 0 < 1): yield.
    let a = m.handle(
        ms(3400),
        Event::Advert(Advert {
            src: Ipv4Addr::new(192, 0, 3, 0).into(),
            timing: Timing::Carp {
                advbase: 1,
                advskew: 50,
            },
            demote: 0,
        }),
    );
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::MASTER,
            to: State::BACKUP,
            reason: Reason::PreferredMaster
        }]
    );
    assert_eq!(m.deadline(), Some(ms(3400) + m.master_down_interval()));
}

#[test]
fn bow_out_makes_the_backup_master_at_once() {
    let mut master = carp(0, false);
    master.handle(T0, Event::LinkUp);
    master.handle(ms(3000), Event::Timer);
    let a = master.handle(ms(3500), Event::Shutdown);
    assert_eq!(
        a[0],
        Action::Advertise(Timing::Carp {
            advbase: 255,
            advskew: 255
        })
    );
    assert_eq!(master.state(), State::INIT);
    assert_eq!(master.deadline(), None);

    for preempt in [false, true] {
        let mut backup = carp(100, preempt);
        backup.handle(T0, Event::LinkUp);
        let a = backup.handle(ms(10), carp_ad(2, 255, 255));
        assert_eq!(
            a[0],
            Action::Transition {
                from: State::BACKUP,
                to: State::MASTER,
                reason: Reason::MasterBowedOut
            },
            "preempt {preempt}"
        );
    }
}

#[test]
fn a_lease_ends_before_any_backup_takes_over() {
    for advbase in 1..=255u8 {
        for advskew in [0, 1, 100, 239, 240, 254] {
            for demotion in [0, 1000] {
                let mut m = carp(0, false);
                m.cfg.timing = Timing::Carp { advbase, advskew };
                m.demotion = demotion;
                // The quickest backup: advskew 0, master-down 3 x advbase.
                let quickest = Duration::from_secs(3 * u64::from(advbase));
                assert!(m.lease() > m.advert_interval());
                assert!(m.lease() < quickest, "{advbase} {advskew} {demotion}");
            }
        }
    }
    for interval_cs in [1, 100, 4095] {
        let mut m = carp(0, false);
        m.cfg.timing = Timing::Vrrp3 {
            priority: 100,
            interval_cs,
        };
        assert!(m.lease() < 3 * centiseconds(u32::from(interval_cs)));
    }
}

#[test]
fn demotion_advertises_at_once_and_hands_over_to_a_preempting_backup() {
    let mut a = carp(0, true);
    let mut b = Machine::new(Config {
        local_addr: ip(2),
        ..*carp(100, true).config()
    });
    a.handle(T0, Event::LinkUp);
    b.handle(T0, Event::LinkUp);
    a.handle(ms(3000), Event::Timer);
    let out = a.handle(ms(3100), Event::Demotion(240));
    assert_eq!(
        out,
        vec![Action::Advertise(Timing::Carp {
            advbase: 1,
            advskew: 240
        })]
    );
    // b (skew 100) hears a worse master and preempts.
    b.handle(ms(3100), carp_ad(1, 1, 240));
    assert_eq!(b.state(), State::MASTER);
    // a hears b's better advert and steps down.
    a.handle(ms(3101), carp_ad(2, 1, 100));
    assert_eq!(a.state(), State::BACKUP);
    // Negative demotion (FreeBSD PR 259528) makes a preferred again.
    a.handle(ms(4000), Event::Demotion(-50));
    assert_eq!(
        a.advertised(),
        Timing::Carp {
            advbase: 1,
            advskew: 0
        }
    );
}

#[test]
fn link_down_goes_init_and_link_up_returns_to_backup() {
    let mut m = carp(0, false);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(3000), Event::Timer);
    let a = m.handle(ms(3100), Event::LinkDown);
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::MASTER,
            to: State::INIT,
            reason: Reason::LinkDown
        }]
    );
    assert_eq!(m.deadline(), None);
    // Adverts and timers do nothing in INIT.
    assert_eq!(m.handle(ms(9000), Event::Timer), vec![]);
    assert_eq!(m.handle(ms(9000), carp_ad(2, 1, 200)), vec![]);
    m.handle(ms(9100), Event::LinkUp);
    assert_eq!(m.state(), State::BACKUP);
}

#[test]
fn forced_states() {
    let mut m = carp(0, false);
    assert_eq!(
        m.handle(T0, Event::Force(State::MASTER)),
        vec![],
        "ignored in INIT"
    );
    m.handle(T0, Event::LinkUp);
    let a = m.handle(ms(10), Event::Force(State::MASTER));
    assert_eq!(
        a[0],
        Action::Transition {
            from: State::BACKUP,
            to: State::MASTER,
            reason: Reason::Forced
        }
    );
    let a = m.handle(ms(20), Event::Force(State::BACKUP));
    assert_eq!(
        a,
        vec![Action::Transition {
            from: State::MASTER,
            to: State::BACKUP,
            reason: Reason::Forced
        }]
    );
    // Not sticky: alone on the segment it comes back, one advert interval after any
    // other backup (master-down 3 s + skew) would have taken over.
    let back = ms(20) + m.master_down_interval() + m.advert_interval();
    m.handle(back - ms(1), Event::Timer);
    assert_eq!(m.state(), State::BACKUP);
    m.handle(back, Event::Timer);
    assert_eq!(m.state(), State::MASTER);
}

#[test]
fn own_adverts_are_ignored() {
    let mut m = carp(100, false);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(4000), Event::Timer);
    assert_eq!(m.handle(ms(4100), carp_ad(1, 1, 0)), vec![]);
    assert_eq!(m.state(), State::MASTER);
    assert_eq!(m.looped(), 1);
}

#[test]
fn vrrp_timers_follow_rfc5798() {
    let m = vrrp(100, true);
    // 3 * 100 cs + (156 * 100 / 256) cs = 360 cs
    assert_eq!(m.master_down_interval(), ms(3600));
    assert_eq!(m.advert_interval(), ms(1000));
}

#[test]
fn vrrp_owner_starts_master_and_ties_go_to_the_higher_address() {
    let mut owner = vrrp(255, true);
    let a = owner.handle(T0, Event::LinkUp);
    assert_eq!(
        a[0],
        Action::Transition {
            from: State::INIT,
            to: State::MASTER,
            reason: Reason::Owner
        }
    );

    let mut m = vrrp(100, true);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(3600), Event::Timer);
    assert_eq!(m.state(), State::MASTER);
    // Same priority from a lower address: stay. From a higher one: yield.
    m.handle(ms(3700), vrrp_ad(0, 100));
    assert_eq!(m.state(), State::MASTER);
    m.handle(ms(3800), vrrp_ad(9, 100));
    assert_eq!(m.state(), State::BACKUP);
}

/// OpenBSD's carp_proto_input_c compares demote counts before intervals: a demoted
/// OpenBSD master is taken over from without preemption, and its adverts never make
/// our master yield, however good its interval.
#[test]
fn openbsd_demote_byte() {
    let demoted = |advskew| {
        Event::Advert(Advert {
            src: ip(2),
            timing: Timing::Carp {
                advbase: 1,
                advskew,
            },
            demote: 1,
        })
    };
    let mut backup = carp(100, false);
    backup.handle(T0, Event::LinkUp);
    let a = backup.handle(ms(10), demoted(0));
    assert_eq!(
        a[0],
        Action::Transition {
            from: State::BACKUP,
            to: State::MASTER,
            reason: Reason::MasterDemoted
        }
    );
    let mut master = carp(100, false);
    master.handle(T0, Event::LinkUp);
    master.handle(ms(3400), Event::Timer);
    assert_eq!(master.state(), State::MASTER);
    assert_eq!(master.handle(ms(3500), demoted(0)), vec![]);
    assert_eq!(master.state(), State::MASTER);
    // With demote 0 the same advert wins as usual.
    master.handle(ms(3600), carp_ad(2, 1, 0));
    assert_eq!(master.state(), State::BACKUP);
}

/// A FreeBSD 15 master of equal priority and lower address keeps advertising (its
/// vrrp_input_c breaks no ties): after a master-down interval we yield to it.
#[test]
fn vrrp_yields_to_an_equal_master_that_does_not() {
    let mut m = vrrp(100, true);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(3600), Event::Timer);
    assert_eq!(m.state(), State::MASTER);
    let mut t = ms(3700);
    while m.state() == State::MASTER {
        assert!(
            t < ms(3700) + m.master_down_interval() + ms(1000),
            "never yielded"
        );
        m.handle(t, vrrp_ad(0, 100));
        t += ms(1000);
    }
    assert!(t > ms(3700) + m.master_down_interval());
    // A lower-priority master never makes it yield.
    let mut m = vrrp(100, true);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(3600), Event::Timer);
    for i in 0..20 {
        m.handle(ms(4000 + 1000 * i), vrrp_ad(0, 99));
    }
    assert_eq!(m.state(), State::MASTER);
}

#[test]
fn vrrp_backup_preemption_and_priority_zero() {
    let mut m = vrrp(150, true);
    m.handle(T0, Event::LinkUp);
    // A lower priority master is ignored; the timer then preempts it.
    m.handle(ms(1000), vrrp_ad(2, 100));
    let due = m.deadline().unwrap();
    assert!(due <= ms(3000) + ms(600));
    m.handle(due, Event::Timer);
    assert_eq!(m.state(), State::MASTER);

    let mut b = vrrp(100, false);
    b.handle(T0, Event::LinkUp);
    b.handle(ms(1000), vrrp_ad(2, 200));
    b.handle(ms(1500), vrrp_ad(2, 0));
    // Skew_Time = 156 * 100 / 256 = 60 cs.
    assert_eq!(b.deadline(), Some(ms(1500 + 600)));
    // Master hearing priority 0 answers with an advert at once.
    let a = m.handle(due + ms(10), vrrp_ad(2, 0));
    assert!(matches!(
        a[..],
        [Action::Advertise(Timing::Vrrp3 { priority: 150, .. })]
    ));
    // Stopping master sends priority 0.
    let a = m.handle(due + ms(20), Event::Shutdown);
    assert_eq!(
        a[0],
        Action::Advertise(Timing::Vrrp3 {
            priority: 0,
            interval_cs: 100
        })
    );
}

#[test]
fn protocols_do_not_mix() {
    let mut m = carp(0, true);
    m.handle(T0, Event::LinkUp);
    assert_eq!(m.handle(ms(100), vrrp_ad(2, 1)), vec![]);
    assert_eq!(
        m.deadline(),
        Some(ms(3000)),
        "a VRRP advert does not re-arm a CARP backup"
    );
}

/// Two hosts on a lossless segment, adverts arriving 1 ms after they are sent, started
/// at the same instant. Returns the machines after `secs` seconds.
fn converge(m: [Machine; 2], secs: u64) -> [Machine; 2] {
    converge_from(m, [T0, T0], secs)
}

/// [`converge`] with the hosts' links coming up at `starts`.
fn converge_from(mut m: [Machine; 2], starts: [Duration; 2], secs: u64) -> [Machine; 2] {
    let events = vec![(starts[0], 0, Event::LinkUp), (starts[1], 1, Event::LinkUp)];
    run_pair(&mut m, events, Duration::from_secs(secs), |_, _| {});
    m
}

/// Runs two machines from `events` until `end`, each advert reaching the other 1 ms after
/// it went out, and shows `observe` the time and both machines after every event. Timers
/// that are no longer armed are dropped at the next turn.
fn run_pair(
    m: &mut [Machine; 2],
    mut events: Vec<(Duration, usize, Event)>,
    end: Duration,
    mut observe: impl FnMut(Duration, &[Machine; 2]),
) {
    loop {
        for (i, x) in m.iter().enumerate() {
            if let Some(t) = x.deadline()
                && !events
                    .iter()
                    .any(|(q, j, e)| *j == i && *q == t && *e == Event::Timer)
            {
                events.push((t, i, Event::Timer));
            }
        }
        events.sort_by_key(|(t, i, _)| (*t, *i));
        if events.is_empty() || events[0].0 > end {
            return;
        }
        let (now, i, ev) = events.remove(0);
        let src = m[i].cfg.local_addr;
        for action in m[i].handle(now, ev) {
            if let Action::Advertise(timing) = action {
                let ad = Advert {
                    src,
                    timing,
                    demote: 0,
                };
                events.push((now + ms(1), 1 - i, Event::Advert(ad)));
            }
        }
        events.retain(|(t, j, e)| *e != Event::Timer || m[*j].deadline() == Some(*t));
        observe(now, m);
    }
}

fn carp_host(last: u8, advbase: u8, advskew: u8, demotion: i32, preempt: bool) -> Machine {
    let mut m = host(Timing::Carp { advbase, advskew }, preempt, ip(last));
    m.handle(T0, Event::Demotion(demotion));
    m
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

    /// Every advbase 1-255, advskew 0-254 and demotion, on the real machine: FreeBSD's
    /// master-down time (carp_setrun: 3 x advbase + advskew/256 s), no overflow (tests
    /// build with overflow checks), and two hosts started together end with exactly
    /// one master.
    #[test]
    fn carp_full_ranges_converge_to_one_master(
        advbase in 1u8..=255,
        skews in (0u8..=254, 0u8..=254),
        demotions in (proptest::prelude::any::<i32>(), -300i32..300),
        preempt: bool,
    ) {
        let a = carp_host(1, advbase, skews.0, demotions.0, preempt);
        let b = carp_host(2, advbase, skews.1, demotions.1, preempt);
        proptest::prop_assert_eq!(
            a.master_down_interval(),
            Duration::from_micros(
                (3 * u64::from(advbase) * 256 + u64::from(skews.0)) * 1_000_000 / 256
            )
        );
        let [a, b] = converge([a, b], 12 * u64::from(advbase));
        proptest::prop_assert_eq!(masters([&a, &b]), 1, "{:?} {:?}", a, b);
    }

    /// Any advert a peer may send (every byte value, OpenBSD's advbase 0 and demote
    /// byte, VRRP priorities and intervals) is handled without a panic in every state.
    #[test]
    fn any_advert_is_handled(
        advbase in 1u8..=255,
        advskew in 0u8..=254,
        their_base: u8,
        their_skew: u8,
        demote: u8,
        priority: u8,
        interval_cs in 0u16..0x1000,
        at in 0u64..2_000_000,
    ) {
        let mut c = carp_host(1, advbase, advskew, 0, true);
        let mut v = vrrp(priority.max(1), true);
        for m in [&mut c, &mut v] {
            m.handle(T0, Event::LinkUp);
            for timing in [
                Timing::Carp { advbase: their_base, advskew: their_skew },
                Timing::Vrrp3 { priority, interval_cs },
            ] {
                let ad = Event::Advert(Advert { src: ip(9), timing, demote });
                m.handle(Duration::from_millis(at), ad);
                m.handle(Duration::from_millis(at) + Duration::from_secs(800), Event::Timer);
                m.handle(Duration::from_millis(at) + Duration::from_secs(801), ad);
            }
        }
    }
}

/// Two hosts with equal settings started at the same instant, for both families and
/// both protocols: one master (FreeBSD's defaults, advskew 0 on both, as carp.sh
/// starts them; the tie-break compares the addresses each side sends from).
#[test]
fn equal_hosts_started_together_elect_one_master() {
    let pairs: [(IpAddr, IpAddr); 3] = [
        (ip(1), ip(2)),
        (
            "2001:db8:1::2".parse().unwrap(),
            "2001:db8:2::2".parse().unwrap(),
        ),
        ("fe80::2".parse().unwrap(), "fe80::3".parse().unwrap()),
    ];
    for (a, b) in pairs {
        for timing in [
            Timing::Carp {
                advbase: 1,
                advskew: 0,
            },
            Timing::Vrrp3 {
                priority: 100,
                interval_cs: 100,
            },
        ] {
            let [x, y] = converge([host(timing, false, a), host(timing, false, b)], 30);
            assert_eq!(masters([&x, &y]), 1, "{a} {b} {timing}: {x:?} {y:?}");
        }
    }
}

/// Hosts whose interface has no address but the VIP send from the VIP (carp.sh
/// `switch`): equal adverts from it are a peer's; both yield on the tie (FreeBSD's
/// rule) and the first to time out wins, so hosts that did not start in the same
/// millisecond end with one master for either protocol. (Started in lockstep they
/// could collide forever, as FreeBSD's would: hence the warning to give the
/// interface an address.)
#[test]
fn hosts_sending_from_the_same_vip_elect_one_master() {
    for timing in [
        Timing::Carp {
            advbase: 1,
            advskew: 0,
        },
        Timing::Vrrp3 {
            priority: 100,
            interval_cs: 100,
        },
    ] {
        let from_vip = || {
            Machine::new(Config {
                shared_source: true,
                ..*host(timing, false, ip(1)).config()
            })
        };
        let [x, y] = converge_from([from_vip(), from_vip()], [T0, ms(137)], 30);
        assert_eq!(masters([&x, &y]), 1, "{timing}: {x:?} {y:?}");
        assert_eq!(x.looped() + y.looped(), 0);
    }
}

/// VRRPv3 at every priority pair and the shortest and longest intervals: one master.
#[test]
fn vrrp_priorities_converge_to_one_master() {
    for interval_cs in [1u16, 10, 100, 4095] {
        for (pa, pb) in [
            (1u8, 1u8),
            (100, 100),
            (100, 200),
            (254, 254),
            (255, 100),
            (1, 254),
        ] {
            let vrrp_host = |last, priority| {
                let timing = Timing::Vrrp3 {
                    priority,
                    interval_cs,
                };
                host(timing, true, ip(last))
            };
            let secs = 12 * u64::from(interval_cs) / 100 + 2;
            let [a, b] = converge([vrrp_host(1, pa), vrrp_host(2, pb)], secs);
            assert_eq!(masters([&a, &b]), 1, "{interval_cs} {pa} {pb}: {a:?} {b:?}");
        }
    }
}

/// Demotion at the ends of i32 (`carp-agent demote =2147483647`) saturates instead of
/// overflowing: CARP's skew clamps to CARP_MAXSKEW or 0, VRRP's priority to 1..=254.
#[test]
fn extreme_demotions_saturate() {
    for (d, skew, priority) in [(i32::MAX, 240, 1), (i32::MIN, 0, 254)] {
        let mut c = carp(100, false);
        c.handle(T0, Event::Demotion(d));
        assert_eq!(
            c.advertised(),
            Timing::Carp {
                advbase: 1,
                advskew: skew
            }
        );
        let mut v = vrrp(100, false);
        v.handle(T0, Event::Demotion(d));
        assert_eq!(
            v.advertised(),
            Timing::Vrrp3 {
                priority,
                interval_cs: 100
            }
        );
    }
}

/// Two masters after a partition with `mac = "interface"`, healed: whichever advert
/// crosses first, the preferred one stays MASTER and announces itself exactly once (the
/// clients learned the other's MAC), and the other yields. When the preferred master's
/// advert crosses first, the one that yields sends a parting advert so that it is heard.
#[test]
fn after_a_heal_the_remaining_master_announces_itself_once() {
    for a_first in [true, false] {
        let with_yield = |m: Machine| {
            Machine::new(Config {
                advert_on_yield: true,
                ..*m.config()
            })
        };
        let mut a = with_yield(carp(0, false));
        let mut b = with_yield(host(
            Timing::Carp {
                advbase: 1,
                advskew: 100,
            },
            false,
            ip(2),
        ));
        for m in [&mut a, &mut b] {
            m.handle(T0, Event::LinkUp);
            m.handle(ms(4000), Event::Timer);
            assert_eq!(m.state(), State::MASTER, "partitioned: each alone");
        }
        let (from_a, from_b) = (carp_ad(1, 1, 0), carp_ad(2, 1, 100));
        let mut announced = 0;
        let mut count = |out: &[Action]| {
            announced += out.iter().filter(|a| **a == Action::Announce).count();
        };
        if a_first {
            let out = b.handle(ms(10_000), from_a);
            assert_eq!(
                out,
                vec![
                    Action::Transition {
                        from: State::MASTER,
                        to: State::BACKUP,
                        reason: Reason::PreferredMaster
                    },
                    Action::Advertise(Timing::Carp {
                        advbase: 1,
                        advskew: 100
                    })
                ],
                "a parting advert"
            );
            count(&a.handle(ms(10_001), from_b));
        } else {
            let out = a.handle(ms(10_000), from_b);
            assert_eq!(
                out,
                vec![
                    Action::Advertise(Timing::Carp {
                        advbase: 1,
                        advskew: 0
                    }),
                    Action::Announce
                ]
            );
            count(&out);
            b.handle(ms(10_001), from_a);
            // b's parting advert: a announced less than an interval ago.
            count(&a.handle(ms(10_002), from_b));
            assert_eq!(a.reannounce_limited(), 1);
        }
        assert_eq!((a.state(), b.state()), (State::MASTER, State::BACKUP));
        assert_eq!((announced, a.reannounced()), (1, 1), "a first: {a_first}");
    }
}

/// A flood of adverts from a less preferred master makes at most one re-announcement
/// per advert interval; becoming MASTER counts as an announcement (a preempted master's
/// last advert crossing ours makes no second one).
#[test]
fn reannouncements_are_limited_to_one_per_advert_interval() {
    let mut m = carp(0, true);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(3000), Event::Timer);
    assert_eq!(m.handle(ms(3500), carp_ad(2, 1, 100)), vec![]);
    let mut sent = 0;
    for t in (4000..9000).step_by(10) {
        sent += m
            .handle(ms(t), carp_ad(2, 1, 100))
            .iter()
            .filter(|a| **a == Action::Announce)
            .count();
    }
    assert_eq!(sent, 5, "one per second for five seconds");
    assert_eq!((m.reannounced(), m.reannounce_limited()), (5, 496));
    assert_eq!(m.state(), State::MASTER);
}

/// VRRPv3: a lower priority master heard makes a re-announcement, a stopping one too
/// (which RFC 5798 6.4.3 answers with an advert), an equal one that should yield to us
/// none (a FreeBSD master keeps mastership on a tie, and we may yield to it later).
#[test]
fn a_vrrp_master_reannounces_over_a_lower_priority_master_only() {
    let mut m = vrrp(200, false);
    m.handle(T0, Event::LinkUp);
    m.handle(ms(4000), Event::Timer);
    assert_eq!(m.state(), State::MASTER);
    let ours = Action::Advertise(Timing::Vrrp3 {
        priority: 200,
        interval_cs: 100,
    });
    assert_eq!(m.handle(ms(6000), vrrp_ad(0, 200)), vec![], "a tie we win");
    assert_eq!(
        m.handle(ms(8000), vrrp_ad(2, 100)),
        vec![ours, Action::Announce]
    );
    assert_eq!(m.handle(ms(8500), vrrp_ad(2, 100)), vec![]);
    // A stopping master is always answered with an advert.
    assert_eq!(
        m.handle(ms(8600), vrrp_ad(2, vrrp::PRIORITY_STOP)),
        vec![ours]
    );
    assert_eq!(
        m.handle(ms(10_000), vrrp_ad(2, vrrp::PRIORITY_STOP)),
        vec![ours, Action::Announce]
    );
    assert_eq!(m.reannounced(), 2);
}

/// No parting advert without `advert_on_yield` (virtual MACs), nor on a tie.
#[test]
fn a_parting_advert_only_with_interface_macs_and_a_strictly_preferred_winner() {
    for (configured, theirs, parting) in [(false, 0, false), (true, 0, true), (true, 50, false)] {
        let mut m = Machine::new(Config {
            advert_on_yield: configured,
            ..*carp(50, false).config()
        });
        m.handle(T0, Event::LinkUp);
        m.handle(ms(4000), Event::Timer);
        // From 192.0.3.0, which wins a tie (ucarp's order).
        let out = m.handle(
            ms(6000),
            Event::Advert(Advert {
                src: Ipv4Addr::new(192, 0, 3, 0).into(),
                timing: Timing::Carp {
                    advbase: 1,
                    advskew: theirs,
                },
                demote: 0,
            }),
        );
        assert_eq!(m.state(), State::BACKUP);
        assert_eq!(
            out.iter().any(|a| matches!(a, Action::Advertise(_))),
            parting,
            "{configured} {theirs}: {out:?}"
        );
    }
}

/// A VIP that cannot be put back: the master leaves MASTER, and waits an advert interval
/// longer than its master-down time before it may come back, so a backup takes over.
/// Outside MASTER it changes nothing.
#[test]
fn a_lost_vip_makes_the_master_step_down() {
    let mut m = carp(0, false);
    m.handle(T0, Event::LinkUp);
    assert_eq!(m.handle(ms(100), Event::VipLost), vec![]);
    m.handle(ms(4000), Event::Timer);
    assert_eq!(
        m.handle(ms(5000), Event::VipLost),
        vec![Action::Transition {
            from: State::MASTER,
            to: State::BACKUP,
            reason: Reason::VipLost
        }]
    );
    assert_eq!(
        m.deadline(),
        Some(ms(5000) + m.master_down_interval() + m.advert_interval())
    );
}

/// A machine that hands over (see [`Machine::answering`]), from 192.0.2.`last`.
fn handing(timing: Timing, preempt: bool, last: u8) -> Machine {
    Machine::new(Config {
        hand_over: true,
        ..*host(timing, preempt, ip(last)).config()
    })
}

/// Runs two machines from `events` until `end` (see [`run_pair`]); returns, at every
/// event, the time and which of them answer the VIPs.
fn answering(
    m: &mut [Machine; 2],
    events: Vec<(Duration, usize, Event)>,
    end: Duration,
) -> Vec<(Duration, [bool; 2])> {
    let mut trace = Vec::new();
    run_pair(m, events, end, |now, m| {
        trace.push((now, [m[0].answering(), m[1].answering()]));
    });
    trace
}

/// Make-before-break: a (preferred, master) leaves by shutdown, `set-state backup` or a
/// demotion below b (preempt); from then on one of them answers at every moment, and a
/// stops answering within [`HANDOVER_GRACE`] (plus the advert's 1 ms) of b's takeover,
/// in CARP and VRRPv3, whether a ever heard b or not. Without `hand_over`, a shutdown
/// leaves nobody answering until b takes over.
#[test]
fn a_leaving_master_answers_until_the_arriving_master_is_heard() {
    let protocols = [
        (
            Timing::Carp {
                advbase: 1,
                advskew: 0,
            },
            Timing::Carp {
                advbase: 1,
                advskew: 100,
            },
        ),
        (
            Timing::Vrrp3 {
                priority: 200,
                interval_cs: 10,
            },
            Timing::Vrrp3 {
                priority: 100,
                interval_cs: 10,
            },
        ),
    ];
    let leave = [
        Event::Shutdown,
        Event::Force(State::BACKUP),
        Event::Demotion(240),
    ];
    for (ta, tb) in protocols {
        for event in leave {
            // b heard by a or not: b was master first (and a preempted it), or started
            // later. A preempting a takes a `set-state backup` back at once, as it heard b.
            for b_first in [false, true] {
                let mut m = [handing(ta, b_first, 1), handing(tb, true, 2)];
                let starts = if b_first {
                    [ms(5000), T0]
                } else {
                    [T0, ms(5000)]
                };
                let at = ms(20_000);
                let events = vec![
                    (starts[0], 0, Event::LinkUp),
                    (starts[1], 1, Event::LinkUp),
                    (at, 0, event),
                ];
                let trace = answering(&mut m, events, ms(30_000));
                let case = format!("{ta} {event:?} b first {b_first}");
                let before: Vec<_> = trace.iter().filter(|(t, _)| *t < at).collect();
                assert_eq!(before.last().unwrap().1, [true, false], "{case}");
                let after: Vec<_> = trace.iter().filter(|(t, _)| *t >= at).collect();
                assert!(
                    after.iter().all(|(_, [a, b])| *a || *b),
                    "{case}: {after:?}"
                );
                let took = after.iter().find(|(_, [_, b])| *b).expect(&case).0;
                if b_first && event == Event::Force(State::BACKUP) {
                    assert_eq!(after.last().unwrap().1, [true, false], "{case}");
                    continue;
                }
                let released = after.iter().find(|(_, [a, _])| !*a).expect(&case).0;
                assert!(
                    released > took,
                    "{case}: a stopped at {released:?}, b took over at {took:?}"
                );
                assert!(
                    released <= took + ms(1) + HANDOVER_GRACE,
                    "{case}: {released:?}, {took:?}"
                );
                assert_eq!(after.last().unwrap().1, [false, true], "{case}");
                assert_eq!(m[1].state(), State::MASTER, "{case}");
            }
        }
        // Without a handover, a bow-out leaves a gap until b's answer arrives.
        let mut m = [host(ta, true, ip(1)), host(tb, true, ip(2))];
        let events = vec![
            (T0, 0, Event::LinkUp),
            (ms(5000), 1, Event::LinkUp),
            (ms(20_000), 0, Event::Shutdown),
        ];
        let trace = answering(&mut m, events, ms(30_000));
        assert!(
            trace.iter().any(|(t, [a, b])| *t >= ms(20_000) && !a && !b),
            "{ta}"
        );
    }
}

/// How long a leaving master answers when nobody takes over: its lease when it never heard
/// a peer (backups are silent), else the longest master-down time a peer can have. A
/// bow-out of another host does not end it; the arriving master's advert does, after
/// [`HANDOVER_GRACE`]; a stop (`Release`) or a link down ends it at once, and becoming
/// MASTER again keeps answering without a withdrawal.
#[test]
fn a_handover_is_bounded_and_ends_at_once_when_told() {
    let carp = Timing::Carp {
        advbase: 1,
        advskew: 0,
    };
    let vrrp = Timing::Vrrp3 {
        priority: 200,
        interval_cs: 10,
    };
    for (timing, master_down) in [(carp, ms(4000)), (vrrp, ms(400))] {
        let master = |heard: bool| {
            let mut m = handing(timing, true, 1);
            m.handle(T0, Event::LinkUp);
            if heard {
                let ad = match timing {
                    Timing::Carp { .. } => carp_ad(2, 1, 100),
                    Timing::Vrrp3 { .. } => vrrp_ad(2, 100),
                };
                m.handle(ms(10), ad);
            }
            m.handle(ms(5000), Event::Timer);
            assert_eq!(m.state(), State::MASTER, "{timing}");
            m
        };
        let at = ms(6000);
        for (heard, bound) in [(false, master(false).lease()), (true, master_down)] {
            let mut m = master(heard);
            let out = m.handle(at, Event::Shutdown);
            assert_eq!(out[0], Action::Advertise(m.bow_out()), "{timing}");
            assert!(m.answering() && m.state() == State::INIT, "{timing}");
            assert_eq!(
                (m.handover_bound(), m.deadline()),
                (bound, Some(at + bound)),
                "{timing} {heard}"
            );
            assert_eq!(
                m.handle(at + bound - ms(1), Event::Timer),
                vec![],
                "{timing}"
            );
            assert_eq!(
                m.handle(at + bound, Event::Timer),
                vec![Action::Withdraw],
                "{timing}"
            );
            assert!(!m.answering() && m.deadline().is_none(), "{timing}");
        }
        let (stop, arrive) = match timing {
            Timing::Carp { .. } => (carp_ad(3, 255, 255), carp_ad(2, 1, 100)),
            Timing::Vrrp3 { .. } => (vrrp_ad(3, 0), vrrp_ad(2, 100)),
        };
        let mut m = master(true);
        m.handle(at, Event::Shutdown);
        m.handle(at + ms(1), stop);
        assert_eq!(m.deadline(), Some(at + master_down), "{timing}: a bow-out");
        m.handle(at + ms(2), arrive);
        assert_eq!(m.deadline(), Some(at + ms(2) + HANDOVER_GRACE), "{timing}");
        assert_eq!(m.handle(at + ms(3), Event::Release), vec![Action::Withdraw]);
        assert_eq!(m.handle(at + ms(4), Event::Release), vec![]);

        let mut m = master(true);
        m.handle(at, Event::Force(State::BACKUP));
        assert!(m.answering() && m.state() == State::BACKUP, "{timing}");
        let out = m.handle(at + ms(1), Event::LinkDown);
        assert_eq!(out.last(), Some(&Action::Withdraw), "{timing}");

        let mut m = master(true);
        m.handle(at, Event::Force(State::BACKUP));
        let out = m.handle(at + ms(1), Event::Force(State::MASTER));
        assert!(!out.contains(&Action::Withdraw), "{timing}: {out:?}");
        assert!(m.answering() && m.state() == State::MASTER, "{timing}");
        let next_advert = at + ms(1) + m.advert_interval();
        assert_eq!(
            m.deadline(),
            Some(next_advert),
            "{timing}: no handover left"
        );
    }
}
