//! Error types per layer and the one place that maps them to HTTP statuses, JSON bodies,
//! WebSocket `error` frames and close codes.

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::Message;

use crate::auth::AuthError;
use crate::channel::ChannelError;
use crate::protocol::{self, ErrorCode, RequestId};

/// Refusals before the WebSocket upgrade (HTTP layer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Unauthorized(AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many connections for this user")]
    TooManyConnections,
    #[error("too many new connections from this address")]
    RateLimited,
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("server is shutting down")]
    Unavailable,
    #[error("server at capacity; retry on another instance")]
    Overloaded,
    #[error("{0}")]
    Conflict(&'static str),
    /// Login failures: one answer for unknown user, wrong password and bad refresh tokens.
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("internal error")]
    Internal,
    #[error("too many attempts; try again later")]
    TooManyAttempts,
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("too many requests; try again later")]
    TooManyRequests,
    #[error("this account has the maximum number of devices; revoke one first")]
    TooManyDevices,
    /// A login code that is unknown, expired or used, or presented with a wrong `code_verifier`
    /// or another `redirect_uri` (RFC 6749 §5.2).
    #[error("invalid, expired or used code, or a code_verifier or redirect_uri that does not match")]
    InvalidGrant,
}

/// The one mapping of store failures to HTTP: a uniqueness conflict is 409, anything else is
/// logged and answered 500 without details.
impl From<crate::store::StoreError> for HttpError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict => HttpError::Conflict("already registered"),
            other => {
                tracing::error!(error = %other, "store error");
                HttpError::Internal
            }
        }
    }
}

/// A channel the caller may not use: 400 for a bad name, 403 when not allowed.
impl From<ChannelError> for HttpError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Invalid(m) => HttpError::BadRequest(m.into()),
            ChannelError::Forbidden | ChannelError::NotGranted => HttpError::Forbidden(NOT_ALLOWED_ON_CHANNEL),
        }
    }
}

/// A refused publish over HTTP: 400 `bad_request` (malformed, too large, refused by the
/// database), 429 `rate_limited` (quota), 503 `unavailable` (not stored; retry).
impl From<PublishError> for HttpError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::QuotaUsedUp => HttpError::TooManyRequests,
            PublishError::QueueFull | PublishError::NotStored => HttpError::Unavailable,
            other => HttpError::BadRequest(other.message().into_owned()),
        }
    }
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::TooManyConnections | HttpError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::NotFound => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::Unavailable | HttpError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            HttpError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            HttpError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            HttpError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            HttpError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            HttpError::TooManyDevices => StatusCode::CONFLICT,
            HttpError::InvalidGrant => StatusCode::BAD_REQUEST,
        }
    }

    /// The machine-readable `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            HttpError::Unauthorized(_) => "unauthorized",
            HttpError::Forbidden(_) => "forbidden",
            HttpError::TooManyConnections => "too_many_connections",
            HttpError::RateLimited => "rate_limited",
            HttpError::BadRequest(_) => "bad_request",
            HttpError::NotFound => "not_found",
            HttpError::MethodNotAllowed => "method_not_allowed",
            HttpError::Unavailable => "unavailable",
            HttpError::Overloaded => "overloaded",
            HttpError::Conflict(_) => "conflict",
            HttpError::InvalidCredentials => "unauthorized",
            HttpError::Internal => "internal",
            HttpError::TooManyAttempts => "rate_limited",
            HttpError::RequestTimeout => "request_timeout",
            HttpError::TooManyRequests => "rate_limited",
            HttpError::TooManyDevices => "too_many_devices",
            HttpError::InvalidGrant => "invalid_grant",
        }
    }

    /// `{"error":CODE,"message":…}` with the matching status.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        json_response(self.status(), &body)
    }
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    resp
}

const NOT_ALLOWED_ON_CHANNEL: &str = "not allowed on this channel";

