#![no_std]
#![warn(clippy::cast_lossless, clippy::cast_sign_loss)]

pub use aya_log_ebpf_macros::{debug, error, info, log, trace, warn};

#[doc(hidden)]
pub mod macro_support {
    #[cfg(target_arch = "bpf")]
    use aya_ebpf::macros::btf_map;
    use aya_ebpf::{Global, btf_maps::RingBuf};
    pub use aya_log_common::{
        Argument, DefaultFormatter, DisplayHint, Field, Header, IpFormatter, Level, LogValueLength,
        LowerHexFormatter, LowerMacFormatter, PointerFormatter, UpperHexFormatter,
        UpperMacFormatter,
    };

    // carp: a BTF map, so that libbpf (1.0 and later) opens objects that log; upstream
    // declares it with `#[map]` in the legacy `maps` section (aya-rs/aya#913). And 32 KiB
    // instead of 128: carp logs at most 10 lines a second, and the agent's RSS counts the
    // ring twice (its data area is mapped twice).
    #[cfg_attr(target_arch = "bpf", btf_map)]
    pub static AYA_LOGS: RingBuf<(), { 1 << 15 /* 32 KiB */ }> = RingBuf::new();

    /// Global log level controlling which log statements are active.
    ///
    /// Userspace may patch this symbol before load via `EbpfLoader::override_global`.
    #[unsafe(no_mangle)]
    pub static AYA_LOG_LEVEL: Global<u8> = Global::new(0xff);

    /// Returns `true` if the provided level is enabled according to [`AYA_LOG_LEVEL`].
    #[inline(always)]
    pub fn level_enabled(level: Level) -> bool {
        let current_level = AYA_LOG_LEVEL.load();
        level as u8 <= current_level
    }
}
