//! Command line: `loadtest <scenario> [--flag value …]`, parsed into one typed `Args`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Connect,
    Idle,
    Fanout,
    Broadcast,
    Cluster,
    Churn,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Broadcast => "broadcast",
            Scenario::Cluster => "cluster",
            Scenario::Churn => "churn",
        }
    }
}

/// Traffic shape of the `cluster` scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Broadcast,
    Fanout,
}

pub const USAGE: &str = "\
usage: loadtest <connect|idle|fanout|broadcast|cluster|churn> [flags]
       loadtest accounts --host URL --run-time T [goose flags]   (see loadtest accounts --help)
       loadtest failover --disrupt CMD [flags]   (see loadtest failover --help)

target and auth:
  --url URL              gateway URL, repeatable (default ws://127.0.0.1:8080/ws)
  --jwt-secret S         HS256 secret for minted tokens (default: $SYNCGATE_JWT_SECRET)
  --auth token|key       connect/idle: how connections authenticate [token]; key: each device
                         registers an Ed25519 key first (not timed), then connects with key
                         login (/ws?auth=key: challenge, signed answer). idle needs `lt` public
                         (SYNCGATE_PUBLIC_NAMESPACES=lt, which --spawn sets)
  --spawn                start the gateway binary (--gateway-bin, default target/release/syncgate) and sample it
  --gateway-bin PATH     binary for --spawn
  --env K=V              extra env for --spawn, repeatable
  --metrics HOST:PORT    where the bus counters are scraped (/metrics), repeatable (default: the
                         --url hosts); behind a balancer: each instance's SYNCGATE_ADMIN_LISTEN
  --server-pid PID       sample an already running gateway's memory and CPU (churn: also its open fds)

sizes, rates, durations (defaults in brackets):
  --connections N        connect/idle: connections [1000]
  --rate R               connect: connects/s [2000]; fanout: msg/s per device [1];
                         broadcast/cluster: total msg/s over all publishers [10]; churn: connects/s [500]
  --duration T           hold (connect, idle) or send (fanout, broadcast) time: 10, 10s, 500ms, 2m [10s];
                         churn: total churn time [60s]
  --round T              churn: length of one round; server RSS and fds are sampled after each [10s]
  --settle T             churn: after a round, wait at most this long for the server's open fds to
                         return to the baseline before sampling [5s]
  --users U --devices D  fanout: U users x D devices [100 x 3]
  --subscribers N        broadcast/cluster: subscribers [1000]
  --publishers P         broadcast/cluster: publishers [1]
  --payload B            broadcast/cluster: payload bytes [64]
  --sweep r1,r2,...      broadcast/cluster: step the rate, stop at the first step that breaks the SLO
  --pattern broadcast|fanout   cluster traffic shape [broadcast]
  --open-rate R          connections opened per second before traffic [5000]
  --checkpoint N         idle, with --spawn/--server-pid: pause after N connections, let the server
                         settle and sample its RSS, then open the rest; the two samples give the
                         fixed and the marginal memory cost [half of --connections; 0: no pause]
  --drain SECS           wait for in-flight messages after sending stops [2]
  --timeout SECS         connect timeout [10]

scale and output:
  --procs K              worker processes; connections are split, histograms merged [1]
  --slo FILE             SLO thresholds [loadtest/slo.toml if present]
  --json FILE            write the full report as JSON
  --quiet                no progress line
  --durable              publishes carry a msg_id and wait for the durable ack: also reports ack
                         (commit) latency; the gateway needs the channels durable
                         (SYNCGATE_DURABLE_NAMESPACES=dm,user, which --spawn sets)
";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Args {
    pub scenario: Scenario,
    pub urls: Vec<String>,
    pub jwt_secret: String,
    pub spawn: bool,
    pub gateway_bin: String,
    pub env: Vec<(String, String)>,
    pub server_pid: Option<u32>,
    /// `--metrics`: the gateways' /metrics addresses (host:port) for the bus counters.
    #[serde(default)]
    pub metrics: Vec<String>,
    pub connections: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub users: usize,
    pub devices: usize,
    pub subscribers: usize,
    pub publishers: usize,
    pub payload: usize,
    pub sweep: Vec<f64>,
    pub pattern: Pattern,
    pub open_rate: f64,
    pub drain_s: f64,
    pub timeout_s: f64,
    pub procs: usize,
    pub slo: Option<PathBuf>,
    pub json: Option<PathBuf>,
    pub quiet: bool,
    /// Publish to durable channels with a `msg_id` and measure the ack (commit) latency.
    #[serde(default)]
    pub durable: bool,
    /// `--auth key`: key login instead of a token.
    #[serde(default)]
    pub key_login: bool,
    /// `--auth key`: this run's device ids (`k<tag>`): a device keyed by an earlier run can no
    /// longer connect with a token, so every run registers new devices.
    #[serde(default)]
    pub key_run_tag: String,
    /// idle: connections open at the memory checkpoint (`None`: half; `Some(0)`: none).
    #[serde(default)]
    pub checkpoint: Option<usize>,
    /// churn: round length and the longest settle wait after a round, in seconds.
    #[serde(default = "default_round")]
    pub round_s: f64,
    #[serde(default = "default_settle")]
    pub settle_s: f64,
}

