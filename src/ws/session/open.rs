//! Opening a connection: first-frame authentication when the token did not come with the
//! request (a token, or key login's challenge and answer), registration in the registry (re-checking revocation and the token generation once
//! registered), the bus subscription and the device sighting before `welcome`, the user
//! stream's state and replay, and the replies to `?channel=`.

use std::sync::Arc;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{error_frame, Session};
use crate::admission::{admit_claims, admit_identity, AdmitGuard, Admitted, Auth, NotAdmitted, Refused};
use crate::app::AppState;
use crate::auth::key_login::{self, Challenge};
use crate::auth::signed::DeviceKey;
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

/// The connection's first text frame, within `SYNCGATE_AUTH_TIMEOUT_MS` (pings and pongs are
/// skipped). A timeout, a close or a shutdown refuse the connection.
async fn first_text(state: &AppState, ws: &mut Ws) -> Result<Utf8Bytes, CloseReason> {
    let mut shutdown = state.shutdown.clone();
    let first = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // A binary frame, a close, a broken socket: no credentials came.
                _ => return Err(AuthFailure::Invalid),
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(state.config.auth.auth_timeout, first) => match r {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(reason)) => Err(refuse(state, reason, CloseReason::Unauthorized)),
            Err(_) => Err(refuse(state, AuthFailure::Timeout, CloseReason::Unauthorized)),
        },
        _ = crate::shutdown::stopping(&mut shutdown) => Err(CloseReason::GoingAway),
    }
}

/// Counts a refused authentication; the close it gets.
fn refuse(state: &AppState, reason: AuthFailure, close: CloseReason) -> CloseReason {
    state.metrics.connects.inc(crate::metrics::ConnectResult::Unauthorized);
    state.metrics.auth_failures.inc(reason);
    close
}

/// The close for an authenticated identity that is not admitted.
fn not_admitted(state: &AppState, n: NotAdmitted, key_login: bool) -> CloseReason {
    match n {
        NotAdmitted::OverCap => {
            state.metrics.connects.inc(crate::metrics::ConnectResult::OverCap);
            CloseReason::TooManyConnections
        }
        // Key login: any refusal of the device is 4001 (the answer did not open a live device).
        NotAdmitted::Refused(_) if key_login => refuse(state, AuthFailure::Key, CloseReason::Unauthorized),
        NotAdmitted::Refused(r) => refuse(
            state,
            AuthFailure::Device,
            match r {
                Refused::Revoked => CloseReason::Forbidden,
                Refused::OtherDevice | Refused::OldGeneration | Refused::KeyRequired => CloseReason::Unauthorized,
            },
        ),
    }
}

/// Waits for `{"type":"auth","token":…}` as the first frame.
async fn first_frame_auth(
    state: &AppState,
    ws: &mut Ws,
    device: Option<&str>,
) -> Result<(Identity, UserSlot), CloseReason> {
    let text = first_text(state, ws).await?;
    let token = match protocol::decode(text.as_bytes(), &mut Vec::new(), state.config.limits.max_json_depth) {
        Ok(protocol::Frame { request: Request::Auth { token }, .. }) => token,
        _ => return Err(refuse(state, AuthFailure::Invalid, CloseReason::Unauthorized)),
    };
    // Boxed: JWKS verification can await a fetch, and its future must not bloat every session.
    let claims = Box::pin(state.verifier.verify(&token)).await.map_err(|e| match e {
        AuthError::Expired => refuse(state, AuthFailure::Expired, CloseReason::TokenExpired),
        _ => refuse(state, AuthFailure::Invalid, CloseReason::Unauthorized),
    })?;
    admit_claims(state, claims, device).await.map_err(|n| not_admitted(state, n, false))
}

