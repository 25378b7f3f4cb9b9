//! Every scenario, briefly, against a real syncgate on 127.0.0.1:0: the report's counts must be
//! exact (delivered = expected, nothing lost or duplicated), and a broken SLO must exit 1.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

const SECRET: &str = "loadtest-integration-secret-0123456789abcdef";

struct Gateway {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn gateway() -> Gateway {
    gateway_with(&[]).await
}

async fn gateway_with(extra: &[(&str, &str)]) -> Gateway {
    let dir = std::env::temp_dir().join(format!("loadtest-it-{}", syncgate::util::random_hex(6)));
    let vars: HashMap<String, String> = [
        ("SYNCGATE_JWT_SECRET", SECRET),
        ("SYNCGATE_MESSAGES_PER_MIN", "1000000"),
        ("SYNCGATE_DATA_DIR", dir.to_str().unwrap()),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = syncgate::config::Config::from_map(&vars).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        syncgate::server::run(listener, config, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Gateway { url, stop: Some(tx), task }
}

impl Gateway {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

/// Runs the loadtest binary; returns (exit code, JSON report).
async fn loadtest(args: Vec<String>) -> (i32, Value) {
    let json = std::env::temp_dir().join(format!("loadtest-report-{}.json", syncgate::util::random_hex(6)));
    let mut all = args;
    all.extend(["--jwt-secret".into(), SECRET.into(), "--quiet".into(), "--json".into(), json.display().to_string()]);
    let out =
        tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_loadtest")).args(&all).output().unwrap())
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no report\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), report)
}

fn slo_file(text: &str) -> String {
    let path = std::env::temp_dir().join(format!("slo-{}.toml", syncgate::util::random_hex(6)));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn assert_exact(report: &Value) {
    assert_eq!(report["connections_opened"], report["connections_attempted"], "{report:#}");
    for step in report["steps"].as_array().unwrap() {
        assert!(step["messages_sent"].as_u64().unwrap() > 0, "{step:#}");
        assert_eq!(step["deliveries_received"], step["deliveries_expected"], "{step:#}");
        assert_eq!(step["lost"], 0);
        assert_eq!(step["duplicates"], 0);
        assert_eq!(step["latency"]["count"], step["deliveries_received"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_idle() {
    let g = gateway().await;
    let slo = slo_file("[default]\nmax_error_rate = 0.0\n");
    let (code, r) =
        loadtest(args(&format!("connect --url {} --connections 300 --rate 500 --duration 1 --slo {slo}", g.url))).await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["connections_opened"], 300);
    assert_eq!(r["connect_latency"]["count"], 300);
    assert!(r["connects_per_s"].as_f64().unwrap() > 100.0);

    let pid = std::process::id();
    let (code, r) =
        loadtest(args(&format!("idle --url {} --connections 300 --duration 1 --server-pid {pid} --slo {slo}", g.url)))
            .await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["connections_opened"], 300);
    let server = &r["steps"][0]["server"];
    assert_eq!(server["pid"], pid);
    assert!(server["memory_per_conn_bytes"].is_number(), "{server:#}");
    g.stop().await;
}

/// `--auth key`: every device registers a key, then connects with key login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_key_login() {
    let g = gateway_with(&[("SYNCGATE_PUBLIC_NAMESPACES", "lt")]).await;
    let slo = slo_file("[default]\nmax_error_rate = 0.0\n");
    let (code, r) = loadtest(args(&format!(
        "connect --auth key --url {} --connections 200 --rate 400 --duration 1 --slo {slo}",
        g.url
    )))
    .await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["connections_opened"], 200);
    assert_eq!(r["connect_latency"]["count"], 200);
    let (code, r) =
        loadtest(args(&format!("idle --auth key --url {} --connections 100 --duration 1 --slo {slo}", g.url))).await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["connections_opened"], 100);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_broadcast_deliver_everything() {
    let g = gateway().await;
    let slo = slo_file("[default]\nmax_loss_rate = 0.0\nmax_duplicates = 0\n");
    let (code, r) =
        loadtest(args(&format!("fanout --url {} --users 50 --devices 3 --rate 2 --duration 2 --slo {slo}", g.url)))
            .await;
    assert_eq!(code, 0, "{r:#}");
    assert_exact(&r);
    // 150 devices x 2 msg/s x 2 s, each delivered to the user's 2 other devices.
    let step = &r["steps"][0];
    assert_eq!(step["messages_sent"], 600);
    assert_eq!(step["deliveries_expected"], 1200);

    let (code, r) = loadtest(args(&format!(
        "broadcast --url {} --subscribers 200 --publishers 2 --rate 20 --payload 256 --duration 2 --procs 2 --slo {slo}",
        g.url
    )))
    .await;
    assert_eq!(code, 0, "{r:#}");
    assert_exact(&r);
    assert_eq!(r["procs"], 2);
    assert_eq!(r["steps"][0]["messages_sent"], 40);
    assert_eq!(r["steps"][0]["deliveries_expected"], 8000);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_and_cluster_and_broken_slo() {
    let g1 = gateway().await;
    let slo = slo_file("[default]\nmax_loss_rate = 0.0\n");
    let (code, r) =
        loadtest(args(&format!("broadcast --url {} --subscribers 100 --sweep 5,10 --duration 1 --slo {slo}", g1.url)))
            .await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["steps"].as_array().unwrap().len(), 2);
    assert_eq!(r["capacity_rate"], 10.0);
    assert_exact(&r);

    // cluster against one URL (the in-process bus): publishers and subscribers on it.
    let (code, r) = loadtest(args(&format!(
        "cluster --url {} --subscribers 100 --publishers 2 --rate 10 --duration 1 --slo {slo}",
        g1.url
    )))
    .await;
    assert_eq!(code, 0, "{r:#}");
    assert_exact(&r);

    // An impossible latency threshold: the sweep stops at the first step and the exit code is 1.
    let strict = slo_file("[broadcast]\np50_ms = 0.000001\n");
    let (code, r) = loadtest(args(&format!(
        "broadcast --url {} --subscribers 50 --sweep 5,10 --duration 1 --slo {strict}",
        g1.url
    )))
    .await;
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["steps"].as_array().unwrap().len(), 1);
    assert_eq!(r["slo_ok"], false);
    assert_eq!(r["steps"][0]["slo"][0]["name"], "p50_ms");
    g1.stop().await;
}

/// Runs `loadtest accounts` (goose) against `g`; returns (exit code, JSON summary, stdout).
async fn accounts(g: &Gateway, extra: &str) -> (i32, Value, String) {
    let json = std::env::temp_dir().join(format!("accounts-report-{}.json", syncgate::util::random_hex(6)));
    let host = g.url.replace("ws://", "http://").replace("/ws", "");
    let mut all = args(&format!("accounts --host {host} --users 3 --hatch-rate 3 --run-time 2s -q {extra}"));
    all.extend(["--json".into(), json.display().to_string()]);
    let out =
        tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_loadtest")).args(&all).output().unwrap())
            .await
            .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = std::fs::read_to_string(&json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no report\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, stdout)
}

fn endpoint<'a>(r: &'a Value, path: &str) -> &'a Value {
    r["endpoints"].as_array().unwrap().iter().find(|e| e["path"] == path).unwrap_or_else(|| panic!("{path}: {r:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_storm_with_websocket_probe() {
    let g =
        gateway_with(&[("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "1000000"), ("SYNCGATE_REGISTER_PER_HOUR", "1000000")]).await;
    let (code, r, stdout) =
        accounts(&g, "--probe-users 2 --probe-rate 5 --probe-baseline 0.5 --probe-max-p99-ms 60000").await;
    assert_eq!(code, 0, "{r:#}\n{stdout}");
    for path in ["/login", "/token/refresh"] {
        let e = endpoint(&r, path);
        assert!(e["ok"].as_u64().unwrap() > 0, "{e:#}");
        assert_eq!(e["failed"], 0, "{e:#}");
        assert!(e["latency"]["p99_us"].as_u64().unwrap() > 0, "{e:#}");
    }
    // goose's own report is printed too.
    assert!(stdout.contains("POST login"), "{stdout}");
    assert_eq!(r["probe_connections"], 4);
    assert!(r["probe_baseline"]["sent"].as_u64().unwrap() > 0, "{r:#}");
    assert!(r["probe_storm"]["sent"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["probe_lost"], 0, "{r:#}");
    assert_eq!(r["slo_ok"], true);

    // An impossible probe threshold exits 1.
    let (code, r, _) = accounts(&g, "--probe-users 1 --probe-baseline 0 --probe-max-p99-ms 0.000001").await;
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["slo_ok"], false);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_storm_counts_rate_limited_logins_as_failures() {
    // Two logins per account per minute: the loop gets 429s after its second login per account,
    // however slowly a loaded debug build hashes passwords (the default of 10 took over 2 s).
    let g = gateway_with(&[("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "2")]).await;
    let (code, r, _) = accounts(&g, "--probe-users 0").await;
    assert_eq!(code, 0, "{r:#}");
    let login = endpoint(&r, "/login");
    assert!(login["failed"].as_u64().unwrap() > 0, "{login:#}");
    assert!(login["statuses"]["429"].as_u64().unwrap() > 0, "{login:#}");
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_durable_acks_every_publish() {
    let g = gateway_with(&[("SYNCGATE_DURABLE_NAMESPACES", "dm,user")]).await;
    let slo = slo_file("[default]\nmax_loss_rate = 0.0\nmax_duplicates = 0\nmax_error_rate = 0.0\n");
    let (code, r) = loadtest(args(&format!(
        "fanout --url {} --users 20 --devices 2 --rate 5 --duration 2 --durable --slo {slo}",
        g.url
    )))
    .await;
    assert_eq!(code, 0, "{r:#}");
    assert_exact(&r);
    let step = &r["steps"][0];
    // 40 devices x 5 msg/s x 2 s, each acked after its commit and delivered to the sibling.
    assert_eq!(step["messages_sent"], 400);
    assert_eq!(step["acks"], 400, "{step:#}");
    assert_eq!(step["ack_latency"]["count"], 400, "{step:#}");
    assert_eq!(step["errors"], 0);

    // Against channels that are not durable nothing is acked, and the report shows it.
    let plain = gateway().await;
    let (_, r) =
        loadtest(args(&format!("fanout --url {} --users 2 --devices 2 --rate 2 --duration 1 --durable", plain.url)))
            .await;
    assert!(r["steps"][0]["messages_sent"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["steps"][0]["acks"], 0, "{r:#}");
    plain.stop().await;
    g.stop().await;
}

/// Set in the environment of the helper process that `gateway_process` turns into.
const GATEWAY_CHILD: &str = "LOADTEST_IT_GATEWAY_PROCESS";

/// Not a test of its own: `churn_returns_fds_and_memory` runs this test binary again with only
/// this test selected and `GATEWAY_CHILD` set, so the gateway gets a process to itself (the
/// churn scenario counts the server's open fds, and this process's other tests open and close
/// sockets all the time). Prints `LISTEN <url>`, serves until its stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for churn_returns_fds_and_memory"]
async fn gateway_process() {
    if std::env::var_os(GATEWAY_CHILD).is_none() {
        return;
    }
    let g = gateway().await;
    println!("LISTEN {}", g.url);
    let _ = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await;
    g.stop().await;
}

/// A gateway in a child process; stopped (its stdin closed, then killed) when dropped.
struct ChildGateway(std::process::Child);

impl Drop for ChildGateway {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway in a child process: (child, ws URL).
fn gateway_in_child() -> (ChildGateway, String) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["gateway_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(GATEWAY_CHILD, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                // libtest may have written `test gateway_process ... ` on the same line.
                if let Some((_, url)) = l.split_once("LISTEN ") {
                    break url.trim().to_string();
                }
            }
            other => panic!("gateway process ended before listening: {other:?}"),
        }
    };
    // Keep draining its stdout (libtest's result lines) so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (ChildGateway(child), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_returns_fds_and_memory() {
    let (child, url) = tokio::task::spawn_blocking(gateway_in_child).await.unwrap();
    let pid = child.0.id();
    let slo =
        slo_file("[default]\nmax_error_rate = 0.0\n[churn]\nmax_rss_growth_pct = 10\nfds_return_to_baseline = true\n");
    // 3 rounds of 1.5 s at 100 connects/s: 150 per round, 50 of each leave kind. The settle
    // wait is generous for a loaded 2-core machine; it ends as soon as the fds are back.
    let (code, r) = loadtest(args(&format!(
        "churn --url {url} --server-pid {pid} --rate 100 --duration 4.5 --round 1.5 --settle 20 --timeout 20 --slo {slo}"
    )))
    .await;
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["holds"], true, "{r:#}");
    assert_eq!(r["slo_ok"], true, "{r:#}");
    assert_eq!(r["server_pid"], pid);
    assert_eq!(r["attempted"], 450, "{r:#}");
    assert_eq!(r["ok"], 450, "{r:#}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r:#}");
    for kind in ["clean_close", "abrupt_reset", "handshake_drop"] {
        assert_eq!(r["kinds"][kind]["attempted"], 150, "{kind}: {r:#}");
        assert_eq!(r["kinds"][kind]["ok"], 150, "{kind}: {r:#}");
    }
    // Every completed WebSocket connect (clean and reset: 2 of 3) has a latency.
    assert_eq!(r["connect_latency"]["count"], 300, "{r:#}");
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    // The listening socket and the runtime's epoll and event fds at least.
    let baseline = r["baseline_fds"].as_u64().unwrap();
    assert!(baseline >= 3, "{r:#}");
    for round in rounds {
        assert_eq!(round["attempted"], 150, "{round:#}");
        assert_eq!(round["fds"], baseline, "{round:#}");
        assert!(round["total_fds"].as_u64().unwrap() >= baseline, "{round:#}");
        assert!(round["rss_kib"].as_u64().unwrap() > 0, "{round:#}");
    }
    assert_eq!(r["max_fds_over_baseline"], 0);
    assert!(r["max_rss_growth_pct"].as_f64().unwrap() <= 10.0, "{r:#}");
    let names: Vec<&str> = r["slo"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"max_rss_growth_pct") && names.contains(&"fds_return_to_baseline"), "{names:?}");

    // An impossible connect-latency threshold breaks the SLO (exit 1), not the memory and fd
    // verdict.
    let strict = slo_file("[churn]\np50_ms = 0.000001\n");
    let (code, r) = loadtest(args(&format!(
        "churn --url {url} --server-pid {pid} --rate 50 --duration 1 --round 0.5 --settle 20 --slo {strict}"
    )))
    .await;
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["slo_ok"], false, "{r:#}");
    assert_eq!(r["holds"], true, "{r:#}");
    assert_eq!(r["attempted"], 50, "{r:#}");
    tokio::task::spawn_blocking(move || drop(child)).await.unwrap();
}
