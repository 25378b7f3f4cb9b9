//! Durable streams over HTTP (Bearer access token, any JWT `/ws` accepts):
//! `GET /api/history`, `GET /api/conversation` and `GET /api/conversations`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::authenticate;
use crate::error::{json_response, HttpError};
use crate::server::AppState;
use crate::store::events::StoredEvent;

/// Default and largest `limit`.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    crate::util::query_pairs(req.uri().query().unwrap_or("")).collect()
}

fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn number(q: &[(String, String)], key: &str) -> Result<Option<u64>, HttpError> {
    match get(q, key) {
        None | Some("") => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| HttpError::BadRequest(format!("{key} must be a non-negative integer")))
        }
    }
}

fn limit(q: &[(String, String)]) -> Result<u64, HttpError> {
    match number(q, "limit")? {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(HttpError::BadRequest(format!("limit must be 1-{MAX_LIMIT}"))),
    }
}

fn event_json(e: &StoredEvent) -> Value {
    // Stored data passed the depth check when it was published.
    let data: Value =
        crate::util::json::from_slice(e.data.as_bytes(), crate::util::json::MAX_DEPTH_LIMIT).unwrap_or(Value::Null);
    let from = match (&e.user_id, &e.device_id) {
        (Some(u), Some(d)) => json!({"user_id": u, "device_id": d}),
        _ => json!({"user_id": "server"}),
    };
    let mut v = json!({"seq": e.seq, "event": e.event, "data": data, "from": from, "ts": e.ts});
    if let Some(m) = &e.msg_id {
        v["msg_id"] = json!(m);
    }
    v
}

/// Reads one page: `after` → the first `limit` events after it; otherwise the last `limit`
/// before `before` (or the newest). Always oldest first.
async fn page(
    state: &AppState,
    channel: &str,
    after: Option<u64>,
    before: Option<u64>,
    limit: u64,
) -> Result<Response<Full<Bytes>>, HttpError> {
    let store = &state.store;
    let latest = store.head(channel).await?;
    // One extra row tells whether more remain in the direction of paging.
    let mut events = match after {
        Some(a) => store.events(channel, a, before, limit + 1, false).await?,
        None => store.events(channel, 0, before, limit + 1, true).await?,
    };
    let has_more = events.len() as u64 > limit;
    if has_more {
        if after.is_some() {
            events.pop();
        } else {
            events.remove(0);
        }
    }
    let body = json!({
        "channel": channel,
        "latest_seq": latest,
        "has_more": has_more,
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/history?channel=C&after=&before=&limit=`: a durable channel's events, under the
/// same rules as `subscribe` (403 where subscribing is forbidden, 400 for a bad or non-durable
/// channel).
pub async fn history(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    let q = query(&req);
    let requested = get(&q, "channel").ok_or_else(|| HttpError::BadRequest("channel is required".into()))?;
    let identity = crate::server::middleware::identity(claims, None).map_err(HttpError::Unauthorized)?;
    let channel =
        crate::channel::authorize(requested, &identity, &state.config.public_namespaces).map_err(|e| match e {
            crate::channel::ChannelError::Invalid(m) => HttpError::BadRequest(m.into()),
            crate::channel::ChannelError::Forbidden => HttpError::Forbidden("not allowed on this channel"),
        })?;
    if !state.durable.is_durable(&channel) {
        return Err(HttpError::BadRequest(format!("{channel} is not a durable channel (SYNCGATE_DURABLE_NAMESPACES)")));
    }
    page(&state, &channel, number(&q, "after")?, number(&q, "before")?, limit(&q)?).await
}

/// `GET /api/conversation?with=USER_ID&before=&limit=`: the caller's direct messages with one
/// user (the `dm:` channel of the two), newest page first, oldest first within the page.
pub async fn conversation(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    let q = query(&req);
    let with = get(&q, "with").ok_or_else(|| HttpError::BadRequest("with is required".into()))?;
    if !crate::channel::valid_user_id(with) || with == claims.user_id {
        return Err(HttpError::BadRequest("with must be another user's id".into()));
    }
    let me = claims.user_id.as_str();
    let channel = if me < with { format!("dm:{me}:{with}") } else { format!("dm:{with}:{me}") };
    if !state.durable.is_durable(&channel) {
        return Err(HttpError::BadRequest("dm channels are not durable here (SYNCGATE_DURABLE_NAMESPACES)".into()));
    }
    page(&state, &channel, number(&q, "after")?, number(&q, "before")?, limit(&q)?).await
}

/// `GET /api/conversations`: the caller's dm channels, most recent first:
/// `{"conversations":[{"channel","with","latest_seq","read_seq","unread","updated_at"}]}`. The read
/// position is the token's device's (`did`, or `?device_id=`), else the furthest of the user's.
pub async fn conversations(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    let q = query(&req);
    let device = claims.device_id.clone().or_else(|| get(&q, "device_id").map(str::to_string));
    let limit = limit(&q)?;
    // Positions acknowledged in the last moments are still in memory: write them first.
    state.durable.flush_positions().await;
    let list = state.store.conversations(&claims.user_id, device.as_deref(), limit).await?;
    let rows: Vec<Value> = list
        .iter()
        .map(|c| {
            json!({
                "channel": c.channel,
                "with": c.with,
                "latest_seq": c.latest_seq,
                "read_seq": c.read_seq,
                "unread": c.latest_seq.saturating_sub(c.read_seq),
                "updated_at": c.updated_at,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "conversations": rows })))
}