/// Why a publish was refused by the `publish` module, which the WebSocket session and the server
/// API share. Mapped to an `error` frame ([`FrameError`]) and to [`HttpError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// A malformed publish (server API validation): `bad_request`.
    Invalid(Cow<'static, str>),
    /// A client's durable event over `SYNCGATE_DURABLE_MAX_EVENT_BYTES`: `too_large`.
    TooLarge { max: usize },
    /// The user's durable publish quota is used up for this minute: `rate_limited`.
    QuotaUsedUp,
    /// The durable write queue is full: `unavailable` (retry with the same `msg_id`).
    QueueFull,
    /// The database refused this event: `bad_request`.
    Refused,
    /// Not stored (the database unreachable, the writer stopped): `unavailable`.
    NotStored,
}

impl PublishError {
    /// The message both the `error` frame and the HTTP body carry.
    pub fn message(&self) -> Cow<'static, str> {
        match self {
            PublishError::Invalid(m) => m.clone(),
            PublishError::TooLarge { max } => {
                format!("a durable event is at most {max} bytes (SYNCGATE_DURABLE_MAX_EVENT_BYTES)").into()
            }
            PublishError::QuotaUsedUp => "durable publish quota used up for this minute \
                 (SYNCGATE_DURABLE_EVENTS_PER_MIN, SYNCGATE_DURABLE_BYTES_PER_MIN)"
                .into(),
            PublishError::QueueFull => "durable write queue full; retry with the same msg_id".into(),
            PublishError::Refused => "the event cannot be stored".into(),
            PublishError::NotStored => "not stored; retry with the same msg_id".into(),
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for PublishError {}

/// An error answered on the WebSocket: the `error` frame's code and message. Every typed error a
/// request can meet converts into it (`From`), and [`FrameError::frame`] is the one way to turn
/// it into the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> FrameError {
        FrameError { code, message: message.into() }
    }

    /// `{"type":"error","code":…,"message":…,"id":…}` answering request `id`.
    pub fn frame(&self, id: &RequestId) -> Message {
        Message::Text(protocol::error(self.code, &self.message, id))
    }
}

/// A channel the caller may not use: `bad_request` for a bad name, `forbidden` when not allowed.
impl From<ChannelError> for FrameError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Invalid(m) => FrameError::new(ErrorCode::BadRequest, m),
            ChannelError::Forbidden | ChannelError::NotGranted => {
                FrameError::new(ErrorCode::Forbidden, NOT_ALLOWED_ON_CHANNEL)
            }
        }
    }
}

impl From<PublishError> for FrameError {
    fn from(e: PublishError) -> Self {
        let code = match e {
            PublishError::Invalid(_) | PublishError::Refused => ErrorCode::BadRequest,
            PublishError::TooLarge { .. } => ErrorCode::TooLarge,
            PublishError::QuotaUsedUp => ErrorCode::RateLimited,
            PublishError::QueueFull | PublishError::NotStored => ErrorCode::Unavailable,
        };
        FrameError { code, message: e.message() }
    }
}

