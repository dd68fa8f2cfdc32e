//! ucarp accepts our adverts: signed by carp's HMAC code and sent into a namespace, they
//! keep a ucarp backup quiet (no "Bad digest", stays BACKUP). With a wrong password the
//! same sender makes ucarp complain and take over, so the check can fail.
// Needs root (namespaces, BPF): `cargo xtask test` runs it.
#![cfg(feature = "root")]

use carp_agent::hmac::{Auth, Counter};
use carp_common::wire::{CarpHeader, GROUP_V4, IPPROTO_CARP, TTL};
use carp_tests::netns::{Netns, veth};
use socket2::{Domain, Protocol, Socket, Type};
use std::{
    net::{Ipv4Addr, SocketAddrV4},
    process::Stdio,
    time::Duration,
};

/// Runs ucarp as a backup (advskew 100) for 5 s while we advertise (advskew 0) with
/// `password`; returns ucarp's log.
fn ucarp_hearing_us(password: &[u8]) -> String {
    let a = Netns::new("ia").unwrap();
    let b = Netns::new("ib").unwrap();
    veth(&a, "va", "192.0.2.1/24", &b, "vb", "192.0.2.2/24").unwrap();
    let dir =
        std::env::temp_dir().join(format!("carpt-interop-{}-{}", std::process::id(), a.name()));
    std::fs::create_dir_all(&dir).unwrap();
    let pass = dir.join("pass");
    carp_tests::agent::write_secret(&pass, "interop-pw").unwrap();
    let log = dir.join("ucarp.log");
    let mut ucarp = a
        .command("ucarp")
        .args(["-i", "va", "-s", "192.0.2.1", "-v", "7", "-a", "192.0.2.50"])
        .args([
            "-b",
            "1",
            "-k",
            "100",
            "-u",
            "/bin/true",
            "-d",
            "/bin/true",
            "-o",
        ])
        .arg(&pass)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let vip = Ipv4Addr::new(192, 0, 2, 50);
    let auth = Auth::new(password, 7, &[vip.into()]).unwrap();
    let sent = b.enter(|| {
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_CARP))),
        )?;
        sock.set_multicast_if_v4(&Ipv4Addr::new(192, 0, 2, 2))?;
        sock.set_multicast_ttl_v4(u32::from(TTL))?;
        let mut counter = Counter::default();
        let dst = SocketAddrV4::new(GROUP_V4.into(), 0).into();
        // Two adverts a second for 5 s: well past ucarp's 3.39 s master-down time.
        for i in 0..10u64 {
            let c = counter.next(0x5eed_0000 + i);
            let h = CarpHeader {
                vhid: 7,
                advskew: 0,
                demote: 0,
                advbase: 1,
                counter: c,
                digest: auth.sign(c),
            };
            sock.send_to(&h.encode(), &dst)?;
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(10)
    });
    ucarp.kill().unwrap();
    ucarp.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(sent.unwrap(), 10);
    text
}

#[test]
fn ucarp_accepts_our_adverts() {
    let log = ucarp_hearing_us(b"interop-pw");
    assert!(
        !log.contains("Bad digest"),
        "ucarp rejected our HMAC:\n{log}"
    );
    assert!(log.contains("Switching to state: BACKUP"), "{log}");
    assert!(
        !log.contains("Switching to state: MASTER"),
        "ucarp took over:\n{log}"
    );
}

#[test]
fn ucarp_rejects_a_wrong_password() {
    let log = ucarp_hearing_us(b"not-the-pw");
    assert!(log.contains("Bad digest"), "{log}");
    assert!(log.contains("Switching to state: MASTER"), "{log}");
}
