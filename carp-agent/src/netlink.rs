//! The kernel's view of interfaces over rtnetlink: looking links up, adding and removing
//! VIPs, and link and address changes as a stream.

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, MulticastGroup, RouteMessageBuilder, new_connection, new_multicast_connection,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressFlags, AddressMessage, AddressProtocol},
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope},
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
        self.find_link(name)
            .await?
            .with_context(|| format!("there is no interface {name}"))
    }

    /// The interface called `name`, or `None` while there is none: absence is not an
    /// error, the agent waits for it.
    pub async fn find_link(&self, name: &str) -> Result<Option<Link>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(msg) => Ok(msg.as_ref().map(link_from)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(anyhow!("looking up interface {name}: {e}")),
        }
    }

    /// Whether VLAN interfaces sit on top of interface `index` (see
    /// [`crate::vlan_offload`]).
    pub async fn has_vlans(&self, index: u32) -> Result<bool> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing interfaces")?;
        Ok(links.iter().any(|msg| {
            let on_top = msg.attributes.contains(&LinkAttribute::Link(index));
            let vlan = msg.attributes.iter().any(|a| {
                matches!(a, LinkAttribute::LinkInfo(infos)
                    if infos.contains(&LinkInfo::Kind(InfoKind::Vlan)))
            });
            on_top && vlan
        }))
    }

    /// The addresses on an interface, with prefix lengths, and whether each is a VIP this
    /// agent (or a killed predecessor) added.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Address>> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("listing addresses")?;
        Ok(msgs.iter().filter_map(address_from).collect())
    }

    /// Adds a VIP; whether it was added (an address already there is fine). IPv6 skips
    /// duplicate address detection: the election already decided who owns it.
    pub async fn add_vip(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool> {
        let mut req = self.handle.address().add(index, addr, prefix);
        req.message_mut()
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(
                VIP_PROTO,
            )));
        if addr.is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(anyhow!("adding {addr}/{prefix}: {e}")),
        }
    }

    /// Removes the VIP `addr` from the link if this agent (or a killed predecessor) added
    /// it; whether it was there. A host address equal to it is never touched.
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
        for m in msgs.into_iter().filter(is_vip) {
            match self.handle.address().del(m).execute().await {
                Ok(()) => removed = true,
                Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT)) => {}
                Err(e) => bail!("removing {addr}: {e}"),
            }
        }
        Ok(removed)
    }

    /// A route to the VIP's own subnet over the interface, from the VIP: the connected route
    /// FreeBSD gets from `ifconfig em0 vhid 1 192.0.2.1/29` when the VIP's subnet is not
    /// one of the interface's (carp.sh basic_v4). Whether it was added (already there is
    /// fine).
    pub async fn add_subnet_route(&self, index: u32, vip: IpAddr, prefix: u8) -> Result<bool> {
        let req = self.handle.route().add(subnet_route(index, vip, prefix)?);
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(anyhow!("adding a route to {vip}/{prefix}: {e}")),
        }
    }

    /// Removes the route [`Netlink::add_subnet_route`] added, if it is there.
    pub async fn del_subnet_route(&self, index: u32, vip: IpAddr, prefix: u8) -> Result<()> {
        let req = self.handle.route().del(subnet_route(index, vip, prefix)?);
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::ESRCH | libc::ENOENT)) => Ok(()),
            Err(e) => Err(anyhow!("removing the route to {vip}/{prefix}: {e}")),
        }
    }
}

fn subnet_route(index: u32, vip: IpAddr, prefix: u8) -> Result<RouteMessage> {
    let net = crate::addrs::network(vip, prefix);
    Ok(RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(net, prefix)
        .and_then(|b| b.pref_source(vip))
        .map_err(|e| anyhow!("route to {vip}/{prefix}: {e}"))?
        .output_interface(index)
        .scope(RouteScope::Link)
        .build())
}

/// The IFA_PROTO value VIPs are added with (the CARP protocol number, as good a tag as
/// any): a restarted agent removes what a killed one left behind, and nothing else.
pub const VIP_PROTO: u8 = carp_common::wire::IPPROTO_CARP;

/// An address on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix: u8,
    /// Added by carp-agent as a VIP (tagged with [`VIP_PROTO`]).
    pub vip: bool,
}

fn is_vip(m: &AddressMessage) -> bool {
    m.attributes
        .contains(&AddressAttribute::Protocol(AddressProtocol::Other(
            VIP_PROTO,
        )))
}

fn address_from(m: &AddressMessage) -> Option<Address> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(Address {
            addr: *ip,
            prefix: m.header.prefix_len,
            vip: is_vip(m),
        }),
        _ => None,
    })
}

/// A route of the main table removed, if it names its destination and interface.
fn route_gone(m: &RouteMessage) -> Option<Change> {
    let table = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    });
    if table.unwrap_or(u32::from(m.header.table)) != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let net = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    let index = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    Some(Change::RouteGone {
        index,
        net,
        prefix: m.header.destination_prefix_length,
    })
}

/// A change the kernel reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An interface appeared or changed (state, name, MAC).
    Link(Link),
    /// An interface went away.
    Gone(Link),
    /// An address was added to interface `index`, or removed from it (`removed`).
    Address {
        index: u32,
        address: Address,
        removed: bool,
    },
    /// A route of the main table to `net`/`prefix` over interface `index` was removed.
    RouteGone { index: u32, net: IpAddr, prefix: u8 },
}

/// Link, address and route changes (RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR,
/// RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE) as they happen: what
/// brings up a VHID whose interface or address was not there yet, and what a master's
/// upkeep puts back. Of the routes, only removals are passed on.
pub fn changes() -> Result<impl Stream<Item = Change>> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ];
    let (conn, _handle, messages) =
        new_multicast_connection(&groups).context("subscribing to link and address changes")?;
    tokio::spawn(conn);
    Ok(messages.filter_map(|(msg, _)| async move {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                Some(Change::Link(link_from(&l)))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                Some(Change::Gone(link_from(&l)))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => address_from(&a)
                .map(|address| Change::Address {
                    index: a.header.index,
                    address,
                    removed: false,
                }),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => address_from(&a)
                .map(|address| Change::Address {
                    index: a.header.index,
                    address,
                    removed: true,
                }),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => route_gone(&r),
            _ => None,
        }
    }))
}
