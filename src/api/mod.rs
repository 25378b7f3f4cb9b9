//! REST handlers. `server` routes to them; each file serves one resource.
//!
//! - [`accounts`]: register, login, refresh, logout, change-password.
//! - [`devices`]: list and revoke the caller's devices.
//! - [`login_page`]: the browser login for native apps (RFC 8252 with PKCE) and its code
//!   redemption.
//! - [`pairing`]: pairing codes — a signed-in device lets a new device of the user log in.
//! - [`history`]: durable streams' history and the caller's direct-message conversations.
//! - [`server_api`]: `POST /api/publish` and `POST /api/disconnect` for backends
//!   (Bearer `SYNCGATE_API_KEY`).

pub mod accounts;
pub mod devices;
pub mod history;
pub mod login_page;
pub mod openapi;
pub mod pairing;
pub mod server_api;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::error::HttpError;

/// Compares secrets in constant time (over SHA-256 digests, so the length does not leak either).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (ring::digest::digest(&ring::digest::SHA256, a), ring::digest::digest(&ring::digest::SHA256, b));
    da.as_ref().iter().zip(db.as_ref()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `Authorization: Bearer <key>` against the configured API key: no key configured → 404
/// (the endpoints are off), missing or wrong → 401.
pub fn require_api_key<B>(req: &Request<B>, key: Option<&str>) -> Result<(), HttpError> {
    let Some(key) = key else {
        return Err(HttpError::NotFound);
    };
    match crate::util::bearer(req.headers()) {
        crate::util::Bearer::Token(g) if same_secret(g.as_bytes(), key.as_bytes()) => Ok(()),
        _ => Err(HttpError::Unauthorized(crate::auth::AuthError::Invalid)),
    }
}

/// Verifies `Authorization: Bearer <access token>` (any JWT `/ws` would accept): a token of a
/// revoked device or from before the user's last password change is 401 like an invalid one.
pub async fn authenticate<B>(state: &crate::app::AppState, req: &Request<B>) -> Result<crate::auth::Claims, HttpError> {
    let token = match crate::util::bearer(req.headers()) {
        crate::util::Bearer::Token(t) => t,
        crate::util::Bearer::Missing => return Err(HttpError::Unauthorized(crate::auth::AuthError::Missing)),
        crate::util::Bearer::Malformed => return Err(HttpError::Unauthorized(crate::auth::AuthError::Invalid)),
    };
    let claims = state.verifier.verify(token).await.map_err(HttpError::Unauthorized)?;
    crate::admission::still_valid(state, &claims)
        .map_err(|_| HttpError::Unauthorized(crate::auth::AuthError::Invalid))?;
    Ok(claims)
}

/// `SYNCGATE_API_REQUESTS_PER_MIN` per user on the read APIs (history, conversations, devices,
/// user search): 429 `rate_limited` beyond it.
pub fn limit_api(state: &AppState, user_id: &str) -> Result<(), HttpError> {
    match state.api_requests.allow(&[format!("user:{user_id}")], std::time::Instant::now()) {
        true => Ok(()),
        false => Err(HttpError::TooManyRequests),
    }
}

/// Reads a body of at most `limit` bytes; a client that has not sent all of it within
/// `SYNCGATE_HANDSHAKE_TIMEOUT_MS` gets 408 (a slow body cannot hold a connection open).
pub async fn read_body(state: &AppState, req: Request<Incoming>, limit: usize) -> Result<Bytes, HttpError> {
    let collect = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(state.config.listener.handshake_timeout, collect).await {
        Err(_) => {
            state.metrics.handshake_timeouts.inc();
            Err(HttpError::RequestTimeout)
        }
        Ok(Err(_)) => Err(HttpError::BadRequest(format!("body missing or larger than {limit} bytes"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Parses an untrusted JSON body: nesting beyond `SYNCGATE_MAX_JSON_DEPTH` and invalid JSON are
/// a 400 `bad_request` naming the problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], max_depth: usize) -> Result<T, HttpError> {
    crate::util::json::from_slice(body, max_depth).map_err(|e| HttpError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Reads a JSON body of at most `limit` bytes (see [`read_body`] and [`parse_json`]).
pub async fn json_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: Request<Incoming>,
    limit: usize,
) -> Result<T, HttpError> {
    let body = read_body(state, req, limit).await?;
    parse_json(&body, state.config.limits.max_json_depth)
}
