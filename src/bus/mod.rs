//! The message bus between instances: `Bus` with an in-process implementation (one instance, the
//! default) and a Redis one (fred; any instance serves any user).
//!
//! Every implementation delivers to the local members itself (so local traffic never waits for,
//! or depends on, Redis) and the Redis bus additionally carries the already-encoded frame to the
//! other instances, which forward the bytes without decoding them.

mod local;
mod redis;
pub mod wire;

use std::future::Future;
use std::pin::Pin;

use tokio_tungstenite::tungstenite::Message;

pub use local::LocalBus;
pub use redis::{external_event, BusError, ExternalError, RedisBus, RedisSettings};

use crate::protocol::{Encoded, RequestId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use crate::registry::ChannelPage;

/// Instructions every instance applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the user's connections (or one device's) with 4003.
    Disconnect { user_id: String, device_id: Option<String> },
    /// Revoke a device: it is closed with 4003 and may never connect again.
    RevokeDevice { user_id: String, device_id: String },
    /// The user's tokens of generations before `gen` are void (password changed or reset):
    /// connections opened with them close with 4003 and such tokens are refused.
    TokenGeneration { user_id: String, gen: u64 },
    /// The device registered its public key: from now on it connects with key login only
    /// (unless `SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN=1`).
    DeviceKeyed { user_id: String, device_id: String, public_key: String },
}

/// The bus. Methods take `&self`; implementations shard or serialise their state inside.
pub trait Bus: Send + Sync + 'static {
    /// Registers one more local interest in `channel`; resolves once this instance is certain to
    /// receive messages published to it anywhere in the cluster (the Redis subscription is
    /// confirmed). Pair every call with [`Bus::unsubscribe`].
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()>;
    /// Releases one local interest; the last one unsubscribes the instance.
    fn unsubscribe(&self, channel: &str);
    /// Delivers `frame` to every member of `channel` in the cluster except connection `origin`
    /// (0: nobody excluded). Returns the number of local recipients.
    fn publish(&self, channel: &str, frame: Message, origin: u64) -> usize;
    /// Sends `frame` to the other instances only (the caller delivered it here); each delivers it
    /// to its members of `channel`. A no-op for the in-process bus.
    fn publish_remote(&self, _channel: &str, _frame: Message, _origin: u64) {}
    /// Applies `ctl` on every instance, this one included.
    fn control(&self, ctl: Control);
    /// One page of the channels whose name starts with `prefix` that have members, with their
    /// member counts (distinct user+device), cluster-wide; `cursor` is the previous page's
    /// `next` (`""` for the first page). The in-process bus pages its own registry.
    fn channels<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> BoxFuture<'a, ChannelPage>;
    /// The `presence` reply (cluster-wide).
    fn presence<'a>(&'a self, channel: &'a str, id: &'a RequestId) -> BoxFuture<'a, Encoded>;
    /// Whether `user` has a connection anywhere in the cluster (what this instance knows when
    /// Redis is unreachable).
    fn user_connected<'a>(&'a self, user: &'a str) -> BoxFuture<'a, bool>;
    /// Takes a cluster-wide connection slot for `user` (false: the user is at `max`).
    fn acquire_user<'a>(&'a self, user: &'a str, max: u32) -> BoxFuture<'a, bool>;
    /// Takes one durable event of `bytes` from `user`'s budget for the current minute, shared by
    /// every instance: `Some(false)` when it would exceed `events_max` events or `bytes_max`
    /// bytes (nothing is counted then), `None` when this bus keeps no shared counters (one
    /// instance, or Redis unreachable): the caller counts in memory.
    fn take_durable_quota<'a>(
        &'a self,
        _user: &'a str,
        _bytes: u64,
        _events_max: u64,
        _bytes_max: u64,
    ) -> BoxFuture<'a, Option<bool>> {
        Box::pin(std::future::ready(None))
    }
    /// Adds one to the counter `name` for the current clock minute, shared by every instance,
    /// and returns the count so far (this one included); `None` when this bus keeps no shared
    /// counters (one instance, or Redis unreachable): the caller counts in memory.
    fn count_this_minute<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Option<u64>> {
        Box::pin(std::future::ready(None))
    }
    /// Remembers a signed publish's nonce cluster-wide for `ttl_ms` (`key` names the user, the
    /// device and the nonce): `Some(true)` when it was not remembered yet, `Some(false)` when it
    /// was (a replay), `None` when this bus keeps no shared memory (one instance, or Redis
    /// unreachable): the caller uses the in-process one.
    fn take_nonce<'a>(&'a self, _key: &'a str, _ttl_ms: u64) -> BoxFuture<'a, Option<bool>> {
        Box::pin(std::future::ready(None))
    }
    /// Forgets a nonce taken with [`Bus::take_nonce`] for a publish refused before it was
    /// delivered or stored.
    fn release_nonce(&self, _key: &str) {}
    /// Cluster view for `/api/status`: instances with their connection counts and the `top` users
    /// with most connections.
    fn status<'a>(&'a self, top: usize) -> BoxFuture<'a, serde_json::Value>;
    /// False while a required backend is unreachable (`/ready` answers 503).
    fn healthy(&self) -> bool;
    /// Short state for `/ready` and logs: `"local"`, `"up"`, `"down"`.
    fn state(&self) -> &'static str;
    /// Leaves the cluster at a graceful shutdown: this instance's presence and connection
    /// slots are removed at once (the other instances announce the `leave`s and report the
    /// transitions now, not after `SYNCGATE_PRESENCE_TTL_MS`). A no-op for the in-process bus.
    fn leave<'a>(&'a self) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
    /// Stops the bus's background tasks (the server has stopped serving). A no-op for the
    /// in-process bus.
    fn stop(&self) {}
}

/// The registry's observer, implemented by the cluster bus (defined by the registry, which
/// never imports the bus).
pub use crate::registry::ClusterHooks;
