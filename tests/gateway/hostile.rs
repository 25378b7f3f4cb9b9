//! Hostile input and slow peers, performed as attacks against the real binary or `server::run`:
//! nesting bombs before and after auth, nesting at and over the limit (frames, HTTP bodies,
//! Redis payloads), close codes that must arrive with the client's frames still in flight,
//! stalled readers, a slow JWKS during re-auth, slowloris, and the echo endpoint.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{http_json, metrics_text, spawn_binary, token, Client, Reap, Server, SECRET};

/// `depth` nested arrays around `1`.
fn nested(depth: usize) -> String {
    "[".repeat(depth) + "1" + &"]".repeat(depth)
}

fn bomb() -> String {
    "[".repeat(400_000) + &"]".repeat(400_000)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Reads until a close frame: its code, or `Err` when the connection ended without one (1006).
async fn close_code(ws: &mut Client, wait: Duration) -> Result<u16, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.ws.next()).await {
            Err(_) => return Err("no close within the wait".into()),
            Ok(Some(Ok(Message::Close(Some(f))))) => return Ok(f.code.into()),
            Ok(Some(Ok(Message::Close(None)))) => return Ok(1005),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("1006: {e}")),
            Ok(None) => return Err("1006: ended without a close frame".into()),
        }
    }
}

/// The next `event` frame as raw text (serde_json, the tests' parser, stops at 127 levels).
async fn recv_event_text(c: &mut Client) -> String {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await.expect("a frame").unwrap().unwrap();
        if let Message::Text(t) = m {
            if t.starts_with(r#"{"type":"event""#) {
                return t.to_string();
            }
        }
    }
}

/// Feeds every frame and flushes once: all of them are in flight when the server reacts.
async fn send_burst(c: &mut Client, frames: Vec<Message>) {
    for f in frames {
        if c.ws.feed(f).await.is_err() {
            return;
        }
    }
    let _ = c.ws.flush().await;
}

#[tokio::test]
async fn nesting_bomb_before_and_after_auth_leaves_the_process_serving() {
    let (child, addr, _logs) = spawn_binary(&[("SYNCGATE_JWT_SECRET", SECRET)]);
    let child = Reap(child);
    let pid = child.0.id();
    let s = Server::attach(addr.parse().unwrap());
    // A bystander pair that must not notice anything.
    let mut a = s.client("bystander", "a").await;
    let mut b = s.client("bystander", "b").await;
    let mut attacker = s.client("attacker", "x").await;

    let mut rss = Vec::new();
    for round in 0..40 {
        // Before auth: the bomb is the first frame → 4001, as for any non-auth first frame.
        let mut pre = Client::connect(&s.url("")).await.unwrap();
        pre.send_text(&bomb()).await;
        assert_eq!(close_code(&mut pre, Duration::from_secs(5)).await, Ok(4001), "round {round}");
        // After auth: bad_request, and the connection stays open.
        attacker
            .send_text(&format!(
                r#"{{"type":"publish","id":{round},"channel":"user:attacker","event":"e","data":{}}}"#,
                bomb()
            ))
            .await;
        let e = attacker.recv().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "bad_request");
        assert_eq!(e["id"], round, "the id is read when it precedes the bomb");
        assert!(e["message"].as_str().unwrap().contains("128"), "{e}");
        if round == 9 || round == 39 {
            rss.push(rss_kib(pid));
        }
    }
    assert_eq!(attacker.request(json!({"type":"ping","id":1})).await["type"], "pong");
    a.send(json!({"type":"publish","channel":"user:bystander","event":"still","data":1})).await;
    assert_eq!(b.recv_type("event").await["event"], "still");
    let (status, _) = http_json(s.addr, "GET", "/health", None, "").await;
    assert_eq!(status, 200);
    // Memory flat: 30 more bombs after the first 10 cost less than 8 MiB.
    assert!(rss[1] < rss[0] + 8 * 1024, "RSS grew from {} KiB to {} KiB", rss[0], rss[1]);
    drop(child);
}

