//! Durable streams over HTTP (Bearer access token, any JWT `/ws` accepts):
//! `GET /api/history`, `GET /api/conversation` and `GET /api/conversations`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::authenticate;
use crate::app::AppState;
use crate::channel::Action;
use crate::error::{json_response, HttpError};
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

/// `from` of an event in a page: the sender, or the server.
#[derive(serde::Serialize)]
struct From<'a> {
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    /// A signed event's sender key.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<&'a str>,
}

/// One event of a page. `data` is the stored JSON text, written as it is (never rebuilt as a
/// tree: a page of large events costs their bytes, not a multiple of them).
#[derive(serde::Serialize)]
struct EventOut<'a> {
    seq: u64,
    event: &'a str,
    data: &'a serde_json::value::RawValue,
    from: From<'a>,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
    /// A signed event's signature fields (as the live and replayed frames carry them).
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig_ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct PageOut<'a> {
    channel: &'a str,
    latest_seq: u64,
    has_more: bool,
    events: Vec<EventOut<'a>>,
}

fn event_out(e: &StoredEvent) -> EventOut<'_> {
    // Stored data passed the frame checks when it was published; `null` if it somehow does not
    // parse (the page stays valid JSON).
    let data = crate::util::json::from_slice(e.data.as_bytes(), crate::util::json::MAX_DEPTH_LIMIT)
        .unwrap_or(serde_json::value::RawValue::NULL);
    let sig = e.sig.as_ref();
    let from = match (&e.user_id, &e.device_id) {
        (Some(u), Some(d)) => From { user_id: u, device_id: Some(d), public_key: sig.map(|s| &*s.public_key) },
        _ => From { user_id: "server", device_id: None, public_key: None },
    };
    EventOut {
        seq: e.seq,
        event: &e.event,
        data,
        from,
        ts: e.ts,
        msg_id: e.msg_id.as_deref(),
        nonce: sig.map(|s| &*s.nonce),
        sig_ts: sig.map(|s| s.sig_ts),
        sig: sig.map(|s| &*s.sig),
    }
}

/// Bytes an event adds to a page (its text plus the frame around it, roughly).
fn cost(e: &StoredEvent) -> usize {
    let sig = e.sig.as_ref().map_or(0, |s| s.nonce.len() + s.sig.len() + s.public_key.len() + 64);
    e.data.len() + e.event.len() + e.msg_id.as_ref().map_or(0, String::len) + sig + 128
}

/// Reads one page: `after` → the first `limit` events after it; otherwise the last `limit`
/// before `before` (or the newest). Always oldest first. A page holds at most
/// `SYNCGATE_HISTORY_PAGE_BYTES` of events (at least one): it stops early with `has_more`.
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
    let mut has_more = events.len() as u64 > limit;
    if has_more {
        if after.is_some() {
            events.pop();
        } else {
            events.remove(0);
        }
    }
    // The byte bound: keep the events nearest the starting point of the paging direction.
    let budget = state.config.durable.history_page_bytes;
    let mut used = 0;
    let keep = |e: &StoredEvent, used: &mut usize, first: bool| {
        *used += cost(e);
        first || *used <= budget
    };
    if after.is_some() {
        let n = events.iter().enumerate().take_while(|(i, e)| keep(e, &mut used, *i == 0)).count();
        if n < events.len() {
            events.truncate(n);
            has_more = true;
        }
    } else {
        let n = events.iter().rev().enumerate().take_while(|(i, e)| keep(e, &mut used, *i == 0)).count();
        if n < events.len() {
            events.drain(..events.len() - n);
            has_more = true;
        }
    }
    let body = PageOut { channel, latest_seq: latest, has_more, events: events.iter().map(event_out).collect() };
    let bytes = serde_json::to_vec(&body).map_err(|_| HttpError::Internal)?;
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// `GET /api/history?channel=C&after=&before=&limit=`: a durable channel's events, under the
/// same rules as `subscribe` (403 where subscribing is forbidden, 400 for a bad or non-durable
/// channel).
pub async fn history(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let q = query(&req);
    let requested = get(&q, "channel").ok_or_else(|| HttpError::BadRequest("channel is required".into()))?;
    let identity = crate::admission::identity(claims, None)
        .map_err(|_| HttpError::Unauthorized(crate::auth::AuthError::Invalid))?;
    let channel = match crate::channel::authorize(requested, &identity, state.config.namespaces(), Action::Subscribe) {
        // Not granted by the token, on a channel the hook governs: the hook's subscribe decision.
        Err(crate::channel::ChannelError::NotGranted) => ask_hook(&state, &identity, requested).await?,
        other => other?,
    };
    if !state.durable.is_durable(&channel) {
        return Err(HttpError::BadRequest(format!("{channel} is not a durable channel (SYNCGATE_DURABLE_NAMESPACES)")));
    }
    page(&state, &channel, number(&q, "after")?, number(&q, "before")?, limit(&q)?).await
}

/// The authorization hook's subscribe decision for `channel` (cached or asked): the channel, 403
/// when denied or not governed by the hook, 503 when the hook is unavailable.
async fn ask_hook(state: &AppState, identity: &crate::identity::Identity, channel: &str) -> Result<String, HttpError> {
    use crate::authz::Decision;
    let Some(hook) = state.authz.as_ref().filter(|_| state.config.authz.governs(channel)) else {
        return Err(crate::channel::ChannelError::Forbidden.into());
    };
    let (user, device) = (identity.user_id.clone(), identity.device_id.clone());
    match hook.decide(user, device, channel.to_string(), Action::Subscribe).await {
        Decision::Allow => Ok(channel.to_string()),
        Decision::Deny => Err(crate::channel::ChannelError::Forbidden.into()),
        Decision::Unavailable => Err(HttpError::Unavailable),
    }
}

/// `GET /api/conversation?with=USER_ID&before=&limit=`: the caller's direct messages with one
/// user (the `dm:` channel of the two), newest page first, oldest first within the page.
pub async fn conversation(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    let claims = authenticate(&state, &req).await?;
    super::limit_api(&state, &claims.user_id)?;
    let q = query(&req);
    let with = get(&q, "with").ok_or_else(|| HttpError::BadRequest("with is required".into()))?;
    if !crate::channel::valid_user_id(with) || with == claims.user_id {
        return Err(HttpError::BadRequest("with must be another user's id".into()));
    }
    let me = claims.user_id.as_str();
    let channel = crate::channel::dm_channel(me, with);
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
    super::limit_api(&state, &claims.user_id)?;
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
