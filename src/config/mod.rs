//! Typed configuration read once from the environment; every bad value is reported (all at
//! once, naming the variable) before the server starts.
//!
//! `Config` is made of one part per concern, each in its own file with its keys (a `pub const`
//! per variable, re-exported here so `config::LISTEN` keeps working), its documented fields, a
//! `read` through the shared error-collecting `Reader` (`reader.rs`) and a `describe` for
//! `syncgate check-config`:
//!
//! - `listener`: addresses, PROXY header, socket options, handshake and WebSocket buffers,
//!   allowed origins, echo endpoint, shutdown and drain, and the logging keys (`LOG_FORMAT`,
//!   `RUST_LOG`: they configure the process the listener runs in);
//! - `auth`: the JWT key source, JWKS, issuer/audience/leeway, auth timeout, server API key,
//!   public namespaces;
//! - `accounts`: token and login-code lifetimes, hashing, attempt limits, OTP, SMTP, redirects,
//!   devices per user;
//! - `limits`: message, connection, channel, rate, queue, write-timeout and JSON-depth limits;
//! - `durable`: durable streams; `redis`: the cluster bus; `store`: database and data directory;
//! - `signed`: signed frames (namespaces whose publishes carry the device key's signature);
//! - `authz`: channel authorization beyond the token (server-publish namespaces, the hook);
//! - `webhooks`: the webhook receiver, its secret, retries and queue.
//!
//! A check that needs two fields lives in the part holding both (one key source in `auth`,
//! admin address vs listen address in `listener`); none spans two parts today.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

mod accounts;
mod auth;
mod authz;
mod durable;
mod limits;
mod listener;
mod reader;
mod redis;
mod signed;
mod store;
mod webhooks;

pub use accounts::*;
pub use auth::*;
pub use authz::*;
pub use durable::*;
pub use limits::*;
pub use listener::*;
pub use redis::*;
pub use signed::*;
pub use store::*;
pub use webhooks::*;

use reader::Reader;

/// The whole configuration, one part per concern. Cloned once into the shared server state. Its
/// `Debug` output (and each part's) is the masked [`Config::describe`], so a stray `{:?}` never
/// prints a secret.
#[derive(Clone)]
pub struct Config {
    /// Where and how connections are accepted; shutdown, drain and logging.
    pub listener: ListenerConfig,
    /// Token verification, the server API key, public namespaces.
    pub auth: AuthConfig,
    /// Accounts, tokens and login limits.
    pub accounts: AccountsConfig,
    /// Per-instance, per-user and per-connection limits.
    pub limits: LimitsConfig,
    /// Durable streams.
    pub durable: DurableConfig,
    /// The Redis cluster bus.
    pub redis: RedisConfig,
    /// Database and data directory.
    pub store: StoreConfig,
    /// Signed frames.
    pub signed: SignedConfig,
    /// Channel authorization beyond the token.
    pub authz: AuthzConfig,
    /// Webhooks.
    pub webhooks: WebhookConfig,
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

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        Config::from_map(&vars)
    }

    /// Reads a map of variables (tests pass their own): every part reads its keys through one
    /// reader, so the error lists every bad variable of every part.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let mut r = Reader::new(vars);
        let config = Config {
            listener: ListenerConfig::read(&mut r),
            auth: AuthConfig::read(&mut r),
            accounts: AccountsConfig::read(&mut r),
            limits: LimitsConfig::read(&mut r),
            durable: DurableConfig::read(&mut r),
            redis: RedisConfig::read(&mut r),
            store: StoreConfig::read(&mut r),
            signed: SignedConfig::read(&mut r),
            authz: AuthzConfig::read(&mut r),
            webhooks: WebhookConfig::read(&mut r),
        };
        let errors = r.into_errors();
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Ok(config)
    }

    /// The effective configuration as (variable, value) rows, secrets masked, part by part.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let mut rows = Vec::new();
        self.listener.describe(&mut rows);
        self.auth.describe(&mut rows);
        self.accounts.describe(&mut rows);
        self.limits.describe(&mut rows);
        self.durable.describe(&mut rows);
        self.redis.describe(&mut rows);
        self.store.describe(&mut rows);
        self.signed.describe(&mut rows);
        self.authz.describe(&mut rows);
        self.webhooks.describe(&mut rows);
        rows
    }

    /// The namespace rules channel authorization applies ([`crate::channel::authorize`]).
    pub fn namespaces(&self) -> crate::channel::Namespaces<'_> {
        crate::channel::Namespaces {
            public: &self.auth.public_namespaces,
            server_publish: &self.authz.server_publish_namespaces,
        }
    }

    /// Whether `origin` is in `SYNCGATE_ALLOWED_ORIGINS` (`*` allows any; the comparison ignores
    /// case). The one origin rule: the upgrade and the HTTP API's CORS answers both use it.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.listener.allowed_origins.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    }
}

