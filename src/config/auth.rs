//! Who may connect: the JWT keys (an HS256 secret for syncgate's own tokens and at most one
//! external issuer: PEM key, JWKS URL or OIDC issuer), JWKS fetching, issuer/audience/leeway, the
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
/// OIDC issuer (`https://`, or `http://` for a loopback address): `jwks_uri` is discovered from
/// its `/.well-known/openid-configuration` and every external token must carry this `iss`.
pub const OIDC_ISSUER: &str = "SYNCGATE_OIDC_ISSUER";
/// The `iss` of the tokens syncgate mints itself (accounts, `syncgate token`).
pub const ACCOUNTS_ISSUER: &str = "SYNCGATE_ACCOUNTS_ISSUER";
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

/// The HS256 secret: syncgate's own tokens (accounts, `syncgate token`) and backends that share it.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `SYNCGATE_JWT_SECRET`.
    Configured(Vec<u8>),
    /// Nothing configured at all: a random HS256 secret persisted in the data directory
    /// (development).
    Generated,
    /// No secret but an external issuer: HS256 tokens are refused and nothing can be minted.
    Off,
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Configured(_) => f.write_str("Configured(***)"),
            SecretSource::Generated => f.write_str("Generated"),
            SecretSource::Off => f.write_str("Off"),
        }
    }
}

/// The external issuer's keys (at most one source): they verify RS*/PS*/ES*/EdDSA tokens, never
/// HS256 ones.
#[derive(Clone, PartialEq, Eq)]
pub enum ExternalKeys {
    /// `SYNCGATE_JWT_PUBLIC_KEY` (PEM; RS*/PS*, ES* or EdDSA by key type).
    PublicKeyPem(String),
    /// `SYNCGATE_JWKS_URL`.
    Jwks(String),
    /// `SYNCGATE_OIDC_ISSUER` (no trailing `/`): the JWKS URL is discovered.
    Oidc(String),
}

impl fmt::Debug for ExternalKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExternalKeys::PublicKeyPem(_) => f.write_str("PublicKeyPem(…)"),
            ExternalKeys::Jwks(u) => write!(f, "Jwks({u})"),
            ExternalKeys::Oidc(u) => write!(f, "Oidc({u})"),
        }
    }
}