fn default_round() -> f64 {
    10.0
}

fn default_settle() -> f64 {
    5.0
}

impl Args {
    /// idle with a sampled server: how many connections are open when its memory is sampled
    /// mid-way (`--checkpoint`, half by default); `None`: no pause.
    pub fn checkpoint_at(&self) -> Option<usize> {
        if self.scenario != Scenario::Idle || self.server_pid.is_none() {
            return None;
        }
        let k = self.checkpoint.unwrap_or(self.connections / 2);
        (k > 0 && k < self.connections).then_some(k)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain_s)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }
    pub fn settle(&self) -> Duration {
        Duration::from_secs_f64(self.settle_s)
    }
    /// churn: the rounds' lengths in seconds (`--duration` cut into `--round`s; the last may be
    /// shorter).
    pub fn rounds(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut left = self.duration_s;
        while left > 1e-9 {
            let r = left.min(self.round_s);
            out.push(r);
            left -= r;
        }
        out
    }
}

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

/// Seconds from `10`, `10s`, `500ms` or `2m`.
fn secs(flag: &str, v: &str) -> Result<f64, String> {
    let (digits, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    num::<f64>(flag, digits).map(|n| n * scale)
}

fn positive(flag: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{flag} must be positive"))
    }
}

/// Parses `args` (without the program name).
pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args::defaults(scenario(args.first().map(String::as_str))?);
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        a.apply(flag, &mut it)?;
    }
    a.check()?;
    if a.spawn && a.jwt_secret.is_empty() {
        a.jwt_secret = "loadtest-secret-loadtest-secret-0123456789".into();
    }
    Ok(a)
}

/// The first argument: which scenario to run.
fn scenario(first: Option<&str>) -> Result<Scenario, String> {
    Ok(match first {
        Some("connect") => Scenario::Connect,
        Some("idle") => Scenario::Idle,
        Some("fanout") => Scenario::Fanout,
        Some("broadcast") => Scenario::Broadcast,
        Some("cluster") => Scenario::Cluster,
        Some("churn") => Scenario::Churn,
        Some(other) => return Err(format!("unknown scenario {other:?}")),
        None => return Err("missing scenario".into()),
    })
}

impl Args {
    /// Every flag at its default (the bracketed values in [`USAGE`]) for `scenario`.
    fn defaults(scenario: Scenario) -> Args {
        let default_rate = match scenario {
            Scenario::Connect => 2000.0,
            Scenario::Fanout => 1.0,
            Scenario::Churn => 500.0,
            _ => 10.0,
        };
        let default_duration = if scenario == Scenario::Churn { 60.0 } else { 10.0 };
        Args {
            scenario,
            urls: Vec::new(),
            jwt_secret: std::env::var("SYNCGATE_JWT_SECRET").unwrap_or_default(),
            spawn: false,
            gateway_bin: "target/release/syncgate".into(),
            env: Vec::new(),
            server_pid: None,
            metrics: Vec::new(),
            connections: 1000,
            rate: default_rate,
            duration_s: default_duration,
            users: 100,
            devices: 3,
            subscribers: 1000,
            publishers: 1,
            payload: 64,
            sweep: Vec::new(),
            pattern: Pattern::Broadcast,
            open_rate: 5000.0,
            drain_s: 2.0,
            timeout_s: 10.0,
            procs: 1,
            slo: None,
            json: None,
            quiet: false,
            durable: false,
            key_login: false,
            key_run_tag: String::new(),
            checkpoint: None,
            round_s: default_round(),
            settle_s: default_settle(),
        }
    }

