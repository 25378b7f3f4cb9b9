//! Several instances over a real Redis (127.0.0.1:6379, started by scripts/test.sh): cross-instance
//! fan-out, presence, caps, external publishes, subscription hygiene, the server API, SIGKILL.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, PubsubInterface, Value};

type RedisClient = fred::prelude::Client;
use serde_json::json;

use crate::common::*;

pub const REDIS: &str = "redis://127.0.0.1:6379";
const API_KEY: &str = "test-api-key-0123456789";

/// A Redis key prefix of its own per test, so parallel tests never see each other.
pub fn prefix() -> String {
    format!("sgtest:{}:", syncgate::util::random_hex(6))
}

async fn instance(prefix: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("REDIS_URL", REDIS),
        ("SYNCGATE_REDIS_PREFIX", prefix),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
        ("SYNCGATE_API_KEY", API_KEY),
        ("SYNCGATE_PRESENCE_TTL_MS", "1000"),
    ];
    env.extend_from_slice(extra);
    Server::start(&env).await
}

pub async fn redis_client() -> RedisClient {
    let client = Builder::from_config(Config::from_url(REDIS).unwrap()).build().unwrap();
    client.init().await.expect("Redis at 127.0.0.1:6379 (scripts/test.sh starts it)");
    client
}

async fn numsub(client: &RedisClient, channel: &str) -> i64 {
    let v: Vec<Value> = client.pubsub_numsub(channel).await.unwrap();
    v.get(1).and_then(|v| v.as_i64()).unwrap_or(0)
}

async fn http(s: &Server, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    http_json(s.addr, method, path, key, body).await
}

#[tokio::test]
async fn cross_instance_fan_out_with_sender_exclusion() {
    let p = prefix();
    let (s1, s2, s3) = (instance(&p, &[]).await, instance(&p, &[]).await, instance(&p, &[]).await);
    let mut phone = s1.client("alice", "phone").await;
    let mut laptop = s2.client("alice", "laptop").await;
    let mut tablet = s3.client("alice", "tablet").await;
    let mut bob = s2.client("bob", "d").await;
    let ack = phone.request(json!({"type":"publish","channel":"user","event":"clip","data":"x","id":1})).await;
    assert_eq!(ack["type"], "ack");
    for d in [&mut laptop, &mut tablet] {
        let e = d.recv().await;
        assert_eq!(e["event"], "clip");
        assert_eq!(e["from"], json!({"user_id":"alice","device_id":"phone"}));
    }
    phone.silent(300).await;
    bob.silent(50).await;

    // Binary frames cross instances verbatim too.
    use futures_util::SinkExt;
    laptop.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(phone.recv().await, json!({"binary":[1,2,3]}));
    assert_eq!(tablet.recv().await, json!({"binary":[1,2,3]}));

    // A room spread over three instances; exactly one delivery each.
    let mut members = vec![s1.client("m1", "d").await, s2.client("m2", "d").await, s3.client("m3", "d").await];
    for m in &mut members {
        assert_eq!(m.subscribe("room:x").await["type"], "subscribed");
    }
    // Drain the join announcements.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for m in &mut members {
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(50), futures_util::StreamExt::next(&mut m.ws)).await
        {}
    }
    for i in 0..20 {
        members[0].send(json!({"type":"publish","channel":"room:x","event":"n","data":i})).await;
    }
    for m in members.iter_mut().skip(1) {
        for i in 0..20 {
            let e = m.recv_type("event").await;
            assert_eq!(e["data"], i, "in order, exactly once");
        }
        m.silent(300).await;
    }
    members[0].silent(50).await;
    for s in [s1, s2, s3] {
        s.stop().await;
    }
}

