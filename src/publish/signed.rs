//! Signed publishes: on a channel of `SYNCGATE_SIGNED_NAMESPACES` every client `publish` carries
//! `nonce`, `sig_ts` and `sig`, the sending device key's Ed25519 signature over the text
//! [`crate::auth::signed::signed_text`] builds. Checked before anything is delivered or stored, in
//! this order:
//!
//! 1. the device's key (looked up once per connection, then cached by the session): none →
//!    `forbidden`;
//! 2. the fields present and well-formed, the signature valid → else `unauthorized`;
//! 3. idempotency first: a durable publish whose `msg_id` is stored with this same nonce and
//!    signature gets the original ack with `"duplicate":true`;
//! 4. `sig_ts` within ±`SYNCGATE_SIGNATURE_WINDOW_SECS` of the gateway's clock → else `unauthorized`;
//! 5. the nonce not used before by this device: remembered until `sig_ts` + the window, in Redis
//!    (`SET NX PX`, cluster-wide) when the bus has it, else in this process → else `unauthorized`.
//!
//! A publish refused after its nonce was taken but before it was delivered or stored (quota, full
//! queue) gives the nonce back, so the client may retry with the same signature.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::Publisher;
use crate::auth::signed::{signed_text, valid_nonce, DeviceKey, NonceTake};
use crate::durable::{Publish, Reply};
use crate::error::{FrameError, SignatureError};
use crate::protocol::{self, RequestId, SigFields, Signature};
use crate::registry::ConnHandle;
use crate::util::now_millis;

/// A client's publish on a signed channel (its channel authorized and canonical).
pub struct SignedRequest {
    pub channel: String,
    pub event: String,
    /// The exact JSON text the client sent.
    pub data: Vec<u8>,
    pub msg_id: Option<Box<str>>,
    pub fields: Option<Box<SigFields>>,
    pub id: RequestId,
}

/// The sender: user, device, and the device's key once known (cached by the session).
pub struct Sender {
    pub user: Arc<str>,
    pub device: Arc<str>,
    pub key: Option<Arc<DeviceKey>>,
}

/// What a signed publish came to: the reply for the connection (`None`: nothing to say, or the
/// durable writer answers once the event is committed) and the device key to cache.
pub struct SignedDone {
    pub reply: Option<Message>,
    pub key: Option<Arc<DeviceKey>>,
}

/// The nonce's key in the cluster-wide memory: (user, device, nonce), unambiguous (the user's
/// length first; a nonce has no `:`).
fn nonce_key(user: &str, device: &str, nonce: &str) -> String {
    format!("{}:{user}{device}:{nonce}", user.len())
}

/// The fields of a signed publish, present and well-formed.
fn fields(f: Option<&SigFields>) -> Result<(&str, u64, &str), SignatureError> {
    let f = f.ok_or(SignatureError::Missing("nonce"))?;
    if let Some(wrong) = f.wrong {
        return Err(SignatureError::Wrong(wrong));
    }
    let nonce = f.nonce.as_deref().ok_or(SignatureError::Missing("nonce"))?;
    let sig_ts = f.sig_ts.ok_or(SignatureError::Missing("sig_ts"))?;
    let sig = f.sig.as_deref().ok_or(SignatureError::Missing("sig"))?;
    if !valid_nonce(nonce) {
        return Err(SignatureError::BadNonce);
    }
    Ok((nonce, sig_ts, sig))
}

