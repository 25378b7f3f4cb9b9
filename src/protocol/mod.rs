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
    /// `data` is the JSON text of the payload, re-encoded once here.
    /// `msg_id`: the client's idempotency key (durable channels).
    Publish {
        channel: String,
        event: String,
        data: Vec<u8>,
        msg_id: Option<Box<str>>,
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

/// A request plus its optional id.
#[derive(Debug, PartialEq)]
pub struct Frame {
    pub id: RequestId,
    pub request: Request,
}
