//! Requests that wait on a backend (re-auth, cluster presence, a subscribe that confirms a bus
//! subscription or reads a stream's state, a durable publish's quota) and replay page reads:
//! each runs as a future beside the loop that borrows only the shared state, never the session.
//! Starting them, and applying what they produced.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::{error_frame, HookWait, Session, Step, Subscribe};
use crate::admission::still_valid;
use crate::auth::{AuthError, Claims};
use crate::durable::Replay;
use crate::error::{CloseReason, FrameError};
use crate::protocol::{self, ErrorCode, RequestId};
use crate::publish::{Publisher, Sender};
use crate::store::StoreError;
use crate::ws::streams::{PageRequest, PAGE};

/// A request waiting on a backend; it borrows only the shared state, never the session.
pub(super) type Pending<'a> = Pin<Box<dyn Future<Output = Done> + Send + 'a>>;
/// A replay page being read from the store.
pub(super) type PageRead<'a> = Pin<Box<dyn Future<Output = (PageRequest, PageResult)> + Send + 'a>>;
pub(super) type PageResult = Result<(Vec<Message>, Option<u64>), StoreError>;

/// What a pending request produced.
pub(super) enum Done {
    Reauth(RequestId, Result<Claims, AuthError>),
    Presence(Message),
    /// The bus subscription is confirmed; a durable channel's state (and first replay page).
    Subscribed(Box<Subscribe>, Option<Result<Replay, StoreError>>),
    /// A durable publish was queued (`None`: the writer answers) or refused (the error frame).
    Durable(Option<Message>),
    /// A signed publish was checked (and sent, stored or refused).
    Signed(crate::publish::SignedDone),
    /// The authorization hook decided on a subscribe or publish.
    Hook(Box<HookWait>, crate::authz::Decision),
}

/// What applying a pending request's result leaves for the loop.
pub(super) enum Finished {
    Done,
    /// A re-auth succeeded: the new token expiry.
    Expires(u64),
    /// The hook allowed a request: what it goes on to do (possibly another pending request).
    Next(Box<Step>),
}