    /// Applies one `flag`, taking its value from `rest` when it has one.
    fn apply(&mut self, flag: &str, rest: &mut std::slice::Iter<'_, String>) -> Result<(), String> {
        let a = self;
        let mut val = || rest.next().map(String::as_str).ok_or_else(|| format!("{flag} needs a value"));
        match flag {
            "--url" => a.urls.push(val()?.to_string()),
            "--jwt-secret" => a.jwt_secret = val()?.to_string(),
            "--spawn" => a.spawn = true,
            "--gateway-bin" => a.gateway_bin = val()?.to_string(),
            "--env" => {
                let v = val()?;
                let (k, v) = v.split_once('=').ok_or("--env takes K=V")?;
                a.env.push((k.to_string(), v.to_string()));
            }
            "--server-pid" => a.server_pid = Some(num(flag, val()?)?),
            "--metrics" => a.metrics.push(val()?.to_string()),
            "--connections" => a.connections = num(flag, val()?)?,
            "--rate" => a.rate = positive(flag, num(flag, val()?)?)?,
            "--duration" => a.duration_s = positive(flag, secs(flag, val()?)?)?,
            "--users" => a.users = num(flag, val()?)?,
            "--devices" => a.devices = num(flag, val()?)?,
            "--subscribers" => a.subscribers = num(flag, val()?)?,
            "--publishers" => a.publishers = num(flag, val()?)?,
            "--payload" => a.payload = num(flag, val()?)?,
            "--sweep" => {
                a.sweep = val()?
                    .split(',')
                    .map(|r| num::<f64>(flag, r.trim()).and_then(|r| positive(flag, r)))
                    .collect::<Result<_, _>>()?
            }
            "--pattern" => {
                a.pattern = match val()? {
                    "broadcast" => Pattern::Broadcast,
                    "fanout" => Pattern::Fanout,
                    other => return Err(format!("--pattern: unknown {other:?}")),
                }
            }
            "--open-rate" => a.open_rate = positive(flag, num(flag, val()?)?)?,
            "--drain" => a.drain_s = secs(flag, val()?)?,
            "--timeout" => a.timeout_s = positive(flag, secs(flag, val()?)?)?,
            "--procs" => a.procs = num(flag, val()?)?,
            "--slo" => a.slo = Some(PathBuf::from(val()?)),
            "--json" => a.json = Some(PathBuf::from(val()?)),
            "--quiet" => a.quiet = true,
            "--checkpoint" => a.checkpoint = Some(num(flag, val()?)?),
            "--durable" => a.durable = true,
            "--auth" => {
                a.key_login = match val()? {
                    "token" => false,
                    "key" => true,
                    other => return Err(format!("--auth {other:?}: token or key")),
                }
            }
            "--round" => a.round_s = positive(flag, secs(flag, val()?)?)?,
            "--settle" => a.settle_s = secs(flag, val()?)?,
            other => return Err(format!("unknown flag {other:?}")),
        }
        Ok(())
    }

