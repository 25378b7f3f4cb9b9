//! The listener and the process around it: addresses, PROXY header, socket options, handshake
//! and WebSocket buffers, allowed origins, the echo endpoint, shutdown and drain, and logging.

use std::net::SocketAddr;
use std::time::Duration;

use super::reader::Reader;
use super::{ms, opt};

/// Listen address of the main listener.
pub const LISTEN: &str = "SYNCGATE_LISTEN";
/// Which PROXY protocol header every connection on the main listener starts with (`off`, `v1`, `v2`).
pub const PROXY_PROTOCOL: &str = "SYNCGATE_PROXY_PROTOCOL";
/// Second address serving only health, readiness, metrics and status (no PROXY header).
pub const ADMIN_LISTEN: &str = "SYNCGATE_ADMIN_LISTEN";
/// Listen backlog (capped by `net.core.somaxconn`).
pub const LISTEN_BACKLOG: &str = "SYNCGATE_LISTEN_BACKLOG";
/// `1`: bind with `SO_REUSEPORT`.
pub const REUSEPORT: &str = "SYNCGATE_REUSEPORT";
/// Time to send a whole HTTP request head (and, for the HTTP API, its body).
pub const HANDSHAKE_TIMEOUT_MS: &str = "SYNCGATE_HANDSHAKE_TIMEOUT_MS";
/// Origins allowed at the upgrade and by the HTTP API's CORS answers (comma list, `*` for any).
pub const ALLOWED_ORIGINS: &str = "SYNCGATE_ALLOWED_ORIGINS";
/// Initial read buffer per connection, bytes.
pub const WS_READ_BUFFER: &str = "SYNCGATE_WS_READ_BUFFER";
/// Bytes batched before a socket write while flushing a queue.
pub const WS_WRITE_BUFFER: &str = "SYNCGATE_WS_WRITE_BUFFER";
pub const ALLOC_COLLECT_MS: &str = "SYNCGATE_ALLOC_COLLECT_MS";
/// Path of the unauthenticated echo endpoint for conformance runs.
pub const ECHO_PATH: &str = "SYNCGATE_ECHO_PATH";
/// After the 1001 closes, how long to wait for connections to finish.
pub const SHUTDOWN_TIMEOUT_MS: &str = "SYNCGATE_SHUTDOWN_TIMEOUT_MS";
/// After SIGTERM: how long to keep serving with `/ready` 503.
pub const DRAIN_DELAY_MS: &str = "SYNCGATE_DRAIN_DELAY_MS";
/// The window over which connections are then closed with 1001.
pub const DRAIN_SPREAD_MS: &str = "SYNCGATE_DRAIN_SPREAD_MS";
/// Log format: `text` or `json`.
pub const LOG_FORMAT: &str = "SYNCGATE_LOG_FORMAT";
/// The log filter (tracing's `EnvFilter` syntax, e.g. `info,syncgate=debug`).
pub const RUST_LOG: &str = "RUST_LOG";

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

/// `SYNCGATE_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where and how connections are accepted, and how the process shuts down and logs.
#[derive(Clone)]
pub struct ListenerConfig {
    /// The main listener's address.
    pub listen: SocketAddr,
    /// PROXY protocol header expected on the main listener; its client address is the peer.
    pub proxy_protocol: ProxyProtocol,
    /// Second listener (no PROXY header) serving only health, readiness, metrics and status.
    pub admin_listen: Option<SocketAddr>,
    /// Listen backlog asked of the kernel.
    pub listen_backlog: u32,
    /// Bind with `SO_REUSEPORT`.
    pub reuseport: bool,
    /// Time allowed for a request head (the upgrade included) and an HTTP API body.
    pub handshake_timeout: Duration,
    /// Allowed `Origin`s (`*` for any; empty: any at the upgrade, no CORS); see `Config::origin_allowed`.
    pub allowed_origins: Vec<String>,
    /// Initial read buffer per connection.
    pub ws_read_buffer: usize,
    /// Bytes batched before a socket write.
    pub ws_write_buffer: usize,
    /// A worker thread going idle gives its free allocator pages back, at most this often
    /// (`None`: never; the allocator then keeps a burst's peak until the thread is busy again).
    pub alloc_collect: Option<Duration>,
    /// Unauthenticated echo endpoint for conformance runs (`None`: off).
    pub echo_path: Option<String>,
    /// After the 1001 closes, the longest wait for connections to finish.
    pub shutdown_timeout: Duration,
    /// After SIGTERM, how long `/ready` answers 503 before connections are closed.
    pub drain_delay: Duration,
    /// The window over which connections are closed with 1001.
    pub drain_spread: Duration,
    pub log_format: LogFormat,
    /// `RUST_LOG`, validated (the binary builds its log filter from it; `info` when unset).
    pub rust_log: Option<String>,
}

