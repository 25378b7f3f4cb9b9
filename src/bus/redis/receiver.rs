//! Incoming messages from the subscriber connection: syncgate batches from other instances
//! (forwarded as bytes, durable events through the sequencer), external JSON publishes
//! ([`external_event`]) and control messages.
//!
//! The control channel's JSON is encoded here too ([`RedisBus::broadcast_control`]), next to
//! its decoder, so the two cannot drift apart.

use std::sync::Arc;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::Message as RedisMessage;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::RedisBus;
use crate::bus::wire::{self, Kind, Record};
use crate::bus::Control;
use crate::error::CloseReason;
use crate::protocol::{self, Encoded};

/// The channel (under the prefix) that carries [`Control`] messages between instances.
pub(super) const CONTROL: &str = "!control";

/// Why an external publisher's message was dropped.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("{0}")]
    Json(#[from] crate::util::json::JsonError),
    #[error("`event` must be 1-{} bytes", crate::protocol::MAX_EVENT_LEN)]
    Event,
}

/// `{"event":E,"data":ANY}` from an external publisher → an `event` frame from the server.
/// Malformed, nested deeper than `max_depth`, or with a bad event name: an error naming why.
pub fn external_event(channel: &str, payload: &[u8], max_depth: usize) -> Result<Encoded, ExternalError> {
    #[derive(serde::Deserialize)]
    struct Ext<'a> {
        event: String,
        #[serde(borrow, default)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    let ext: Ext = crate::util::json::from_slice(payload, max_depth)?;
    if ext.event.is_empty() || ext.event.len() > crate::protocol::MAX_EVENT_LEN {
        return Err(ExternalError::Event);
    }
    let data = ext.data.map(|d| d.get().as_bytes()).unwrap_or(b"null");
    Ok(protocol::server_event(channel, &ext.event, data, crate::util::now_millis()))
}

impl RedisBus {
    /// Background task: every message on the subscriber connection, dispatched by channel.
    pub(super) async fn receive(self: Arc<Self>, mut rx: tokio::sync::broadcast::Receiver<RedisMessage>) {
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    self.metrics.bus.dropped.add(n);
                    tracing::warn!(lost = n, "Redis receiver lagged");
                    continue;
                }
                Err(_) => return,
            };
            let Some(channel) = msg.channel.strip_prefix(self.settings.prefix.as_str()) else {
                continue;
            };
            let payload = match msg.value {
                Value::Bytes(b) => b,
                Value::String(s) => s.into_inner(),
                _ => continue,
            };
            if channel == CONTROL {
                self.apply_control(&payload);
                continue;
            }
            self.deliver(channel, &payload);
        }
    }

    /// A message on a member channel: a syncgate batch if it decodes as one, else an external
    /// publish.
    fn deliver(&self, channel: &str, payload: &Bytes) {
        match wire::decode(payload) {
            Some(records) => {
                for r in records {
                    self.deliver_record(channel, r);
                }
            }
            None => self.deliver_external(channel, payload),
        }
    }

    /// One frame from another instance (this instance's own are skipped: delivered locally when
    /// published) to the local members of `channel`.
    fn deliver_record(&self, channel: &str, r: Record) {
        if r.instance == self.instance.0 {
            return; // delivered locally when it was published
        }
        self.metrics.bus.received.inc();
        let msg = match r.kind {
            Kind::Binary => Message::Binary(r.frame),
            Kind::Text => match Utf8Bytes::try_from(r.frame) {
                Ok(t) => Message::Text(t),
                Err(_) => return,
            },
        };
        // Connection ids are per instance: nobody here is the origin. A durable
        // event goes through the sequencer (in seq order with local commits).
        let durable = match &msg {
            Message::Text(t) => protocol::event_seq(t.as_bytes())
                .and_then(|(c, seq)| std::str::from_utf8(c).ok().map(|c| (c.to_string(), seq))),
            _ => None,
        };
        match durable {
            Some((durable_channel, seq)) => {
                self.registry.fan_out_durable(channel, &durable_channel, seq, msg, 0);
            }
            None => {
                self.registry.fan_out(channel, &msg, 0);
            }
        }
    }

    /// External publish: `{"event":E,"data":ANY}`; anything else is dropped (counted).
    fn deliver_external(&self, channel: &str, payload: &[u8]) {
        match external_event(channel, payload, self.settings.max_json_depth) {
            Ok(frame) => {
                self.metrics.bus.received.inc();
                self.registry.fan_out(channel, &Message::Text(frame), 0);
            }
            Err(e) => {
                self.metrics.bus.rejected.inc();
                tracing::debug!(%channel, error = %e, "dropped an external publish");
            }
        }
    }

    /// Applies `ctl` on this instance at once and publishes it for the others.
    pub(super) fn broadcast_control(&self, ctl: Control) {
        // Applied here at once; the other instances get it through Redis.
        let payload = match &ctl {
            Control::Disconnect { user_id, device_id } => {
                self.registry.close_user(user_id, device_id.as_deref(), CloseReason::Forbidden);
                serde_json::json!({"op": "disconnect", "user_id": user_id, "device_id": device_id})
            }
            Control::RevokeDevice { user_id, device_id } => {
                self.registry.revoke_device(user_id, device_id);
                serde_json::json!({"op": "revoke", "user_id": user_id, "device_id": device_id})
            }
            Control::TokenGeneration { user_id, gen } => {
                self.registry.set_token_gen(user_id, *gen);
                serde_json::json!({"op": "gen", "user_id": user_id, "gen": gen})
            }
            Control::DeviceKeyed { user_id, device_id, public_key } => {
                self.registry.mark_keyed(user_id, device_id, public_key);
                serde_json::json!({"op": "keyed", "user_id": user_id, "device_id": device_id, "public_key": public_key})
            }
        }
        .to_string();
        let client = self.client.clone();
        let key = self.key(CONTROL);
        tokio::spawn(async move {
            if let Err(e) = client.publish::<i64, _, _>(key, payload).await {
                tracing::warn!(error = %e, "control message not sent");
            }
        });
    }

    /// A control message from another instance (or any publisher): applied, or dropped (counted)
    /// when malformed.
    fn apply_control(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Ctl {
            op: String,
            user_id: String,
            #[serde(default)]
            device_id: Option<String>,
            #[serde(default)]
            gen: Option<u64>,
            #[serde(default)]
            public_key: Option<String>,
        }
        match crate::util::json::from_slice::<Ctl>(payload, self.settings.max_json_depth) {
            Ok(c) if c.op == "disconnect" => {
                self.registry.close_user(&c.user_id, c.device_id.as_deref(), CloseReason::Forbidden);
            }
            Ok(Ctl { op, user_id, device_id: Some(device_id), .. }) if op == "revoke" => {
                self.registry.revoke_device(&user_id, &device_id);
            }
            Ok(Ctl { op, user_id, device_id: Some(device_id), public_key: Some(pk), .. }) if op == "keyed" => {
                self.registry.mark_keyed(&user_id, &device_id, &pk);
            }
            Ok(Ctl { op, user_id, gen: Some(gen), .. }) if op == "gen" => {
                self.registry.set_token_gen(&user_id, gen);
            }
            _ => {
                self.metrics.bus.rejected.inc();
                tracing::debug!("ignored a malformed control message");
            }
        }
    }
}
