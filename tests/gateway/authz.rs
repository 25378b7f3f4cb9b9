//! Channel rights and the authorization hook (issue 15, part): the `subscribe` and `publish`
//! claims beside `channels`, typing and presence under subscribe rights, re-auth swapping rights,
//! server-publish namespaces (clients subscribe, only the server API publishes); a local hook
//! (a raw HTTP/1.1 server on 127.0.0.1:0 the tests start) allowing, denying, cached, coalesced,
//! timing out while events keep flowing, and answering garbage.

use serde_json::{json, Value};

use crate::common::*;

const API_KEY: &str = "authz-test-api-key-0123456789";

fn rights_token(user: &str, claims: Value) -> String {
    let mut c = json!({"sub": user, "exp": now() + 3600});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    sign(&c)
}

fn publish(channel: &str, id: &str) -> Value {
    json!({"type": "publish", "channel": channel, "event": "e", "data": {"n": 1}, "id": id})
}

/// Sends `v` and returns the `error` code that answers it (join/leave frames skipped).
async fn refused(c: &mut Client, v: Value) -> String {
    c.send(v).await;
    c.recv_type("error").await["code"].as_str().unwrap_or("").to_string()
}

fn code(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "{v}");
    v["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn subscribe_and_publish_claims() {
    let s = Server::start(&[]).await;
    let claims = json!({"channels": ["room:*"], "subscribe": ["feed:*"], "publish": ["inbox:*"]});
    let mut a = s.client_with(&rights_token("alice", claims), "d1", "").await;
    let mut reader = s.client_with(&token_channels("bob", &["inbox:*", "feed:*"]), "d2", "").await;
    assert_eq!(reader.subscribe("inbox:1").await["type"], "subscribed");
    assert_eq!(reader.subscribe("feed:1").await["type"], "subscribed");

    // `channels` grants both.
    assert_eq!(a.subscribe("room:1").await["type"], "subscribed");
    assert_eq!(a.request(publish("room:1", "p1")).await["type"], "ack");
    // `subscribe` only: subscribe, typing and presence; no publish.
    assert_eq!(a.subscribe("feed:1").await["type"], "subscribed");
    assert_eq!(code(&a.request(publish("feed:1", "p2")).await), "forbidden");
    let p = a.request(json!({"type": "presence", "channel": "feed:1", "id": "q1"})).await;
    assert_eq!(p["type"], "presence", "{p}");
    a.send(json!({"type": "typing", "channel": "feed:1", "state": "start"})).await;
    let t = reader.recv_type("typing").await;
    assert_eq!(t["user_id"], "alice", "{t}");
    // `publish` only: publish reaches subscribers; no subscribe, typing or presence.
    assert_eq!(a.request(publish("inbox:1", "p3")).await["type"], "ack");
    let e = reader.recv_type("event").await;
    assert_eq!((e["channel"].as_str(), e["from"]["user_id"].as_str()), (Some("inbox:1"), Some("alice")));
    assert_eq!(code(&a.subscribe("inbox:1").await), "forbidden");
    assert_eq!(code(&a.request(json!({"type": "presence", "channel": "inbox:1", "id": "q2"})).await), "forbidden");
    let refused = a.request(json!({"type": "typing", "channel": "inbox:1", "state": "start", "id": "t"})).await;
    assert_eq!(code(&refused), "forbidden");
    // Neither.
    assert_eq!(code(&a.subscribe("other:1").await), "forbidden");
    assert_eq!(code(&a.request(publish("other:1", "p4")).await), "forbidden");
    // The connection stayed open through every refusal.
    assert_eq!(a.request(json!({"type": "ping", "id": "x"})).await["type"], "pong");

    // Re-auth swaps the rights: now `publish` to feed, no longer `subscribe` there.
    let fresh = rights_token("alice", json!({"publish": ["feed:*"]}));
    assert_eq!(a.request(json!({"type": "auth", "token": fresh, "id": "r"})).await["type"], "auth_ok");
    assert_eq!(a.request(publish("feed:2", "p5")).await["type"], "ack");
    assert_eq!(code(&a.subscribe("feed:3").await), "forbidden");
    assert_eq!(code(&a.request(publish("room:1", "p6")).await), "forbidden");
    s.stop().await;
}

