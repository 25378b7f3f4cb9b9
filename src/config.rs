//! Typed configuration read once from the environment; every key is a const here and every bad
//! value is reported (all at once, naming the variable) before the server starts.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const LISTEN: &str = "SYNCGATE_LISTEN";
pub const DATA_DIR: &str = "SYNCGATE_DATA_DIR";
pub const JWT_SECRET: &str = "SYNCGATE_JWT_SECRET";
pub const JWT_PUBLIC_KEY: &str = "SYNCGATE_JWT_PUBLIC_KEY";
pub const JWKS_URL: &str = "SYNCGATE_JWKS_URL";
pub const JWKS_REFRESH_SECS: &str = "SYNCGATE_JWKS_REFRESH_SECS";
pub const JWKS_TIMEOUT_MS: &str = "SYNCGATE_JWKS_TIMEOUT_MS";
pub const JWT_ISSUER: &str = "SYNCGATE_JWT_ISSUER";
pub const JWT_AUDIENCE: &str = "SYNCGATE_JWT_AUDIENCE";
pub const JWT_LEEWAY_SECS: &str = "SYNCGATE_JWT_LEEWAY_SECS";
pub const AUTH_TIMEOUT_MS: &str = "SYNCGATE_AUTH_TIMEOUT_MS";
pub const PUBLIC_NAMESPACES: &str = "SYNCGATE_PUBLIC_NAMESPACES";
pub const MAX_MESSAGE_BYTES: &str = "SYNCGATE_MAX_MESSAGE_BYTES";
pub const MESSAGES_PER_MIN: &str = "SYNCGATE_MESSAGES_PER_MIN";
pub const MAX_CONNECTIONS_PER_USER: &str = "SYNCGATE_MAX_CONNECTIONS_PER_USER";
pub const MAX_DEVICES_PER_USER: &str = "SYNCGATE_MAX_DEVICES_PER_USER";
pub const MAX_CHANNELS_PER_CONNECTION: &str = "SYNCGATE_MAX_CHANNELS_PER_CONNECTION";
pub const CONNECT_RATE_PER_IP: &str = "SYNCGATE_CONNECT_RATE_PER_IP";
pub const HEARTBEAT_MS: &str = "SYNCGATE_HEARTBEAT_MS";
pub const OUTBOUND_QUEUE: &str = "SYNCGATE_OUTBOUND_QUEUE";
pub const OUTBOUND_QUEUE_BYTES: &str = "SYNCGATE_OUTBOUND_QUEUE_BYTES";
pub const ALLOWED_ORIGINS: &str = "SYNCGATE_ALLOWED_ORIGINS";
pub const SHUTDOWN_TIMEOUT_MS: &str = "SYNCGATE_SHUTDOWN_TIMEOUT_MS";
pub const WS_READ_BUFFER: &str = "SYNCGATE_WS_READ_BUFFER";
pub const WS_WRITE_BUFFER: &str = "SYNCGATE_WS_WRITE_BUFFER";
pub const HANDSHAKE_TIMEOUT_MS: &str = "SYNCGATE_HANDSHAKE_TIMEOUT_MS";
pub const LOG_FORMAT: &str = "SYNCGATE_LOG_FORMAT";
/// The log filter (tracing's `EnvFilter` syntax, e.g. `info,syncgate=debug`).
pub const RUST_LOG: &str = "RUST_LOG";
pub const LISTEN_BACKLOG: &str = "SYNCGATE_LISTEN_BACKLOG";
pub const JOIN_LEAVE_MAX_MEMBERS: &str = "SYNCGATE_JOIN_LEAVE_MAX_MEMBERS";
pub const REDIS_URL: &str = "REDIS_URL";
pub const REDIS_PREFIX: &str = "SYNCGATE_REDIS_PREFIX";
pub const REDIS_FLUSH_US: &str = "SYNCGATE_REDIS_FLUSH_US";
pub const PRESENCE_TTL_MS: &str = "SYNCGATE_PRESENCE_TTL_MS";
pub const API_KEY: &str = "SYNCGATE_API_KEY";
pub const MAX_CONNECTIONS: &str = "SYNCGATE_MAX_CONNECTIONS";
pub const DRAIN_DELAY_MS: &str = "SYNCGATE_DRAIN_DELAY_MS";
pub const DRAIN_SPREAD_MS: &str = "SYNCGATE_DRAIN_SPREAD_MS";
pub const REUSEPORT: &str = "SYNCGATE_REUSEPORT";
pub const DATABASE_URL: &str = "DATABASE_URL";
pub const ACCESS_TTL_SECS: &str = "SYNCGATE_ACCESS_TTL_SECS";
pub const REFRESH_TTL_SECS: &str = "SYNCGATE_REFRESH_TTL_SECS";
pub const HASH_CONCURRENCY: &str = "SYNCGATE_HASH_CONCURRENCY";
pub const AUTH_ATTEMPTS_PER_MIN: &str = "SYNCGATE_AUTH_ATTEMPTS_PER_MIN";
pub const REGISTER_PER_HOUR: &str = "SYNCGATE_REGISTER_PER_HOUR";
pub const SMTP_URL: &str = "SYNCGATE_SMTP_URL";
pub const SMTP_FROM: &str = "SYNCGATE_SMTP_FROM";
pub const REDIRECT_ALLOWLIST: &str = "SYNCGATE_REDIRECT_ALLOWLIST";
pub const LOGIN_CODE_TTL_SECS: &str = "SYNCGATE_LOGIN_CODE_TTL_SECS";
pub const DURABLE_NAMESPACES: &str = "SYNCGATE_DURABLE_NAMESPACES";
pub const REPLAY_MAX: &str = "SYNCGATE_REPLAY_MAX";
pub const HISTORY_TTL_SECS: &str = "SYNCGATE_HISTORY_TTL_SECS";
pub const HISTORY_MAX: &str = "SYNCGATE_HISTORY_MAX";
pub const RETENTION_INTERVAL_SECS: &str = "SYNCGATE_RETENTION_INTERVAL_SECS";
pub const DURABLE_BATCH_MAX: &str = "SYNCGATE_DURABLE_BATCH_MAX";
pub const DURABLE_QUEUE: &str = "SYNCGATE_DURABLE_QUEUE";
pub const DURABLE_QUEUE_BYTES: &str = "SYNCGATE_DURABLE_QUEUE_BYTES";
pub const MAX_JSON_DEPTH: &str = "SYNCGATE_MAX_JSON_DEPTH";
pub const DURABLE_MAX_EVENT_BYTES: &str = "SYNCGATE_DURABLE_MAX_EVENT_BYTES";
pub const HISTORY_PAGE_BYTES: &str = "SYNCGATE_HISTORY_PAGE_BYTES";
pub const OTP_GUESSES_PER_DAY: &str = "SYNCGATE_OTP_GUESSES_PER_DAY";
pub const API_REQUESTS_PER_MIN: &str = "SYNCGATE_API_REQUESTS_PER_MIN";
pub const CLOSE_LINGER_MS: &str = "SYNCGATE_CLOSE_LINGER_MS";
pub const WRITE_TIMEOUT_MS: &str = "SYNCGATE_WRITE_TIMEOUT_MS";
pub const DURABLE_EVENTS_PER_MIN: &str = "SYNCGATE_DURABLE_EVENTS_PER_MIN";
pub const DURABLE_BYTES_PER_MIN: &str = "SYNCGATE_DURABLE_BYTES_PER_MIN";
pub const AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN: &str = "SYNCGATE_AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN";
pub const AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR: &str = "SYNCGATE_AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR";
pub const ECHO_PATH: &str = "SYNCGATE_ECHO_PATH";
pub const PROXY_PROTOCOL: &str = "SYNCGATE_PROXY_PROTOCOL";
pub const ADMIN_LISTEN: &str = "SYNCGATE_ADMIN_LISTEN";

