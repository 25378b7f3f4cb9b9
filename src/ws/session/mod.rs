//! One connection's life in one task: optional first-frame auth, `welcome`, then a loop that
//! reads requests, writes queued frames in batches (many frames per flush), pings, and enforces
//! the token's expiry — until a close reason ends it. Registry membership and the user's slot are
//! RAII guards, so every exit path (including an abrupt disconnect) sends `leave` and frees them.
//!
//! A request that waits on a backend (re-auth with a JWKS fetch, cluster presence, a subscribe
//! that confirms a bus subscription or reads a stream's state) runs as a pending future beside
//! the loop: queued frames keep flowing to the client meanwhile, and the next request is read
//! once it is answered (replies stay in request order). Replays are read page by page as the
//! queue makes room ([`super::streams`]). Every write is bounded by `SYNCGATE_WRITE_TIMEOUT_MS`
//! and every close lingers ([`super::io`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::io::{self, Ws};
use super::streams::{PageRequest, Streams, PAGE};
use crate::admission::{admit_claims, still_valid, AdmitGuard, Admitted, NotAdmitted, Refused};
use crate::app::AppState;
use crate::auth::{AuthError, Claims};
use crate::channel::{self, ChannelError};
use crate::durable::Replay;
use crate::error::CloseReason;
use crate::identity::Identity;
use crate::limits::{MessageLimiter, Verdict};
use crate::protocol::{self, ErrorCode, Request, RequestId};
use crate::registry::{ConnHandle, Membership, UserSlot};
use crate::store::StoreError;
use crate::util::{now_millis, now_secs};

mod open;
use open::open;

/// A request waiting on a backend; it borrows only the shared state, never the session.
type Pending<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;
/// A replay page being read from the store.
type PageRead<'a> = Pin<Box<dyn Future<Output = (PageRequest, PageResult)> + Send + 'a>>;
type PageResult = Result<(Vec<Message>, Option<u64>), StoreError>;

/// What a pending request produced.
enum Done {
    Reauth(RequestId, Result<Claims, AuthError>),
    Presence(Message),
    /// The bus subscription is confirmed; a durable channel's state (and first replay page).
    Subscribed(Box<Subscribe>, Option<Result<Replay, StoreError>>),
    /// A durable publish was queued (`None`: the writer answers) or refused (the error frame).
    Durable(Option<Message>),
}

/// Awaits the future in `slot` (its `select!` branch is disabled while the slot is empty).
async fn poll_slot<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn error_frame(code: ErrorCode, message: &str, id: &RequestId) -> Message {
    Message::Text(protocol::error(code, message, id))
}

fn deadline_for(exp: u64) -> tokio::time::Instant {
    let left = exp.saturating_sub(now_secs()).min(365 * 86_400);
    tokio::time::Instant::now() + Duration::from_secs(left)
}

/// Per-connection state used while handling requests.
struct Session<'a> {
    state: &'a AppState,
    identity: Identity,
    user_channel: String,
    membership: Membership,
    limiter: MessageLimiter,
    /// simd-json scratch, reused across frames.
    scratch: Vec<u8>,
    /// Durable channels delivered in `seq` order with replays from the store (see
    /// [`super::streams`]). Boxed and usually `None`: most connections never subscribe to a
    /// durable channel, and this struct lives as long as the connection.
    streams: Option<Box<Streams>>,
}

/// A subscribe that needs the bus or the store before its reply.
struct Subscribe {
    channel: String,
    id: RequestId,
    new: bool,
    durable: bool,
    since: Option<u64>,
}

/// What handling one inbound message asks the loop to do.
enum Step {
    Nothing,
    Reply(Message),
    /// A fresh `auth` frame: verify it (rare and possibly slow: a pending request).
    Reauth(String, RequestId),
    /// Joined a channel for the first time on this connection (`new`: the bus subscription must
    /// be confirmed before `subscribed` goes out), or subscribed to a durable channel (its state,
    /// and with `since` the replay, come from the store).
    Subscribe(Box<Subscribe>),
    /// A cluster-wide presence query.
    Presence(String, RequestId),
    /// A durable publish: the user's quota is checked, then it is queued for the writer.
    Durable(Box<crate::durable::Publish>),
    Close(CloseReason),
}

