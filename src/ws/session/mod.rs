//! One connection's life in one task: optional first-frame auth, `welcome`, then a loop that
//! reads requests, writes queued frames in batches (many frames per flush), pings, and enforces
//! the token's expiry — until a close reason ends it. Registry membership and the user's slot are
//! RAII guards, so every exit path (including an abrupt disconnect) sends `leave` and frees them.
//!
//! A request that waits on a backend (re-auth with a JWKS fetch, cluster presence, a subscribe
//! that confirms a bus subscription or reads a stream's state, a durable publish's quota) runs as
//! a pending future beside the loop: queued frames keep flowing to the client meanwhile, and the
//! next request is read once it is answered (replies stay in request order). Replays are read
//! page by page as the queue makes room ([`super::streams`]). Every write is bounded by
//! `SYNCGATE_WRITE_TIMEOUT_MS` and every close lingers ([`super::io`]).
//!
//! ## Files
//! - `mod.rs`: the [`Session`], what a request asks of the loop ([`Step`]) and the loop ([`run`]):
//!   one `select!` over the queue, the pending request, a replay page, the socket and the timer.
//! - `open.rs`: opening a connection, up to `welcome` and the replies to `?channel=`.
//! - `reader.rs`: one inbound message → a [`Step`], one function per request type.
//! - `pending.rs`: starting the requests that wait on a backend and the replay page reads, and
//!   applying what they produced.
//! - `writer.rs`: the one write path (swap the queue out, feed every frame, flush once); it
//!   never waits on a request.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::io;
use super::streams::Streams;
use crate::admission::Admitted;
use crate::app::AppState;
use crate::error::{CloseReason, FrameError};
use crate::identity::Identity;
use crate::limits::MessageLimiter;
use crate::protocol::RequestId;
use crate::registry::{ConnHandle, Membership};
use crate::util::now_secs;

mod open;
mod pending;
mod reader;
mod writer;

use pending::{poll_slot, Finished, PageRead, Pending};

/// The `error` frame answering request `id`: every refusal a request meets converts into a
/// [`FrameError`].
fn error_frame(e: impl Into<FrameError>, id: &RequestId) -> Message {
    e.into().frame(id)
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
    /// The device's public key, read from the store on the first signed publish and kept (a key
    /// never changes once set; revoking the device closes the connection).
    device_key: Option<Arc<crate::auth::signed::DeviceKey>>,
    /// Until the open phase's replies (`welcome`, `?channel=`) are written: then the queue gives
    /// back what they made it allocate, instead of keeping it until the first heartbeat.
    opened: bool,
}

/// A subscribe that needs the bus or the store before its reply.
struct Subscribe {
    channel: String,
    id: RequestId,
    new: bool,
    durable: bool,
    since: Option<u64>,
}

/// A subscribe or publish waiting for the authorization hook, and what follows an allow.
struct HookWait {
    /// Canonical (the hook governs no alias).
    channel: String,
    then: Then,
    id: RequestId,
}

/// What a request waiting for the hook goes on to do when allowed.
enum Then {
    Subscribe(Option<u64>),
    Publish(Box<HookPublish>),
}

impl Then {
    fn action(&self) -> crate::channel::Action {
        match self {
            Then::Subscribe(_) => crate::channel::Action::Subscribe,
            Then::Publish(_) => crate::channel::Action::Publish,
        }
    }
}

/// A publish's fields while the hook decides.
struct HookPublish {
    event: String,
    data: Vec<u8>,
    msg_id: Option<Box<str>>,
    signed: Option<Box<crate::protocol::SigFields>>,
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
    /// A subscribe or publish the authorization hook decides (no cached decision).
    Hook(Box<HookWait>),
    /// A durable publish: the user's quota is checked, then it is queued for the writer.
    Durable(Box<crate::durable::Publish>),
    /// A publish on a signed channel: the key, signature and nonce are checked first.
    Signed(Box<crate::publish::SignedRequest>),
    Close(CloseReason),
}

impl Session<'_> {
    fn conn(&self) -> &Arc<ConnHandle> {
        &self.membership.conn
    }

    fn streams(&mut self) -> &mut Streams {
        self.streams.get_or_insert_with(Default::default)
    }

    /// The timer fired: close at the token's expiry, or when the peer went quiet; otherwise ping.
    /// `waiting`: a request is pending.
    fn on_timer(&mut self, clock: &mut Clock, spare: &mut VecDeque<Message>, waiting: bool) -> Result<(), CloseReason> {
        let now = tokio::time::Instant::now();
        if now >= clock.expires {
            return Err(CloseReason::TokenExpired);
        }
        if now >= clock.next_ping {
            // A pending request stops reading: the peer's pongs wait in the socket.
            if clock.last_seen.elapsed() >= clock.heartbeat * 2 && !waiting {
                return Err(CloseReason::HeartbeatTimeout);
            }
            self.conn().push(Message::Ping(Default::default()));
            clock.next_ping = now + clock.heartbeat;
            // Idle connections give back buffers grown by bursts (busy ones keep theirs: the
            // fan-out would otherwise allocate them again).
            self.conn().shrink_if_idle(spare);
            if self.scratch.capacity() > 4096 {
                self.scratch = Vec::new();
            }
        }
        Ok(())
    }
}

/// One timer serves both the heartbeat and the token expiry (smaller per-connection state):
/// its two deadlines, and when the peer was last heard.
struct Clock {
    heartbeat: Duration,
    next_ping: tokio::time::Instant,
    expires: tokio::time::Instant,
    /// The tokio clock, like the timer it is compared against (tests may pause it).
    last_seen: tokio::time::Instant,
}

