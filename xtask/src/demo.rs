//! `cargo xtask demo`: the seeds' three-host layout in namespaces. hosta backs VHID 1
//! (VIP 192.0.2.50), hostb VHID 2 (192.0.2.51), hostc both with advskew 100, one password
//! from a file.
//!
//! carp's election agent does not exist yet, so the election is run by Debian's ucarp with
//! the same settings; carp's XDP program, attached on hostc, counts the adverts it sees.

use anyhow::{Context as _, Result};
use carp_tests::netns::{Netns, ip};
use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

struct Host {
    ns: Netns,
    name: &'static str,
    addr: &'static str,
}

/// One ucarp process, killed when dropped.
struct Ucarp {
    child: Child,
    log: PathBuf,
    host: &'static str,
    vhid: u8,
}

impl Drop for Ucarp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Ucarp {
    /// The last state ucarp logged.
    fn state(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .rev()
            .find_map(|l| l.split("Switching to state: ").nth(1))
            .unwrap_or("INIT")
            .to_owned()
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

pub fn run() -> Result<()> {
    crate::cargo(&["build", "--quiet", "-p", "carp-agent"])?;
    let agent = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
        .join("debug/carp-agent");

    let dir = std::env::temp_dir().join(format!("carp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pass = dir.join("carp.pass");
    std::fs::write(&pass, "seeds-demo-secret")?;
    let result = demo(&agent, &dir, &pass);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(agent: &Path, dir: &Path, pass: &Path) -> Result<()> {
    println!("==> building the seeds' layout: a switch and hosta, hostb, hostc on 192.0.2.0/24");
    let switch = Netns::new("demo-sw")?;
    switch.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    switch.ip(&["link", "set", "br0", "up"])?;
    let mut hosts = Vec::new();
    for (i, (name, addr)) in [
        ("hosta", "192.0.2.1"),
        ("hostb", "192.0.2.2"),
        ("hostc", "192.0.2.3"),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = Netns::new(&format!("demo-{name}"))?;
        let port = format!("p{i}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            switch.name(),
        ])?;
        switch.ip(&["link", "set", &port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        hosts.push(Host { ns, name, addr });
    }

    println!("==> carp's election agent is not implemented yet: ucarp runs the seeds' settings");
    let layout: [(usize, u8, &str, u8); 4] = [
        (0, 1, "192.0.2.50", 0),
        (1, 2, "192.0.2.51", 0),
        (2, 1, "192.0.2.50", 100),
        (2, 2, "192.0.2.51", 100),
    ];
    let mut ucarps = Vec::new();
    for (h, vhid, vip, skew) in layout {
        let host = &hosts[h];
        let log = dir.join(format!("{}-vhid{vhid}.log", host.name));
        let child = host
            .ns
            .command("ucarp")
            .args([
                "-i",
                "eth0",
                "-s",
                host.addr,
                "-v",
                &vhid.to_string(),
                "-a",
                vip,
            ])
            .args([
                "-b",
                "1",
                "-k",
                &skew.to_string(),
                "-u",
                "/bin/true",
                "-d",
                "/bin/true",
                "-o",
            ])
            .arg(pass)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting ucarp")?;
        // Let the intended masters win the first election, as in the handbook.
        if skew == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        ucarps.push(Ucarp {
            child,
            log,
            host: host.name,
            vhid,
        });
    }

    println!("==> carp's XDP program on hostc counts the adverts for 5 s (ucarp elects meanwhile)");
    let stats = hosts[2]
        .ns
        .command(agent.to_str().context("non-UTF-8 path")?)
        .args(["stats", "-i", "eth0", "--seconds", "5"])
        .output()?;
    print!("    hostc {}", String::from_utf8_lossy(&stats.stdout));
    anyhow::ensure!(
        stats.status.success(),
        "carp-agent stats failed: {}",
        String::from_utf8_lossy(&stats.stderr)
    );
    show(&ucarps);

    println!(
        "==> hosta dies (its ucarp is killed); hostc should take VHID 1 within 3 s + 100/256 s"
    );
    ucarps.remove(0);
    std::thread::sleep(Duration::from_secs(5));
    show(&ucarps);
    println!("==> done; removing the namespaces");
    Ok(())
}

fn show(ucarps: &[Ucarp]) {
    for u in ucarps {
        println!("    {} vhid {}: {}", u.host, u.vhid, u.state());
    }
}
