//! Who may connect: the JWT key source (only one), JWKS fetching, issuer/audience/leeway, the
//! first-frame auth timeout, the server API key and the public namespaces.

use std::fmt;
use std::time::Duration;

use super::reader::Reader;
use super::{mask_url, ms, opt};

/// HS256 secret, at least 32 bytes.
pub const JWT_SECRET: &str = "SYNCGATE_JWT_SECRET";
/// PEM public key (RSA, EC or Ed25519; `\n` escapes allowed).
pub const JWT_PUBLIC_KEY: &str = "SYNCGATE_JWT_PUBLIC_KEY";
/// JWKS URL (`https://`, or `http://` for a loopback address).
pub const JWKS_URL: &str = "SYNCGATE_JWKS_URL";
/// Periodic JWKS refresh.
pub const JWKS_REFRESH_SECS: &str = "SYNCGATE_JWKS_REFRESH_SECS";
/// Timeout of one JWKS fetch.
pub const JWKS_TIMEOUT_MS: &str = "SYNCGATE_JWKS_TIMEOUT_MS";
/// The `iss` every token must carry, when set.
pub const JWT_ISSUER: &str = "SYNCGATE_JWT_ISSUER";
/// The `aud` every token must carry, when set.
pub const JWT_AUDIENCE: &str = "SYNCGATE_JWT_AUDIENCE";
/// Clock leeway for `exp` and `nbf`.
pub const JWT_LEEWAY_SECS: &str = "SYNCGATE_JWT_LEEWAY_SECS";
/// Time allowed for the first-frame `auth`.
pub const AUTH_TIMEOUT_MS: &str = "SYNCGATE_AUTH_TIMEOUT_MS";
/// Bearer key of the server API, at least 16 characters.
pub const API_KEY: &str = "SYNCGATE_API_KEY";
/// Namespaces anyone may use (comma list).
pub const PUBLIC_NAMESPACES: &str = "SYNCGATE_PUBLIC_NAMESPACES";
/// The server's Ed25519 identity: a PKCS#8 private key (v1 or v2), PEM or standard base64 of the DER.
pub const SERVER_KEY: &str = "SYNCGATE_SERVER_KEY";

/// `1`: devices with a registered key may still connect with a token alone.
pub const KEYED_DEVICES_ALLOW_TOKEN: &str = "SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN";

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

