//! Publishing an event, one path for the WebSocket session and the server API: live (encoded
//! once, sent through the bus to every route of the channel, fan-out timed) or durable (a
//! client's: bounded, taken from the user's quota and queued for the group commit; the server's:
//! answered once stored). Refusals are typed ([`PublishError`]); `error` maps them. Publishes on
//! signed channels are checked first ([`signed`]).

pub mod signed;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Message;

use crate::app::AppState;
use crate::channel;
use crate::durable::{DurableError, Publish, Reply};
pub use crate::error::PublishError;
use crate::identity::Identity;
use crate::protocol::{self, Encoded, RequestId, MAX_EVENT_LEN, MAX_MSG_ID_LEN};
use crate::registry::ConnHandle;
use crate::store::events::Appended;
use crate::util::now_millis;
pub use signed::{Sender, SignedDone, SignedRequest};

/// A client's event for a durable channel (a `publish` frame, its channel authorized).
pub struct ClientEvent {
    pub channel: String,
    pub event: String,
    /// JSON text.
    pub data: Vec<u8>,
    pub msg_id: Option<Box<str>>,
}

/// An event from the server API (`POST /api/publish`), not yet validated.
pub struct ServerEvent<'a> {
    pub channel: String,
    pub event: String,
    /// JSON text.
    pub data: &'a [u8],
    pub msg_id: Option<String>,
}

/// What a server publish became.
pub enum Published {
    /// Sent live; the connections on this instance it reached.
    Live { local_recipients: usize },
    /// Stored (or found stored under the same `msg_id`).
    Stored(Appended),
}

/// A client's durable publish that was refused, and the request it answers.
pub struct Refusal {
    pub error: PublishError,
    pub id: RequestId,
}

impl Refusal {
    fn new(error: PublishError, p: Publish) -> Refusal {
        let id = match p.reply {
            Reply::Conn { id, .. } => id,
            Reply::Http(_) => None,
        };
        Refusal { error, id }
    }
}

/// The one publish path. Cheap to make where it is needed: it only borrows the shared state.
#[derive(Clone, Copy)]
pub struct Publisher<'a> {
    state: &'a AppState,
}