impl Session<'_> {
    fn conn(&self) -> &Arc<ConnHandle> {
        &self.membership.conn
    }

    fn authorize(&self, channel: &str, id: &RequestId) -> Result<String, Message> {
        channel::authorize(channel, &self.identity, &self.state.config.auth.public_namespaces).map_err(|e| match e {
            ChannelError::Invalid(m) => error_frame(ErrorCode::BadRequest, m, id),
            ChannelError::Forbidden => error_frame(ErrorCode::Forbidden, "not allowed on this channel", id),
        })
    }

    /// Joins `requested`; `Ok((channel, new))` where `new` means the bus subscription must be
    /// taken (and confirmed) before replying.
    fn subscribe(&mut self, requested: &str, id: &RequestId) -> Result<(String, bool), Message> {
        let ch = self.authorize(requested, id)?;
        if !self.membership.is_member(&ch)
            && self.membership.count() >= self.state.config.limits.max_channels_per_connection as usize
        {
            return Err(error_frame(ErrorCode::BadRequest, "too many channels on this connection", id));
        }
        let new = self.membership.join(&ch) == crate::registry::Subscribed::New;
        Ok((ch, new))
    }

    /// Fans out through the bus, timing publish → every local recipient enqueued.
    fn publish(&self, channel: &str, msg: Message) {
        let started = Instant::now();
        self.state.bus.publish(channel, msg, self.conn().id);
        self.state.metrics.fanout_seconds.observe(started.elapsed().as_secs_f64());
    }

    /// Durable channels: queued for the next group commit; the writer delivers and acks.
    fn publish_durable(
        &self,
        channel: String,
        event: String,
        data: Vec<u8>,
        msg_id: Option<Box<str>>,
        id: RequestId,
    ) -> Step {
        // Stored events are bounded (the queue, the store, every replay page hold them).
        let max = self.state.config.durable.max_event_bytes;
        if data.len() + event.len() > max {
            let m = format!("a durable event is at most {max} bytes (SYNCGATE_DURABLE_MAX_EVENT_BYTES)");
            return Step::Reply(error_frame(ErrorCode::TooLarge, &m, &id));
        }
        let p = crate::durable::Publish {
            channel,
            event,
            data,
            from: Some((self.identity.user_id.clone(), self.identity.device_id.clone())),
            msg_id,
            origin: self.conn().id,
            ts: now_millis(),
            reply: crate::durable::Reply::Conn { conn: self.conn().clone(), id },
        };
        // The user's quota may be counted in Redis: checked (then queued) as a pending request.
        Step::Durable(Box::new(p))
    }

    fn streams(&mut self) -> &mut Streams {
        self.streams.get_or_insert_with(Default::default)
    }

    fn count_in(&self, kind: usize, bytes: usize) {
        let m = &self.state.metrics;
        m.frames_in[kind].inc();
        m.bytes_in.add(bytes as u64);
    }

    fn on_message(&mut self, msg: Message) -> Step {
        let text = match msg {
            Message::Text(t) => t,
            Message::Binary(b) => {
                self.count_in(7, b.len());
                if let Some(step) = self.rate_limit(&None) {
                    return step;
                }
                // The fast path: relayed verbatim to the user's other connections.
                self.publish(&self.user_channel.clone(), Message::Binary(b));
                return Step::Nothing;
            }
            Message::Close(_) => {
                self.count_in(9, 0);
                return Step::Close(CloseReason::Normal);
            }
            other => {
                self.count_in(9, other.len());
                return Step::Nothing;
            }
        };
        let frame = match protocol::decode(text.as_bytes(), &mut self.scratch, self.state.config.limits.max_json_depth)
        {
            Ok(f) => f,
            Err(e) => {
                self.count_in(8, text.len());
                if let Some(step) = self.rate_limit(&e.id) {
                    return step;
                }
                return Step::Reply(error_frame(e.code, &e.message, &e.id));
            }
        };
        let id = frame.id;
        let kind = match frame.request {
            Request::Auth { .. } => 0,
            Request::Subscribe { .. } => 1,
            Request::Unsubscribe { .. } => 2,
            Request::Publish { .. } => 3,
            Request::Typing { .. } => 4,
            Request::Presence { .. } => 5,
            Request::Ping => 6,
            Request::Ack { .. } => 10,
        };
        self.count_in(kind, text.len());
        if let Some(step) = self.rate_limit(&id) {
            return step;
        }
        let reply = match frame.request {
            Request::Ping => Message::Text(protocol::pong(now_millis(), &id)),
            Request::Subscribe { channel, since } => match self.subscribe(&channel, &id) {
                Err(m) => m,
                Ok((ch, new)) => {
                    let durable = self.state.durable.is_durable(&ch);
                    if !new && !durable {
                        Message::Text(protocol::channel_reply("subscribed", &ch, &id))
                    } else {
                        if durable {
                            // Live events are held back until the stream state is known.
                            self.streams().hold(&ch);
                        }
                        return Step::Subscribe(Box::new(Subscribe { channel: ch, id, new, durable, since }));
                    }
                }
            },
            Request::Ack { channel, seq } => match self.authorize(&channel, &id) {
                Err(m) => m,
                Ok(ch) if !self.state.durable.is_durable(&ch) => {
                    error_frame(ErrorCode::BadRequest, "not a durable channel", &id)
                }
                Ok(ch) => {
                    self.state.durable.ack(&self.identity.user_id, &self.identity.device_id, &ch, seq);
                    match &id {
                        Some(_) => Message::Text(protocol::read_ack(&id, &ch, seq)),
                        None => return Step::Nothing,
                    }
                }
            },
            Request::Unsubscribe { channel } => match self.authorize(&channel, &id) {
                Err(m) => m,
                Ok(ch) if ch == self.user_channel => {
                    error_frame(ErrorCode::BadRequest, "the user channel cannot be left", &id)
                }
                Ok(ch) => {
                    self.membership.leave(&ch);
                    if let Some(st) = self.streams.as_deref_mut() {
                        st.forget(&ch);
                    }
                    Message::Text(protocol::channel_reply("unsubscribed", &ch, &id))
                }
            },
            Request::Publish { channel, event, data, msg_id } => match self.authorize(&channel, &id) {
                Err(m) => m,
                Ok(ch) if self.state.durable.is_durable(&ch) => {
                    return self.publish_durable(ch, event, data, msg_id, id);
                }
                Ok(ch) => {
                    let frame = protocol::event(
                        &ch,
                        &event,
                        &data,
                        &self.identity.user_id,
                        &self.identity.device_id,
                        now_millis(),
                    );
                    channel::for_each_route(&ch, |route| self.publish(route, Message::Text(frame.clone())));
                    match &id {
                        Some(id) => Message::Text(protocol::ack(id, &ch)),
                        None => return Step::Nothing,
                    }
                }
            },
            Request::Typing { channel, typing } => match self.authorize(&channel, &id) {
                Err(m) => m,
                Ok(ch) => {
                    let frame = protocol::typing(&ch, &self.identity.user_id, &self.identity.device_id, typing);
                    self.publish(&ch, Message::Text(frame));
                    return Step::Nothing;
                }
            },
            Request::Presence { channel } => match self.authorize(&channel, &id) {
                Err(m) => m,
                Ok(ch) => return Step::Presence(ch, id),
            },
            Request::Auth { token } => return Step::Reauth(token, id),
        };
        Step::Reply(reply)
    }

    /// A fresh token was verified (or refused): the reply and, on success, the new expiry.
    fn reauthed(&mut self, id: &RequestId, verified: Result<Claims, AuthError>) -> (Message, Option<u64>) {
        match verified {
            Ok(claims) if claims.user_id == *self.identity.user_id => {
                if claims.device_id.as_deref().is_some_and(|d| d != &*self.identity.device_id)
                    || still_valid(self.state, &claims).is_err()
                {
                    return (error_frame(ErrorCode::Unauthorized, "invalid token", id), None);
                }
                self.identity.exp = claims.exp;
                self.identity.channels = claims.channels;
                (Message::Text(protocol::auth_ok(&self.identity.user_id, claims.exp, id)), Some(claims.exp))
            }
            Ok(_) => (error_frame(ErrorCode::Unauthorized, "token is for another user", id), None),
            Err(e) => (error_frame(ErrorCode::Unauthorized, &e.to_string(), id), None),
        }
    }

    fn rate_limit(&mut self, id: &RequestId) -> Option<Step> {
        match self.limiter.check(Instant::now()) {
            Verdict::Allow => None,
            Verdict::Drop => {
                self.state.metrics.rate_limited.inc();
                Some(Step::Reply(error_frame(ErrorCode::RateLimited, "rate limit exceeded; message dropped", id)))
            }
            Verdict::Close => Some(Step::Close(CloseReason::RateAbuse)),
        }
    }
}

