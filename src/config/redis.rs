//! The Redis bus that joins instances into a cluster: where Redis is (one node, Sentinel or
//! Cluster, with or without TLS), the key prefix, publish batching and presence TTL.

use std::time::Duration;

use super::reader::Reader;
use super::{mask_url, ms};

/// The Redis bus (unset: the in-process bus): `redis://` or `rediss://` (TLS) for one node,
/// `redis-sentinel://h:p,h:p/service`, `redis-cluster://h:p,h:p` (and their `rediss-` forms).
pub const REDIS_URL: &str = "REDIS_URL";
/// PEM file of the CA that signed the Redis servers' certificates (TLS with a private CA).
pub const REDIS_CA_FILE: &str = "SYNCGATE_REDIS_CA_FILE";
/// Prefix of every Redis channel and key.
pub const REDIS_PREFIX: &str = "SYNCGATE_REDIS_PREFIX";
/// How long the batcher collects publishes before one pipelined flush, microseconds.
pub const REDIS_FLUSH_US: &str = "SYNCGATE_REDIS_FLUSH_US";
/// Members of a crashed instance leave within this.
pub const PRESENCE_TTL_MS: &str = "SYNCGATE_PRESENCE_TTL_MS";

/// How the Redis servers are deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    /// One node (or a primary behind a fixed address).
    Single,
    /// A primary found through Sentinel (followed across failovers).
    Sentinel,
    /// A Redis Cluster: channel traffic on sharded pub/sub, keys hash-tagged per channel/user.
    Cluster,
}

/// `REDIS_URL`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub kind: RedisKind,
    pub tls: bool,
    /// The node (one), the sentinels, or the cluster seed nodes.
    pub hosts: Vec<(String, u16)>,
    /// Sentinel: the monitored primary's name.
    pub service: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Database number (one node and Sentinel; Cluster has only 0).
    pub db: Option<u8>,
}

impl RedisTarget {
    /// Parses our URL syntax; `Err` says what is wrong (without the password).
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
        let (kind, tls) = match scheme {
            "redis" => (RedisKind::Single, false),
            "rediss" => (RedisKind::Single, true),
            "redis-sentinel" => (RedisKind::Sentinel, false),
            "rediss-sentinel" => (RedisKind::Sentinel, true),
            "redis-cluster" => (RedisKind::Cluster, false),
            "rediss-cluster" => (RedisKind::Cluster, true),
            _ => return Err(format!("unknown scheme {scheme:?}")),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| decode(u)).transpose()?, Some(decode(p)?)),
                None => (Some(decode(a)?), None),
            },
        };
        let (hosts_part, path) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        let default_port = if kind == RedisKind::Sentinel { 26379 } else { 6379 };
        let mut hosts = Vec::new();
        for h in hosts_part.split(',') {
            hosts.push(host_port(h, default_port)?);
        }
        if kind == RedisKind::Single && hosts.len() != 1 {
            return Err("one node only (use redis-sentinel:// or redis-cluster:// for several)".into());
        }
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let service = match kind {
            RedisKind::Sentinel => Some(segments.next().ok_or("the Sentinel service name is missing")?.to_string()),
            _ => None,
        };
        let db = match segments.next() {
            None => None,
            Some(_) if kind == RedisKind::Cluster => return Err("Redis Cluster has no database number".into()),
            Some(d) => Some(d.parse::<u8>().map_err(|_| format!("bad database number {d:?}"))?),
        };
        if segments.next().is_some() {
            return Err("unexpected path".into());
        }
        Ok(RedisTarget { kind, tls, hosts, service, username, password, db })
    }
}

fn decode(s: &str) -> Result<String, String> {
    crate::util::percent_decode(s).ok_or_else(|| "bad percent-encoding in the credentials".to_string())
}

