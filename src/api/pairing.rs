//! Pairing codes: a signed-in device shows a short code (`POST /api/pairing`), a new device
//! claims it once (`POST /api/pairing/claim`) and gets a login of the same user as a new device;
//! the user's connections are told (`pairing_complete`) so the devices can exchange keys.
//!
//! Codes are 8 characters of [`ALPHABET`] (31 symbols, no `0 O 1 I L`), drawn from the system
//! CSPRNG by rejection sampling, shown as `ABCD-EFGH`. Only their HMAC-SHA256 under a key derived
//! from the token secret is stored. Guessing is bounded by the per-address and the global claim
//! limits (README, "Pairing codes").

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::Message;

use crate::app::AppState;
use crate::error::{json_response, HttpError};
use crate::store::devices::{KeySet, Registered};
use crate::store::StoreError;

/// The code alphabet: digits and capitals without the look-alikes `0 O 1 I L`.
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Characters in a code (without the dash).
pub const CODE_LEN: usize = 8;
/// Bodies of `POST /api/pairing/claim` are at most this many bytes.
const BODY_LIMIT: usize = 4096;
/// The global claim counter's name (one Redis key per minute).
const GLOBAL_COUNTER: &str = "pairing-claims";

/// A fresh code, `ABCD-EFGH`: each character uniform over [`ALPHABET`] (bytes of 248 or more are
/// drawn again: 248 = 8 × 31, so `b % 31` has no bias). `None` only when the OS has no randomness.
pub fn new_code() -> Option<String> {
    let rng = ring::rand::SystemRandom::new();
    let mut chars = Vec::with_capacity(CODE_LEN + 1);
    while chars.len() < CODE_LEN {
        let mut buf = [0u8; 16];
        ring::rand::SecureRandom::fill(&rng, &mut buf).ok()?;
        for b in buf {
            if b < 248 && chars.len() < CODE_LEN {
                chars.push(ALPHABET[usize::from(b % 31)]);
            }
        }
    }
    chars.insert(4, b'-');
    String::from_utf8(chars).ok()
}

/// The canonical form of a presented code (upper case, without the dash and spaces), or `None`
/// when it cannot be a code.
pub fn normalize(code: &str) -> Option<String> {
    let c: String = code.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    (c.len() == CODE_LEN && c.bytes().all(|b| ALPHABET.contains(&b))).then_some(c)
}

/// The stored form of a canonical code.
fn code_hash(state: &AppState, canonical: &str) -> Result<String, HttpError> {
    state.verifier.pairing_hash(canonical).ok_or(HttpError::NotFound)
}

