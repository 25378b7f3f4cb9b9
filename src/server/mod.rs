//! Accept loop, shared state and two-step shutdown: `run(listener, config, shutdown)` is the
//! injectable entry point used by `main` and by the tests.

pub(crate) mod middleware;
pub mod proxy;
mod router;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{KeyError, Verifier};
use crate::bus::{Bus, LocalBus, RedisBus, RedisSettings};
use crate::config::{Config, ProxyProtocol};
use crate::limits::IpLimiter;
use crate::registry::{Registry, Stats};

/// Every (method, path) the router serves; the OpenAPI test checks each is documented.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ws"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/register"),
    ("POST", "/login"),
    ("POST", "/token/refresh"),
    ("POST", "/logout"),
    ("POST", "/change-password"),
    ("POST", "/forgot-password"),
    ("POST", "/reset-password"),
    ("GET", "/api/devices"),
    ("DELETE", "/api/devices/{id}"),
    ("GET", "/api/users/search"),
    ("GET", "/api/history"),
    ("GET", "/api/conversation"),
    ("GET", "/api/conversations"),
    ("POST", "/api/publish"),
    ("POST", "/api/disconnect"),
    ("GET", "/api/status"),
    ("GET", "/api/openapi.json"),
    ("GET", "/login-client"),
    ("POST", "/login-client"),
    ("POST", "/login-client/token"),
];

/// Everything a request or connection task needs; shared behind one `Arc`.
pub struct AppState {
    pub config: Config,
    pub verifier: Verifier,
    pub registry: Arc<Registry>,
    /// In-process or Redis; every publish goes through it.
    pub bus: Arc<dyn Bus>,
    pub stats: Arc<Stats>,
    pub ip_limiter: Option<IpLimiter>,
    pub ws_config: WebSocketConfig,
    /// Random per-process prefix so connection ids are unique across instances.
    pub instance: String,
    next_conn: AtomicU64,
    /// Flips to `true` when the server shuts down; every connection watches it.
    pub shutdown: watch::Receiver<bool>,
    /// Set on the first SIGTERM: `/ready` answers 503 while connections are still served.
    pub draining: std::sync::atomic::AtomicBool,
    pub metrics: crate::metrics::Metrics,
    /// Accounts, refresh tokens, devices (SQLite or PostgreSQL).
    pub store: crate::store::Store,
    pub hasher: crate::auth::password::Hasher,
    pub devices: Arc<crate::devices::Devices>,
    pub mailer: Option<Arc<crate::mail::Mailer>>,
    /// Login, forgot and reset attempts per (address, account), per address and per account.
    pub auth_attempts: crate::limits::AuthLimiter,
    /// Registrations per IP.
    pub registrations: crate::limits::AttemptLimiter,
    /// Read-API requests per user (`SYNCGATE_API_REQUESTS_PER_MIN`).
    pub api_requests: crate::limits::AttemptLimiter,
    /// Durable streams (sequenced, stored channels).
    pub durable: Arc<crate::durable::Durable>,
    /// Connections admitted (upgrade accepted) and not yet finished: the `SYNCGATE_MAX_CONNECTIONS` gauge.
    pub admitted: Arc<AtomicU64>,
    /// Open connections per client address on this instance (`/api/status`).
    pub addresses: Arc<middleware::ClientAddresses>,
    /// Each connection task holds a clone; shutdown waits until all are dropped.
    pub(crate) alive: mpsc::Sender<()>,
}