impl Clock {
    fn new(heartbeat: Duration, exp: u64) -> Clock {
        let last_seen = tokio::time::Instant::now();
        Clock { heartbeat, next_ping: tokio::time::Instant::now() + heartbeat, expires: deadline_for(exp), last_seen }
    }

    /// When the timer fires next.
    fn next(&self) -> tokio::time::Instant {
        self.next_ping.min(self.expires)
    }
}

/// Leaves every channel (before the close handshake, so peers learn at once); a device whose
/// last connection this was is seen offline. The user, for the log.
fn leave(s: Session<'_>) -> Arc<str> {
    let (state, user, device) = (s.state, s.identity.user_id.clone(), s.identity.device_id.clone());
    drop(s);
    if !state.registry.device_connected(&user, &device) {
        state.devices.seen(&user, &device, None, false);
    }
    user
}

/// A connection's whole life after the 101 response. This future is most of what an idle
/// connection costs, so it holds only the loop's state: the open phase and every rare or
/// slow step (first-frame auth, re-auth, the close handshake) run boxed.
pub async fn run(state: Arc<AppState>, on_upgrade: OnUpgrade, admitted: Box<Admitted>, _alive: mpsc::Sender<()>) {
    let Ok(upgraded) = on_upgrade.await.inspect_err(|e| tracing::debug!(error = %e, "upgrade failed")) else {
        return;
    };
    let mut ws =
        Box::pin(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(state.ws_config))).await;
    let started = Instant::now();
    let Some((mut s, _slot)) = Box::pin(open::open(&state, &mut ws, admitted)).await else {
        return;
    };
    let conn = s.conn().clone();
    let _open = crate::registry::OpenGuard::new(state.metrics.clone());
    let mut spare: VecDeque<Message> = VecDeque::new();
    let mut clock = Clock::new(state.config.limits.heartbeat, s.identity.exp);
    let timer = tokio::time::sleep_until(clock.next());
    tokio::pin!(timer);
    // A request waiting on a backend, and a replay page being read (see the module docs).
    let mut request: Option<Pending<'_>> = None;
    let mut page: Option<PageRead<'_>> = None;

    // Everything the connection writes goes through its bounded queue (replies and replays
    // included), so there is one write path: swap the queue out, write every frame, flush once.
    let (reason, torn): writer::Stop = 'session: loop {
        s.read_next_page(&mut page);
        tokio::select! {
            biased;
            _ = conn.notified() => {
                // Boxed: the write futures are large, and an idle connection should not carry
                // them in its task (one allocation per wake-up, none per frame).
                if let Err(stop) = Box::pin(writer::drain(&state, &mut s, &mut ws, &conn, &mut spare)).await {
                    break 'session stop;
                }
                if std::mem::take(&mut s.opened) {
                    conn.shrink(&mut spare);
                }
            }
            done = poll_slot(&mut request) => {
                request = None;
                match s.finish(done) {
                    Finished::Expires(exp) => {
                        clock.expires = deadline_for(exp);
                        timer.as_mut().reset(clock.next());
                    }
                    Finished::Next(step) => request = s.start(*step),
                    Finished::Done => {}
                }
            }
            (req, read) = poll_slot(&mut page) => {
                page = None;
                if let Err(r) = s.page_read(&req, read) {
                    break (Some(r), None);
                }
            }
            // The next request is read once the pending one is answered (replies in order).
            msg = ws.next(), if request.is_none() => match msg {
                None => break (None, None),
                Some(Ok(m)) => {
                    clock.last_seen = tokio::time::Instant::now();
                    match s.on_message(m) {
                        Step::Close(r) => break (Some(r), None),
                        step => request = s.start(step),
                    }
                }
                Some(Err(e)) => break (io::classify(&e), None),
            },
            _ = &mut timer => {
                if let Err(r) = s.on_timer(&mut clock, &mut spare, request.is_some()) {
                    break (Some(r), None);
                }
                timer.as_mut().reset(clock.next());
            }
        }
    };
    drop(request);
    drop(page);
    let user = leave(s);
    if let Some(r) = reason {
        Box::pin(io::close(&state, &mut ws, r, torn)).await;
    }
    // No close reason: the peer vanished (1006, abnormal closure).
    let code = reason.map(|r| r.code()).unwrap_or(1006);
    state.metrics.disconnects.inc(crate::metrics::CloseCode::from_code(code));
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
            ("Identity", size_of::<crate::identity::Identity>(), 56),
            ("Admitted", size_of::<crate::admission::Admitted>(), 264),
            ("MessageLimiter", size_of::<crate::limits::MessageLimiter>(), 48),
            ("Ws", size_of::<crate::ws::io::Ws>(), 328),
            ("Message", size_of::<super::Message>(), 56),
        ];
        for (name, size, bound) in bounds {
            assert!(size <= bound, "{name} is {size} bytes, over its bound of {bound}");
        }
        // The connection task's own state (logged once at debug level by `ws::upgrade`).
        fn future_size<A, B, C, D, Fut, F: Fn(A, B, C, D) -> Fut>(_: F) -> usize {
            size_of::<Fut>()
        }
        // 1240 → 1272 with token rights: `Identity` and `Session` shrank by 16 bytes (the globs
        // moved behind an `Arc<Rights>`), yet the generator's layout of `run` grew by 32.
        // 1272 → 1280 with `Session::opened` (the open phase's queue buffer freed at once, 224
        // bytes): tokio's task cell stays in mimalloc's 1536-byte size class either way.
        let run = future_size(super::run);
        assert!(run <= 1280, "the connection task is {run} bytes, over its bound of 1280");
    }
}