/// Key login (`?auth=key`): sends the signed challenge, then admits the device whose answer
/// verifies and whose registered key it is (a live, unrevoked device of exactly one user: known
/// in memory, loaded at start and told over the bus, else looked up in the store).
/// Anything else closes with 4001 (see `auth::key_login`).
async fn key_auth(state: &AppState, ws: &mut Ws, device: Option<&str>) -> Result<KeyLogin, CloseReason> {
    let challenge = Challenge::new(&state.server_key, crate::util::now_millis())
        .ok_or_else(|| refuse(state, AuthFailure::Key, CloseReason::Internal))?;
    if io::timed(state, None, ws.send(Message::Text(challenge.frame.into()))).await.is_err() {
        return Err(CloseReason::GoingAway);
    }
    let text = first_text(state, ws).await?;
    let bad = || refuse(state, AuthFailure::Key, CloseReason::Unauthorized);
    let answer: key_login::Answer =
        crate::util::json::from_slice(text.as_bytes(), state.config.limits.max_json_depth).map_err(|_| bad())?;
    key_login::verify_answer(&challenge.nonce, &answer).map_err(|_| bad())?;
    if device.is_some_and(|d| d != answer.device_id) {
        return Err(bad());
    }
    let user_id = match state.registry.key_owner(&answer.device_id, &answer.public_key) {
        Some(user) => user,
        // Not remembered here (past the memory's bound): the store decides.
        None => {
            let owners = state.store.key_owners(&answer.device_id, &answer.public_key).await.map_err(|e| {
                tracing::warn!(error = %e, "key login: device lookup failed");
                refuse(state, AuthFailure::Key, CloseReason::Internal)
            })?;
            let [user] = <[String; 1]>::try_from(owners).map_err(|_| bad())?;
            state.registry.remember_key_owner(&answer.device_id, &answer.public_key, &user);
            Arc::from(user)
        }
    };
    let identity = Identity {
        user_id,
        device_id: Arc::from(answer.device_id),
        rights: Default::default(),
        // No token: nothing expires; revocation closes the connection (4003).
        exp: u64::MAX,
        // Password changes void tokens, not device keys.
        gen: u64::MAX,
    };
    let key = DeviceKey::parse(&answer.public_key).map(Arc::new);
    let (identity, slot) = admit_identity(state, identity).await.map_err(|n| not_admitted(state, n, true))?;
    Ok((identity, slot, key))
}

/// An admitted key login, with the device's key (signed frames need no store lookup then).
type KeyLogin = (Identity, UserSlot, Option<Arc<DeviceKey>>);

/// Authenticates (first frame, if needed), registers the connection and sends `welcome` plus the
/// replies for `?channel=`. Runs boxed, so its state is freed before the long-lived loop starts.
// Over 80 lines: the opening steps, in the order they must happen (each guards the next).
pub(super) async fn open<'a>(
    state: &'a AppState,
    ws: &mut Ws,
    admitted: Box<Admitted>,
) -> Option<(Session<'a>, (UserSlot, AdmitGuard))> {
    let Admitted { _place: place, auth, device_id, channels, device_name, since, peer } = *admitted;
    let authenticated = match auth {
        Auth::Token(identity, slot) => Ok((identity, slot, None)),
        Auth::FirstFrame => first_frame_auth(state, ws, device_id.as_deref()).await.map(|(i, s)| (i, s, None)),
        Auth::Key => Box::pin(key_auth(state, ws, device_id.as_deref())).await,
    };
    let (identity, slot, device_key) = match authenticated {
        Ok(x) => x,
        Err(reason) => {
            io::close(state, ws, reason, None).await;
            return None;
        }
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
        device_key,
        identity,
        opened: true,
    };
    s.membership.join(&s.user_channel);
    // Registered now: a revocation or password change from here on closes us through the
    // registry; one that landed between the token check and the join is caught here.
    let (user, device) = (&s.identity.user_id, &s.identity.device_id);
    if state.registry.is_revoked(user, device) || !state.registry.gen_current(user, s.identity.gen) {
        drop(s);
        io::close(state, ws, CloseReason::Forbidden, None).await;
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
        io::close(state, ws, CloseReason::GoingAway, None).await;
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
        let (ch, new) = match self.subscribe_at_open(requested).await {
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
