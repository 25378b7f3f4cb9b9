//! JWKS key cache: fetched with a timeout, refreshed periodically, refetched on an unknown `kid` at
//! most once per 30 s (single flight). With an OIDC issuer, every fetch first reads `jwks_uri` from
//! the issuer's `/.well-known/openid-configuration` (same timeout, size bound and schedule).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// Minimum time between two refetches caused by an unknown `kid`.
pub const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Where the JWKS URL comes from.
pub(crate) enum Source {
    /// `SYNCGATE_JWKS_URL`.
    Url(String),
    /// `SYNCGATE_OIDC_ISSUER` (no trailing `/`): `jwks_uri` is discovered on every fetch.
    Oidc(String),
}

impl Source {
    /// The configured URL, for logs.
    fn shown(&self) -> &str {
        match self {
            Source::Url(u) | Source::Oidc(u) => u,
        }
    }
}

/// The fields of an OpenID Provider configuration syncgate uses.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Clone)]
pub(crate) struct CachedKey {
    kid: Option<String>,
    alg: Algorithm,
    key: Arc<DecodingKey>,
}

/// Parses a JWKS document (untrusted bytes from the network): depth-checked before serde sees it;
/// keys that are not usable signature keys are skipped. Returns the usable keys.
pub(crate) fn parse_jwks(body: &[u8], max_depth: usize) -> Result<Vec<CachedKey>, JwksError> {
    let set: JwkSet = crate::util::json::from_slice(body, max_depth)?;
    Ok(set.keys.into_iter().filter_map(parse_jwk).collect())
}

/// The number of usable keys in a JWKS document, or why it was refused (the fuzz harness's view
/// of `parse_jwks`).
pub fn usable_keys(body: &[u8], max_depth: usize) -> Result<usize, JwksError> {
    parse_jwks(body, max_depth).map(|k| k.len())
}

/// Turns one JWK into a verification key; symmetric and encryption keys are ignored.
fn parse_jwk(value: serde_json::Value) -> Option<CachedKey> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let (key, default_alg) = match jwk.kty.as_str() {
        "RSA" => (DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?, Algorithm::RS256),
        "EC" => {
            let alg = match jwk.crv.as_deref()? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                _ => return None,
            };
            (DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()?, alg)
        }
        "OKP" if jwk.crv.as_deref() == Some("Ed25519") => {
            (DecodingKey::from_ed_components(jwk.x.as_deref()?).ok()?, Algorithm::EdDSA)
        }
        _ => return None,
    };
    let alg = match jwk.alg.as_deref() {
        None => default_alg,
        Some(a) => {
            let alg: Algorithm = a.parse().ok()?;
            // The key type bounds the algorithm: an HS* alg on a public key is never accepted.
            let same_family = matches!(
                (default_alg, alg),
                (Algorithm::RS256, Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512)
                    | (Algorithm::RS256, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
                    | (Algorithm::ES256, Algorithm::ES256)
                    | (Algorithm::ES384, Algorithm::ES384)
                    | (Algorithm::EdDSA, Algorithm::EdDSA)
            );
            if !same_family {
                return None;
            }
            alg
        }
    };
    Some(CachedKey { kid: jwk.kid, alg, key: Arc::new(key) })
}

struct State {
    keys: Vec<CachedKey>,
    last_unknown_refetch: Option<Instant>,
}