    /// The rules between flags, checked once every flag is read (adds the default URL).
    fn check(&mut self) -> Result<(), String> {
        let a = self;
        if a.urls.is_empty() {
            a.urls.push("ws://127.0.0.1:8080/ws".into());
        }
        for u in &a.urls {
            if !u.starts_with("ws://") {
                return Err(format!("--url {u:?}: only ws:// URLs are supported"));
            }
        }
        if a.procs == 0 || a.procs > 64 {
            return Err("--procs must be 1..=64".into());
        }
        if a.publishers == 0 {
            return Err("--publishers must be at least 1".into());
        }
        if a.devices == 0 || a.users == 0 {
            return Err("--users and --devices must be at least 1".into());
        }
        if a.jwt_secret.is_empty() && !a.spawn {
            return Err("--jwt-secret (or SYNCGATE_JWT_SECRET) is required to mint tokens".into());
        }
        if a.key_login && !matches!(a.scenario, Scenario::Connect | Scenario::Idle) {
            return Err("--auth key is for the connect and idle scenarios".into());
        }
        if let Some(k) = a.checkpoint {
            if a.scenario != Scenario::Idle {
                return Err("--checkpoint is for the idle scenario".into());
            }
            if k >= a.connections {
                return Err(format!("--checkpoint {k} must be below --connections {}", a.connections));
            }
        }
        if a.key_login || a.durable {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            a.key_run_tag = format!("{:x}{:x}", now.as_micros(), std::process::id());
        }
        if a.scenario == Scenario::Churn {
            if a.rounds().len() < 2 {
                return Err(
                    "churn needs at least two rounds (--duration >= 2 x --round): RSS is compared with round 1's"
                        .into(),
                );
            }
            if !a.spawn && a.server_pid.is_none() {
                return Err("churn samples the server's RSS and open fds: give --spawn or --server-pid".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, String> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_flags() {
        let a =
            p("broadcast --jwt-secret s --url ws://127.0.0.1:1/ws --url ws://127.0.0.2:1/ws --sweep 5,10,20 --procs 2")
                .unwrap();
        assert_eq!(a.scenario, Scenario::Broadcast);
        assert_eq!(a.urls.len(), 2);
        assert_eq!(a.sweep, vec![5.0, 10.0, 20.0]);
        assert_eq!(a.procs, 2);
        assert!(p("nope").is_err());
        assert!(p("connect --jwt-secret s --rate -1").is_err());
        assert!(p("connect --jwt-secret s --bogus 1").is_err());
        assert!(p("connect --jwt-secret s --url http://x").is_err());
        assert_eq!(p("idle --jwt-secret s --duration 500ms").unwrap().duration_s, 0.5);
        assert_eq!(p("idle --jwt-secret s --duration 2m").unwrap().duration_s, 120.0);
        assert_eq!(p("idle --jwt-secret s --duration 3s").unwrap().duration_s, 3.0);
        // The idle memory checkpoint: half by default when the server is sampled, none otherwise.
        let mut a = p("idle --jwt-secret s --connections 1000").unwrap();
        assert_eq!(a.checkpoint_at(), None);
        a.server_pid = Some(1);
        assert_eq!(a.checkpoint_at(), Some(500));
        a.checkpoint = Some(0);
        assert_eq!(a.checkpoint_at(), None);
        assert_eq!(p("idle --jwt-secret s --connections 1000 --checkpoint 200").unwrap().checkpoint, Some(200));
        assert!(p("idle --jwt-secret s --connections 1000 --checkpoint 1000").unwrap_err().contains("--checkpoint"));
        assert!(p("connect --jwt-secret s --checkpoint 10").unwrap_err().contains("idle"));
    }

    #[test]
    fn churn_rounds() {
        let a = p("churn --jwt-secret s --server-pid 1").unwrap();
        assert_eq!((a.rate, a.duration_s, a.round_s, a.settle_s), (500.0, 60.0, 10.0, 5.0));
        assert_eq!(a.rounds().len(), 6);
        let a = p("churn --jwt-secret s --server-pid 1 --duration 25 --round 10s").unwrap();
        assert_eq!(a.rounds(), vec![10.0, 10.0, 5.0]);
        assert_eq!(p("churn --spawn --duration 1500ms --round 500ms").unwrap().rounds().len(), 3);
        // One round has nothing to compare with; no server to sample is an error too.
        assert!(p("churn --jwt-secret s --server-pid 1 --duration 10 --round 10").is_err());
        assert!(p("churn --jwt-secret s --duration 20").is_err());
    }
}