impl AppState {
    /// What `/ready` says: serving, not draining, and every required backend reachable.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && !*self.shutdown.borrow() && self.bus.healthy()
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Bus(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

fn ws_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer)
        .write_buffer_size(config.ws_write_buffer)
        // Our own bounded queue holds the backlog; tungstenite's buffer only batches one flush.
        .max_write_buffer_size(config.ws_write_buffer + config.max_message_bytes + (64 << 10))
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

/// Binds the listening socket with `SO_REUSEADDR` and the configured backlog (the kernel caps it
/// at `net.core.somaxconn`; a short backlog drops SYNs during connect storms).
pub fn bind(config: &Config) -> std::io::Result<TcpListener> {
    let socket =
        if config.listen.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if config.reuseport {
        // Several processes share the port; the kernel spreads new connections between them.
        socket.set_reuseport(true)?;
    }
    socket.bind(config.listen)?;
    socket.listen(config.listen_backlog)
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// Every route; the PROXY header `SYNCGATE_PROXY_PROTOCOL` asks for.
    Main,
    /// `SYNCGATE_ADMIN_LISTEN`: health, readiness, metrics and status only; no PROXY header.
    Admin,
}

async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves `listener` until `shutdown` resolves, then closes every connection with 1001 and waits
/// (at most `SYNCGATE_SHUTDOWN_TIMEOUT_MS`) for them to finish. With `SYNCGATE_ADMIN_LISTEN` a
/// second listener is bound here and served until the same moment.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let verifier = Verifier::new(&config)?;
    let admin = match config.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    if verifier.development {
        tracing::warn!(
            dir = %config.data_dir.display(),
            "DEVELOPMENT SET-UP: no SYNCGATE_JWT_SECRET, SYNCGATE_JWT_PUBLIC_KEY or SYNCGATE_JWKS_URL; \
             using a generated HS256 secret kept in the data directory. Configure a key for production."
        );
    }
    let mut background = Vec::new();
    if let Some(jwks) = verifier.jwks() {
        if let Err(e) = jwks.refresh_now().await {
            tracing::warn!(error = %e, "JWKS not reachable at start; will retry on demand and every refresh interval");
        }
        background.push(tokio::spawn(jwks.clone().run_refresher()));
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let store = crate::store::Store::open(&config).await?;
    let mailer = match &config.smtp_url {
        Some(url) => Some(Arc::new(crate::mail::Mailer::new(url, &config.smtp_from).map_err(StartError::Bus)?)),
        None => None,
    };
    tracing::info!(backend = ?store.backend, "store ready");
    let stats = Arc::new(Stats::default());
    let registry = Arc::new(Registry::with_join_leave_limit(config.join_leave_max_members));
    let devices = crate::devices::Devices::start(store.clone(), &registry).await?;
    let bus: Arc<dyn Bus> = match &config.redis_url {
        None => Arc::new(LocalBus::new(registry.clone())),
        Some(url) => {
            let settings = RedisSettings {
                url: url.clone(),
                prefix: config.redis_prefix.clone(),
                flush: config.redis_flush,
                presence_ttl: config.presence_ttl,
                max_json_depth: config.max_json_depth,
            };
            let redis = RedisBus::start(settings, registry.clone()).await.map_err(StartError::Bus)?;
            registry.set_hooks(redis.clone());
            redis.report_connections(stats.clone());
            tracing::info!(instance = redis.instance, "Redis bus");
            redis
        }
    };
    let (durable, durable_tasks) =
        crate::durable::Durable::start(&config, store.clone(), bus.clone(), registry.clone());
    background.extend(durable_tasks);
    let state = Arc::new(AppState {
        durable,
        ip_limiter: (config.connect_rate_per_ip > 0).then(|| IpLimiter::new(config.connect_rate_per_ip)),
        ws_config: ws_config(&config),
        instance: crate::util::random_hex(4),
        verifier,
        registry,
        bus,
        stats,
        next_conn: AtomicU64::new(0),
        draining: std::sync::atomic::AtomicBool::new(false),
        metrics: crate::metrics::Metrics::default(),
        store,
        devices: devices.clone(),
        mailer,
        auth_attempts: crate::limits::AuthLimiter::new(
            config.auth_attempts_per_min,
            config.auth_attempts_per_address_per_min,
            config.auth_attempts_per_account_per_hour,
        ),
        registrations: crate::limits::AttemptLimiter::new(config.register_per_hour, Duration::from_secs(3600)),
        api_requests: crate::limits::AttemptLimiter::new(config.api_requests_per_min, Duration::from_secs(60)),
        hasher: crate::auth::password::Hasher::new(config.hash_concurrency),
        admitted: Arc::new(AtomicU64::new(0)),
        addresses: Arc::default(),
        shutdown: shutdown_rx,
        alive: alive_tx,
        config,
    });
    {
        let s = state.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let now = Instant::now();
                if let Some(l) = &s.ip_limiter {
                    l.sweep(now);
                }
                s.auth_attempts.sweep(now);
                s.registrations.sweep(now);
                s.api_requests.sweep(now);
            }
        }));
    }
    if let Some(path) = &state.config.echo_path {
        tracing::warn!(
            %path,
            "SYNCGATE_ECHO_PATH is set: an unauthenticated echo endpoint is open (for conformance runs only)"
        );
    }
    tracing::info!(addr = %listener.local_addr()?, proxy_protocol = ?state.config.proxy_protocol, "syncgate listening");
    if let Some(a) = &admin {
        tracing::info!(admin_addr = %a.local_addr()?, "admin listener: /health /ready /metrics /api/status");
    } else if state.config.proxy_protocol != ProxyProtocol::Off {
        tracing::warn!(
            "SYNCGATE_PROXY_PROTOCOL is set and SYNCGATE_ADMIN_LISTEN is not: health checks must send the PROXY header too"
        );
    }

    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    // After the first signal: /ready answers 503 at once while connections are still served
    // (and accepted) until the load balancer has noticed.
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let drained = async {
            match drain_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown, if drain_until.is_none() => {
                state.draining.store(true, Ordering::Relaxed);
                tracing::info!(delay_ms = state.config.drain_delay.as_millis() as u64, "draining: /ready is 503");
                drain_until = Some(tokio::time::Instant::now() + state.config.drain_delay);
            }
            _ = drained => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let _ = stream.set_nodelay(true);
                    spawn_connection(state.clone(), stream, peer, Listener::Main);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, never stop accepting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            },
            accepted = accept_on(admin.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    spawn_connection(state.clone(), stream, peer, Listener::Admin);
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning, never stop accepting.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    drop(listener);
    drop(admin);
    let _ = shutdown_tx.send(true);
    // Close with 1001, spread over the window so clients do not reconnect all at once.
    let conns = state.registry.all_conns();
    let spread = state.config.drain_spread;
    tracing::info!(connections = conns.len(), spread_ms = spread.as_millis() as u64, "closing connections with 1001");
    let start = tokio::time::Instant::now();
    let n = conns.len().max(1) as u32;
    for (i, c) in conns.iter().enumerate() {
        if !spread.is_zero() {
            tokio::time::sleep_until(start + spread * i as u32 / n).await;
        }
        c.close(crate::error::CloseReason::GoingAway);
    }
    drop(conns);
    // Connections that registered meanwhile see the flag in their open phase; sweep once more.
    state.registry.close_all(crate::error::CloseReason::GoingAway);
    let timeout = state.config.shutdown_timeout;
    // Read positions acknowledged so far are written before the background tasks stop.
    state.durable.flush_positions().await;
    for task in background {
        task.abort();
    }
    let alive = state.alive.clone();
    drop(state);
    drop(alive);
    if tokio::time::timeout(timeout, alive_rx.recv()).await.is_err() {
        tracing::warn!("shutdown timeout reached with connections still open");
    }
    Ok(())
}