/// `Debug` as a map of the rows `describe` gives (secrets masked), for the whole and each part.
macro_rules! masked_debug {
    ($($part:ty),*) => {$(
        impl fmt::Debug for $part {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut rows = Vec::new();
                self.describe(&mut rows);
                f.debug_map().entries(rows.iter().map(|(k, v)| (k, v))).finish()
            }
        }
    )*};
}

masked_debug!(
    ListenerConfig,
    AuthConfig,
    AccountsConfig,
    LimitsConfig,
    DurableConfig,
    RedisConfig,
    StoreConfig,
    SignedConfig,
    AuthzConfig,
    WebhookConfig
);

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.describe().iter().map(|(k, v)| (k, v))).finish()
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

/// A duration in milliseconds, as `describe` shows it.
fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// An optional value, as `describe` shows it.
fn opt(o: &Option<String>) -> String {
    o.clone().unwrap_or_else(|| "(unset)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The non-test code of every file of this module, and the whole text (for the constants).
    fn sources() -> (String, String) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("src/config is readable")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        let (mut code, mut all) = (String::new(), String::new());
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            code.push_str(text.split("#[cfg(test)]").next().unwrap_or(""));
            all.push_str(&text);
        }
        (code, all)
    }

    /// Every variable is read, described by `syncgate check-config` and listed in the README's
    /// table with its default: the key constants, `describe()` and the README cannot drift apart.
    #[test]
    fn every_key_is_read_described_and_documented() {
        let (code, source) = sources();
        let readme = include_str!("../../README.md");
        let keys: Vec<&str> = source
            .lines()
            .filter_map(|l| l.strip_prefix("pub const ")?.split_once(": &str = \"")?.1.strip_suffix("\";"))
            .collect();
        assert!(keys.len() > 60, "{keys:?}");
        let described: Vec<&str> = Config::default().describe().into_iter().map(|(k, _)| k).collect();
        assert_eq!(described.len(), keys.len(), "a key is described twice or a row has no key");
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

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listener.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.auth.secret, SecretSource::Generated);
        assert_eq!(c.auth.external, None);
        assert_eq!(c.auth.accounts_issuer, "syncgate");
        assert_eq!(c.limits.max_message_bytes, 1 << 20);
        assert_eq!(c.limits.messages_per_min, 300);
        assert_eq!(c.limits.max_connections_per_user, 20);
        assert_eq!(c.limits.heartbeat, Duration::from_millis(25_000));
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
            (c.limits.max_json_depth, c.limits.close_linger, c.limits.write_timeout, c.listener.echo_path.as_deref()),
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
        assert_eq!((c.listener.echo_path.as_deref(), c.limits.max_json_depth), (Some("/echo"), 512));
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
        assert_eq!(c.durable.namespaces, vec!["dm".to_string()]);
        assert_eq!((c.durable.replay_max, c.durable.retention_interval), (1000, Duration::from_secs(10)));
        let c = Config::from_map(&map(&[(DURABLE_NAMESPACES, "dm, user"), (HISTORY_MAX, "0")])).unwrap();
        assert_eq!(c.durable.namespaces, vec!["dm".to_string(), "user".to_string()]);
        assert_eq!(c.durable.history_max, 0);
        assert!(Config::from_map(&map(&[(DURABLE_NAMESPACES, "none")])).unwrap().durable.namespaces.is_empty());
        assert!(Config::from_map(&map(&[(DURABLE_NAMESPACES, "")])).unwrap().durable.namespaces.is_empty());
        assert!(Config::from_map(&map(&[(DURABLE_NAMESPACES, " ")])).unwrap().durable.namespaces.is_empty());
        assert_eq!(Config::default().durable.namespaces, vec!["dm".to_string()]);
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
        assert_eq!((c.listener.proxy_protocol, c.listener.admin_listen), (ProxyProtocol::Off, None));
        let c = Config::from_map(&map(&[(PROXY_PROTOCOL, "v2"), (ADMIN_LISTEN, "127.0.0.1:9090")])).unwrap();
        assert_eq!(
            (c.listener.proxy_protocol, c.listener.admin_listen),
            (ProxyProtocol::V2, Some("127.0.0.1:9090".parse().unwrap()))
        );
        assert_eq!(
            Config::from_map(&map(&[(PROXY_PROTOCOL, "v1")])).unwrap().listener.proxy_protocol,
            ProxyProtocol::V1
        );
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
        assert_eq!((c.durable.events_per_min, c.durable.bytes_per_min), (600, 16 << 20));
        assert_eq!(
            (
                c.accounts.auth_attempts_per_min,
                c.accounts.auth_attempts_per_address_per_min,
                c.accounts.auth_attempts_per_account_per_hour
            ),
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
    fn signed_settings() {
        let c = Config::default();
        assert!(c.signed.namespaces.is_empty());
        assert_eq!(c.signed.window, Duration::from_secs(300));
        assert!(!c.signed.is_signed("user:alice"));
        let c = Config::from_map(&map(&[(SIGNED_NAMESPACES, "user, dm,room"), (SIGNATURE_WINDOW_SECS, "60")])).unwrap();
        assert_eq!(c.signed.namespaces, ["user", "dm", "room"]);
        assert_eq!(c.signed.window, Duration::from_secs(60));
        assert!(c.signed.is_signed("user:alice") && c.signed.is_signed("dm:a:b") && c.signed.is_signed("room:1"));
        assert!(!c.signed.is_signed("news:1") && !c.signed.is_signed("users:a"));
        for (key, bad) in [
            (SIGNED_NAMESPACES, "user,a:b"),
            (SIGNED_NAMESPACES, "dm,bad ns"),
            (SIGNATURE_WINDOW_SECS, "0"),
            (SIGNATURE_WINDOW_SECS, "86401"),
            (SIGNATURE_WINDOW_SECS, "-5"),
            (SIGNATURE_WINDOW_SECS, "soon"),
        ] {
            let err = Config::from_map(&map(&[(key, bad)])).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={bad}: {err}");
        }
    }

    #[test]
    fn one_external_issuer_beside_the_secret() {
        let secret = "0123456789abcdef0123456789abcdef";
        let c = Config::from_map(&map(&[(JWT_SECRET, secret), (JWKS_URL, "http://127.0.0.1:1/jwks")])).unwrap();
        assert_eq!(c.auth.secret, SecretSource::Configured(secret.as_bytes().to_vec()));
        assert_eq!(c.auth.external, Some(ExternalKeys::Jwks("http://127.0.0.1:1/jwks".into())));
        assert_eq!(c.auth.accounts_issuer, "syncgate");
        // No secret beside an external issuer: no HS256 tokens.
        let c = Config::from_map(&map(&[(OIDC_ISSUER, "https://idp.example/")])).unwrap();
        assert_eq!(c.auth.secret, SecretSource::Off);
        assert_eq!(c.auth.external, Some(ExternalKeys::Oidc("https://idp.example".into())));
        assert_eq!(c.auth.jwt_issuer.as_deref(), Some("https://idp.example"));
        // The secret alone with an issuer: own tokens carry that issuer.
        let c = Config::from_map(&map(&[(JWT_SECRET, secret), (JWT_ISSUER, "https://me")])).unwrap();
        assert_eq!(c.auth.accounts_issuer, "https://me");
        for (pairs, named) in [
            (vec![(JWKS_URL, "http://127.0.0.1:1/jwks"), (OIDC_ISSUER, "https://idp.example")], OIDC_ISSUER),
            (vec![(JWT_PUBLIC_KEY, "-----BEGIN x"), (JWKS_URL, "https://idp.example/jwks")], JWKS_URL),
            (vec![(OIDC_ISSUER, "http://idp.example")], OIDC_ISSUER),
            (vec![(OIDC_ISSUER, "https://idp.example"), (JWT_ISSUER, "https://other")], OIDC_ISSUER),
            (vec![(JWT_SECRET, secret), (JWT_ISSUER, "https://me"), (ACCOUNTS_ISSUER, "x")], ACCOUNTS_ISSUER),
        ] {
            let err = Config::from_map(&map(&pairs)).unwrap_err().to_string();
            assert!(err.contains(named), "{pairs:?}: {err}");
        }
    }
}
