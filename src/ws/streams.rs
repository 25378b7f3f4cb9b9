//! Durable streams as one connection sees them: every durable channel it subscribed to is
//! delivered gap-free and in `seq` order, whether an event comes live or from the store, and no
//! durable event reaches the connection twice.
//!
//! While a subscribe reads the stream state, live events of that channel are held back (dropped:
//! they are in the store). From then on, while a replay is read or queued, a live event is
//! written only if it is the next `seq`; a duplicate is dropped, and an event beyond the next is
//! dropped and read back from the store in order. Once caught up, every newer event is written
//! (a connection is never sent its own publishes live, so its `seq`s legitimately jump). Replays
//! are read a page at a time, only while the connection's bounded queue is at most half full,
//! and go through that same queue — so a replay after `since` never holds more than one page
//! outside the queue, whatever the client's reading speed.
//!
//! **The seam.** Events also reach a connection outside any subscribe (a `dm:` event through the
//! user channel, before the client asked for `since`), so every durable event written is
//! remembered per channel ([`Given`]: the highest `seq` given, the 64 below it one by one, and
//! everything from the lowest up to 64 below the highest as a range). An event already given is
//! never written again, live or replayed; a replay after `since` skips what was given and fills
//! only what is missing, in order. O(1) per event and no allocation per event: one small entry
//! per durable channel the connection has seen (at most [`MAX_GIVEN`] channels).

use std::collections::{HashMap, VecDeque};

use tokio_tungstenite::tungstenite::Message;

use crate::protocol;
use crate::registry::ConnHandle;

/// Events read from the store per replay page.
pub(crate) const PAGE: u64 = 64;
/// Durable channels whose given events one connection remembers; an event of a channel seen
/// beyond them is written without being remembered.
pub(crate) const MAX_GIVEN: usize = 1024;
/// The `seq`s below the highest given that are remembered one by one.
const WINDOW: u64 = 64;

/// The events of one durable channel given to the connection (written to it, or counted as
/// given: the client already has them). Every `seq` in `low..=high - WINDOW` counts as given;
/// above that, bit `i` of `mask` says whether `high - i` was. A hole further than [`WINDOW`]
/// below the highest (a run of the connection's own publishes, never sent to it live) thus
/// counts as given: a later replay skips it.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Given {
    low: u64,
    high: u64,
    mask: u64,
}

impl Given {
    fn is_empty(&self) -> bool {
        self.high == 0
    }

    fn has(&self, seq: u64) -> bool {
        if self.is_empty() || seq < self.low || seq > self.high {
            return false;
        }
        let back = self.high - seq;
        back >= WINDOW || (self.mask >> back) & 1 == 1
    }

    /// Records `seq` as given. A `seq` far below (apart from) the range is not recorded: only a
    /// replay reaches there, and it is recorded with [`Given::fill`] once it joins the range.
    fn add(&mut self, seq: u64) {
        if self.is_empty() {
            *self = Given { low: seq, high: seq, mask: 1 };
        } else if seq > self.high {
            let up = seq - self.high;
            self.mask = if up >= WINDOW { 0 } else { self.mask << up } | 1;
            self.high = seq;
        } else if self.high - seq < WINDOW {
            self.mask |= 1 << (self.high - seq);
            self.low = self.low.min(seq);
        } else if seq + 1 == self.low {
            self.low = seq;
        }
    }

    /// Records `a..=b` as given: a run that joins the range (`b + 1 >= low`), lies above it, or
    /// starts an empty one. At most [`WINDOW`] steps.
    fn fill(&mut self, a: u64, b: u64) {
        if a > b {
            return;
        }
        for seq in a.max(b.saturating_sub(WINDOW - 1))..=b {
            self.add(seq);
        }
        self.low = self.low.min(a);
    }

    /// The end of the run of given `seq`s right after `seq` (`seq` itself when `seq + 1` was
    /// not given). At most [`WINDOW`] steps.
    fn run_end(&self, seq: u64) -> u64 {
        let mut s = seq;
        if s.saturating_add(1) >= self.low && s.saturating_add(1 + WINDOW) <= self.high {
            s = self.high - WINDOW;
        }
        while s < self.high && self.has(s + 1) {
            s += 1;
        }
        s
    }
}

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
    /// The first `seq` of this subscription (after `since`, or after the head).
    start: u64,
    /// `start..=last` is recorded in the channel's [`Given`] (false while a replay fills in
    /// below events given earlier: it is recorded once it joins them).
    merged: bool,
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
    /// Every durable channel this connection was given events of.
    given: HashMap<Box<[u8]>, Given>,
}

