//! Putting frames on the wire, and the memberships that let them in. Multicast adverts,
//! gratuitous ARP and NAs go out whole through an AF_PACKET socket, so the source MAC can
//! be the virtual one as on BSD; unicast adverts to configured peers go through a raw IP
//! socket, so the kernel resolves the peer's MAC.

use crate::{addrs::solicited_node, config::Plan, netlink::Link};
use anyhow::{Context as _, Result};
use carp_common::{balance, wire};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use std::{
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
};

/// An AF_PACKET socket bound to one interface, for whole Ethernet frames.
pub struct PacketSocket {
    sock: Socket,
}

impl PacketSocket {
    pub fn bind(ifindex: u32) -> Result<Self> {
        // Protocol 0: send only, no frames are queued to us.
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
            .context("opening an AF_PACKET socket (needs CAP_NET_RAW)")?;
        sock.set_nonblocking(true)?;
        // SAFETY: a zeroed sockaddr_storage is valid, and sockaddr_ll fits inside it.
        let addr = unsafe {
            SockAddr::try_init(|storage, len| {
                let ll = storage.cast::<libc::sockaddr_ll>();
                *ll = zeroed();
                (*ll).sll_family = libc::AF_PACKET as u16;
                (*ll).sll_ifindex = ifindex as i32;
                *len = size_of::<libc::sockaddr_ll>() as u32;
                Ok(())
            })
        }
        .map(|((), a)| a)?;
        sock.bind(&addr)
            .with_context(|| format!("binding an AF_PACKET socket to ifindex {ifindex}"))?;
        Ok(Self { sock })
    }

    /// Sends one complete frame.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.sock.send(frame).map(drop)
    }

    /// Makes the interface promiscuous for as long as this socket lives (BSD's ifpromisc):
    /// a packet-socket membership, which the kernel counts with every other user's and
    /// drops when the socket closes, also when the agent is killed.
    pub fn promiscuous(&self, ifindex: u32) -> Result<()> {
        self.membership(ifindex, libc::PACKET_MR_PROMISC, None)
            .context("making the interface promiscuous")
    }

    /// Adds a multicast MAC to the interface's filter for as long as this socket lives
    /// (OpenBSD's carp_ether_addmulti on the parent): `ip maddr` shows it; the kernel
    /// drops it when the socket closes, also when the agent is killed.
    pub fn accept_multicast(&self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        self.membership(ifindex, libc::PACKET_MR_MULTICAST, Some(mac))
            .context("adding a multicast MAC to the interface")
    }

    fn membership(&self, ifindex: u32, kind: i32, mac: Option<[u8; 6]>) -> Result<()> {
        let mut mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: kind as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        if let Some(mac) = mac {
            mreq.mr_alen = 6;
            mreq.mr_address[..6].copy_from_slice(&mac);
        }
        // SAFETY: a valid socket and a packet_mreq of the size given.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&raw const mreq).cast(),
                size_of::<libc::packet_mreq>() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }
}

/// A raw IP socket for protocol 112 on one interface, bound to the advert source, for
/// unicast adverts to peers.
pub struct UnicastSocket {
    sock: Socket,
    ifindex: u32,
}

impl UnicastSocket {
    pub fn bind(link: &Link, src: IpAddr) -> Result<Self> {
        let domain = if src.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let proto = Protocol::from(i32::from(carp_common::wire::IPPROTO_CARP));
        let sock = Socket::new(domain, Type::RAW, Some(proto))
            .context("opening a raw IP socket (needs CAP_NET_RAW)")?;
        sock.set_nonblocking(true)?;
        sock.bind_device(Some(link.name.as_bytes()))
            .with_context(|| format!("binding the raw socket to {}", link.name))?;
        sock.bind(&SockAddr::from(scoped(src, link.index)))
            .with_context(|| format!("binding the raw socket to {src}"))?;
        // Unicast adverts still carry TTL 255 (FreeBSD skips the check for them, ucarp
        // and BSD peers configured for multicast do not).
        if src.is_ipv6() {
            sock.set_unicast_hops_v6(u32::from(carp_common::wire::TTL))?;
        } else {
            sock.set_ttl(u32::from(carp_common::wire::TTL))?;
        }
        Ok(Self {
            sock,
            ifindex: link.index,
        })
    }

    /// Sends a CARP/VRRP payload to `peer`; the kernel writes the IP header.
    pub fn send(&self, payload: &[u8], peer: IpAddr) -> std::io::Result<()> {
        self.sock
            .send_to(payload, &SockAddr::from(scoped(peer, self.ifindex)))
            .map(drop)
    }
}

/// `addr` as a socket address, with the interface as scope when it is link-local.
fn scoped(addr: IpAddr, ifindex: u32) -> SocketAddr {
    match addr {
        IpAddr::V6(a) if a.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(a, 0, 0, ifindex))
        }
        _ => SocketAddr::new(addr, 0),
    }
}

/// A VHID's multicast memberships on its interface, left when dropped. FreeBSD's
/// carp_multicast_setup and carp_multicast6_setup join the advert groups; NICs that
/// filter multicast pass nothing else, promiscuous or not (`mac = "interface"` is never
/// promiscuous). VIP6s kept on `lo` also need their solicited-node groups joined here, as
/// the kernel only joins them on the interface an address is on.
pub struct Memberships {
    _sockets: Vec<Socket>,
    /// A balanced group's leader: the socket that holds the group's MAC in the
    /// interface's multicast filter.
    _group: Option<PacketSocket>,
}

impl Memberships {
    pub fn join(ifindex: u32, plan: &Plan) -> Result<Self> {
        let multicast = plan.peers.is_empty();
        let mut sockets = Vec::new();
        if multicast && plan.vips.iter().any(|(v, _)| v.is_ipv4()) {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
            s.join_multicast_v4_n(
                &Ipv4Addr::from(wire::GROUP_V4),
                &InterfaceIndexOrAddress::Index(ifindex),
            )
            .context("joining 224.0.0.18")?;
            sockets.push(s);
        }
        let v6: Vec<Ipv6Addr> = plan
            .vips
            .iter()
            .filter_map(|(v, _)| match v {
                IpAddr::V6(a) => Some(*a),
                IpAddr::V4(_) => None,
            })
            .collect();
        if !v6.is_empty() {
            let s = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
            let mut groups: Vec<Ipv6Addr> = v6.iter().map(|a| solicited_node(*a)).collect();
            if multicast {
                groups.push(Ipv6Addr::from(wire::GROUP_V6));
            }
            groups.sort_unstable();
            groups.dedup();
            for g in groups {
                s.join_multicast_v6(&g, ifindex)
                    .with_context(|| format!("joining {g}"))?;
            }
            sockets.push(s);
        }
        let group = match &plan.balance {
            Some(b) if b.is_leader() => {
                let sock = PacketSocket::bind(ifindex)?;
                sock.accept_multicast(ifindex, balance::group_mac(b.leader()))?;
                Some(sock)
            }
            _ => None,
        };
        Ok(Self {
            _sockets: sockets,
            _group: group,
        })
    }
}
