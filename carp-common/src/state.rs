//! A VHID's state, one type for the maps, the election, the status and the metrics.

/// FreeBSD's `enum { INIT, BACKUP, MASTER }` (sys/netinet/ip_carp.c), spelt as there: the
/// variant names are the BTF enum's, which `bpftool map dump` prints for a VHID's state, and
/// the names the status, the metrics and the logs use. The maps hold it as a byte.
#[allow(
    clippy::upper_case_acronyms,
    reason = "the BTF names bpftool prints, as FreeBSD and ifconfig spell them"
)]
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub enum State {
    /// The interface is down or the VHID is stopping: nothing is advertised or answered.
    #[default]
    INIT = 0,
    BACKUP = 1,
    MASTER = 2,
}

impl State {
    /// The name ifconfig prints.
    pub const fn name(self) -> &'static str {
        match self {
            State::INIT => "INIT",
            State::BACKUP => "BACKUP",
            State::MASTER => "MASTER",
        }
    }
}

impl core::fmt::Display for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
