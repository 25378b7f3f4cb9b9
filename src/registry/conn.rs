//! One connection's shared handle: identity plus its bounded outbound queue.
//!
//! Publishers push already-encoded frames (cheap clones) under a short `std` mutex that is never
//! held across an await; the connection task swaps the whole queue out in one lock and writes it.
//! Policy when the queue is full: the connection is a slow consumer; its backlog is dropped and it
//! is closed with 1013 (Try Again Later) so that it reconnects and recovers, instead of silently
//! losing messages or growing memory without bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::error::CloseReason;
use crate::metrics::Metrics;

/// Counts one open connection (`syncgate_connections`) for as long as it lives.
pub struct OpenGuard(Arc<Metrics>);

impl OpenGuard {
    pub fn new(metrics: Arc<Metrics>) -> OpenGuard {
        metrics.connections.inc();
        OpenGuard(metrics)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

struct Queue {
    items: VecDeque<Message>,
    /// Payload bytes queued or taken and not yet written (bounded too: 1024 frames of 1 MiB
    /// would be 1 GiB).
    bytes: usize,
    /// Frames (and their bytes) the connection task took and is still feeding to the socket:
    /// they count against the bounds until [`ConnHandle::written`], so a connection never holds
    /// more than one queue's worth whatever its writer is doing.
    inflight: usize,
    inflight_bytes: usize,
    /// Set once: the connection must close with this reason after writing nothing more.
    closing: Option<CloseReason>,
    /// A frame other than a ping was queued since the last [`ConnHandle::shrink_if_idle`].
    active: bool,
}

/// Result of [`ConnHandle::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue overflowed just now: the connection is being closed as a slow consumer.
    Overflow,
    /// The connection is already closing; the frame was discarded.
    Closed,
}

/// What the registry keeps per connection. Cloning the `Arc` is shallow.
pub struct ConnHandle {
    pub id: u64,
    pub user_id: Arc<str>,
    pub device_id: Arc<str>,
    /// The token generation the connection authenticated in (see [`Registry::set_token_gen`]).
    ///
    /// [`Registry::set_token_gen`]: super::Registry::set_token_gen
    pub gen: u64,
    capacity: usize,
    max_bytes: usize,
    queue: Mutex<Queue>,
    notify: Notify,
    /// Counts slow-consumer closes.
    metrics: Arc<Metrics>,
}

impl ConnHandle {
    /// The handle of a connection authenticated with a token of generation `gen`.
    pub fn with_gen(mut self, gen: u64) -> ConnHandle {
        self.gen = gen;
        self
    }

