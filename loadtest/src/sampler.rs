//! Samples a process's resident memory and CPU time from `/proc/PID/status` and `/proc/PID/stat`,
//! and its open file descriptors from `/proc/PID/fd`.

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

/// Resident memory alone (KiB).
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Open file descriptors: the entries of `/proc/PID/fd` (sockets, files, epoll, eventfds, …).
pub fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// Open file descriptors split by what they point at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fds {
    pub total: u64,
    /// Regular files and devices: every target that is a path (`/…`), e.g. a database's files.
    pub files: u64,
    /// `socket:[…]`.
    pub sockets: u64,
    /// Pipes and anonymous inodes (epoll, eventfd, timerfd, …).
    pub other: u64,
}

impl Fds {
    /// Everything but paths: the sockets, pipes, epoll and event fds a connection could hold.
    pub fn non_file(&self) -> u64 {
        self.sockets + self.other
    }

    pub fn add_target(&mut self, target: &str) {
        self.total += 1;
        if target.starts_with("socket:") {
            self.sockets += 1;
        } else if target.starts_with('/') {
            self.files += 1;
        } else {
            self.other += 1;
        }
    }
}

/// Reads every `/proc/PID/fd` link; an fd closed while reading is skipped.
pub fn fds(pid: u32) -> Option<Fds> {
    let mut out = Fds::default();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(t) = std::fs::read_link(e.path()) {
            out.add_target(&t.to_string_lossy());
        }
    }
    Some(out)
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
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        let _f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(open_fds(std::process::id()).unwrap() >= 1);
        assert_eq!(open_fds(u32::MAX), None);
        let mine = fds(std::process::id()).unwrap();
        assert!(mine.files >= 1 && mine.total >= mine.files + mine.sockets, "{mine:?}");
        let mut f = Fds::default();
        for t in ["socket:[12]", "/tmp/x.db", "pipe:[3]", "anon_inode:[eventpoll]", "/dev/null"] {
            f.add_target(t);
        }
        assert_eq!(f, Fds { total: 5, files: 2, sockets: 1, other: 2 });
        assert_eq!(f.non_file(), 3);
    }
}
