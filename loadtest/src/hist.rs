//! HDR latency histograms in microseconds: sharded for concurrent recording, serialisable as
//! (value, count) pairs so worker processes can be merged without losing precision.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour in µs (values above are clamped).
const MAX_US: u64 = 3_600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// A histogram as recorded (value, count) pairs: lossless to merge.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Recorded(pub Vec<(u64, u64)>);

impl Recorded {
    pub fn from_hist(h: &Histogram<u64>) -> Recorded {
        Recorded(h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
    }

    pub fn merge_into(&self, h: &mut Histogram<u64>) {
        for &(v, c) in &self.0 {
            let _ = h.record_n(v.clamp(1, MAX_US), c);
        }
    }
}

/// Percentile summary in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    Summary {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

/// Shards so that many connection tasks can record without contending on one lock; each shard
/// keeps a cumulative and an interval histogram (the progress line's "current p99").
pub struct Sharded {
    shards: Vec<Mutex<(Histogram<u64>, Histogram<u64>)>>,
}

impl Sharded {
    pub fn new(n: usize) -> Sharded {
        Sharded { shards: (0..n.max(1)).map(|_| Mutex::new((new_hist(), new_hist()))).collect() }
    }

    /// Records a batch of latencies into shard `key % n`.
    pub fn record(&self, key: usize, values: &[u64]) {
        let mut s = self.shards[key % self.shards.len()].lock().unwrap_or_else(|e| e.into_inner());
        for &v in values {
            let v = v.clamp(1, MAX_US);
            let _ = s.0.record(v);
            let _ = s.1.record(v);
        }
    }

    /// Merges every shard's cumulative histogram.
    pub fn total(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for s in &self.shards {
            let _ = h.add(&s.lock().unwrap_or_else(|e| e.into_inner()).0);
        }
        h
    }

    /// Merges and resets the interval histograms.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for s in &self.shards {
            let mut g = s.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.add(&g.1);
            g.1.reset();
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_lossless() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..=1000u64 {
            a.record(v).unwrap();
            b.record(v * 1000).unwrap();
        }
        let mut direct = new_hist();
        direct.add(&a).unwrap();
        direct.add(&b).unwrap();
        let mut merged = new_hist();
        Recorded::from_hist(&a).merge_into(&mut merged);
        // Through JSON, as worker processes send it.
        let json = serde_json::to_string(&Recorded::from_hist(&b)).unwrap();
        serde_json::from_str::<Recorded>(&json).unwrap().merge_into(&mut merged);
        assert_eq!(summarize(&merged), summarize(&direct));
        assert_eq!(merged.len(), 2000);
        let s = summarize(&merged);
        assert!((499..=501).contains(&s.p50_us) || (999..=1001).contains(&s.p50_us), "{s:?}");
        assert!(s.p99_us >= 979_000 && s.p99_us <= 981_000, "{s:?}");
    }

    #[test]
    fn sharded_interval_resets() {
        let s = Sharded::new(4);
        s.record(0, &[10, 20]);
        s.record(5, &[30]);
        assert_eq!(s.take_interval().len(), 3);
        assert_eq!(s.take_interval().len(), 0);
        assert_eq!(s.total().len(), 3);
    }
}
