//! Who a connection is, and the rules for device ids: a leaf module (it imports nothing of the
//! gateway), so channels, admission, the WebSocket session and the APIs can all use it without
//! depending on each other.

use std::sync::Arc;

/// Who a connection is: the user from the token, the device from the token (`did`) or the
/// request.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Arc<str>,
    pub device_id: Arc<str>,
    /// Channel globs from the token's `channels`, `subscribe` and `publish` claims (shared:
    /// an `Arc` keeps every connection's identity small; a re-auth swaps it).
    pub rights: Arc<Rights>,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// The token generation (`gen` claim; 0 when absent): a password change or reset starts a
    /// new one and closes connections opened with older tokens.
    pub gen: u64,
}

/// What a token's claims grant beyond the fixed rules (`user:`, `dm:`, public namespaces):
/// channel globs (the channel module matches them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    /// `channels`: subscribe and publish.
    pub channels: Vec<String>,
    /// `subscribe`: subscribe (and typing, presence, history) only.
    pub subscribe: Vec<String>,
    /// `publish`: publish only.
    pub publish: Vec<String>,
}

impl Rights {
    /// Rights from the `channels` claim alone.
    pub fn channels(channels: Vec<String>) -> Arc<Rights> {
        Arc::new(Rights { channels, ..Rights::default() })
    }
}

/// `[A-Za-z0-9._:-]{1,64}`.
pub fn valid_device_id(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 64
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The message for a device id that breaks [`valid_device_id`].
pub const DEVICE_ID_RULE: &str = "device_id must be 1-64 characters of [A-Za-z0-9._:-]";
