//! SLO thresholds from TOML (`[default]` overlaid by the scenario's table) and their evaluation.

use serde::{Deserialize, Serialize};

/// Every threshold is optional; an absent one is not checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Failed connections / attempted connections.
    pub max_error_rate: Option<f64>,
    /// Lost deliveries / expected deliveries.
    pub max_loss_rate: Option<f64>,
    pub max_duplicates: Option<u64>,
    /// connects/s (connect) or deliveries/s (message scenarios).
    pub min_throughput: Option<f64>,
    /// idle: server memory per connection.
    pub max_memory_per_conn_kib: Option<f64>,
    /// churn: the highest server RSS after any round past the first, as % above round 1's.
    pub max_rss_growth_pct: Option<f64>,
    /// churn: after every round (and the settle wait) the server's open fds equal the baseline
    /// counted before the first round.
    pub fds_return_to_baseline: Option<bool>,
}

impl Thresholds {
    fn overlay(mut self, o: &Thresholds) -> Thresholds {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(
            p50_ms,
            p90_ms,
            p99_ms,
            p999_ms,
            max_ms,
            max_error_rate,
            max_loss_rate,
            max_duplicates,
            min_throughput,
            max_memory_per_conn_kib,
            max_rss_growth_pct,
            fds_return_to_baseline
        );
        self
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloFile {
    #[serde(default)]
    pub default: Thresholds,
    #[serde(default)]
    pub connect: Thresholds,
    #[serde(default)]
    pub idle: Thresholds,
    #[serde(default)]
    pub fanout: Thresholds,
    #[serde(default)]
    pub broadcast: Thresholds,
    #[serde(default)]
    pub cluster: Thresholds,
    #[serde(default)]
    pub churn: Thresholds,
}

impl SloFile {
    pub fn parse(text: &str) -> Result<SloFile, String> {
        toml::from_str(text).map_err(|e| format!("SLO file: {e}"))
    }

    pub fn for_scenario(&self, scenario: &str) -> Thresholds {
        let s = match scenario {
            "connect" => &self.connect,
            "idle" => &self.idle,
            "fanout" => &self.fanout,
            "broadcast" => &self.broadcast,
            "churn" => &self.churn,
            _ => &self.cluster,
        };
        self.default.clone().overlay(s)
    }
}

/// The measured values a verdict is made from.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub error_rate: f64,
    pub loss_rate: f64,
    pub duplicates: u64,
    pub throughput: f64,
    pub memory_per_conn_kib: Option<f64>,
    /// churn: highest RSS after a later round, % above round 1's.
    pub rss_growth_pct: Option<f64>,
    /// churn: the most open fds above the baseline after any round (≤ 0: back to it).
    pub fds_over_baseline: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub limit: f64,
    pub actual: f64,
    pub ok: bool,
}

/// Checks every configured threshold.
pub fn evaluate(t: &Thresholds, m: &Measured) -> Vec<Check> {
    let mut out = Vec::new();
    let mut max = |name, limit: Option<f64>, actual: f64| {
        if let Some(limit) = limit {
            out.push(Check { name, limit, actual, ok: actual <= limit });
        }
    };
    max("p50_ms", t.p50_ms, m.p50_ms);
    max("p90_ms", t.p90_ms, m.p90_ms);
    max("p99_ms", t.p99_ms, m.p99_ms);
    max("p999_ms", t.p999_ms, m.p999_ms);
    max("max_ms", t.max_ms, m.max_ms);
    max("max_error_rate", t.max_error_rate, m.error_rate);
    max("max_loss_rate", t.max_loss_rate, m.loss_rate);
    max("max_duplicates", t.max_duplicates.map(|d| d as f64), m.duplicates as f64);
    if let (Some(limit), Some(actual)) = (t.max_memory_per_conn_kib, m.memory_per_conn_kib) {
        out.push(Check { name: "max_memory_per_conn_kib", limit, actual, ok: actual <= limit });
    }
    if let (Some(limit), Some(actual)) = (t.max_rss_growth_pct, m.rss_growth_pct) {
        out.push(Check { name: "max_rss_growth_pct", limit, actual, ok: actual <= limit });
    }
    if let (Some(true), Some(over)) = (t.fds_return_to_baseline, m.fds_over_baseline) {
        out.push(Check { name: "fds_return_to_baseline", limit: 0.0, actual: over as f64, ok: over <= 0 });
    }
    if let Some(limit) = t.min_throughput {
        out.push(Check { name: "min_throughput", limit, actual: m.throughput, ok: m.throughput >= limit });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_and_evaluate() {
        let f = SloFile::parse(
            "[default]\nmax_loss_rate = 0.0\np99_ms = 100\n[broadcast]\np99_ms = 60\nmin_throughput = 1000\n",
        )
        .unwrap();
        let t = f.for_scenario("broadcast");
        assert_eq!(t.p99_ms, Some(60.0));
        assert_eq!(t.max_loss_rate, Some(0.0));
        let m = Measured { p99_ms: 61.0, throughput: 2000.0, ..Default::default() };
        let checks = evaluate(&t, &m);
        let broken: Vec<_> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(broken, vec!["p99_ms"]);
        let m = Measured { p99_ms: 10.0, throughput: 999.0, loss_rate: 0.01, ..Default::default() };
        let broken: Vec<_> = evaluate(&t, &m).into_iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(broken, vec!["max_loss_rate", "min_throughput"]);
        assert_eq!(f.for_scenario("connect").p99_ms, Some(100.0));
        assert!(SloFile::parse("[default]\nbogus = 1\n").is_err());
    }

    #[test]
    fn churn_thresholds() {
        let f = SloFile::parse(
            "[default]\nmax_error_rate = 0.0\n[churn]\nmax_rss_growth_pct = 10\nfds_return_to_baseline = true\n",
        )
        .unwrap();
        let t = f.for_scenario("churn");
        assert_eq!(t.max_error_rate, Some(0.0));
        assert_eq!(f.for_scenario("connect").max_rss_growth_pct, None);
        let m = Measured { rss_growth_pct: Some(9.9), fds_over_baseline: Some(0), ..Default::default() };
        assert!(evaluate(&t, &m).iter().all(|c| c.ok));
        let m = Measured { rss_growth_pct: Some(10.1), fds_over_baseline: Some(1), ..Default::default() };
        let broken: Vec<_> = evaluate(&t, &m).into_iter().filter(|c| !c.ok).map(|c| c.name).collect();
        assert_eq!(broken, vec!["max_rss_growth_pct", "fds_return_to_baseline"]);
        // `fds_return_to_baseline = false` turns the check off.
        let off = SloFile::parse("[churn]\nfds_return_to_baseline = false\n").unwrap().for_scenario("churn");
        assert!(evaluate(&off, &m).is_empty());
    }
}
