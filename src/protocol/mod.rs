//! Protocol v1 (see `docs/protocol.md`): inbound frames decoded with simd-json, outbound frames
//! encoded once into `Bytes` that every recipient shares.

mod decode;
mod encode;

pub use decode::{decode, DecodeError, MAX_EVENT_LEN, MAX_MSG_ID_LEN};
pub use encode::*;

/// Error codes carried by `{"type":"error","code":K}` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    RateLimited,
    TooLarge,
    Internal,
    /// A durable write could not be made (store down, commit queue full): retry with the same
    /// `msg_id`.
    Unavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }
}

/// A request's `id` (string or number), kept as its JSON text so that it is echoed verbatim.
pub type RequestId = Option<Box<str>>;

/// A decoded client request.
#[derive(Debug, PartialEq)]
pub enum Request {
    Auth {
        token: String,
    },
    /// `since`: replay a durable channel's events after this `seq` first.
    Subscribe {
        channel: String,
        since: Option<u64>,
    },
    Unsubscribe {
        channel: String,
    },
    /// `data` is the exact JSON text of the payload as the client sent it (its first to its last
    /// character). `msg_id`: the client's idempotency key (durable channels). `signed`: the
    /// signature fields, when the frame has any (checked only on signed channels).
    Publish {
        channel: String,
        event: String,
        data: Vec<u8>,
        msg_id: Option<Box<str>>,
        signed: Option<Box<SigFields>>,
    },
    /// The device has read a durable channel up to `seq`.
    Ack {
        channel: String,
        seq: u64,
    },
    Typing {
        channel: String,
        typing: bool,
    },
    Presence {
        channel: String,
    },
    Ping,
}

/// The signature fields of a `publish` as the frame carries them, not yet checked: each is
/// `None` when absent. `wrong`: a field present with the wrong JSON type (its name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SigFields {
    pub nonce: Option<Box<str>>,
    /// A JSON integer (or a string of decimal digits).
    pub sig_ts: Option<u64>,
    pub sig: Option<Box<str>>,
    pub wrong: Option<&'static str>,
}

/// A verified signature, carried with the event to every recipient (live, Redis, store, replay,
/// history): `"nonce"`, `"sig_ts"`, `"sig"` and `"from":{…,"public_key"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// 16-64 characters of `[A-Za-z0-9_-]`.
    pub nonce: Box<str>,
    /// The signer's clock, milliseconds since the epoch.
    pub sig_ts: u64,
    /// The Ed25519 signature, base64url without padding.
    pub sig: Box<str>,
    /// The sending device's Ed25519 public key, base64url without padding.
    pub public_key: std::sync::Arc<str>,
}

/// A request plus its optional id.
#[derive(Debug, PartialEq)]
pub struct Frame {
    pub id: RequestId,
    pub request: Request,
}
