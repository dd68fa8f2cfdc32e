//! What /proc says about a process: CPU time and memory, for the benchmarks.

/// CPU seconds (user + system, and those of its waited-for children) a process used so far.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let tick = 100.0;
    fields
        .get(11..15)
        .map(|f| {
            f.iter()
                .map(|v| v.parse::<f64>().unwrap_or(0.0))
                .sum::<f64>()
                / tick
        })
        .unwrap_or(0.0)
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`), if the process is there.
pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Resident memory in KiB, summed over the process and its children (keepalived's).
pub fn rss_kib(pid: i32) -> u64 {
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    pids.iter().filter_map(|p| status_kib(*p, "VmRSS")).sum()
}
