//! CARP authentication exactly as FreeBSD's `carp_hmac_prepare` / `carp_hmac_generate` /
//! `carp_hmac_verify` (sys/netinet/ip_carp.c) and ucarp compute it.
//!
//! The digest is standard HMAC-SHA1 keyed with the password over
//! `version (2) ‖ type (1) ‖ vhid ‖ IPv4 VIPs ascending ‖ IPv6 VIPs ascending ‖ counter`.
//! FreeBSD copies the key into a 20-byte `sc_key` that `ifconfig` fills with `strlcpy`, so
//! at most 19 password bytes take part, the rest being zero; HMAC zero-pads keys anyway, so
//! for those lengths this is plain HMAC. IPv6 link-local addresses are hashed with their
//! embedded scope zeroed, which is how `std::net::Ipv6Addr` holds them already. The HMAC
//! covers neither advbase, advskew, the demote byte nor any IP or MAC address: that is
//! [`AuthMode::Bsd`]. [`AuthMode::Strict`] covers them ([`wire::auth`]).

use carp_common::{
    maps::family_and_bytes,
    sha1::CounterHmac,
    wire::{self, CarpHeader, auth::SUFFIX_MAX},
};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use std::net::IpAddr;

/// Longest password every CARP implementation agrees on: FreeBSD's ifconfig keeps 19 bytes,
/// ucarp refuses 20 or more.
pub const MAX_PASSWORD_LEN: usize = 19;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "the password is {0} bytes long; CARP peers (FreeBSD ifconfig, ucarp) use at most {MAX_PASSWORD_LEN}"
    )]
    PasswordTooLong(usize),
}

/// The bytes the HMAC covers before the counter (`carp_hmac_prepare`).
pub fn message_prefix(vhid: u8, vips: &[IpAddr]) -> Vec<u8> {
    let mut v4: Vec<[u8; 4]> = vips
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(a.octets()),
            IpAddr::V6(_) => None,
        })
        .collect();
    let mut v6: Vec<[u8; 16]> = vips
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(a.octets()),
            IpAddr::V4(_) => None,
        })
        .collect();
    // FreeBSD walks the addresses in ascending order, each once.
    v4.sort_unstable();
    v4.dedup();
    v6.sort_unstable();
    v6.dedup();
    let mut msg = vec![wire::VERSION, wire::TYPE_ADVERTISEMENT, vhid];
    v4.iter().for_each(|a| msg.extend_from_slice(a));
    v6.iter().for_each(|a| msg.extend_from_slice(a));
    msg
}

/// What an advert's digest covers (`auth` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The counter only, as FreeBSD, OpenBSD and ucarp: every peer speaks it.
    #[default]
    Bsd,
    /// Also advbase, advskew, the demote byte and the source, with the agent's
    /// [`Sequence`] as the counter: carp-agent peers only.
    Strict,
}

impl std::fmt::Display for AuthMode {
    /// As the configuration spells it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthMode::Bsd => "bsd",
            AuthMode::Strict => "strict",
        })
    }
}

/// Signs and verifies one VHID's adverts. Holds the HMAC state, never the password text.
#[derive(Clone)]
pub struct Auth {
    /// HMAC state after the key and the message prefix, cloned per advert.
    prepared: Hmac<Sha1>,
    kernel: CounterHmac,
    /// OpenBSD's variant without IPv6 link-local VIPs, when the VHID has any.
    kernel_nov6ll: Option<CounterHmac>,
    prefix: Vec<u8>,
    mode: AuthMode,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately shows nothing derived from the key.
        f.debug_struct("Auth")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Whether every CARP peer can use `password`.
pub fn check_password(password: &[u8]) -> Result<(), AuthError> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AuthError::PasswordTooLong(password.len()));
    }
    Ok(())
}

impl Auth {
    /// BSD authentication, as every CARP peer computes it.
    pub fn new(password: &[u8], vhid: u8, vips: &[IpAddr]) -> Result<Self, AuthError> {
        Self::with_mode(password, vhid, vips, AuthMode::Bsd)
    }

