//! Where the program attaches when the NIC takes VLAN tags out of frames before XDP runs.
//!
//! With rx VLAN offload (`rx-vlan-hw-parse`, on by default in i40e, ixgbe, mlx5 and veth)
//! the tag of a received frame is in the skb's metadata (`skb->vlan_tci`), not in its
//! bytes. tc sees it there; XDP, native or generic, sees the bytes only, so a frame of
//! eth0.10 looks untagged to the program on eth0: eth0's VHID N would take eth0.10's
//! adverts for its own (or drop them as `bad_hmac`) and drop eth0.10's virtual-MAC frames
//! while BACKUP. `tests/tests/xdp_attach.rs` shows both hooks on a tag offloaded by veth.
//!
//! Linux 6.8 hands the tag to XDP through the `bpf_xdp_metadata_rx_vlan_tag` kfunc, but
//! only to a program loaded bound to one device, in native mode, on drivers that
//! implement it (veth, ice, mlx5 among few), and aya loads neither kfunc calls nor
//! device-bound programs. tc ingress sees the tag on every driver and kernel with tcx, so
//! `auto` attaches there when tags could be hidden from XDP ([`choose`]).

use crate::config::XdpModeSetting;
use std::os::fd::AsRawFd as _;

/// What the agent knows of an interface's VLANs when it attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanFacts {
    /// The NIC takes the tag out of received frames (`rx-vlan-hw-parse` on).
    pub rx_offload: bool,
    /// VLAN interfaces sit on top of it: tagged frames arrive for the host.
    pub vlans: bool,
}

/// Where to attach, given the setting and [`VlanFacts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// As `xdp_mode` says: XDP sees every tag, or the setting is tc already.
    AsConfigured,
    /// `auto` on an interface whose tags XDP cannot see: tc ingress, where it can.
    Tc,
    /// `native` or `skb` on such an interface: honoured, with a warning, as the operator
    /// chose it (the same program on eth0.10 still sees its own adverts).
    Warn,
}

/// Where the program goes on an interface of `facts` under `setting`: XDP only sees the
/// tags of received frames while the NIC leaves them in (see the module's doc).
pub fn choose(setting: XdpModeSetting, facts: VlanFacts) -> Choice {
    let hidden = facts.rx_offload && facts.vlans;
    match setting {
        XdpModeSetting::Tc => Choice::AsConfigured,
        _ if !hidden => Choice::AsConfigured,
        XdpModeSetting::Auto => Choice::Tc,
        XdpModeSetting::Native | XdpModeSetting::Skb => Choice::Warn,
    }
}

/// `SIOCETHTOOL` commands and flags (linux/ethtool.h).
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETH_FLAG_RXVLAN: u32 = 1 << 8;

/// Whether `iface`'s rx VLAN offload is on: `ETHTOOL_GFLAGS`, which every kernel answers
/// from the device's active features (`NETIF_F_HW_VLAN_CTAG_RX` is `ETH_FLAG_RXVLAN`).
pub fn rx_vlan_offload(iface: &str) -> std::io::Result<bool> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GFLAGS,
        data: 0,
    };
    // SAFETY: a zeroed ifreq is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = iface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&raw mut value).cast();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: SIOCETHTOOL reads the name and writes `value`, both alive for the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &raw mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data & ETH_FLAG_RXVLAN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [XdpModeSetting; 4] = [
        XdpModeSetting::Auto,
        XdpModeSetting::Native,
        XdpModeSetting::Skb,
        XdpModeSetting::Tc,
    ];

    fn facts(rx_offload: bool, vlans: bool) -> VlanFacts {
        VlanFacts { rx_offload, vlans }
    }

    /// XDP is kept wherever it sees every tag: no offload, or no VLAN to see.
    #[test]
    fn xdp_where_it_sees_every_tag() {
        for setting in ALL {
            for f in [facts(false, false), facts(false, true), facts(true, false)] {
                assert_eq!(
                    choose(setting, f),
                    Choice::AsConfigured,
                    "{setting:?} {f:?}"
                );
            }
        }
    }

    /// Offload with VLANs: `auto` goes to tc, an explicit XDP mode stays with a warning,
    /// tc stays tc.
    #[test]
    fn tc_where_offload_hides_the_tags_of_vlans() {
        let hidden = facts(true, true);
        assert_eq!(choose(XdpModeSetting::Auto, hidden), Choice::Tc);
        assert_eq!(choose(XdpModeSetting::Native, hidden), Choice::Warn);
        assert_eq!(choose(XdpModeSetting::Skb, hidden), Choice::Warn);
        assert_eq!(choose(XdpModeSetting::Tc, hidden), Choice::AsConfigured);
    }

    /// The flag as the kernel reports it: lo has no rx VLAN offload (veth's, on and then
    /// turned off, is in `tests/tests/xdp_attach.rs`).
    #[test]
    fn loopback_has_no_rx_vlan_offload() {
        assert!(!rx_vlan_offload("lo").unwrap());
        assert_eq!(
            rx_vlan_offload("a-name-longer-than-ifnamsiz")
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::InvalidInput
        );
    }
}
