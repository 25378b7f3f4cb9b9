//! Every limit and its close code / HTTP status, over real sockets.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[tokio::test]
async fn message_size_limit_closes_1009() {
    let s = Server::start(&[("SYNCGATE_MAX_MESSAGE_BYTES", "1000")]).await;
    let mut a = s.client("alice", "d1").await;
    assert_eq!(a.welcome["max_message_bytes"], 1000);
    let ok = json!({"type":"publish","channel":"user","event":"e","data":"x".repeat(900)}).to_string();
    assert!(ok.len() <= 1000);
    a.send_text(&ok).await;
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.recv().await["type"], "pong");
    let _ = a.ws.send(Message::binary(vec![0u8; 1001])).await;
    let r = a.recv().await;
    assert_eq!(r["code"], "too_large");
    assert_eq!(a.close_code().await, 1009);
    s.stop().await;
}

#[tokio::test]
async fn rate_limit_drops_then_closes_1008() {
    let s = Server::start(&[("SYNCGATE_MESSAGES_PER_MIN", "5")]).await;
    let mut a = s.client("alice", "d1").await;
    for i in 0..5 {
        assert_eq!(a.request(json!({"type":"ping","id":i})).await["type"], "pong");
    }
    for i in 5..10 {
        let r = a.request(json!({"type":"ping","id":i})).await;
        assert_eq!(r["code"], "rate_limited");
        assert_eq!(r["id"], i);
    }
    // The 11th message within the minute is more than twice the allowance.
    a.send(json!({"type":"ping"})).await;
    assert_eq!(a.close_code().await, 1008);
    // Other connections are unaffected.
    let mut b = s.client("bob", "d1").await;
    assert_eq!(b.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn per_user_connection_cap() {
    let s = Server::start(&[("SYNCGATE_MAX_CONNECTIONS_PER_USER", "2")]).await;
    let c1 = s.client("alice", "d1").await;
    let _c2 = s.client("alice", "d2").await;
    let r = Client::connect(&s.url(&format!("token={}", token("alice")))).await.err().unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"], "too_many_connections");
    // First-frame auth over the cap: 4009.
    let mut c = Client::connect(&s.url("")).await.unwrap();
    c.send(json!({"type":"auth","token":token("alice")})).await;
    assert_eq!(c.close_code().await, 4009);
    // Other users are unaffected; a slot frees when a connection goes (abruptly here).
    let _b = s.client("bob", "d1").await;
    drop(c1);
    let back = eventually(Duration::from_millis(2500), || async {
        Client::connect(&s.url(&format!("token={}", token("alice")))).await.ok()
    })
    .await;
    assert!(back.is_some(), "the slot was released");
    s.stop().await;
}

#[tokio::test]
async fn connect_rate_per_ip() {
    let s = Server::start(&[("SYNCGATE_CONNECT_RATE_PER_IP", "3")]).await;
    let mut statuses = Vec::new();
    let mut keep = Vec::new();
    for i in 0..5 {
        match Client::connect(&s.url(&format!("token={}&device_id=d{i}", token("alice")))).await {
            Ok(c) => keep.push(c),
            Err(r) => {
                assert_eq!(r.body["error"], "rate_limited");
                statuses.push(r.status)
            }
        }
    }
    assert_eq!(keep.len(), 3);
    assert_eq!(statuses, vec![429, 429]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(Client::connect(&s.url(&format!("token={}", token("bob")))).await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn allowed_origins() {
    let s = Server::start(&[("SYNCGATE_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let mut req = s.url(&format!("token={}", token("a"))).into_client_request().unwrap();
    req.headers_mut().insert("origin", "https://evil.example.com".parse().unwrap());
    let r = Client::connect_req(req).await.err().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"], "forbidden");
    let mut req = s.url(&format!("token={}", token("a"))).into_client_request().unwrap();
    req.headers_mut().insert("origin", "https://app.example.com".parse().unwrap());
    assert!(Client::connect_req(req).await.is_ok());
    s.stop().await;
}

#[tokio::test]
async fn heartbeat_closes_silent_peers() {
    let s = Server::start(&[("SYNCGATE_HEARTBEAT_MS", "200")]).await;
    // A raw client that completes the handshake and then never answers pings.
    let mut raw = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!(
        "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        token("alice")
    );
    raw.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    // Up to the welcome the gateway waits on its store; from then on only on its heartbeat
    // timer, so the clock is paused and jumps (no real waiting, exact timing).
    while !String::from_utf8_lossy(&seen).contains("welcome") {
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await.expect("welcomed").unwrap();
        assert!(n > 0, "closed before the welcome");
        seen.extend_from_slice(&buf[..n]);
    }
    tokio::time::pause();
    let started = tokio::time::Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    let elapsed = started.elapsed();
    // Pinged at 200 ms, silent since the welcome: closed at the 400 ms check.
    assert!(elapsed >= Duration::from_millis(350), "closed too early: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "closed too late: {elapsed:?}");
    tokio::time::resume();
    // Close frame with 4008 (0x0FA8) was sent before the socket closed.
    assert!(seen.windows(4).any(|w| w == [0x88, 0x13, 0x0f, 0xa8]), "no 4008 close frame");
    // A client that answers pings (tungstenite does) stays connected.
    let mut a = s.client("bob", "d1").await;
    // (It reads, so its library answers the server's pings.)
    a.silent(700).await;
    assert_eq!(a.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn slow_consumer_is_closed_1013() {
    let s = Server::start(&[("SYNCGATE_OUTBOUND_QUEUE", "16"), ("SYNCGATE_MESSAGES_PER_MIN", "100000")]).await;
    let mut fast = s.client("alice", "fast").await;
    // The slow device never reads.
    let mut slow = s.client("alice", "slow").await;
    let payload = "y".repeat(60_000);
    let mut closed = false;
    for i in 0..2000 {
        fast.send(json!({"type":"publish","channel":"user","event":"bulk","data":payload, "id": i})).await;
        let r = fast.recv().await;
        assert_eq!(r["type"], "ack");
        if i % 50 == 49 && s_user_conns(&s).await == 1 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow consumer was not disconnected");
    // It receives (after what was already in flight) a 1013 close.
    assert_eq!(slow.close_code_within(Duration::from_secs(10)).await, 1013);
    assert_eq!(fast.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

/// How many of alice's connections are alive, observed through presence on the user channel.
async fn s_user_conns(s: &Server) -> usize {
    let mut probe = s.client_with(&token("alice"), "probe", "").await;
    let p = probe.request(json!({"type":"presence","channel":"user"})).await;
    let n = p["members"].as_array().unwrap().len();
    drop(probe);
    tokio::time::sleep(Duration::from_millis(20)).await;
    n - 1
}

#[tokio::test]
async fn slow_consumer_with_default_limits_is_closed_by_the_byte_budget() {
    let s = Server::start(&[]).await;
    let mut fast = s.client("carol", "fast").await;
    let mut slow = s.client("carol", "slow").await;
    let payload = "z".repeat(256 * 1024);
    let mut closed = false;
    // Stays within the default 300 messages/minute.
    for i in 0..250 {
        fast.send(json!({"type":"publish","channel":"user","event":"bulk","data":payload,"id":i})).await;
        assert_eq!(fast.recv().await["type"], "ack");
        if i % 10 == 9 {
            let p = fast.request(json!({"type":"presence","channel":"user"})).await;
            if p["members"].as_array().unwrap().len() == 1 {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a reader that never reads must be cut off");
    assert_eq!(slow.close_code_within(Duration::from_secs(20)).await, 1013);
    s.stop().await;
}

#[tokio::test]
async fn large_channels_send_no_join_leave() {
    let s = Server::start(&[("SYNCGATE_PUBLIC_NAMESPACES", "live"), ("SYNCGATE_JOIN_LEAVE_MAX_MEMBERS", "2")]).await;
    let mut a = s.client("a", "d").await;
    let mut b = s.client("b", "d").await;
    a.subscribe("live:show").await;
    b.subscribe("live:show").await;
    assert_eq!(a.recv().await["type"], "join");
    let mut c = s.client("c", "d").await;
    c.subscribe("live:show").await;
    a.silent(300).await;
    b.silent(10).await;
    let p = c.request(json!({"type":"presence","channel":"live:show"})).await;
    assert_eq!(p["members"].as_array().unwrap().len(), 3);
    s.stop().await;
}
