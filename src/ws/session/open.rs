//! Opening a connection: first-frame authentication when the token did not come with the
//! request, registration in the registry (re-checking revocation and the token generation once
//! registered), the bus subscription and the device sighting before `welcome`, the user
//! stream's state and replay, and the replies to `?channel=`.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{error_frame, Session};
use crate::admission::{admit_claims, AdmitGuard, Admitted, NotAdmitted, Refused};
use crate::app::AppState;
use crate::auth::AuthError;
use crate::error::CloseReason;
use crate::identity::Identity;
use crate::limits::MessageLimiter;
use crate::metrics::AuthFailure;
use crate::protocol::{self, Request};
use crate::registry::{ConnHandle, Membership, UserSlot};
use crate::ws::io::{self, Ws};
use crate::ws::streams::PAGE;

/// How long a new connection waits for its device sighting to be committed before `welcome`.
const DEVICE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// Waits for `{"type":"auth","token":…}` as the first frame.
async fn first_frame_auth(
    state: &AppState,
    ws: &mut Ws,
    device: Option<&str>,
) -> Result<(Identity, UserSlot), CloseReason> {
    let mut shutdown = state.shutdown.clone();
    let first = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Some(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    };
    let refuse = |reason: AuthFailure| {
        state.metrics.connects.inc(crate::metrics::ConnectResult::Unauthorized);
        state.metrics.auth_failures.inc(reason);
    };
    let text = tokio::select! {
        r = tokio::time::timeout(state.config.auth.auth_timeout, first) => match r {
            Ok(Some(t)) => t,
            _ => {
                refuse(AuthFailure::Timeout);
                return Err(CloseReason::Unauthorized);
            }
        },
        _ = crate::shutdown::stopping(&mut shutdown) => return Err(CloseReason::GoingAway),
    };
    let token = match protocol::decode(text.as_bytes(), &mut Vec::new(), state.config.limits.max_json_depth) {
        Ok(protocol::Frame { request: Request::Auth { token }, .. }) => token,
        _ => {
            refuse(AuthFailure::Invalid);
            return Err(CloseReason::Unauthorized);
        }
    };
    // Boxed: JWKS verification can await a fetch, and its future must not bloat every session.
    let claims = Box::pin(state.verifier.verify(&token)).await.map_err(|e| match e {
        AuthError::Expired => {
            refuse(AuthFailure::Expired);
            CloseReason::TokenExpired
        }
        _ => {
            refuse(AuthFailure::Invalid);
            CloseReason::Unauthorized
        }
    })?;
    match admit_claims(state, claims, device).await {
        Ok(admitted) => Ok(admitted),
        Err(NotAdmitted::OverCap) => {
            state.metrics.connects.inc(crate::metrics::ConnectResult::OverCap);
            Err(CloseReason::TooManyConnections)
        }
        Err(NotAdmitted::Refused(r)) => {
            refuse(AuthFailure::Device);
            Err(match r {
                Refused::Revoked => CloseReason::Forbidden,
                Refused::OtherDevice | Refused::OldGeneration => CloseReason::Unauthorized,
            })
        }
    }
}