/// Whether a drained frame is written (see [`Streams::admit`]); the connection's streams are
/// created on its first durable event.
pub(crate) fn admit(streams: &mut Option<Box<Streams>>, m: &Message) -> bool {
    let Message::Text(t) = m else { return true };
    let Some((channel, seq)) = protocol::event_seq(t.as_bytes()) else { return true };
    streams.get_or_insert_with(Default::default).admit_seq(channel, seq)
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
            start: 0,
            merged: false,
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
            t.start = last + 1;
            // Whatever this connection was already given right after `last` is not sent again.
            t.last = self.given.get(channel.as_bytes()).map_or(last, |g| g.run_end(last));
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
        self.tracked.is_empty() && self.backlog.is_empty() && self.given.is_empty()
    }

    /// Whether a drained frame is written: a durable event never twice, and of tracked channels
    /// only in order.
    #[cfg(test)]
    pub fn admit(&mut self, m: &Message) -> bool {
        let Message::Text(t) = m else { return true };
        let Some((channel, seq)) = protocol::event_seq(t.as_bytes()) else { return true };
        self.admit_seq(channel, seq)
    }

    /// Whether durable event `seq` of `channel` is written (recorded as given if so).
    fn admit_seq(&mut self, channel: &[u8], seq: u64) -> bool {
        let Streams { tracked, backlog, given, .. } = self;
        // One lookup for a channel seen before; a new one is remembered once it was given one.
        if let Some(g) = given.get_mut(channel) {
            return admit_in(g, tracked, backlog.is_empty(), channel, seq);
        }
        let mut fresh = Given::default();
        let written = admit_in(&mut fresh, tracked, backlog.is_empty(), channel, seq);
        if !fresh.is_empty() && given.len() < MAX_GIVEN {
            given.insert(channel.into(), fresh);
        }
        written
    }

    /// The next page to read, if any tracked channel needs one (marked as reading).
    pub fn next_read(&mut self) -> Option<PageRequest> {
        if !self.backlog.is_empty() {
            return None;
        }
        let t = self.tracked.iter_mut().find(|t| !t.hold && !t.reading && (t.more || t.gap > t.cursor))?;
        t.reading = true;
        // Everything up to `last` was written or given already: no need to read it again.
        Some((t.channel.clone(), t.cursor.max(t.last), t.generation))
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
        // Read after `req.1` (past what was given, possibly beyond the cursor).
        t.cursor = t.cursor.max(req.1).max(last.unwrap_or(0));
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

/// [`Streams::admit_seq`] with the channel's record `g` (`backlog_empty`: no replay frame waits
/// outside the queue).
fn admit_in(g: &mut Given, tracked: &mut Vec<Tracked>, backlog_empty: bool, channel: &[u8], seq: u64) -> bool {
    if g.has(seq) {
        return false;
    }
    let Some(i) = tracked.iter().position(|t| t.channel.as_bytes() == channel) else {
        g.add(seq);
        return true;
    };
    let t = &mut tracked[i];
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
        let catching_up = t.reading || t.more || t.gap > t.cursor || t.last < t.cursor || !backlog_empty;
        if catching_up {
            t.gap = t.gap.max(seq);
            return false;
        }
    }
    let prev = t.last;
    t.last = seq;
    if t.merged {
        g.add(seq);
    } else if g.is_empty() || seq + 1 >= g.low {
        // The run after `since` joins what was given before: recorded from here on, and
        // whatever was given right after it is skipped.
        g.fill(t.start, prev);
        g.add(seq);
        t.merged = true;
    }
    t.last = g.run_end(t.last);
    // A live event past everything read from the store, nothing missing: caught up. Live
    // delivery is in seq order, so no stale copy can follow; stop filtering this channel.
    if !t.reading && !t.more && t.gap <= t.cursor && seq > t.cursor {
        tracked.swap_remove(i);
    }
    true
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
        assert!(s.tracked.is_empty(), "caught up: no longer tracked");
        assert!(!s.admit(&ev("dm:a:b", 7)), "given once: never again, tracked or not");
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
    fn given_remembers_holes_near_the_top_and_a_range_below() {
        let mut g = Given::default();
        assert!(!g.has(1));
        for seq in [5, 6, 8] {
            g.add(seq);
        }
        assert!(g.has(5) && g.has(6) && g.has(8));
        assert!(!g.has(7), "a hole near the top is exact");
        assert!(!g.has(4) && !g.has(9));
        assert_eq!(g.run_end(4), 6);
        assert_eq!(g.run_end(6), 6, "7 is missing");
        g.add(7);
        assert_eq!(g.run_end(4), 8);
        // Far above: everything from 5 up to 64 below the top counts as given.
        g.add(200);
        assert!(g.has(100) && g.has(136) && !g.has(137) && g.has(200));
        assert_eq!(g.run_end(4), 136);
        // A run far below is not recorded by `add`, only by `fill` once it joins.
        g.add(2);
        assert!(!g.has(2));
        g.fill(1, 4);
        assert!((1..=136).all(|s| g.has(s)));
        assert!(!g.has(0));
        // A fill near the top sets the window's bits.
        g.fill(150, 160);
        assert!((150..=160).all(|s| g.has(s)) && !g.has(149) && !g.has(161));
    }

    #[test]
    fn live_events_given_before_a_subscribe_are_not_replayed() {
        let conn = ConnHandle::new(1, "u".into(), "d".into(), 1024, 1 << 20, Arc::default());
        let mut s = Streams::default();
        // 100..=110 arrive live before any subscribe (the user channel's route).
        for seq in 100..=110 {
            assert!(s.admit(&ev("dm:a:b", seq)));
        }
        assert!(!s.admit(&ev("dm:a:b", 105)), "never twice, even untracked");
        // Subscribe with since 5: 6..=99 come from the store, 100..=110 are skipped.
        s.hold("dm:a:b");
        assert!(!s.admit(&ev("dm:a:b", 111)), "held");
        s.replay("dm:a:b", 5, (6..=69).map(|q| ev("dm:a:b", q)).collect(), 69, &conn);
        for seq in 6..=69 {
            assert!(s.admit(&ev("dm:a:b", seq)), "{seq}");
        }
        let req = s.next_read().expect("more to read");
        assert_eq!(req.1, 69);
        s.page_read(&req, (70..=111).map(|q| ev("dm:a:b", q)).collect(), Some(111), &conn);
        for seq in 70..=111 {
            assert_eq!(s.admit(&ev("dm:a:b", seq)), !(100..=110).contains(&seq), "{seq}");
        }
        assert!(s.next_read().is_none());
        assert!(s.admit(&ev("dm:a:b", 112)), "live, caught up");
        assert!(s.tracked.is_empty());
        // Subscribed again with an older since: only 1..=5 were never given.
        s.hold("dm:a:b");
        s.replay("dm:a:b", 0, (1..=64).map(|q| ev("dm:a:b", q)).collect(), 64, &conn);
        for seq in 1..=64 {
            assert_eq!(s.admit(&ev("dm:a:b", seq)), seq <= 5, "{seq}");
        }
        assert_eq!(s.next_read().map(|r| r.1), Some(112), "the next page starts past what was given");
    }

    #[test]
    fn own_publishes_near_the_top_are_replayed() {
        let conn = ConnHandle::new(1, "u".into(), "d".into(), 1024, 1 << 20, Arc::default());
        let mut s = Streams::default();
        // 3 was this connection's own publish: never sent to it live.
        for seq in [1, 2, 4] {
            assert!(s.admit(&ev("dm:a:b", seq)));
        }
        s.hold("dm:a:b");
        s.replay("dm:a:b", 0, (1..=4).map(|q| ev("dm:a:b", q)).collect(), 4, &conn);
        let written: Vec<u64> = (1..=4).filter(|&q| s.admit(&ev("dm:a:b", q))).collect();
        assert_eq!(written, vec![3]);
        assert!(s.admit(&ev("dm:a:b", 5)));
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
