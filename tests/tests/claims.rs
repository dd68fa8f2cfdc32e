//! README claims that had no test refuting them (issue 23 item 8), each asserted from typed
//! output: `ip -j`, tcx queries, status JSON, JSON log lines, captures.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use aya::programs::{SchedClassifier, tc::TcAttachType};
use carp_agent::control::{Attached, Verdict};
use carp_common::maps::XdpStats;
use carp_tests::{
    agent::{Agent, TempDir, start_pair, write_secret},
    flows::wait_masks,
    lan::Lan,
    netns::Netns,
    pcap::Capture,
    prometheus, rawbpf,
};
use nix::sys::signal::Signal;
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

const VIP: &str = "192.0.2.50";
const VIP6: &str = "2001:db8::50";
/// A lone agent's first election: master-down (3 s with advbase 1, advskew 0) and its
/// start-up.
const ELECTED: Duration = Duration::from_secs(8);

/// One VHID on eth0 with `agent_settings` before it (e.g. `xdp_mode`), VIP 192.0.2.50.
fn config(dir: &TempDir, agent_settings: &str, vhid_settings: &str) -> String {
    let pw = dir.path().join("pass");
    write_secret(&pw, "claims-secret").unwrap();
    format!(
        "{agent_settings}\n[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\n\
         pass_file = \"{}\"\n{vhid_settings}\n",
        pw.display()
    )
}

