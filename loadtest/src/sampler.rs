//! Samples a process's resident memory and CPU time from `/proc/PID/status` and `/proc/PID/stat`.

/// Linux reports CPU times in clock ticks of 1/100 s (USER_HZ) on every mainstream platform.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub rss_kib: u64,
    pub cpu_seconds: f64,
}

/// Parses `VmRSS:` (KiB) from a status file.
pub fn parse_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Parses utime + stime (fields 14 and 15) from a stat line; the command name may hold spaces.
pub fn parse_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

pub fn sample(pid: u32) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Sample { rss_kib: parse_rss(&status)?, cpu_seconds: parse_cpu(&stat)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmSwap: 0 kB\n"), Some(12345));
        let stat = "42 (sync gate) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 4 0 100 1000 200";
        assert_eq!(parse_cpu(stat), Some(4.0));
        let me = sample(std::process::id()).unwrap();
        assert!(me.rss_kib > 0);
    }
}
