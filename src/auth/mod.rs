//! Authentication: JWT verification routed by algorithm — HS256 to the secret (syncgate's own
//! tokens and backends that share it), every other algorithm to the external issuer's keys (PEM
//! public key, JWKS or OIDC discovery), each with its own issuer/audience rules — the persisted
//! development secret, and token minting.

mod jwks;
pub mod key_login;
pub mod password;
pub mod server_key;
pub mod signed;

use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;

use crate::config::{Config, ExternalKeys, SecretSource};

pub use jwks::{usable_keys as jwks_usable_keys, JwksCache};

/// What a verified token says.
#[derive(Debug, Clone)]
pub struct Claims {
    pub user_id: String,
    pub channels: Vec<String>,
    /// `subscribe`: channel globs the token may subscribe to (not publish).
    pub subscribe: Vec<String>,
    /// `publish`: channel globs the token may publish to (not subscribe).
    pub publish: Vec<String>,
    pub exp: u64,
    /// `did`: the device this token is bound to, if any.
    pub device_id: Option<String>,
    /// `gen`: the user's token generation when it was issued (0 when absent).
    pub gen: u64,
}

/// Why a token was refused. Messages say expired or invalid and nothing more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("missing token")]
    Missing,
}

/// Start-up failures of the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Key(&'static str, String),
    #[error("cannot keep the development secret in {0}: {1}")]
    Io(String, std::io::Error),
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    exp: u64,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    subscribe: Option<Vec<String>>,
    #[serde(default)]
    publish: Option<Vec<String>>,
    #[serde(default)]
    did: Option<String>,
    /// Read leniently: another issuer's token may use the name for something else.
    #[serde(default)]
    gen: Option<serde_json::Value>,
    /// Read as any value so that a non-string `iss` is refused where an issuer is checked.
    #[serde(default)]
    iss: Option<serde_json::Value>,
}

/// The external issuer's keys (never HS256).
enum External {
    /// One static key with the algorithms its type allows.
    Static(DecodingKey, Vec<Algorithm>),
    Jwks(Arc<JwksCache>),
}

/// The `iss`/`aud` rules of one route.
struct Rules {
    /// Required `iss` (`jsonwebtoken` checks it).
    issuer: Option<String>,
    /// `iss` checked only when the token carries one (syncgate's own tokens beside an external
    /// issuer): it must be this string.
    issuer_if_present: Option<String>,
    /// Required `aud`.
    audience: Option<String>,
}

/// Verifies tokens; cheap to share behind an `Arc`.
pub struct Verifier {
    /// HS256 tokens: the configured or generated secret; `None` refuses them.
    secret: Option<DecodingKey>,
    secret_rules: Rules,
    /// Every other algorithm: the external issuer's keys; `None` refuses them.
    external: Option<External>,
    external_rules: Rules,
    /// Present when tokens can be minted (HS256 secret or the generated development secret).
    signer: Option<EncodingKey>,
    /// `iss` of minted tokens (`SYNCGATE_ACCOUNTS_ISSUER`).
    mint_issuer: String,
    /// `aud` of minted tokens: the required audience when the secret is the only key.
    mint_audience: Option<String>,
    leeway: u64,
    /// True when running on a generated secret.
    pub development: bool,
    /// HMAC-SHA256 key for pairing codes, derived from the HS256 secret (present with `signer`):
    /// the stored hashes of short codes cannot be brute-forced without the secret.
    pairing_key: Option<ring::hmac::Key>,
}

/// A key for one purpose derived from the token secret: HMAC-SHA256(secret, label).
fn derive_key(secret: &[u8], label: &[u8]) -> ring::hmac::Key {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), label);
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref())
}

const PAIRING_KEY_LABEL: &[u8] = b"syncgate pairing codes v1";

use crate::util::now_secs;

const SECRET_FILE: &str = "jwt_secret";