impl<'a> Session<'a> {
    /// Starts the backend part of a request as a pending future (`None` for other steps).
    fn start(&mut self, step: Step) -> Option<Pending<'a>> {
        let state = self.state;
        Some(match step {
            Step::Reauth(token, id) => Box::pin(async move {
                let verified = state.verifier.verify(&token).await;
                Done::Reauth(id, verified)
            }),
            Step::Presence(ch, id) => {
                Box::pin(async move { Done::Presence(Message::Text(state.bus.presence(&ch, &id).await)) })
            }
            Step::Subscribe(sub) => {
                let (user, device) = (self.identity.user_id.clone(), self.identity.device_id.clone());
                Box::pin(async move {
                    if sub.new {
                        state.bus.subscribe(&sub.channel).await;
                    }
                    let opened = match sub.durable {
                        true => Some(state.durable.open_stream(&sub.channel, &user, &device, sub.since, PAGE).await),
                        false => None,
                    };
                    Done::Subscribed(sub, opened)
                })
            }
            Step::Durable(p) => Box::pin(async move { Done::Durable(submit_durable(state, *p).await) }),
            _ => return None,
        })
    }

    /// Applies what a pending request produced: its reply goes into the queue.
    fn finish(&mut self, done: Done) -> Option<u64> {
        let conn = self.conn().clone();
        match done {
            Done::Reauth(id, verified) => {
                let (reply, exp) = self.reauthed(&id, verified);
                conn.push(reply);
                return exp;
            }
            Done::Presence(reply) | Done::Durable(Some(reply)) => {
                conn.push(reply);
            }
            Done::Durable(None) => {}
            Done::Subscribed(sub, None) => {
                conn.push(Message::Text(protocol::channel_reply("subscribed", &sub.channel, &sub.id)));
            }
            Done::Subscribed(sub, Some(Err(e))) => {
                tracing::warn!(error = %e, channel = %sub.channel, "stream state unavailable");
                self.streams().forget(&sub.channel);
                conn.push(error_frame(ErrorCode::Unavailable, "history is unavailable; retry", &sub.id));
            }
            Done::Subscribed(sub, Some(Ok(r))) => {
                // The bus subscription was confirmed before the state was read: every event
                // committed after that read arrives live; the replay follows the reply.
                conn.push(Message::Text(protocol::subscribed_durable(&sub.channel, &r.state, &sub.id)));
                self.opened(&sub.channel, sub.since, r);
            }
        }
        None
    }

    /// The stream state of a held channel arrived: track it from there, its replay queued.
    fn opened(&mut self, channel: &str, since: Option<u64>, r: Replay) {
        let conn = self.conn().clone();
        let st = self.streams();
        match (r.state.recovered, since) {
            (Some(true), Some(since)) => st.replay(channel, since, r.frames, r.last, &conn),
            _ => st.opened(channel, r.last, false),
        }
    }
}