/// Where verification keys come from. Exactly one source is active; the key decides the algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `SYNCGATE_JWT_SECRET` (HS256).
    Secret(Vec<u8>),
    /// `SYNCGATE_JWT_PUBLIC_KEY` (PEM; RS256, ES256 or EdDSA by key type).
    PublicKeyPem(String),
    /// `SYNCGATE_JWKS_URL`.
    Jwks(String),
    /// Nothing configured: a random HS256 secret persisted in the data directory (development).
    Generated,
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Secret(_) => f.write_str("Secret(***)"),
            KeySource::PublicKeyPem(_) => f.write_str("PublicKeyPem(…)"),
            KeySource::Jwks(u) => write!(f, "Jwks({u})"),
            KeySource::Generated => f.write_str("Generated"),
        }
    }
}

/// `SYNCGATE_PROXY_PROTOCOL`: which PROXY protocol header every connection on the main listener
/// must start with (behind a TCP load balancer), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    /// The text header (`PROXY TCP4 …\r\n`).
    V1,
    /// The binary header (HAProxy `send-proxy-v2`).
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration. Cloned once into the shared server state. Its `Debug` output is the
/// masked [`Config::describe`], so a stray `{:?}` never prints a secret.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub key_source: KeySource,
    pub jwks_refresh: Duration,
    pub jwks_timeout: Duration,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway_secs: u64,
    pub auth_timeout: Duration,
    pub public_namespaces: Vec<String>,
    pub max_message_bytes: usize,
    pub messages_per_min: u32,
    pub max_connections_per_user: u32,
    /// Unrevoked devices per account; a login that would create one more gets 409.
    pub max_devices_per_user: u32,
    pub max_channels_per_connection: u32,
    pub connect_rate_per_ip: u32,
    pub heartbeat: Duration,
    pub outbound_queue: usize,
    pub outbound_queue_bytes: usize,
    pub allowed_origins: Vec<String>,
    pub shutdown_timeout: Duration,
    pub ws_read_buffer: usize,
    pub ws_write_buffer: usize,
    pub handshake_timeout: Duration,
    pub log_format: LogFormat,
    /// `RUST_LOG`, validated (the binary builds its log filter from it; `info` when unset).
    pub rust_log: Option<String>,
    pub listen_backlog: u32,
    pub join_leave_max_members: usize,
    /// `REDIS_URL`: the Redis bus; `None` is the in-process bus.
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub redis_flush: Duration,
    pub presence_ttl: Duration,
    /// `SYNCGATE_API_KEY`: enables the server API (`/api/publish`, `/api/disconnect`).
    pub api_key: Option<String>,
    /// Per-instance connection limit (0: unlimited); beyond it upgrades get 503.
    pub max_connections: u64,
    pub drain_delay: Duration,
    pub drain_spread: Duration,
    pub reuseport: bool,
    /// `DATABASE_URL`: PostgreSQL (or an explicit SQLite URL); default SQLite in the data dir.
    pub database_url: Option<String>,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    /// Password hashes computed at once on the blocking pool.
    pub hash_concurrency: usize,
    /// Login/forgot/reset attempts per (address, account) per minute.
    pub auth_attempts_per_min: u32,
    /// Login/forgot/reset attempts per address (any account) per minute.
    pub auth_attempts_per_address_per_min: u32,
    /// Login/forgot/reset attempts per account (any address) per hour.
    pub auth_attempts_per_account_per_hour: u32,
    /// Registrations per IP per hour.
    pub register_per_hour: u32,
    /// SMTP for reset codes; without it codes are only logged in the development set-up.
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    /// Non-loopback redirect URIs the login page may redirect to with a code (exact, query ignored).
    pub redirect_allowlist: Vec<String>,
    /// How long a login page's one-time code can be redeemed.
    pub login_code_ttl_secs: u64,
    /// Namespaces whose channels are durable streams (`dm` by default; `user` may be added).
    pub durable_namespaces: Vec<String>,
    /// Most events a `subscribe` with `since` replays; beyond it the reply says `recovered:false`.
    pub replay_max: u64,
    /// Events older than this are deleted (0: no age limit).
    pub history_ttl_secs: u64,
    /// Events kept per channel (0: no count limit).
    pub history_max: u64,
    pub retention_interval: Duration,
    /// Most events one group commit writes.
    pub durable_batch_max: usize,
    /// Durable publishes waiting for a commit; beyond it publishes get `unavailable`.
    pub durable_queue: usize,
    /// Payload bytes of the durable publishes waiting for a commit (the same policy).
    pub durable_queue_bytes: u64,
    /// Largest durable event (`data` plus `event`) a client may publish; larger → `too_large`.
    pub durable_max_event_bytes: usize,
    /// Durable events a user may publish per minute (all connections and instances).
    pub durable_events_per_min: u64,
    /// Bytes (`data` plus `event`) of durable events a user may publish per minute.
    pub durable_bytes_per_min: u64,
    /// Most bytes of events one history page holds (at least one event); then `has_more`.
    pub history_page_bytes: usize,
    /// Wrong reset codes per account per rolling 24 h, across every code issued.
    pub otp_guesses_per_day: u32,
    /// Read-API requests (history, conversations, devices, user search) per user per minute.
    pub api_requests_per_min: u32,
    /// Deepest JSON nesting accepted from any untrusted source (frames, bodies, Redis, JWKS).
    pub max_json_depth: usize,
    /// After sending a close frame: how long to keep reading (and discarding) until the peer's
    /// close frame or EOF arrives, before the socket is shut (RFC 6455 §7.1.1).
    pub close_linger: Duration,
    /// A connection whose socket accepts no byte for this long while frames wait is closed.
    pub write_timeout: Duration,
    /// Unauthenticated echo endpoint for conformance runs (`None`: off).
    pub echo_path: Option<String>,
    /// PROXY protocol header expected on the main listener; its client address is the peer.
    pub proxy_protocol: ProxyProtocol,
    /// Second listener (no PROXY header) serving only health, readiness, metrics and status.
    pub admin_listen: Option<SocketAddr>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.describe() {
            m.entry(&k, &v);
        }
        m.finish()
    }
}