/// Loads the persisted development secret, or makes and stores a new one.
fn development_secret(dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = dir.join(SECRET_FILE);
    let io = |e| KeyError::Io(path.display().to_string(), e);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let text = text.trim();
        if text.len() >= 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(text.as_bytes().to_vec());
        }
        return Err(KeyError::Key("development secret", format!("{} is corrupt; delete it", path.display())));
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| KeyError::Key("development secret", "no system randomness".into()))?;
    let hex = crate::util::hex(&raw);
    write_private(&path, hex.as_bytes()).map_err(io)?;
    Ok(hex.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, data)
}

fn static_pem(pem: &str) -> Result<(DecodingKey, Vec<Algorithm>), KeyError> {
    use Algorithm::*;
    let bytes = pem.as_bytes();
    if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
        return Ok((k, vec![RS256, RS384, RS512, PS256, PS384, PS512]));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        return Ok((k, vec![ES256, ES384]));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        return Ok((k, vec![EdDSA]));
    }
    Err(KeyError::Key(crate::config::JWT_PUBLIC_KEY, "not an RSA, EC or Ed25519 public key in PEM form".into()))
}

impl Verifier {
    /// Builds the verifier from the configuration; generates the development secret if needed.
    pub fn new(config: &Config) -> Result<Verifier, KeyError> {
        let auth = &config.auth;
        let (secret, development) = match &auth.secret {
            SecretSource::Configured(s) => (Some(s.clone()), false),
            SecretSource::Generated => (Some(development_secret(&config.store.data_dir)?), true),
            SecretSource::Off => (None, false),
        };
        let external = match &auth.external {
            None => None,
            Some(ExternalKeys::PublicKeyPem(pem)) => {
                let (k, algs) = static_pem(pem)?;
                Some(External::Static(k, algs))
            }
            Some(ExternalKeys::Jwks(url)) => Some(External::Jwks(Arc::new(JwksCache::new(
                jwks::Source::Url(url.clone()),
                auth.jwks_timeout,
                auth.jwks_refresh,
                config.limits.max_json_depth,
            )))),
            Some(ExternalKeys::Oidc(issuer)) => Some(External::Jwks(Arc::new(JwksCache::new(
                jwks::Source::Oidc(issuer.clone()),
                auth.jwks_timeout,
                auth.jwks_refresh,
                config.limits.max_json_depth,
            )))),
        };
        let external_rules =
            Rules { issuer: auth.jwt_issuer.clone(), issuer_if_present: None, audience: auth.jwt_audience.clone() };
        // The secret alone: the configured issuer and audience bind every token, as before.
        // Beside an external issuer: they are the external issuer's; an HS256 token names
        // syncgate's own issuer or none.
        let (secret_rules, mint_audience) = match external {
            None => (
                Rules { issuer: auth.jwt_issuer.clone(), issuer_if_present: None, audience: auth.jwt_audience.clone() },
                auth.jwt_audience.clone(),
            ),
            Some(_) => {
                (Rules { issuer: None, issuer_if_present: Some(auth.accounts_issuer.clone()), audience: None }, None)
            }
        };
        Ok(Verifier {
            signer: secret.as_deref().map(EncodingKey::from_secret),
            pairing_key: secret.as_deref().map(|s| derive_key(s, PAIRING_KEY_LABEL)),
            secret: secret.as_deref().map(DecodingKey::from_secret),
            secret_rules,
            external,
            external_rules,
            mint_issuer: auth.accounts_issuer.clone(),
            mint_audience,
            leeway: auth.jwt_leeway_secs,
            development,
        })
    }

