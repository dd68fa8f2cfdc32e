//! Reading the frames out of a classic pcap file (what `tcpdump -w` writes).

use anyhow::{Result, bail};

/// The frames of a little- or big-endian microsecond/nanosecond pcap file.
pub fn frames(file: &[u8]) -> Result<Vec<Vec<u8>>> {
    let Some(magic) = file.first_chunk::<4>() else {
        bail!("pcap file shorter than its magic number");
    };
    let le = match u32::from_le_bytes(*magic) {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        m => bail!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |off: usize| -> Result<u32> {
        let Some(b) = file.get(off..off + 4) else {
            bail!("pcap record header truncated at {off}");
        };
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let mut out = Vec::new();
    let mut off = 24;
    while off < file.len() {
        let len = u32_at(off + 8)? as usize;
        let start = off + 16;
        let Some(frame) = file.get(start..start + len) else {
            bail!("pcap record truncated at {off}");
        };
        out.push(frame.to_vec());
        off = start + len;
    }
    Ok(out)
}
