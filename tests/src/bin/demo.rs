//! `cargo xtask demo` runs this after setup and a build of carp-agent: the FreeBSD
//! handbook's three hosts in namespaces, run by carp-agent. hosta is master of VHID 1 (VIP 192.0.2.50), hostb of VHID 2 (192.0.2.51), hostc backs
//! both with advskew 100; one password, from a file. A client pings VIP .50 throughout:
//! hosta's agent is killed, hostc takes over, hosta comes back and (preempt) takes VHID 1
//! back; then, as in the TC/BSD field test, the same with hosta's cable pulled.

use anyhow::Result;
use carp_tests::{
    agent::{Agent, TempDir},
    lan::Lan,
    probe::Probe,
};
use std::time::Duration;

/// One [[vhid]] of the seeds' layout.
fn vhid(vhid: u8, vip: &str, advskew: u8, preempt: bool, pass: &std::path::Path) -> String {
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = {vhid}\nvips = [\"{vip}/24\"]\nadvskew = {advskew}\n\
         preempt = {preempt}\npass_file = \"{}\"\n\n",
        pass.display()
    )
}

fn show(agents: &[&Agent]) -> Result<()> {
    for a in agents {
        println!("--- {} ---", a.name);
        for line in a.ctl(&["status"])?.lines().filter(|l| !l.contains(" xdp ")) {
            println!("    {line}");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let dir = TempDir::new("demo")?;
    let pass = dir.path().join("carp.pass");
    std::fs::write(&pass, "testpass")?;
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;

    println!(
        "==> the handbook's layout: hosta .1, hostb .2, hostc .3 and a client on 192.0.2.0/24"
    );
    let mut lan = Lan::new("demo", &["hosta", "hostb", "hostc"])?;
    lan.add_host("demo", "client")?;
    let conf_a = vhid(1, "192.0.2.50", 0, true, &pass);
    let conf_b = vhid(2, "192.0.2.51", 0, true, &pass);
    let conf_c =
        vhid(1, "192.0.2.50", 100, false, &pass) + &vhid(2, "192.0.2.51", 100, false, &pass);
    let mut a = Agent::start(&lan.hosts[0].ns, dir.path(), "hosta", &conf_a)?;
    let b = Agent::start(&lan.hosts[1].ns, dir.path(), "hostb", &conf_b)?;
    let c = Agent::start(&lan.hosts[2].ns, dir.path(), "hostc", &conf_c)?;
    let wait = Duration::from_secs(8);
    a.wait_state(1, "MASTER", wait)?;
    b.wait_state(2, "MASTER", wait)?;
    c.wait_state(1, "BACKUP", wait)?;
    c.wait_state(2, "BACKUP", wait)?;
    println!("==> elected (carp-agent status on each host)");
    show(&[&a, &b, &c])?;

    // hosta dies twice: its agent is killed, then (the TC/BSD field test) its cable is
    // pulled under continuous ping. Each time hostc takes VHID 1 and hosta, back with
    // preempt, takes it back.
    let faults: [(&str, &str); 2] = [
        ("hosta's agent is killed (SIGKILL)", "restarted"),
        ("hosta's cable is pulled", "plugged back in"),
    ];
    for (fault, repair) in faults {
        let probe = Probe::start(&lan.hosts[3].ns, "192.0.2.50")?;
        std::thread::sleep(Duration::from_secs(1));
        anyhow::ensure!(probe.count() > 50, "the client gets no answer from VIP .50");
        println!("==> the client pings 192.0.2.50 every 10 ms; {fault}");
        if fault.contains("SIGKILL") {
            a.signal(nix::sys::signal::Signal::SIGKILL)?;
        } else {
            lan.cable(0, false)?;
        }
        let took = c.wait_state(1, "MASTER", Duration::from_secs(6))?;
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "    hostc is MASTER of VHID 1 {took:.2?} later; longest ping gap {:.2?} \
             (bound: master-down 3 s + 100/256 s after the last advert)",
            probe.max_gap()
        );
        show(&[&c])?;
        println!("==> hosta {repair}; with preempt it takes VHID 1 back");
        let before = probe.count();
        if fault.contains("SIGKILL") {
            a.spawn(&lan.hosts[0].ns)?;
        } else {
            lan.cable(0, true)?;
        }
        let took = a.wait_state(1, "MASTER", Duration::from_secs(8))?;
        c.wait_state(1, "BACKUP", Duration::from_secs(2))?;
        std::thread::sleep(Duration::from_millis(500));
        println!(
            "    hosta MASTER again {took:.2?} after that; {} more replies, longest gap overall {:.2?}",
            probe.count() - before,
            probe.max_gap()
        );
    }
    show(&[&a, &b, &c])?;
    println!("==> done; removing the namespaces");
    drop((a, b, c));
    drop(lan);
    drop(dir);
    Ok(())
}
