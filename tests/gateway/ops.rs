//! Operations: Prometheus metrics that move with traffic, /api/status, drain order, load
//! shedding, check-config, and no secrets in the logs.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_syncgate");
const API_KEY: &str = "ops-test-api-key-0123456789";

/// A strict parser for the Prometheus text format (0.0.4): every sample belongs to a family
/// declared with `# TYPE`, names and labels are well formed, values parse as floats.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().expect("metric name"));
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("type");
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "{line}");
                    types.insert(name.to_string(), t.to_string());
                }
                "HELP" => {}
                _ => panic!("bad comment line {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                    assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram")))
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample without # TYPE: {line}");
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn get(addr: std::net::SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    (out[9..12].parse().unwrap(), out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

async fn metrics(s: &Server) -> HashMap<String, f64> {
    let (status, body) = get(s.addr, "/metrics", None).await;
    assert_eq!(status, 200);
    parse_prometheus(&body)
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let s = Server::start(&[("SYNCGATE_PUBLIC_NAMESPACES", "room"), ("SYNCGATE_MESSAGES_PER_MIN", "3")]).await;
    let before = metrics(&s).await;
    for k in ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "syncgate_connections"]
    {
        assert!(before.contains_key(k), "{k} missing");
    }
    let m = |map: &HashMap<String, f64>, k: &str| map.get(k).copied().unwrap_or(0.0);

    let mut a = s.client("a", "d").await;
    let mut b = s.client("b", "d").await;
    b.subscribe("room:m").await;
    a.request(json!({"type":"publish","channel":"room:m","event":"e","data":"x","id":1})).await;
    assert_eq!(b.recv().await["type"], "event");
    // Rate limit (3/min): two more messages → one dropped.
    a.request(json!({"type":"ping"})).await;
    a.request(json!({"type":"ping"})).await;
    a.send_text("{bad").await;
    let _ = a.recv().await;
    // Refused connects.
    let expired = sign(&json!({"sub":"x","exp": now() - 5}));
    assert!(Client::connect(&s.url(&format!("token={expired}"))).await.is_err());
    assert!(Client::connect(&s.url("token=garbage")).await.is_err());
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let after = metrics(&s).await;
    let grew = |k: &str| {
        assert!(m(&after, k) > m(&before, k), "{k}: {} -> {}", m(&before, k), m(&after, k));
    };
    grew("syncgate_connects_total{result=\"ok\"}");
    grew("syncgate_connects_total{result=\"unauthorized\"}");
    grew("syncgate_auth_failures_total{reason=\"expired\"}");
    grew("syncgate_auth_failures_total{reason=\"invalid\"}");
    grew("syncgate_frames_in_total{type=\"publish\"}");
    grew("syncgate_frames_in_total{type=\"subscribe\"}");
    grew("syncgate_frames_in_total{type=\"invalid\"}");
    grew("syncgate_frames_out_total{type=\"text\"}");
    grew("syncgate_bytes_in_total");
    grew("syncgate_bytes_out_total");
    grew("syncgate_deliveries_total");
    grew("syncgate_fanout_seconds_count");
    grew("syncgate_rate_limited_messages_total");
    grew("syncgate_disconnects_total{code=\"1006\"}");
    assert_eq!(m(&after, "syncgate_connections"), 1.0);
    assert_eq!(m(&after, "syncgate_ready"), 1.0);
    s.stop().await;
}

#[tokio::test]
async fn status_needs_the_api_key() {
    let s = Server::start(&[("SYNCGATE_API_KEY", API_KEY)]).await;
    let _a1 = s.client("heavy", "d1").await;
    let _a2 = s.client("heavy", "d2").await;
    let _b = s.client("light", "d1").await;
    assert_eq!(get(s.addr, "/api/status", None).await.0, 401);
    assert_eq!(get(s.addr, "/api/status", Some("wrong-key-wrong-key")).await.0, 401);
    let (status, body) = get(s.addr, "/api/status", Some(API_KEY)).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["totals"]["connections"], 3);
    assert_eq!(v["cluster"]["top_users"][0], json!({"user_id":"heavy","connections":2}));
    assert_eq!(v["cluster"]["instances"][0]["connections"], 3);
    assert!(v["uptime_secs"].is_u64() && v["version"].is_string());
    s.stop().await;
    // No key configured: still never public.
    let s = Server::start(&[]).await;
    assert_eq!(get(s.addr, "/api/status", None).await.0, 401);
    s.stop().await;
}