    /// The JWKS cache, when external keys come from a JWKS URL or OIDC discovery (the server
    /// starts its refresher).
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        match &self.external {
            Some(External::Jwks(j)) => Some(j),
            _ => None,
        }
    }

    fn validation(&self, alg: Algorithm, rules: &Rules) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present.
        let mut required = vec!["exp"];
        match &rules.audience {
            Some(a) => {
                v.set_audience(&[a]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(i) = &rules.issuer {
            v.set_issuer(&[i]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// Verifies a token and extracts the claims syncgate uses.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() || token.len() > 16 * 1024 {
            return Err(AuthError::Invalid);
        }
        // Unknown algorithms (including "none") fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        // Routed by algorithm: an HS256 token is never checked against a public key, and no
        // other algorithm ever against the secret.
        let (data, rules) = if header.alg == Algorithm::HS256 {
            let key = self.secret.as_ref().ok_or(AuthError::Invalid)?;
            let rules = &self.secret_rules;
            (jsonwebtoken::decode::<RawClaims>(token, key, &self.validation(header.alg, rules)), rules)
        } else {
            let rules = &self.external_rules;
            let data = match self.external.as_ref().ok_or(AuthError::Invalid)? {
                External::Static(key, algs) => {
                    if !algs.contains(&header.alg) {
                        return Err(AuthError::Invalid);
                    }
                    jsonwebtoken::decode::<RawClaims>(token, key, &self.validation(header.alg, rules))
                }
                External::Jwks(cache) => {
                    let key = cache.key_for(header.kid.as_deref(), header.alg).await.ok_or(AuthError::Invalid)?;
                    jsonwebtoken::decode::<RawClaims>(token, &key, &self.validation(header.alg, rules))
                }
            };
            (data, rules)
        };
        let raw = data
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?
            .claims;
        if let (Some(want), Some(iss)) = (&rules.issuer_if_present, &raw.iss) {
            if iss.as_str() != Some(want.as_str()) {
                return Err(AuthError::Invalid);
            }
        }
        let user_id = match raw.sub.or(raw.user_id) {
            Some(serde_json::Value::String(s)) => s,
            // Only a 64-bit integer has one spelling; `1.5`, `15e-1`, `1e2` or `-0` (a float to
            // serde) would name a user through f64's text: refused.
            Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
                (Some(v), _) => v.to_string(),
                (_, Some(v)) => v.to_string(),
                _ => return Err(AuthError::Invalid),
            },
            _ => return Err(AuthError::Invalid),
        };
        if !crate::channel::valid_user_id(&user_id) {
            return Err(AuthError::Invalid);
        }
        Ok(Claims {
            user_id,
            channels: raw.channels.unwrap_or_default(),
            subscribe: raw.subscribe.unwrap_or_default(),
            publish: raw.publish.unwrap_or_default(),
            exp: raw.exp,
            device_id: raw.did,
            gen: raw.gen.and_then(|g| g.as_u64()).unwrap_or(0),
        })
    }

    /// Hex HMAC-SHA256 of a pairing code under the key derived from the token secret; `None`
    /// without a secret (no accounts, hence no pairing).
    pub fn pairing_hash(&self, code: &str) -> Option<String> {
        let key = self.pairing_key.as_ref()?;
        Some(crate::util::hex(ring::hmac::sign(key, code.as_bytes()).as_ref()))
    }

    /// True when tokens can be minted (HS256 secret or the development secret).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Mints an HS256 token (only with a secret key) bound to `device`, in token generation `gen`.
    pub fn sign(
        &self,
        user: &str,
        device: Option<&str>,
        gen: u64,
        ttl_secs: u64,
        channels: &[String],
    ) -> Option<String> {
        let key = self.signer.as_ref()?;
        let now = now_secs();
        let mut claims = serde_json::json!({ "sub": user, "iat": now, "exp": now + ttl_secs });
        if let Some(d) = device {
            claims["did"] = d.into();
        }
        if gen > 0 {
            claims["gen"] = gen.into();
        }
        if !channels.is_empty() {
            claims["channels"] = channels.into();
        }
        // Our own tokens name our own issuer, and pass our own validation when the secret is the
        // only key and an audience is configured.
        claims["iss"] = self.mint_issuer.as_str().into();
        if let Some(a) = &self.mint_audience {
            claims["aud"] = a.as_str().into();
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }
}