    pub fn with_mode(
        password: &[u8],
        vhid: u8,
        vips: &[IpAddr],
        mode: AuthMode,
    ) -> Result<Self, AuthError> {
        check_password(password)?;
        let prefix = message_prefix(vhid, vips);
        let mut prepared =
            Hmac::<Sha1>::new_from_slice(password).expect("HMAC takes keys of any length");
        prepared.update(&prefix);
        let suffix_len = match mode {
            AuthMode::Bsd => wire::auth::BSD_SUFFIX,
            AuthMode::Strict => wire::auth::STRICT_SUFFIX,
        };
        let kernel = CounterHmac::new(password, &prefix, suffix_len)
            .expect("password shorter than a SHA-1 block");
        let global: Vec<IpAddr> = vips
            .iter()
            .copied()
            .filter(|a| !matches!(a, IpAddr::V6(a) if a.is_unicast_link_local()))
            .collect();
        // OpenBSD's variant: strict peers are carp-agents, which hash every VIP.
        let kernel_nov6ll = (mode == AuthMode::Bsd && global.len() < vips.len()).then(|| {
            CounterHmac::new(password, &message_prefix(vhid, &global), suffix_len)
                .expect("password shorter than a SHA-1 block")
        });
        Ok(Self {
            prepared,
            kernel,
            kernel_nov6ll,
            prefix,
            mode,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The BSD digest for an advert carrying `counter` (`carp_hmac_generate`).
    pub fn sign(&self, counter: u64) -> [u8; wire::DIGEST_LEN] {
        let mut mac = self.prepared.clone();
        mac.update(&counter.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The digest of `header` sent from `src`, in this VHID's mode.
    pub fn sign_header(&self, header: &CarpHeader, src: IpAddr) -> [u8; wire::DIGEST_LEN] {
        match self.mode {
            AuthMode::Bsd => self.sign(header.counter),
            AuthMode::Strict => {
                let mut mac = self.prepared.clone();
                mac.update(&suffix_of(header, src)[..usize::from(wire::auth::STRICT_SUFFIX)]);
                mac.finalize().into_bytes().into()
            }
        }
    }

    /// Whether `digest` is right for `counter`, compared in constant time
    /// (`carp_hmac_verify`, which uses `bcmp`).
    pub fn verify(&self, counter: u64, digest: &[u8; wire::DIGEST_LEN]) -> bool {
        let mut mac = self.prepared.clone();
        mac.update(&counter.to_be_bytes());
        mac.verify_slice(digest).is_ok()
    }

    /// The HMAC prepared for the XDP program's map: any VIP count is verified there.
    pub fn kernel(&self) -> CounterHmac {
        self.kernel
    }

    /// OpenBSD's `HMAC_NOV6LL` variant, prepared likewise, when the VHID has IPv6
    /// link-local VIPs (otherwise both variants are the same).
    pub fn kernel_nov6ll(&self) -> Option<CounterHmac> {
        self.kernel_nov6ll
    }

    /// The message bytes before the counter.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }
}

/// What the digest covers after the prefix for `header` sent from `src`, as the XDP program
/// builds it from the packet ([`wire::auth::suffix`]); BSD mode reads its first 8 bytes.
pub fn suffix_of(header: &CarpHeader, src: IpAddr) -> [u8; SUFFIX_MAX] {
    let (family, src) = family_and_bytes(src);
    let mut suffix = [0; SUFFIX_MAX];
    wire::auth::suffix(
        &mut suffix,
        header.counter,
        [header.advbase, header.advskew, header.demote],
        family,
        &src,
    );
    suffix
}

/// The advert counter as FreeBSD keeps it (`sc_counter`, `sc_init_counter`).
///
/// `carp_prepare_ad`: while no valid advert has been heard, every advert carries a fresh
/// random counter; afterwards the counter is incremented per advert. `carp_input_c`: a
/// valid advert's counter is adopted ("XXX Replay protection goes here" — BSD rejects
/// nothing). ucarp does the same, so a lone ucarp master sends a new random counter in
/// every advert: counters are not monotonic on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    value: u64,
    heard: bool,
}

impl Counter {
    /// The counter for the next advert; `random` is used until a peer has been heard.
    pub fn next(&mut self, random: u64) -> u64 {
        self.value = if self.heard {
            self.value.wrapping_add(1)
        } else {
            random
        };
        self.value
    }

    /// Adopts the counter of a valid advert.
    pub fn adopt(&mut self, theirs: u64) {
        self.heard = true;
        self.value = theirs;
    }
}

/// The counter of strict adverts: RFC 7474 section 4's sequence number (OSPFv2), whose
/// high half is a boot count kept on disk and raised at every start ([`boot_count`],
/// stored by `boot.rs`) and whose low half counts adverts within the boot. No clock
/// decides it, so a clock stepped either way, before a start or while running, changes
/// nothing. One per agent, shared by all its strict VHIDs: a VHID recreated by a reload,
/// or switched strict → bsd → strict, goes on counting where the agent is, so no counter
/// is sent twice within a boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequence {
    boot: u32,
    /// The low half of the next counter: 2^32 once this boot's are used up.
    low: u64,
}

impl Sequence {
    /// The first counter of boot `boot`.
    pub fn new(boot: u32) -> Self {
        Self { boot, low: 0 }
    }

    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// The boot count to store before [`Sequence::raise`]; none after `u32::MAX`.
    pub fn next_boot(&self) -> Option<u32> {
        self.boot.checked_add(1)
    }

    /// Counts on in boot `boot`, stored by now.
    pub fn raise(&mut self, boot: u32) {
        *self = Self::new(boot);
    }

    /// Boot `boot` with its counters used up.
    #[cfg(test)]
    pub(crate) fn used_up(boot: u32) -> Self {
        Self { boot, low: 1 << 32 }
    }
}

impl Iterator for Sequence {
    type Item = u64;

    /// The next counter, or `None` when this boot's 2^32 are used up: the caller stores
    /// [`Sequence::next_boot`] and calls [`Sequence::raise`] (RFC 7474 4.1: "the high-order
    /// 32 bits are incremented"), or sends nothing rather than a counter twice.
    fn next(&mut self) -> Option<u64> {
        let low = u32::try_from(self.low).ok()?;
        self.low += 1;
        Some(u64::from(self.boot) << 32 | u64::from(low))
    }
}

/// The boot count of a start: one more than the `stored` one; with none stored (a first
/// start, or the state lost), the wall clock in seconds, `unix_secs`. That floor is above
/// a lost count as long as the host started fewer times than seconds went by since the
/// count was last taken from the clock, and the clock did not go back; and shifted into the
/// high half it is above any counter of the clock-nanosecond kind strict mode sent before
/// boot counts (`s × 2^32 > s × 10^9` for the same second `s`, and by more than the 2 h a
/// clock ahead then added, `7200 × 10^9`, once `s` passed 2185), so an upgraded peer is heard at once.
/// `None` when the count is used up (`u32::MAX`, never in practice).
pub fn boot_count(stored: Option<u32>, unix_secs: u64) -> Option<u32> {
    match stored {
        Some(n) => n.checked_add(1),
        None => Some(u32::try_from(unix_secs).unwrap_or(u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carp_common::wire::CarpHeader;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// The suffix the program builds, as BSD mode reads it: the counter first.
    fn bsd(counter: u64) -> [u8; SUFFIX_MAX] {
        let mut out = [0; SUFFIX_MAX];
        wire::auth::suffix(&mut out, counter, [9, 9, 9], 4, &[7; 16]);
        out
    }

    /// Strict mode signs what the program verifies: the header's fields and the source,
    /// so changing any of them, or the source, breaks the digest.
    #[test]
    fn strict_digests_cover_the_header_and_the_source() {
        let vip: IpAddr = Ipv4Addr::new(192, 0, 2, 50).into();
        let auth = Auth::with_mode(b"s3cret", 1, &[vip], AuthMode::Strict).unwrap();
        assert!(auth.kernel_nov6ll().is_none());
        let src: IpAddr = Ipv4Addr::new(192, 0, 2, 1).into();
        let h = CarpHeader {
            vhid: 1,
            advskew: 100,
            demote: 0,
            advbase: 1,
            counter: 1_800_000_000_000_000_000,
            digest: [0; wire::DIGEST_LEN],
        };
        let signed = auth.sign_header(&h, src);
        let kernel = |h: &CarpHeader, src: IpAddr| {
            auth.kernel()
                .digest(&suffix_of(h, src), &mut carp_common::sha1::Work::default())
        };
        assert_eq!(kernel(&h, src), signed);
        assert_ne!(signed, auth.sign(h.counter), "not the BSD digest");
        for forged in [
            CarpHeader { advbase: 255, ..h },
            CarpHeader { advskew: 255, ..h },
            CarpHeader { demote: 1, ..h },
            CarpHeader {
                counter: h.counter + 1,
                ..h
            },
        ] {
            assert_ne!(kernel(&forged, src), signed, "{forged:?}");
        }
        assert_ne!(kernel(&h, Ipv4Addr::new(192, 0, 2, 66).into()), signed);
        // The same 16 bytes as an IPv6 source: the family byte tells them apart.
        assert_ne!(kernel(&h, "c000:201::".parse().unwrap()), signed);
        let bsd = Auth::new(b"s3cret", 1, &[vip]).unwrap();
        assert_eq!(bsd.sign_header(&h, src), bsd.sign(h.counter));
    }

    /// The high half is the boot, the low half counts within it; when the low half is used
    /// up the sequence stops until the next boot is stored and raised, never wrapping to a
    /// counter it sent.
    #[test]
    fn a_sequence_counts_within_its_boot_and_stops_at_the_end() {
        let mut s = Sequence::new(7);
        assert_eq!(s.next(), Some(7 << 32));
        assert_eq!(s.next(), Some((7 << 32) + 1));
        s.low = u64::from(u32::MAX);
        assert_eq!(s.next(), Some((7 << 32) + u64::from(u32::MAX)));
        assert_eq!(s.next(), None, "used up");
        assert_eq!(s.next(), None, "still: nothing is sent twice");
        assert_eq!(s.next_boot(), Some(8));
        s.raise(8);
        assert_eq!(s.next(), Some(8 << 32), "above every counter of boot 7");
        assert_eq!(s.boot(), 8);
        assert_eq!(Sequence::new(u32::MAX).next_boot(), None);
        let mut last = Sequence::new(u32::MAX);
        last.low = u64::from(u32::MAX);
        assert_eq!(last.next(), Some(u64::MAX));
        assert_eq!(last.next(), None);
    }

    /// A stored count goes up by one; a lost one starts from the clock's seconds, above
    /// any count that started from an earlier second and went up once per start since,
    /// and above the clock-nanosecond counters of strict mode before boot counts, even
    /// those of a clock 2 h ahead.
    #[test]
    fn boot_counts_go_up_and_a_lost_one_starts_from_the_clock() {
        assert_eq!(boot_count(Some(41), 1_800_000_000), Some(42));
        assert_eq!(boot_count(Some(u32::MAX), 0), None);
        const NOW: u64 = 1_760_000_000;
        let floor = boot_count(None, NOW).unwrap();
        assert_eq!(floor, 1_760_000_000);
        // Started a second earlier from the clock, then restarted: still below.
        let lost = boot_count(Some(boot_count(None, NOW - 1).unwrap()), NOW).unwrap();
        assert!(lost <= floor);
        let first = Sequence::new(floor).next().unwrap();
        const AHEAD_NS: u64 = 2 * 3600 * 1_000_000_000;
        for secs in [2186, 1_000_000, NOW, u64::from(u32::MAX)] {
            let old_ns = (secs * 1_000_000_000).saturating_add(AHEAD_NS);
            let new = Sequence::new(boot_count(None, secs).unwrap())
                .next()
                .unwrap();
            assert!(new > old_ns, "{secs} s: {new} <= {old_ns}");
        }
        assert!(first > NOW * 1_000_000_000 + AHEAD_NS);
        assert_eq!(boot_count(None, u64::MAX), Some(u32::MAX), "saturates");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn notes_test_vector() {
        let auth = Auth::new(b"love", 42, &[Ipv4Addr::new(10, 1, 1, 252).into()]).unwrap();
        let md = auth.sign(0x0102030405060708);
        assert_eq!(hex(&md), "2fa27458019cf0f5b3213320729727a7c3a7aaff");
        assert!(auth.verify(0x0102030405060708, &md));
        assert!(!auth.verify(0x0102030405060709, &md));
    }

    /// Adverts captured from ucarp 1.5.2 in a namespace (`-v 1 -a 192.0.2.50`, password
    /// "testpass" from a file): both verify, with the key and VIP ucarp was given only.
    #[test]
    fn verifies_adverts_captured_from_ucarp() {
        let captured = [
            "21010007000189eeef6fd87893140fa1dabdc1f8f31ea9fd2287963a5856e43bbd4efdf3",
            "21010007000178781f4a33a7735429ed9a4bbf44832fd5a0d8a5f4a3dfa93158dc81091d",
        ];
        let vip: IpAddr = Ipv4Addr::new(192, 0, 2, 50).into();
        let auth = Auth::new(b"testpass", 1, &[vip]).unwrap();
        let wrong = Auth::new(b"testpast", 1, &[vip]).unwrap();
        let other_vip = Auth::new(b"testpass", 1, &[Ipv4Addr::new(192, 0, 2, 51).into()]).unwrap();
        for text in captured {
            let bytes: Vec<u8> = (0..text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
                .collect();
            let h = CarpHeader::decode(&bytes).unwrap();
            assert!(auth.verify(h.counter, &h.digest), "{text}");
            assert!(!wrong.verify(h.counter, &h.digest));
            assert!(!other_vip.verify(h.counter, &h.digest));
        }
    }

    #[test]
    fn prefix_sorts_v4_then_v6() {
        let vips: Vec<IpAddr> = vec![
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2).into(),
            Ipv4Addr::new(192, 0, 2, 51).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
            Ipv4Addr::new(192, 0, 2, 50).into(),
        ];
        let p = message_prefix(9, &vips);
        assert_eq!(&p[..3], &[2, 1, 9]);
        assert_eq!(&p[3..11], &[192, 0, 2, 50, 192, 0, 2, 51]);
        assert_eq!(p[11 + 15], 1);
        assert_eq!(p[27 + 15], 2);
        assert_eq!(p.len(), 3 + 8 + 32);
    }

    /// What the XDP program computes agrees with the hmac crate for VIP counts up to
    /// hundreds, where the prefix spans several SHA-1 blocks.
    #[test]
    fn the_kernel_hmac_agrees_with_the_hmac_crate() {
        for n in [1usize, 11, 12, 16, 100, 300] {
            let mut vips: Vec<IpAddr> = (0..n)
                .map(|i| Ipv4Addr::from(0xc633_6400 + i as u32).into())
                .collect();
            vips.push(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16).into());
            let auth = Auth::new(b"s3cret", 3, &vips).unwrap();
            let work = &mut carp_common::sha1::Work::default();
            assert_eq!(
                auth.kernel().digest(&bsd(77), work),
                auth.sign(77),
                "{n} VIPs"
            );
        }
    }

    /// OpenBSD's carp_prepare_ad sends the digest over the VIPs without IPv6 link-local
    /// ones (`HMAC_NOV6LL`): the prepared variant is exactly that.
    #[test]
    fn openbsd_nov6ll_variant() {
        let ll: IpAddr = "fe80::50".parse().unwrap();
        let v4: IpAddr = Ipv4Addr::new(192, 0, 2, 50).into();
        let auth = Auth::new(b"pw", 1, &[v4, ll]).unwrap();
        let openbsd = Auth::new(b"pw", 1, &[v4]).unwrap();
        let work = &mut carp_common::sha1::Work::default();
        assert_eq!(
            auth.kernel_nov6ll().unwrap().digest(&bsd(9), work),
            openbsd.sign(9)
        );
        assert_ne!(auth.kernel().digest(&bsd(9), work), openbsd.sign(9));
        assert!(
            Auth::new(b"pw", 1, &[v4])
                .unwrap()
                .kernel_nov6ll()
                .is_none()
        );
    }

    #[test]
    fn long_passwords_are_refused() {
        assert_eq!(
            Auth::new(&[b'x'; 20], 1, &[]).unwrap_err(),
            AuthError::PasswordTooLong(20)
        );
        assert!(Auth::new(&[b'x'; 19], 1, &[]).is_ok());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let auth = Auth::new(b"hunter2", 1, &[]).unwrap();
        let text = format!("{auth:?}");
        assert!(!text.contains("hunter2") && !text.contains("pads") && !text.contains("prepared"));
    }

    #[test]
    fn counter_is_random_until_a_peer_is_heard() {
        let mut c = Counter::default();
        assert_eq!(c.next(500), 500);
        assert_eq!(c.next(9), 9);
        c.adopt(1000);
        assert_eq!(c.next(7), 1001);
        assert_eq!(c.next(7), 1002);
        c.adopt(u64::MAX);
        assert_eq!(c.next(7), 0);
    }
}
