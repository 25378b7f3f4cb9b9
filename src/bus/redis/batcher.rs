//! Outgoing publishes: a bounded queue drained by one task that coalesces what arrives within
//! `SYNCGATE_REDIS_FLUSH_US` into one PUBLISH per channel (SPUBLISH on a Redis Cluster: only
//! the channel's shard sees it; several frames per payload, see [`crate::bus::wire`]), sent as
//! one pipeline.
//!
//! Full queue or Redis down: the messages are dropped and counted (`dropped`), never buffered
//! without bound; local members were already served before anything is queued.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::RedisBus;
use crate::bus::wire::{self, Kind};

/// Most messages in one batch (the rest wait for the next one).
const MAX_BATCH: usize = 4096;

/// One frame waiting to be sent to the other instances.
pub(super) struct Outgoing {
    channel: Arc<str>,
    kind: Kind,
    frame: Bytes,
    origin: u64,
}

impl RedisBus {
    /// Queues `frame` for the other instances (text and binary frames only); a full queue drops
    /// it (counted).
    pub(super) fn enqueue(&self, channel: &str, frame: Message, origin: u64) {
        let (kind, bytes) = match &frame {
            Message::Text(t) => (Kind::Text, Bytes::from(t.clone())),
            Message::Binary(b) => (Kind::Binary, b.clone()),
            _ => return,
        };
        let item = Outgoing { channel: Arc::from(channel), kind, frame: bytes, origin };
        if self.out.try_send(item).is_err() {
            self.metrics.bus.dropped.inc();
        }
    }

    /// Background task: takes the first queued message, waits the flush interval, takes what
    /// else is queued (up to [`MAX_BATCH`]) and sends it as one pipeline.
    pub(super) async fn batcher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut batches: HashMap<Arc<str>, BytesMut> = HashMap::new();
        while let Some(first) = rx.recv().await {
            let mut n = 1;
            self.add(&mut batches, first);
            if !self.settings.flush.is_zero() {
                tokio::time::sleep(self.settings.flush).await;
            }
            while n < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => {
                        self.add(&mut batches, item);
                        n += 1;
                    }
                    Err(_) => break,
                }
            }
            self.metrics.bus.batch_messages.observe(n as f64);
            self.send(&mut batches, n).await;
        }
    }

    /// Sends every channel's payload in `batches` (emptied) as one pipeline of PUBLISHes; `n` is
    /// the number of messages they hold.
    async fn send(&self, batches: &mut HashMap<Arc<str>, BytesMut>, n: usize) {
        let pipeline = self.client.pipeline();
        let mut commands = 0u64;
        for (channel, payload) in batches.drain() {
            let _: Result<(), _> = match self.cluster {
                true => pipeline.spublish(self.key(&channel), payload.freeze()).await,
                false => pipeline.publish(self.key(&channel), payload.freeze()).await,
            };
            commands += 1;
        }
        match pipeline.all::<Vec<Value>>().await {
            Ok(_) => {
                self.metrics.bus.messages.add(n as u64);
                self.metrics.bus.publish_commands.add(commands);
            }
            Err(e) => {
                self.metrics.bus.dropped.add(n as u64);
                tracing::debug!(error = %e, messages = n, "Redis publish failed; remote instances miss these");
            }
        }
    }

    /// Appends `item` to its channel's payload.
    fn add(&self, batches: &mut HashMap<Arc<str>, BytesMut>, item: Outgoing) {
        let b = batches.entry(item.channel).or_default();
        wire::push(b, self.instance.0, item.origin, item.kind, &item.frame);
    }
}