/// How tokens are verified and who may call the server API.
#[derive(Clone)]
pub struct AuthConfig {
    /// The HS256 secret (routes HS256 tokens).
    pub secret: SecretSource,
    /// The external issuer's keys, if any (route every other algorithm).
    pub external: Option<ExternalKeys>,
    /// `SYNCGATE_ACCOUNTS_ISSUER`: the `iss` syncgate's own tokens carry. Beside an external
    /// issuer, an HS256 token that carries an `iss` must carry this one. With the secret alone
    /// and `SYNCGATE_JWT_ISSUER` set, it is that issuer (the two may not differ).
    pub accounts_issuer: String,
    /// Periodic JWKS refresh.
    pub jwks_refresh: Duration,
    /// Timeout of one JWKS fetch.
    pub jwks_timeout: Duration,
    /// Required `iss`, when set (the external issuer's tokens; with the secret alone, every token).
    /// With `SYNCGATE_OIDC_ISSUER`, that issuer.
    pub jwt_issuer: Option<String>,
    /// Required `aud`, when set (the external issuer's tokens; with the secret alone, every token).
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
        let (secret, external) = key_sources(r);
        let jwks_refresh = Duration::from_secs(r.ranged(JWKS_REFRESH_SECS, 300, 1, 86_400 * 7));
        let jwks_timeout = Duration::from_millis(r.ranged(JWKS_TIMEOUT_MS, 5_000, 1, 120_000));
        let mut jwt_issuer = r.raw(JWT_ISSUER).map(str::to_string);
        if let Some(ExternalKeys::Oidc(iss)) = &external {
            if jwt_issuer.as_ref().is_some_and(|j| j.trim_end_matches('/') != iss) {
                r.error(format!("{JWT_ISSUER} and {OIDC_ISSUER} differ (the OIDC issuer is the required `iss`)"));
            }
            jwt_issuer = Some(iss.clone());
        }
        let accounts_issuer = accounts_issuer(r, &secret, &external, &jwt_issuer);
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
            secret,
            external,
            accounts_issuer,
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
        let key = match &self.secret {
            SecretSource::Configured(s) => format!("*** ({} bytes)", s.len()),
            SecretSource::Generated => "(unset: generated in the data directory)".into(),
            SecretSource::Off => "(unset: no HS256 tokens, accounts off)".into(),
        };
        let (mut pem, mut jwks, mut oidc) = ("(unset)".to_string(), "(unset)".to_string(), "(unset)".to_string());
        match &self.external {
            Some(ExternalKeys::PublicKeyPem(p)) => pem = format!("PEM ({} bytes)", p.len()),
            Some(ExternalKeys::Jwks(u)) => jwks = mask_url(u),
            Some(ExternalKeys::Oidc(u)) => oidc = mask_url(u),
            None => {}
        }
        rows.extend([
            (JWT_SECRET, key),
            (JWT_PUBLIC_KEY, pem),
            (JWKS_URL, jwks),
            (OIDC_ISSUER, oidc),
            (ACCOUNTS_ISSUER, self.accounts_issuer.clone()),
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

/// The HS256 secret and at most one external source (PEM, JWKS URL or OIDC issuer; setting two
/// is an error). Both kinds may be set at once: tokens are routed by algorithm. Nothing set at all
/// is the development secret.
fn key_sources(r: &mut Reader) -> (SecretSource, Option<ExternalKeys>) {
    let secret = r.raw(JWT_SECRET).map(|s| s.as_bytes().to_vec());
    let pem = r.raw(JWT_PUBLIC_KEY).map(|s| s.replace("\\n", "\n"));
    let jwks = r.raw(JWKS_URL).map(str::to_string);
    let oidc = r.raw(OIDC_ISSUER).map(|s| s.trim_end_matches('/').to_string());
    let configured = [pem.is_some(), jwks.is_some(), oidc.is_some()].iter().filter(|b| **b).count();
    if configured > 1 {
        r.error(format!("set only one of {JWT_PUBLIC_KEY}, {JWKS_URL}, {OIDC_ISSUER} (one external issuer)"));
    }
    let external = if let Some(p) = pem {
        if !p.contains("-----BEGIN") {
            r.error(format!("{JWT_PUBLIC_KEY} must be a PEM public key"));
        }
        Some(ExternalKeys::PublicKeyPem(p))
    } else if let Some(u) = jwks {
        if !fetchable_url(&u) {
            r.error(format!("{JWKS_URL}={u:?} must be an https:// URL (http:// only for a loopback address)"));
        }
        Some(ExternalKeys::Jwks(u))
    } else if let Some(u) = oidc {
        if !fetchable_url(&u) || u.contains(['?', '#']) {
            r.error(format!(
                "{OIDC_ISSUER}={u:?} must be an https:// URL without query or fragment (http:// only for a loopback address)"
            ));
        }
        Some(ExternalKeys::Oidc(u))
    } else {
        None
    };
    let secret = match secret {
        Some(s) => {
            if s.len() < 32 {
                r.error(format!("{JWT_SECRET} must be at least 32 bytes (got {})", s.len()));
            }
            SecretSource::Configured(s)
        }
        None if external.is_none() => SecretSource::Generated,
        None => SecretSource::Off,
    };
    (secret, external)
}

/// `SYNCGATE_ACCOUNTS_ISSUER` [`syncgate`]. With the secret as the only key source and
/// `SYNCGATE_JWT_ISSUER` set, every token must carry that issuer, so syncgate's own tokens carry
/// it too: a different explicit accounts issuer is an error.
fn accounts_issuer(
    r: &mut Reader,
    secret: &SecretSource,
    external: &Option<ExternalKeys>,
    jwt_issuer: &Option<String>,
) -> String {
    let explicit = r.raw(ACCOUNTS_ISSUER).map(str::to_string);
    match (external, jwt_issuer) {
        (None, Some(j)) if *secret != SecretSource::Off => {
            if explicit.as_ref().is_some_and(|e| e != j) {
                r.error(format!(
                    "{ACCOUNTS_ISSUER} and {JWT_ISSUER} differ, but with the secret as the only key every token must carry {JWT_ISSUER}"
                ));
            }
            j.clone()
        }
        _ => explicit.unwrap_or_else(|| "syncgate".into()),
    }
}

/// Where keys or discovery documents may be fetched from: https, or http on a loopback address.
pub fn fetchable_url(url: &str) -> bool {
    url.starts_with("https://") || is_loopback_http(url)
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
