//! Balanced groups (OpenBSD `balancing ip`, issue #16): how evenly carp_lsdrop's fold
//! spreads flows over a group's VHIDs, and the longest gap a flow sees when one host of a
//! three-host group loses its link — a flow of its share, and one of a survivor's — next to
//! the same failure of a plain master/backup pair. TRIALS (default 3) scales it down; the
//! XDP cost per frame is in the xdp bench.

use carp_common::balance::{fold_v4, fold_v6, keeps};
use carp_tests::{
    agent::{Agent, TempDir, write_secret},
    flows::{config, route_sources, sources, wait_masks},
    lan::Lan,
    probe::Probe,
    setting,
};
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
/// Master-down time of a backup with advbase 1, advskew 100: 3 + 100/256 s.
const MASTER_DOWN: Duration = Duration::from_micros(3_390_625);

/// Flows per VHID of a group of `n`, for the folds `folds`.
fn spread(folds: &[u32], n: u8) -> Vec<usize> {
    (0..n)
        .map(|slot| folds.iter().filter(|f| keeps(1 << slot, n, **f)).count())
        .collect()
}

fn distribution() {
    // 10 000 IPv6 clients spread over 2001:db8::/32 (a fixed xorshift sequence), and the
    // 762 IPv4 addresses of the three documentation ranges, to one VIP each.
    let vip6: Ipv6Addr = "2001:db8::50".parse().unwrap();
    let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
    let v6: Vec<u32> = (0..10_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = (0x2001_0db8_u128 << 96) | (x >> 32);
            fold_v6(&src.to_be_bytes(), &vip6.octets())
        })
        .collect();
    let v4: Vec<u32> = [[192, 0, 2], [198, 51, 100], [203, 0, 113]]
        .iter()
        .flat_map(|n| (1..=254u8).map(move |i| [n[0], n[1], n[2], i]))
        .map(|src| fold_v4(src, VIP.octets()))
        .collect();
    println!("### Distribution of flows over the group's VHIDs\n");
    println!(
        "One flow per client address to one VIP, OpenBSD's fold (carp_lsdrop): the share of \
         each VHID, and the largest deviation from an even share.\n"
    );
    println!("| flows | VHIDs | flows per VHID | largest deviation |");
    println!("|---|---:|---|---:|");
    for (what, folds) in [
        ("10000 IPv6 clients, random in 2001:db8::/32", &v6),
        (
            "762 IPv4 clients, 192.0.2/24, 198.51.100/24, 203.0.113/24",
            &v4,
        ),
    ] {
        for n in [2u8, 3, 4, 8] {
            let per = spread(folds, n);
            let even = folds.len() as f64 / f64::from(n);
            let worst = per
                .iter()
                .map(|c| (*c as f64 - even).abs() / even * 100.0)
                .fold(0.0, f64::max);
            let per: Vec<String> = per.iter().map(ToString::to_string).collect();
            println!("| {what} | {n} | {} | {worst:.1} % |", per.join(" / "));
        }
    }
    println!();
}

/// One trial: three hosts share the VIP; host c's cable is pulled. The longest gap of a
/// flow of c's share and of one of a's, in seconds.
fn balanced_trial() -> (f64, f64) {
    let dir = TempDir::new("balgap").unwrap();
    let mut lan = Lan::new("balgap", &["a", "b", "c"]).unwrap();
    let client_addr = lan.add_host("balgap", "client").unwrap().addr;
    let pass = dir.path().join("pass");
    write_secret(&pass, "balance-secret").unwrap();
    let srcs = sources(20);
    let hosts: Vec<_> = lan.hosts[..3].iter().map(|h| &h.ns).collect();
    route_sources(&lan.hosts[3].ns, &srcs, &hosts, client_addr).unwrap();
    let agents: Vec<Agent> = (0..3)
        .map(|h| {
            let name = ["a", "b", "c"][h];
            Agent::start(
                &lan.hosts[h].ns,
                dir.path(),
                name,
                &config(h, 3, &[&format!("{VIP}/24")], &pass),
            )
            .unwrap()
        })
        .collect();
    wait_masks(
        &agents,
        &[Some(0b001), Some(0b010), Some(0b100)],
        Duration::from_secs(12),
    );
    let owned_by = |mask: u32| {
        srcs.iter()
            .find(|s| keeps(mask, 3, fold_v4(s.octets(), VIP.octets())))
            .unwrap()
            .to_string()
    };
    let client = &lan.hosts[3].ns;
    let c = Probe::start_from(client, &VIP.to_string(), Some(&owned_by(0b100))).unwrap();
    let a = Probe::start_from(client, &VIP.to_string(), Some(&owned_by(0b001))).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    lan.cable(2, false).unwrap();
    std::thread::sleep(MASTER_DOWN + Duration::from_secs(2));
    assert!(
        c.silence() < Duration::from_millis(500),
        "c's flow never came back"
    );
    (c.max_gap().as_secs_f64(), a.max_gap().as_secs_f64())
}

/// One trial of the plain pair: the master's cable pulled; the longest gap, in seconds.
fn single_trial() -> f64 {
    let dir = TempDir::new("solo").unwrap();
    let mut lan = Lan::new("solo", &["a", "b"]).unwrap();
    lan.add_host("solo", "client").unwrap();
    let pass = dir.path().join("pass");
    write_secret(&pass, "balance-secret").unwrap();
    let plain = |advskew: u8| {
        format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"{VIP}/24\"]\n\
             advskew = {advskew}\npreempt = true\npass_file = \"{}\"\n",
            pass.display()
        )
    };
    let (_a, _b) =
        carp_tests::agent::start_pair(&lan, dir.path(), 1, &plain(0), &plain(100)).unwrap();
    let probe = Probe::start(&lan.hosts[2].ns, &VIP.to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    lan.cable(0, false).unwrap();
    std::thread::sleep(MASTER_DOWN + Duration::from_secs(2));
    assert!(
        probe.silence() < Duration::from_millis(500),
        "the VIP never came back"
    );
    probe.max_gap().as_secs_f64()
}

fn main() {
    distribution();
    let trials: usize = setting("TRIALS", 3);
    let mut rows = Vec::new();
    for _ in 0..trials {
        let (c, a) = balanced_trial();
        rows.push((c, a, single_trial()));
    }
    println!(
        "### Failover gap: one host's cable pulled ({trials} trials; longest gap of a ping \
         every 10 ms, seconds)\n"
    );
    println!(
        "| trial | balanced group, a flow of the failed host's share | balanced group, a \
         flow of a survivor's share | master/backup pair, the VIP |"
    );
    println!("|---:|---:|---:|---:|");
    for (i, (c, a, s)) in rows.iter().enumerate() {
        println!("| {} | {c:.2} | {a:.2} | {s:.2} |", i + 1);
    }
    println!(
        "\nThe bound for the failed host's flows and for the pair is the master-down time, \
         {:.2} s: the backup's timer runs from the last advert it heard, before the pull.\n",
        MASTER_DOWN.as_secs_f64()
    );
}
