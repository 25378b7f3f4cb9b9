//! What one instance, user or connection may use: message size and rate, connection caps,
//! channels, outbound queues, write timeout and close linger, JSON depth, read-API rate.

use std::time::Duration;

use super::ms;
use super::reader::Reader;

/// Largest inbound message, bytes.
pub const MAX_MESSAGE_BYTES: &str = "SYNCGATE_MAX_MESSAGE_BYTES";
/// Per-connection message rate (token bucket).
pub const MESSAGES_PER_MIN: &str = "SYNCGATE_MESSAGES_PER_MIN";
/// Connections per instance (0: unlimited).
pub const MAX_CONNECTIONS: &str = "SYNCGATE_MAX_CONNECTIONS";
/// Connections per user.
pub const MAX_CONNECTIONS_PER_USER: &str = "SYNCGATE_MAX_CONNECTIONS_PER_USER";
/// Subscriptions per connection.
pub const MAX_CHANNELS_PER_CONNECTION: &str = "SYNCGATE_MAX_CHANNELS_PER_CONNECTION";
/// New connections per second per client address (0: off).
pub const CONNECT_RATE_PER_IP: &str = "SYNCGATE_CONNECT_RATE_PER_IP";
/// Channels with more members send no `join`/`leave`.
pub const JOIN_LEAVE_MAX_MEMBERS: &str = "SYNCGATE_JOIN_LEAVE_MAX_MEMBERS";
/// Ping interval.
pub const HEARTBEAT_MS: &str = "SYNCGATE_HEARTBEAT_MS";
/// Frames queued per connection.
pub const OUTBOUND_QUEUE: &str = "SYNCGATE_OUTBOUND_QUEUE";
/// Payload bytes queued per connection.
pub const OUTBOUND_QUEUE_BYTES: &str = "SYNCGATE_OUTBOUND_QUEUE_BYTES";
/// How long a socket may accept no byte while frames wait.
pub const WRITE_TIMEOUT_MS: &str = "SYNCGATE_WRITE_TIMEOUT_MS";
/// How long to keep reading after a close frame.
pub const CLOSE_LINGER_MS: &str = "SYNCGATE_CLOSE_LINGER_MS";
/// Deepest JSON nesting accepted from any untrusted source.
pub const MAX_JSON_DEPTH: &str = "SYNCGATE_MAX_JSON_DEPTH";
/// Read-API requests per user per minute.
pub const API_REQUESTS_PER_MIN: &str = "SYNCGATE_API_REQUESTS_PER_MIN";

/// Caps and rates that keep one instance, user or connection within bounds.
#[derive(Clone)]
pub struct LimitsConfig {
    /// Largest inbound message (and WebSocket frame), bytes.
    pub max_message_bytes: usize,
    /// Per-connection token bucket.
    pub messages_per_min: u32,
    /// Per-instance connection limit (0: unlimited); beyond it upgrades get 503.
    pub max_connections: u64,
    /// Per-user connection cap.
    pub max_connections_per_user: u32,
    /// Subscriptions per connection (the user channel included).
    pub max_channels_per_connection: u32,
    /// New connections per second per client address (0: off).
    pub connect_rate_per_ip: u32,
    /// Channels with more members send no `join`/`leave`.
    pub join_leave_max_members: usize,
    /// Ping interval; no traffic within two intervals closes the connection.
    pub heartbeat: Duration,
    /// Frames queued per connection.
    pub outbound_queue: usize,
    /// Payload bytes queued per connection.
    pub outbound_queue_bytes: usize,
    /// A connection whose socket accepts no byte for this long while frames wait is closed.
    pub write_timeout: Duration,
    /// After sending a close frame: how long to keep reading (and discarding) until the peer's
    /// close frame or EOF arrives, before the socket is shut (RFC 6455 §7.1.1).
    pub close_linger: Duration,
    /// Deepest JSON nesting accepted from any untrusted source (frames, bodies, Redis, JWKS).
    pub max_json_depth: usize,
    /// Read-API requests (history, conversations, devices, user search) per user per minute.
    pub api_requests_per_min: u32,
}

impl LimitsConfig {
    pub(super) fn read(r: &mut Reader) -> Self {
        LimitsConfig {
            max_message_bytes: r.ranged(MAX_MESSAGE_BYTES, 1 << 20, 64, 64 << 20) as usize,
            messages_per_min: r.ranged(MESSAGES_PER_MIN, 300, 1, 10_000_000) as u32,
            max_connections: r.ranged(MAX_CONNECTIONS, 0, 0, 100_000_000),
            max_connections_per_user: r.ranged(MAX_CONNECTIONS_PER_USER, 20, 1, 1_000_000) as u32,
            max_channels_per_connection: r.ranged(MAX_CHANNELS_PER_CONNECTION, 256, 1, 100_000) as u32,
            connect_rate_per_ip: r.ranged(CONNECT_RATE_PER_IP, 0, 0, 10_000_000) as u32,
            join_leave_max_members: r.ranged(JOIN_LEAVE_MAX_MEMBERS, 1000, 0, 10_000_000) as usize,
            heartbeat: Duration::from_millis(r.ranged(HEARTBEAT_MS, 25_000, 100, 3_600_000)),
            outbound_queue: r.ranged(OUTBOUND_QUEUE, 1024, 1, 1 << 20) as usize,
            outbound_queue_bytes: r.ranged(OUTBOUND_QUEUE_BYTES, 4 << 20, 1024, 1 << 32) as usize,
            write_timeout: Duration::from_millis(r.ranged(WRITE_TIMEOUT_MS, 10_000, 100, 600_000)),
            close_linger: Duration::from_millis(r.ranged(CLOSE_LINGER_MS, 2_000, 0, 60_000)),
            // Capped so that even the recursive encoders stay far from a worker thread's stack limit.
            max_json_depth: r.ranged(MAX_JSON_DEPTH, 128, 1, crate::util::json::MAX_DEPTH_LIMIT as u64) as usize,
            api_requests_per_min: r.ranged(API_REQUESTS_PER_MIN, 600, 1, 1_000_000) as u32,
        }
    }

    pub(super) fn describe(&self, rows: &mut Vec<(&'static str, String)>) {
        let max_connections =
            if self.max_connections == 0 { "0 (unlimited)".into() } else { self.max_connections.to_string() };
        rows.extend([
            (MAX_MESSAGE_BYTES, self.max_message_bytes.to_string()),
            (MESSAGES_PER_MIN, self.messages_per_min.to_string()),
            (MAX_CONNECTIONS, max_connections),
            (MAX_CONNECTIONS_PER_USER, self.max_connections_per_user.to_string()),
            (MAX_CHANNELS_PER_CONNECTION, self.max_channels_per_connection.to_string()),
            (CONNECT_RATE_PER_IP, self.connect_rate_per_ip.to_string()),
            (JOIN_LEAVE_MAX_MEMBERS, self.join_leave_max_members.to_string()),
            (HEARTBEAT_MS, ms(self.heartbeat)),
            (OUTBOUND_QUEUE, self.outbound_queue.to_string()),
            (OUTBOUND_QUEUE_BYTES, self.outbound_queue_bytes.to_string()),
            (WRITE_TIMEOUT_MS, ms(self.write_timeout)),
            (CLOSE_LINGER_MS, ms(self.close_linger)),
            (MAX_JSON_DEPTH, self.max_json_depth.to_string()),
            (API_REQUESTS_PER_MIN, self.api_requests_per_min.to_string()),
        ]);
    }
}
