//! What a process costs, from /proc: CPU time and resident memory, for the benchmarks.

/// CPU seconds (user + system) a process and its children used so far.
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

/// Resident memory in KiB, summed over the process and, for keepalived, its children.
pub fn rss_kib(pid: i32) -> u64 {
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}