#[tokio::test]
async fn server_publish_namespaces() {
    let env = [
        ("SYNCGATE_API_KEY", API_KEY),
        ("SYNCGATE_PUBLIC_NAMESPACES", "lobby,announce"),
        ("SYNCGATE_SERVER_PUBLISH_NAMESPACES", "announce,alerts"),
    ];
    let s = Server::start(&env).await;
    let all = json!({"channels": ["*"], "publish": ["alerts:*"]});
    let mut a = s.client_with(&rights_token("alice", all), "d1", "").await;
    let mut plain = s.client("bob", "d2").await;
    // Subscribing follows the usual rules: public for anyone, a claim for `alerts`.
    assert_eq!(plain.subscribe("announce:1").await["type"], "subscribed");
    assert_eq!(code(&plain.subscribe("alerts:1").await), "forbidden");
    assert_eq!(a.subscribe("alerts:1").await["type"], "subscribed");
    assert_eq!(a.subscribe("announce:1").await["type"], "subscribed");
    // No client publishes there, whatever its token grants.
    assert_eq!(refused(&mut a, publish("alerts:1", "p1")).await, "forbidden");
    assert_eq!(refused(&mut a, publish("announce:1", "p2")).await, "forbidden");
    assert_eq!(refused(&mut plain, publish("announce:1", "p3")).await, "forbidden");
    // Other namespaces are untouched.
    plain.send(publish("lobby:1", "p4")).await;
    assert_eq!(plain.recv_type("ack").await["id"], "p4");
    // The server API does publish there.
    let body = r#"{"channel":"announce:1","event":"notice","data":{"v":1}}"#;
    let (status, answer) = http_json(s.addr, "POST", "/api/publish", Some(API_KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    for c in [&mut a, &mut plain] {
        let e = c.recv_type("event").await;
        assert_eq!((e["event"].as_str(), e["from"]["user_id"].as_str()), (Some("notice"), Some("server")));
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_settings_stop_start_up() {
    let mut vars = std::collections::HashMap::new();
    vars.insert("SYNCGATE_JWT_SECRET".to_string(), SECRET.to_string());
    vars.insert("SYNCGATE_SERVER_PUBLISH_NAMESPACES".to_string(), "ok,bad:ns".to_string());
    let err = syncgate::config::Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.contains("SYNCGATE_SERVER_PUBLISH_NAMESPACES"), "{err}");
    // Hook settings: a URL that is not http(s), `user`/`dm` governed, values out of range,
    // and namespaces without a URL are each named.
    vars.remove("SYNCGATE_SERVER_PUBLISH_NAMESPACES");
    for (key, value) in [
        ("SYNCGATE_AUTHZ_URL", "ftp://example.com/x"),
        ("SYNCGATE_AUTHZ_NAMESPACES", "doc,dm"),
        ("SYNCGATE_AUTHZ_CACHE_SECS", "3601"),
        ("SYNCGATE_AUTHZ_TIMEOUT_MS", "0"),
        ("SYNCGATE_AUTHZ_CONCURRENCY", "0"),
        ("SYNCGATE_AUTHZ_CONCURRENCY", "many"),
    ] {
        let mut v = vars.clone();
        v.insert("SYNCGATE_AUTHZ_URL".into(), "http://127.0.0.1:1/authz".into());
        v.insert(key.into(), value.into());
        let err = syncgate::config::Config::from_map(&v).unwrap_err().to_string();
        assert!(err.contains(key), "{key}={value}: {err}");
    }
    vars.insert("SYNCGATE_AUTHZ_NAMESPACES".into(), "doc".into());
    let err = syncgate::config::Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.contains("SYNCGATE_AUTHZ_URL is not"), "{err}");
}

/// How the test hook answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `{"allow":true}` for channels ending in `ok`, `{"allow":false}` otherwise, after `delay_ms`.
    Decide { delay_ms: u64 },
    /// Never answers in time.
    Hang,
    /// 200 with a body that is not a decision.
    Garbage,
}

/// A local authorization hook on 127.0.0.1:0: counts requests, keeps their bodies and
/// `Authorization` headers, answers as its mode says.
struct TestHook {
    url: String,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestHook {
    async fn start(mode: Mode) -> TestHook {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/authz", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, s) = (count.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                let (c, s) = (c.clone(), s.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Head, then Content-Length bytes of body.
                    let (head, body) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            let Ok(n) = sock.read(&mut chunk).await else { return };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                        break (head, buf[end + 4..end + 4 + len].to_vec());
                    };
                    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let auth = head
                        .lines()
                        .find_map(|l| l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: ")))
                        .unwrap_or("")
                        .to_string();
                    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    s.lock().unwrap().push((auth, req.clone()));
                    let answer = match mode {
                        Mode::Decide { delay_ms } => {
                            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                            let ok = req["channel"].as_str().is_some_and(|c| c.ends_with("ok"));
                            json!({"allow": ok}).to_string()
                        }
                        Mode::Hang => {
                            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                            return;
                        }
                        Mode::Garbage => "{\"allow\":\"yes please\"}".to_string(),
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        TestHook { url, count, seen, task }
    }

    fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for TestHook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hook_env<'a>(url: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("SYNCGATE_AUTHZ_URL", url),
        ("SYNCGATE_AUTHZ_TOKEN", "hook-secret"),
        ("SYNCGATE_AUTHZ_NAMESPACES", "doc,feed"),
        ("SYNCGATE_API_KEY", API_KEY),
    ];
    env.extend_from_slice(extra);
    env
}

#[tokio::test]
async fn hook_allows_denies_and_caches() {
    let hook = TestHook::start(Mode::Decide { delay_ms: 50 }).await;
    let s = Server::start(&hook_env(&hook.url, &[])).await;
    let claims = json!({"channels": ["room:*"], "subscribe": ["doc:granted"]});
    let mut a = s.client_with(&rights_token("alice", claims), "d1", "").await;

    // Allowed: the hook saw the request, with its bearer token and the documented body.
    assert_eq!(a.subscribe("doc:ok").await["type"], "subscribed");
    assert_eq!(hook.count(), 1);
    let (auth, body) = hook.seen.lock().unwrap()[0].clone();
    assert_eq!(auth, "Bearer hook-secret");
    assert_eq!(body, json!({"action": "subscribe", "user_id": "alice", "device_id": "d1", "channel": "doc:ok"}));
    // Denied: forbidden, the connection stays open.
    assert_eq!(code(&a.subscribe("doc:no").await), "forbidden");
    assert_eq!(hook.count(), 2);
    // Fixed rules, claims and namespaces the hook does not govern never ask it.
    assert_eq!(a.subscribe("user").await["type"], "subscribed");
    assert_eq!(a.subscribe("dm:alice:bob").await["type"], "subscribed");
    assert_eq!(a.subscribe("room:1").await["type"], "subscribed");
    assert_eq!(a.subscribe("doc:granted").await["type"], "subscribed");
    assert_eq!(code(&a.subscribe("other:ok").await), "forbidden");
    assert_eq!(hook.count(), 2);

    // Publish is its own action: one more request, then cached.
    let mut r = s.client_with(&token_channels("bob", &["doc:*"]), "d2", "").await;
    assert_eq!(r.subscribe("doc:pubok").await["type"], "subscribed");
    for i in 0..3 {
        assert_eq!(a.request(publish("doc:pubok", &format!("p{i}"))).await["type"], "ack");
        assert_eq!(r.recv_type("event").await["channel"], "doc:pubok");
    }
    assert_eq!(code(&a.request(publish("doc:no", "x")).await), "forbidden");
    assert_eq!(hook.count(), 4);
    assert_eq!(hook.seen.lock().unwrap()[2].1["action"], "publish");

    // 100 identical subscribes (a second device of the same user, pipelined): one request.
    let mut b = s.client_with(&token("alice"), "d3", "").await;
    for _ in 0..100 {
        b.send(json!({"type": "subscribe", "channel": "doc:many-ok"})).await;
    }
    for _ in 0..100 {
        assert_eq!(b.recv_type("subscribed").await["channel"], "doc:many-ok");
    }
    // Denials are cached too; the cached subscribe decision covers presence and typing.
    for _ in 0..10 {
        assert_eq!(code(&b.subscribe("doc:no").await), "forbidden");
    }
    let p = b.request(json!({"type": "presence", "channel": "doc:many-ok", "id": "q"})).await;
    assert_eq!(p["type"], "presence", "{p}");
    assert_eq!(hook.count(), 5, "one request for the 100 subscribes, none for cached denials");
    let metrics = metrics_text(&s).await;
    assert!(metrics.contains("syncgate_authz_requests_total 5"), "{metrics}");
    assert!(metrics.contains("syncgate_authz_request_seconds_count 5"), "{metrics}");
    assert!(!metrics.contains("syncgate_authz_cache_hits_total 0\n"), "{metrics}");
    s.stop().await;
}

#[tokio::test]
async fn channels_requested_at_connect_ask_the_hook() {
    let hook = TestHook::start(Mode::Decide { delay_ms: 20 }).await;
    let s = Server::start(&hook_env(&hook.url, &[])).await;
    let mut a = s.client_with(&token("alice"), "d1", "&channel=doc:open-ok&channel=doc:open-no").await;
    let first = a.recv().await;
    assert_eq!(
        (first["type"].as_str(), first["channel"].as_str()),
        (Some("subscribed"), Some("doc:open-ok")),
        "{first}"
    );
    let second = a.recv().await;
    assert_eq!(code(&second), "forbidden", "{second}");
    assert_eq!(hook.count(), 2);
    // The allowed one is a real membership: a publish there reaches it.
    let mut b = s.client_with(&token_channels("bob", &["doc:*"]), "d2", "").await;
    assert_eq!(b.request(publish("doc:open-ok", "p")).await["type"], "ack");
    assert_eq!(a.recv_type("event").await["channel"], "doc:open-ok");
    s.stop().await;

    // A hook that does not answer: `unavailable` for that channel, the connection opens.
    let dead = TestHook::start(Mode::Hang).await;
    let s = Server::start(&hook_env(&dead.url, &[("SYNCGATE_AUTHZ_TIMEOUT_MS", "200")])).await;
    let mut c = s.client_with(&token("carol"), "d1", "&channel=feed:x").await;
    assert_eq!(code(&c.recv().await), "unavailable");
    assert_eq!(c.request(json!({"type": "ping", "id": "x"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn concurrent_identical_lookups_share_one_request() {
    let hook = TestHook::start(Mode::Decide { delay_ms: 300 }).await;
    let s = Server::start(&hook_env(&hook.url, &[])).await;
    // 20 connections of one user ask at once while the first request is in flight.
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(s.client("carol", &format!("d{i}")).await);
    }
    for c in clients.iter_mut() {
        c.send(json!({"type": "subscribe", "channel": "feed:ok", "id": "s"})).await;
    }
    for c in clients.iter_mut() {
        assert_eq!(c.recv_type("subscribed").await["channel"], "feed:ok");
    }
    assert_eq!(hook.count(), 1);
    // Another user is asked separately (the hook decides per user).
    let mut d = s.client("dave", "d1").await;
    assert_eq!(d.subscribe("feed:ok").await["type"], "subscribed");
    assert_eq!(hook.count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn hook_timeout_is_unavailable_and_traffic_flows() {
    let hook = TestHook::start(Mode::Hang).await;
    let s = Server::start(&hook_env(&hook.url, &[("SYNCGATE_AUTHZ_TIMEOUT_MS", "1500")])).await;
    let mut a = s.client("alice", "d1").await;
    let mut b = s.client("bob", "d1").await;
    let started = std::time::Instant::now();
    a.send(json!({"type": "subscribe", "channel": "doc:ok", "id": "slow"})).await;
    // While the subscribe waits for the hook, events to alice keep flowing.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for i in 0..3 {
        b.send(json!({"type": "publish", "channel": "dm:alice:bob", "event": "e", "data": i})).await;
        let e = a.recv().await;
        assert_eq!((e["type"].as_str(), e["data"].as_i64()), (Some("event"), Some(i)), "{e}");
    }
    assert!(started.elapsed() < std::time::Duration::from_millis(1400), "events waited for the hook");
    let refused = a.recv_type("error").await;
    assert_eq!((refused["code"].as_str(), refused["id"].as_str()), (Some("unavailable"), Some("slow")), "{refused}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
    // The connection stays open; a failure is not cached (it asks again).
    assert_eq!(a.request(json!({"type": "ping", "id": "x"})).await["type"], "pong");
    assert_eq!(hook.count(), 1);
    let metrics = metrics_text(&s).await;
    assert!(metrics.contains("syncgate_authz_failures_total 1"), "{metrics}");
    s.stop().await;
}

#[tokio::test]
async fn garbage_and_errors_are_unavailable() {
    let hook = TestHook::start(Mode::Garbage).await;
    let s = Server::start(&hook_env(&hook.url, &[("SYNCGATE_AUTHZ_NAMESPACES", "*")])).await;
    let mut a = s.client("alice", "d1").await;
    assert_eq!(code(&a.subscribe("anything:ok").await), "unavailable");
    assert_eq!(code(&a.request(publish("anything:ok", "p")).await), "unavailable");
    // Not cached: asked again.
    assert_eq!(code(&a.subscribe("anything:ok").await), "unavailable");
    assert_eq!(hook.count(), 3);
    drop(hook);
    // A hook that is gone (connection refused) never allows either.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/authz", l.local_addr().unwrap())
    };
    let s2 = Server::start(&hook_env(&dead, &[])).await;
    let mut b = s2.client("bob", "d1").await;
    assert_eq!(code(&b.subscribe("doc:ok").await), "unavailable");
    assert_eq!(b.request(json!({"type": "ping", "id": "x"})).await["type"], "pong");
    s.stop().await;
    s2.stop().await;
}

/// `GET /api/history` on a hook-governed channel the token does not grant asks the hook (its
/// subscribe decision): allowed → the events, denied → 403, hook unavailable → 503.
#[tokio::test]
async fn history_asks_the_hook() {
    let hook = TestHook::start(Mode::Decide { delay_ms: 10 }).await;
    let s = Server::start(&hook_env(&hook.url, &[("SYNCGATE_DURABLE_NAMESPACES", "dm,doc")])).await;
    for ch in ["doc:hist-ok", "doc:hist-no"] {
        let body = json!({"channel": ch, "event": "e", "data": {"v": 1}}).to_string();
        let (status, r) = http_json(s.addr, "POST", "/api/publish", Some(API_KEY), &body).await;
        assert_eq!(status, 200, "{r}");
    }
    let alice = token("alice");
    let (status, h) = http_json(s.addr, "GET", "/api/history?channel=doc:hist-ok", Some(&alice), "").await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["events"][0]["data"], json!({"v": 1}));
    assert_eq!(hook.seen.lock().unwrap()[0].1["action"], "subscribe");
    let (status, _) = http_json(s.addr, "GET", "/api/history?channel=doc:hist-no", Some(&alice), "").await;
    assert_eq!(status, 403);
    // Cached: the same reads ask nothing more.
    assert_eq!(http_json(s.addr, "GET", "/api/history?channel=doc:hist-ok", Some(&alice), "").await.0, 200);
    assert_eq!(hook.count(), 2);
    // A namespace the hook does not govern stays forbidden without asking.
    assert_eq!(http_json(s.addr, "GET", "/api/history?channel=other:x", Some(&alice), "").await.0, 403);
    assert_eq!(hook.count(), 2);
    s.stop().await;

    let hung = TestHook::start(Mode::Hang).await;
    let env = hook_env(&hung.url, &[("SYNCGATE_DURABLE_NAMESPACES", "dm,doc"), ("SYNCGATE_AUTHZ_TIMEOUT_MS", "300")]);
    let s = Server::start(&env).await;
    let (status, e) = http_json(s.addr, "GET", "/api/history?channel=doc:hist-ok", Some(&alice), "").await;
    assert_eq!((status, e["error"].as_str()), (503, Some("unavailable")), "{e}");
    s.stop().await;
}

/// A dead hook does not flood the log: 30 failures log one warning per second at most (the
/// binary's own log), and every failure is counted.
#[tokio::test]
async fn a_dead_hook_logs_at_most_once_a_second() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/authz", l.local_addr().unwrap())
    };
    let (child, addr, logs) = spawn_binary(&[
        ("SYNCGATE_JWT_SECRET", SECRET),
        ("SYNCGATE_AUTHZ_URL", dead.as_str()),
        ("SYNCGATE_AUTHZ_NAMESPACES", "doc"),
        ("SYNCGATE_AUTHZ_CACHE_SECS", "0"),
    ]);
    let _child = Reap(child);
    let s = Server::attach(addr.parse().unwrap());
    let mut a = s.client("alice", "d1").await;
    let started = std::time::Instant::now();
    for i in 0..30 {
        assert_eq!(code(&a.subscribe(&format!("doc:x{i}")).await), "unavailable");
    }
    let secs = started.elapsed().as_secs() as usize;
    let m = metrics_text(&s).await;
    assert!(m.contains("syncgate_authz_failures_total 30"), "{m}");
    // The log lines arrive through a pipe: give the reader thread a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let warnings = logs.try_iter().filter(|l| l.contains("authorization hook")).count();
    assert!((1..=1 + secs).contains(&warnings), "{warnings} warnings for 30 failures in {secs} s");
}