/// Awaits the future in `slot` (its `select!` branch is disabled while the slot is empty).
pub(super) async fn poll_slot<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl<'a> Session<'a> {
    /// Carries out what a request asked for: a reply is queued; the backend part of a request
    /// starts as a pending future (the only case that returns one).
    pub(super) fn start(&mut self, step: Step) -> Option<Pending<'a>> {
        let state = self.state;
        Some(match step {
            Step::Nothing | Step::Close(_) => return None,
            Step::Reply(m) => {
                self.conn().push(m);
                return None;
            }
            Step::Reauth(token, id) => Box::pin(async move {
                let verified = state.verifier.verify(&token).await;
                Done::Reauth(id, verified)
            }),
            Step::Hook(w) => {
                let (user, device) = (self.identity.user_id.clone(), self.identity.device_id.clone());
                Box::pin(async move {
                    let decision = match &state.authz {
                        Some(hook) => hook.decide(user, device, w.channel.clone(), w.then.action()).await,
                        None => crate::authz::Decision::Deny,
                    };
                    Done::Hook(w, decision)
                })
            }
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
            Step::Signed(req) => {
                let from = Sender {
                    user: self.identity.user_id.clone(),
                    device: self.identity.device_id.clone(),
                    key: self.device_key.clone(),
                };
                let conn = self.conn().clone();
                Box::pin(async move { Done::Signed(Publisher::new(state).signed(*req, from, &conn).await) })
            }
            Step::Durable(p) => Box::pin(async move {
                let refused = Publisher::new(state).submit(*p).await.err();
                Done::Durable(refused.map(|r| error_frame(r.error, &r.id)))
            }),
        })
    }

    /// Applies what a pending request produced: its reply goes into the queue. A new token
    /// expiry when a re-auth succeeded; the next step when the hook allowed a request.
    pub(super) fn finish(&mut self, done: Done) -> Finished {
        let conn = self.conn().clone();
        match done {
            Done::Reauth(id, verified) => {
                let (reply, exp) = self.reauthed(&id, verified);
                conn.push(reply);
                return exp.map_or(Finished::Done, Finished::Expires);
            }
            Done::Hook(w, decision) => return Finished::Next(Box::new(self.hook_decided(*w, decision))),
            Done::Presence(reply) | Done::Durable(Some(reply)) => {
                conn.push(reply);
            }
            Done::Durable(None) => {}
            Done::Signed(done) => {
                if self.device_key.is_none() {
                    self.device_key = done.key;
                }
                if let Some(reply) = done.reply {
                    conn.push(reply);
                }
            }
            Done::Subscribed(sub, None) => {
                conn.push(Message::Text(protocol::channel_reply("subscribed", &sub.channel, &sub.id)));
            }
            Done::Subscribed(sub, Some(Err(e))) => {
                tracing::warn!(error = %e, channel = %sub.channel, "stream state unavailable");
                self.streams().forget(&sub.channel);
                let unavailable = FrameError::new(ErrorCode::Unavailable, "history is unavailable; retry");
                conn.push(error_frame(unavailable, &sub.id));
            }
            Done::Subscribed(sub, Some(Ok(r))) => {
                // The bus subscription was confirmed before the state was read: every event
                // committed after that read arrives live; the replay follows the reply.
                conn.push(Message::Text(protocol::subscribed_durable(&sub.channel, &r.state, &sub.id)));
                self.opened(&sub.channel, sub.since, r);
            }
        }
        Finished::Done
    }

    /// A fresh token was verified (or refused): the reply and, on success, the new expiry.
    fn reauthed(&mut self, id: &RequestId, verified: Result<Claims, AuthError>) -> (Message, Option<u64>) {
        let refused = |m: Cow<'static, str>| (error_frame(FrameError::new(ErrorCode::Unauthorized, m), id), None);
        match verified {
            Ok(claims) if claims.user_id == *self.identity.user_id => {
                if claims.device_id.as_deref().is_some_and(|d| d != &*self.identity.device_id)
                    || still_valid(self.state, &claims).is_err()
                {
                    return refused(Cow::Borrowed("invalid token"));
                }
                self.identity.exp = claims.exp;
                self.identity.rights = Arc::new(crate::identity::Rights {
                    channels: claims.channels,
                    subscribe: claims.subscribe,
                    publish: claims.publish,
                });
                (Message::Text(protocol::auth_ok(&self.identity.user_id, claims.exp, id)), Some(claims.exp))
            }
            Ok(_) => refused(Cow::Borrowed("token is for another user")),
            Err(e) => refused(Cow::Owned(e.to_string())),
        }
    }

    /// The stream state of a held channel arrived: track it from there, its replay queued.
    pub(super) fn opened(&mut self, channel: &str, since: Option<u64>, r: Replay) {
        let conn = self.conn().clone();
        let st = self.streams();
        match (r.state.recovered, since) {
            (Some(true), Some(since)) => st.replay(channel, since, r.frames, r.last, &conn),
            _ => st.opened(channel, r.last, false),
        }
    }

    /// Starts reading the next replay page when none is being read and the queue is at most
    /// half full; drops the streams once none is left.
    pub(super) fn read_next_page(&mut self, page: &mut Option<PageRead<'a>>) {
        let Some(st) = self.streams.as_deref_mut() else { return };
        let conn = &self.membership.conn;
        st.push_backlog(conn);
        if page.is_none() && conn.half_empty() {
            if let Some(req) = st.next_read() {
                let state = self.state;
                *page = Some(Box::pin(async move {
                    let r = state.durable.page(&req.0, req.1, PAGE).await;
                    (req, r)
                }));
            }
        }
        if st.is_empty() && page.is_none() {
            self.streams = None;
        }
    }

    /// A replay page arrived; one that could not be read closes the connection (the client
    /// would miss events: it reconnects and replays with `since`).
    pub(super) fn page_read(&mut self, req: &PageRequest, read: PageResult) -> Result<(), CloseReason> {
        let Some(st) = self.streams.as_deref_mut() else { return Ok(()) };
        match read {
            Ok((frames, last)) => st.page_read(req, frames, last, &self.membership.conn),
            Err(e) => {
                tracing::warn!(error = %e, channel = %req.0, "replay page unavailable");
                st.page_failed(req);
                return Err(CloseReason::SlowConsumer);
            }
        }
        Ok(())
    }
}
