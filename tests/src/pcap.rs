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

/// tcpdump writing the frames `filter` matches on an interface of a namespace to a file,
/// until it has `count` of them; killed when dropped.
pub struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts it, and gives it the half second it takes to listen.
    pub fn start(
        ns: &crate::netns::Netns,
        iface: &str,
        filter: &str,
        count: usize,
        file: &std::path::Path,
    ) -> Result<Self> {
        let child = ns
            .command("tcpdump")
            .args(["-i", iface, "-c", &count.to_string(), "-U", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(500));
        Ok(Self {
            child,
            file: file.to_owned(),
        })
    }

    /// The frames captured once it has them all, or at `timeout`, whichever is first.
    pub fn frames(mut self, timeout: std::time::Duration) -> Result<Vec<Vec<u8>>> {
        let deadline = std::time::Instant::now() + timeout;
        while self.child.try_wait()?.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // tcpdump -U flushed every packet: whatever it has is in the file.
        let _ = self.child.kill();
        let _ = self.child.wait();
        frames(&std::fs::read(&self.file)?)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
