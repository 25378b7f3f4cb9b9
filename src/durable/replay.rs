//! Replay: on a subscribe, the stream state of a durable channel for the device (head, read
//! position) and, with `since`, the events it missed, as event frames. The first page comes
//! with the subscribe reply; the rest is read one page at a time as the connection's queue
//! makes room.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::Durable;
use crate::protocol::{self, Stamp, StreamState};
use crate::store::events::StoredEvent;
use crate::store::StoreError;

/// What a replay found: the events to send and the stream state for the reply.
pub struct Replay {
    /// The first page of the replay (empty unless `recovered`).
    pub frames: Vec<Message>,
    /// The `seq` the connection has seen up to once these frames are written: the last replayed
    /// one, or the head when nothing is replayed.
    pub last: u64,
    pub state: StreamState,
}

impl Durable {
    /// The stream state of `channel` for this device, and — with `since` — the first page (at
    /// most `page` events) of the replay after it. Nothing is replayed and `recovered` is false
    /// when more than `SYNCGATE_REPLAY_MAX` events were missed, `since` is past the head, or
    /// retention already removed the start of the range. The rest of a replay is read with
    /// [`Durable::page`], one page at a time, as the connection's queue makes room.
    pub async fn open_stream(
        &self,
        channel: &str,
        user: &Arc<str>,
        device: &Arc<str>,
        since: Option<u64>,
        page: u64,
    ) -> Result<Replay, StoreError> {
        let head = self.store.head(channel).await?;
        // A position acknowledged beyond the head (a confused client) reads as the head.
        let read_seq = self.position(user, device, channel).await?.min(head);
        let unrecovered = |recovered| Replay {
            frames: Vec::new(),
            last: head,
            state: StreamState { seq: head, read_seq, recovered },
        };
        let Some(since) = since else {
            return Ok(unrecovered(None));
        };
        self.metrics.durable.replays.inc();
        if since > head || head - since > self.replay_max {
            return Ok(unrecovered(Some(false)));
        }
        let want = page.min(head - since);
        let events = self.store.events(channel, since, Some(head + 1), want, false).await?;
        // Retention may have removed the start of the range: then the client must page history.
        let complete = events.first().is_none_or(|e| e.seq == since + 1) && events.len() as u64 == want;
        if !complete {
            return Ok(unrecovered(Some(false)));
        }
        self.metrics.durable.replayed_events.add(events.len() as u64);
        let last = events.last().map_or(since, |e| e.seq);
        let frames = events.iter().map(|e| Message::Text(stored_frame(channel, e))).collect();
        Ok(Replay { frames, last, state: StreamState { seq: head, read_seq, recovered: Some(true) } })
    }

    /// Up to `limit` stored events of `channel` after `after`, oldest first, as frames, with the
    /// last one's `seq` (the next page starts after it).
    pub async fn page(&self, channel: &str, after: u64, limit: u64) -> Result<(Vec<Message>, Option<u64>), StoreError> {
        let events = self.store.events(channel, after, None, limit, false).await?;
        self.metrics.durable.replayed_events.add(events.len() as u64);
        let last = events.last().map(|e| e.seq);
        Ok((events.iter().map(|e| Message::Text(stored_frame(channel, e))).collect(), last))
    }
}

/// The event frame of a stored event.
pub fn stored_frame(channel: &str, e: &StoredEvent) -> protocol::Encoded {
    let from = match (&e.user_id, &e.device_id) {
        (Some(u), Some(d)) => Some((u.as_str(), d.as_str())),
        _ => None,
    };
    protocol::durable_event(
        channel,
        &e.event,
        e.data.as_bytes(),
        from,
        e.ts.max(0) as u64,
        Stamp { seq: e.seq, msg_id: e.msg_id.as_deref() },
        e.sig.as_ref(),
    )
}
