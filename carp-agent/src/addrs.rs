//! Address arithmetic, pure: subnets, solicited-node groups, and which of an interface's
//! addresses a VHID's adverts go out from.

use crate::{
    config::{Plan, Protocol},
    netlink::Address,
};
use std::net::{IpAddr, Ipv6Addr};

/// The first address of `addr`'s subnet of `prefix` bits.
pub fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

/// Whether `a` and `b` share a subnet of `len` bits.
pub fn same_subnet(a: IpAddr, b: IpAddr, len: u8) -> bool {
    a.is_ipv4() == b.is_ipv4() && network(a, len) == network(b, len)
}

/// The solicited-node multicast group of `addr` (RFC 4291 2.7.1), where NS for it arrive.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// Where a VHID's adverts go out from: one address, and for a CARP VHID with VIPs or
/// peers of both families one of the other family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    pub first: IpAddr,
    pub other: Option<IpAddr>,
    /// The interface has no address of its own for multicast adverts of a family, so they
    /// go out from the VHID's first VIP of it, as FreeBSD's do when the CARP address is
    /// the interface's only one (carp.sh `switch`). Peers doing the same send from the same
    /// address: adverts from it are then a peer's, not our own looped back.
    pub from_vip: bool,
}

/// The VHID's advert sources among the interface's own addresses (never a VIP). `None`
/// when the interface has no address of the family it needs, or not the configured `src`
/// (yet: DHCP, or ucarp's `-s` given before the address is there): the VHID waits.
///
/// Multicast: IPv4 when the VHID has an IPv4 VIP (ucarp speaks IPv4 only), else the IPv6
/// link-local address (RFC 5798 5.1.2.1, and FreeBSD's carp_send_ad_locked); a CARP VHID
/// with VIPs of both families also advertises on the other (carp_send_ad_locked sends one
/// per family). Unicast: one source per family of the peers, of the peers' scope (a global
/// peer is reached from a global address: routers do not forward a link-local source;
/// FreeBSD's carp_best_ifa takes the parent's first address of the family, which its
/// carp.sh topologies make global), so the tie-break compares the addresses the peers see.
pub fn advert_sources(plan: &Plan, addrs: &[Address]) -> Option<Sources> {
    let own: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| !a.vip && !plan.vips.iter().any(|(v, _)| *v == a.addr))
        .map(|a| a.addr)
        .collect();
    if plan.src.is_some_and(|src| !own.contains(&src)) {
        return None;
    }
    let pick = |v6: bool, link_local: bool| -> Option<IpAddr> {
        if let Some(src) = plan.src.filter(|s| s.is_ipv6() == v6) {
            return Some(src);
        }
        let family: Vec<IpAddr> = own.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        let ll = |a: &IpAddr| matches!(a, IpAddr::V6(a) if a.is_unicast_link_local());
        family
            .iter()
            .find(|a| ll(a) == link_local)
            .or(family.first())
            .copied()
    };
    if plan.peers.is_empty() {
        let vip_of = |v6: bool| {
            plan.vips
                .iter()
                .map(|(v, _)| *v)
                .find(|v| v.is_ipv6() == v6)
        };
        let v4 = vip_of(false).is_some();
        let own_first = pick(!v4, true);
        let first = own_first.or_else(|| vip_of(!v4))?;
        let both = plan.protocol() == Protocol::CARP && vip_of(!first.is_ipv6()).is_some();
        let other = if both { pick(v4, true) } else { None };
        return Some(Sources {
            first,
            other,
            from_vip: own_first.is_none(),
        });
    }
    let family_of_peers = |v6: bool| -> Option<bool> {
        let peers: Vec<&IpAddr> = plan.peers.iter().filter(|p| p.is_ipv6() == v6).collect();
        (!peers.is_empty()).then(|| {
            peers
                .iter()
                .all(|p| matches!(p, IpAddr::V6(a) if a.is_unicast_link_local()))
        })
    };
    let v4 = family_of_peers(false).map(|ll| pick(false, ll));
    let v6 = family_of_peers(true).map(|ll| pick(true, ll));
    let (first, other) = match (v4, v6) {
        (Some(a), Some(b)) => (a?, b),
        (Some(a), None) => (a?, None),
        (None, Some(b)) => (b?, None),
        (None, None) => return None,
    };
    Some(Sources {
        first,
        other,
        from_vip: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn subnets() {
        assert!(same_subnet(a("192.0.2.1"), a("192.0.2.50"), 24));
        assert!(!same_subnet(a("192.0.2.1"), a("198.51.100.50"), 24));
        assert!(same_subnet(a("192.0.2.1"), a("10.0.0.1"), 0));
        assert!(same_subnet(a("2001:db8::1"), a("2001:db8::50"), 64));
        assert!(!same_subnet(a("2001:db8::1"), a("192.0.2.1"), 0));
        // carp.sh basic_v4: the VIP's /29 is not the hosts' /29.
        assert_eq!(network(a("192.0.2.1"), 29), a("192.0.2.0"));
        assert!(!same_subnet(a("192.0.2.202"), a("192.0.2.1"), 29));
        assert_eq!(network(a("2001:db8::1:2"), 64), a("2001:db8::"));
        assert_eq!(
            solicited_node("2001:db8::12:3456".parse().unwrap()),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    fn plan(extra: &str) -> Plan {
        Config::parse(&format!(
            "[[vhid]]\ninterface = \"eth0\"\nvhid = 1\n{extra}\n"
        ))
        .unwrap()
        .validate(std::path::Path::new("/"))
        .unwrap()
        .remove(0)
    }

    fn own(list: &[&str]) -> Vec<Address> {
        list.iter()
            .map(|s| Address {
                addr: a(s),
                prefix: 64,
                vip: false,
            })
            .collect()
    }

    const HOST: [&str; 3] = ["198.51.100.2", "2001:db8:1::2", "fe80::2"];

    #[test]
    fn multicast_sources() {
        let s = advert_sources(&plan("vips = [\"192.0.2.1/29\"]"), &own(&HOST)).unwrap();
        assert_eq!((s.first, s.other), (a("198.51.100.2"), None));
        let s = advert_sources(&plan("vips = [\"2001:db8::1/64\"]"), &own(&HOST)).unwrap();
        assert_eq!((s.first, s.other), (a("fe80::2"), None));
        let s = advert_sources(
            &plan("vips = [\"192.0.2.1/29\", \"2001:db8::1/64\"]"),
            &own(&HOST),
        )
        .unwrap();
        assert_eq!((s.first, s.other), (a("198.51.100.2"), Some(a("fe80::2"))));
        // A VIP (even one a killed agent left) is never a source.
        let mut left = own(&HOST[1..]);
        left.push(Address {
            addr: a("192.0.2.1"),
            prefix: 32,
            vip: true,
        });
        let s = advert_sources(&plan("vips = [\"192.0.2.1/29\"]"), &left).unwrap();
        assert_eq!(
            (s.first, s.from_vip),
            (a("192.0.2.1"), true),
            "carp.sh switch"
        );
        let s = advert_sources(&plan("vips = [\"192.0.2.1/29\"]"), &own(&HOST)).unwrap();
        assert!(!s.from_vip);
        // Unicast needs an address of the host's own to bind.
        let uni = plan("vips = [\"192.0.2.1/32\"]\npeers = [\"198.51.100.224\"]");
        assert!(advert_sources(&uni, &left).is_none());
        // A configured source is needed as it is, not replaced by the VIP.
        let src = plan("vips = [\"192.0.2.1/29\"]\nsrc = \"198.51.100.3\"");
        assert!(advert_sources(&src, &own(&HOST)).is_none());
        let mut late = own(&HOST);
        late.extend(own(&["198.51.100.3"]));
        assert_eq!(
            advert_sources(&src, &late).unwrap().first,
            a("198.51.100.3")
        );
    }

    /// carp.sh unicast_v6 and unicast_ll_v6: the source has the peer's scope.
    #[test]
    fn unicast_sources_match_the_peers_scope() {
        let global = plan("vips = [\"2001:db8::1/64\"]\npeers = [\"2001:db8:2::2\"]");
        let s = advert_sources(&global, &own(&HOST)).unwrap();
        assert_eq!((s.first, s.other), (a("2001:db8:1::2"), None));
        let ll = plan("vips = [\"2001:db8::1/64\"]\npeers = [\"fe80::3\"]");
        assert_eq!(
            advert_sources(&ll, &own(&HOST)).unwrap().first,
            a("fe80::2")
        );
        let both =
            plan("vips = [\"192.0.2.1/32\"]\npeers = [\"2001:db8:2::2\", \"198.51.100.224\"]");
        let s = advert_sources(&both, &own(&HOST)).unwrap();
        assert_eq!(
            (s.first, s.other),
            (a("198.51.100.2"), Some(a("2001:db8:1::2")))
        );
    }
}
