//! Putting frames on the wire. Multicast adverts, gratuitous ARP and NAs go out whole
//! through an AF_PACKET socket, so the source MAC can be the virtual one as on BSD;
//! unicast adverts to configured peers go through a raw IP socket, so the kernel resolves
//! the peer's MAC.

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::{
    mem::{size_of, zeroed},
    net::{IpAddr, SocketAddr},
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
}

/// A raw IP socket for protocol 112 on one interface, for unicast adverts to peers.
pub struct UnicastSocket {
    sock: Socket,
}

impl UnicastSocket {
    pub fn bind(interface: &str, family_v6: bool) -> Result<Self> {
        let domain = if family_v6 {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let proto = Protocol::from(i32::from(carp_common::wire::IPPROTO_CARP));
        let sock = Socket::new(domain, Type::RAW, Some(proto))
            .context("opening a raw IP socket (needs CAP_NET_RAW)")?;
        sock.set_nonblocking(true)?;
        sock.bind_device(Some(interface.as_bytes()))
            .with_context(|| format!("binding the raw socket to {interface}"))?;
        // Unicast adverts still carry TTL 255 (FreeBSD skips the check for them, ucarp
        // and BSD peers configured for multicast do not).
        if family_v6 {
            sock.set_unicast_hops_v6(u32::from(carp_common::wire::TTL))?;
        } else {
            sock.set_ttl(u32::from(carp_common::wire::TTL))?;
        }
        Ok(Self { sock })
    }

    /// Sends a CARP/VRRP payload to `peer`; the kernel writes the IP header.
    pub fn send(&self, payload: &[u8], peer: IpAddr) -> std::io::Result<()> {
        self.sock
            .send_to(payload, &SockAddr::from(SocketAddr::new(peer, 0)))
            .map(drop)
    }
}
