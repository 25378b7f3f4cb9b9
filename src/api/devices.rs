//! `GET /api/devices`, `DELETE /api/devices/{id}` and `PUT /api/devices/{id}/key` for the caller
//! (Bearer access token).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::authenticate;
use crate::app::AppState;
use crate::bus::Control;
use crate::error::{json_response, HttpError};
use crate::store::devices::KeySet;

/// `{"devices":[{"id","name","online","last_seen"},…]}` (revoked devices are not listed).
pub async fn list(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let devices = state.store.devices(&claims.user_id).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "devices": devices })))
}

/// `PUT /api/devices/{id}/key {"public_key":PK}` with the device's own access token (its `did` is
/// `{id}`): registers the device's Ed25519 public key (32 raw bytes, base64url without padding)
/// once. 200 with the device as `/api/devices` lists it; another device's id → 404; a malformed key
/// → 400; a different key already registered → 409 (a lost key means revoking the device).
pub async fn set_key(
    state: Arc<AppState>,
    req: Request<Incoming>,
    device_id: &str,
) -> Result<Response<Full<Bytes>>, HttpError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        public_key: String,
    }
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let device_id = crate::util::percent_decode(device_id).ok_or(HttpError::NotFound)?;
    if claims.device_id.as_deref() != Some(device_id.as_str()) {
        return Err(HttpError::NotFound);
    }
    let body: Body = super::json_body(&state, req, 4096).await?;
    if !valid_public_key(&body.public_key) {
        return Err(HttpError::BadRequest("public_key must be 32 bytes in base64url without padding".into()));
    }
    match register_key(&state, &claims.user_id, &device_id, &body.public_key).await? {
        KeySet::Set => {}
        KeySet::NotFound => return Err(HttpError::NotFound),
        KeySet::Conflict => return Err(HttpError::Conflict("this device already has another key")),
    }
    let device = state.store.device(&claims.user_id, &device_id).await?.ok_or(HttpError::NotFound)?;
    Ok(json_response(StatusCode::OK, &serde_json::json!(device)))
}

/// Registers `device`'s public key (stored once) and tells every instance that the device is now
/// keyed: token-only connections of it are refused from then on (no downgrade).
pub async fn register_key(
    state: &AppState,
    user_id: &str,
    device_id: &str,
    public_key: &str,
) -> Result<KeySet, crate::store::StoreError> {
    let set = state.store.set_device_key(user_id, device_id, public_key).await?;
    if set == KeySet::Set {
        state.bus.control(Control::DeviceKeyed {
            user_id: user_id.to_string(),
            device_id: device_id.to_string(),
            public_key: public_key.to_string(),
        });
    }
    Ok(set)
}

/// An Ed25519 public key as the API carries it: 43 characters of base64url (32 bytes), no padding.
pub fn valid_public_key(text: &str) -> bool {
    crate::auth::key_login::b64_exact::<32>(text).is_some()
}

/// Revokes one of the caller's devices: its connections close with 4003 on every instance, its
/// refresh tokens are revoked, and the device id can never connect again. Another user's (or an
/// unknown) device is 404.
pub async fn revoke(
    state: Arc<AppState>,
    req: Request<Incoming>,
    device_id: &str,
) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let device_id = crate::util::percent_decode(device_id).ok_or(HttpError::NotFound)?;
    if !state.store.revoke_device(&claims.user_id, &device_id).await? {
        return Err(HttpError::NotFound);
    }
    state.bus.control(Control::RevokeDevice { user_id: claims.user_id, device_id });
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true})))
}

/// `GET /api/users/search?q=` (authenticated): up to 20 users ranked by username similarity;
/// never emails, never the caller.
pub async fn search_users(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let q = crate::util::query_pairs(req.uri().query().unwrap_or(""))
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if q.is_empty() || q.chars().count() > 64 {
        return Err(HttpError::BadRequest("q must be 1-64 characters".into()));
    }
    let users = state.store.search_users(&q, &claims.user_id, 20).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "users": users })))
}