/// Takes a durable publish from its user's quota and queues it for the group commit; the
/// error frame when the quota is used up (`rate_limited`) or the queue is full (`unavailable`).
async fn submit_durable(state: &AppState, p: crate::durable::Publish) -> Option<Message> {
    let id = |p: crate::durable::Publish| match p.reply {
        crate::durable::Reply::Conn { id, .. } => id,
        crate::durable::Reply::Http(_) => None,
    };
    let bytes = (p.data.len() + p.event.len()) as u64;
    let admitted = match &p.from {
        Some((user, _)) => state.durable.quota.check(user, bytes).await,
        None => true,
    };
    if !admitted {
        let m = "durable publish quota used up for this minute \
                 (SYNCGATE_DURABLE_EVENTS_PER_MIN, SYNCGATE_DURABLE_BYTES_PER_MIN)";
        return Some(error_frame(ErrorCode::RateLimited, m, &id(p)));
    }
    match state.durable.submit(p) {
        Ok(()) => None,
        Err(p) => {
            Some(error_frame(ErrorCode::Unavailable, "durable write queue full; retry with the same msg_id", &id(*p)))
        }
    }
}

/// Writes everything queued until the queue stays empty (frames queued while flushing are
/// written in the next round): each frame fed and each flush bounded by the write timeout.
/// `Err(Some(r))`: close with `r`; `Err(None)`: the socket failed.
async fn drain(
    state: &AppState,
    s: &mut Session<'_>,
    ws: &mut Ws,
    conn: &ConnHandle,
    spare: &mut VecDeque<Message>,
) -> Result<(), Option<CloseReason>> {
    loop {
        if let Some(r) = conn.take(spare) {
            return Err(Some(r));
        }
        if spare.is_empty() {
            return Ok(());
        }
        for m in spare.drain(..) {
            if let Some(st) = s.streams.as_deref_mut() {
                if !st.admit(&m) {
                    continue;
                }
            }
            let kind = match &m {
                Message::Text(_) => 0,
                Message::Binary(_) => 1,
                Message::Ping(_) => 2,
                _ => 3,
            };
            state.metrics.frames_out[kind].inc();
            state.metrics.bytes_out.add(m.len() as u64);
            // A stalled feed still notices a close request (slow consumer, kick).
            io::timed(state, Some(conn), ws.feed(m)).await?;
        }
        conn.written();
        io::timed(state, Some(conn), ws.flush()).await?;
        if let Some(st) = s.streams.as_deref_mut() {
            st.push_backlog(conn);
        }
    }
}