fn host_port(h: &str, default_port: u16) -> Result<(String, u16), String> {
    if h.is_empty() {
        return Err("a host is missing".into());
    }
    // [v6]:port, host:port or host.
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("bad IPv6 host")?;
        (addr, after.strip_prefix(':'))
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(format!("bad host {h:?}"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port in {h:?}"))?,
    };
    Ok((host.to_string(), port))
}

/// The cluster bus.
#[derive(Clone)]
pub struct RedisConfig {
    /// `REDIS_URL`: the Redis bus; `None` is the in-process bus.
    pub url: Option<String>,
    /// The parsed URL (`Some` exactly when `url` is).
    pub target: Option<RedisTarget>,
    /// A private CA for TLS (`rediss…://`).
    pub ca_file: Option<std::path::PathBuf>,
    /// Prefix of every Redis channel and key.
    pub prefix: String,
    /// How long publishes are collected before one pipelined flush (zero: at once).
    pub flush: Duration,
    /// Presence entries of an instance expire after this unless refreshed.
    pub presence_ttl: Duration,
}

impl RedisConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let url = r.raw(REDIS_URL).map(str::to_string);
        let target = url.as_deref().and_then(|u| match RedisTarget::parse(u) {
            Ok(t) => Some(t),
            Err(why) => {
                r.error(format!(
                    "{REDIS_URL}: {why} (expected redis://host:port, rediss://host:port, \
                     redis-sentinel://host:port,host:port/service or redis-cluster://host:port,host:port)"
                ));
                None
            }
        });
        let ca_file = r.raw(REDIS_CA_FILE).map(std::path::PathBuf::from);
        if let Some(ca) = &ca_file {
            if !target.as_ref().is_some_and(|t| t.tls) {
                r.error(format!("{REDIS_CA_FILE} is set but {REDIS_URL} is not a rediss… (TLS) URL"));
            } else if std::fs::metadata(ca).map(|m| !m.is_file()).unwrap_or(true) {
                r.error(format!("{REDIS_CA_FILE}: {} is not a readable file", ca.display()));
            }
        }
        let prefix = r.raw(REDIS_PREFIX).unwrap_or("syncgate:").to_string();
        if prefix.len() > 64 || prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
            r.error(format!("{REDIS_PREFIX} must be at most 64 characters without spaces or braces"));
        }
        let flush = Duration::from_micros(r.ranged(REDIS_FLUSH_US, 200, 0, 100_000));
        let presence_ttl = Duration::from_millis(r.ranged(PRESENCE_TTL_MS, 15_000, 200, 3_600_000));
        RedisConfig { url, target, ca_file, prefix, flush, presence_ttl }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (REDIS_URL, self.url.as_deref().map(mask_url).unwrap_or_else(|| "(unset: in-process bus)".into())),
            (REDIS_CA_FILE, self.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(unset)".into())),
            (REDIS_PREFIX, self.prefix.clone()),
            (REDIS_FLUSH_US, self.flush.as_micros().to_string()),
            (PRESENCE_TTL_MS, ms(self.presence_ttl)),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_each_deployment() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((t.kind, t.tls, t.hosts.clone()), (RedisKind::Single, false, vec![("127.0.0.1".into(), 6379)]));
        let t = RedisTarget::parse("rediss://u:p%40ss@redis.example:6380/2").unwrap();
        assert_eq!(
            (t.tls, t.username.as_deref(), t.password.as_deref(), t.db),
            (true, Some("u"), Some("p@ss"), Some(2))
        );
        let t = RedisTarget::parse("redis-sentinel://10.0.0.1:26379,10.0.0.2/mymaster").unwrap();
        assert_eq!(t.kind, RedisKind::Sentinel);
        assert_eq!(t.hosts, vec![("10.0.0.1".into(), 26379), ("10.0.0.2".into(), 26379)]);
        assert_eq!(t.service.as_deref(), Some("mymaster"));
        let t = RedisTarget::parse("redis-cluster://:secret@a:7000,b:7001,[::1]:7002").unwrap();
        assert_eq!(t.kind, RedisKind::Cluster);
        assert_eq!(t.hosts.len(), 3);
        assert_eq!(t.hosts[2], ("::1".into(), 7002));
        assert_eq!((t.username, t.password.as_deref()), (None, Some("secret")));
        for bad in [
            "http://x",
            "redis://",
            "redis://a:1,b:2",
            "redis-sentinel://a:1",
            "redis-cluster://a:7000/1",
            "redis://a:99999",
            "redis://a:1/db",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
    }
}
