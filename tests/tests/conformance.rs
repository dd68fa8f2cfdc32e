//! FreeBSD's reference CARP tests, `tests/sys/netinet/carp.sh`, ported case by case with
//! their addresses and topology: jails become network namespaces, `ifconfig ... vhid`
//! becomes a carp-agent configuration, `ifconfig`'s state lines become `status --json`.
//! Each test asserts what FreeBSD does, so a case that fails here is a difference from it.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_tests::{
    agent::{Agent, TempDir},
    netns::{Netns, run},
};
use serde::Deserialize;
use std::{
    process::Output,
    time::{Duration, Instant},
};

/// carp.sh's `wait_for_carp` loops forever; a bounded wait fails instead.
const ELECTION: Duration = Duration::from_secs(10);
/// Two advert intervals (advbase 1): long enough for a contested election to settle.
const SETTLE: Duration = Duration::from_secs(2);

/// A test's jails: "_one" (FreeBSD's bridge or router jail) and the two CARP jails "_two"
/// and "_three", whose eth0 are veths (FreeBSD's epair_one b and epair_two b) to "_one".
/// Field order is drop order: the CARP jails go before the namespace holding their peers.
struct Jails {
    two: Netns,
    three: Netns,
    one: Netns,
}

impl Jails {
    /// The jails and their veths, all up, without addresses. In "_one" the ports are
    /// `epair1a` and `epair2a`, with GRO on: native XDP on a veth only delivers the
    /// XDP_TX frames (ARP and NA answers) when its peer has GRO on.
    fn new(tag: &str) -> Self {
        let one = Netns::new(&format!("{tag}-one")).unwrap();
        let two = Netns::new(&format!("{tag}-two")).unwrap();
        let three = Netns::new(&format!("{tag}-three")).unwrap();
        for (host, port) in [(&two, "epair1a"), (&three, "epair2a")] {
            one.uplink(host, port).unwrap();
        }
        Self { two, three, one }
    }

    /// [`Jails::new`] with "_one" bridging its two ports on `br0`, which gets `addrs`.
    fn bridged(tag: &str, addrs: &[&str]) -> Self {
        let j = Self::new(tag);
        j.one.bridge("br0").unwrap();
        for port in ["epair1a", "epair2a"] {
            j.one.ip(&["link", "set", port, "master", "br0"]).unwrap();
        }
        for a in addrs {
            addr(&j.one, "br0", a);
        }
        j
    }
}

/// `ifconfig <dev> [inet6] <cidr> [no_dad]`: IPv6 addresses without DAD, as carp.sh's.
fn addr(ns: &Netns, dev: &str, cidr: &str) {
    let mut args = vec!["addr", "add", cidr, "dev", dev];
    if cidr.contains(':') {
        args.push("nodad");
    }
    ns.ip(&args).unwrap();
}

/// `sysctl` inside a namespace.
fn sysctl(ns: &Netns, setting: &str) {
    run(ns.command("sysctl").args(["-qw", setting])).unwrap();
}

/// `ifconfig eth0 [inet6] add vhid 1 <vip>` with `extra` settings (`peers`, `protocol`,
/// ...): advbase 1, advskew 0 and no password unless `extra` says otherwise.
fn vhid1(vip: &str, extra: &str) -> String {
    format!("[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{vip}\"]\n{extra}\n")
}

/// Both agents' states, non-zero XDP counters and logs, for a failure message.
fn report(a: &Agent, b: &Agent) -> String {
    [a, b]
        .iter()
        .map(|x| {
            let xdp: Vec<(String, u64)> = x
                .status()
                .map(|s| s.interfaces)
                .unwrap_or_default()
                .into_iter()
                .flat_map(|i| i.xdp)
                .filter(|(_, n)| *n != 0)
                .collect();
            format!(
                "\n--- {}: {:?}, XDP {xdp:?}, log:\n{}",
                x.name,
                x.state(1),
                x.log_text()
            )
        })
        .collect()
}