/// A connection's whole life after the 101 response. This future is most of what an idle
/// connection costs, so it holds only the loop's state: the open phase and every rare or
/// slow step (first-frame auth, re-auth, the close handshake) run boxed.
pub async fn run(state: Arc<AppState>, on_upgrade: OnUpgrade, admitted: Box<Admitted>, _alive: mpsc::Sender<()>) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut ws =
        Box::pin(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(state.ws_config))).await;
    let started = Instant::now();
    let Some((mut s, _slot)) = Box::pin(open(&state, &mut ws, admitted)).await else {
        return;
    };
    let conn = s.conn().clone();
    let _open = crate::registry::OpenGuard::new(state.stats.clone());
    let hb = state.config.limits.heartbeat;
    let mut spare: VecDeque<Message> = VecDeque::new();
    let mut last_seen = Instant::now();
    // One timer serves both the heartbeat and the token expiry (smaller per-connection state).
    let mut next_ping = tokio::time::Instant::now() + hb;
    let mut expires = deadline_for(s.identity.exp);
    let timer = tokio::time::sleep_until(next_ping.min(expires));
    tokio::pin!(timer);

    // A request waiting on a backend, and a replay page being read (see the module docs).
    let mut request: Option<Pending<'_>> = None;
    let mut page: Option<PageRead<'_>> = None;

    // Everything the connection writes goes through its bounded queue (replies and replays
    // included), so there is one write path: swap the queue out, feed every frame, flush once.
    let reason: Option<CloseReason> = 'session: loop {
        if let Some(st) = s.streams.as_deref_mut() {
            st.push_backlog(&conn);
            if page.is_none() && conn.half_empty() {
                if let Some(req) = st.next_read() {
                    let state = &*state;
                    page = Some(Box::pin(async move {
                        let r = state.durable.page(&req.0, req.1, PAGE).await;
                        (req, r)
                    }));
                }
            }
            if st.is_empty() && page.is_none() {
                s.streams = None;
            }
        }
        tokio::select! {
            biased;
            _ = conn.notified() => {
                // Boxed: the write futures are large, and an idle connection should not carry
                // them in its task (one allocation per wake-up, none per frame).
                if let Err(r) = Box::pin(drain(&state, &mut s, &mut ws, &conn, &mut spare)).await {
                    break 'session r;
                }
            }
            done = poll_slot(&mut request) => {
                request = None;
                if let Some(exp) = s.finish(done) {
                    expires = deadline_for(exp);
                    timer.as_mut().reset(next_ping.min(expires));
                }
            }
            (req, read) = poll_slot(&mut page) => {
                page = None;
                let Some(st) = s.streams.as_deref_mut() else { continue };
                match read {
                    Ok((frames, last)) => st.page_read(&req, frames, last, &conn),
                    Err(e) => {
                        // The client would miss events: it reconnects and replays with `since`.
                        tracing::warn!(error = %e, channel = %req.0, "replay page unavailable");
                        st.page_failed(&req);
                        break Some(CloseReason::SlowConsumer);
                    }
                }
            }
            // The next request is read once the pending one is answered (replies in order).
            msg = ws.next(), if request.is_none() => match msg {
                None => break None,
                Some(Ok(m)) => {
                    last_seen = Instant::now();
                    match s.on_message(m) {
                        Step::Nothing => {}
                        Step::Reply(m) => {
                            conn.push(m);
                        }
                        Step::Close(r) => break Some(r),
                        step => request = s.start(step),
                    }
                }
                Some(Err(e)) => break io::classify(&e),
            },
            _ = &mut timer => {
                let now = tokio::time::Instant::now();
                if now >= expires {
                    break Some(CloseReason::TokenExpired);
                }
                if now >= next_ping {
                    // A pending request stops reading: the peer's pongs wait in the socket.
                    if last_seen.elapsed() >= hb * 2 && request.is_none() {
                        break Some(CloseReason::HeartbeatTimeout);
                    }
                    conn.push(Message::Ping(Default::default()));
                    next_ping = now + hb;
                    // Idle connections give back buffers grown by bursts.
                    conn.shrink(&mut spare);
                    if s.scratch.capacity() > 4096 {
                        s.scratch = Vec::new();
                    }
                }
                timer.as_mut().reset(next_ping.min(expires));
            }
        }
    };
    drop(request);
    drop(page);
    // Leave channels before the close handshake so peers learn at once.
    let user = s.identity.user_id.clone();
    let device = s.identity.device_id.clone();
    drop(s);
    if !state.registry.device_connected(&user, &device) {
        state.devices.seen(&user, &device, None, false);
    }
    if let Some(r) = reason {
        Box::pin(io::close(&state, &mut ws, r)).await;
    }
    // No close reason: the peer vanished (1006, abnormal closure).
    let code = reason.map(|r| r.code()).unwrap_or(1006);
    state.metrics.disconnect(code);
    tracing::info!(%user, conn = format_args!("{}-{:x}", state.instance, conn.id), code, secs = started.elapsed().as_secs_f64(), "connection closed");
}

#[cfg(test)]
mod size_probe {
    /// What every connection carries for its whole life: a type that grows past its bound makes
    /// every connection bigger (the idle-memory figure in the README) and must be a conscious
    /// choice — raise the bound here and say why in the commit.
    #[test]
    fn per_connection_types_stay_small() {
        use std::mem::size_of;
        let bounds = [
            ("Session", size_of::<super::Session<'static>>(), 224),
            ("Identity", size_of::<crate::identity::Identity>(), 72),
            ("Admitted", size_of::<crate::admission::Admitted>(), 264),
            ("MessageLimiter", size_of::<crate::limits::MessageLimiter>(), 48),
            ("Ws", size_of::<super::Ws>(), 328),
            ("Message", size_of::<super::Message>(), 56),
        ];
        for (name, size, bound) in bounds {
            assert!(size <= bound, "{name} is {size} bytes, over its bound of {bound}");
        }
    }
}
