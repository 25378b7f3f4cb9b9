//! `scripts/cluster.sh` and `loadtest failover` together: HAProxy (tuning/haproxy.cfg, mode tcp,
//! send-proxy-v2) in front of three real syncgate processes sharing Redis, a fresh PostgreSQL
//! database and the keys. One instance SIGKILLed under load, then a rolling restart: every client
//! of a lost instance comes back through the balancer and no durable event is lost or repeated.
//!
//! The gateway binary is `$SYNCGATE_BIN`, else the workspace's `target/debug/syncgate` (built by
//! `cargo build --workspace`, as scripts/test.sh does). Needs haproxy, socat, Redis on
//! 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (user postgres).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

fn gateway_bin() -> String {
    let bin =
        std::env::var("SYNCGATE_BIN").unwrap_or_else(|_| root().join("target/debug/syncgate").display().to_string());
    assert!(Path::new(&bin).is_file(), "no gateway binary at {bin}: cargo build --workspace (or set SYNCGATE_BIN)");
    bin
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port base with base+1..=base+3 free (instances), and the same for admin ports, and a
/// balancer port.
fn ports() -> (u16, u16, u16) {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut pick = seed;
    let mut next = || loop {
        pick = pick.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let base = 21000 + ((pick >> 33) % 20000) as u16;
        if (0..=3).all(|i| free(base + i)) {
            return base;
        }
    };
    (next(), next(), next())
}

/// A cluster from scripts/cluster.sh; `down` when dropped.
struct Cluster {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

impl Cluster {
    fn up(extra: &[(&str, &str)]) -> Cluster {
        let dir = std::env::temp_dir().join(format!("cluster-it-{}", syncgate::util::random_hex(6)));
        let (lb, base, admin) = ports();
        let mut cmd = Command::new(root().join("scripts/cluster.sh"));
        cmd.args(["up", "--dir"])
            .arg(&dir)
            .env("SYNCGATE_BIN", gateway_bin())
            .env("CLUSTER_LB_PORT", lb.to_string())
            .env("CLUSTER_PORT_BASE", base.to_string())
            .env("CLUSTER_ADMIN_BASE", admin.to_string())
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("scripts/cluster.sh runs");
        let mut cluster = Cluster { dir, env: BTreeMap::new() };
        assert!(
            out.status.success(),
            "cluster.sh up failed\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(cluster.dir.join("env")).expect("DIR/env");
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                cluster.env.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        cluster
    }

    fn script(&self, args: &str) -> String {
        format!("{} {args} --dir {}", root().join("scripts/cluster.sh").display(), self.dir.display())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/cluster.sh")).args(["down", "--dir"]).arg(&self.dir).output();
        // Logs, the generated haproxy.cfg and the report stay for a failed test.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `loadtest failover …`: (exit code, report).
fn failover(c: &Cluster, args: &str, disrupt: &str) -> (i32, Value) {
    let json = c.dir.join(format!("report-{}.json", syncgate::util::random_hex(4)));
    let mut all: Vec<String> = args.split_whitespace().map(String::from).collect();
    all.extend([
        "--url".into(),
        c.env["CLUSTER_LB_URL"].clone(),
        "--jwt-secret".into(),
        c.env["SYNCGATE_JWT_SECRET"].clone(),
        "--disrupt".into(),
        disrupt.into(),
        "--json".into(),
        json.display().to_string(),
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest")).arg("failover").args(&all).output().unwrap();
    let report = std::fs::read_to_string(&json).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_else(|| {
        panic!(
            "no report\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn n(r: &Value, k: &str) -> u64 {
    r[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {r:#}"))
}

#[test]
fn sigkill_one_of_three_behind_haproxy_loses_and_repeats_nothing() {
    let c = Cluster::up(&[]);
    // 600 clients in 300 durable dm pairs; gw2 dies after 2 s of traffic. Its open connections
    // are read from its admin port's /metrics just before.
    let admin2 = c.env["CLUSTER_ADMIN_BASE"].parse::<u16>().unwrap() + 2;
    let before = c.dir.join("gw2-connections");
    let disrupt = format!(
        "curl -fsS http://127.0.0.1:{admin2}/metrics | awk '$1 == \"syncgate_connections\" {{ print $2 }}' > {} && {}",
        before.display(),
        c.script("kill 2")
    );
    let started = std::time::Instant::now();
    let (code, r) = failover(&c, "--pairs 300 --rate 150 --warmup 2 --after 3 --drain 20 --quiet", &disrupt);
    eprintln!("failover (kill) took {:?}: {r:#}", started.elapsed());
    assert!(r["disrupt_ok"].as_bool().unwrap(), "{r:#}");
    let clients = n(&r, "clients");
    assert_eq!(clients, 600);
    // Only gw2's clients lost their connection (leastconn spread them a third each), every one of
    // them came back through HAProxy, the others never saw anything but events and acks.
    let lost_clients = n(&r, "clients_disconnected");
    assert!(lost_clients > clients / 6 && lost_clients < clients / 2, "{lost_clients} of {clients}: {r:#}");
    assert_eq!(n(&r, "reconnects"), n(&r, "disconnects"), "{r:#}");
    assert_eq!(n(&r, "not_connected_at_end"), 0, "{r:#}");
    let on_gw2: u64 = std::fs::read_to_string(&before).unwrap().trim().parse().unwrap();
    assert_eq!(lost_clients, on_gw2, "every client of gw2 and only those: {r:#}");
    // Presence of the peers (join when a peer subscribes, leave when one is gone) and nothing else.
    let others: BTreeMap<String, u64> = serde_json::from_value(r["other_frames_undisturbed"].clone()).unwrap();
    assert!(others.keys().all(|k| k == "leave" || k == "join"), "{others:?}");
    // Every durable event seen exactly once, in order, by both ends of its channel.
    assert!(n(&r, "published") > 0 && n(&r, "acked") == n(&r, "published"), "{r:#}");
    assert_eq!(n(&r, "lost"), 0, "{r:#}");
    assert_eq!(n(&r, "out_of_order"), 0, "{r:#}");
    // A live dm event that reaches a reconnected client between `welcome` and `subscribed` and is
    // replayed again after it counts here (dup_pre_subscribe_replayed).
    assert_eq!(n(&r, "duplicated"), 0, "{r:#}");
    assert_eq!(n(&r, "unacked_at_end"), 0, "{r:#}");
    assert_eq!(code, 0, "{r:#}");
    // One burst: the crash drops every connection of gw2 at once; they are back within seconds
    // (HAProxy retries a refused connect on another server).
    assert_eq!(r["close_bursts"].as_array().unwrap().len(), 1, "{r:#}");
    assert!(r["reconnect_ms"]["p99"].as_f64().unwrap() < 5_000.0, "{r:#}");
}

#[test]
fn rolling_restart_spreads_the_closes_and_loses_nothing() {
    let c = Cluster::up(&[("SYNCGATE_DRAIN_SPREAD_MS", "2000"), ("SYNCGATE_DRAIN_DELAY_MS", "5000")]);
    let (code, r) = failover(&c, "--pairs 150 --rate 100 --warmup 1 --after 1 --drain 20 --quiet", &c.script("roll"));
    eprintln!("failover (roll): {r:#}");
    assert!(r["disrupt_ok"].as_bool().unwrap(), "{r:#}");
    assert_eq!(n(&r, "lost"), 0, "{r:#}");
    // A live dm event that reaches a reconnected client between `welcome` and `subscribed` and is
    // replayed again after it counts here (dup_pre_subscribe_replayed).
    assert_eq!(n(&r, "duplicated"), 0, "{r:#}");
    assert_eq!(n(&r, "out_of_order"), 0, "{r:#}");
    assert_eq!(n(&r, "not_connected_at_end"), 0, "{r:#}");
    // Three drains, each a burst of 1001 closes spread over the 2 s window (not all at once).
    let bursts = r["close_bursts"].as_array().unwrap();
    assert_eq!(bursts.len(), 3, "{r:#}");
    for b in bursts {
        let closes = b["closes"].as_u64().unwrap();
        assert_eq!(b["codes"]["1001"].as_u64(), Some(closes), "only going-away closes: {b:#}");
        let spread = b["spread_ms"].as_f64().unwrap();
        if closes >= 20 {
            assert!((1000.0..=3000.0).contains(&spread), "spread {spread} ms: {b:#}");
            assert!(b["max_per_100ms"].as_u64().unwrap() * 4 < closes, "a storm: {b:#}");
        }
    }
    assert_eq!(code, 0, "{r:#}");
}