#[tokio::test]
async fn presence_join_leave_and_caps_across_instances() {
    let p = prefix();
    let s1 = instance(&p, &[("SYNCGATE_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let s2 = instance(&p, &[("SYNCGATE_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let mut a = s1.client("a", "d1").await;
    a.subscribe("room:p").await;
    let mut b = s2.client("b", "d1").await;
    b.subscribe("room:p").await;
    assert_eq!(a.recv().await, json!({"type":"join","channel":"room:p","user_id":"b","device_id":"d1"}));
    // b's second connection (same device) on the other instance is not a new join.
    let mut b2 = s1.client("b", "d1").await;
    b2.subscribe("room:p").await;
    a.silent(400).await;
    let pr = a.request(json!({"type":"presence","channel":"room:p"})).await;
    assert_eq!(pr["members"], json!([{"user_id":"a","device_id":"d1"},{"user_id":"b","device_id":"d1"}]));

    // Cap 2 counts b's connections on both instances.
    let r = Client::connect(&s2.url(&format!("token={}", token("b")))).await.err().unwrap();
    assert_eq!(r.status, 429);
    let mut c = Client::connect(&s1.url("")).await.unwrap();
    c.send(json!({"type":"auth","token":token("b")})).await;
    assert_eq!(c.close_code().await, 4009);

    // Leave only when b's last connection (on either instance) goes.
    drop(b);
    a.silent(500).await;
    drop(b2);
    assert_eq!(a.recv().await, json!({"type":"leave","channel":"room:p","user_id":"b","device_id":"d1"}));
    // And the cap slot came back.
    let back = eventually(Duration::from_secs(2), || async {
        Client::connect(&s2.url(&format!("token={}", token("b")))).await.ok()
    })
    .await;
    assert!(back.is_some(), "the cap slot came back");
    s1.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn external_publish_and_subscription_hygiene() {
    let p = prefix();
    let s1 = instance(&p, &[]).await;
    let redis = redis_client().await;
    let key = format!("{p}room:ext");
    assert_eq!(numsub(&redis, &key).await, 0);
    let mut m1 = s1.client("m1", "d").await;
    let mut m2 = s1.client("m2", "d").await;
    m1.subscribe("room:ext").await;
    m2.subscribe("room:ext").await;
    // Two local members, one Redis subscription.
    assert_eq!(numsub(&redis, &key).await, 1);

    let _: i64 = redis.publish(&key, r#"{"event":"message:created","data":{"id":7,"text":"hi"}}"#).await.unwrap();
    for m in [&mut m1, &mut m2] {
        let e = m.recv_type("event").await;
        assert_eq!(e["type"], "event");
        assert_eq!(e["channel"], "room:ext");
        assert_eq!(e["event"], "message:created");
        assert_eq!(e["data"], json!({"id":7,"text":"hi"}));
        assert_eq!(e["from"], json!({"user_id":"server"}));
    }
    // Garbage from outside is ignored; the instance keeps serving.
    let _: i64 = redis.publish(&key, "not json").await.unwrap();
    // (m2's `join` travels through Redis and may arrive after the event: skip to the pong.)
    m1.send(json!({"type":"ping"})).await;
    assert_eq!(m1.recv_type("pong").await["type"], "pong");

    m1.request(json!({"type":"unsubscribe","channel":"room:ext"})).await;
    assert_eq!(numsub(&redis, &key).await, 1);
    drop(m2);
    let gone = eventually(Duration::from_secs(2), || async { (numsub(&redis, &key).await == 0).then_some(()) }).await;
    assert!(gone.is_some(), "unsubscribed after the last local member left");
    s1.stop().await;
}

#[tokio::test]
async fn server_api_publish_and_disconnect_on_every_instance() {
    let p = prefix();
    let s1 = instance(&p, &[]).await;
    let s2 = instance(&p, &[]).await;
    let mut a1 = s1.client("alice", "phone").await;
    let mut a2 = s2.client("alice", "laptop").await;
    let mut r = s2.client("r", "d").await;
    r.subscribe("room:api").await;

    let (status, body) =
        http(&s1, "POST", "/api/publish", Some(API_KEY), r#"{"channel":"room:api","event":"deploy","data":{"v":2}}"#)
            .await;
    assert_eq!(status, 200, "{body}");
    let e = r.recv().await;
    assert_eq!((e["event"].as_str(), e["from"].clone()), (Some("deploy"), json!({"user_id":"server"})));
    assert_eq!(e["data"], json!({"v":2}));

    assert_eq!(http(&s1, "POST", "/api/publish", Some("wrong-key-wrong-key"), "{}").await.0, 401);
    assert_eq!(http(&s1, "POST", "/api/publish", None, "{}").await.0, 401);
    for bad in [
        "not json",
        r#"{"channel":"room:api"}"#,
        r#"{"channel":"bad name","event":"e"}"#,
        r#"{"channel":5,"event":"e"}"#,
    ] {
        let (status, body) = http(&s1, "POST", "/api/publish", Some(API_KEY), bad).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].is_string());
    }

    let (status, _) = http(&s2, "POST", "/api/disconnect", Some(API_KEY), r#"{"user_id":"alice"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(a1.close_code().await, 4003);
    assert_eq!(a2.close_code().await, 4003);
    assert_eq!(r.request(json!({"type":"ping"})).await["type"], "pong");
    assert_eq!(http(&s2, "POST", "/api/disconnect", Some(API_KEY), r#"{"device_id":"x"}"#).await.0, 400);

    let (status, body) = http(&s1, "GET", "/ready", None, "").await;
    assert_eq!((status, body["bus"].as_str()), (200, Some("up")));
    s1.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn server_api_on_the_local_bus_and_off_without_a_key() {
    let s = Server::start(&[("SYNCGATE_API_KEY", API_KEY), ("SYNCGATE_PUBLIC_NAMESPACES", "room")]).await;
    let mut m = s.client("m", "d").await;
    m.subscribe("room:l").await;
    let (status, _) =
        http(&s, "POST", "/api/publish", Some(API_KEY), r#"{"channel":"room:l","event":"e","data":[1]}"#).await;
    assert_eq!(status, 200);
    let e = m.recv().await;
    assert_eq!(e["from"], json!({"user_id":"server"}));
    let (status, _) = http(&s, "POST", "/api/disconnect", Some(API_KEY), r#"{"user_id":"m","device_id":"d"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(m.close_code().await, 4003);
    let (status, body) = http(&s, "GET", "/ready", None, "").await;
    assert_eq!((status, body["bus"].as_str()), (200, Some("local")));
    s.stop().await;

    let s = Server::start(&[]).await;
    assert_eq!(http(&s, "POST", "/api/publish", Some(API_KEY), "{}").await.0, 404);
    assert_eq!(http(&s, "POST", "/api/disconnect", None, "{}").await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn members_of_a_killed_instance_leave_within_the_ttl() {
    let p = prefix();
    let s1 = instance(&p, &[("SYNCGATE_PRESENCE_TTL_MS", "2000")]).await;
    let mut watcher = s1.client("w", "d").await;
    watcher.subscribe("room:k").await;
    // A second instance as a real process, killed with SIGKILL.
    let dir = temp_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_syncgate"))
        .env_clear()
        .env("SYNCGATE_LISTEN", "127.0.0.1:0")
        .env("SYNCGATE_DATA_DIR", &dir)
        .env("SYNCGATE_JWT_SECRET", SECRET)
        .env("REDIS_URL", REDIS)
        .env("SYNCGATE_REDIS_PREFIX", &p)
        .env("SYNCGATE_PUBLIC_NAMESPACES", "room")
        // 2 s, not less: with the whole suite running in parallel a busy instance's heartbeat
        // can be late, and the reaper would then (rightly) declare it dead too early.
        .env("SYNCGATE_PRESENCE_TTL_MS", "2000")
        .env("SYNCGATE_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = crate::lifecycle::read_addr(child.stderr.take().unwrap());
    let mut victim = Client::connect(&format!("ws://{addr}/ws?token={}&device_id=d", token("v"))).await.unwrap();
    assert_eq!(victim.recv().await["type"], "welcome");
    victim.subscribe("room:k").await;
    assert_eq!(watcher.recv().await["type"], "join");
    child.kill().unwrap();
    let killed = std::time::Instant::now();
    let _ = child.wait();
    let leave = tokio::time::timeout(Duration::from_millis(3000), watcher.recv()).await.expect("leave within the TTL");
    assert_eq!(leave, json!({"type":"leave","channel":"room:k","user_id":"v","device_id":"d"}));
    assert!(killed.elapsed() <= Duration::from_millis(2400), "{:?}", killed.elapsed());
    let pr = watcher.request(json!({"type":"presence","channel":"room:k"})).await;
    assert_eq!(pr["members"], json!([{"user_id":"w","device_id":"d"}]));
    s1.stop().await;
}

/// A private redis-server on a free port, so the restart cannot disturb other tests.
struct OwnRedis {
    port: u16,
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { port, child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(s: &Server, want: u16) {
    let answered = eventually(Duration::from_secs(10), || async {
        (http(s, "GET", "/ready", None, "").await.0 == want).then_some(())
    })
    .await;
    assert!(answered.is_some(), "/ready never answered {want}");
}

#[tokio::test]
async fn redis_restart_mid_test_resumes_delivery_without_duplicates() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let p = prefix();
    let s1 = instance(&p, &[("REDIS_URL", url.as_str())]).await;
    let s2 = instance(&p, &[("REDIS_URL", url.as_str())]).await;
    let mut tx = s1.client("alice", "a").await;
    let mut rx = s2.client("alice", "b").await;
    let mut local = s1.client("alice", "c").await;
    tx.send(json!({"type":"publish","channel":"user","event":"n","data":0})).await;
    assert_eq!(rx.recv_type("event").await["data"], 0);
    assert_eq!(local.recv_type("event").await["data"], 0);

    assert!(metrics_text(&s1).await.contains("syncgate_redis_up 1"));
    redis.kill();
    wait_ready(&s1, 503).await;
    assert!(metrics_text(&s1).await.contains("syncgate_redis_up 0"));
    // Local traffic goes on while Redis is down.
    tx.send(json!({"type":"publish","channel":"user","event":"n","data":1})).await;
    assert_eq!(local.recv_type("event").await["data"], 1);
    assert_eq!(tx.request(json!({"type":"ping"})).await["type"], "pong");

    let _redis = OwnRedis::start(port);
    wait_ready(&s1, 200).await;
    wait_ready(&s2, 200).await;
    // Resubscribed: delivery resumes, exactly once per message.
    for i in 2..7 {
        tx.send(json!({"type":"publish","channel":"user","event":"n","data":i})).await;
    }
    // Message 1 (sent while Redis was down) may still arrive if the bus's in-flight batch was
    // retried within its 2 s command timeout; nothing may arrive twice.
    let mut got = Vec::new();
    while !got.contains(&6) {
        let e = rx.recv_type("event").await;
        got.push(e["data"].as_i64().unwrap());
    }
    rx.silent(500).await;
    let unique: std::collections::HashSet<i64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "duplicates: {got:?}");
    assert_eq!(got.iter().filter(|d| **d >= 2).copied().collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
    let m = metrics_text(&s2).await;
    assert!(m.contains("syncgate_redis_up 1") && m.contains("syncgate_redis_reconnects_total"), "{m}");
    s1.stop().await;
    s2.stop().await;
}

/// Device revocation across instances: two gateways share one PostgreSQL database and one Redis.
/// The device is revoked through instance A; its connection on instance B closes with 4003
/// within a second (bus control message), and B refuses it afterwards.
#[tokio::test]
async fn device_revocation_reaches_every_instance() {
    let p = prefix();
    let db = crate::accounts::fresh_pg_database().await;
    let a = instance(&p, &[("DATABASE_URL", db.as_str())]).await;
    let b = instance(&p, &[("DATABASE_URL", db.as_str())]).await;
    let (status, r) =
        http(&a, "POST", "/register", None, r#"{"email":"x@example.com","password":"cross instance"}"#).await;
    assert_eq!(status, 201, "{r}");
    let access = r["access_token"].as_str().unwrap().to_string();
    // Tokens are bound to their device: one login per device.
    let login = |device: &str| {
        let body = json!({"email":"x@example.com","password":"cross instance","device_id": device}).to_string();
        let b = &b;
        async move { http(b, "POST", "/login", None, &body).await.1["access_token"].as_str().unwrap().to_string() }
    };
    let phone = login("phone").await;
    let laptop = login("laptop").await;
    let mut phone_on_b = Client::connect(&b.url(&format!("token={phone}&device_id=phone"))).await.unwrap();
    assert_eq!(phone_on_b.recv().await["type"], "welcome");
    let mut laptop_on_b = Client::connect(&b.url(&format!("token={laptop}&device_id=laptop"))).await.unwrap();
    assert_eq!(laptop_on_b.recv().await["type"], "welcome");

    let started = std::time::Instant::now();
    let (status, r) = http(&a, "DELETE", "/api/devices/phone", Some(&access), "").await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(phone_on_b.close_code_within(Duration::from_secs(1)).await, 4003);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(laptop_on_b.request(json!({"type":"ping"})).await["type"], "pong");
    let refused = Client::connect(&b.url(&format!("token={phone}&device_id=phone"))).await.err().unwrap();
    assert_eq!(refused.status, 403);
    a.stop().await;
    b.stop().await;
}

/// Each instance's `connections` in `/api/status`, by instance id, as `s` reports them.
async fn instance_connections(s: &Server) -> (String, std::collections::BTreeMap<String, u64>) {
    let (status, v) = http(s, "GET", "/api/status", Some(API_KEY), "").await;
    assert_eq!(status, 200, "{v}");
    let mut me = String::new();
    let mut all = std::collections::BTreeMap::new();
    for i in v["cluster"]["instances"].as_array().expect("instances") {
        let id = i["instance"].as_str().expect("instance id").to_string();
        if i["self"] == true {
            me = id.clone();
        }
        all.insert(id, i["connections"].as_u64().expect("connections"));
    }
    (me, all)
}

#[tokio::test]
async fn status_reports_every_instances_connections() {
    let p = prefix();
    let servers = [instance(&p, &[]).await, instance(&p, &[]).await, instance(&p, &[]).await];
    // 1, 2 and 3 connections on the three instances.
    let mut clients = Vec::new();
    for (n, s) in servers.iter().enumerate() {
        for d in 0..=n {
            clients.push((n, s.client(&format!("u{n}"), &format!("d{d}")).await));
        }
    }
    let mut ids = Vec::new();
    for s in &servers {
        ids.push(instance_connections(s).await.0);
    }
    assert!(ids.iter().all(|i| !i.is_empty()), "each instance lists itself: {ids:?}");
    let want =
        |counts: [u64; 3]| -> std::collections::BTreeMap<String, u64> { ids.iter().cloned().zip(counts).collect() };
    // Heartbeats carry the counts (every SYNCGATE_PRESENCE_TTL_MS / 5): poll, bounded.
    for expected in [[1, 2, 3], [1, 0, 3]] {
        if expected[1] == 0 {
            clients.retain(|(n, _)| *n != 1);
        }
        for s in &servers {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let seen = instance_connections(s).await.1;
                if seen == want(expected) {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "expected {:?}, saw {seen:?}", want(expected));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(clients);
    for s in servers {
        s.stop().await;
    }
}

/// Returning from `server::run` stops every task it started, the Redis bus's included: a
/// stopped instance no longer refreshes its heartbeat.
#[tokio::test]
async fn a_stopped_instance_stops_heartbeating() {
    use fred::prelude::SortedSetsInterface;
    let p = prefix();
    let s = instance(&p, &[]).await;
    let redis = redis_client().await;
    let key = format!("{p}instances");
    let scores = |redis: RedisClient, key: String| async move {
        let v: Vec<(String, f64)> = redis.zrange(&key, 0, -1, None, false, None, true).await.unwrap();
        v
    };
    let alive = eventually(Duration::from_secs(2), || async {
        Some(scores(redis.clone(), key.clone()).await).filter(|v| !v.is_empty())
    })
    .await;
    assert_eq!(alive.map(|v| v.len()), Some(1), "the running instance heartbeats");
    s.stop().await;
    let after_stop = scores(redis.clone(), key.clone()).await;
    // The heartbeat runs every half presence TTL (500 ms here): three periods of silence.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(scores(redis.clone(), key.clone()).await, after_stop, "a stopped instance kept heartbeating");
}

/// One instance id, written one way: `/api/status`'s `instance`, the `self` entry of the
/// cluster's instances, and the prefix of every connection id on that instance are the same.
#[tokio::test]
async fn one_instance_id_everywhere() {
    let p = prefix();
    let s = instance(&p, &[]).await;
    let mut c = s.client("idu", "d").await;
    let (status, v) = http(&s, "GET", "/api/status", Some(API_KEY), "").await;
    assert_eq!(status, 200);
    let id = v["instance"].as_str().expect("instance").to_string();
    assert_eq!(id.len(), 16, "{id}");
    let me = eventually(Duration::from_secs(2), || async {
        let (_, v) = http(&s, "GET", "/api/status", Some(API_KEY), "").await;
        v["cluster"]["instances"].as_array()?.iter().find(|i| i["self"] == true).map(|i| i["instance"].clone())
    })
    .await;
    assert_eq!(me, Some(json!(id)));
    let conn = c.request(json!({"type":"ping"})).await;
    assert_eq!(conn["type"], "pong");
    let welcome_id = {
        let mut c2 = Client::connect(&s.url(&format!("token={}&device_id=x", token("idu")))).await.unwrap();
        c2.recv().await["conn_id"].as_str().unwrap().to_string()
    };
    assert!(welcome_id.starts_with(&format!("{id}-")), "{welcome_id} vs {id}");
    s.stop().await;
}

/// A graceful stop leaves the cluster at once: the others announce the leave well within the
/// presence TTL, and the instance leaves no presence or slot keys behind.
#[tokio::test]
async fn a_stopped_instance_leaves_at_once_and_cleans_up() {
    let p = prefix();
    let ttl = [("SYNCGATE_PRESENCE_TTL_MS", "30000")];
    let s1 = instance(&p, &ttl).await;
    let s2 = instance(&p, &ttl).await;
    let mut watcher = s1.client("w", "d").await;
    watcher.subscribe("room:g").await;
    let mut leaving = s2.client("v", "d").await;
    leaving.subscribe("room:g").await;
    assert_eq!(watcher.recv_type("join").await["user_id"], "v");
    let stopped = std::time::Instant::now();
    s2.stop().await;
    let leave = tokio::time::timeout(Duration::from_secs(5), watcher.recv_type("leave")).await.expect("a leave");
    assert_eq!(leave["user_id"], "v");
    assert!(stopped.elapsed() < Duration::from_secs(10), "{:?}", stopped.elapsed());
    drop(leaving);
    drop(watcher);
    s1.stop().await;
    let redis = redis_client().await;
    let left: Vec<Value> = redis.custom(fred::cmd!("KEYS"), vec![format!("{p}*")]).await.unwrap();
    let left: Vec<String> = left.into_iter().filter_map(|v| v.as_string()).collect();
    assert!(left.iter().all(|k| !k.contains("pc:") && !k.contains("uc:") && !k.contains("pi:")), "{left:?}");
}
