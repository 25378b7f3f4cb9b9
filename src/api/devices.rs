//! `GET /api/devices` and `DELETE /api/devices/{id}` for the caller (Bearer access token).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::authenticate;
use crate::app::AppState;
use crate::bus::Control;
use crate::error::{json_response, HttpError};

/// `{"devices":[{"id","name","online","last_seen"},…]}` (revoked devices are not listed).
pub async fn list(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let devices = state.store.devices(&claims.user_id).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({ "devices": devices })))
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