impl ListenerConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let listen = r.parse(LISTEN, SocketAddr::from(([0, 0, 0, 0], 8080)), "an address like 0.0.0.0:8080");
        let allowed_origins = r.list(ALLOWED_ORIGINS);
        let shutdown_timeout = Duration::from_millis(r.ranged(SHUTDOWN_TIMEOUT_MS, 10_000, 0, 600_000));
        let ws_read_buffer = r.ranged(WS_READ_BUFFER, 512, 128, 1 << 20) as usize;
        let ws_write_buffer = r.ranged(WS_WRITE_BUFFER, 64 * 1024, 0, 16 << 20) as usize;
        let alloc_collect = match r.ranged(ALLOC_COLLECT_MS, 100, 0, 3_600_000) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        };
        let handshake_timeout = Duration::from_millis(r.ranged(HANDSHAKE_TIMEOUT_MS, 10_000, 1, 600_000));
        let echo_path = echo_path(r);
        let proxy_protocol = proxy_protocol(r);
        let admin_listen = admin_listen(r, listen);
        let drain_delay = Duration::from_millis(r.ranged(DRAIN_DELAY_MS, 0, 0, 3_600_000));
        let drain_spread = Duration::from_millis(r.ranged(DRAIN_SPREAD_MS, 0, 0, 3_600_000));
        let reuseport = r.flag(REUSEPORT, false);
        let listen_backlog = r.ranged(LISTEN_BACKLOG, 4096, 1, 1 << 20) as u32;
        let log_format = match r.raw(LOG_FORMAT) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                r.error(format!("{LOG_FORMAT}={other:?} must be one of: text, json"));
                LogFormat::Text
            }
        };
        // The log filter is read by the binary, but a bad one stops start-up like any bad value.
        let rust_log = r.raw(RUST_LOG).map(str::to_string);
        if let Some(filter) = r.raw(RUST_LOG).filter(|f| !f.trim().is_empty()) {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(filter) {
                r.error(format!("{RUST_LOG}={filter:?} is not a valid log filter: {e}"));
            }
        }
        ListenerConfig {
            listen,
            proxy_protocol,
            admin_listen,
            listen_backlog,
            reuseport,
            handshake_timeout,
            allowed_origins,
            ws_read_buffer,
            ws_write_buffer,
            alloc_collect,
            echo_path,
            shutdown_timeout,
            drain_delay,
            drain_spread,
            log_format,
            rust_log,
        }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        rows.extend([
            (LISTEN, self.listen.to_string()),
            (PROXY_PROTOCOL, format!("{:?}", self.proxy_protocol).to_lowercase()),
            (ADMIN_LISTEN, self.admin_listen.map(|a| a.to_string()).unwrap_or_else(|| "(unset: off)".into())),
            (LISTEN_BACKLOG, self.listen_backlog.to_string()),
            (REUSEPORT, u8::from(self.reuseport).to_string()),
            (HANDSHAKE_TIMEOUT_MS, ms(self.handshake_timeout)),
            (ALLOWED_ORIGINS, self.allowed_origins.join(",")),
            (WS_READ_BUFFER, self.ws_read_buffer.to_string()),
            (WS_WRITE_BUFFER, self.ws_write_buffer.to_string()),
            (ALLOC_COLLECT_MS, self.alloc_collect.map(ms).unwrap_or_else(|| "0".into())),
            (ECHO_PATH, opt(&self.echo_path)),
            (SHUTDOWN_TIMEOUT_MS, ms(self.shutdown_timeout)),
            (DRAIN_DELAY_MS, ms(self.drain_delay)),
            (DRAIN_SPREAD_MS, ms(self.drain_spread)),
            (LOG_FORMAT, format!("{:?}", self.log_format).to_lowercase()),
            (RUST_LOG, self.rust_log.clone().unwrap_or_else(|| "info".into())),
        ]);
    }
}

/// `SYNCGATE_ECHO_PATH`: a path of its own, never one the router already serves.
fn echo_path(r: &mut Reader) -> Option<String> {
    let echo_path = r.raw(ECHO_PATH).map(str::to_string);
    if let Some(p) = &echo_path {
        let reserved = crate::routes::ROUTES.iter().any(|(_, route)| route == p);
        if !p.starts_with('/') || p.len() < 2 || p.contains(['?', '#', ' ']) || reserved {
            r.error(format!("{ECHO_PATH}={p:?} must be a path like /echo that no other route uses"));
        }
    }
    echo_path
}

fn proxy_protocol(r: &mut Reader) -> ProxyProtocol {
    match r.raw(PROXY_PROTOCOL) {
        None | Some("off") => ProxyProtocol::Off,
        Some("v1") => ProxyProtocol::V1,
        Some("v2") => ProxyProtocol::V2,
        Some(other) => {
            r.error(format!("{PROXY_PROTOCOL}={other:?} must be one of: off, v1, v2"));
            ProxyProtocol::Off
        }
    }
}

/// `SYNCGATE_ADMIN_LISTEN`: an address other than the main listener's (port 0 may repeat).
fn admin_listen(r: &mut Reader, listen: SocketAddr) -> Option<SocketAddr> {
    let v = r.raw(ADMIN_LISTEN)?;
    match v.parse::<SocketAddr>() {
        Ok(a) if a == listen && a.port() != 0 => {
            r.error(format!("{ADMIN_LISTEN}={v:?} must differ from {LISTEN}"));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            r.error(format!("{ADMIN_LISTEN}={v:?} is not an address like 127.0.0.1:9090"));
            None
        }
    }
}
