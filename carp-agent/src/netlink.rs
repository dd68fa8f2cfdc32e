//! The kernel's view of interfaces over rtnetlink: looking links up, adding and removing
//! VIPs, promiscuous mode for virtual-MAC VHIDs, and link state changes as a stream.

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, LinkUnspec, MulticastGroup, new_connection, new_multicast_connection,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags},
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    },
};
use std::net::IpAddr;

/// What the agent needs to know about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    /// Administratively up with carrier.
    pub up: bool,
    /// A veth: native XDP there only transmits XDP_TX frames when the peer runs an XDP
    /// program too (veth_xdp_flush schedules the peer's NAPI only then).
    pub veth: bool,
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: [0; 6],
        up: msg
            .header
            .flags
            .contains(LinkFlags::Up | LinkFlags::Running),
        veth: false,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => link.mac.copy_from_slice(a),
            LinkAttribute::LinkInfo(infos) => {
                link.veth = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    link
}

/// A netlink errno, if that is what failed.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// A route netlink connection for requests.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its driver runs on the current tokio runtime.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = new_connection().context("opening a route netlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// The interface called `name`.
    pub async fn link(&self, name: &str) -> Result<Link> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(link_from(&msg)),
            Ok(None) => bail!("there is no interface {name}"),
            Err(e) if errno(&e) == Some(libc::ENODEV) => bail!("there is no interface {name}"),
            Err(e) => Err(anyhow!("looking up interface {name}: {e}")),
        }
    }

    /// The addresses on an interface, with prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("listing addresses")?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Adds a VIP; an address already there is fine. IPv6 skips duplicate address
    /// detection: the election already decided who owns it.
    pub async fn add_vip(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut req = self.handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(e) => Err(anyhow!("adding {addr}/{prefix}: {e}")),
        }
    }

    /// Removes a VIP if it is there.
    /// Removes `addr` from the link; whether it was there.
    pub async fn del_vip(&self, index: u32, addr: IpAddr) -> Result<bool> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("looking up {addr}"))?;
        let mut removed = false;
        for m in msgs {
            match self.handle.address().del(m).execute().await {
                Ok(()) => removed = true,
                Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {}
                Err(e) => bail!("removing {addr}: {e}"),
            }
        }
        Ok(removed)
    }

    /// Promiscuous mode, so frames to a virtual MAC reach the interface (BSD's ifpromisc).
    pub async fn set_promisc(&self, index: u32, on: bool) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).promiscuous(on).build())
            .execute()
            .await
            .map_err(|e| anyhow!("setting promiscuous mode: {e}"))
    }
}

/// Link changes (RTNLGRP_LINK) as they happen.
pub fn link_events() -> Result<impl Stream<Item = Link>> {
    let (conn, _handle, messages) =
        new_multicast_connection(&[MulticastGroup::Link]).context("subscribing to link changes")?;
    tokio::spawn(conn);
    Ok(messages.filter_map(|(msg, _)| async move {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Some(link_from(&l)),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => Some(Link {
                up: false,
                ..link_from(&l)
            }),
            _ => None,
        }
    }))
}
