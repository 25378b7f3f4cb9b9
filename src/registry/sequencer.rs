//! In-order live delivery of durable events on one instance.
//!
//! A channel's `seq`s are assigned by the database, but events committed by different instances
//! reach this one by different paths (its own commits at once, the others' through Redis), so
//! two near-simultaneous events can arrive swapped. Every durable event delivered here passes
//! through [`Sequencer::offer`], keyed by (route, channel) — the route is the registry channel
//! whose members receive it (the channel itself, or a user channel for `dm:`):
//!
//! - the next expected `seq` is delivered at once, followed by any buffered successors;
//! - a later one waits (bounded) for the gap to fill. After [`GAP_WAIT`], [`Sequencer::tick`]
//!   asks for the missing `seq`s to be read from the store (a gap after events delivered here:
//!   the event was committed but its live path was lost, say its instance died before relaying
//!   it); what the store has comes back through `offer`, in order. What is still missing
//!   [`REPAIR_WAIT`] later is given up and the buffered events go out in order, so a lost path
//!   never stalls a stream;
//! - an earlier one is a duplicate and dropped, unless it is one that was skipped (released past
//!   by `tick`, or older than the stream's first event here): then it is delivered late, once.
//!
//! State is created by the first event and dropped after [`IDLE`] without traffic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

/// How long an event waits for a missing predecessor before the store is asked for it.
pub const GAP_WAIT: Duration = Duration::from_millis(25);
/// How much longer it waits for the store's answer before the gap is given up.
pub const REPAIR_WAIT: Duration = Duration::from_millis(500);
/// Streams without traffic for this long are forgotten.
pub const IDLE: Duration = Duration::from_secs(120);
/// Most events buffered per stream; beyond it the oldest are released at once.
const MAX_PENDING: usize = 4096;
/// Most skipped seqs remembered per stream (for late delivery).
const MAX_SKIPPED: usize = 4096;
const SHARDS: usize = 16;

struct Pending {
    msg: Message,
    except: u64,
}

struct Stream {
    next: u64,
    /// Seqs below this were never delivered here (the stream started at `floor`).
    floor: u64,
    pending: BTreeMap<u64, Pending>,
    waiting_since: Option<Instant>,
    /// The store was asked for the current gap.
    repair_asked: bool,
    /// Seqs passed over (or below `floor`) that may still arrive: delivered late, once.
    skipped: BTreeSet<u64>,
    /// Below-floor seqs already delivered late.
    late: BTreeSet<u64>,
    last_used: Instant,
}

/// (route, channel).
type Key = (String, String);

#[derive(Default)]
struct Shard {
    /// route → channel → stream: looked up by `&str`, so an event allocates nothing unless its
    /// stream is new.
    streams: HashMap<String, HashMap<String, Stream>>,
    /// Streams with buffered events (what `tick` looks at); changed only when a stream starts or
    /// stops waiting.
    waiting: std::collections::HashSet<Key>,
}

/// Per-instance sequencing state, sharded by key.
pub struct Sequencer {
    shards: Vec<Mutex<Shard>>,
    /// Streams with buffered events, over all shards (the ticker sleeps while 0).
    waiting: std::sync::atomic::AtomicUsize,
    woken: tokio::sync::Notify,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            woken: tokio::sync::Notify::new(),
        }
    }
}