#[tokio::test]
async fn nesting_at_the_limit_is_delivered_and_over_it_refused_everywhere() {
    let api_key = "hostile-api-key-0123456789";
    let s = Server::start(&[("SYNCGATE_API_KEY", api_key), ("SYNCGATE_PUBLIC_NAMESPACES", "room")]).await;
    let mut a = s.client("alice", "a").await;
    let mut b = s.client("alice", "b").await;
    // The frame is depth 1; `data` may nest 127 more levels (128 in all).
    let data = nested(127);
    a.send_text(&format!(r#"{{"type":"publish","channel":"user:alice","event":"deep","data":{data}}}"#)).await;
    let e = recv_event_text(&mut b).await;
    assert!(e.contains(&format!(r#""event":"deep","data":{data},"#)), "delivered unchanged: {e}");
    let over = nested(128);
    a.send_text(&format!(r#"{{"type":"publish","id":"x","channel":"user:alice","event":"deep","data":{over}}}"#)).await;
    let e = a.recv_type("error").await;
    assert_eq!((e["code"].as_str(), e["id"].as_str()), (Some("bad_request"), Some("x")), "{e}");
    b.silent(200).await;

    // HTTP bodies: the server API and the account endpoints.
    let at = format!(r#"{{"channel":"user:alice","event":"api","data":{}}}"#, nested(127));
    let (status, body) = http_json(s.addr, "POST", "/api/publish", Some(api_key), &at).await;
    assert_eq!(status, 200, "{body}");
    assert!(recv_event_text(&mut b).await.contains(&format!(r#""data":{},"#, nested(127))));
    let over = format!(r#"{{"channel":"user:alice","event":"api","data":{}}}"#, nested(128));
    let (status, body) = http_json(s.addr, "POST", "/api/publish", Some(api_key), &over).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "bad_request");
    assert!(body["message"].as_str().unwrap().contains("deeper than 128"), "{body}");
    for path in ["/register", "/login", "/token/refresh", "/forgot-password"] {
        let (status, body) = http_json(s.addr, "POST", path, None, &bomb()).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")), "{path}: {body}");
    }
    // `a` is still served (it also got the server's deep event, read raw).
    assert!(recv_event_text(&mut a).await.contains(r#""event":"api""#));
    assert_eq!(a.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn deep_redis_payloads_are_dropped_and_counted() {
    use fred::prelude::PubsubInterface;
    let prefix = format!("sgtest:{}:", syncgate::util::random_hex(6));
    let s = Server::start(&[
        ("REDIS_URL", crate::cluster::REDIS),
        ("SYNCGATE_REDIS_PREFIX", prefix.as_str()),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
    ])
    .await;
    let mut m = s.client("m", "d").await;
    m.subscribe("room:ext").await;
    let redis = crate::cluster::redis_client().await;
    let key = format!("{prefix}room:ext");
    let _: i64 = redis.publish(&key, format!(r#"{{"event":"deep","data":{}}}"#, bomb())).await.unwrap();
    let _: i64 = redis.publish(&key, format!(r#"{{"event":"over","data":{}}}"#, nested(128))).await.unwrap();
    let _: i64 = redis.publish(&key, format!(r#"{{"event":"at","data":{}}}"#, nested(127))).await.unwrap();
    let e = recv_event_text(&mut m).await;
    assert!(
        e.contains(&format!(r#""event":"at","data":{},"#, nested(127))),
        "the deep ones are dropped, the one at the limit delivered: {e}"
    );
    assert_eq!(metric(&metrics_text(&s).await, "syncgate_bus_rejected_total"), 2.0);
    assert_eq!(m.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

/// The close code arrives every time, with the client's frames still in flight.
#[tokio::test]
async fn close_codes_arrive_with_frames_in_flight() {
    let s = Server::start(&[
        ("SYNCGATE_MAX_MESSAGE_BYTES", "4096"),
        ("SYNCGATE_MAX_CONNECTIONS_PER_USER", "1"),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
    ])
    .await;
    let filler = format!(r#"{{"type":"publish","channel":"room:x","event":"e","data":"{}"}}"#, "y".repeat(3000));
    let mut failures = Vec::new();
    for i in 0..50 {
        // 4001: an unauthenticated client sends ping, subscribe, publish back to back.
        let mut c = Client::connect(&s.url("")).await.unwrap();
        let mut frames =
            vec![Message::text(r#"{"type":"ping"}"#), Message::text(r#"{"type":"subscribe","channel":"room:x"}"#)];
        frames.extend((0..20).map(|_| Message::text(filler.clone())));
        send_burst(&mut c, frames).await;
        match close_code(&mut c, Duration::from_secs(5)).await {
            Ok(4001) => {}
            other => failures.push(format!("4001 #{i}: {other:?}")),
        }
        // 1009: an oversized frame followed by more data.
        let mut c = s.client(&format!("big{i}"), "d").await;
        let mut frames = vec![Message::text(format!(r#"{{"type":"publish","data":"{}"}}"#, "z".repeat(8000)))];
        frames.extend((0..20).map(|_| Message::text(filler.clone())));
        send_burst(&mut c, frames).await;
        match close_code(&mut c, Duration::from_secs(5)).await {
            Ok(1009) => {}
            other => failures.push(format!("1009 #{i}: {other:?}")),
        }
    }
    for i in 0..10 {
        // 4009: over the per-user cap, decided at first-frame auth, frames in flight.
        let user = format!("capped{i}");
        let _first = s.client(&user, "one").await;
        let mut c = Client::connect(&s.url("device_id=two")).await.unwrap();
        let mut frames = vec![Message::text(json!({"type":"auth","token":token(&user)}).to_string())];
        frames.extend((0..20).map(|_| Message::text(filler.clone())));
        send_burst(&mut c, frames).await;
        match close_code(&mut c, Duration::from_secs(5)).await {
            Ok(4009) => {}
            other => failures.push(format!("4009 #{i}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "close codes lost: {failures:?}");
    s.stop().await;
}

/// 1008 (rate abuse), 4003 (kicked) and 1001 (shutdown) with the client still sending.
#[tokio::test]
async fn policy_kick_and_shutdown_codes_arrive_while_the_client_sends() {
    let api_key = "hostile-api-key-0123456789";
    let s = Server::start(&[("SYNCGATE_MESSAGES_PER_MIN", "10"), ("SYNCGATE_API_KEY", api_key)]).await;
    for i in 0..10 {
        let mut c = s.client(&format!("flood{i}"), "d").await;
        let frames = (0..100).map(|_| Message::text(r#"{"type":"ping"}"#)).collect();
        send_burst(&mut c, frames).await;
        assert_eq!(close_code(&mut c, Duration::from_secs(5)).await, Ok(1008), "1008 #{i}");
    }
    for i in 0..10 {
        let user = format!("kicked{i}");
        let mut c = s.client(&user, "d").await;
        let sender = async {
            let (status, _) =
                http_json(s.addr, "POST", "/api/disconnect", Some(api_key), &json!({"user_id": user}).to_string())
                    .await;
            assert_eq!(status, 200);
        };
        let frames = (0..15).map(|_| Message::text(r#"{"type":"ping"}"#)).collect();
        let ((), ()) = tokio::join!(send_burst(&mut c, frames), sender);
        assert_eq!(close_code(&mut c, Duration::from_secs(5)).await, Ok(4003), "4003 #{i}");
    }
    let mut clients = Vec::new();
    for i in 0..10 {
        clients.push(s.client(&format!("stay{i}"), "d").await);
    }
    for c in &mut clients {
        send_burst(c, (0..5).map(|_| Message::text(r#"{"type":"ping"}"#)).collect()).await;
    }
    let stop = tokio::spawn(s.stop());
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(close_code(c, Duration::from_secs(10)).await, Ok(1001), "1001 #{i}");
    }
    stop.await.unwrap();
}

/// A publisher at 1 MiB/s (16 KiB events, 64 per second) and a subscriber that reads them all,
/// sampling the gateway's peak RSS.
struct Firehose {
    publisher: Client,
    healthy: Client,
    payload: String,
    sent: u64,
    received: u64,
    pid: u32,
    peak: u64,
}

impl Firehose {
    async fn publish_for(&mut self, secs: u64) {
        let started = Instant::now();
        for i in 0..secs * 64 {
            let frame = json!({"type":"publish","channel":"room:firehose","event":"chunk","data":self.payload});
            self.publisher.send(frame).await;
            self.sent += 1;
            tokio::time::sleep_until(tokio::time::Instant::from_std(started + Duration::from_millis(i * 1000 / 64)))
                .await;
            while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::ZERO, self.healthy.ws.next()).await {
                self.received += m.is_text() as u64;
            }
            self.peak = self.peak.max(rss_kib(self.pid));
        }
    }
}

/// A reader that stopped reading: the gateway holds at most its queue and one write buffer,
/// closes it, and everyone else keeps receiving.
#[tokio::test]
async fn a_stalled_reader_costs_a_bounded_amount_of_memory() {
    let (child, addr, _logs) = spawn_binary(&[
        ("SYNCGATE_JWT_SECRET", SECRET),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
        ("SYNCGATE_OUTBOUND_QUEUE_BYTES", "1048576"),
        ("SYNCGATE_MESSAGES_PER_MIN", "100000"),
    ]);
    let child = Reap(child);
    let pid = child.0.id();
    let s = Server::attach(addr.parse().unwrap());
    let mut healthy = s.client("healthy", "d").await;
    healthy.subscribe("room:firehose").await;
    let mut f = Firehose {
        publisher: s.client("publisher", "d").await,
        healthy,
        payload: "p".repeat(16 * 1024),
        sent: 0,
        received: 0,
        pid,
        peak: 0,
    };
    // Warm-up without the stalled reader: the allocator reaches its steady state first.
    f.publish_for(2).await;
    // The stalled client: a real WebSocket over a socket with a small receive buffer that is
    // never read after `subscribed`.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(s.addr).await.unwrap();
    let (mut stalled, _) =
        tokio_tungstenite::client_async(s.url(&format!("token={}", token("stalled"))), stream).await.unwrap();
    stalled.next().await.unwrap().unwrap(); // welcome
    stalled.send(Message::text(r#"{"type":"subscribe","channel":"room:firehose"}"#)).await.unwrap();
    while !stalled.next().await.unwrap().unwrap().to_text().unwrap().contains("subscribed") {}
    let baseline = f.peak;
    f.publish_for(8).await;
    while f.received < f.sent {
        let m = tokio::time::timeout(Duration::from_secs(5), f.healthy.ws.next()).await.unwrap().unwrap().unwrap();
        f.received += m.is_text() as u64;
    }
    // The queue (1 MiB here) plus one write buffer (64 KiB + one message), and the allocator's
    // page granularity (several MiB of slack measured): well below the 8 MiB sent meanwhile.
    let grown = f.peak.saturating_sub(baseline);
    assert!(grown < 6 * 1024, "RSS grew by {grown} KiB for one stalled reader");
    let m = metrics_text(&s).await;
    assert!(
        metric(&m, "syncgate_slow_consumer_disconnects_total") >= 1.0,
        "the stalled reader was closed as a slow consumer"
    );
    drop(stalled);
    drop(child);
}

/// A re-auth that waits 3 s on the JWKS server does not stop the connection's outbound traffic.
#[tokio::test]
async fn events_keep_flowing_during_a_slow_jwks_reauth() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let fixture =
        |n: &str| std::fs::read_to_string(format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let jwk1: Value = serde_json::from_str(&fixture("rsa1.jwk.json")).unwrap();
    let doc = json!({"keys":[jwk1]}).to_string();
    // A JWKS server whose answers after the first take 3 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut sock, _)) = listener.accept().await {
            n += 1;
            let doc = doc.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if n > 1 {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                    doc.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    let url = format!("http://{jwks_addr}/jwks.json");
    let s = Server::start(&[("SYNCGATE_JWKS_URL", url.as_str()), ("SYNCGATE_JWKS_TIMEOUT_MS", "10000")]).await;
    let key = EncodingKey::from_rsa_pem(fixture("rsa1.key.pem").as_bytes()).unwrap();
    let sign = |kid: &str| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.to_string());
        jsonwebtoken::encode(&h, &json!({"sub":"alice","exp": crate::common::now() + 3600}), &key).unwrap()
    };
    let mut a = s.client_with(&sign("rsa1"), "a", "").await;
    let mut b = s.client_with(&sign("rsa1"), "b", "").await;
    // An unknown kid: the gateway refetches the JWKS, which takes 3 s.
    a.send(json!({"type":"auth","id":"re","token":sign("rotated")})).await;
    let started = Instant::now();
    let mut events = 0;
    let reply = loop {
        if started.elapsed() < Duration::from_millis(2500) {
            b.send(json!({"type":"publish","channel":"user:alice","event":"tick","data":events})).await;
        }
        let v = tokio::time::timeout(Duration::from_millis(100), a.recv()).await;
        match v {
            Ok(v) if v["type"] == "event" => {
                assert!(started.elapsed() < Duration::from_secs(3), "events arrive before the re-auth reply");
                events += 1;
            }
            Ok(v) => break v,
            Err(_) => {}
        }
    };
    assert!(started.elapsed() >= Duration::from_millis(2500), "the reply waited for the JWKS");
    assert_eq!(reply["id"], "re", "{reply}");
    assert_eq!(reply["type"], "error", "the unknown kid is still unknown: {reply}");
    assert!(events >= 15, "only {events} events arrived while the re-auth was pending");
    s.stop().await;
}

/// 1 000 connections that never finish a request (or send one byte every few seconds) are cut
/// after the handshake timeout and never slow down anyone else.
#[tokio::test]
async fn slowloris_connections_are_cut_and_do_not_block_others() {
    let (child, addr, _logs) =
        spawn_binary(&[("SYNCGATE_JWT_SECRET", SECRET), ("SYNCGATE_HANDSHAKE_TIMEOUT_MS", "2000")]);
    let _child = Reap(child);
    let s = Server::attach(addr.parse().unwrap());
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        if i % 4 == 0 {
            // A request that trickles in.
            c.write_all(b"GET /ws HTTP/1.1\r\n").await.unwrap();
        }
        idle.push(c);
    }
    // Trickle one byte every 500 ms into a quarter of them while a normal client connects.
    let started = Instant::now();
    let mut c = s.client("normal", "d").await;
    assert!(started.elapsed() < Duration::from_secs(1), "connect took {:?}", started.elapsed());
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, sock) in idle.iter_mut().enumerate() {
            if i % 4 == 0 {
                let _ = sock.write_all(b"X").await;
            }
        }
    }
    // By 2 s + slack every idle socket was closed by the server (EOF or reset).
    let deadline = started + Duration::from_secs(6);
    let mut open = 0;
    for sock in &mut idle {
        let mut buf = [0u8; 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            match tokio::time::timeout(left, sock.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => continue, // a 408 answer, then EOF
                Err(_) => {
                    open += 1;
                    break;
                }
            }
        }
    }
    assert_eq!(open, 0, "{open} slowloris connections still open after the handshake timeout");
    let started = Instant::now();
    let mut c2 = s.client("normal", "d2").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c2.request(json!({"type":"ping"})).await["type"], "pong");
    let m = metrics_text(&s).await;
    assert!(metric(&m, "syncgate_handshake_timeouts_total") >= 1000.0, "cut connections are counted");
}

#[tokio::test]
async fn echo_endpoint_is_off_by_default_and_echoes_when_on() {
    let s = Server::start(&[]).await;
    let (status, _) = http_json(s.addr, "GET", "/echo", None, "").await;
    assert_eq!(status, 404);
    s.stop().await;
    let s = Server::start(&[("SYNCGATE_ECHO_PATH", "/echo"), ("SYNCGATE_MESSAGES_PER_MIN", "10")]).await;
    let mut c = Client::connect(&format!("ws://{}/echo", s.addr)).await.unwrap();
    // No rate limit here: 100 messages at once, all echoed in order.
    for i in 0..100 {
        c.ws.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    c.ws.feed(Message::binary(vec![0u8, 255, 7])).await.unwrap();
    c.ws.flush().await.unwrap();
    for i in 0..100 {
        let m = c.ws.next().await.unwrap().unwrap();
        assert_eq!(m, Message::text(format!("m{i}")));
    }
    assert_eq!(c.ws.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 255, 7]));
    // The same limits as /ws: an oversized message is closed with 1009.
    c.ws.send(Message::binary(vec![1u8; 2 << 20])).await.unwrap();
    assert_eq!(close_code(&mut c, Duration::from_secs(5)).await, Ok(1009));
    s.stop().await;
}

/// The client's close is answered with its code (the reply used to be queued and never sent),
/// and invalid UTF-8 in a text frame is 1007, on `/ws` as on the echo endpoint.
#[tokio::test]
async fn client_close_is_answered_and_invalid_utf8_is_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let s = Server::start(&[("SYNCGATE_ECHO_PATH", "/echo")]).await;
    for url in [s.url(&format!("token={}", token("closer"))), format!("ws://{}/echo", s.addr)] {
        let mut c = Client::connect(&url).await.unwrap();
        c.ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))).await.unwrap();
        assert_eq!(close_code(&mut c, Duration::from_secs(5)).await, Ok(1000), "{url}");
        let mut c = Client::connect(&url).await.unwrap();
        let bad = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
        c.ws.send(Message::Frame(bad)).await.unwrap();
        assert_eq!(close_code(&mut c, Duration::from_secs(5)).await, Ok(1007), "{url}");
    }
    s.stop().await;
}