impl<'a> Publisher<'a> {
    pub fn new(state: &'a AppState) -> Publisher<'a> {
        Publisher { state }
    }

    /// Sends one frame to the members of `channel` through the bus (except connection `origin`;
    /// 0: none), timing publish → every local recipient enqueued. The local recipients.
    pub fn send(&self, channel: &str, msg: Message, origin: u64) -> usize {
        let started = Instant::now();
        let n = self.state.bus.publish(channel, msg, origin);
        self.state.metrics.fanout_seconds.observe(started.elapsed().as_secs_f64());
        n
    }

    /// Sends an event frame, encoded once, to every route of `channel` (a `dm:` channel reaches
    /// both users' channels): each route gets a shallow clone. The local recipients.
    pub fn route(&self, channel: &str, frame: &Encoded, origin: u64) -> usize {
        let mut n = 0;
        channel::for_each_route(channel, |route| n += self.send(route, Message::Text(frame.clone()), origin));
        n
    }

    /// A client's event on a live (non-durable) channel, from connection `origin`.
    pub fn live(&self, channel: &str, event: &str, data: &[u8], from: &Identity, origin: u64) {
        let frame = protocol::event(channel, event, data, &from.user_id, &from.device_id, now_millis());
        self.route(channel, &frame, origin);
    }

    /// A client's durable event, ready for [`Publisher::submit`]; the writer answers on `conn`
    /// with `id`. Refused (`too_large`) over `SYNCGATE_DURABLE_MAX_EVENT_BYTES`: stored events
    /// are bounded (the queue, the store, every replay page hold them).
    pub fn durable(
        &self,
        ev: ClientEvent,
        from: &Identity,
        conn: &Arc<ConnHandle>,
        id: RequestId,
    ) -> Result<Box<Publish>, Refusal> {
        if let Err(error) = bounded(&ev.event, &ev.data, self.state.config.durable.max_event_bytes) {
            return Err(Refusal { error, id });
        }
        Ok(Box::new(Publish {
            channel: ev.channel,
            event: ev.event,
            data: ev.data,
            from: Some((from.user_id.clone(), from.device_id.clone())),
            msg_id: ev.msg_id,
            origin: conn.id,
            ts: now_millis(),
            reply: Reply::Conn { conn: conn.clone(), id },
            sig: None,
        }))
    }

    /// Takes a client's durable publish from its user's quota (which may be counted in Redis)
    /// and queues it for the group commit; the writer then delivers and acknowledges it.
    /// Refused when the quota is used up (`rate_limited`) or the queue is full (`unavailable`).
    pub async fn submit(&self, p: Publish) -> Result<(), Refusal> {
        let bytes = (p.data.len() + p.event.len()) as u64;
        let admitted = match &p.from {
            Some((user, _)) => self.state.durable.quota.check(user, bytes).await,
            None => true,
        };
        if !admitted {
            return Err(Refusal::new(PublishError::QuotaUsedUp, p));
        }
        self.state.durable.submit(p).map_err(|p| Refusal::new(PublishError::QueueFull, *p))
    }

    /// A server API publish (`"from":{"user_id":"server"}`), validated: on a durable channel
    /// stored first and answered once committed, otherwise sent live to every route.
    pub async fn from_server(&self, ev: ServerEvent<'_>) -> Result<Published, PublishError> {
        validate_server(&ev.channel, &ev.event, ev.msg_id.as_deref())?;
        let now = now_millis();
        if self.state.durable.is_durable(&ev.channel) {
            let msg_id = ev.msg_id.map(String::into_boxed_str);
            let stored = self.state.durable.publish_from_server(ev.channel, ev.event, ev.data.to_vec(), msg_id, now);
            return match stored.await {
                Ok(a) => Ok(Published::Stored(a)),
                Err(DurableError::Refused(_)) => Err(PublishError::Refused),
                Err(e) => {
                    tracing::warn!(error = %e, "durable server publish failed");
                    Err(match e {
                        DurableError::Busy => PublishError::QueueFull,
                        _ => PublishError::NotStored,
                    })
                }
            };
        }
        let frame = protocol::server_event(&ev.channel, &ev.event, ev.data, now);
        Ok(Published::Live { local_recipients: self.route(&ev.channel, &frame, 0) })
    }
}

/// A durable event's `data` + `event` within `max` bytes.
fn bounded(event: &str, data: &[u8], max: usize) -> Result<(), PublishError> {
    match data.len() + event.len() > max {
        true => Err(PublishError::TooLarge { max }),
        false => Ok(()),
    }
}

/// What a client's frame gets from the decoder and `channel::authorize`, checked for a server
/// publish: a valid channel name (a `dm:` one naming two users), an event name and a `msg_id`
/// of bounded length.
pub fn validate_server(channel: &str, event: &str, msg_id: Option<&str>) -> Result<(), PublishError> {
    let invalid = |m: Cow<'static, str>| Err(PublishError::Invalid(m));
    if !channel::valid_name(channel) {
        return invalid("channel names are 1-128 bytes of [A-Za-z0-9:_.@=-]".into());
    }
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return invalid(format!("event must be 1-{MAX_EVENT_LEN} bytes").into());
    }
    if msg_id.is_some_and(|m| m.is_empty() || m.len() > MAX_MSG_ID_LEN) {
        return invalid(format!("msg_id must be 1-{MAX_MSG_ID_LEN} bytes").into());
    }
    if channel::is_dm_namespace(channel) && channel::dm_members(channel).is_none() {
        return invalid(channel::DM_RULE.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(channel: &str, event: &str, msg_id: Option<&str>) -> String {
        match validate_server(channel, event, msg_id) {
            Err(PublishError::Invalid(m)) => m.into_owned(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn server_publishes_are_validated_like_client_frames() {
        assert_eq!(validate_server("news", "e", None), Ok(()));
        assert_eq!(validate_server("dm:alice:bob", "e", Some("m1")), Ok(()));
        assert_eq!(invalid("bad channel", "e", None), "channel names are 1-128 bytes of [A-Za-z0-9:_.@=-]");
        assert_eq!(invalid(&"c".repeat(129), "e", None), "channel names are 1-128 bytes of [A-Za-z0-9:_.@=-]");
        assert_eq!(invalid("news", "", None), "event must be 1-256 bytes");
        assert_eq!(invalid("news", &"e".repeat(MAX_EVENT_LEN + 1), None), "event must be 1-256 bytes");
        assert_eq!(validate_server("news", &"e".repeat(MAX_EVENT_LEN), None), Ok(()));
        assert_eq!(invalid("news", "e", Some("")), "msg_id must be 1-128 bytes");
        assert_eq!(invalid("news", "e", Some(&"m".repeat(MAX_MSG_ID_LEN + 1))), "msg_id must be 1-128 bytes");
        assert_eq!(invalid("dm:alice", "e", None), channel::DM_RULE);
    }

    #[test]
    fn durable_events_are_bounded_by_event_plus_data() {
        assert_eq!(bounded("e", &[b'x'; 63], 64), Ok(()));
        assert_eq!(bounded("ee", &[b'x'; 63], 64), Err(PublishError::TooLarge { max: 64 }));
        assert_eq!(bounded("", &[], 64), Ok(()));
    }
}