/// Every bad variable found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for ConfigError {}

impl Default for Config {
    fn default() -> Self {
        Config::from_map(&HashMap::new()).expect("defaults are valid")
    }
}

/// Collects parse errors so that one start-up reports every bad variable.
struct Reader<'a> {
    vars: &'a HashMap<String, String>,
    errors: Vec<String>,
}

impl Reader<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &str, default: T, what: &str) -> T {
        match self.raw(key) {
            None => default,
            Some(v) => match v.parse::<T>() {
                Ok(x) => x,
                Err(_) => {
                    self.errors.push(format!("{key}={v:?} is not {what}"));
                    default
                }
            },
        }
    }

    fn ranged(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let v = self.parse::<u64>(key, default, "a non-negative integer");
        if v < min || v > max {
            self.errors.push(format!("{key}={v} is out of range ({min}..={max})"));
            return default;
        }
        v
    }

    fn list(&self, key: &str) -> Vec<String> {
        self.raw(key)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

impl Config {
    /// Whether `origin` is in `SYNCGATE_ALLOWED_ORIGINS` (`*` allows any; the comparison ignores
    /// case). The one origin rule: the upgrade and the HTTP API's CORS answers both use it.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    }
}

/// `redis://user:secret@host` → `redis://user:***@host` (any URL with credentials).
pub fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => format!("{}***{}", &url[..s + 3], &url[at..]),
        },
        _ => url.to_string(),
    }
}

