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
    /// Channel globs from the token's `channels` claim.
    pub channels: Vec<String>,
    /// Token expiry, seconds since the epoch.
    pub exp: u64,
    /// The token generation (`gen` claim; 0 when absent): a password change or reset starts a
    /// new one and closes connections opened with older tokens.
    pub gen: u64,
}

/// `[A-Za-z0-9._:-]{1,64}`.
pub fn valid_device_id(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 64
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The message for a device id that breaks [`valid_device_id`].
pub const DEVICE_ID_RULE: &str = "device_id must be 1-64 characters of [A-Za-z0-9._:-]";
