//! Durable streams as one connection sees them: every durable channel it subscribed to is
//! delivered gap-free and in `seq` order, whether an event comes live or from the store.
//!
//! While a subscribe reads the stream state, live events of that channel are held back (dropped:
//! they are in the store). From then on, while a replay is read or queued, a live event is
//! written only if it is the next `seq`; a duplicate is dropped, and an event beyond the next is
//! dropped and read back from the store in order. Once caught up, every newer event is written
//! (a connection is never sent its own publishes live, so its `seq`s legitimately jump). Replays are read a page at a time, only while the connection's bounded queue is at
//! most half full, and go through that same queue — so a replay after `since` never holds more
//! than one page outside the queue, whatever the client's reading speed.

use std::collections::VecDeque;

use tokio_tungstenite::tungstenite::Message;

use crate::protocol;
use crate::registry::ConnHandle;

/// Events read from the store per replay page.
pub(crate) const PAGE: u64 = 64;

struct Tracked {
    channel: String,
    /// The last `seq` written to (or queued for) the client in order.
    last: u64,
    /// The last `seq` read from the store (the next page starts after it).
    cursor: u64,
    /// The highest `seq` dropped out of order: the store must be read at least up to it.
    gap: u64,
    /// The subscribe is still reading the stream state: live events are held back.
    hold: bool,
    /// A page read is in flight.
    reading: bool,
    /// The last page was full: there may be more.
    more: bool,
    /// Bumped whenever the entry is reset, so a stale page read is recognised.
    generation: u32,
}

/// A replay page to read: `(channel, after, generation)`.
pub(crate) type PageRequest = (String, u64, u32);

/// All durable channels being tracked on one connection, plus the part of a replay page that
/// did not fit into the queue yet. Boxed in the session and absent on most connections.
#[derive(Default)]
pub(crate) struct Streams {
    tracked: Vec<Tracked>,
    backlog: VecDeque<Message>,
    generation: u32,
}

impl Streams {
    fn find(&mut self, channel: &[u8]) -> Option<usize> {
        self.tracked.iter().position(|t| t.channel.as_bytes() == channel)
    }

    /// A durable subscribe began: hold live events of `channel` until [`Streams::opened`].
    pub fn hold(&mut self, channel: &str) {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let fresh = Tracked {
            channel: channel.to_string(),
            last: 0,
            cursor: 0,
            gap: 0,
            hold: true,
            reading: false,
            more: false,
            generation,
        };
        match self.find(channel.as_bytes()) {
            Some(i) => self.tracked[i] = fresh,
            None => self.tracked.push(fresh),
        }
    }

    /// The stream state arrived: the client has (or is about to be written) everything up to
    /// `last`; events after it come live or from the store.
    pub fn opened(&mut self, channel: &str, last: u64, first_page_full: bool) {
        if let Some(i) = self.find(channel.as_bytes()) {
            let t = &mut self.tracked[i];
            t.hold = false;
            t.last = last;
            t.cursor = last;
            t.more = first_page_full;
        }
    }

    /// The stream state arrived with the first page of a replay after `since` (read up to
    /// `last`): the page goes through the queue like every later one.
    pub fn replay(&mut self, channel: &str, since: u64, frames: Vec<Message>, last: u64, conn: &ConnHandle) {
        self.opened(channel, since, frames.len() as u64 == PAGE);
        if let Some(i) = self.find(channel.as_bytes()) {
            self.tracked[i].cursor = last;
        }
        self.backlog.extend(frames);
        self.push_backlog(conn);
    }

