//! A VHID's state, one type for the maps, the election, the status and the metrics.

/// FreeBSD's `enum { INIT, BACKUP, MASTER }` (sys/netinet/ip_carp.c). The maps hold it as
/// a byte (`State::Master as u8`); the status and the logs spell it as ifconfig does.
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "UPPERCASE")
)]
pub enum State {
    /// The interface is down or the VHID is stopping: nothing is advertised or answered.
    #[default]
    Init = 0,
    Backup = 1,
    Master = 2,
}

impl State {
    /// The name ifconfig prints.
    pub const fn name(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        }
    }
}

impl core::fmt::Display for State {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
