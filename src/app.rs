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
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Everything a request or connection task needs; shared behind one `Arc`.
pub struct AppState {
    pub config: Config,
    pub verifier: Verifier,
    /// The server's Ed25519 identity (`GET /api/server-key`).
    pub server_key: crate::auth::server_key::ServerKey,
    pub registry: Arc<Registry>,
    /// In-process or Redis; every publish goes through it.
    pub bus: Arc<dyn Bus>,
    pub ip_limiter: Option<IpLimiter>,
    pub ws_config: WebSocketConfig,
    /// Random per-process prefix so connection ids are unique across instances.
    pub instance: crate::util::InstanceId,
    next_conn: AtomicU64,
    /// Flips to `true` when the server shuts down; every connection watches it.
    pub shutdown: watch::Receiver<bool>,
    /// Set on the first SIGTERM: `/ready` answers 503 while connections are still served.
    pub draining: std::sync::atomic::AtomicBool,
    /// Every metric series; the registry's connection handles, the bus and the durable service
    /// hold clones.
    pub metrics: Arc<Metrics>,
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
    /// Pairing-code claims per client address (`SYNCGATE_PAIRING_CLAIMS_PER_MIN`).
    pub pairing_claims: crate::limits::AddressLimiter,
    /// Pairing-code claims from every address this minute, when the bus keeps no shared counter
    /// (`SYNCGATE_PAIRING_CLAIMS_GLOBAL_PER_MIN`).
    pub pairing_claims_here: crate::limits::MinuteCounter,
    /// Durable streams (sequenced, stored channels).
    pub durable: Arc<crate::durable::Durable>,
    /// Signed publishes' nonces, when the bus keeps no cluster-wide memory (purged every 5 s).
    pub nonces: crate::auth::signed::NonceCache,
    /// The authorization hook (`SYNCGATE_AUTHZ_URL`), when configured.
    pub authz: Option<crate::authz::Hook>,
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
    Bus(#[from] crate::bus::BusError),
    /// `SYNCGATE_SMTP_URL` / `SYNCGATE_SMTP_FROM` do not make a mailer.
    #[error("mail: {0}")]
    Mail(crate::mail::MailError),
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
        let mut background = Vec::new();
        let verifier = start_verifier(&config, &mut background).await?;
        let server_key =
            crate::auth::server_key::ServerKey::load(config.auth.server_key.as_deref(), &config.store.data_dir)?;
        let instance = crate::util::InstanceId::random();
        let store = crate::store::Store::open(&config).await?;
        let mailer = match &config.accounts.smtp_url {
            Some(url) => {
                Some(Arc::new(crate::mail::Mailer::new(url, &config.accounts.smtp_from).map_err(StartError::Mail)?))
            }
            None => None,
        };
        tracing::info!(backend = ?store.backend, "store ready");
        let metrics = Arc::new(Metrics::default());
        let authz = crate::authz::Hook::new(&config.authz, metrics.clone());
        let registry = Arc::new(Registry::with_join_leave_limit(config.limits.join_leave_max_members));
        let devices = crate::devices::Devices::start(store.clone(), &registry).await?;
        let bus = start_bus(&config, &registry, &metrics, instance).await?;
        let webhooks =
            crate::webhooks::Webhooks::start(&config.webhooks, &registry, bus.clone(), metrics.clone(), instance).map(
                |(w, tasks)| {
                    background.extend(tasks);
                    w
                },
            );
        let (durable, durable_tasks) = crate::durable::Durable::start(
            &config,
            store.clone(),
            bus.clone(),
            registry.clone(),
            metrics.clone(),
            webhooks.clone(),
        );
        background.extend(durable_tasks);
        let state = Arc::new(AppState {
            durable,
            ip_limiter: (config.limits.connect_rate_per_ip > 0)
                .then(|| IpLimiter::new(config.limits.connect_rate_per_ip)),
            ws_config: ws_config(&config),
            instance,
            verifier,
            server_key,
            registry,
            bus,
            next_conn: AtomicU64::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            metrics,
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
            pairing_claims: crate::limits::AddressLimiter::new(config.accounts.pairing_claims_per_min),
            pairing_claims_here: crate::limits::MinuteCounter::default(),
            hasher: crate::auth::password::Hasher::new(config.accounts.hash_concurrency),
            nonces: Default::default(),
            authz,
            admitted: Arc::new(AtomicU64::new(0)),
            addresses: Arc::default(),
            shutdown: shutdown_rx,
            alive: alive_tx,
            config,
        });
        background.push(spawn_limiter_sweeper(state.clone()));
        Ok((state, background))
    }
}

/// The token verifier; warns about the development set-up (no key configured). With a JWKS URL,
/// fetches the keys once now and starts their refresher (pushed to `background`).
async fn start_verifier(config: &Config, background: &mut Vec<JoinHandle<()>>) -> Result<Verifier, StartError> {
    let verifier = Verifier::new(config)?;
    if verifier.development {
        tracing::warn!(
            dir = %config.store.data_dir.display(),
            "DEVELOPMENT SET-UP: no SYNCGATE_JWT_SECRET, SYNCGATE_JWT_PUBLIC_KEY, SYNCGATE_JWKS_URL or SYNCGATE_OIDC_ISSUER; \
             using a generated HS256 secret kept in the data directory. Configure a key for production."
        );
    }
    if let Some(jwks) = verifier.jwks() {
        if let Err(e) = jwks.refresh_now().await {
            tracing::warn!(error = %e, "JWKS not reachable at start; will retry on demand and every refresh interval");
        }
        background.push(tokio::spawn(jwks.clone().run_refresher()));
    }
    Ok(verifier)
}

/// The in-process bus, or with `SYNCGATE_REDIS_URL` the Redis bus (also the registry's cluster
/// hooks and the reporter of this instance's connections).
async fn start_bus(
    config: &Config,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
    instance: crate::util::InstanceId,
) -> Result<Arc<dyn Bus>, StartError> {
    // The configuration parses REDIS_URL into `target` whenever it is set.
    Ok(match (&config.redis.url, &config.redis.target) {
        (None, _) | (_, None) => Arc::new(LocalBus::new(registry.clone())),
        (Some(url), Some(target)) => {
            let settings = RedisSettings {
                url: url.clone(),
                target: target.clone(),
                ca_file: config.redis.ca_file.clone(),
                prefix: config.redis.prefix.clone(),
                flush: config.redis.flush,
                presence_ttl: config.redis.presence_ttl,
                max_json_depth: config.limits.max_json_depth,
            };
            let redis = RedisBus::start_as(settings, registry.clone(), instance, metrics.clone())
                .await
                .map_err(StartError::Bus)?;
            registry.set_hooks(redis.clone());
            tracing::info!(instance = %redis.instance, "Redis bus");
            redis
        }
    })
}

/// Every 5 s, forgets the rate limiters' expired entries and the expired nonces.
fn spawn_limiter_sweeper(s: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
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
            s.pairing_claims.sweep(now);
            s.nonces.purge(crate::util::now_millis());
        }
    })
}

impl AppState {
    /// The whole `/metrics` page: the registry's series, with the figures read from live state.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&crate::metrics::Live {
            deliveries: self.registry.deliveries(),
            ready: self.ready(),
            // The Redis bus runs exactly when REDIS_URL is set; its `healthy` is both connections up.
            redis_up: self.config.redis.url.is_some().then(|| self.bus.healthy()),
            webhooks: self.config.webhooks.url.is_some(),
        })
    }
}
