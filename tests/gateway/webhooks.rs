//! Webhooks (SYNCGATE_WEBHOOK_URL/SECRET/RETRY_SECS/QUEUE/TIMEOUT_MS/BATCH), black-box: a local
//! receiver (a raw HTTP/1.1 server on 127.0.0.1:0 the tests start) checks every request's
//! signature, content type and body shape, records the accepted events, and can fail the first
//! requests, fail them all or never answer. Covered: the channel/member/user lifecycle on one
//! instance, once-per-cluster emission over Redis with retried batches, `message_undelivered`,
//! a dead receiver that never slows WebSocket traffic (the queue drops instead), expiry after
//! RETRY_SECS, and the settings start-up refuses.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

const HOOK_SECRET: &str = "webhook-test-secret-0123456789";
/// How long a test waits for events to reach the receiver (retries back off from 100 ms).
const DELIVERY: Duration = Duration::from_secs(8);

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// 500 for the first `n` requests (counted over all connections), 200 afterwards.
    FailFirst(usize),
    /// 500 for every request.
    AlwaysFail,
    /// Reads the request and never answers.
    Hang,
}

/// One request the receiver read (whatever it answered).
#[derive(Clone, Debug)]
struct Request {
    /// The body, parsed (`Null` when it is not JSON).
    body: Value,
    /// Whether it was answered 2xx (its events are then in `events()`).
    accepted: bool,
}

#[derive(Default)]
struct Shared {
    requests: AtomicUsize,
    /// Set when a request's `X-Syncgate-Signature` is missing or wrong; never expected.
    bad_signature: AtomicBool,
    /// Anything else wrong with a request (method, path, content type, body shape).
    problems: Mutex<Vec<String>>,
    /// Every request read, in arrival order.
    log: Mutex<Vec<Request>>,
    /// The events of accepted requests, in arrival order.
    accepted: Mutex<Vec<Value>>,
}

