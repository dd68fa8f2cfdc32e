//! A VHID's protocol, one type for the configuration, the maps and the status.

use crate::{vrrp, wire};

/// The advert protocol, valued as the version its adverts carry in their first nibble. The
/// variant names are the BTF enum's, which `bpftool map dump` prints; the configuration
/// and the status spell them `carp` and `vrrp3`.
#[allow(
    clippy::upper_case_acronyms,
    reason = "the BTF names bpftool prints, as the protocols are spelt"
)]
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub enum Protocol {
    #[default]
    #[cfg_attr(feature = "user", serde(rename = "carp"))]
    CARP = wire::VERSION,
    /// RFC 5798.
    #[cfg_attr(feature = "user", serde(rename = "vrrp3"))]
    VRRPV3 = vrrp::VERSION,
}

impl Protocol {
    /// The version field of the protocol's adverts.
    pub const fn version(self) -> u8 {
        self as u8
    }
}