/// A publish on a signed channel (`SYNCGATE_SIGNED_NAMESPACES`) that was refused: `forbidden`
/// for a device without a registered key, `unauthorized` for a missing, malformed, wrong, stale
/// or replayed signature, `unavailable` when the key or the nonce memory cannot be read. The
/// connection stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The sending device has no registered public key.
    NoKey,
    /// A signature field is missing (its name).
    Missing(&'static str),
    /// A signature field has the wrong JSON type (its name).
    Wrong(&'static str),
    /// The nonce is not 16-64 characters of `[A-Za-z0-9_-]`.
    BadNonce,
    /// The signature does not verify.
    BadSignature,
    /// `sig_ts` is outside the window around the gateway's clock.
    Stale { window_secs: u64 },
    /// The device already used this nonce.
    Replayed,
    /// The key lookup failed, or the nonce memory is full: retry.
    Unavailable,
}

impl From<SignatureError> for FrameError {
    fn from(e: SignatureError) -> Self {
        use SignatureError::*;
        match e {
            NoKey => FrameError::new(
                ErrorCode::Forbidden,
                "this channel takes signed publishes; the device has no registered key",
            ),
            Missing(f) => FrameError::new(ErrorCode::Unauthorized, format!("a signed publish needs `{f}`")),
            Wrong(f) => FrameError::new(ErrorCode::Unauthorized, format!("field `{f}` has the wrong type")),
            BadNonce => FrameError::new(ErrorCode::Unauthorized, "`nonce` must be 16-64 characters of [A-Za-z0-9_-]"),
            BadSignature => FrameError::new(ErrorCode::Unauthorized, "bad signature"),
            Stale { window_secs } => FrameError::new(
                ErrorCode::Unauthorized,
                format!("`sig_ts` is more than {window_secs} s from the server's clock"),
            ),
            Replayed => FrameError::new(ErrorCode::Unauthorized, "nonce already used"),
            Unavailable => FrameError::new(ErrorCode::Unavailable, "signature check unavailable; retry"),
        }
    }
}

/// Why the server closes a WebSocket; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the client closed, or a normal end.
    Normal,
    /// 1001: server shutting down.
    GoingAway,
    /// 1002: WebSocket protocol violation.
    Protocol,
    /// 1007: a text message (or close reason) that is not valid UTF-8.
    InvalidPayload,
    /// 1008: the connection kept sending far above its rate limit.
    RateAbuse,
    /// 1009: a message larger than the limit.
    TooLarge,
    /// 1011: an unexpected server error.
    Internal,
    /// 1013: the outbound queue overflowed (slow consumer).
    SlowConsumer,
    /// 4001: no valid token in time, or the token expired.
    Unauthorized,
    /// 4001 too: the token expired on a live connection.
    TokenExpired,
    /// 4003: the device or user was revoked / kicked.
    Forbidden,
    /// 4008: no pong or other traffic within two heartbeat intervals.
    HeartbeatTimeout,
    /// 4009: over the per-user connection cap (first-frame auth).
    TooManyConnections,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::RateAbuse => 1008,
            CloseReason::TooLarge => 1009,
            CloseReason::Internal => 1011,
            CloseReason::SlowConsumer => 1013,
            CloseReason::Unauthorized | CloseReason::TokenExpired => 4001,
            CloseReason::Forbidden => 4003,
            CloseReason::HeartbeatTimeout => 4008,
            CloseReason::TooManyConnections => 4009,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::GoingAway => "server shutting down",
            CloseReason::Protocol => "protocol error",
            CloseReason::InvalidPayload => "invalid UTF-8",
            CloseReason::RateAbuse => "rate limit exceeded",
            CloseReason::TooLarge => "message too large",
            CloseReason::Internal => "internal error",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Forbidden => "forbidden",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::TooManyConnections => "too many connections",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_errors_keep_their_codes_and_messages() {
        let quota = FrameError::from(PublishError::QuotaUsedUp);
        assert_eq!(quota.code, ErrorCode::RateLimited);
        assert_eq!(
            quota.message,
            "durable publish quota used up for this minute \
             (SYNCGATE_DURABLE_EVENTS_PER_MIN, SYNCGATE_DURABLE_BYTES_PER_MIN)"
        );
        let large = FrameError::from(PublishError::TooLarge { max: 64 });
        assert_eq!(large.code, ErrorCode::TooLarge);
        assert_eq!(large.message, "a durable event is at most 64 bytes (SYNCGATE_DURABLE_MAX_EVENT_BYTES)");
        assert_eq!(FrameError::from(PublishError::QueueFull).code, ErrorCode::Unavailable);
        assert_eq!(HttpError::from(PublishError::Refused), HttpError::BadRequest("the event cannot be stored".into()));
        assert_eq!(HttpError::from(PublishError::QueueFull).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(HttpError::from(PublishError::NotStored).status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(HttpError::from(PublishError::QuotaUsedUp).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(HttpError::from(PublishError::QuotaUsedUp).code(), "rate_limited");
        assert_eq!(HttpError::from(PublishError::Invalid("x".into())), HttpError::BadRequest("x".into()));
    }

    #[test]
    fn channel_errors_map_alike_on_both_sides() {
        let bad = ChannelError::Invalid("bad name");
        assert_eq!(FrameError::from(bad.clone()), FrameError::new(ErrorCode::BadRequest, "bad name"));
        assert_eq!(HttpError::from(bad), HttpError::BadRequest("bad name".into()));
        let no = FrameError::from(ChannelError::Forbidden);
        assert_eq!((no.code, &*no.message), (ErrorCode::Forbidden, "not allowed on this channel"));
        assert_eq!(HttpError::from(ChannelError::Forbidden).status(), StatusCode::FORBIDDEN);
    }
}