/// One accepted socket's task: the PROXY header first when the main listener expects one (a
/// missing or malformed header closes the connection, counted), then HTTP with the client address
/// it carried as the peer.
fn spawn_connection(state: Arc<AppState>, stream: TcpStream, peer: SocketAddr, on: Listener) {
    tokio::spawn(async move {
        let alive = state.alive.clone();
        let mode = state.config.proxy_protocol;
        if on == Listener::Admin || mode == ProxyProtocol::Off {
            serve_connection(&state, stream, peer, on).await;
        } else {
            let mut shutdown = state.shutdown.clone();
            let mut stream = stream;
            let header = tokio::select! {
                h = tokio::time::timeout(state.config.handshake_timeout, proxy::read_header(&mut stream, mode)) => {
                    h.unwrap_or(Err(proxy::ProxyError::Timeout))
                }
                _ = crate::shutdown::stopping(&mut shutdown) => return,
            };
            match header {
                Ok((rest, source)) => {
                    serve_connection(&state, proxy::Proxied::new(rest, stream), source.unwrap_or(peer), on).await
                }
                // Connect-and-close (a TCP health check) sent no header to refuse.
                Err(proxy::ProxyError::Empty) => {}
                Err(e) => {
                    state.metrics.proxy_header_rejected.inc();
                    tracing::debug!(%peer, error = %e, "PROXY header refused; connection closed");
                }
            }
        }
        drop(alive);
    });
}

async fn serve_connection<I>(state: &Arc<AppState>, io: I, peer: SocketAddr, on: Listener)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = state.shutdown.clone();
    let handshake_timeout = state.config.handshake_timeout;
    let svc_state = state.clone();
    let service = service_fn(move |req| {
        let state = svc_state.clone();
        async move {
            match on {
                Listener::Main => router::route(state, peer, req).await,
                Listener::Admin => router::route_admin(state, peer, req).await,
            }
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                if e.is_timeout() {
                    // Slowloris: the request head did not arrive within the handshake timeout.
                    state.metrics.handshake_timeouts.inc();
                }
                tracing::debug!(%peer, error = %e, "http connection error");
            }
        }
        _ = crate::shutdown::stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