    /// The subscribe failed or the channel was left: stop tracking it.
    pub fn forget(&mut self, channel: &str) {
        if let Some(i) = self.find(channel.as_bytes()) {
            self.tracked.swap_remove(i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty() && self.backlog.is_empty()
    }

    /// Whether a drained frame is written: durable events of tracked channels only in order.
    pub fn admit(&mut self, m: &Message) -> bool {
        let Message::Text(t) = m else { return true };
        let Some((channel, seq)) = protocol::event_seq(t.as_bytes()) else { return true };
        let Some(i) = self.find(channel) else { return true };
        let t = &mut self.tracked[i];
        if t.hold {
            t.gap = t.gap.max(seq);
            return false;
        }
        if seq <= t.last {
            return false;
        }
        if seq > t.last + 1 {
            // While a replay is being read or queued, an event past the next one is read back
            // from the store in order. Once caught up, a jump is an event this connection is
            // never sent live (its own publishes): written as it is.
            let catching_up = t.reading || t.more || t.gap > t.cursor || t.last < t.cursor || !self.backlog.is_empty();
            if catching_up {
                t.gap = t.gap.max(seq);
                return false;
            }
        }
        t.last = seq;
        // A live event past everything read from the store, nothing missing: caught up. Live
        // delivery is in seq order, so no stale copy can follow; stop filtering this channel.
        if !t.reading && !t.more && t.gap <= t.cursor && seq > t.cursor {
            self.tracked.swap_remove(i);
        }
        true
    }

    /// The next page to read, if any tracked channel needs one (marked as reading).
    pub fn next_read(&mut self) -> Option<PageRequest> {
        if !self.backlog.is_empty() {
            return None;
        }
        let t = self.tracked.iter_mut().find(|t| !t.hold && !t.reading && (t.more || t.gap > t.cursor))?;
        t.reading = true;
        Some((t.channel.clone(), t.cursor, t.generation))
    }

    /// A page arrived: queue it (what does not fit waits in the backlog). Stale pages (the
    /// channel was left or re-subscribed meanwhile) are dropped.
    pub fn page_read(&mut self, req: &PageRequest, frames: Vec<Message>, last: Option<u64>, conn: &ConnHandle) {
        let Some(i) = self.find(req.0.as_bytes()) else { return };
        let t = &mut self.tracked[i];
        if t.generation != req.2 {
            return;
        }
        t.reading = false;
        t.more = frames.len() as u64 == PAGE;
        if let Some(last) = last {
            t.cursor = t.cursor.max(last);
        }
        self.backlog.extend(frames);
        self.push_backlog(conn);
    }

    /// A page read failed: the channel is no longer tracked (the caller closes the connection).
    pub fn page_failed(&mut self, req: &PageRequest) {
        self.forget(&req.0);
    }

    /// Moves backlog frames into the queue while they fit.
    pub fn push_backlog(&mut self, conn: &ConnHandle) {
        while let Some(m) = self.backlog.pop_front() {
            if let Err(m) = conn.try_push(m) {
                self.backlog.push_front(m);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ev(channel: &str, seq: u64) -> Message {
        Message::Text(protocol::durable_event(channel, "e", b"1", None, 0, protocol::Stamp { seq, msg_id: None }, None))
    }

    #[test]
    fn in_order_gap_free_and_caught_up() {
        let conn = ConnHandle::new(1, "u".into(), "d".into(), 1024, 1 << 20, Arc::default());
        let mut s = Streams::default();
        s.hold("dm:a:b");
        assert!(!s.admit(&ev("dm:a:b", 5)), "held while the state is read");
        assert!(s.admit(&ev("room:x", 1)), "untracked channels pass");
        s.opened("dm:a:b", 3, false);
        // 5 was dropped while held: 4..5 must be read from the store.
        let req = s.next_read().unwrap();
        assert_eq!(req, ("dm:a:b".to_string(), 3, s.generation));
        assert!(s.next_read().is_none(), "one read per channel at a time");
        assert!(!s.admit(&ev("dm:a:b", 6)), "still a gap");
        s.page_read(&req, vec![ev("dm:a:b", 4), ev("dm:a:b", 5), ev("dm:a:b", 6)], Some(6), &conn);
        assert!(s.admit(&ev("dm:a:b", 4)));
        assert!(!s.admit(&ev("dm:a:b", 4)), "duplicate");
        assert!(s.admit(&ev("dm:a:b", 5)));
        assert!(s.admit(&ev("dm:a:b", 6)));
        assert!(s.next_read().is_none());
        assert!(!s.admit(&ev("dm:a:b", 6)), "a late live copy of a replayed event");
        assert!(s.admit(&ev("dm:a:b", 7)), "live and next");
        assert!(s.is_empty(), "caught up: no longer tracked");
    }

    #[test]
    fn caught_up_jumps_are_the_connections_own_publishes() {
        let conn = ConnHandle::new(1, "u".into(), "d".into(), 1024, 1 << 20, Arc::default());
        let mut s = Streams::default();
        s.hold("dm:a:b");
        s.opened("dm:a:b", 10, false);
        // 11 was this connection's own publish: 12 is written, not read back from the store.
        assert!(s.admit(&ev("dm:a:b", 12)));
        assert!(s.next_read().is_none());
        // While a replay is queued, a jump waits for the store instead.
        s.hold("dm:a:b");
        s.replay("dm:a:b", 0, vec![ev("dm:a:b", 1), ev("dm:a:b", 2)], 2, &conn);
        assert!(!s.admit(&ev("dm:a:b", 4)), "3 is still to come from the store");
        assert!(s.admit(&ev("dm:a:b", 1)));
        assert!(s.admit(&ev("dm:a:b", 2)));
        assert_eq!(s.next_read().map(|r| r.1), Some(2), "4 was dropped: read from 2 on");
    }

    #[test]
    fn stale_pages_are_dropped() {
        let conn = ConnHandle::new(1, "u".into(), "d".into(), 1024, 1 << 20, Arc::default());
        let mut s = Streams::default();
        s.hold("dm:a:b");
        s.opened("dm:a:b", 0, true);
        let req = s.next_read().unwrap();
        s.hold("dm:a:b");
        s.page_read(&req, vec![ev("dm:a:b", 1)], Some(1), &conn);
        let mut q = VecDeque::new();
        conn.take(&mut q);
        assert!(q.is_empty());
    }

    #[test]
    fn pages_wait_for_room() {
        let conn = ConnHandle::new(1, "u".into(), "d".into(), 4, 1 << 20, Arc::default());
        let mut s = Streams::default();
        s.hold("dm:a:b");
        s.opened("dm:a:b", 0, true);
        let req = s.next_read().unwrap();
        s.page_read(&req, (1..=6).map(|i| ev("dm:a:b", i)).collect(), Some(6), &conn);
        assert!(s.next_read().is_none(), "backlog first");
        let mut q = VecDeque::new();
        conn.take(&mut q);
        assert_eq!(q.len(), 4, "the queue's bound holds");
        conn.written();
        s.push_backlog(&conn);
        q.clear();
        conn.take(&mut q);
        assert_eq!(q.len(), 2);
    }
}