/// `POST /api/pairing` with a device-bound access token (`did`) → 201
/// `{"code":"ABCD-EFGH","expires_in":SECS}`. The device's earlier code stops working. A token
/// without `did` (or of a user this server keeps no account for) → 403 `forbidden`.
pub async fn create(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    if !state.verifier.can_sign() {
        return Err(HttpError::NotFound);
    }
    let claims = super::authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let Some(device) = claims.device_id.as_deref() else {
        return Err(HttpError::Forbidden("pairing needs a device-bound access token (one with a did claim)"));
    };
    let Some(account) = state.store.credentials_by_id(&claims.user_id).await? else {
        return Err(HttpError::Forbidden("pairing needs an account on this server"));
    };
    let ttl = state.config.accounts.pairing_ttl_secs;
    // A hash already held by another device's live code: draw again (31^8 codes; practically never).
    for _ in 0..4 {
        let code = new_code().ok_or(HttpError::Internal)?;
        let hash = code_hash(&state, &code.replace('-', ""))?;
        match state.store.put_pairing_code(&hash, &claims.user_id, device, account.token_gen, ttl as i64 * 1000).await {
            Ok(()) => {
                return Ok(json_response(StatusCode::CREATED, &serde_json::json!({ "code": code, "expires_in": ttl })))
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(HttpError::Internal)
}

/// The body of `POST /api/pairing/claim`.
#[derive(serde::Deserialize)]
struct ClaimBody {
    code: String,
    device_name: String,
    #[serde(default)]
    public_key: Option<String>,
}

/// Counts a claim from `peer` against the per-address and the global limit: 429 `rate_limited`
/// past either. The global count is cluster-wide through the bus when it keeps shared counters.
async fn limit_claim(state: &AppState, peer: IpAddr) -> Result<(), HttpError> {
    if !state.pairing_claims.allow(peer, std::time::Instant::now()) {
        return Err(HttpError::TooManyAttempts);
    }
    let count = match state.bus.count_this_minute(GLOBAL_COUNTER).await {
        Some(n) => n,
        None => state.pairing_claims_here.incr(crate::util::now_millis() / 60_000),
    };
    if count > u64::from(state.config.accounts.pairing_claims_global_per_min) {
        return Err(HttpError::TooManyAttempts);
    }
    Ok(())
}

/// `POST /api/pairing/claim {"code","device_name","public_key"?}` (no auth) → 201 with the token
/// JSON of `POST /login` for a new device of the code's user, named `device_name`, with its key
/// registered when given. Every connection of the user gets `pairing_complete`. Unknown, used or
/// expired code → 404 `not_found`; malformed body → 400; over a claim limit → 429.
pub async fn claim(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    if !state.verifier.can_sign() {
        return Err(HttpError::NotFound);
    }
    let body: ClaimBody = super::json_body(&state, req, BODY_LIMIT).await?;
    let name = body.device_name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(HttpError::BadRequest("device_name must be 1-64 printable characters".into()));
    }
    if let Some(k) = &body.public_key {
        if !super::devices::valid_public_key(k) {
            return Err(HttpError::BadRequest("public_key must be 32 bytes in base64url without padding".into()));
        }
    }
    limit_claim(&state, peer).await?;
    let canonical = normalize(&body.code).ok_or(HttpError::NotFound)?;
    let claimed = state.store.claim_pairing_code(&code_hash(&state, &canonical)?).await?;
    let code = claimed.ok_or(HttpError::NotFound)?;
    // The pairing device was revoked, or the password changed, since the code was made: void.
    if state.registry.is_revoked(&code.user_id, &code.device_id) {
        return Err(HttpError::NotFound);
    }
    let account = state.store.credentials_by_id(&code.user_id).await?.ok_or(HttpError::NotFound)?;
    if account.token_gen > code.token_gen {
        return Err(HttpError::NotFound);
    }
    let device = format!("d-{}", crate::util::random_hex(8));
    let max = state.config.accounts.max_devices_per_user;
    match state.store.register_device(&code.user_id, &device, Some(name), max).await? {
        Registered::Ok => {}
        Registered::TooMany => return Err(HttpError::TooManyDevices),
        Registered::Revoked => return Err(HttpError::Internal),
    }
    if let Some(k) = &body.public_key {
        if super::devices::register_key(&state, &code.user_id, &device, k).await? != KeySet::Set {
            return Err(HttpError::Internal);
        }
    }
    let family = crate::util::random_hex(16);
    let mut resp = super::accounts::issue_login(&state, &code.user_id, &family, Some(&device)).await?;
    *resp.status_mut() = StatusCode::CREATED;
    // A live notice to every connection of the user on every instance (never stored, also when
    // the user channel is durable).
    let frame = crate::protocol::pairing_complete(&device, name, body.public_key.as_deref());
    let channel = crate::channel::user_channel(&code.user_id);
    crate::publish::Publisher::new(&state).send(&channel, Message::Text(frame), 0);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_format_and_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..400 {
            let c = new_code().unwrap();
            assert_eq!(c.len(), 9);
            assert_eq!(&c[4..5], "-");
            assert!(c.bytes().enumerate().all(|(i, b)| i == 4 || ALPHABET.contains(&b)), "{c}");
            seen.extend(c.bytes().filter(|b| *b != b'-'));
        }
        assert_eq!(seen.len(), 31);
    }

    #[test]
    fn presented_codes_are_normalised() {
        assert_eq!(normalize("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize(" ABCDEFGH ").as_deref(), Some("ABCDEFGH"));
        for bad in ["", "ABCD-EFG", "ABCD-EFGHJ", "ABCD-EFG0", "ABCD-EFGI", "ÄBCD-EFGH"] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
