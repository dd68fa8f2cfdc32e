//! Parsing and validation: every mistake one line, all at once.

use super::*;

const SEEDS_HOSTC: &str = r#"
    [agent]
    hook_timeout = 5

    [[vhid]]
    interface = "eth0"
    vhid = 1
    advskew = 100
    vips = ["192.0.2.50/24"]
    pass_env = "CARP_TEST_PW"

    [[vhid]]
    interface = "eth0"
    vhid = 2
    advskew = 100
    vips = ["192.0.2.51/24", "2001:db8::51"]
    pass_env = "CARP_TEST_PW"
    preempt = true
    groups = ["web"]
"#;

/// Every mistake `validate` finds in `text`, as `check` prints them.
fn mistakes(text: &str) -> Vec<String> {
    Config::parse(text)
        .unwrap()
        .validate(Path::new("/"))
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn the_seeds_hostc_parses() {
    // SAFETY: tests in this module set this variable only to this value.
    unsafe { std::env::set_var("CARP_TEST_PW", "testpass\n") };
    let plans = Config::parse(SEEDS_HOSTC)
        .unwrap()
        .validate(Path::new("/"))
        .unwrap();
    assert_eq!(plans.len(), 2);
    assert_eq!(
        plans[0].timing,
        Timing::Carp {
            advbase: 1,
            advskew: 100
        }
    );
    assert_eq!(plans[0].password, b"testpass", "trailing newline dropped");
    assert_eq!(plans[1].vips[1], ("2001:db8::51".parse().unwrap(), 128));
    assert!(plans[1].preempt);
    assert!(!format!("{:?}", plans[0]).contains("testpass"));
}

#[test]
fn a_reload_names_the_settings_only_a_restart_applies() {
    let parse = |t: &str| toml::from_str::<Config>(t).unwrap().agent;
    let old = parse("[agent]\nhook_timeout = 5\n");
    let same = parse("[agent]\nhook_timeout = 9\ndemotion = 50\n");
    let moved = parse(
        "[agent]\nsocket = \"/run/carp/b.sock\"\npin_dir = \"/sys/fs/bpf/b\"\n\
         xdp_mode = \"tc\"\nvips_on = \"interface\"\nmetrics = \"127.0.0.1:9720\"\n\
         netns = \"blue\"\n",
    );
    assert!(old.restart_needed(&same).is_empty());
    assert_eq!(
        old.restart_needed(&moved),
        [
            "socket", "pin_dir", "xdp_mode", "vips_on", "metrics", "netns"
        ]
    );
    // Each alone is named alone.
    for (line, name) in [
        ("pin_dir = \"/sys/fs/bpf/b\"", "pin_dir"),
        ("xdp_mode = \"skb\"", "xdp_mode"),
        ("netns = \"blue\"", "netns"),
    ] {
        let one = parse(&format!("[agent]\nhook_timeout = 5\n{line}\n"));
        assert_eq!(old.restart_needed(&one), [name], "{line}");
    }
}

#[test]
fn checks_take_defaults_and_report_their_mistakes() {
    let ok = Config::parse(
        r#"
        [[vhid]]
        interface = "eth0"
        vhid = 1
        vips = ["192.0.2.50"]
        groups = ["web"]

        [[check]]
        name = "nginx"
        command = ["/usr/bin/systemctl", "is-active", "--quiet", "nginx"]
        group = "web"
    "#,
    )
    .unwrap();
    ok.validate(Path::new("/")).unwrap();
    let c = &ok.checks[0];
    assert_eq!(
        (c.interval, c.timeout, c.fall, c.rise, c.demote),
        (2.0, 1.0, 2, 2, 240)
    );
    let bad = r#"
        [[vhid]]
        interface = "eth0"
        vhid = 1
        vips = ["192.0.2.50"]

        [[check]]
        name = "a"
        command = ["pidof", "nginx"]
        interval = 0
        fall = 0
        demote = -5
        group = "wbe"

        [[check]]
        name = "a"
        command = []

        [[check]]
        name = "b"
        command = ["/dev/null"]
    "#;
    let text = mistakes(bad);
    assert_eq!(
        text,
        [
            r#"check "a": command "pidof" must be an absolute path"#,
            r#"check "a": interval must be 0.1 to 86400 seconds"#,
            r#"check "a": fall and rise must be at least 1"#,
            r#"check "a": demote must be positive"#,
            r#"check "a": group "wbe" is not in the groups of any [[vhid]]"#,
            r#"check "a": this name is used by another check"#,
            r#"check "a": command is empty: give the program and its arguments"#,
            r#"check "b": command "/dev/null" is not an executable file"#,
        ]
    );
}

#[test]
fn every_mistake_is_reported_at_once() {
    let text = r#"
        [[vhid]]
        interface = "eth0"
        vhid = 0
        vips = ["192.0.2.500", "192.0.2.1/33"]
        advbase = 0
        pass_file = "/nonexistent/carp.pass"

        [[vhid]]
        interface = "eth0"
        vhid = 3
        vips = []
        protocol = "vrrp3"
        priority = 0
        interval_ms = 15

        [[vhid]]
        interface = "eth0"
        vhid = 3
        vips = ["192.0.2.9"]
        up_script = "relative.sh"
    "#;
    let mistakes = Config::parse(text)
        .unwrap()
        .validate(Path::new("/"))
        .unwrap_err();
    let all: Vec<String> = mistakes.iter().map(ToString::to_string).collect();
    let has = |needle: &str| all.iter().any(|m| m.contains(needle));
    assert!(has("vhid must be 1..=255"), "{all:#?}");
    assert!(has("\"192.0.2.500\" is not an IP address"));
    assert!(has("prefix length outside 0..=32"));
    assert!(has("advbase must be 1..=255"));
    assert!(has("cannot read pass_file /nonexistent/carp.pass"));
    assert!(has("at least one VIP"));
    assert!(has("priority must be 1..=255"));
    assert!(has("interval_ms must be a multiple of 10"));
    assert!(has("configured twice"));
    assert!(has("must be an absolute path"));
}

/// What would fail at run time is refused by `check`, one line each: durations that do
/// not fit (they panicked at first use), a VIP in two VHIDs (two masters), VRRP adverts
/// too long for one packet, more VIPs than the XDP map holds.
#[test]
fn run_time_failures_are_refused_up_front() {
    let vrrp6: Vec<String> = (0..91).map(|i| format!("\"2001:db8::1:{i:x}\"")).collect();
    let many: Vec<String> = (0..MAX_VIPS - 1)
        .map(|i| format!("\"198.51.{}.{}\"", 100 + i / 256, i % 256))
        .collect();
    let text = format!(
        r#"
        [agent]
        hook_timeout = inf

        [[vhid]]
        interface = "eth0"
        vhid = 1
        vips = ["192.0.2.50/24", "192.0.2.51"]

        [[vhid]]
        interface = "eth1"
        vhid = 2
        vips = ["192.0.2.50/24", "192.0.2.52", "192.0.2.52"]

        [[vhid]]
        interface = "eth0"
        vhid = 3
        protocol = "vrrp3"
        vips = [{}]

        [[vhid]]
        interface = "eth2"
        vhid = 4
        vips = [{}, "203.0.113.1", "203.0.113.2"]

        [[check]]
        name = "c"
        command = ["/bin/true"]
        timeout = 1e300
        interval = nan
    "#,
        vrrp6.join(", "),
        many.join(", ")
    );
    let all = mistakes(&text);
    assert_eq!(
        all,
        [
            "agent: hook_timeout must be a number of seconds in (0, 86400]",
            "vhid 2 on eth1: VIP 192.0.2.50 is also a VIP of vhid 1 on eth0",
            "vhid 2 on eth1: VIP 192.0.2.52 is listed twice",
            "vhid 3 on eth0: a VRRPv3 advert carries at most 255 IPv4 or 90 IPv6 addresses \
             (one 1500-byte packet); this VHID has 0 and 91",
            "vhid 4 on eth2: more than 4096 VIPs on eth2: the XDP program's map holds no more",
            r#"check "c": interval must be 0.1 to 86400 seconds"#,
            r#"check "c": timeout must be a number of seconds in (0, 86400]"#,
        ]
    );
}

#[test]
fn unknown_keys_and_long_passwords_are_refused() {
    assert!(
        Config::parse("[[vhid]]\ninterface='e'\nvhid=1\nvips=[]\nadvskw=3\n")
            .unwrap_err()
            .contains("advskw")
    );
    let dir = std::env::temp_dir().join(format!("carp-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, "0123456789abcdefghij").unwrap();
    let text = "[[vhid]]\ninterface='eth0'\nvhid=1\nvips=['192.0.2.5']\npass_file='pw'\n";
    // As ssh: a password others can read is refused, with the fix.
    let readable = Config::parse(text).unwrap().validate(&dir).unwrap_err();
    use std::os::unix::fs::PermissionsExt as _;
    // Group-only and other-only read are refused too: only 0600 (or stricter) passes.
    for mode in [0o640, 0o604] {
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Config::parse(text).unwrap().validate(&dir).unwrap_err();
        assert!(
            err[0]
                .what
                .contains(&format!("is readable by others (mode {mode:o}): chmod 600")),
            "{err:?}"
        );
    }
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Config::parse(text).unwrap().validate(&dir).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        readable[0]
            .what
            .contains("is readable by others (mode 644): chmod 600"),
        "{readable:?}"
    );
    assert!(err[0].what.contains("at most 19"), "{err:?}");
}

/// A parse error names the place, never the line: it may hold a secret.
#[test]
fn parse_errors_do_not_echo_the_file() {
    let err = Config::parse("[[vhid]]\ninterface = \"eth0\"\nvhid = 1\npassword = \"hunter2\"\n")
        .unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        err.starts_with("line 4, column 1: unknown field `password`"),
        "{err}"
    );
    let err = Config::parse("[agent\nsecret = \"hunter2\"").unwrap_err();
    assert!(
        !err.contains("hunter2") && err.starts_with("line 1,"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_parses() {
    let c = Config::parse(include_str!("../../../dist/carp.toml.example")).unwrap();
    assert_eq!(c.vhids.len(), 2);
    assert_eq!(c.vhids[0].advskew, 100);
    assert_eq!(c.agent, Agent::default());
}

#[test]
fn a_netns_scopes_the_default_paths_only() {
    let c = Config::parse("[agent]\nnetns = \"hosta\"\n").unwrap();
    assert_eq!(c.agent.socket, Path::new("/run/carp/hosta.sock"));
    assert_eq!(c.agent.pin_dir, Path::new("/sys/fs/bpf/carp/hosta"));
    assert_eq!(c.agent.state_dir, Path::new("/var/lib/carp/hosta"));
    let c = Config::parse("[agent]\nnetns = \"b\"\nsocket = \"/run/x.sock\"\n").unwrap();
    assert_eq!(c.agent.socket, Path::new("/run/x.sock"));
    assert_eq!(Config::parse("").unwrap().agent, Agent::default());
    assert!(crate::netns::enter("../etc").is_err());
}

#[test]
fn the_socket_is_found_despite_a_vhid_mistake() {
    let dir = std::env::temp_dir().join(format!("carp-socket-of-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.toml");
    std::fs::write(&path, "[agent]\nnetns = \"b\"\n[[vhid]]\nadvskew = 300\n").unwrap();
    assert!(Config::load(&path).is_err());
    let socket = Config::socket_of(&path).unwrap();
    std::fs::write(&path, "[agent\n").unwrap();
    let broken = Config::socket_of(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(socket, Some(PathBuf::from("/run/carp/b.sock")));
    assert!(broken.is_err());
    assert_eq!(Config::socket_of(&dir.join("none.toml")), Ok(None));
}

#[test]
fn vips() {
    assert_eq!(
        parse_vip("192.0.2.1").unwrap(),
        ("192.0.2.1".parse().unwrap(), 32)
    );
    assert_eq!(parse_vip("2001:db8::1/64").unwrap().1, 64);
    assert!(parse_vip("2001:db8::1/129").is_err());
    assert!(parse_vip("eth0").is_err());
}

#[test]
fn strict_authentication_is_for_carp_with_a_password() {
    let found = mistakes(
        r#"
        [[vhid]]
        interface = "eth0"
        vhid = 1
        vips = ["192.0.2.50/24"]
        auth = "strict"

        [[vhid]]
        interface = "eth0"
        vhid = 2
        protocol = "vrrp3"
        vips = ["192.0.2.51/24"]
        auth = "strict"
        "#,
    );
    assert_eq!(
        found,
        [
            "vhid 1 on eth0: auth = \"strict\" needs a password (pass_file, pass_env or pass_credential)",
            "vhid 2 on eth0: VRRPv3 has no authentication: auth = \"strict\" is for CARP",
        ]
    );
    assert!(
        Config::parse("[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = []\nauth = \"tight\"\n")
            .unwrap_err()
            .contains("unknown variant `tight`, expected `bsd` or `strict`")
    );
}

#[test]
fn interface_names_no_interface_can_have_are_mistakes() {
    for ok in ["eth0", "bond0.100", "enp0s31f6", "a23456789012345"] {
        assert_eq!(interface_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "a234567890123456",
        "eth/0",
        "eth0:1",
        "eth 0",
        ".",
        "..",
    ] {
        assert!(interface_name(bad).is_err(), "{bad:?}");
    }
    let m = mistakes(
        "[[vhid]]\ninterface = \"vlan-to-the-datacentre\"\nvhid = 1\nvips = [\"192.0.2.50\"]\n",
    );
    assert!(
        m.iter().any(|m| m.contains("longer than 15 bytes")),
        "{m:?}"
    );
}

#[test]
fn a_balanced_group_becomes_one_vhid_per_node_sorted_as_openbsd() {
    let plans = Config::parse(
        r#"
        [[balance]]
        interface = "eth0"
        carpnodes = "3:100, 1:0,2:50"
        balancing = "ip"
        vips = ["192.0.2.50/24"]
        preempt = true

        [[vhid]]
        interface = "eth0"
        vhid = 9
        vips = ["192.0.2.60/24"]
        "#,
    )
    .unwrap()
    .validate(Path::new("/"))
    .unwrap();
    let nodes: Vec<(u8, Option<Balance>, Timing)> = plans
        .iter()
        .map(|p| (p.vhid, p.balance.clone(), p.timing))
        .collect();
    let group = |index| {
        Some(Balance {
            vhids: vec![1, 2, 3],
            index,
        })
    };
    let carp = |advskew| Timing::Carp {
        advbase: 1,
        advskew,
    };
    assert_eq!(
        nodes,
        [
            (9, None, carp(0)),
            (1, group(0), carp(0)),
            (2, group(1), carp(50)),
            (3, group(2), carp(100)),
        ]
    );
    assert!(
        plans[1..]
            .iter()
            .all(|p| p.preempt && p.vips == plans[1].vips)
    );
    assert_eq!(plans[1].balance.as_ref().map(Balance::leader), Some(1));
}

#[test]
fn bad_balanced_groups_are_refused_with_a_reason() {
    let group = |extra: &str| {
        format!(
            "[[balance]]\ninterface = \"eth0\"\nvips = [\"192.0.2.50/24\"]\n{extra}\n\
             [[vhid]]\ninterface = \"eth0\"\nvhid = 7\nvips = [\"192.0.2.70/24\"]\n"
        )
    };
    let at = "balanced group";
    for (extra, want) in [
        (
            "carpnodes = \"1:0,1:100\"\nbalancing = \"ip\"",
            "carpnodes: vhid 1 is listed twice",
        ),
        (
            "carpnodes = \"1:0\"\nbalancing = \"ip\"",
            "a balanced group has 2..=32 VHIDs, this one 1",
        ),
        (
            "carpnodes = \"1:0,2\"\nbalancing = \"ip\"",
            "carpnodes: \"2\" is not vhid:advskew",
        ),
        (
            "carpnodes = \"1:0,2:255\"\nbalancing = \"ip\"",
            "advskew must be 0..=254",
        ),
        (
            "carpnodes = \"1:0,2:0\"\nbalancing = \"ip-stealth\"",
            "balancing = \"ip-stealth\" is not supported",
        ),
        (
            "carpnodes = \"1:0,2:0\"\nbalancing = \"ip\"\nprotocol = \"vrrp3\"",
            "VRRPv3 has none",
        ),
    ] {
        let found = mistakes(&group(extra));
        assert!(
            found.iter().any(|m| m.starts_with(at) && m.contains(want)),
            "{extra}: {found:?}"
        );
    }
    // A node that is also a plain VHID, and a VIP shared with one.
    let found = mistakes(&group("carpnodes = \"6:0,7:0\"\nbalancing = \"ip\""));
    assert!(
        found.contains(
            &"vhid 7 on eth0: this VHID is configured twice on the same interface".into()
        ),
        "{found:?}"
    );
    let found = mistakes(
        &group("carpnodes = \"1:0,2:0\"\nbalancing = \"ip\"")
            .replace("192.0.2.70/24", "192.0.2.50/24"),
    );
    assert!(
        found
            .iter()
            .any(|m| m.contains("VIP 192.0.2.50 is also a VIP of")),
        "{found:?}"
    );
}