impl Config {
    /// The effective configuration as (variable, value) rows, secrets masked.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| d.as_millis().to_string();
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "(unset)".into());
        let key = match &self.key_source {
            KeySource::Secret(s) => format!("*** ({} bytes)", s.len()),
            _ => "(unset)".into(),
        };
        let pem = match &self.key_source {
            KeySource::PublicKeyPem(p) => format!("PEM ({} bytes)", p.len()),
            _ => "(unset)".into(),
        };
        let jwks = match &self.key_source {
            KeySource::Jwks(u) => mask_url(u),
            _ => "(unset)".into(),
        };
        vec![
            (LISTEN, self.listen.to_string()),
            (DATA_DIR, self.data_dir.display().to_string()),
            (JWT_SECRET, key),
            (JWT_PUBLIC_KEY, pem),
            (JWKS_URL, jwks),
            (JWKS_REFRESH_SECS, self.jwks_refresh.as_secs().to_string()),
            (JWKS_TIMEOUT_MS, ms(self.jwks_timeout)),
            (JWT_ISSUER, opt(&self.jwt_issuer)),
            (JWT_AUDIENCE, opt(&self.jwt_audience)),
            (JWT_LEEWAY_SECS, self.jwt_leeway_secs.to_string()),
            (AUTH_TIMEOUT_MS, ms(self.auth_timeout)),
            (PUBLIC_NAMESPACES, self.public_namespaces.join(",")),
            (MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (MESSAGES_PER_MIN, self.messages_per_min.to_string()),
            (MAX_CONNECTIONS_PER_USER, self.max_connections_per_user.to_string()),
            (MAX_DEVICES_PER_USER, self.max_devices_per_user.to_string()),
            (MAX_CHANNELS_PER_CONNECTION, self.max_channels_per_connection.to_string()),
            (CONNECT_RATE_PER_IP, self.connect_rate_per_ip.to_string()),
            (HEARTBEAT_MS, ms(self.heartbeat)),
            (OUTBOUND_QUEUE, self.outbound_queue.to_string()),
            (OUTBOUND_QUEUE_BYTES, self.outbound_queue_bytes.to_string()),
            (ALLOWED_ORIGINS, self.allowed_origins.join(",")),
            (SHUTDOWN_TIMEOUT_MS, ms(self.shutdown_timeout)),
            (WS_READ_BUFFER, self.ws_read_buffer.to_string()),
            (WS_WRITE_BUFFER, self.ws_write_buffer.to_string()),
            (HANDSHAKE_TIMEOUT_MS, ms(self.handshake_timeout)),
            (LOG_FORMAT, format!("{:?}", self.log_format).to_lowercase()),
            (RUST_LOG, self.rust_log.clone().unwrap_or_else(|| "info".into())),
            (LISTEN_BACKLOG, self.listen_backlog.to_string()),
            (JOIN_LEAVE_MAX_MEMBERS, self.join_leave_max_members.to_string()),
            (REDIS_URL, self.redis_url.as_deref().map(mask_url).unwrap_or_else(|| "(unset: in-process bus)".into())),
            (REDIS_PREFIX, self.redis_prefix.clone()),
            (REDIS_FLUSH_US, self.redis_flush.as_micros().to_string()),
            (PRESENCE_TTL_MS, ms(self.presence_ttl)),
            (API_KEY, if self.api_key.is_some() { "***".into() } else { "(unset: server API off)".into() }),
            (
                MAX_CONNECTIONS,
                if self.max_connections == 0 { "0 (unlimited)".into() } else { self.max_connections.to_string() },
            ),
            (DRAIN_DELAY_MS, ms(self.drain_delay)),
            (DRAIN_SPREAD_MS, ms(self.drain_spread)),
            (REUSEPORT, u8::from(self.reuseport).to_string()),
            (
                DATABASE_URL,
                self.database_url
                    .as_deref()
                    .map(mask_url)
                    .unwrap_or_else(|| "(unset: SQLite in the data directory)".into()),
            ),
            (ACCESS_TTL_SECS, self.access_ttl_secs.to_string()),
            (REFRESH_TTL_SECS, self.refresh_ttl_secs.to_string()),
            (HASH_CONCURRENCY, self.hash_concurrency.to_string()),
            (AUTH_ATTEMPTS_PER_MIN, self.auth_attempts_per_min.to_string()),
            (AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN, self.auth_attempts_per_address_per_min.to_string()),
            (AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR, self.auth_attempts_per_account_per_hour.to_string()),
            (REGISTER_PER_HOUR, self.register_per_hour.to_string()),
            (SMTP_URL, self.smtp_url.as_deref().map(mask_url).unwrap_or_else(|| "(unset)".into())),
            (SMTP_FROM, self.smtp_from.clone()),
            (REDIRECT_ALLOWLIST, self.redirect_allowlist.join(",")),
            (LOGIN_CODE_TTL_SECS, self.login_code_ttl_secs.to_string()),
            (DURABLE_NAMESPACES, self.durable_namespaces.join(",")),
            (REPLAY_MAX, self.replay_max.to_string()),
            (HISTORY_TTL_SECS, self.history_ttl_secs.to_string()),
            (HISTORY_MAX, self.history_max.to_string()),
            (RETENTION_INTERVAL_SECS, self.retention_interval.as_secs().to_string()),
            (DURABLE_BATCH_MAX, self.durable_batch_max.to_string()),
            (DURABLE_QUEUE, self.durable_queue.to_string()),
            (DURABLE_QUEUE_BYTES, self.durable_queue_bytes.to_string()),
            (MAX_JSON_DEPTH, self.max_json_depth.to_string()),
            (DURABLE_MAX_EVENT_BYTES, self.durable_max_event_bytes.to_string()),
            (DURABLE_EVENTS_PER_MIN, self.durable_events_per_min.to_string()),
            (DURABLE_BYTES_PER_MIN, self.durable_bytes_per_min.to_string()),
            (HISTORY_PAGE_BYTES, self.history_page_bytes.to_string()),
            (OTP_GUESSES_PER_DAY, self.otp_guesses_per_day.to_string()),
            (API_REQUESTS_PER_MIN, self.api_requests_per_min.to_string()),
            (CLOSE_LINGER_MS, ms(self.close_linger)),
            (WRITE_TIMEOUT_MS, ms(self.write_timeout)),
            (ECHO_PATH, opt(&self.echo_path)),
            (PROXY_PROTOCOL, format!("{:?}", self.proxy_protocol).to_lowercase()),
            (ADMIN_LISTEN, self.admin_listen.map(|a| a.to_string()).unwrap_or_else(|| "(unset: off)".into())),
        ]
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        Config::from_map(&vars)
    }

    /// Reads a map of variables (tests pass their own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut r = Reader { vars, errors: Vec::new() };
        let listen = r.parse(LISTEN, SocketAddr::from(([0, 0, 0, 0], 8080)), "an address like 0.0.0.0:8080");
        let data_dir = PathBuf::from(r.raw(DATA_DIR).unwrap_or("./data"));

        let secret = r.raw(JWT_SECRET).map(|s| s.as_bytes().to_vec());
        let pem = r.raw(JWT_PUBLIC_KEY).map(|s| s.replace("\\n", "\n"));
        let jwks = r.raw(JWKS_URL).map(str::to_string);
        let configured = [secret.is_some(), pem.is_some(), jwks.is_some()].iter().filter(|b| **b).count();
        if configured > 1 {
            r.errors.push(format!(
                "set only one of {JWT_SECRET}, {JWT_PUBLIC_KEY}, {JWKS_URL} (the key decides the algorithm)"
            ));
        }
        let key_source = if let Some(s) = secret {
            if s.len() < 32 {
                r.errors.push(format!("{JWT_SECRET} must be at least 32 bytes (got {})", s.len()));
            }
            KeySource::Secret(s)
        } else if let Some(p) = pem {
            if !p.contains("-----BEGIN") {
                r.errors.push(format!("{JWT_PUBLIC_KEY} must be a PEM public key"));
            }
            KeySource::PublicKeyPem(p)
        } else if let Some(u) = jwks {
            // Keys fetched in clear text could be swapped on the way: https only, except a
            // loopback address (a local key service, tests).
            let loopback = u.strip_prefix("http://").is_some_and(|rest| {
                let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
                let host = match host_port.strip_prefix('[') {
                    Some(v6) => v6.split(']').next().unwrap_or(""),
                    None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
                };
                host.eq_ignore_ascii_case("localhost")
                    || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            if !(u.starts_with("https://") || loopback) {
                r.errors
                    .push(format!("{JWKS_URL}={u:?} must be an https:// URL (http:// only for a loopback address)"));
            }
            KeySource::Jwks(u)
        } else {
            KeySource::Generated
        };

        let jwks_refresh = Duration::from_secs(r.ranged(JWKS_REFRESH_SECS, 300, 1, 86_400 * 7));
        let jwks_timeout = Duration::from_millis(r.ranged(JWKS_TIMEOUT_MS, 5_000, 1, 120_000));
        let jwt_issuer = r.raw(JWT_ISSUER).map(str::to_string);
        let jwt_audience = r.raw(JWT_AUDIENCE).map(str::to_string);
        let jwt_leeway_secs = r.ranged(JWT_LEEWAY_SECS, 0, 0, 3600);
        let auth_timeout = Duration::from_millis(r.ranged(AUTH_TIMEOUT_MS, 10_000, 1, 600_000));
        let public_namespaces = r.list(PUBLIC_NAMESPACES);
        for ns in &public_namespaces {
            if ns == "user" || ns == "dm" || !crate::channel::valid_namespace(ns) {
                r.errors.push(format!("{PUBLIC_NAMESPACES}: {ns:?} cannot be a public namespace"));
            }
        }
        let max_message_bytes = r.ranged(MAX_MESSAGE_BYTES, 1 << 20, 64, 64 << 20) as usize;
        let messages_per_min = r.ranged(MESSAGES_PER_MIN, 300, 1, 10_000_000) as u32;
        let max_connections_per_user = r.ranged(MAX_CONNECTIONS_PER_USER, 20, 1, 1_000_000) as u32;
        let max_devices_per_user = r.ranged(MAX_DEVICES_PER_USER, 100, 1, 1_000_000) as u32;
        let max_channels_per_connection = r.ranged(MAX_CHANNELS_PER_CONNECTION, 256, 1, 100_000) as u32;
        let connect_rate_per_ip = r.ranged(CONNECT_RATE_PER_IP, 0, 0, 10_000_000) as u32;
        let heartbeat = Duration::from_millis(r.ranged(HEARTBEAT_MS, 25_000, 100, 3_600_000));
        let outbound_queue = r.ranged(OUTBOUND_QUEUE, 1024, 1, 1 << 20) as usize;
        let outbound_queue_bytes = r.ranged(OUTBOUND_QUEUE_BYTES, 4 << 20, 1024, 1 << 32) as usize;
        let allowed_origins = r.list(ALLOWED_ORIGINS);
        let shutdown_timeout = Duration::from_millis(r.ranged(SHUTDOWN_TIMEOUT_MS, 10_000, 0, 600_000));
        let ws_read_buffer = r.ranged(WS_READ_BUFFER, 512, 128, 1 << 20) as usize;
        let ws_write_buffer = r.ranged(WS_WRITE_BUFFER, 64 * 1024, 0, 16 << 20) as usize;
        let handshake_timeout = Duration::from_millis(r.ranged(HANDSHAKE_TIMEOUT_MS, 10_000, 1, 600_000));
        // Capped so that even the recursive encoders stay far from a worker thread's stack limit.
        let max_json_depth = r.ranged(MAX_JSON_DEPTH, 128, 1, crate::util::json::MAX_DEPTH_LIMIT as u64) as usize;
        let durable_max_event_bytes = r.ranged(DURABLE_MAX_EVENT_BYTES, 262_144, 64, 64 << 20) as usize;
        let durable_events_per_min = r.ranged(DURABLE_EVENTS_PER_MIN, 600, 1, 1 << 40);
        let durable_bytes_per_min = r.ranged(DURABLE_BYTES_PER_MIN, 16 << 20, 1024, 1 << 50);
        let history_page_bytes = r.ranged(HISTORY_PAGE_BYTES, 4 << 20, 1024, 1 << 30) as usize;
        let otp_guesses_per_day = r.ranged(OTP_GUESSES_PER_DAY, 20, 1, 1000) as u32;
        let api_requests_per_min = r.ranged(API_REQUESTS_PER_MIN, 600, 1, 1_000_000) as u32;
        let close_linger = Duration::from_millis(r.ranged(CLOSE_LINGER_MS, 2_000, 0, 60_000));
        let write_timeout = Duration::from_millis(r.ranged(WRITE_TIMEOUT_MS, 10_000, 100, 600_000));
        let echo_path = r.raw(ECHO_PATH).map(str::to_string);
        if let Some(p) = &echo_path {
            let reserved = crate::routes::ROUTES.iter().any(|(_, route)| route == p);
            if !p.starts_with('/') || p.len() < 2 || p.contains(['?', '#', ' ']) || reserved {
                r.errors.push(format!("{ECHO_PATH}={p:?} must be a path like /echo that no other route uses"));
            }
        }
        let proxy_protocol = match r.raw(PROXY_PROTOCOL) {
            None | Some("off") => ProxyProtocol::Off,
            Some("v1") => ProxyProtocol::V1,
            Some("v2") => ProxyProtocol::V2,
            Some(other) => {
                r.errors.push(format!("{PROXY_PROTOCOL}={other:?} must be one of: off, v1, v2"));
                ProxyProtocol::Off
            }
        };
        let admin_listen = match r.raw(ADMIN_LISTEN) {
            None => None,
            Some(v) => match v.parse::<SocketAddr>() {
                Ok(a) if a == listen && a.port() != 0 => {
                    r.errors.push(format!("{ADMIN_LISTEN}={v:?} must differ from {LISTEN}"));
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    r.errors.push(format!("{ADMIN_LISTEN}={v:?} is not an address like 127.0.0.1:9090"));
                    None
                }
            },
        };
        let join_leave_max_members = r.ranged(JOIN_LEAVE_MAX_MEMBERS, 1000, 0, 10_000_000) as usize;
        let redis_url = r.raw(REDIS_URL).map(str::to_string);
        if let Some(u) = &redis_url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://") || u.starts_with("redis-sentinel://")) {
                r.errors.push(format!("{REDIS_URL} must be a redis:// URL"));
            }
        }
        let redis_prefix = r.raw(REDIS_PREFIX).unwrap_or("syncgate:").to_string();
        if redis_prefix.len() > 64 || redis_prefix.contains(char::is_whitespace) {
            r.errors.push(format!("{REDIS_PREFIX} must be at most 64 characters without spaces"));
        }
        let redis_flush = Duration::from_micros(r.ranged(REDIS_FLUSH_US, 200, 0, 100_000));
        let presence_ttl = Duration::from_millis(r.ranged(PRESENCE_TTL_MS, 15_000, 200, 3_600_000));
        let api_key = r.raw(API_KEY).map(str::to_string);
        if api_key.as_ref().is_some_and(|k| k.len() < 16) {
            r.errors.push(format!("{API_KEY} must be at least 16 characters"));
        }
        let max_connections = r.ranged(MAX_CONNECTIONS, 0, 0, 100_000_000);
        let drain_delay = Duration::from_millis(r.ranged(DRAIN_DELAY_MS, 0, 0, 3_600_000));
        let drain_spread = Duration::from_millis(r.ranged(DRAIN_SPREAD_MS, 0, 0, 3_600_000));
        let reuseport = match r.raw(REUSEPORT) {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                r.errors.push(format!("{REUSEPORT}={other:?} must be 0 or 1"));
                false
            }
        };
        let database_url = r.raw(DATABASE_URL).map(str::to_string);
        if let Some(u) = &database_url {
            if !(u.starts_with("postgres://") || u.starts_with("postgresql://") || u.starts_with("sqlite:")) {
                r.errors.push(format!("{DATABASE_URL} must be a postgres:// or sqlite: URL"));
            }
        }
        let access_ttl_secs = r.ranged(ACCESS_TTL_SECS, 900, 10, 86_400);
        let refresh_ttl_secs = r.ranged(REFRESH_TTL_SECS, 30 * 86_400, 60, 365 * 86_400);
        let hash_concurrency = r.ranged(HASH_CONCURRENCY, 2, 1, 256) as usize;
        let auth_attempts_per_min = r.ranged(AUTH_ATTEMPTS_PER_MIN, 10, 1, 1_000_000) as u32;
        let auth_attempts_per_address_per_min = r.ranged(AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN, 60, 1, 1_000_000) as u32;
        let auth_attempts_per_account_per_hour =
            r.ranged(AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR, 300, 2, 100_000_000) as u32;
        let register_per_hour = r.ranged(REGISTER_PER_HOUR, 30, 1, 1_000_000) as u32;
        let smtp_url = r.raw(SMTP_URL).map(str::to_string);
        if smtp_url.as_ref().is_some_and(|u| !(u.starts_with("smtp://") || u.starts_with("smtps://"))) {
            r.errors.push(format!("{SMTP_URL} must be an smtp:// or smtps:// URL"));
        }
        let redirect_allowlist = r.list(REDIRECT_ALLOWLIST);
        for u in &redirect_allowlist {
            if !u.starts_with("https://") && !u.starts_with("http://") || u.contains('#') || u.contains('?') {
                r.errors.push(format!("{REDIRECT_ALLOWLIST}: {u:?} must be an http(s) URL without query or fragment"));
            }
        }
        let login_code_ttl_secs = r.ranged(LOGIN_CODE_TTL_SECS, 60, 1, 600);
        let smtp_from = r.raw(SMTP_FROM).unwrap_or("syncgate <no-reply@localhost>").to_string();
        // Unset: `dm`. Set but empty (like `none` or `-`): no durable namespace at all.
        let durable_namespaces = match r.raw(DURABLE_NAMESPACES) {
            None if vars.contains_key(DURABLE_NAMESPACES) => Vec::new(),
            None => vec!["dm".to_string()],
            Some("-" | "none") => Vec::new(),
            Some(_) => r.list(DURABLE_NAMESPACES),
        };
        for ns in &durable_namespaces {
            if !crate::channel::valid_namespace(ns) {
                r.errors.push(format!("{DURABLE_NAMESPACES}: {ns:?} is not a namespace"));
            }
        }
        let replay_max = r.ranged(REPLAY_MAX, 1000, 1, 100_000);
        let history_ttl_secs = r.ranged(HISTORY_TTL_SECS, 30 * 86_400, 0, 100 * 365 * 86_400);
        let history_max = r.ranged(HISTORY_MAX, 10_000, 0, 1 << 40);
        let retention_interval = Duration::from_secs(r.ranged(RETENTION_INTERVAL_SECS, 10, 1, 86_400));
        let durable_batch_max = r.ranged(DURABLE_BATCH_MAX, 1000, 1, 100_000) as usize;
        let durable_queue = r.ranged(DURABLE_QUEUE, 65_536, 1, 1 << 24) as usize;
        let durable_queue_bytes = r.ranged(DURABLE_QUEUE_BYTES, 256 << 20, 1024, 1 << 40);
        let listen_backlog = r.ranged(LISTEN_BACKLOG, 4096, 1, 1 << 20) as u32;
        let log_format = match r.raw(LOG_FORMAT) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                r.errors.push(format!("{LOG_FORMAT}={other:?} must be one of: text, json"));
                LogFormat::Text
            }
        };
        // The log filter is read by the binary, but a bad one stops start-up like any bad value.
        let rust_log = r.raw(RUST_LOG).map(str::to_string);
        if let Some(filter) = r.raw(RUST_LOG).filter(|f| !f.trim().is_empty()) {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
                r.errors.push(format!("{RUST_LOG}={filter:?} is not a valid log filter: {e}"));
            }
        }

        if !r.errors.is_empty() {
            return Err(ConfigError(r.errors));
        }
        Ok(Config {
            listen,
            data_dir,
            key_source,
            jwks_refresh,
            jwks_timeout,
            jwt_issuer,
            jwt_audience,
            jwt_leeway_secs,
            auth_timeout,
            public_namespaces,
            max_message_bytes,
            messages_per_min,
            max_connections_per_user,
            max_devices_per_user,
            max_channels_per_connection,
            connect_rate_per_ip,
            heartbeat,
            outbound_queue,
            outbound_queue_bytes,
            allowed_origins,
            shutdown_timeout,
            ws_read_buffer,
            ws_write_buffer,
            handshake_timeout,
            max_json_depth,
            durable_max_event_bytes,
            durable_events_per_min,
            durable_bytes_per_min,
            history_page_bytes,
            otp_guesses_per_day,
            api_requests_per_min,
            close_linger,
            write_timeout,
            echo_path,
            proxy_protocol,
            admin_listen,
            log_format,
            rust_log,
            listen_backlog,
            join_leave_max_members,
            redis_url,
            redis_prefix,
            redis_flush,
            presence_ttl,
            api_key,
            max_connections,
            drain_delay,
            drain_spread,
            reuseport,
            database_url,
            access_ttl_secs,
            refresh_ttl_secs,
            hash_concurrency,
            auth_attempts_per_min,
            auth_attempts_per_address_per_min,
            auth_attempts_per_account_per_hour,
            register_per_hour,
            smtp_url,
            smtp_from,
            redirect_allowlist,
            login_code_ttl_secs,
            durable_namespaces,
            replay_max,
            history_ttl_secs,
            history_max,
            retention_interval,
            durable_batch_max,
            durable_queue,
            durable_queue_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every variable is read, described by `syncgate check-config` and listed in the README's
    /// table with its default: the key constants, `describe()` and the README cannot drift apart.
    #[test]
    fn every_key_is_read_described_and_documented() {
        let source = include_str!("config.rs");
        let readme = include_str!("../README.md");
        let keys: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
            .collect();
        assert!(keys.len() > 60, "{keys:?}");
        let described: Vec<&str> = Config::default().describe().into_iter().map(|(k, _)| k).collect();
        let code = source.split("#[cfg(test)]").next().unwrap_or("");
        for key in &keys {
            let constant = source
                .lines()
                .find(|l| l.starts_with("pub const ") && l.contains(&format!("\"{key}\"")))
                .and_then(|l| l.strip_prefix("pub const ")?.split(':').next())
                .unwrap_or("");
            // Read: the constant is used somewhere besides its definition.
            assert!(code.matches(constant).count() >= 2, "{key} ({constant}) is never read");
            assert!(described.contains(key), "{key} is missing from check-config (describe)");
            assert!(readme.contains(&format!("| `{key}` |")), "{key} is missing from the README table");
        }
    }

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.key_source, KeySource::Generated);
        assert_eq!(c.max_message_bytes, 1 << 20);
        assert_eq!(c.messages_per_min, 300);
        assert_eq!(c.max_connections_per_user, 20);
        assert_eq!(c.heartbeat, Duration::from_millis(25_000));
    }

    #[test]
    fn every_bad_variable_is_named() {
        let err = Config::from_map(&map(&[
            (LISTEN, "nope"),
            (JWT_SECRET, "short"),
            (HEARTBEAT_MS, "-5"),
            (LOG_FORMAT, "xml"),
            (RUST_LOG, "info,[{"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for key in [LISTEN, JWT_SECRET, HEARTBEAT_MS, LOG_FORMAT, RUST_LOG] {
            assert!(text.contains(key), "{key} missing from {text}");
        }
    }

    #[test]
    fn jwks_url_is_https_or_loopback() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8081/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost:9000/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(Config::from_map(&map(&[(JWKS_URL, ok)])).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.evil.com/jwks",
            "http://localhost.evil.com/jwks",
            "ftp://x/jwks",
        ] {
            let e = Config::from_map(&map(&[(JWKS_URL, bad)])).unwrap_err().to_string();
            assert!(e.contains(JWKS_URL), "{bad}: {e}");
        }
    }

    #[test]
    fn hostile_input_knobs() {
        let c = Config::from_map(&HashMap::new()).unwrap();
        assert_eq!(
            (c.max_json_depth, c.close_linger, c.write_timeout, c.echo_path.as_deref()),
            (128, Duration::from_millis(2000), Duration::from_millis(10_000), None)
        );
        let err = Config::from_map(&map(&[
            (MAX_JSON_DEPTH, "5000"),
            (CLOSE_LINGER_MS, "soon"),
            (WRITE_TIMEOUT_MS, "0"),
            (ECHO_PATH, "/ws"),
        ]))
        .unwrap_err()
        .to_string();
        for key in [MAX_JSON_DEPTH, CLOSE_LINGER_MS, WRITE_TIMEOUT_MS, ECHO_PATH] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
        assert!(Config::from_map(&map(&[(ECHO_PATH, "echo")])).is_err());
        let c = Config::from_map(&map(&[(ECHO_PATH, "/echo"), (MAX_JSON_DEPTH, "512")])).unwrap();
        assert_eq!((c.echo_path.as_deref(), c.max_json_depth), (Some("/echo"), 512));
    }

    #[test]
    fn debug_output_is_masked() {
        let c = Config::from_map(&map(&[
            (JWT_SECRET, "a-very-secret-value-of-enough-length"),
            (API_KEY, "api-key-value-0123456789"),
            (REDIS_URL, "redis://u:hunter2@127.0.0.1:6379"),
        ]))
        .unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("a-very-secret") && !d.contains("api-key-value") && !d.contains("hunter2"), "{d}");
        assert!(d.contains("SYNCGATE_LISTEN"));
    }

    #[test]
    fn durable_settings() {
        let c = Config::default();
        assert_eq!(c.durable_namespaces, vec!["dm".to_string()]);
        assert_eq!((c.replay_max, c.retention_interval), (1000, Duration::from_secs(10)));
        let c = Config::from_map(&map(&[(DURABLE_NAMESPACES, "dm, user"), (HISTORY_MAX, "0")])).unwrap();
        assert_eq!(c.durable_namespaces, vec!["dm".to_string(), "user".to_string()]);
        assert_eq!(c.history_max, 0);
        assert!(Config::from_map(&map(&[(DURABLE_NAMESPACES, "none")])).unwrap().durable_namespaces.is_empty());
        assert!(Config::from_map(&map(&[(DURABLE_NAMESPACES, "")])).unwrap().durable_namespaces.is_empty());
        assert!(Config::from_map(&map(&[(DURABLE_NAMESPACES, " ")])).unwrap().durable_namespaces.is_empty());
        assert_eq!(Config::default().durable_namespaces, vec!["dm".to_string()]);
        let err = Config::from_map(&map(&[
            (DURABLE_NAMESPACES, "dm,a:b"),
            (REPLAY_MAX, "0"),
            (HISTORY_TTL_SECS, "soon"),
            (RETENTION_INTERVAL_SECS, "0"),
            (DURABLE_BATCH_MAX, "x"),
            (DURABLE_QUEUE, "-1"),
            (DURABLE_QUEUE_BYTES, "10"),
        ]))
        .unwrap_err()
        .to_string();
        for key in [
            DURABLE_NAMESPACES,
            REPLAY_MAX,
            HISTORY_TTL_SECS,
            RETENTION_INTERVAL_SECS,
            DURABLE_BATCH_MAX,
            DURABLE_QUEUE,
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn proxy_protocol_and_admin_listener() {
        let c = Config::default();
        assert_eq!((c.proxy_protocol, c.admin_listen), (ProxyProtocol::Off, None));
        let c = Config::from_map(&map(&[(PROXY_PROTOCOL, "v2"), (ADMIN_LISTEN, "127.0.0.1:9090")])).unwrap();
        assert_eq!((c.proxy_protocol, c.admin_listen), (ProxyProtocol::V2, Some("127.0.0.1:9090".parse().unwrap())));
        assert_eq!(Config::from_map(&map(&[(PROXY_PROTOCOL, "v1")])).unwrap().proxy_protocol, ProxyProtocol::V1);
        let err = Config::from_map(&map(&[(PROXY_PROTOCOL, "on"), (ADMIN_LISTEN, "9090")])).unwrap_err().to_string();
        for key in [PROXY_PROTOCOL, ADMIN_LISTEN] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
        let err = Config::from_map(&map(&[(LISTEN, "0.0.0.0:8080"), (ADMIN_LISTEN, "0.0.0.0:8080")])).unwrap_err();
        assert!(err.to_string().contains(ADMIN_LISTEN), "{err}");
    }

    #[test]
    fn quota_and_auth_limit_settings() {
        let c = Config::default();
        assert_eq!((c.durable_events_per_min, c.durable_bytes_per_min), (600, 16 << 20));
        assert_eq!(
            (c.auth_attempts_per_min, c.auth_attempts_per_address_per_min, c.auth_attempts_per_account_per_hour),
            (10, 60, 300)
        );
        let keys = [
            DURABLE_EVENTS_PER_MIN,
            DURABLE_BYTES_PER_MIN,
            AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN,
            AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR,
        ];
        let err = Config::from_map(&map(&[(keys[0], "0"), (keys[1], "lots"), (keys[2], "-1"), (keys[3], "1")]))
            .unwrap_err()
            .to_string();
        for key in keys {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn only_one_key_source() {
        let err = Config::from_map(&map(&[
            (JWT_SECRET, "0123456789abcdef0123456789abcdef"),
            (JWKS_URL, "http://127.0.0.1:1/jwks"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains(JWKS_URL));
    }
}