#[tokio::test]
async fn load_shedding_at_max_connections() {
    let s = Server::start(&[("SYNCGATE_MAX_CONNECTIONS", "3")]).await;
    let mut keep = vec![s.client("a", "1").await, s.client("b", "1").await, s.client("c", "1").await];
    let r = Client::connect(&s.url(&format!("token={}", token("d")))).await.err().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "overloaded");
    // Existing connections are untouched.
    for c in &mut keep {
        assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    }
    keep.pop();
    let back = eventually(Duration::from_secs(2), || async {
        Client::connect(&s.url(&format!("token={}", token("d")))).await.ok()
    })
    .await;
    assert!(back.is_some(), "a place frees when a connection ends");
    s.stop().await;
}

fn spawn_gateway(env: &[(&str, &str)]) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    let mut all = vec![("SYNCGATE_JWT_SECRET", SECRET)];
    all.extend_from_slice(env);
    spawn_binary(&all)
}

#[tokio::test]
async fn drain_turns_ready_503_first_then_spreads_1001() {
    let (child, addr, _logs) =
        spawn_gateway(&[("SYNCGATE_DRAIN_DELAY_MS", "600"), ("SYNCGATE_DRAIN_SPREAD_MS", "1000")]);
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut c =
            Client::connect(&format!("ws://{addr}/ws?token={}&device_id=d{i}", token(&format!("u{i}")))).await.unwrap();
        assert_eq!(c.recv().await["type"], "welcome");
        clients.push(c);
    }
    assert_eq!(get(sock, "/ready", None).await.0, 200);
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    // /ready turns 503 at once, while connections are still served and new ones accepted.
    let mut ready_503 = None;
    for _ in 0..50 {
        if get(sock, "/ready", None).await.0 == 503 {
            ready_503 = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ready_503 = ready_503.expect("/ready went 503");
    assert!(ready_503 < Duration::from_millis(300), "{ready_503:?}");
    assert_eq!(clients[0].request(json!({"type":"ping"})).await["type"], "pong");
    let mut late = Client::connect(&format!("ws://{addr}/ws?token={}", token("late"))).await.unwrap();
    assert_eq!(late.recv().await["type"], "welcome");
    // Then every connection gets 1001, spread over the window.
    clients.push(late);
    let waits = clients.iter_mut().map(|c| async move {
        assert_eq!(c.close_code_within(Duration::from_secs(5)).await, 1001);
        t0.elapsed()
    });
    let mut closed_at = futures_util::future::join_all(waits).await;
    closed_at.sort();
    let (first, last) = (closed_at[0], closed_at[closed_at.len() - 1]);
    assert!(first >= Duration::from_millis(550), "first 1001 before the drain delay: {first:?}");
    assert!(first > ready_503);
    assert!(last - first >= Duration::from_millis(600), "closes not spread: {closed_at:?}");
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let (mut child, addr, _logs) = spawn_gateway(&[("SYNCGATE_DRAIN_DELAY_MS", "30000")]);
    let mut c = Client::connect(&format!("ws://{addr}/ws?token={}", token("u"))).await.unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(child.try_wait().unwrap().is_none(), "still draining");
    let t = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "second signal did not exit at once");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn check_config_masks_secrets_and_names_bad_variables() {
    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("SYNCGATE_JWT_SECRET", "super-secret-value-that-must-not-leak")
        .env("REDIS_URL", "redis://gate:hunter2-password@127.0.0.1:6390/0")
        .env("SYNCGATE_API_KEY", "api-key-that-must-not-leak")
        .env("SYNCGATE_MAX_CONNECTIONS", "1000000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for secret in ["super-secret-value", "hunter2", "api-key-that"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(text.contains("REDIS_URL=redis://gate:***@127.0.0.1:6390/0"), "{text}");
    assert!(text.contains("SYNCGATE_LISTEN=0.0.0.0:8080"));
    assert!(text.contains("open files: soft"));
    assert!(
        text.contains("warning:") && text.contains("SYNCGATE_MAX_CONNECTIONS"),
        "limit below need is a warning:\n{text}"
    );

    let out = Command::new(BIN)
        .arg("check-config")
        .env_clear()
        .env("SYNCGATE_LISTEN", "nowhere")
        .env("SYNCGATE_LOG_FORMAT", "yaml")
        .env("SYNCGATE_JWT_SECRET", "short")
        .env("SYNCGATE_MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["SYNCGATE_LISTEN", "SYNCGATE_LOG_FORMAT", "SYNCGATE_JWT_SECRET", "SYNCGATE_MAX_CONNECTIONS"] {
        assert!(err.contains(key), "{key} not named: {err}");
    }
}

#[tokio::test]
async fn nothing_secret_in_the_logs() {
    let (mut child, addr, logs) = spawn_gateway(&[("RUST_LOG", "debug"), ("SYNCGATE_API_KEY", API_KEY)]);
    let t = token("alice");
    let mut a = Client::connect(&format!("ws://{addr}/ws?token={t}")).await.unwrap();
    assert_eq!(a.recv().await["type"], "welcome");
    let t2 = token("bob");
    let mut b = Client::connect(&format!("ws://{addr}/ws")).await.unwrap();
    b.send(json!({"type":"auth","token":t2})).await;
    assert_eq!(b.recv().await["type"], "welcome");
    let t3 = token("alice");
    a.request(json!({"type":"auth","token":t3})).await;
    let _ = Client::connect(&format!("ws://{addr}/ws?token=forged.{}", &t[..20])).await;
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let _ = get(sock, "/api/status", Some(API_KEY)).await;
    let _ = get(sock, "/api/status", Some("guess-guess-guess")).await;
    drop(a);
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let text: Vec<String> = logs.try_iter().collect();
    let text = text.join("\n");
    assert!(text.contains("connection open"), "logs were captured:\n{text}");
    assert!(text.contains("connection closed"));
    for secret in [t.as_str(), t2.as_str(), t3.as_str(), SECRET, API_KEY, "guess-guess-guess"] {
        assert!(!text.contains(secret), "a secret reached the log");
    }
    // Token pieces (signature) never appear either.
    let sig = t.rsplit('.').next().unwrap();
    assert!(!text.contains(sig));
}

#[tokio::test]
async fn reuseport_lets_two_processes_share_a_port() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let start = |reuse: &str| {
        Command::new(BIN)
            .env_clear()
            .env("SYNCGATE_LISTEN", &listen)
            .env("SYNCGATE_REUSEPORT", reuse)
            .env("SYNCGATE_DATA_DIR", temp_dir())
            .env("SYNCGATE_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = start("1");
    let mut second = start("1");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(first.try_wait().unwrap().is_none(), "first exited");
    assert!(second.try_wait().unwrap().is_none(), "second could not share the port");
    // Without the option a third process cannot bind.
    let mut third = start("0");
    let status = tokio::task::spawn_blocking(move || third.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(1));
    let mut c = Client::connect(&format!("ws://{listen}/ws?token={}", token("u"))).await.unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    first.kill().unwrap();
    second.kill().unwrap();
    let _ = first.wait();
    let _ = second.wait();
}

#[tokio::test]
async fn openapi_lists_every_route_the_router_serves() {
    let s = Server::start(&[("SYNCGATE_API_KEY", API_KEY)]).await;
    let (status, body) = get(s.addr, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (method, path) in syncgate::server::ROUTES {
        assert!(doc["paths"][*path][method.to_lowercase()].is_object(), "{method} {path} undocumented");
        // And the router really serves it (anything but 404/405 without credentials or body).
        let concrete = path.replace("{id}", "some-device");
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let req = format!("{method} {concrete} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        let code: u16 = out[9..12].parse().unwrap();
        assert!(code != 404 && code != 405, "{method} {path} answered {code}");
    }
    s.stop().await;
}
