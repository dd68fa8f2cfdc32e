//! Pinned maps as bpftool shows them: typed JSON, named by the program's BTF.

use std::process::Command;

/// Removes a directory of pins when dropped: a stopped agent leaves its pins in place.
pub struct Pins(pub String);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `bpftool -j map dump` of a pinned map: one JSON object per entry.
fn entries(pin: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        pin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The bytes bpftool shows of a pinned map: each entry's key and value (each CPU's, for a
/// per-CPU map), as the kernel holds them.
pub fn raw(pin: &std::path::Path) -> Vec<Vec<u8>> {
    let bytes = |v: &serde_json::Value| -> Vec<u8> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
            .collect()
    };
    let mut out = Vec::new();
    for e in entries(pin) {
        out.push(bytes(&e["key"]));
        match e.get("values") {
            Some(cpus) => {
                for cpu in cpus.as_array().unwrap() {
                    out.push(bytes(&cpu["value"]));
                }
            }
            None => out.push(bytes(&e["value"])),
        }
    }
    out
}

/// `bpftool -j map dump` of a pinned map, parsed: the entries' keys and values as the BTF
/// names them (for a per-CPU map, the values summed over the CPUs).
pub fn dump(pin: &std::path::Path) -> Vec<(serde_json::Value, serde_json::Value)> {
    entries(pin)
        .into_iter()
        .map(|e| {
            let f = &e["formatted"];
            println!("{}: {f:#}", pin.display());
            let value = match f.get("values") {
                Some(cpus) => {
                    let mut sum = serde_json::Map::new();
                    for cpu in cpus.as_array().unwrap() {
                        for (name, n) in cpu["value"].as_object().unwrap() {
                            let total = sum.get(name).and_then(|t| t.as_u64()).unwrap_or(0);
                            sum.insert(name.clone(), (total + n.as_u64().unwrap()).into());
                        }
                    }
                    sum.into()
                }
                None => f["value"].clone(),
            };
            (f["key"].clone(), value)
        })
        .collect()
}