/// carp.sh's `wait_for_carp`: waits until one of the two is MASTER of VHID 1, then
/// [`SETTLE`] more, and requires exactly one MASTER and the other BACKUP. Returns
/// whether `a` is the master.
fn wait_for_carp(a: &Agent, b: &Agent) -> bool {
    let start = Instant::now();
    let master = |x: &Agent| x.state(1).as_deref() == Some("MASTER");
    while !master(a) && !master(b) {
        assert!(
            start.elapsed() < ELECTION,
            "no MASTER after {ELECTION:?}{}",
            report(a, b)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(SETTLE);
    let states = (a.state(1), b.state(1));
    match (states.0.as_deref(), states.1.as_deref()) {
        (Some("MASTER"), Some("BACKUP")) => true,
        (Some("BACKUP"), Some("MASTER")) => false,
        _ => panic!("not one MASTER and one BACKUP{}", report(a, b)),
    }
}

/// Runs `ping args...` in `ns`.
fn ping(ns: &Netns, args: &[&str]) -> Output {
    ns.command("ping").args(args).output().unwrap()
}

/// `atf_check -s exit:0 ... ping`: the ping must get its replies.
fn ping_ok(ns: &Netns, args: &[&str], agents: (&Agent, &Agent)) {
    let out = ping(ns, args);
    assert!(
        out.status.success(),
        "ping {args:?} from {} failed ({}): {}{}{}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        report(agents.0, agents.1)
    );
}

/// carp.sh's "Sanity check" ping. FreeBSD's ping waits 10 s for the reply; 5 s here
/// covers the first neighbour discovery through the router, which waits about 1 s for
/// the router's link-local address to finish DAD.
fn sanity_ping(ns: &Netns, family: &str, dst: &str, agents: (&Agent, &Agent)) {
    ping_ok(ns, &[family, "-c", "1", "-W", "5", dst], agents);
}

/// Starts agent `name` in `ns` and waits until its VHID 1 runs (left INIT), as
/// `ifconfig ... add vhid` returns with the VHID in place: started back to back, the
/// second agent could otherwise be running first and win an election carp.sh's order
/// decides.
fn agent(ns: &Netns, dir: &TempDir, name: &str, config: &str) -> Agent {
    let mut a = Agent::start(ns, dir.path(), name, config).unwrap();
    let start = Instant::now();
    while !matches!(a.state(1).as_deref(), Some("BACKUP" | "MASTER")) {
        if let Ok(status) = a.wait(Duration::ZERO) {
            panic!("{name} exited ({status}); log:\n{}", a.log_text());
        }
        assert!(
            start.elapsed() < ELECTION,
            "{name}: VHID 1 not running after {ELECTION:?} (is {:?}); log:\n{}",
            a.state(1),
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a
}

/// Starts agents "two" and "three" with their configurations, as carp.sh configures the
/// VHID in `_two` and then in `_three`.
fn start(j: &Jails, dir: &TempDir, two: &str, three: &str) -> (Agent, Agent) {
    (
        agent(&j.two, dir, "two", two),
        agent(&j.three, dir, "three", three),
    )
}

/// carp.sh's bridged cases (basic_v4, vrrp_v4, basic_v6, vrrp_v6): the bridge jail has
/// `bridge_addr`, the CARP jails `addrs`, and both configure VHID 1 on `vip` with
/// `extra`; one becomes MASTER and the VIP answers pings from the bridge jail.
fn basic(tag: &str, bridge_addr: &str, addrs: [&str; 2], vip: &str, extra: &str) {
    let dir = TempDir::new(tag).unwrap();
    let j = Jails::bridged(tag, &[bridge_addr]);
    addr(&j.two, "eth0", addrs[0]);
    addr(&j.three, "eth0", addrs[1]);
    let (two, three) = start(&j, &dir, &vhid1(vip, extra), &vhid1(vip, extra));
    wait_for_carp(&two, &three);
    let host = vip.split('/').next().unwrap();
    let family = if host.contains(':') { "-6" } else { "-4" };
    ping_ok(
        &j.one,
        &[family, "-c", "3", "-W", "1", host],
        (&two, &three),
    );
}

/// carp.sh `basic_v4` ("Basic CARP test (IPv4)"): two hosts whose own addresses
/// (192.0.2.202/29, .203/29) are outside the VIP's subnet 192.0.2.0/29 still elect one
/// master, and the VIP 192.0.2.1 answers pings from the bridge (192.0.2.4/29).
#[test]
fn basic_v4() {
    basic(
        "bv4",
        "192.0.2.4/29",
        ["192.0.2.202/29", "192.0.2.203/29"],
        "192.0.2.1/29",
        "",
    );
}

/// carp.sh `vrrp_v4` ("Basic VRRP test (IPv4)"): basic_v4 with `carpver 3`, VRRPv3 with
/// its defaults (priority 100, interval 1 s).
#[test]
fn vrrp_v4() {
    basic(
        "vv4",
        "192.0.2.4/29",
        ["192.0.2.202/29", "192.0.2.203/29"],
        "192.0.2.1/29",
        "protocol = \"vrrp3\"",
    );
}

/// carp.sh `basic_v6` ("Basic CARP test (IPv6)"): hosts 2001:db8::1:2 and ::1:3 elect one
/// master of 2001:db8::1/64, which answers pings from the bridge (2001:db8::4/64).
#[test]
fn basic_v6() {
    basic(
        "bv6",
        "2001:db8::4/64",
        ["2001:db8::1:2/64", "2001:db8::1:3/64"],
        "2001:db8::1/64",
        "",
    );
}

/// carp.sh `vrrp_v6` ("Basic VRRP test (IPv6)"): basic_v6 with `carpver 3`; the master
/// answers for the VIP with the IPv6 VRRP MAC 00:00:5e:00:02:01.
#[test]
fn vrrp_v6() {
    basic(
        "vv6",
        "2001:db8::4/64",
        ["2001:db8::1:2/64", "2001:db8::1:3/64"],
        "2001:db8::1/64",
        "protocol = \"vrrp3\"",
    );
}

/// carp.sh `unicast_v4` ("Unicast CARP test (IPv4)"): no shared link. The router jail
/// joins 198.51.100.0/25 (host two, .2) and 198.51.100.128/25 (host three, .224, the
/// address of PR 284872); each host sends its adverts to the other as `peer`. One
/// becomes master of 192.0.2.1/32, which answers pings routed through it. Then "we
/// remain in unicast when tweaking settings": two's advskew becomes 2 by a reload.
#[test]
fn unicast_v4() {
    let dir = TempDir::new("uv4").unwrap();
    let j = Jails::new("uv4");
    for ns in [&j.one, &j.two, &j.three] {
        sysctl(ns, "net.ipv4.ip_forward=1");
    }
    addr(&j.one, "epair1a", "198.51.100.1/25");
    addr(&j.one, "epair2a", "198.51.100.129/25");
    addr(&j.two, "eth0", "198.51.100.2/25");
    j.two
        .ip(&["route", "add", "198.51.100.224", "via", "198.51.100.1"])
        .unwrap();
    addr(&j.three, "eth0", "198.51.100.224/25");
    j.three
        .ip(&["route", "add", "198.51.100.2", "via", "198.51.100.129"])
        .unwrap();
    let conf_two = |extra: &str| {
        vhid1(
            "192.0.2.1/32",
            &format!("peers = [\"198.51.100.224\"]\n{extra}"),
        )
    };
    let (two, three) = start(
        &j,
        &dir,
        &conf_two(""),
        &vhid1("192.0.2.1/32", "peers = [\"198.51.100.2\"]"),
    );
    sanity_ping(&j.two, "-4", "198.51.100.224", (&two, &three));

    let two_master = wait_for_carp(&two, &three);
    let gateway = if two_master {
        "198.51.100.2"
    } else {
        "198.51.100.224"
    };
    j.one
        .ip(&["route", "add", "192.0.2.1/32", "via", gateway])
        .unwrap();
    ping_ok(&j.one, &["-c", "3", "-W", "1", "192.0.2.1"], (&two, &three));

    // carp.sh reads `peer 198.51.100.224` back from ifconfig. `status --json` has no
    // peers, so this checks their effect: two becomes master (three is forced to BACKUP
    // and stays there without preempt), and as only unicast crosses the router, three
    // keeps receiving two's adverts only if two still sends them to its peer.
    two.rewrite(&conf_two("advskew = 2")).unwrap();
    two.ctl(&["reload"]).unwrap();
    assert_eq!(
        two.status().unwrap().vhids[0].advskew,
        2,
        "reload not applied"
    );
    three.ctl(&["set-state", "1", "backup"]).unwrap();
    two.wait_state(1, "MASTER", ELECTION).unwrap();
    let received = || three.status().unwrap().vhids[0].adverts_received;
    let before = received();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        received() >= before + 2,
        "two's adverts stopped reaching its peer{}",
        report(&two, &three)
    );
    assert_eq!(
        (two.state(1).as_deref(), three.state(1).as_deref()),
        (Some("MASTER"), Some("BACKUP")),
        "{}",
        report(&two, &three)
    );
}

/// carp.sh `unicast_v6` ("Unicast CARP test (IPv6)"): on one bridge, but in different
/// prefixes (2001:db8:1::2 and 2001:db8:2::2) routed by the bridge jail, the hosts send
/// adverts to each other as `peer6`; one becomes master of 2001:db8::1/64.
#[test]
fn unicast_v6() {
    let dir = TempDir::new("uv6").unwrap();
    let j = Jails::bridged(
        "uv6",
        &["2001:db8::4/64", "2001:db8:1::1/64", "2001:db8:2::1/64"],
    );
    sysctl(&j.one, "net.ipv6.conf.all.forwarding=1");
    addr(&j.two, "eth0", "2001:db8:1::2/64");
    j.two
        .ip(&["-6", "route", "add", "default", "via", "2001:db8:1::1"])
        .unwrap();
    addr(&j.three, "eth0", "2001:db8:2::2/64");
    j.three
        .ip(&["-6", "route", "add", "default", "via", "2001:db8:2::1"])
        .unwrap();
    let (two, three) = start(
        &j,
        &dir,
        &vhid1("2001:db8::1/64", "peers = [\"2001:db8:2::2\"]"),
        &vhid1("2001:db8::1/64", "peers = [\"2001:db8:1::2\"]"),
    );
    sanity_ping(&j.two, "-6", "2001:db8:2::2", (&two, &three));
    wait_for_carp(&two, &three);
    ping_ok(
        &j.one,
        &["-6", "-c", "3", "-W", "1", "2001:db8::1"],
        (&two, &three),
    );
}

/// `ip -j addr` entries, for the link-local addresses.
#[derive(Deserialize)]
struct Link {
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    local: String,
    scope: String,
    #[serde(default)]
    tentative: bool,
}

/// The fe80:: address of `ns`'s eth0 (carp.sh reads it from ifconfig), once DAD is
/// done with it and it can send.
fn link_local(ns: &Netns) -> String {
    let start = Instant::now();
    loop {
        let out = ns.ip(&["-j", "-6", "addr", "show", "dev", "eth0"]).unwrap();
        let links: Vec<Link> = serde_json::from_slice(&out.stdout).unwrap();
        let ll = links
            .iter()
            .flat_map(|l| &l.addr_info)
            .find(|a| a.scope == "link" && !a.tentative);
        if let Some(a) = ll {
            return a.local.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no link-local on {}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// carp.sh `unicast_ll_v6` ("Unicast CARP test (IPv6, link-local)"): unicast adverts to
/// the other host's link-local address (written without a scope, as carp.sh strips
/// `%epairNb`); one becomes master of 2001:db8::1/64.
#[test]
fn unicast_ll_v6() {
    let dir = TempDir::new("ullv6").unwrap();
    let j = Jails::bridged("ullv6", &["2001:db8::4/64", "2001:db8:1::1/64"]);
    addr(&j.two, "eth0", "2001:db8:1::2/64");
    addr(&j.three, "eth0", "2001:db8:1::3/64");
    let (ll_one, ll_two) = (link_local(&j.two), link_local(&j.three));
    let (two, three) = start(
        &j,
        &dir,
        &vhid1("2001:db8::1/64", &format!("peers = [\"{ll_two}\"]")),
        &vhid1("2001:db8::1/64", &format!("peers = [\"{ll_one}\"]")),
    );
    sanity_ping(&j.two, "-6", "2001:db8:1::3", (&two, &three));
    wait_for_carp(&two, &three);
    ping_ok(
        &j.one,
        &["-6", "-c", "3", "-W", "1", "2001:db8::1"],
        (&two, &three),
    );
}

/// carp.sh `negative_demotion` ("Test PR #259528"): with preempt and a password, after
/// `net.inet.carp.demotion=-1` on the preferred host (a negative demotion counter) there
/// are still never two masters. Two hosts on one veth, 192.0.2.1 and .2, VIP .254/24.
#[test]
fn negative_demotion() {
    let dir = TempDir::new("negdem").unwrap();
    let one = Netns::new("negdem-one").unwrap();
    let two = Netns::new("negdem-two").unwrap();
    carp_tests::netns::veth(&one, "eth0", "192.0.2.1/24", &two, "eth0", "192.0.2.2/24").unwrap();
    let pass = dir.path().join("pass");
    carp_tests::agent::write_secret(&pass, "foobar").unwrap();
    let conf = |advskew: u8| {
        vhid1(
            "192.0.2.254/24",
            &format!(
                "advskew = {advskew}\npass_file = \"{}\"\npreempt = true",
                pass.display()
            ),
        )
    };
    let a = agent(&one, &dir, "one", &conf(0));
    let b = agent(&two, &dir, "two", &conf(100));
    // Allow things to settle
    wait_for_carp(&a, &b);

    a.ctl(&["demote", "-1"]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !(a.state(1).as_deref() == Some("MASTER") && b.state(1).as_deref() == Some("MASTER")),
        "Two masters! {}",
        report(&a, &b)
    );
}

/// `ip -j neigh` entries.
#[derive(Deserialize)]
struct Neighbour {
    dst: String,
    lladdr: Option<String>,
}

/// carp.sh `nd6_ns_source_mac` ("CARP ndp neighbor solicitation MAC source test
/// (IPv6)"): a packet sourced from the VIP 2001:db8::1 cannot leave the BACKUP, leaves
/// the MASTER, and the neighbour it reaches (the bridge, 2001:db8::4) learns the VIP at
/// the virtual MAC 00:00:5e:00:01:01, not at the master's own.
#[test]
fn nd6_ns_source_mac() {
    let dir = TempDir::new("ndmac").unwrap();
    let j = Jails::bridged("ndmac", &["2001:db8::4/64"]);
    addr(&j.two, "eth0", "2001:db8::1:2/64");
    addr(&j.three, "eth0", "2001:db8::1:3/64");
    let (master, slave) = start(
        &j,
        &dir,
        &vhid1("2001:db8::1/64", "advskew = 0"),
        &vhid1("2001:db8::1/64", "advskew = 100"),
    );
    wait_for_carp(&master, &slave);

    // FreeBSD's ping exits 2 (no reply); Linux's cannot even bind the BACKUP's
    // non-local source. Either way it must fail.
    let ping_args = [
        "-6",
        "-c",
        "3",
        "-W",
        "1",
        "-I",
        "2001:db8::1",
        "2001:db8::4",
    ];
    let out = ping(&j.three, &ping_args);
    assert!(
        !out.status.success(),
        "the BACKUP sent from the VIP: {}{}",
        String::from_utf8_lossy(&out.stdout),
        report(&master, &slave)
    );
    ping_ok(&j.two, &ping_args, (&master, &slave));

    let out = j.one.ip(&["-j", "neigh", "show"]).unwrap();
    let neighbours: Vec<Neighbour> = serde_json::from_slice(&out.stdout).unwrap();
    let vip = neighbours.iter().find(|n| n.dst == "2001:db8::1");
    assert_eq!(
        vip.and_then(|n| n.lladdr.as_deref()),
        Some("00:00:5e:00:01:01"),
        "the bridge's neighbour table: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// carp.sh `switch` ("Switch between master and backup"): one host alone, its VHID 1
/// (advskew 100, 192.0.2.1/24) forced to BACKUP and then to MASTER. carp.sh only checks
/// that this neither hangs nor panics; here each forced state must show. The veth's
/// other end is up too: a Linux veth has no carrier without it, a FreeBSD epair has.
#[test]
fn switch() {
    let dir = TempDir::new("switch").unwrap();
    let ns = Netns::new("switch").unwrap();
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "epair0b",
    ])
    .unwrap();
    for dev in ["eth0", "epair0b"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    let a = agent(&ns, &dir, "a", &vhid1("192.0.2.1/24", "advskew = 100"));
    for state in ["backup", "master"] {
        a.ctl(&["set-state", "1", state]).unwrap();
        a.wait_state(1, &state.to_uppercase(), Duration::from_secs(1))
            .unwrap();
    }
}
