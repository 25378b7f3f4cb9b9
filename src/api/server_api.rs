//! The server API for backends: publish an event into a channel, disconnect a user or device —
//! on every instance, through the bus.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;

use super::{json_body, require_api_key};
use crate::app::AppState;
use crate::bus::Control;
use crate::error::{json_response, HttpError};
use crate::publish::{Published, Publisher, ServerEvent};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    /// One channel, or…
    #[serde(default)]
    channel: Option<String>,
    /// …one event to several (at most [`MAX_CHANNELS`]).
    #[serde(default)]
    channels: Option<Vec<String>>,
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

/// Most channels one `POST /api/publish` may name.
pub const MAX_CHANNELS: usize = 100;

/// `POST /api/publish {"channel","event","data","msg_id"?}` → 200 `{"ok":true,"local_recipients":N}`.
/// Members receive an `event` with `"from":{"user_id":"server"}`. On a durable channel the event
/// is stored first and the answer is `{"ok":true,"seq":N,"duplicate":B}`; a `dm:` channel reaches
/// both users' connections. With `"channels":[…]` instead (1 to [`MAX_CHANNELS`], every name
/// checked before anything is sent) the one event goes to each, and the answer is
/// `{"ok":true,"results":[{"channel","seq"?,"duplicate"?}…]}` in the given order.
pub async fn publish(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    require_api_key(&req, state.config.auth.api_key.as_deref())?;
    let body: PublishBody = json_body(&state, req, state.config.limits.max_message_bytes).await?;
    let data = body.data.as_deref().map(|d| d.get().as_bytes()).unwrap_or(b"null");
    let publisher = Publisher::new(&state);
    let channels = match (body.channel, body.channels) {
        (Some(channel), None) => {
            let ev = ServerEvent { channel, event: body.event, data, msg_id: body.msg_id };
            let answer = match publisher.from_server(ev).await? {
                Published::Stored(a) => serde_json::json!({"ok": true, "seq": a.seq, "duplicate": a.duplicate}),
                Published::Live { local_recipients } => {
                    serde_json::json!({"ok": true, "local_recipients": local_recipients})
                }
            };
            return Ok(json_response(StatusCode::OK, &answer));
        }
        (None, Some(channels)) if (1..=MAX_CHANNELS).contains(&channels.len()) => channels,
        (None, Some(_)) => {
            return Err(HttpError::BadRequest(format!("channels must list 1-{MAX_CHANNELS} channels")));
        }
        _ => return Err(HttpError::BadRequest("give either channel or channels".into())),
    };
    // Every channel is checked first: a bad name sends nothing.
    for c in &channels {
        crate::publish::validate_server(c, &body.event, body.msg_id.as_deref())?;
    }
    let sends = channels.iter().map(|c| {
        let ev = ServerEvent { channel: c.clone(), event: body.event.clone(), data, msg_id: body.msg_id.clone() };
        publisher.from_server(ev)
    });
    let mut results = Vec::with_capacity(channels.len());
    for (channel, published) in channels.iter().zip(futures_util::future::join_all(sends).await) {
        results.push(match published? {
            Published::Stored(a) => serde_json::json!({"channel": channel, "seq": a.seq, "duplicate": a.duplicate}),
            Published::Live { .. } => serde_json::json!({"channel": channel}),
        });
    }
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true, "results": results})))
}

/// `GET /api/channels?prefix=P&cursor=C&limit=N` (server API) → `{"channels":[{"channel","members"}…],
/// "next_cursor":C|null}`: the channels with members, cluster-wide, whose names start with P
/// (default: all), a page at a time (`limit` 1-1000, default 100; with Redis a page is one `SCAN`
/// step, so it may hold fewer — even none — while `next_cursor` is not null).
pub async fn channels(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    require_api_key(&req, state.config.auth.api_key.as_deref())?;
    let (mut prefix, mut cursor, mut limit) = (String::new(), String::new(), 100usize);
    for (k, v) in crate::util::query_pairs(req.uri().query().unwrap_or("")) {
        match k.as_str() {
            "prefix" => prefix = v,
            "cursor" => cursor = v,
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| HttpError::BadRequest("limit must be 1-1000".into()))?
            }
            _ => {}
        }
    }
    let name_chars = |t: &str| t.bytes().all(|b| b.is_ascii_alphanumeric() || b":_.@=-".contains(&b));
    if prefix.len() > 128 || !name_chars(&prefix) {
        return Err(HttpError::BadRequest("prefix must be at most 128 bytes of [A-Za-z0-9:_.@=-]".into()));
    }
    if cursor.len() > 256 || !name_chars(&cursor) {
        return Err(HttpError::BadRequest("bad cursor".into()));
    }
    let page = state.bus.channels(&prefix, &cursor, limit).await;
    let list: Vec<serde_json::Value> =
        page.channels.iter().map(|(c, n)| serde_json::json!({"channel": c, "members": n})).collect();
    Ok(json_response(StatusCode::OK, &serde_json::json!({"channels": list, "next_cursor": page.next})))
}

/// `GET /api/presence?channel=C` (server API) → `{"channel":C,"members":[{"user_id","device_id"}…]}`:
/// who is in the channel on every instance (this instance's view while Redis is down).
pub async fn presence(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    require_api_key(&req, state.config.auth.api_key.as_deref())?;
    let channel = crate::util::query_pairs(req.uri().query().unwrap_or(""))
        .find(|(k, _)| k == "channel")
        .map(|(_, v)| v)
        .ok_or_else(|| HttpError::BadRequest("channel is required".into()))?;
    if !crate::channel::valid_name(&channel) {
        return Err(HttpError::BadRequest("channel names are 1-128 bytes of [A-Za-z0-9:_.@=-]".into()));
    }
    // The bus answers with the WebSocket `presence` frame; its members are the answer.
    let frame = state.bus.presence(&channel, &None).await;
    let parsed: serde_json::Value = serde_json::from_str(&frame).map_err(|_| HttpError::Internal)?;
    let members = parsed.get("members").cloned().unwrap_or_else(|| serde_json::json!([]));
    Ok(json_response(StatusCode::OK, &serde_json::json!({"channel": channel, "members": members})))
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

/// `GET /api/server-key` (public) → `{"alg":"Ed25519","key_id":K,"public_key":PK}`: the key clients
/// pin to check the server's signatures; `key_id` is the first 16 hex characters of SHA-256 of
/// the raw public key, `public_key` the raw 32 bytes in base64url without padding.
pub fn server_key(state: &AppState) -> Response<Full<Bytes>> {
    let k = &state.server_key;
    json_response(
        StatusCode::OK,
        &serde_json::json!({"alg": "Ed25519", "key_id": k.key_id, "public_key": k.public_key}),
    )
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
            "connections": m.connections.get(),
            "deliveries": state.registry.deliveries(),
            "slow_consumer_disconnects": m.slow_consumer_closes.get(),
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
