//! carp-agent against the real peer it must interoperate with: Debian's ucarp, same VHID
//! and password, each way round.

use carp_tests::{
    agent::{Agent, TempDir},
    lan::Lan,
    netns::Netns,
};
use nix::sys::signal::Signal;
use std::{
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

const PASSWORD: &str = "peer-secret";

/// ucarp in `ns` with `advskew`, logging to `log`; killed on drop.
struct Ucarp(Child);

impl Ucarp {
    fn start(ns: &Netns, src: &str, advskew: u8, pass: &Path, log: &Path) -> Self {
        let child = ns
            .command("ucarp")
            .args([
                "-i",
                "eth0",
                "-s",
                src,
                "-v",
                "1",
                "-a",
                "192.0.2.50",
                "-b",
                "1",
            ])
            .args([
                "-k",
                &advskew.to_string(),
                "-u",
                "/bin/true",
                "-d",
                "/bin/true",
                "-o",
            ])
            .arg(pass)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for Ucarp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn last_state(log: &Path) -> Option<String> {
    std::fs::read_to_string(log)
        .ok()?
        .lines()
        .rev()
        .find_map(|l| l.split("Switching to state: ").nth(1).map(str::to_owned))
}

fn wait_ucarp(log: &Path, state: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if last_state(log).as_deref() == Some(state) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "ucarp not {state} after {timeout:?}:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn config(dir: &TempDir, advskew: u8) -> String {
    let pw = dir.path().join("pass");
    std::fs::write(&pw, PASSWORD).unwrap();
    format!(
        "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\nvips = [\"192.0.2.50/24\"]\nadvskew = {advskew}\n\
         pass_file = \"{}\"\nmac = \"interface\"\n",
        pw.display()
    )
}

#[test]
fn ucarp_master_and_our_backup_then_we_take_over() {
    let dir = TempDir::new("uc1").unwrap();
    let lan = Lan::new("uc1", &["u", "c"]).unwrap();
    let log = dir.path().join("ucarp.log");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, PASSWORD).unwrap();
    let ucarp = Ucarp::start(&lan.hosts[0].ns, "192.0.2.1", 0, &pass, &log);
    wait_ucarp(&log, "MASTER", Duration::from_secs(6));
    let ours = Agent::start(&lan.hosts[1].ns, dir.path(), "ours", &config(&dir, 100)).unwrap();
    ours.wait_state(1, "BACKUP", Duration::from_secs(3))
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // ucarp's adverts verify here and keep us backup past our master-down time.
    let status = ours.ctl(&["status"]).unwrap();
    assert!(status.contains("carp: BACKUP vhid 1"), "{status}");
    assert!(!status.contains("received 0,"), "{status}");
    assert!(status.contains("bad digests 0"), "{status}");
    drop(ucarp);
    let gap = ours
        .wait_state(
            1,
            "MASTER",
            Duration::from_micros(3_390_625) + Duration::from_secs(1),
        )
        .unwrap();
    println!("our takeover after ucarp was killed: {gap:?}");
}

#[test]
fn our_master_and_ucarp_backup_then_ucarp_takes_over_on_our_bow_out() {
    let dir = TempDir::new("uc2").unwrap();
    let lan = Lan::new("uc2", &["c", "u"]).unwrap();
    let ours = Agent::start(&lan.hosts[0].ns, dir.path(), "ours", &config(&dir, 0)).unwrap();
    ours.wait_state(1, "MASTER", Duration::from_secs(6))
        .unwrap();
    let log = dir.path().join("ucarp.log");
    let _ucarp = Ucarp::start(
        &lan.hosts[1].ns,
        "192.0.2.2",
        100,
        &dir.path().join("pass"),
        &log,
    );
    wait_ucarp(&log, "BACKUP", Duration::from_secs(3));
    std::thread::sleep(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("Bad digest"),
        "ucarp rejected our adverts:\n{text}"
    );
    assert_eq!(last_state(&log).as_deref(), Some("BACKUP"), "{text}");
    // Our graceful stop bows out (advbase 255): ucarp treats that as a master certain to
    // time out and takes over at once.
    ours.signal(Signal::SIGTERM).unwrap();
    let gap = wait_ucarp(&log, "MASTER", Duration::from_secs(2));
    println!("ucarp takeover after our SIGTERM: {gap:?}");
}