/// How tokens are verified and who may call the server API.
#[derive(Clone)]
pub struct AuthConfig {
    /// The one source of verification keys.
    pub key_source: KeySource,
    /// Periodic JWKS refresh.
    pub jwks_refresh: Duration,
    /// Timeout of one JWKS fetch.
    pub jwks_timeout: Duration,
    /// Required `iss`, when set.
    pub jwt_issuer: Option<String>,
    /// Required `aud`, when set.
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`.
    pub jwt_leeway_secs: u64,
    /// Time allowed for the first-frame `auth`.
    pub auth_timeout: Duration,
    /// `SYNCGATE_API_KEY`: enables the server API (`/api/publish`, `/api/disconnect`).
    pub api_key: Option<String>,
    /// Namespaces anyone may use (never `user` or `dm`).
    pub public_namespaces: Vec<String>,
    /// `SYNCGATE_SERVER_KEY` as PKCS#8 DER (checked to be an Ed25519 key); `None`: generated
    /// once and kept in the data directory.
    pub server_key: Option<Vec<u8>>,
    /// `SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN`: a device with a registered key may still connect with
    /// a token alone (off: key login only, no downgrade; its refresh tokens keep working for REST).
    pub keyed_devices_allow_token: bool,
}

impl AuthConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        let key_source = key_source(r);
        let jwks_refresh = Duration::from_secs(r.ranged(JWKS_REFRESH_SECS, 300, 1, 86_400 * 7));
        let jwks_timeout = Duration::from_millis(r.ranged(JWKS_TIMEOUT_MS, 5_000, 1, 120_000));
        let jwt_issuer = r.raw(JWT_ISSUER).map(str::to_string);
        let jwt_audience = r.raw(JWT_AUDIENCE).map(str::to_string);
        let jwt_leeway_secs = r.ranged(JWT_LEEWAY_SECS, 0, 0, 3600);
        let auth_timeout = Duration::from_millis(r.ranged(AUTH_TIMEOUT_MS, 10_000, 1, 600_000));
        let public_namespaces = r.list(PUBLIC_NAMESPACES);
        for ns in &public_namespaces {
            if ns == "user" || ns == "dm" || !crate::channel::valid_namespace(ns) {
                r.error(format!("{PUBLIC_NAMESPACES}: {ns:?} cannot be a public namespace"));
            }
        }
        let api_key = r.raw(API_KEY).map(str::to_string);
        if api_key.as_ref().is_some_and(|k| k.len() < 16) {
            r.error(format!("{API_KEY} must be at least 16 characters"));
        }
        let server_key = server_key(r);
        let keyed_devices_allow_token = r.flag(KEYED_DEVICES_ALLOW_TOKEN, false);
        AuthConfig {
            keyed_devices_allow_token,
            server_key,
            key_source,
            jwks_refresh,
            jwks_timeout,
            jwt_issuer,
            jwt_audience,
            jwt_leeway_secs,
            auth_timeout,
            api_key,
            public_namespaces,
        }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
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
        rows.extend([
            (JWT_SECRET, key),
            (JWT_PUBLIC_KEY, pem),
            (JWKS_URL, jwks),
            (JWKS_REFRESH_SECS, self.jwks_refresh.as_secs().to_string()),
            (JWKS_TIMEOUT_MS, ms(self.jwks_timeout)),
            (JWT_ISSUER, opt(&self.jwt_issuer)),
            (JWT_AUDIENCE, opt(&self.jwt_audience)),
            (JWT_LEEWAY_SECS, self.jwt_leeway_secs.to_string()),
            (AUTH_TIMEOUT_MS, ms(self.auth_timeout)),
            (API_KEY, if self.api_key.is_some() { "***".into() } else { "(unset: server API off)".into() }),
            (PUBLIC_NAMESPACES, self.public_namespaces.join(",")),
            (
                SERVER_KEY,
                match &self.server_key {
                    Some(_) => "*** (Ed25519 PKCS#8)".into(),
                    None => "(unset: generated in the data directory)".into(),
                },
            ),
            (KEYED_DEVICES_ALLOW_TOKEN, u8::from(self.keyed_devices_allow_token).to_string()),
        ]);
    }
}

/// `SYNCGATE_SERVER_KEY`: PEM (`-----BEGIN PRIVATE KEY-----`, `\n` escapes allowed) or standard
/// base64 of the DER; it must be an Ed25519 PKCS#8 key (v1 as `openssl genpkey` writes it, or v2).
fn server_key(r: &mut Reader) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = r.raw(SERVER_KEY)?.replace("\\n", "\n");
    let b64: String = match text.contains("-----BEGIN") {
        true => text.lines().filter(|l| !l.starts_with("-----")).collect(),
        false => text.split_whitespace().collect(),
    };
    let der = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok();
    match der.filter(|d| ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(d).is_ok()) {
        Some(d) => Some(d),
        None => {
            r.error(format!("{SERVER_KEY} must be an Ed25519 private key in PKCS#8 (PEM, or base64 of the DER)"));
            None
        }
    }
}

/// The one key source: setting two of secret, PEM and JWKS URL is an error (the key decides the
/// algorithm); nothing set is the development secret.
fn key_source(r: &mut Reader) -> KeySource {
    let secret = r.raw(JWT_SECRET).map(|s| s.as_bytes().to_vec());
    let pem = r.raw(JWT_PUBLIC_KEY).map(|s| s.replace("\\n", "\n"));
    let jwks = r.raw(JWKS_URL).map(str::to_string);
    let configured = [secret.is_some(), pem.is_some(), jwks.is_some()].iter().filter(|b| **b).count();
    if configured > 1 {
        r.error(format!("set only one of {JWT_SECRET}, {JWT_PUBLIC_KEY}, {JWKS_URL} (the key decides the algorithm)"));
    }
    if let Some(s) = secret {
        if s.len() < 32 {
            r.error(format!("{JWT_SECRET} must be at least 32 bytes (got {})", s.len()));
        }
        KeySource::Secret(s)
    } else if let Some(p) = pem {
        if !p.contains("-----BEGIN") {
            r.error(format!("{JWT_PUBLIC_KEY} must be a PEM public key"));
        }
        KeySource::PublicKeyPem(p)
    } else if let Some(u) = jwks {
        if !(u.starts_with("https://") || is_loopback_http(&u)) {
            r.error(format!("{JWKS_URL}={u:?} must be an https:// URL (http:// only for a loopback address)"));
        }
        KeySource::Jwks(u)
    } else {
        KeySource::Generated
    }
}

/// Keys fetched in clear text could be swapped on the way: https only, except a loopback
/// address (a local key service, tests).
fn is_loopback_http(url: &str) -> bool {
    url.strip_prefix("http://").is_some_and(|rest| {
        let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
        };
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}