    /// A handle whose queue holds at most `capacity` frames and `max_bytes` payload bytes.
    pub fn new(
        id: u64,
        user_id: Arc<str>,
        device_id: Arc<str>,
        capacity: usize,
        max_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> ConnHandle {
        ConnHandle {
            id,
            user_id,
            device_id,
            gen: 0,
            capacity,
            max_bytes,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                inflight: 0,
                inflight_bytes: 0,
                closing: None,
                active: false,
            }),
            notify: Notify::new(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (push/swap only).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame for this connection (never blocks, never awaits).
    pub fn push(&self, msg: Message) -> Push {
        let mut q = self.lock();
        if q.closing.is_some() {
            return Push::Closed;
        }
        let len = msg.len();
        if !self.fits(&q, len) {
            q.items = VecDeque::new();
            q.bytes = q.inflight_bytes;
            q.closing = Some(CloseReason::SlowConsumer);
            drop(q);
            self.metrics.slow_consumer_closes.inc();
            self.notify.notify_one();
            return Push::Overflow;
        }
        self.enqueue(q, msg, len);
        Push::Queued
    }

    /// Appends a frame that fits; wakes the connection task when the queue was empty.
    fn enqueue(&self, mut q: std::sync::MutexGuard<'_, Queue>, msg: Message, len: usize) {
        let was_empty = q.items.is_empty();
        // The heartbeat's own ping is not traffic.
        q.active |= !matches!(msg, Message::Ping(_));
        q.items.push_back(msg);
        q.bytes += len;
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Whether a frame of `len` bytes fits. A single frame larger than the byte budget still
    /// fits into an empty queue.
    fn fits(&self, q: &Queue, len: usize) -> bool {
        let frames = q.items.len() + q.inflight;
        frames < self.capacity && (q.bytes + len <= self.max_bytes || frames == 0)
    }

    /// Queues `msg` only if it fits (a replay page waits for room instead of overflowing);
    /// gives it back otherwise. A closing connection swallows it.
    pub fn try_push(&self, msg: Message) -> Result<(), Message> {
        let q = self.lock();
        if q.closing.is_some() {
            return Ok(());
        }
        let len = msg.len();
        if !self.fits(&q, len) {
            return Err(msg);
        }
        self.enqueue(q, msg, len);
        Ok(())
    }

    /// At most half full (frames and bytes, in flight included): room to read another replay page.
    pub fn half_empty(&self) -> bool {
        let q = self.lock();
        (q.items.len() + q.inflight) * 2 <= self.capacity && q.bytes * 2 <= self.max_bytes
    }

    /// Asks the connection to close with `reason` (kicks, shutdown). The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        let mut q = self.lock();
        if q.closing.is_none() {
            q.closing = Some(reason);
            q.items.clear();
            q.bytes = q.inflight_bytes;
        }
        drop(q);
        self.notify.notify_one();
    }

    /// The close reason, once a close was requested.
    pub fn closing(&self) -> Option<CloseReason> {
        self.lock().closing
    }

    /// Waits until something was queued or a close was requested.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Swaps the queued frames into `into` (which must be empty; its capacity is reused, so a
    /// steady stream of fan-out allocates nothing). Returns the close reason, if one was set.
    /// The taken frames stay counted against the bounds until [`ConnHandle::written`] (or the
    /// next `take`).
    pub fn take(&self, into: &mut VecDeque<Message>) -> Option<CloseReason> {
        let mut q = self.lock();
        q.bytes -= q.inflight_bytes;
        std::mem::swap(&mut q.items, into);
        q.inflight = into.len();
        q.inflight_bytes = q.bytes;
        q.closing
    }

    /// The frames last taken were handed to the socket's write buffer.
    pub fn written(&self) {
        let mut q = self.lock();
        q.bytes -= q.inflight_bytes;
        q.inflight = 0;
        q.inflight_bytes = 0;
    }

    /// [`Self::shrink`] when nothing but pings was queued since the last call: a connection
    /// that is sent frames keeps its buffers (freeing them would make the next fan-out allocate
    /// for it).
    pub fn shrink_if_idle(&self, spare: &mut VecDeque<Message>) {
        let mut q = self.lock();
        if !std::mem::take(&mut q.active) {
            Self::shrink_locked(&mut q, spare);
        }
    }

    /// Frees queue memory of an idle connection.
    pub fn shrink(&self, spare: &mut VecDeque<Message>) {
        Self::shrink_locked(&mut self.lock(), spare);
    }

    fn shrink_locked(q: &mut Queue, spare: &mut VecDeque<Message>) {
        spare.shrink_to_fit();
        if q.items.is_empty() {
            q.items.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_shrink_keeps_a_busy_connections_buffers() {
        let c = ConnHandle::new(1, "u".into(), "d".into(), 64, 1 << 20, Arc::new(Metrics::default()));
        let mut spare = VecDeque::new();
        for _ in 0..8 {
            c.push(Message::text("a"));
        }
        c.take(&mut spare);
        spare.clear();
        assert!(spare.capacity() >= 8);
        // Traffic since the last heartbeat: kept.
        c.shrink_if_idle(&mut spare);
        assert!(spare.capacity() >= 8);
        // Only the heartbeat's ping since: given back.
        c.push(Message::Ping(Default::default()));
        c.take(&mut spare);
        spare.clear();
        c.shrink_if_idle(&mut spare);
        assert_eq!(spare.capacity(), 0);
    }

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let metrics = Arc::new(Metrics::default());
        let c = ConnHandle::new(1, "u".into(), "d".into(), 2, 1 << 20, metrics.clone());
        assert_eq!(c.push(Message::text("a")), Push::Queued);
        assert_eq!(c.push(Message::text("b")), Push::Queued);
        assert_eq!(c.push(Message::text("c")), Push::Overflow);
        assert_eq!(c.push(Message::text("d")), Push::Closed);
        let mut spare = VecDeque::new();
        assert_eq!(c.take(&mut spare), Some(CloseReason::SlowConsumer));
        assert!(spare.is_empty());
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
    }

    #[test]
    fn byte_budget_bounds_the_queue() {
        let c = ConnHandle::new(1, "u".into(), "d".into(), 100, 10, Arc::default());
        assert_eq!(c.push(Message::text("x".repeat(25))), Push::Queued, "one oversized frame fits an empty queue");
        assert_eq!(c.push(Message::text("y")), Push::Overflow);
        let c = ConnHandle::new(1, "u".into(), "d".into(), 100, 10, Arc::default());
        for _ in 0..10 {
            assert_eq!(c.push(Message::text("z")), Push::Queued);
        }
        assert_eq!(c.push(Message::text("z")), Push::Overflow);
    }

    #[test]
    fn frames_being_written_still_count() {
        let c = ConnHandle::new(1, "u".into(), "d".into(), 3, 1 << 20, Arc::default());
        c.push(Message::text("a"));
        c.push(Message::text("b"));
        let mut spare = VecDeque::new();
        c.take(&mut spare);
        assert!(!c.half_empty());
        assert_eq!(c.try_push(Message::text("c")), Ok(()));
        assert_eq!(c.try_push(Message::text("d")), Err(Message::text("d")), "2 in flight + 1 queued = capacity");
        assert_eq!(c.push(Message::text("d")), Push::Overflow);
        let c = ConnHandle::new(1, "u".into(), "d".into(), 3, 1 << 20, Arc::default());
        c.push(Message::text("a"));
        c.push(Message::text("b"));
        spare.clear();
        c.take(&mut spare);
        c.written();
        assert!(c.half_empty());
        assert_eq!(c.push(Message::text("c")), Push::Queued);
        assert_eq!(c.push(Message::text("d")), Push::Queued);
    }

    #[test]
    fn take_swaps_and_keeps_capacity() {
        let c = ConnHandle::new(1, "u".into(), "d".into(), 8, 1 << 20, Arc::default());
        c.push(Message::text("a"));
        let mut spare = VecDeque::new();
        assert_eq!(c.take(&mut spare), None);
        assert_eq!(spare.len(), 1);
        spare.clear();
        c.written();
        c.push(Message::text("b"));
        assert_eq!(c.take(&mut spare), None);
        assert_eq!(spare.pop_front(), Some(Message::text("b")));
    }
}
