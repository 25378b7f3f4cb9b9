//! One inbound message → a [`Step`] for the loop: counted, rate limited, decoded, then handled by
//! one function per request type. A request that must wait on a backend becomes a step the loop
//! starts as a pending request ([`super::pending`]); everything else answers at once.

use std::time::Instant;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use super::{error_frame, HookPublish, HookWait, Session, Step, Subscribe, Then};
use crate::authz::Decision;
use crate::channel::{self, Action, ChannelError};
use crate::error::{CloseReason, FrameError};
use crate::limits::Verdict;
use crate::metrics::FrameIn;
use crate::protocol::{self, ErrorCode, Request, RequestId, SigFields};
use crate::publish::{ClientEvent, Publisher, SignedRequest};
use crate::util::now_millis;

fn reply(frame: protocol::Encoded) -> Step {
    Step::Reply(Message::Text(frame))
}

fn refuse(e: impl Into<FrameError>, id: &RequestId) -> Step {
    Step::Reply(error_frame(e, id))
}

impl Session<'_> {
    pub(super) fn on_message(&mut self, msg: Message) -> Step {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(b) => return self.on_binary(b),
            Message::Close(_) => {
                self.count_in(FrameIn::Control, 0);
                return Step::Close(CloseReason::Normal);
            }
            other => {
                self.count_in(FrameIn::Control, other.len());
                return Step::Nothing;
            }
        };
        let frame = match protocol::decode(text.as_bytes(), &mut self.scratch, self.state.config.limits.max_json_depth)
        {
            Ok(f) => f,
            Err(e) => {
                self.count_in(FrameIn::Invalid, text.len());
                if let Some(step) = self.rate_limit(&e.id) {
                    return step;
                }
                return refuse(FrameError::new(e.code, e.message), &e.id);
            }
        };
        let id = frame.id;
        let kind = match frame.request {
            Request::Auth { .. } => FrameIn::Auth,
            Request::Subscribe { .. } => FrameIn::Subscribe,
            Request::Unsubscribe { .. } => FrameIn::Unsubscribe,
            Request::Publish { .. } => FrameIn::Publish,
            Request::Typing { .. } => FrameIn::Typing,
            Request::Presence { .. } => FrameIn::Presence,
            Request::Ping => FrameIn::Ping,
            Request::Ack { .. } => FrameIn::Ack,
        };
        self.count_in(kind, text.len());
        if let Some(step) = self.rate_limit(&id) {
            return step;
        }
        match frame.request {
            Request::Auth { token } => Step::Reauth(token, id),
            Request::Subscribe { channel, since } => self.on_subscribe(&channel, since, id),
            Request::Unsubscribe { channel } => self.on_unsubscribe(&channel, &id),
            Request::Publish { channel, event, data, msg_id, signed } => {
                self.on_publish(&channel, event, data, msg_id, signed, id)
            }
            Request::Typing { channel, typing } => self.on_typing(&channel, typing, &id),
            Request::Presence { channel } => self.on_presence(&channel, id),
            Request::Ping => reply(protocol::pong(now_millis(), &id)),
            Request::Ack { channel, seq } => self.on_ack(&channel, seq, &id),
        }
    }

    /// The fast path: a binary frame is relayed verbatim to the user's other connections.
    fn on_binary(&mut self, b: Bytes) -> Step {
        self.count_in(FrameIn::Binary, b.len());
        if let Some(step) = self.rate_limit(&None) {
            return step;
        }
        Publisher::new(self.state).send(&self.user_channel, Message::Binary(b), self.conn().id);
        Step::Nothing
    }

    /// `subscribed` at once when already a member of a live channel; otherwise the bus
    /// subscription (a new channel) and the stream state (a durable one) are awaited first.
    fn on_subscribe(&mut self, channel: &str, since: Option<u64>, id: RequestId) -> Step {
        match self.authorize(channel, Action::Subscribe) {
            Ok(ch) => self.subscribe_granted(ch, since, id),
            Err(ChannelError::NotGranted) => self.ask_hook(channel, Then::Subscribe(since), id),
            Err(e) => refuse(e, &id),
        }
    }

    /// A subscribe the rules (or the hook) allowed.
    pub(super) fn subscribe_granted(&mut self, ch: String, since: Option<u64>, id: RequestId) -> Step {
        let new = match self.join(&ch) {
            Ok(new) => new,
            Err(e) => return refuse(e, &id),
        };
        let durable = self.state.durable.is_durable(&ch);
        if !new && !durable {
            return reply(protocol::channel_reply("subscribed", &ch, &id));
        }
        if durable {
            // Live events are held back until the stream state is known.
            self.streams().hold(&ch);
        }
        Step::Subscribe(Box::new(Subscribe { channel: ch, id, new, durable, since }))
    }

    fn on_unsubscribe(&mut self, channel: &str, id: &RequestId) -> Step {
        let ch = match self.authorize(channel, Action::Subscribe) {
            Ok(ch) => ch,
            Err(e) => return refuse(e, id),
        };
        if ch == self.user_channel {
            return refuse(FrameError::new(ErrorCode::BadRequest, "the user channel cannot be left"), id);
        }
        self.membership.leave(&ch);
        if let Some(st) = self.streams.as_deref_mut() {
            st.forget(&ch);
        }
        reply(protocol::channel_reply("unsubscribed", &ch, id))
    }

    /// A live channel: sent to every route at once (`ack` when the request has an `id`). A
    /// durable one: bounded, then its quota is checked and it is queued as a pending request
    /// (the writer acks once it is committed). A signed one: its signature is checked first, as
    /// a pending request ([`crate::publish::signed`]).
    fn on_publish(
        &mut self,
        channel: &str,
        event: String,
        data: Vec<u8>,
        msg_id: Option<Box<str>>,
        signed: Option<Box<SigFields>>,
        id: RequestId,
    ) -> Step {
        match self.authorize(channel, Action::Publish) {
            Ok(ch) => self.publish_granted(ch, event, data, msg_id, signed, id),
            Err(ChannelError::NotGranted) => {
                self.ask_hook(channel, Then::Publish(Box::new(HookPublish { event, data, msg_id, signed })), id)
            }
            Err(e) => refuse(e, &id),
        }
    }

    /// A publish the rules (or the hook) allowed.
    pub(super) fn publish_granted(
        &mut self,
        ch: String,
        event: String,
        data: Vec<u8>,
        msg_id: Option<Box<str>>,
        signed: Option<Box<SigFields>>,
        id: RequestId,
    ) -> Step {
        if self.state.config.signed.is_signed(&ch) {
            return Step::Signed(Box::new(SignedRequest { channel: ch, event, data, msg_id, fields: signed, id }));
        }
        let publisher = Publisher::new(self.state);
        if self.state.durable.is_durable(&ch) {
            let ev = ClientEvent { channel: ch, event, data, msg_id };
            return match publisher.durable(ev, &self.identity, self.conn(), id) {
                Ok(p) => Step::Durable(p),
                Err(refused) => refuse(refused.error, &refused.id),
            };
        }
        publisher.live(&ch, &event, &data, &self.identity, self.conn().id);
        match &id {
            Some(id) => reply(protocol::ack(id, &ch)),
            None => Step::Nothing,
        }
    }

    /// Sent to the channel's members only (never routed: no `dm:` fan-out to user channels).
    fn on_typing(&mut self, channel: &str, typing: bool, id: &RequestId) -> Step {
        let ch = match self.authorize(channel, Action::Subscribe) {
            Ok(ch) => ch,
            Err(e) => return refuse(e, id),
        };
        let frame = protocol::typing(&ch, &self.identity.user_id, &self.identity.device_id, typing);
        Publisher::new(self.state).send(&ch, Message::Text(frame), self.conn().id);
        Step::Nothing
    }

    /// A cluster-wide query: a pending request.
    fn on_presence(&mut self, channel: &str, id: RequestId) -> Step {
        match self.authorize(channel, Action::Subscribe) {
            Ok(ch) => Step::Presence(ch, id),
            Err(e) => refuse(e, &id),
        }
    }

    /// The device has read a durable channel up to `seq` (`read_ack` when the request has an
    /// `id`).
    fn on_ack(&mut self, channel: &str, seq: u64, id: &RequestId) -> Step {
        let ch = match self.authorize(channel, Action::Subscribe) {
            Ok(ch) => ch,
            Err(e) => return refuse(e, id),
        };
        if !self.state.durable.is_durable(&ch) {
            return refuse(FrameError::new(ErrorCode::BadRequest, "not a durable channel"), id);
        }
        self.state.durable.ack(&self.identity.user_id, &self.identity.device_id, &ch, seq);
        match id {
            Some(_) => reply(protocol::read_ack(id, &ch, seq)),
            None => Step::Nothing,
        }
    }

    /// The canonical name of a channel this connection may use for `action`. A channel the
    /// token does not grant but the hook governs is allowed or refused by a cached decision;
    /// without one it stays [`ChannelError::NotGranted`] (subscribe and publish ask the hook,
    /// the other requests are refused).
    pub(super) fn authorize(&self, channel: &str, action: Action) -> Result<String, ChannelError> {
        match channel::authorize(channel, &self.identity, self.state.config.namespaces(), action) {
            Err(ChannelError::NotGranted) => match self.hook_for(channel) {
                Some(hook) => match hook.cached(&self.identity.user_id, channel, action) {
                    Some(true) => Ok(channel.to_string()),
                    Some(false) => Err(ChannelError::Forbidden),
                    None => Err(ChannelError::NotGranted),
                },
                None => Err(ChannelError::Forbidden),
            },
            other => other,
        }
    }

    /// The hook, when it governs `channel` (a name `authorize` found valid and ungranted).
    fn hook_for(&self, channel: &str) -> Option<&crate::authz::Hook> {
        self.state.authz.as_ref().filter(|_| self.state.config.authz.governs(channel))
    }

    /// No cached decision: the request waits for the hook (a pending request).
    fn ask_hook(&mut self, channel: &str, then: Then, id: RequestId) -> Step {
        Step::Hook(Box::new(HookWait { channel: channel.to_string(), then, id }))
    }

    /// The hook answered a request that waited for it: carried on, or refused.
    pub(super) fn hook_decided(&mut self, w: HookWait, decision: Decision) -> Step {
        match decision {
            Decision::Allow => match w.then {
                Then::Subscribe(since) => self.subscribe_granted(w.channel, since, w.id),
                Then::Publish(p) => {
                    let HookPublish { event, data, msg_id, signed } = *p;
                    self.publish_granted(w.channel, event, data, msg_id, signed, w.id)
                }
            },
            Decision::Deny => refuse(ChannelError::Forbidden, &w.id),
            Decision::Unavailable => {
                refuse(FrameError::new(ErrorCode::Unavailable, "authorization is unavailable; retry"), &w.id)
            }
        }
    }

    /// Joins `requested` (`?channel=` at open), asking the hook when it governs a channel the
    /// token does not grant (the connection is not serving yet, so this may wait);
    /// `Ok((channel, new))` where `new` means the bus subscription must be taken (and
    /// confirmed) before replying.
    pub(super) async fn subscribe_at_open(&mut self, requested: &str) -> Result<(String, bool), FrameError> {
        let ch = match self.authorize(requested, Action::Subscribe) {
            Ok(ch) => ch,
            Err(ChannelError::NotGranted) => {
                let Some(hook) = self.hook_for(requested) else {
                    return Err(ChannelError::Forbidden.into());
                };
                let (user, device) = (self.identity.user_id.clone(), self.identity.device_id.clone());
                match hook.decide(user, device, requested.to_string(), Action::Subscribe).await {
                    Decision::Allow => requested.to_string(),
                    Decision::Deny => return Err(ChannelError::Forbidden.into()),
                    Decision::Unavailable => {
                        return Err(FrameError::new(ErrorCode::Unavailable, "authorization is unavailable; retry"))
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        let new = self.join(&ch)?;
        Ok((ch, new))
    }

    /// Joins an allowed channel; `new`: the bus subscription must be taken first.
    fn join(&mut self, ch: &str) -> Result<bool, FrameError> {
        if !self.membership.is_member(ch)
            && self.membership.count() >= self.state.config.limits.max_channels_per_connection as usize
        {
            return Err(FrameError::new(ErrorCode::BadRequest, "too many channels on this connection"));
        }
        Ok(self.membership.join(ch) == crate::registry::Subscribed::New)
    }

    fn count_in(&self, kind: FrameIn, bytes: usize) {
        let m = &self.state.metrics;
        m.frames_in.inc(kind);
        m.bytes_in.add(bytes as u64);
    }

    fn rate_limit(&mut self, id: &RequestId) -> Option<Step> {
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => None,
            Verdict::Drop => {
                self.state.metrics.rate_limited.inc();
                Some(refuse(FrameError::new(ErrorCode::RateLimited, "rate limit exceeded; message dropped"), id))
            }
            Verdict::Close => Some(Step::Close(CloseReason::RateAbuse)),
        }
    }
}