/// Authenticates (first frame, if needed), registers the connection and sends `welcome` plus the
/// replies for `?channel=`. Runs boxed, so its state is freed before the long-lived loop starts.
// Over 80 lines: the opening steps, in the order they must happen (each guards the next).
pub(super) async fn open<'a>(
    state: &'a AppState,
    ws: &mut Ws,
    admitted: Box<Admitted>,
) -> Option<(Session<'a>, (UserSlot, AdmitGuard))> {
    let Admitted { _place: place, identity, device_id, channels, device_name, since, peer } = *admitted;
    let (identity, slot) = match identity {
        Some(x) => x,
        None => match first_frame_auth(state, ws, device_id.as_deref()).await {
            Ok(x) => x,
            Err(reason) => {
                io::close(state, ws, reason).await;
                return None;
            }
        },
    };
    let conn = Arc::new(
        ConnHandle::new(
            state.next_conn_id(),
            identity.user_id.clone(),
            identity.device_id.clone(),
            state.config.limits.outbound_queue,
            state.config.limits.outbound_queue_bytes,
            state.metrics.clone(),
        )
        .with_gen(identity.gen),
    );
    let conn_id = format!("{}-{:x}", state.instance, conn.id);
    let mut s = Session {
        state,
        user_channel: crate::channel::user_channel(&identity.user_id),
        membership: Membership::new(state.registry.clone(), conn),
        limiter: MessageLimiter::new(state.config.limits.messages_per_min, Instant::now()),
        scratch: Vec::new(),
        streams: None,
        device_key: None,
        identity,
    };
    s.membership.join(&s.user_channel);
    // Registered now: a revocation or password change from here on closes us through the
    // registry; one that landed between the token check and the join is caught here.
    let (user, device) = (&s.identity.user_id, &s.identity.device_id);
    if state.registry.is_revoked(user, device) || !state.registry.gen_current(user, s.identity.gen) {
        drop(s);
        io::close(state, ws, CloseReason::Forbidden).await;
        return None;
    }
    let user_durable = state.durable.is_durable(&s.user_channel);
    if user_durable {
        // Held from the join on: events queued before the stream state is read are replayed.
        let user_channel = s.user_channel.clone();
        s.streams().hold(&user_channel);
    }
    // Confirmed before `welcome`: a message published right after it is never missed. The
    // device is listed (committed) before `welcome` too, so it can be revoked at once.
    tokio::join!(
        state.bus.subscribe(&s.user_channel),
        state.devices.online(&s.identity.user_id, &s.identity.device_id, device_name.as_deref(), DEVICE_WRITE_WAIT),
    );
    // Registered before this check, so a shutdown either is seen here or closes us via the
    // registry (server::run sets the flag, then closes every registered connection).
    if *state.shutdown.borrow() {
        drop(s);
        io::close(state, ws, CloseReason::GoingAway).await;
        return None;
    }
    tracing::info!(user = %s.identity.user_id, device = %s.identity.device_id, conn = %conn_id, %peer, "connection open");
    // A durable user channel: `welcome` carries its state; `?since=` replays it right after
    // (through the queue, page by page).
    let user_stream = match user_durable {
        true => s.open_user_stream(since).await,
        false => None,
    };
    let welcome = protocol::welcome(
        &s.identity.user_id,
        &s.identity.device_id,
        &conn_id,
        state.config.limits.heartbeat.as_millis() as u64,
        state.config.limits.max_message_bytes as u64,
        user_stream.as_ref(),
    );
    let mut ok = io::timed(state, None, ws.feed(Message::Text(welcome))).await.is_ok();
    // Replies to `?channel=` follow the user channel's first replay page, through the queue.
    for ch in &channels {
        let reply = s.join_at_open(ch).await;
        s.conn().push(reply);
    }
    ok = ok && io::timed(state, None, ws.flush()).await.is_ok();
    if ok {
        state.metrics.connects.inc(crate::metrics::ConnectResult::Ok);
    }
    ok.then_some((s, (slot, place)))
}

impl Session<'_> {
    /// The durable user channel's state for `welcome`, its replay after `since` queued (`None`
    /// when the store cannot be read: the connection opens without it).
    async fn open_user_stream(&mut self, since: Option<u64>) -> Option<protocol::StreamState> {
        // Boxed: the store's futures are large and would otherwise enlarge every connection's
        // open phase, durable or not.
        let user_channel = self.user_channel.clone();
        let (user, device) = (&self.identity.user_id, &self.identity.device_id);
        match Box::pin(self.state.durable.open_stream(&user_channel, user, device, since, PAGE)).await {
            Ok(r) => {
                let state = r.state;
                self.opened(&user_channel, since, r);
                Some(state)
            }
            Err(e) => {
                tracing::warn!(error = %e, "user stream state unavailable at connect");
                self.streams().forget(&user_channel);
                None
            }
        }
    }

    /// Joins a `?channel=` of the upgrade request: the bus subscription is confirmed and a
    /// durable channel's state read before the reply (no replay: `?since=` is the user
    /// channel's).
    async fn join_at_open(&mut self, requested: &str) -> Message {
        let state = self.state;
        let (ch, new) = match self.subscribe(requested) {
            Ok(joined) => joined,
            Err(e) => return error_frame(e, &None),
        };
        let durable = state.durable.is_durable(&ch);
        if durable {
            self.streams().hold(&ch);
        }
        if new {
            state.bus.subscribe(&ch).await;
        }
        let stream = match durable {
            true => Box::pin(state.durable.open_stream(&ch, &self.identity.user_id, &self.identity.device_id, None, 0))
                .await
                .ok(),
            false => None,
        };
        match stream {
            Some(r) => {
                let reply = Message::Text(protocol::subscribed_durable(&ch, &r.state, &None));
                self.opened(&ch, None, r);
                reply
            }
            None => {
                if let Some(st) = self.streams.as_deref_mut() {
                    st.forget(&ch);
                }
                Message::Text(protocol::channel_reply("subscribed", &ch, &None))
            }
        }
    }
}
