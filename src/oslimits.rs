//! The OS limits a gateway lives by: open files (raised to the hard limit at start), the listen
//! queue cap and the ephemeral port range.

/// (soft, hard) RLIMIT_NOFILE.
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn nofile() -> Option<(u64, u64)> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0).then_some((r.rlim_cur as u64, r.rlim_max as u64))
}

/// Raises the soft open-files limit to the hard limit; returns (before, after, hard).
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile() -> Option<(u64, u64, u64)> {
    let (soft, hard) = nofile()?;
    if soft < hard {
        let r = libc::rlimit { rlim_cur: hard as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: setrlimit reads the struct we own.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
    let (after, hard) = nofile()?;
    Some((soft, after, hard))
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `net.core.somaxconn`.
pub fn somaxconn() -> Option<u64> {
    read_trimmed("/proc/sys/net/core/somaxconn")?.parse().ok()
}

/// `net.ipv4.ip_local_port_range` as (low, high).
pub fn port_range() -> Option<(u64, u64)> {
    let s = read_trimmed("/proc/sys/net/ipv4/ip_local_port_range")?;
    let mut it = s.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// File descriptors kept free beyond the connections (listener, Redis, logs, JWKS fetches…).
pub const HEADROOM: u64 = 256;

/// Warnings about OS limits for this configuration.
pub fn warnings(config: &crate::config::Config) -> Vec<String> {
    let mut w = Vec::new();
    if let Some((_, hard)) = nofile() {
        if config.limits.max_connections > 0 && hard < config.limits.max_connections + HEADROOM {
            w.push(format!(
                "open files hard limit {hard} is below SYNCGATE_MAX_CONNECTIONS {} + {HEADROOM} headroom (raise LimitNOFILE / ulimit -Hn)",
                config.limits.max_connections
            ));
        }
        if config.limits.max_connections == 0 && hard < 65_536 {
            w.push(format!(
                "open files hard limit {hard} caps this instance near {} connections; set SYNCGATE_MAX_CONNECTIONS to shed load before it",
                hard.saturating_sub(HEADROOM)
            ));
        }
    }
    if let Some(max) = somaxconn() {
        if max < config.listener.listen_backlog as u64 {
            w.push(format!(
                "net.core.somaxconn {max} caps SYNCGATE_LISTEN_BACKLOG {} (sysctl -w net.core.somaxconn={})",
                config.listener.listen_backlog, config.listener.listen_backlog
            ));
        }
    }
    w
}