/// The XDP attachment of `eth0` in `ns` as the kernel reports it (`ip -j -d link`): the
/// mode (1 driver, 2 generic, 3 offload) and the program's name; None when there is none.
fn xdp_on_eth0(ns: &Netns) -> Option<(u64, String)> {
    let out = ns
        .command("ip")
        .args(["-j", "-d", "link", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let xdp = v[0].get("xdp")?;
    Some((
        xdp["mode"].as_u64().unwrap_or_else(|| panic!("xdp: {xdp}")),
        xdp["prog"]["name"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The names of the tcx ingress programs on `eth0` in `ns` (BPF_PROG_QUERY).
fn tc_on_eth0(ns: &Netns) -> Vec<String> {
    ns.enter(|| Ok(SchedClassifier::query_tcx("eth0", TcAttachType::Ingress)?))
        .unwrap()
        .1
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

/// Whether anything answers ARP for the VIP on the client's segment (arping exits 0 on
/// a reply, 1 on none).
fn arp_answered(client: &Netns) -> bool {
    let out = client
        .command("arping")
        .args(["-c", "2", "-w", "2", "-I", "eth0", VIP])
        .output()
        .unwrap();
    out.status.success()
}

/// README (intro): "the XDP attachment is a bpf_link owned by the agent, so a crashed
/// agent leaves no program answering" — in XDP (auto: generic on veth) and at tc ingress.
/// Before each SIGKILL the program is seen and answers, so the checks after it can see one.
#[test]
fn a_killed_agent_leaves_no_program_on_its_interface() {
    let tag = "crash";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let (host, client) = (&lan.hosts[0].ns, &lan.hosts[1].ns);
    // One agent, restarted in the second mode after its crash, as an operator would.
    let mut a = Agent::start(host, dir.path(), "a", &config(&dir, "", "")).unwrap();
    for (mode, hook) in [("auto", Attached::Skb), ("tc", Attached::Tc)] {
        if mode == "tc" {
            a.rewrite(&config(&dir, "xdp_mode = \"tc\"", "")).unwrap();
            a.spawn(host).unwrap();
        }
        a.wait_state(1, "MASTER", ELECTED).unwrap();
        assert_eq!(a.status().unwrap().interfaces[0].xdp_mode, hook, "{mode}");
        match hook {
            Attached::Tc => assert_eq!(tc_on_eth0(host), ["carp_tc"]),
            _ => assert!(xdp_on_eth0(host).is_some(), "{mode}: no XDP program"),
        }
        assert!(arp_answered(client), "{mode}: the master does not answer");

        a.signal(Signal::SIGKILL).unwrap();
        a.wait(Duration::from_secs(5)).unwrap();
        // The kernel releases a link when its last fd closes; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(1);
        while (xdp_on_eth0(host).is_some() || !tc_on_eth0(host).is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(xdp_on_eth0(host), None, "{mode}: XDP left after SIGKILL");
        assert_eq!(tc_on_eth0(host), Vec::<String>::new(), "{mode}: tc left");
        // The killed master's VIP is still on lo (arp_ignore=1): nothing answers for it.
        assert!(!arp_answered(client), "{mode}: the VIP still answered");
    }
}

/// README (Troubleshooting): "`xdp_mode = "auto"` uses generic XDP on veth" (and, Status,
/// every XDP counter is in the JSON), and where
/// another program holds the XDP hook, "the log says so ("XDP on eth0 is taken …:
/// attaching at tc ingress instead") and `carp-agent status` shows `"xdp_mode": "tc"`".
#[test]
fn auto_mode_is_generic_on_veth_and_tc_where_xdp_is_taken() {
    let tag = "auto";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a", "b"]).unwrap();
    let (a_ns, b_ns) = (&lan.hosts[0].ns, &lan.hosts[1].ns);

    // A free hook on a veth: generic XDP, as the agent and the kernel both say.
    let a = Agent::start_json(a_ns, dir.path(), "a", &config(&dir, "", ""), "info").unwrap();
    a.wait_state(1, "MASTER", ELECTED).unwrap();
    let status = a.status().unwrap();
    assert_eq!(status.interfaces[0].xdp_mode, Attached::Skb);
    // README (Status): "every XDP counter is present, zero or not".
    let mut every: Vec<&str> = XdpStats::default().fields().map(|(k, _)| k).to_vec();
    every.sort_unstable();
    let present: Vec<&str> = status.interfaces[0]
        .xdp
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(present, every);
    let (kernel_mode, name) = xdp_on_eth0(a_ns).expect("no XDP program on a's eth0");
    assert_eq!(
        kernel_mode, 2,
        "XDP_ATTACHED_SKB, got {kernel_mode} ({name})"
    );
    assert!(taken_warnings(&a).is_empty(), "{:?}", taken_warnings(&a));

    // The hook held by another program (native, through a link): tc ingress, and one
    // warning saying why.
    let other = rawbpf::empty_program(rawbpf::BPF_PROG_TYPE_XDP, 2, "other_xdp");
    let _link = b_ns
        .enter(|| {
            let eth0 = nix::net::if_::if_nametoindex("eth0")?;
            Ok(rawbpf::attach_native(other.as_raw_fd(), eth0))
        })
        .unwrap();
    let b = Agent::start_json(
        b_ns,
        dir.path(),
        "b",
        &config(&dir, "", "advskew = 100"),
        "info",
    )
    .unwrap();
    b.wait_state(1, "BACKUP", ELECTED).unwrap();
    assert_eq!(b.status().unwrap().interfaces[0].xdp_mode, Attached::Tc);
    assert_eq!(tc_on_eth0(b_ns), ["carp_tc"]);
    assert_eq!(xdp_on_eth0(b_ns), Some((1, "other_xdp".to_owned())));
    let warnings = taken_warnings(&b);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with("attaching at tc ingress instead, after the XDP programs"),
        "{warnings:?}"
    );
}

/// The WARN records of `agent`'s JSON log whose message starts "XDP on eth0 is taken".
fn taken_warnings(agent: &Agent) -> Vec<String> {
    agent
        .log_json()
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| l["fields"]["message"].as_str())
        .filter(|m| m.starts_with("XDP on eth0 is taken ("))
        .map(str::to_owned)
        .collect()
}

/// What a capture on the client shows of the VIPs being announced: gratuitous ARPs
/// (sender and target address the VIP) and unsolicited NAs (to all nodes, target the
/// VIP), by source MAC; and the ARP replies the VIP gave to requests.
#[derive(Debug, Default, PartialEq)]
struct Announced {
    garps: Vec<[u8; 6]>,
    unsolicited_nas: Vec<[u8; 6]>,
    arp_replies: usize,
}

fn announced(frames: &[Vec<u8>]) -> Announced {
    let vip: Ipv4Addr = VIP.parse().unwrap();
    let vip6: Ipv6Addr = VIP6.parse().unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let mut seen = Announced::default();
    for f in frames.iter().filter(|f| f.len() >= 42) {
        let src: [u8; 6] = f[6..12].try_into().unwrap();
        match u16::from_be_bytes([f[12], f[13]]) {
            0x0806 => {
                let (op, spa, tpa) = (
                    u16::from_be_bytes([f[20], f[21]]),
                    Ipv4Addr::from(<[u8; 4]>::try_from(&f[28..32]).unwrap()),
                    Ipv4Addr::from(<[u8; 4]>::try_from(&f[38..42]).unwrap()),
                );
                if spa == vip && tpa == vip {
                    seen.garps.push(src);
                } else if spa == vip && op == 2 {
                    seen.arp_replies += 1;
                }
            }
            0x86dd if f.len() >= 78 && f[20] == 58 && f[54] == 136 => {
                let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
                let target = Ipv6Addr::from(<[u8; 16]>::try_from(&f[62..78]).unwrap());
                if dst == all_nodes && target == vip6 {
                    seen.unsolicited_nas.push(src);
                }
            }
            _ => {}
        }
    }
    seen
}

/// README (Troubleshooting): "the new master sends `garp_count` gratuitous ARPs /
/// unsolicited NAs" — from the virtual MAC, once per round for each VIP, when a backup
/// takes over from a crashed master (garp_count 3, not the default 2).
#[test]
fn a_new_master_announces_each_vip_garp_count_times() {
    let tag = "garp";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let pw = dir.path().join("pass");
    write_secret(&pw, "claims-secret").unwrap();
    let conf = |advskew: u8| {
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\", \"{VIP6}/64\"]\n\
             advskew = {advskew}\ngarp_count = 3\npass_file = \"{}\"\n",
            pw.display()
        )
    };
    let (a, b) = start_pair(&lan, dir.path(), 1, &conf(0), &conf(100)).unwrap();
    let file = dir.path().join("announce.pcap");
    let capture = Capture::start(&lan.hosts[2].ns, "eth0", "arp or icmp6", 1000, &file).unwrap();
    a.signal(Signal::SIGKILL).unwrap();
    b.wait_state(1, "MASTER", ELECTED).unwrap();
    let seen = announced(&capture.frames(Duration::from_secs(2)).unwrap());
    let vmac = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x01];
    assert_eq!(seen.garps, [vmac; 3], "{seen:?}");
    assert_eq!(seen.unsolicited_nas, [vmac; 3], "{seen:?}");
}

/// README (Load sharing): "Nothing is announced on a takeover: the group's MAC never
/// moves." Host a takes over b's VHID of a balanced group when b crashes; the client
/// sees no gratuitous ARP or unsolicited NA, though it sees the VIP answer its request.
#[test]
fn a_balanced_takeover_announces_nothing() {
    let tag = "lsann";
    let dir = TempDir::new(tag).unwrap();
    let mut lan = Lan::new(tag, &["a", "b"]).unwrap();
    lan.add_host(tag, "client").unwrap();
    let pw = dir.path().join("pass");
    write_secret(&pw, "claims-secret").unwrap();
    let vips = [&format!("{VIP}/24")[..], &format!("{VIP6}/64")];
    let agents: Vec<Agent> = (0..2)
        .map(|h| {
            let conf = carp_tests::flows::config(h, 2, &vips, &pw);
            Agent::start(&lan.hosts[h].ns, dir.path(), ["a", "b"][h], &conf).unwrap()
        })
        .collect();
    wait_masks(&agents, &[Some(0b01), Some(0b10)], Duration::from_secs(12));
    let file = dir.path().join("announce.pcap");
    let capture = Capture::start(&lan.hosts[2].ns, "eth0", "arp or icmp6", 1000, &file).unwrap();
    agents[1].signal(Signal::SIGKILL).unwrap();
    wait_masks(&agents[..1], &[Some(0b11)], ELECTED);
    std::thread::sleep(Duration::from_millis(500));
    // The capture sees the VIP's ARP: a request from the client is answered.
    let arping = lan.hosts[2]
        .ns
        .command("arping")
        .args(["-c", "1", "-w", "2", "-I", "eth0", VIP])
        .output()
        .unwrap();
    assert!(arping.status.success(), "{arping:?}");
    let seen = announced(&capture.frames(Duration::from_secs(1)).unwrap());
    assert_eq!(
        seen,
        Announced {
            arp_replies: 1,
            ..Announced::default()
        }
    );
}

/// A scrape of `http://127.0.0.1:9720/metrics` in `ns`, typed.
fn scrape(ns: &Netns) -> std::collections::BTreeMap<prometheus::Key, f64> {
    let response = ns
        .enter(|| {
            let mut s = std::net::TcpStream::connect("127.0.0.1:9720")?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })
        .unwrap();
    prometheus::parse_response(&response).unwrap_or_else(|e| panic!("{e:#}:\n{response}"))
}

/// README (Metrics): the families beside state and transitions, read from live scrapes
/// and compared with the status: `carp_vhid_demotion`, `carp_adverts_received_total`,
/// `carp_vhid_waiting` (1 by reason), `carp_hook_runs_total` by outcome, `carp_demotion`,
/// and per check `carp_check_healthy` (1, 0 failing, -1 before its first run),
/// `carp_check_runs_total`, `carp_check_failures_total`. Master a runs an up hook and
/// has a VHID waiting for its interface; backup b receives adverts and has three checks,
/// one failing (demoting the host by 50).
#[test]
fn the_metrics_show_what_the_status_shows() {
    use prometheus::key;
    let tag = "prom";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a", "b"]).unwrap();
    let pw = dir.path().join("pass");
    write_secret(&pw, "claims-secret").unwrap();
    let vhid = |interface: &str, n: u8, vip: &str, extra: &str| {
        format!(
            "[[vhid]]\ninterface = \"{interface}\"\nvhid = {n}\nvips = [\"{vip}\"]\n\
             pass_file = \"{}\"\n{extra}\n",
            pw.display()
        )
    };
    let conf_a = format!(
        "metrics = \"127.0.0.1:9720\"\n\n{}{}",
        vhid("eth0", 1, "192.0.2.50/24", "up_script = \"/bin/true\""),
        vhid("eth9", 2, "198.51.100.50/24", "")
    );
    let check = |name: &str, command: &str, extra: &str| {
        format!("[[check]]\nname = \"{name}\"\ncommand = {command}\ninterval = 0.2\n{extra}\n")
    };
    let conf_b = format!(
        "metrics = \"127.0.0.1:9720\"\n\n{}{}{}{}",
        vhid("eth0", 1, "192.0.2.50/24", "advskew = 100"),
        check("up", "[\"/bin/true\"]", "rise = 1"),
        check("down", "[\"/bin/false\"]", "fall = 1\ndemote = 50"),
        check("slow", "[\"/bin/sleep\", \"600\"]", "timeout = 600"),
    );
    let (_a, b) = start_pair(&lan, dir.path(), 1, &conf_a, &conf_b).unwrap();
    // b: the failing check's demotion applied, adverts received.
    let deadline = Instant::now() + Duration::from_secs(5);
    let settled = |s: &carp_agent::control::Status| {
        s.demotion == 50
            && s.vhids[0].adverts_received >= 2
            && s.checks
                .iter()
                .any(|c| c.name == "up" && c.state == Verdict::Healthy)
    };
    while !settled(&b.status().unwrap()) {
        assert!(Instant::now() < deadline, "{:?}", b.status().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (a_ns, b_ns) = (&lan.hosts[0].ns, &lan.hosts[1].ns);

    let before = b.status().unwrap();
    let m = scrape(b_ns);
    let after = b.status().unwrap();
    let eth0_1 = [("interface", "eth0"), ("vhid", "1")];
    assert_eq!(m[&key("carp_demotion", &[])], 50.0);
    assert_eq!(m[&key("carp_vhid_demotion", &eth0_1)], 50.0);
    assert_eq!(before.vhids[0].demotion, 50);
    let received = m[&key("carp_adverts_received_total", &eth0_1)];
    assert!(
        (before.vhids[0].adverts_received as f64..=after.vhids[0].adverts_received as f64)
            .contains(&received),
        "{received} outside the status's {} ..= {}",
        before.vhids[0].adverts_received,
        after.vhids[0].adverts_received
    );
    for (name, healthy) in [("up", 1.0), ("down", 0.0), ("slow", -1.0)] {
        let l = [("check", name)];
        assert_eq!(m[&key("carp_check_healthy", &l)], healthy, "{name}");
        let (b4, af) = (
            before.checks.iter().find(|c| c.name == name).unwrap(),
            after.checks.iter().find(|c| c.name == name).unwrap(),
        );
        for (family, lo, hi) in [
            ("carp_check_runs_total", b4.runs, af.runs),
            ("carp_check_failures_total", b4.failures, af.failures),
        ] {
            let v = m[&key(family, &l)];
            assert!((lo as f64..=hi as f64).contains(&v), "{family} {name}: {v}");
        }
    }
    assert_eq!(
        m[&key("carp_check_failures_total", &[("check", "up")])],
        0.0
    );
    assert!(m[&key("carp_check_failures_total", &[("check", "down")])] >= 1.0);
    assert_eq!(m[&key("carp_check_runs_total", &[("check", "slow")])], 0.0);

    // a: one up hook run, ok; VHID 2 waits for eth9.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ok = key("carp_hook_runs_total", &[("outcome", "ok")]);
    let m = loop {
        let m = scrape(a_ns);
        if m.contains_key(&ok) || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(m.get(&ok), Some(&1.0), "{m:?}");
    let waiting = [
        ("interface", "eth9"),
        ("vhid", "2"),
        ("reason", "no interface"),
    ];
    assert_eq!(m[&key("carp_vhid_waiting", &waiting)], 1.0);
    assert_eq!(
        m.keys().filter(|(n, _)| n == "carp_vhid_waiting").count(),
        1,
        "only the waiting VHID has one"
    );
    assert_eq!(m[&key("carp_vhid_demotion", &eth0_1)], 0.0);
    assert_eq!(m[&key("carp_demotion", &[])], 0.0);
}

/// Every counter of `status --json` by its path, e.g. `vhids/0/adverts_sent`,
/// `interfaces/0/xdp/bad_hmac`, `checks/0/runs`: each number but the settings and gauges
/// (which may go down) named here.
fn counters(s: &carp_agent::control::Status) -> std::collections::BTreeMap<String, u64> {
    const NOT_COUNTERS: [&str; 9] = [
        "demotion",
        "vhid",
        "advbase",
        "advskew",
        "priority",
        "interval_ms",
        "seconds_in_state",
        "demote",
        "balance",
    ];
    fn walk(
        v: &serde_json::Value,
        path: String,
        out: &mut std::collections::BTreeMap<String, u64>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m
                    .iter()
                    .filter(|(k, _)| !NOT_COUNTERS.contains(&k.as_str()))
                {
                    walk(v, format!("{path}/{k}"), out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{path}/{i}"), out);
                }
            }
            serde_json::Value::Number(n) => {
                out.insert(path, n.as_u64().expect("a counter is a u64"));
            }
            _ => {}
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(&serde_json::to_value(s).unwrap(), String::new(), &mut out);
    out
}

/// README (Status): "counters only grow". The status of a master and of its backup
/// (which has a health check) before and after both reload (SIGHUP) and the backup's link
/// goes down and up: every counter is still there and at least what it was.
#[test]
fn counters_only_grow_across_a_reload_and_a_link_flap() {
    let tag = "grow";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a", "b"]).unwrap();
    let check = "[[check]]\nname = \"ok\"\ncommand = [\"/bin/true\"]\ninterval = 0.2\n";
    let conf_a = config(&dir, "", "");
    let conf_b = format!("{}{check}", config(&dir, "", "advskew = 100"));
    let (a, b) = start_pair(&lan, dir.path(), 1, &conf_a, &conf_b).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.status().unwrap().vhids[0].adverts_received < 2 {
        assert!(Instant::now() < deadline, "{:?}", b.status().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = [
        counters(&a.status().unwrap()),
        counters(&b.status().unwrap()),
    ];
    assert!(before[1].contains_key("/checks/0/runs"), "{:?}", before[1]);
    assert!(
        before[0].contains_key("/interfaces/0/xdp/bad_hmac"),
        "{:?}",
        before[0]
    );
    for agent in [&a, &b] {
        agent.signal(Signal::SIGHUP).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let b_ns = &lan.hosts[1].ns;
    b_ns.ip(&["link", "set", "eth0", "down"]).unwrap();
    b.wait_state(1, "INIT", Duration::from_secs(3)).unwrap();
    b_ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    b.wait_state(1, "BACKUP", Duration::from_secs(5)).unwrap();
    let after = [
        counters(&a.status().unwrap()),
        counters(&b.status().unwrap()),
    ];
    for (name, (before, after)) in ["a", "b"].iter().zip(before.iter().zip(&after)) {
        for (path, was) in before {
            let now = after
                .get(path)
                .unwrap_or_else(|| panic!("{name}: {path} gone"));
            assert!(now >= was, "{name}: {path} went from {was} to {now}");
        }
    }
    // b lived through the flap: it left BACKUP and came back.
    assert!(after[1]["/vhids/0/transitions"] >= before[1]["/vhids/0/transitions"] + 2);
}

/// README (Operator): `carp-agent demote +50 --group db` (OpenBSD's `ifconfig -g db
/// carpdemote 50`) demotes the VHIDs of group db only: their effective demotion in the
/// status, not the other VHID's nor the host's; `-50 --group db` gives it back.
#[test]
fn demote_group_demotes_only_that_groups_vhids() {
    let tag = "dgroup";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a"]).unwrap();
    let conf = format!(
        "{}[[vhid]]\ninterface = \"eth0\"\nvhid = 2\nvips = [\"198.51.100.50/24\"]\n\
         pass_file = \"{}\"\n",
        config(&dir, "", "groups = [\"db\"]"),
        dir.path().join("pass").display()
    );
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &conf).unwrap();
    a.wait_state(1, "MASTER", ELECTED).unwrap();
    let demotions = |a: &Agent| {
        let s = a.status().unwrap();
        let of = |n: u8| s.vhids.iter().find(|v| v.vhid == n).unwrap().demotion;
        (s.demotion, of(1), of(2))
    };
    assert_eq!(demotions(&a), (0, 0, 0));
    a.ctl(&["demote", "+50", "--group", "db"]).unwrap();
    assert_eq!(demotions(&a), (0, 50, 0), "host, VHID 1 (db), VHID 2");
    a.ctl(&["demote", "-50", "--group", "db"]).unwrap();
    assert_eq!(demotions(&a), (0, 0, 0));
}

/// The reason of `agent`'s last JSON log line "vhid 1 on eth0 X -> Y: REASON (after T s)".
fn last_logged_reason(agent: &Agent) -> String {
    let log = agent.log_json();
    let line = log
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .rfind(|m| m.starts_with("vhid 1 on eth0 ") && m.contains(" -> "))
        .unwrap_or_else(|| panic!("{}: no transition logged", agent.name));
    let reason = line.split_once(": ").unwrap().1;
    reason.rsplit_once(" (after ").unwrap().0.to_owned()
}

/// README (Status): `last_reason` is "the reason of the last transition as the log words
/// it", in the README's examples' words (quick start): a lone master's "master timed
/// out", a preempting backup's "preempting a less preferred master" once the master is
/// demoted by 150, and a backup's "master bowed out" when the master stops.
#[test]
fn last_reason_words_the_transition_as_the_log_does() {
    let tag = "reason";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a", "b"]).unwrap();
    let (a_ns, b_ns) = (&lan.hosts[0].ns, &lan.hosts[1].ns);
    let conf_a = config(&dir, "", "preempt = true");
    let mut a = Agent::start_json(a_ns, dir.path(), "a", &conf_a, "info").unwrap();
    a.wait_state(1, "MASTER", ELECTED).unwrap();
    let conf_b = config(&dir, "", "advskew = 100\npreempt = true");
    let b = Agent::start_json(b_ns, dir.path(), "b", &conf_b, "info").unwrap();
    b.wait_state(1, "BACKUP", ELECTED).unwrap();
    let said = |agent: &Agent, words: &str| {
        assert_eq!(
            agent.status().unwrap().vhids[0].last_reason,
            words,
            "{}",
            agent.name
        );
        assert_eq!(last_logged_reason(agent), words, "{}", agent.name);
    };
    said(&a, "master timed out");

    a.ctl(&["demote", "+150"]).unwrap();
    b.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    said(&b, "preempting a less preferred master");

    a.ctl(&["demote", "-150"]).unwrap();
    a.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    said(&a, "preempting a less preferred master");

    a.signal(Signal::SIGTERM).unwrap();
    a.wait(Duration::from_secs(5)).unwrap();
    b.wait_state(1, "MASTER", Duration::from_secs(3)).unwrap();
    said(&b, "master bowed out");
}

/// README (Checks, Reload): a check whose first run has not finished is `pending`; "a
/// reload keeps the verdict of unchanged checks" (a failing one stays failing, its runs
/// counted on, its demotion kept); and `[agent] demotion` "is the value at start": a
/// reload that changes it leaves the running demotion as it was.
#[test]
fn a_reload_keeps_check_verdicts_and_the_running_demotion() {
    let tag = "rlkeep";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a"]).unwrap();
    let checks = "[[check]]\nname = \"slow\"\ncommand = [\"/bin/sleep\", \"600\"]\n\
                  timeout = 600\n\n[[check]]\nname = \"bad\"\ncommand = [\"/bin/false\"]\n\
                  interval = 0.2\nfall = 1\ndemote = 50\n";
    let conf = |demotion: i32| config(&dir, &format!("demotion = {demotion}"), checks);
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &conf(10)).unwrap();
    let check = |s: &carp_agent::control::Status, name: &str| {
        s.checks.iter().find(|c| c.name == name).unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let status = a.status();
        if let Ok(s) = &status
            && check(s, "bad").runs >= 2
        {
            break status.unwrap();
        }
        assert!(Instant::now() < deadline, "{status:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(check(&before, "bad").state, Verdict::Failing);
    assert_eq!(check(&before, "slow").state, Verdict::Pending);
    assert_eq!(before.demotion, 60, "10 at start, 50 of the failing check");

    a.rewrite(&conf(100)).unwrap();
    a.signal(Signal::SIGHUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !a.log_text().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = a.status().unwrap();
    let (bad, was) = (check(&after, "bad"), check(&before, "bad"));
    assert_eq!(bad.state, Verdict::Failing, "{bad:?}");
    assert!(
        bad.runs >= was.runs && bad.failures >= was.failures,
        "{was:?} -> {bad:?}"
    );
    assert_eq!(check(&after, "slow").state, Verdict::Pending);
    assert_eq!(
        after.demotion, 60,
        "the demotion at start, not the reloaded 100"
    );
}

/// README (Reload): "a reload applies `hook_timeout` from the next hook on". An up hook
/// of 2 s starts under `hook_timeout = 5`; a reload to 1 s while it runs leaves it be (it
/// ends ok), and the next up hook (after `set-state backup`, master again) is killed at
/// 1 s: `carp_hook_runs_total` by outcome.
#[test]
fn a_reload_applies_hook_timeout_from_the_next_hook_on() {
    use prometheus::key;
    let tag = "hooktmo";
    let dir = TempDir::new(tag).unwrap();
    let lan = Lan::new(tag, &["a"]).unwrap();
    let hook = dir.path().join("up.sh");
    std::fs::write(&hook, "#!/bin/sh\nsleep 2\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let conf = |timeout: u32| {
        config(
            &dir,
            &format!("metrics = \"127.0.0.1:9720\"\nhook_timeout = {timeout}"),
            &format!("up_script = \"{}\"", hook.display()),
        )
    };
    let a = Agent::start(&lan.hosts[0].ns, dir.path(), "a", &conf(5)).unwrap();
    a.wait_state(1, "MASTER", ELECTED).unwrap();
    a.rewrite(&conf(1)).unwrap();
    a.signal(Signal::SIGHUP).unwrap();
    let ns = &lan.hosts[0].ns;
    let outcomes = |ns: &Netns| {
        let m = scrape(ns);
        let n = |outcome| {
            m.get(&key("carp_hook_runs_total", &[("outcome", outcome)]))
                .copied()
                .unwrap_or(0.0)
        };
        (n("ok"), n("timedout"))
    };
    let wait_for = |want: (f64, f64)| {
        let deadline = Instant::now() + Duration::from_secs(6);
        while outcomes(ns) != want {
            assert!(
                Instant::now() < deadline,
                "{:?}, not {want:?}",
                outcomes(ns)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while !a.log_text().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        outcomes(ns),
        (0.0, 0.0),
        "the first hook ended before the reload"
    );
    // The running hook keeps the 5 s it started with.
    wait_for((1.0, 0.0));
    a.ctl(&["set-state", "1", "backup"]).unwrap();
    a.wait_state(1, "MASTER", ELECTED).unwrap();
    // The next one has 1 s.
    wait_for((1.0, 1.0));
}