impl Publisher<'_> {
    /// The device's key: `from.key` when cached, else read from the store.
    async fn device_key(&self, from: &Sender) -> Result<Arc<DeviceKey>, SignatureError> {
        if let Some(k) = &from.key {
            return Ok(k.clone());
        }
        match self.state.store.device(&from.user, &from.device).await {
            Ok(Some(d)) => {
                d.public_key.as_deref().and_then(DeviceKey::parse).map(Arc::new).ok_or(SignatureError::NoKey)
            }
            Ok(None) => Err(SignatureError::NoKey),
            Err(e) => {
                tracing::warn!(error = %e, "device key lookup failed");
                Err(SignatureError::Unavailable)
            }
        }
    }

    /// Checks and carries out a signed publish (see the module docs).
    pub async fn signed(&self, req: SignedRequest, from: Sender, conn: &Arc<ConnHandle>) -> SignedDone {
        let key = match self.device_key(&from).await {
            Ok(k) => k,
            Err(e) => return SignedDone { reply: Some(FrameError::from(e).frame(&req.id)), key: None },
        };
        let reply = match self.check_and_send(req, &from, &key, conn).await {
            Ok(reply) => reply,
            Err((e, id)) => Some(e.frame(&id)),
        };
        SignedDone { reply, key: Some(key) }
    }

    async fn check_and_send(
        &self,
        req: SignedRequest,
        from: &Sender,
        key: &DeviceKey,
        conn: &Arc<ConnHandle>,
    ) -> Result<Option<Message>, (FrameError, RequestId)> {
        let state = self.state;
        let refuse = |e: SignatureError, id: &RequestId| (FrameError::from(e), id.clone());
        let (nonce, sig_ts, sig) = fields(req.fields.as_deref()).map_err(|e| refuse(e, &req.id))?;
        let text = signed_text(&req.channel, &req.event, nonce, sig_ts, &req.data);
        if !key.verifies(&text, sig) {
            return Err(refuse(SignatureError::BadSignature, &req.id));
        }
        let durable = state.durable.is_durable(&req.channel);
        // Idempotency first: the retry of a stored signed publish.
        if let (true, Some(m)) = (durable, req.msg_id.as_deref()) {
            match state.store.signed_msg(&req.channel, &from.user, &from.device, m).await {
                Ok(Some((seq, n, g))) if n.as_deref() == Some(nonce) && g.as_deref() == Some(sig) => {
                    return Ok(Some(Message::Text(protocol::durable_ack(&req.id, &req.channel, seq, Some(m), true))));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "signed msg_id lookup failed");
                    return Err(refuse(SignatureError::Unavailable, &req.id));
                }
            }
        }
        let now = now_millis();
        let window = state.config.signed.window.as_millis() as u64;
        if sig_ts.abs_diff(now) > window {
            return Err(refuse(SignatureError::Stale { window_secs: window / 1000 }, &req.id));
        }
        if durable {
            if let Err(e) = super::bounded(&req.event, &req.data, state.config.durable.max_event_bytes) {
                return Err((e.into(), req.id));
            }
        }
        // Remembered until sig_ts + window: after that the signature is stale anyway.
        let expires = sig_ts.saturating_add(window);
        let nkey = nonce_key(&from.user, &from.device, nonce);
        let shared = match state.bus.take_nonce(&nkey, expires.saturating_sub(now).max(1)).await {
            Some(true) => true,
            Some(false) => return Err(refuse(SignatureError::Replayed, &req.id)),
            None => match state.nonces.take(&from.user, &from.device, nonce, expires, now) {
                NonceTake::Fresh => false,
                NonceTake::Used => return Err(refuse(SignatureError::Replayed, &req.id)),
                NonceTake::Full => return Err(refuse(SignatureError::Unavailable, &req.id)),
            },
        };
        let signature = Signature { nonce: nonce.into(), sig_ts, sig: sig.into(), public_key: key.text.clone() };
        if !durable {
            let frame =
                protocol::signed_event(&req.channel, &req.event, &req.data, &from.user, &from.device, now, &signature);
            self.route(&req.channel, &frame, conn.id);
            return Ok(req.id.as_deref().map(|id| Message::Text(protocol::ack(id, &req.channel))));
        }
        let p = Publish {
            channel: req.channel,
            event: req.event,
            data: req.data,
            from: Some((from.user.clone(), from.device.clone())),
            msg_id: req.msg_id,
            origin: conn.id,
            ts: now,
            reply: Reply::Conn { conn: conn.clone(), id: req.id },
            sig: Some(Box::new(signature)),
        };
        match self.submit(p).await {
            Ok(()) => Ok(None),
            Err(refused) => {
                // Neither delivered nor stored: the same signature may be sent again.
                match shared {
                    true => state.bus.release_nonce(&nkey),
                    false => state.nonces.release(&from.user, &from.device, nonce),
                }
                Err((refused.error.into(), refused.id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_in_order() {
        let ok =
            SigFields { nonce: Some("abcdefghijklmnop".into()), sig_ts: Some(5), sig: Some("s".into()), wrong: None };
        assert_eq!(fields(Some(&ok)), Ok(("abcdefghijklmnop", 5, "s")));
        assert_eq!(fields(None), Err(SignatureError::Missing("nonce")));
        let f = SigFields { sig_ts: None, ..ok.clone() };
        assert_eq!(fields(Some(&f)), Err(SignatureError::Missing("sig_ts")));
        let f = SigFields { sig: None, ..ok.clone() };
        assert_eq!(fields(Some(&f)), Err(SignatureError::Missing("sig")));
        let f = SigFields { wrong: Some("sig_ts"), ..ok.clone() };
        assert_eq!(fields(Some(&f)), Err(SignatureError::Wrong("sig_ts")));
        let f = SigFields { nonce: Some("short".into()), ..ok };
        assert_eq!(fields(Some(&f)), Err(SignatureError::BadNonce));
        assert_ne!(nonce_key("ab", "c", "n"), nonce_key("a", "bc", "n"));
    }
}