/// A local webhook receiver on 127.0.0.1:0.
struct Receiver {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn signature(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, HOOK_SECRET.as_bytes());
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Decodes a `Transfer-Encoding: chunked` body; `None` while incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let sh = sh.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    // Head, then the body (Content-Length bytes, or chunks).
                    let (head, body) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let chunked = header(&head, "transfer-encoding")
                            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                        if chunked {
                            if let Some(body) = dechunk(&buf[end + 4..]) {
                                break (head, body);
                            }
                            continue;
                        }
                        let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break (head, buf[end + 4..end + 4 + len].to_vec());
                        }
                    };
                    let index = sh.requests.fetch_add(1, Ordering::SeqCst);

                    let mut problems = Vec::new();
                    if !head.starts_with("POST /webhook ") {
                        problems.push(format!("request line: {:?}", head.lines().next()));
                    }
                    if !header(&head, "content-type").is_some_and(|v| v.starts_with("application/json")) {
                        problems.push(format!("content type: {:?}", header(&head, "content-type")));
                    }
                    let signed_ok = header(&head, "x-syncgate-signature") == Some(signature(&body).as_str());
                    if !signed_ok {
                        sh.bad_signature.store(true, Ordering::SeqCst);
                    }
                    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let events = parsed["events"].as_array().cloned();
                    match &events {
                        None => problems.push(format!("body without events: {}", String::from_utf8_lossy(&body))),
                        Some(list) => {
                            if list.is_empty() {
                                problems.push("an empty batch".into());
                            }
                            for e in list {
                                if !e["id"].is_string() || !e["name"].is_string() {
                                    problems.push(format!("event without a string id and name: {e}"));
                                }
                            }
                        }
                    }
                    if parsed["time_ms"].as_u64().is_none() {
                        problems.push(format!("time_ms is not a number: {parsed}"));
                    }

                    let (status, accepted) = match behaviour {
                        Behaviour::Hang => {
                            sh.log.lock().unwrap().push(Request { body: parsed, accepted: false });
                            sh.problems.lock().unwrap().extend(problems);
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                        Behaviour::AlwaysFail => ("500 Internal Server Error", false),
                        Behaviour::FailFirst(n) if index < n => ("500 Internal Server Error", false),
                        Behaviour::FailFirst(_) if !signed_ok => ("401 Unauthorized", false),
                        Behaviour::FailFirst(_) => ("200 OK", true),
                    };
                    {
                        // Record before answering, so an event is seen no later than it counts
                        // as delivered.
                        if accepted {
                            sh.accepted.lock().unwrap().extend(events.unwrap_or_default());
                        }
                        sh.log.lock().unwrap().push(Request { body: parsed, accepted });
                        sh.problems.lock().unwrap().extend(problems);
                    }
                    let answer = if accepted { "{}" } else { "{\"error\":\"try again\"}" };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Receiver { url, shared, task }
    }

    fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The accepted events, in arrival order.
    fn events(&self) -> Vec<Value> {
        self.shared.accepted.lock().unwrap().clone()
    }

    fn log(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Asserts that every request so far was signed right and well formed.
    fn assert_clean(&self) {
        assert!(!self.shared.bad_signature.load(Ordering::SeqCst), "a request with a bad signature");
        let problems = self.shared.problems.lock().unwrap().clone();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// Waits until `ok` holds over the accepted events; panics (listing them) when it never does.
    async fn wait_for(&self, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let found = eventually(DELIVERY, || {
            let evs = self.events();
            let hit = ok(&evs);
            async move { hit.then_some(evs) }
        })
        .await;
        match found {
            Some(evs) => evs,
            None => panic!("never saw {what}; accepted events: {:#?}", self.events()),
        }
    }

    /// Waits until `key` has been accepted `n` times.
    async fn wait_count(&self, key: (&str, &str, &str), n: usize) -> Vec<Value> {
        self.wait_for(&format!("{n} × {key:?}"), |evs| count(evs, key) >= n).await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(name, channel, user_id)` of an event (empty strings for absent fields).
/// Only the fields the spec gives each name count: `channel` for channel_*, `user_id` for user_*.
fn key(e: &Value) -> (String, String, String) {
    let s = |f: &str| e[f].as_str().unwrap_or("").to_string();
    match e["name"].as_str().unwrap_or("") {
        "channel_occupied" | "channel_vacated" => (s("name"), s("channel"), String::new()),
        "user_online" | "user_offline" => (s("name"), String::new(), s("user_id")),
        _ => (s("name"), s("channel"), s("user_id")),
    }
}

fn count(evs: &[Value], k: (&str, &str, &str)) -> usize {
    evs.iter().filter(|e| key(e) == (k.0.to_string(), k.1.to_string(), k.2.to_string())).count()
}

fn position(evs: &[Value], k: (&str, &str, &str)) -> usize {
    evs.iter()
        .position(|e| key(e) == (k.0.to_string(), k.1.to_string(), k.2.to_string()))
        .unwrap_or_else(|| panic!("{k:?} missing from {evs:#?}"))
}

/// Asserts that the accepted events are exactly `expected` as a multiset of keys.
fn assert_exactly(evs: &[Value], expected: &[(&str, &str, &str)]) {
    let mut got: Vec<(String, String, String)> = evs.iter().map(key).collect();
    let mut want: Vec<(String, String, String)> =
        expected.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "accepted events: {evs:#?}");
}

fn assert_unique_ids(evs: &[Value]) {
    let mut seen = HashSet::new();
    for e in evs {
        let id = e["id"].as_str().unwrap_or_else(|| panic!("event without a string id: {e}"));
        assert!(!id.is_empty(), "{e}");
        assert!(seen.insert(id.to_string()), "id {id} twice among accepted events: {evs:#?}");
    }
}

fn ids(batch: &Value) -> Vec<String> {
    batch["events"]
        .as_array()
        .map(|l| l.iter().map(|e| e["id"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The value of a counter or gauge on a metrics page (summed over label sets; 0 when absent).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let base = series.split('{').next()?;
            (base == name).then(|| value.trim().parse::<f64>().ok()).flatten()
        })
        .map(|v| v as u64)
        .sum()
}

async fn metric_of(s: &Server, name: &str) -> u64 {
    metric(&metrics_text(s).await, name)
}

fn hook_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("SYNCGATE_WEBHOOK_URL", url),
        ("SYNCGATE_WEBHOOK_SECRET", HOOK_SECRET),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
    ];
    env.extend_from_slice(extra);
    env
}

/// One instance of a cluster over the shared Redis with key prefix `prefix`.
async fn instance(prefix: &str, url: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = hook_env(url, &[("REDIS_URL", crate::cluster::REDIS), ("SYNCGATE_REDIS_PREFIX", prefix)]);
    env.extend_from_slice(extra);
    Server::start(&env).await
}

async fn join(c: &mut Client, channel: &str) {
    c.send(json!({"type": "subscribe", "channel": channel})).await;
    let r = c.recv_type("subscribed").await;
    assert_eq!(r["channel"], channel, "{r}");
}

async fn leave(c: &mut Client, channel: &str) {
    c.send(json!({"type": "unsubscribe", "channel": channel})).await;
    let r = c.recv_type("unsubscribed").await;
    assert_eq!(r["channel"], channel, "{r}");
}

/// Closes a connection cleanly (close frame, then the socket goes).
async fn hang_up(mut c: Client) {
    let _ = c.ws.close(None).await;
    drop(c);
}

/// Publishes a durable dm event on `c` and returns its seq from the ack.
async fn publish_dm(c: &mut Client, channel: &str, id: &str) -> u64 {
    c.send(json!({"type": "publish", "channel": channel, "event": "e", "data": {"t": id}, "id": id})).await;
    loop {
        let v = c.recv().await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ack" && v["id"] == id {
            return v["seq"].as_u64().unwrap_or_else(|| panic!("a durable ack carries a seq: {v}"));
        }
    }
}

fn undelivered<'a>(evs: &'a [Value], channel: &str, seq: u64) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["name"] == "message_undelivered" && e["channel"] == channel && e["seq"].as_u64() == Some(seq))
        .collect()
}

#[tokio::test]
async fn lifecycle_on_one_instance() {
    let started_ms = now_ms();
    let hook = Receiver::start(Behaviour::FailFirst(0)).await;
    let s = Server::start(&hook_env(&hook.url, &[])).await;

    // alice's first connection: online.
    let mut a1 = s.client("alice", "d1").await;
    hook.wait_count(("user_online", "", "alice"), 1).await;
    // The first member of room:1: occupied, member_added.
    join(&mut a1, "room:1").await;
    hook.wait_count(("member_added", "room:1", "alice"), 1).await;
    hook.wait_count(("channel_occupied", "room:1", ""), 1).await;
    // bob: online and a member; room:1 is not occupied again.
    let mut b = s.client("bob", "d1").await;
    join(&mut b, "room:1").await;
    hook.wait_count(("member_added", "room:1", "bob"), 1).await;
    hook.wait_count(("user_online", "", "bob"), 1).await;
    // alice's second device joins and leaves: nothing (she is online and a member already).
    let mut a2 = s.client("alice", "d2").await;
    join(&mut a2, "room:1").await;
    hang_up(a2).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let evs = hook.events();
    assert_eq!(count(&evs, ("channel_occupied", "room:1", "")), 1, "{evs:#?}");
    assert_eq!(count(&evs, ("member_added", "room:1", "alice")), 1, "{evs:#?}");
    assert_eq!(count(&evs, ("member_removed", "room:1", "alice")), 0, "{evs:#?}");
    assert_eq!(count(&evs, ("user_online", "", "alice")), 1, "{evs:#?}");
    assert_eq!(count(&evs, ("user_offline", "", "alice")), 0, "{evs:#?}");
    assert_eq!(evs.len(), 5, "{evs:#?}");

    // alice's last connection in room:1 unsubscribes: removed, the room stays occupied by bob.
    leave(&mut a1, "room:1").await;
    hook.wait_count(("member_removed", "room:1", "alice"), 1).await;
    // bob's only connection goes: removed, vacated, offline.
    hang_up(b).await;
    hook.wait_count(("channel_vacated", "room:1", ""), 1).await;
    hook.wait_count(("member_removed", "room:1", "bob"), 1).await;
    hook.wait_count(("user_offline", "", "bob"), 1).await;
    // alice's last connection: offline.
    hang_up(a1).await;
    hook.wait_count(("user_offline", "", "alice"), 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let evs = hook.events();
    assert_exactly(
        &evs,
        &[
            ("user_online", "", "alice"),
            ("channel_occupied", "room:1", ""),
            ("member_added", "room:1", "alice"),
            ("user_online", "", "bob"),
            ("member_added", "room:1", "bob"),
            ("member_removed", "room:1", "alice"),
            ("member_removed", "room:1", "bob"),
            ("channel_vacated", "room:1", ""),
            ("user_offline", "", "bob"),
            ("user_offline", "", "alice"),
        ],
    );
    assert_unique_ids(&evs);
    // One instance, batches in order, events in emission order: the causal order holds.
    let at = |k| position(&evs, k);
    assert!(at(("user_online", "", "alice")) < at(("member_added", "room:1", "alice")));
    assert!(at(("channel_occupied", "room:1", "")) < at(("member_added", "room:1", "bob")));
    assert!(at(("member_added", "room:1", "alice")) < at(("member_removed", "room:1", "alice")));
    assert!(at(("member_removed", "room:1", "alice")) < at(("channel_vacated", "room:1", "")));
    assert!(at(("channel_occupied", "room:1", "")) < at(("channel_vacated", "room:1", "")));
    assert!(at(("user_online", "", "bob")) < at(("user_offline", "", "bob")));
    assert!(at(("user_offline", "", "bob")) < at(("user_offline", "", "alice")));
    // Each carries its documented fields.
    for e in &evs {
        let want: &[&str] = match e["name"].as_str().unwrap() {
            "channel_occupied" | "channel_vacated" => &["channel"],
            "member_added" | "member_removed" => &["channel", "user_id"],
            _ => &["user_id"],
        };
        for f in want {
            assert!(e[*f].as_str().is_some_and(|v| !v.is_empty()), "{f} missing: {e}");
        }
    }

    // Every request: signed, well formed, a plausible time, answered 200.
    hook.assert_clean();
    let log = hook.log();
    assert!(!log.is_empty());
    for r in &log {
        assert!(r.accepted);
        let t = r.body["time_ms"].as_u64().unwrap();
        assert!(t + 1000 >= started_ms && t <= now_ms() + 1000, "time_ms {t} (test started at {started_ms})");
    }
    assert_eq!(log.iter().map(|r| r.body["events"].as_array().unwrap().len()).sum::<usize>(), evs.len());
    let m = metrics_text(&s).await;
    assert_eq!(metric(&m, "syncgate_webhook_events_total"), 10, "{m}");
    let delivered = eventually(Duration::from_secs(2), || async {
        (metric_of(&s, "syncgate_webhook_delivered_total").await == 10).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "{}", metrics_text(&s).await);
    let m = metrics_text(&s).await;
    for zero in [
        "syncgate_webhook_dropped_total",
        "syncgate_webhook_expired_total",
        "syncgate_webhook_failures_total",
        "syncgate_webhook_queue",
    ] {
        assert!(m.contains(zero), "{zero} listed: {m}");
        assert_eq!(metric(&m, zero), 0, "{zero}: {m}");
    }
    s.stop().await;
}

#[tokio::test]
async fn once_per_cluster_with_retries() {
    let hook = Receiver::start(Behaviour::FailFirst(2)).await;
    let p = crate::cluster::prefix();
    let batch = [("SYNCGATE_WEBHOOK_BATCH", "3")];
    let (s1, s2, s3) = (
        instance(&p, &hook.url, &batch).await,
        instance(&p, &hook.url, &batch).await,
        instance(&p, &hook.url, &batch).await,
    );

    let mut alice1 = s1.client("alice", "d1").await;
    join(&mut alice1, "room:1").await;
    hook.wait_count(("member_added", "room:1", "alice"), 1).await;
    hook.wait_count(("channel_occupied", "room:1", ""), 1).await;
    hook.wait_count(("user_online", "", "alice"), 1).await;

    let mut bob = s2.client("bob", "d1").await;
    join(&mut bob, "room:1").await;
    hook.wait_count(("member_added", "room:1", "bob"), 1).await;
    hook.wait_count(("user_online", "", "bob"), 1).await;

    let mut carol = s3.client("carol", "d1").await;
    join(&mut carol, "room:1").await;
    join(&mut carol, "room:2").await;
    hook.wait_count(("member_added", "room:1", "carol"), 1).await;
    hook.wait_count(("member_added", "room:2", "carol"), 1).await;
    hook.wait_count(("channel_occupied", "room:2", ""), 1).await;
    hook.wait_count(("user_online", "", "carol"), 1).await;

    // alice's second device on another instance: neither online nor a member again.
    let mut alice3 = s3.client("alice", "d2").await;
    join(&mut alice3, "room:1").await;
    let mut dave = s1.client("dave", "d1").await;
    join(&mut dave, "room:2").await;
    hook.wait_count(("member_added", "room:2", "dave"), 1).await;
    hook.wait_count(("user_online", "", "dave"), 1).await;

    // alice's first device goes: she is still online and in room:1 through instance 3.
    hang_up(alice1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let evs = hook.events();
    assert_eq!(count(&evs, ("member_removed", "room:1", "alice")), 0, "{evs:#?}");
    assert_eq!(count(&evs, ("user_offline", "", "alice")), 0, "{evs:#?}");
    assert_eq!(count(&evs, ("member_added", "room:1", "alice")), 1, "{evs:#?}");
    assert_eq!(count(&evs, ("user_online", "", "alice")), 1, "{evs:#?}");

    hang_up(alice3).await;
    hook.wait_count(("member_removed", "room:1", "alice"), 1).await;
    hook.wait_count(("user_offline", "", "alice"), 1).await;
    hang_up(bob).await;
    hook.wait_count(("member_removed", "room:1", "bob"), 1).await;
    hook.wait_count(("user_offline", "", "bob"), 1).await;
    // carol, the last member of room:1, leaves it: removed and vacated; room:2 keeps her and dave.
    leave(&mut carol, "room:1").await;
    hook.wait_count(("member_removed", "room:1", "carol"), 1).await;
    hook.wait_count(("channel_vacated", "room:1", ""), 1).await;
    hang_up(carol).await;
    hook.wait_count(("member_removed", "room:2", "carol"), 1).await;
    hook.wait_count(("user_offline", "", "carol"), 1).await;
    hang_up(dave).await;
    hook.wait_count(("member_removed", "room:2", "dave"), 1).await;
    hook.wait_count(("channel_vacated", "room:2", ""), 1).await;
    hook.wait_count(("user_offline", "", "dave"), 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    let expected = [
        ("user_online", "", "alice"),
        ("user_online", "", "bob"),
        ("user_online", "", "carol"),
        ("user_online", "", "dave"),
        ("channel_occupied", "room:1", ""),
        ("channel_occupied", "room:2", ""),
        ("member_added", "room:1", "alice"),
        ("member_added", "room:1", "bob"),
        ("member_added", "room:1", "carol"),
        ("member_added", "room:2", "carol"),
        ("member_added", "room:2", "dave"),
        ("member_removed", "room:1", "alice"),
        ("member_removed", "room:1", "bob"),
        ("member_removed", "room:1", "carol"),
        ("member_removed", "room:2", "carol"),
        ("member_removed", "room:2", "dave"),
        ("channel_vacated", "room:1", ""),
        ("channel_vacated", "room:2", ""),
        ("user_offline", "", "alice"),
        ("user_offline", "", "bob"),
        ("user_offline", "", "carol"),
        ("user_offline", "", "dave"),
    ];
    let evs = hook.events();
    assert_exactly(&evs, &expected);
    assert_unique_ids(&evs);
    hook.assert_clean();

    // The two refused requests were retried as they were: each one's ids came back, in order,
    // in an accepted request. No batch exceeds SYNCGATE_WEBHOOK_BATCH.
    let log = hook.log();
    assert!(log.len() >= expected.len().div_ceil(3) + 2, "{log:#?}");
    let refused: Vec<&Request> = log.iter().filter(|r| !r.accepted).collect();
    assert_eq!(refused.len(), 2, "{log:#?}");
    for r in &refused {
        let want = ids(&r.body);
        assert!(log.iter().any(|a| a.accepted && ids(&a.body) == want), "{want:?} never accepted: {log:#?}");
    }
    for r in &log {
        let n = r.body["events"].as_array().unwrap().len();
        assert!((1..=3).contains(&n), "a batch of {n}: {}", r.body);
    }

    // Counters over the cluster: every event queued once, delivered once, two failed attempts.
    let servers = [&s1, &s2, &s3];
    let mut failures = 0;
    let mut queued = 0;
    for s in servers {
        let m = metrics_text(s).await;
        failures += metric(&m, "syncgate_webhook_failures_total");
        queued += metric(&m, "syncgate_webhook_events_total");
        assert_eq!(metric(&m, "syncgate_webhook_dropped_total"), 0, "{m}");
        assert_eq!(metric(&m, "syncgate_webhook_expired_total"), 0, "{m}");
    }
    assert!(failures >= 2, "failed attempts over the cluster: {failures}");
    assert_eq!(queued, expected.len() as u64);
    let delivered = eventually(Duration::from_secs(2), || async {
        let mut n = 0;
        for s in servers {
            n += metric_of(s, "syncgate_webhook_delivered_total").await;
        }
        (n == expected.len() as u64).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "delivered_total over the cluster != {}", expected.len());
    for s in [s1, s2, s3] {
        s.stop().await;
    }
}

#[tokio::test]
async fn message_undelivered_only_when_the_recipient_is_nowhere() {
    let hook = Receiver::start(Behaviour::FailFirst(0)).await;
    let s = Server::start(&hook_env(&hook.url, &[])).await;
    let dm = "dm:alice:bob";

    // bob has no connection: alice's durable publish is stored and reported undelivered.
    let mut alice = s.client("alice", "d1").await;
    hook.wait_count(("user_online", "", "alice"), 1).await;
    let seq = publish_dm(&mut alice, dm, "p1").await;
    let evs = hook.wait_for("message_undelivered", |evs| !undelivered(evs, dm, seq).is_empty()).await;
    let found = undelivered(&evs, dm, seq);
    assert_eq!(found.len(), 1, "{evs:#?}");
    let e = found[0];
    assert_eq!((e["user_id"].as_str(), e["from"].as_str()), (Some("bob"), Some("alice")), "{e}");

    // bob connected (not even subscribed): the next one reaches him, nothing is reported.
    let mut bob = s.client("bob", "phone").await;
    hook.wait_count(("user_online", "", "bob"), 1).await;
    let seq2 = publish_dm(&mut alice, dm, "p2").await;
    assert!(seq2 > seq);
    let got = bob.recv_type("event").await;
    assert_eq!((got["channel"].as_str(), got["seq"].as_u64()), (Some(dm), Some(seq2)), "{got}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs = hook.events();
    assert!(undelivered(&evs, dm, seq2).is_empty(), "{evs:#?}");
    assert_eq!(evs.iter().filter(|e| e["name"] == "message_undelivered").count(), 1, "{evs:#?}");
    assert_unique_ids(&evs);
    hook.assert_clean();
    s.stop().await;

    // Two instances (one PostgreSQL store, one Redis prefix): bob on instance 2, alice publishing
    // on instance 1 → nothing; once bob is gone everywhere → exactly one report for the cluster.
    let hook = Receiver::start(Behaviour::FailFirst(0)).await;
    let p = crate::cluster::prefix();
    // One durable store for both, as a real cluster has.
    let db = crate::accounts::fresh_pg_database().await;
    let store = [("DATABASE_URL", db.as_str())];
    let (s1, s2) = (instance(&p, &hook.url, &store).await, instance(&p, &hook.url, &store).await);
    let mut bob = s2.client("bob", "phone").await;
    hook.wait_count(("user_online", "", "bob"), 1).await;
    let mut alice = s1.client("alice", "d1").await;
    hook.wait_count(("user_online", "", "alice"), 1).await;
    let seq = publish_dm(&mut alice, dm, "c1").await;
    let got = bob.recv_type("event").await;
    assert_eq!((got["channel"].as_str(), got["seq"].as_u64()), (Some(dm), Some(seq)), "{got}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs = hook.events();
    assert_eq!(evs.iter().filter(|e| e["name"] == "message_undelivered").count(), 0, "{evs:#?}");

    hang_up(bob).await;
    hook.wait_count(("user_offline", "", "bob"), 1).await;
    let seq2 = publish_dm(&mut alice, dm, "c2").await;
    let evs = hook.wait_for("message_undelivered", |evs| !undelivered(evs, dm, seq2).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs = {
        let later = hook.events();
        assert!(later.len() >= evs.len());
        later
    };
    let found = undelivered(&evs, dm, seq2);
    assert_eq!(found.len(), 1, "{evs:#?}");
    assert_eq!((found[0]["user_id"].as_str(), found[0]["from"].as_str()), (Some("bob"), Some("alice")));
    assert_eq!(evs.iter().filter(|e| e["name"] == "message_undelivered").count(), 1, "{evs:#?}");
    assert_unique_ids(&evs);
    hook.assert_clean();
    s1.stop().await;
    s2.stop().await;
}

/// A receiver that never answers: WebSocket traffic is as prompt as ever, the small queue fills
/// and drops. (The servers are dropped rather than stopped: nothing promises how shutdown treats
/// a queue stuck behind a dead receiver.)
#[tokio::test]
async fn dead_receiver_never_slows_traffic() {
    let hook = Receiver::start(Behaviour::Hang).await;
    let s =
        Server::start(&hook_env(&hook.url, &[("SYNCGATE_WEBHOOK_QUEUE", "5"), ("SYNCGATE_WEBHOOK_TIMEOUT_MS", "200")]))
            .await;
    // 20 users online and in room:1: far more events than the queue holds.
    let mut users = Vec::new();
    for i in 0..20 {
        let mut c = s.client(&format!("u{i}"), "d1").await;
        join(&mut c, "room:1").await;
        users.push(c);
    }
    // A publish to the room reaches all 19 others promptly.
    let started = Instant::now();
    users[0].send(json!({"type": "publish", "channel": "room:1", "event": "hello", "data": 1})).await;
    for c in users.iter_mut().skip(1) {
        let e = c.recv_type("event").await;
        assert_eq!(e["event"], "hello", "{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(2), "room fan-out took {:?}", started.elapsed());

    // 200 round trips between two devices of one user.
    let mut a = s.client("echo", "a").await;
    let mut b = s.client("echo", "b").await;
    let started = Instant::now();
    for i in 0..100 {
        a.send(json!({"type": "publish", "channel": "user", "event": "ping", "data": i})).await;
        let e = b.recv_type("event").await;
        assert_eq!((e["event"].as_str(), e["data"].as_i64()), (Some("ping"), Some(i)), "{e}");
        b.send(json!({"type": "publish", "channel": "user", "event": "pong", "data": i})).await;
        let e = a.recv_type("event").await;
        assert_eq!((e["event"].as_str(), e["data"].as_i64()), (Some("pong"), Some(i)), "{e}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "200 round trips took {took:?}");

    // The receiver was tried, the queue stayed within its bound, the overflow was dropped.
    let dropped = eventually(Duration::from_secs(3), || async {
        (metric_of(&s, "syncgate_webhook_dropped_total").await > 0).then_some(())
    })
    .await;
    let m = metrics_text(&s).await;
    assert!(dropped.is_some(), "{m}");
    assert_eq!(metric(&m, "syncgate_webhook_delivered_total"), 0, "{m}");
    let tried = eventually(Duration::from_secs(3), || async { (hook.requests() >= 1).then_some(()) }).await;
    assert!(tried.is_some(), "the receiver was never asked");
    let failed = eventually(Duration::from_secs(3), || async {
        (metric_of(&s, "syncgate_webhook_failures_total").await >= 1).then_some(())
    })
    .await;
    assert!(failed.is_some(), "timed-out attempts count as failures: {}", metrics_text(&s).await);
    assert!(hook.events().is_empty());
    assert!(!hook.shared.bad_signature.load(Ordering::SeqCst));
    drop(users);
    drop(s);
}

#[tokio::test]
async fn batches_expire_after_retry_secs() {
    let hook = Receiver::start(Behaviour::AlwaysFail).await;
    let s = Server::start(&hook_env(&hook.url, &[("SYNCGATE_WEBHOOK_RETRY_SECS", "1")])).await;
    let started = Instant::now();
    let c = s.client("alice", "d1").await;
    let expired = eventually(Duration::from_secs(6), || async {
        (metric_of(&s, "syncgate_webhook_expired_total").await >= 1).then_some(())
    })
    .await;
    let m = metrics_text(&s).await;
    assert!(expired.is_some(), "nothing expired after {:?}: {m}", started.elapsed());
    // Not before RETRY_SECS (with some slack for scheduling).
    assert!(started.elapsed() >= Duration::from_millis(800), "expired after {:?}", started.elapsed());
    assert!(hook.requests() >= 2, "retried: {} requests", hook.requests());
    assert!(metric(&m, "syncgate_webhook_failures_total") >= 2, "{m}");
    assert_eq!(metric(&m, "syncgate_webhook_delivered_total"), 0, "{m}");
    assert!(metric(&m, "syncgate_webhook_events_total") >= 1, "{m}");
    // Every attempt carried the same batch (same ids): user_online alice.
    let log = hook.log();
    let first = ids(&log[0].body);
    assert!(!first.is_empty());
    assert_eq!(log[0].body["events"][0]["name"], "user_online", "{}", log[0].body);
    for r in &log {
        assert_eq!(ids(&r.body), first, "{log:#?}");
    }
    hook.assert_clean();
    // Given up: no more attempts for it (a little later, the count stays put).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = hook.requests();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.requests(), settled, "attempts went on after the batch expired");
    assert!(hook.events().is_empty());
    drop(c);
    s.stop().await;
}

#[tokio::test]
async fn bad_webhook_settings_stop_start_up() {
    let mut base = HashMap::new();
    base.insert("SYNCGATE_JWT_SECRET".to_string(), SECRET.to_string());
    base.insert("SYNCGATE_DATA_DIR".to_string(), temp_dir().display().to_string());
    let with = |pairs: &[(&str, &str)]| {
        let mut v = base.clone();
        for (k, val) in pairs {
            v.insert(k.to_string(), val.to_string());
        }
        v
    };
    let url = ("SYNCGATE_WEBHOOK_URL", "http://127.0.0.1:1/webhook");
    let secret = ("SYNCGATE_WEBHOOK_SECRET", HOOK_SECRET);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![url], "SYNCGATE_WEBHOOK_SECRET"),
        (vec![secret], "SYNCGATE_WEBHOOK_URL"),
        (vec![("SYNCGATE_WEBHOOK_URL", "ftp://example.com/hook"), secret], "SYNCGATE_WEBHOOK_URL"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_RETRY_SECS", "abc")], "SYNCGATE_WEBHOOK_RETRY_SECS"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_RETRY_SECS", "86401")], "SYNCGATE_WEBHOOK_RETRY_SECS"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_QUEUE", "0")], "SYNCGATE_WEBHOOK_QUEUE"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_QUEUE", "1000001")], "SYNCGATE_WEBHOOK_QUEUE"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_TIMEOUT_MS", "0")], "SYNCGATE_WEBHOOK_TIMEOUT_MS"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_TIMEOUT_MS", "60001")], "SYNCGATE_WEBHOOK_TIMEOUT_MS"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_BATCH", "0")], "SYNCGATE_WEBHOOK_BATCH"),
        (vec![url, secret, ("SYNCGATE_WEBHOOK_BATCH", "10001")], "SYNCGATE_WEBHOOK_BATCH"),
    ];
    for (pairs, named) in cases {
        let err = match syncgate::config::Config::from_map(&with(&pairs)) {
            Ok(_) => panic!("{pairs:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(named), "{pairs:?}: {err}");
    }
    // The bounds themselves are fine, and so is https.
    for pairs in [
        vec![url, secret],
        vec![("SYNCGATE_WEBHOOK_URL", "https://hooks.example.com/syncgate"), secret],
        vec![
            url,
            secret,
            ("SYNCGATE_WEBHOOK_RETRY_SECS", "0"),
            ("SYNCGATE_WEBHOOK_QUEUE", "1"),
            ("SYNCGATE_WEBHOOK_TIMEOUT_MS", "1"),
            ("SYNCGATE_WEBHOOK_BATCH", "1"),
        ],
        vec![
            url,
            secret,
            ("SYNCGATE_WEBHOOK_RETRY_SECS", "86400"),
            ("SYNCGATE_WEBHOOK_QUEUE", "1000000"),
            ("SYNCGATE_WEBHOOK_TIMEOUT_MS", "60000"),
            ("SYNCGATE_WEBHOOK_BATCH", "10000"),
        ],
    ] {
        if let Err(e) = syncgate::config::Config::from_map(&with(&pairs)) {
            panic!("{pairs:?} refused: {e}");
        }
    }
}

/// The receiver itself (no gateway): a signed request is accepted and recorded, chunked bodies
/// are read, a wrong signature is flagged and refused, FailFirst answers 500 first.
#[tokio::test]
async fn receiver_self_check() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn post(url: &str, body: &str, sig: &str, chunked: bool) -> String {
        let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        let framing = if chunked {
            format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len())
        } else {
            format!("content-length: {}\r\n\r\n{body}", body.len())
        };
        let req = format!(
            "POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-syncgate-signature: {sig}\r\n{framing}"
        );
        sock.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        sock.read_to_string(&mut out).await.unwrap();
        out
    }
    let hook = Receiver::start(Behaviour::FailFirst(1)).await;
    let body = json!({"time_ms": now_ms(), "events": [{"id": "1", "name": "user_online", "user_id": "x"}]}).to_string();
    let sig = signature(body.as_bytes());
    assert!(post(&hook.url, &body, &sig, false).await.starts_with("HTTP/1.1 500"));
    assert!(post(&hook.url, &body, &sig, true).await.starts_with("HTTP/1.1 200"));
    hook.assert_clean();
    assert_eq!(hook.requests(), 2);
    assert_eq!(hook.events().len(), 1);
    hook.wait_count(("user_online", "", "x"), 1).await;
    assert!(post(&hook.url, &body, "sha256=00", false).await.starts_with("HTTP/1.1 401"));
    assert!(hook.shared.bad_signature.load(Ordering::SeqCst));
    assert_eq!(hook.events().len(), 1);
    assert_eq!(metric("# HELP a b\na_total 3\na_total_x 9\nb{x=\"1\"} 2\nb{x=\"2\"} 5\n", "b"), 7);
    assert_eq!(metric("a_total 3\na_total_x 9\n", "a_total"), 3);
}

/// An instance killed with SIGKILL: the instance that reaps it reports what left with it, once.
#[tokio::test]
async fn a_killed_instance_is_reported_by_its_reaper() {
    let hook = Receiver::start(Behaviour::FailFirst(0)).await;
    let p = crate::cluster::prefix();
    let ttl = [("SYNCGATE_PRESENCE_TTL_MS", "2000")];
    let s1 = instance(&p, &hook.url, &ttl).await;
    let s2 = instance(&p, &hook.url, &ttl).await;
    let mut bob = s1.client("bob", "d1").await;
    join(&mut bob, "room:k").await;
    // The victim: a real process on the same Redis, with the same webhook.
    let dir = temp_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_syncgate"))
        .env_clear()
        .env("SYNCGATE_LISTEN", "127.0.0.1:0")
        .env("SYNCGATE_DATA_DIR", &dir)
        .env("SYNCGATE_JWT_SECRET", SECRET)
        .env("REDIS_URL", crate::cluster::REDIS)
        .env("SYNCGATE_REDIS_PREFIX", &p)
        .env("SYNCGATE_PUBLIC_NAMESPACES", "room")
        .env("SYNCGATE_PRESENCE_TTL_MS", "2000")
        .env("SYNCGATE_WEBHOOK_URL", &hook.url)
        .env("SYNCGATE_WEBHOOK_SECRET", HOOK_SECRET)
        .env("SYNCGATE_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = crate::lifecycle::read_addr(child.stderr.take().unwrap());
    let mut victim = Client::connect(&format!("ws://{addr}/ws?token={}&device_id=d", token("vic"))).await.unwrap();
    assert_eq!(victim.recv().await["type"], "welcome");
    join(&mut victim, "room:k").await;
    join(&mut victim, "room:solo").await;
    hook.wait_count(("member_added", "room:solo", "vic"), 1).await;
    child.kill().unwrap();
    let _ = child.wait();
    // Reaped by s1 or s2 (whichever sees the silence first), reported once.
    hook.wait_for("the victim's departures", |evs| {
        count(evs, ("user_offline", "", "vic")) >= 1
            && count(evs, ("member_removed", "room:k", "vic")) >= 1
            && count(evs, ("channel_vacated", "room:solo", "")) >= 1
    })
    .await;
    // bob is still in room:k: it stays occupied. Give a late duplicate the time to show.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let evs = hook.events();
    for k in [
        ("user_online", "", "vic"),
        ("user_offline", "", "vic"),
        ("member_added", "room:k", "vic"),
        ("member_removed", "room:k", "vic"),
        ("channel_occupied", "room:solo", ""),
        ("member_added", "room:solo", "vic"),
        ("member_removed", "room:solo", "vic"),
        ("channel_vacated", "room:solo", ""),
        ("channel_occupied", "room:k", ""),
    ] {
        assert_eq!(count(&evs, k), 1, "{k:?}: {evs:#?}");
    }
    assert_eq!(count(&evs, ("channel_vacated", "room:k", "")), 0, "{evs:#?}");
    assert_unique_ids(&evs);
    hook.assert_clean();
    drop(victim);
    s1.stop().await;
    s2.stop().await;
}