impl Sequencer {
    fn shard(&self, route: &str, channel: &str) -> &Mutex<Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        route.hash(&mut h);
        channel.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// Takes one durable event; returns the events now deliverable, in order. `deliver` is
    /// called with them while the stream's shard is locked, so two callers never interleave
    /// one stream's deliveries (it must not block: pushing into connection queues is fine).
    ///
    /// `lookback`: a stream seen here for the first time may have predecessors still in flight
    /// from other instances; its first event then waits (at most [`GAP_WAIT`]) for up to this
    /// many of them. 0 on a single instance, where events always arrive in order.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &self,
        route: &str,
        channel: &str,
        seq: u64,
        msg: Message,
        except: u64,
        lookback: u64,
        deliver: impl FnMut(Message, u64),
    ) {
        let now = Instant::now();
        let Ok(mut guard) = self.shard(route, channel).lock() else { return };
        let Shard { streams, waiting } = &mut *guard;
        let by_channel = match streams.get_mut(route) {
            Some(m) => m,
            None => streams.entry(route.to_string()).or_default(),
        };
        let st = match by_channel.get_mut(channel) {
            Some(st) => st,
            None => {
                let start = seq.saturating_sub(lookback).max(1).min(seq);
                by_channel.entry(channel.to_string()).or_insert_with(|| Stream {
                    next: start,
                    floor: start,
                    pending: BTreeMap::new(),
                    waiting_since: None,
                    repair_asked: false,
                    skipped: BTreeSet::new(),
                    late: BTreeSet::new(),
                    last_used: now,
                })
            }
        };
        st.last_used = now;
        let was_waiting = st.waiting_since.is_some();
        let mut deliver = deliver;
        if seq < st.next {
            let late = if seq < st.floor { st.late.insert(seq) } else { st.skipped.remove(&seq) };
            if late {
                if st.late.len() > MAX_SKIPPED {
                    st.late.pop_first();
                }
                deliver(msg, except);
            }
            return;
        }
        if seq > st.next {
            st.pending.entry(seq).or_insert(Pending { msg, except });
            st.waiting_since.get_or_insert(now);
            if st.pending.len() > MAX_PENDING {
                release(st, &mut deliver);
            }
        } else {
            deliver(msg, except);
            st.next += 1;
            drain(st, &mut deliver);
        }
        let is_waiting = st.waiting_since.is_some();
        if is_waiting != was_waiting {
            let key = (route.to_string(), channel.to_string());
            if is_waiting {
                waiting.insert(key);
                self.waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.woken.notify_one();
            } else {
                waiting.remove(&key);
                self.waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// True while some stream has buffered events.
    pub fn waiting(&self) -> bool {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Resolves when a stream starts waiting.
    pub async fn wait(&self) {
        self.woken.notified().await
    }

    /// Streams that waited [`GAP_WAIT`] for a gap after events already delivered here ask
    /// `repair` (route, channel, first missing seq, last missing seq) once to read the missing
    /// events from the store (they come back through [`Sequencer::offer`]); streams that
    /// waited [`GAP_WAIT`] for predecessors of their first event here, or [`REPAIR_WAIT`] more
    /// for the store, are released. Call every few milliseconds; `deliver` gets (route, message,
    /// connection to skip).
    pub fn tick(&self, mut deliver: impl FnMut(&str, Message, u64), mut repair: impl FnMut(&str, &str, u64, u64)) {
        let now = Instant::now();
        for shard in &self.shards {
            let Ok(mut guard) = shard.lock() else { continue };
            let Shard { streams, waiting } = &mut *guard;
            if waiting.is_empty() {
                continue;
            }
            let before = waiting.len();
            waiting.retain(|key| {
                let Some(st) = streams.get_mut(&key.0).and_then(|m| m.get_mut(&key.1)) else { return false };
                let waited = st.waiting_since.map_or(Duration::ZERO, |t| now.duration_since(t));
                // A gap after delivered events (not the look-back of a new stream).
                let gap_after_delivered = st.next > st.floor;
                if waited >= GAP_WAIT && gap_after_delivered && !st.repair_asked {
                    if let Some((&first, _)) = st.pending.first_key_value() {
                        st.repair_asked = true;
                        repair(&key.0, &key.1, st.next, first - 1);
                    }
                } else if waited >= GAP_WAIT && (!gap_after_delivered || waited >= GAP_WAIT + REPAIR_WAIT) {
                    release(st, &mut |m, e| deliver(&key.0, m, e));
                }
                st.waiting_since.is_some()
            });
            self.waiting.fetch_sub(before - waiting.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Forgets streams without traffic for [`IDLE`] (call every few seconds).
    pub fn evict_idle(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            if let Ok(mut guard) = shard.lock() {
                // A waiting stream is never idle (it is in `waiting` exactly while it waits).
                guard.streams.retain(|_, by_channel| {
                    by_channel.retain(|_, st| st.waiting_since.is_some() || now.duration_since(st.last_used) < IDLE);
                    !by_channel.is_empty()
                });
            }
        }
    }

    /// Streams currently tracked (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.streams.values().map(HashMap::len).sum()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Delivers consecutive buffered events from `next` on.
fn drain(st: &mut Stream, deliver: &mut impl FnMut(Message, u64)) {
    while let Some(p) = st.pending.remove(&st.next) {
        deliver(p.msg, p.except);
        st.next += 1;
    }
    st.waiting_since = if st.pending.is_empty() { None } else { Some(Instant::now()) };
    st.repair_asked = false;
}

/// Gives up on the gap before the first buffered event: the missing seqs become `skipped`
/// (delivered late if they still come), the buffered ones go out in order.
fn release(st: &mut Stream, deliver: &mut impl FnMut(Message, u64)) {
    if let Some((&first, _)) = st.pending.first_key_value() {
        for s in st.next..first {
            st.skipped.insert(s);
        }
        while st.skipped.len() > MAX_SKIPPED {
            st.skipped.pop_first();
        }
        st.next = first;
    }
    drain(st, deliver);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seq: &Sequencer, s: u64, out: &mut Vec<u64>) {
        seq.offer("user:a", "dm:a:b", s, Message::text(s.to_string()), 0, 0, |m, _| {
            out.push(m.to_text().unwrap().parse().unwrap())
        });
    }

    #[test]
    fn reorders_drops_duplicates_and_never_loses() {
        let q = Sequencer::default();
        let mut out = Vec::new();
        for s in [5, 7, 6, 6, 8, 5] {
            run(&q, s, &mut out);
        }
        assert_eq!(out, vec![5, 6, 7, 8]);
        // Older than the stream's start: delivered late, once.
        run(&q, 4, &mut out);
        run(&q, 4, &mut out);
        assert_eq!(out, vec![5, 6, 7, 8, 4]);
    }

    #[test]
    fn a_gap_asks_the_store_then_is_released_and_the_missing_one_still_arrives() {
        let q = Sequencer::default();
        let mut out = Vec::new();
        run(&q, 1, &mut out);
        run(&q, 4, &mut out);
        assert_eq!(out, vec![1]);
        let mut routed = Vec::new();
        let mut asked = Vec::new();
        let tick = |routed: &mut Vec<(String, String)>, asked: &mut Vec<(String, String, u64, u64)>| {
            q.tick(
                |r, m, _| routed.push((r.to_string(), m.to_text().unwrap().to_string())),
                |r, c, a, b| asked.push((r.to_string(), c.to_string(), a, b)),
            )
        };
        tick(&mut routed, &mut asked);
        assert!(routed.is_empty() && asked.is_empty(), "not yet");
        std::thread::sleep(GAP_WAIT + Duration::from_millis(5));
        tick(&mut routed, &mut asked);
        // The store is asked for 2..=3, once; nothing is released meanwhile.
        assert_eq!(asked, vec![("user:a".to_string(), "dm:a:b".to_string(), 2, 3)]);
        tick(&mut routed, &mut asked);
        assert_eq!((routed.len(), asked.len()), (0, 1));
        // The store had 2 but not 3: 2 goes out at once; the new gap (3) asks again later.
        run(&q, 2, &mut out);
        assert_eq!(out, vec![1, 2]);
        std::thread::sleep(GAP_WAIT + Duration::from_millis(5));
        tick(&mut routed, &mut asked);
        assert_eq!(asked.last(), Some(&("user:a".to_string(), "dm:a:b".to_string(), 3, 3)));
        // Given up REPAIR_WAIT later: 4 goes out; 3 is still delivered once if it comes.
        std::thread::sleep(REPAIR_WAIT + Duration::from_millis(5));
        tick(&mut routed, &mut asked);
        assert_eq!(routed, vec![("user:a".to_string(), "4".to_string())]);
        run(&q, 3, &mut out);
        run(&q, 3, &mut out);
        run(&q, 5, &mut out);
        assert_eq!(out, vec![1, 2, 3, 5]);
    }

    #[test]
    fn a_new_stream_in_a_cluster_waits_for_predecessors_in_flight() {
        let q = Sequencer::default();
        let mut out: Vec<u64> = Vec::new();
        for s in [2u64, 1] {
            q.offer("user:a", "dm:a:b", s, Message::text(s.to_string()), 0, 8, |m, _| {
                out.push(m.to_text().unwrap().parse().unwrap())
            });
        }
        assert_eq!(out, vec![1, 2]);
        // A stream whose predecessors were delivered before this instance saw it: released
        // after the wait.
        let q2 = Sequencer::default();
        q2.offer("user:a", "dm:a:c", 40, Message::text("40"), 0, 8, |_, _| panic!("not yet"));
        std::thread::sleep(GAP_WAIT + Duration::from_millis(5));
        let mut routed = 0;
        q2.tick(|_, _, _| routed += 1, |_, _, _, _| panic!("no repair for a new stream's look-back"));
        assert_eq!(routed, 1);
    }

    #[test]
    fn routes_are_independent() {
        let q = Sequencer::default();
        let mut a = Vec::new();
        let mut b = Vec::new();
        q.offer("user:a", "dm:a:b", 1, Message::text("1"), 0, 0, |_, _| a.push(1));
        q.offer("user:b", "dm:a:b", 1, Message::text("1"), 0, 0, |_, _| b.push(1));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(q.len(), 2);
    }
}