/// Shared JWKS cache. Readers take a short `std` read lock (never across an await); fetches are
/// serialised by an async mutex so a burst of unknown `kid`s makes one request.
pub struct JwksCache {
    source: Source,
    max_json_depth: usize,
    timeout: Duration,
    pub refresh: Duration,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

fn client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// Why the keys could not be fetched, or a JWKS document was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("bad URL: {0}")]
    Url(#[from] http::uri::InvalidUri),
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("HTTP {0}")]
    Status(http::StatusCode),
    /// The body failed, or was over the size limit.
    #[error("reading body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("timed out")]
    Timeout,
    #[error("not a JWKS document: {0}")]
    Document(#[from] crate::util::json::JsonError),
    #[error("OpenID configuration refused: {0}")]
    Discovery(String),
}

impl JwksCache {
    pub(crate) fn new(source: Source, timeout: Duration, refresh: Duration, max_json_depth: usize) -> JwksCache {
        JwksCache {
            max_json_depth,
            source,
            timeout,
            refresh,
            state: RwLock::new(State { keys: Vec::new(), last_unknown_refetch: None }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let mut candidates = state.keys.iter().filter(|k| k.alg == alg);
        match kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
            None => {
                // Without a kid, only an unambiguous key is used.
                let first = candidates.next()?;
                if candidates.next().is_some() {
                    return None;
                }
                Some(first.key.clone())
            }
        }
    }

    /// The key for a token header; refetches once (rate limited) when the kid is unknown.
    pub(crate) async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<DecodingKey>> {
        if let Some(k) = self.lookup(kid, alg) {
            return Some(k);
        }
        let _guard = self.fetching.lock().await;
        // Someone else may have fetched while we waited.
        if let Some(k) = self.lookup(kid, alg) {
            return Some(k);
        }
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state.last_unknown_refetch.is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFETCH) {
                return None;
            }
            state.last_unknown_refetch = Some(Instant::now());
        }
        if let Err(e) = Box::pin(self.fetch_locked()).await {
            tracing::warn!(url = %self.source.shown(), error = %e, "JWKS refetch failed");
        }
        self.lookup(kid, alg)
    }

    /// Fetches now (start-up and periodic refresh).
    pub async fn refresh_now(&self) -> Result<usize, JwksError> {
        let _guard = self.fetching.lock().await;
        self.fetch_locked().await
    }

    /// One GET with the timeout and the size bound.
    async fn get(&self, client: &HttpsClient, url: &str) -> Result<Bytes, JwksError> {
        let uri: http::Uri = url.parse()?;
        tokio::time::timeout(self.timeout, async {
            let resp = client.get(uri).await?;
            if !resp.status().is_success() {
                return Err(JwksError::Status(resp.status()));
            }
            let limited = Limited::new(resp.into_body(), MAX_JWKS_BYTES);
            limited.collect().await.map(|c| c.to_bytes()).map_err(JwksError::Body)
        })
        .await
        .map_err(|_| JwksError::Timeout)?
    }

    /// The issuer's `jwks_uri`; the document must name the configured issuer (OpenID Connect
    /// Discovery §4.3) and the keys must come over https (or http on loopback).
    async fn discover(&self, client: &HttpsClient, issuer: &str) -> Result<String, JwksError> {
        let body = self.get(client, &format!("{issuer}/.well-known/openid-configuration")).await?;
        let doc: Discovery = crate::util::json::from_slice(&body, self.max_json_depth)?;
        if doc.issuer.trim_end_matches('/') != issuer {
            return Err(JwksError::Discovery(format!("it names the issuer {:?}", doc.issuer)));
        }
        if !crate::config::fetchable_url(&doc.jwks_uri) {
            return Err(JwksError::Discovery(format!("jwks_uri {:?} is not https", doc.jwks_uri)));
        }
        Ok(doc.jwks_uri)
    }

    async fn fetch_locked(&self) -> Result<usize, JwksError> {
        let client = client();
        let url = match &self.source {
            Source::Url(u) => u.clone(),
            Source::Oidc(issuer) => self.discover(&client, issuer).await?,
        };
        let body = self.get(&client, &url).await?;
        let keys = parse_jwks(&body, self.max_json_depth)?;
        let n = keys.len();
        self.state.write().unwrap_or_else(|e| e.into_inner()).keys = keys;
        tracing::info!(url = %url, keys = n, "JWKS loaded");
        Ok(n)
    }

    /// Background refresher: every `refresh` interval, until the task is aborted.
    pub async fn run_refresher(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.refresh).await;
            if let Err(e) = self.refresh_now().await {
                tracing::warn!(url = %self.source.shown(), error = %e, "JWKS refresh failed; keeping cached keys");
            }
        }
    }
}
