//! The gateway's shared state and its construction: [`AppState::build`] opens the store,
//! starts the bus (in-process or Redis), the device writer, the durable writer and the limiter
//! sweeper, and returns the state with every background task it started, so whoever serves it
//! (`server::run`) stops them all when it returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{KeyError, Verifier};
use crate::bus::{Bus, LocalBus, RedisBus, RedisSettings};
use crate::config::Config;
use crate::limits::IpLimiter;
use crate::registry::{Registry, Stats};

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
    pub instance: crate::util::InstanceId,
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
    pub addresses: Arc<crate::limits::ClientAddresses>,
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

fn ws_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.listener.ws_read_buffer)
        .write_buffer_size(config.listener.ws_write_buffer)
        // Our own bounded queue holds the backlog; tungstenite's buffer only batches one flush.
        .max_write_buffer_size(config.listener.ws_write_buffer + config.limits.max_message_bytes + (64 << 10))
        .max_message_size(Some(config.limits.max_message_bytes))
        .max_frame_size(Some(config.limits.max_message_bytes))
}

/// Start-up failures, each with its own type.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The Redis bus could not start.
    #[error("redis: {0}")]
    Bus(String),
    /// `SYNCGATE_SMTP_URL` / `SYNCGATE_SMTP_FROM` do not make a mailer.
    #[error("mail: {0}")]
    Mail(String),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl AppState {
    /// Builds the state from the configuration and starts the background tasks, returned so the
    /// caller stops them (`server::run` aborts them after the connections are closed).
    pub async fn build(
        config: Config,
        shutdown_rx: watch::Receiver<bool>,
        alive_tx: mpsc::Sender<()>,
    ) -> Result<(Arc<AppState>, Vec<JoinHandle<()>>), StartError> {
        let verifier = Verifier::new(&config)?;
        let instance = crate::util::InstanceId::random();
        if verifier.development {
            tracing::warn!(
                dir = %config.store.data_dir.display(),
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
        let store = crate::store::Store::open(&config).await?;
        let mailer = match &config.accounts.smtp_url {
            Some(url) => {
                Some(Arc::new(crate::mail::Mailer::new(url, &config.accounts.smtp_from).map_err(StartError::Mail)?))
            }
            None => None,
        };
        tracing::info!(backend = ?store.backend, "store ready");
        let stats = Arc::new(Stats::default());
        let registry = Arc::new(Registry::with_join_leave_limit(config.limits.join_leave_max_members));
        let devices = crate::devices::Devices::start(store.clone(), &registry).await?;
        let bus: Arc<dyn Bus> = match &config.redis.url {
            None => Arc::new(LocalBus::new(registry.clone())),
            Some(url) => {
                let settings = RedisSettings {
                    url: url.clone(),
                    prefix: config.redis.prefix.clone(),
                    flush: config.redis.flush,
                    presence_ttl: config.redis.presence_ttl,
                    max_json_depth: config.limits.max_json_depth,
                };
                let redis = RedisBus::start_as(settings, registry.clone(), instance).await.map_err(StartError::Bus)?;
                registry.set_hooks(redis.clone());
                redis.report_connections(stats.clone());
                tracing::info!(instance = %redis.instance, "Redis bus");
                redis
            }
        };
        let (durable, durable_tasks) =
            crate::durable::Durable::start(&config, store.clone(), bus.clone(), registry.clone());
        background.extend(durable_tasks);
        let state = Arc::new(AppState {
            durable,
            ip_limiter: (config.limits.connect_rate_per_ip > 0)
                .then(|| IpLimiter::new(config.limits.connect_rate_per_ip)),
            ws_config: ws_config(&config),
            instance,
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
                config.accounts.auth_attempts_per_min,
                config.accounts.auth_attempts_per_address_per_min,
                config.accounts.auth_attempts_per_account_per_hour,
            ),
            registrations: crate::limits::AttemptLimiter::new(
                config.accounts.register_per_hour,
                Duration::from_secs(3600),
            ),
            api_requests: crate::limits::AttemptLimiter::new(
                config.limits.api_requests_per_min,
                Duration::from_secs(60),
            ),
            hasher: crate::auth::password::Hasher::new(config.accounts.hash_concurrency),
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
        Ok((state, background))
    }
}

impl AppState {
    /// The whole `/metrics` page: every layer's series, read from the state.
    pub fn render_metrics(&self) -> String {
        use crate::metrics::*;
        let state = self;
        let m = &state.metrics;
        let s = &state.stats;
        let mut out = String::with_capacity(8192);
        single(
            &mut out,
            "syncgate_connections",
            "Open WebSocket connections.",
            "gauge",
            s.open_connections.load(Ordering::Relaxed),
        );
        labeled(
            &mut out,
            "syncgate_connects_total",
            "Connection attempts by result.",
            "counter",
            "result",
            CONNECT_RESULTS.iter().zip(&m.connects).map(|(l, c)| (l.to_string(), c.get())),
        );
        labeled(
            &mut out,
            "syncgate_disconnects_total",
            "Closed connections by close code (1006: the peer vanished).",
            "counter",
            "code",
            CLOSE_CODES
                .iter()
                .map(|c| c.to_string())
                .chain(std::iter::once("other".to_string()))
                .zip(&m.disconnects)
                .map(|(l, c)| (l, c.get())),
        );
        labeled(
            &mut out,
            "syncgate_frames_in_total",
            "Frames received by type.",
            "counter",
            "type",
            FRAME_IN_TYPES.iter().zip(&m.frames_in).map(|(l, c)| (l.to_string(), c.get())),
        );
        labeled(
            &mut out,
            "syncgate_frames_out_total",
            "Frames written by type.",
            "counter",
            "type",
            FRAME_OUT_TYPES.iter().zip(&m.frames_out).map(|(l, c)| (l.to_string(), c.get())),
        );
        single(&mut out, "syncgate_bytes_in_total", "Payload bytes received.", "counter", m.bytes_in.get());
        single(&mut out, "syncgate_bytes_out_total", "Payload bytes written.", "counter", m.bytes_out.get());
        single(
            &mut out,
            "syncgate_deliveries_total",
            "Frames handed to recipients' queues.",
            "counter",
            state.registry.deliveries(),
        );
        m.fanout_seconds.render(
            &mut out,
            "syncgate_fanout_seconds",
            "Publish to every recipient enqueued, in seconds.",
        );
        single(
            &mut out,
            "syncgate_slow_consumer_disconnects_total",
            "Connections closed with 1013 (outbound queue overflow or stalled writes).",
            "counter",
            s.slow_consumer_closes.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "syncgate_write_timeouts_total",
            "Connections closed because the socket accepted no byte for SYNCGATE_WRITE_TIMEOUT_MS while frames waited.",
            "counter",
            m.write_timeouts.get(),
        );
        single(
            &mut out,
            "syncgate_handshake_timeouts_total",
            "HTTP connections cut for not finishing a request or upgrade within SYNCGATE_HANDSHAKE_TIMEOUT_MS.",
            "counter",
            m.handshake_timeouts.get(),
        );
        single(
            &mut out,
            "syncgate_proxy_header_rejected_total",
            "Connections closed for a missing, malformed or late PROXY protocol header (SYNCGATE_PROXY_PROTOCOL).",
            "counter",
            m.proxy_header_rejected.get(),
        );
        single(
            &mut out,
            "syncgate_rate_limited_messages_total",
            "Messages dropped by the per-connection rate limit.",
            "counter",
            m.rate_limited.get(),
        );
        labeled(
            &mut out,
            "syncgate_auth_failures_total",
            "Authentication failures by reason.",
            "counter",
            "reason",
            AUTH_REASONS.iter().zip(&m.auth_failures).map(|(l, c)| (l.to_string(), c.get())),
        );
        single(&mut out, "syncgate_ready", "1 while /ready answers 200.", "gauge", u8::from(state.ready()));
        single(&mut out, "syncgate_uptime_seconds", "Seconds since start.", "gauge", m.uptime_secs());
        state.bus.metrics(&mut out);
        state.durable.render_metrics(&mut out);
        process(&mut out);
        out
    }
}
