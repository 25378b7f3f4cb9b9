//! The server API for backends: publish an event into a channel, disconnect a user or device —
//! on every instance, through the bus.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message;

use super::{json_body, require_api_key};
use crate::app::AppState;
use crate::bus::Control;
use crate::error::{json_response, HttpError};
use crate::protocol;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    event: String,
    #[serde(default)]
    data: Option<Box<serde_json::value::RawValue>>,
    /// Idempotency key on durable channels.
    #[serde(default)]
    msg_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user_id: String,
    #[serde(default)]
    device_id: Option<String>,
}

/// `POST /api/publish {"channel","event","data","msg_id"?}` → 200 `{"ok":true,"local_recipients":N}`.
/// Members receive an `event` with `"from":{"user_id":"server"}`. On a durable channel the event
/// is stored first and the answer is `{"ok":true,"seq":N,"duplicate":B}`; a `dm:` channel reaches
/// both users' connections.
pub async fn publish(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    require_api_key(&req, state.config.auth.api_key.as_deref())?;
    let body: PublishBody = json_body(&state, req, state.config.limits.max_message_bytes).await?;
    if !crate::channel::valid_name(&body.channel) {
        return Err(HttpError::BadRequest("channel names are 1-128 bytes of [A-Za-z0-9:_.@=-]".into()));
    }
    if body.event.is_empty() || body.event.len() > protocol::MAX_EVENT_LEN {
        return Err(HttpError::BadRequest(format!("event must be 1-{} bytes", protocol::MAX_EVENT_LEN)));
    }
    use crate::protocol::MAX_MSG_ID_LEN;
    if body.msg_id.as_ref().is_some_and(|m| m.is_empty() || m.len() > MAX_MSG_ID_LEN) {
        return Err(HttpError::BadRequest(format!("msg_id must be 1-{MAX_MSG_ID_LEN} bytes")));
    }
    if crate::channel::is_dm_namespace(&body.channel) && crate::channel::dm_members(&body.channel).is_none() {
        return Err(HttpError::BadRequest(crate::channel::DM_RULE.into()));
    }
    let data = body.data.as_deref().map(|d| d.get().as_bytes()).unwrap_or(b"null");
    let now = crate::util::now_millis();
    if state.durable.is_durable(&body.channel) {
        let msg_id = body.msg_id.map(String::into_boxed_str);
        return match state.durable.publish_from_server(body.channel, body.event, data.to_vec(), msg_id, now).await {
            Ok(a) => Ok(json_response(
                StatusCode::OK,
                &serde_json::json!({"ok": true, "seq": a.seq, "duplicate": a.duplicate}),
            )),
            Err(crate::durable::DurableError::Refused(_)) => {
                Err(HttpError::BadRequest("the event cannot be stored".into()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "durable server publish failed");
                Err(HttpError::Unavailable)
            }
        };
    }
    let frame = protocol::server_event(&body.channel, &body.event, data, now);
    let mut n = 0;
    crate::channel::for_each_route(&body.channel, |route| {
        n += state.bus.publish(route, Message::Text(frame.clone()), 0);
    });
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true, "local_recipients": n})))
}

/// `POST /api/disconnect {"user_id","device_id"?}` → 200; the connections close with 4003 on
/// every instance.
pub async fn disconnect(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    require_api_key(&req, state.config.auth.api_key.as_deref())?;
    let body: DisconnectBody = json_body(&state, req, 64 * 1024).await?;
    if !crate::channel::valid_user_id(&body.user_id) {
        return Err(HttpError::BadRequest("invalid user_id".into()));
    }
    if let Some(d) = &body.device_id {
        if !crate::identity::valid_device_id(d) {
            return Err(HttpError::BadRequest("invalid device_id".into()));
        }
    }
    state.bus.control(Control::Disconnect { user_id: body.user_id, device_id: body.device_id });
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true})))
}

/// `GET /api/status` (Bearer `SYNCGATE_API_KEY`; 401 without it, and always 401 when no key is
/// configured: it lists user ids, so it is never public).
pub async fn status(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    if state.config.auth.api_key.is_none() {
        return Err(HttpError::Unauthorized(crate::auth::AuthError::Missing));
    }
    require_api_key(&req, state.config.auth.api_key.as_deref())?;
    let cluster = state.bus.status(10).await;
    let m = &state.metrics;
    let body = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": m.uptime_secs(),
        "instance": state.instance.to_string(),
        "ready": state.ready(),
        "totals": {
            "connections": state.stats.open_connections.load(std::sync::atomic::Ordering::Relaxed),
            "deliveries": state.registry.deliveries(),
            "slow_consumer_disconnects": state.stats.slow_consumer_closes.load(std::sync::atomic::Ordering::Relaxed),
            "rate_limited_messages": m.rate_limited.get(),
        },
        // The client addresses (from the PROXY header behind a balancer) with most open
        // connections on this instance.
        "addresses": state.addresses.top(10).into_iter()
            .map(|(ip, n)| serde_json::json!({"address": ip.to_string(), "connections": n}))
            .collect::<Vec<_>>(),
        "cluster": cluster,
    });
    Ok(json_response(StatusCode::OK, &body))
}
