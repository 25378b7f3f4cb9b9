//! Protocol v1 over real sockets: every request and reply, fan-out, presence, typing, bad input.

use futures_util::SinkExt;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn welcome_ping_and_ids() {
    let s = Server::start(&[]).await;
    let mut a = s.client("alice", "d1").await;
    let w = &a.welcome;
    assert_eq!(w["user_id"], "alice");
    assert_eq!(w["device_id"], "d1");
    assert!(w["conn_id"].is_string());
    assert_eq!(w["heartbeat_ms"], 25000);
    assert_eq!(w["max_message_bytes"], 1 << 20);
    let p = a.request(json!({"type":"ping","id":"p1"})).await;
    assert_eq!(p["type"], "pong");
    assert_eq!(p["id"], "p1");
    assert!(p["ts"].as_u64().unwrap() > 1_600_000_000_000);
    let p = a.request(json!({"type":"ping","id":42})).await;
    assert_eq!(p["id"], 42);
    s.stop().await;
}

#[tokio::test]
async fn subscribe_publish_ack_and_sender_exclusion() {
    let s = Server::start(&[("SYNCGATE_PUBLIC_NAMESPACES", "room")]).await;
    let mut a = s.client("alice", "d1").await;
    let mut b = s.client("bob", "d1").await;
    let r = a.request(json!({"type":"subscribe","channel":"room:1","id":1})).await;
    assert_eq!(r, json!({"type":"subscribed","channel":"room:1","id":1}));
    let r = b.subscribe("room:1").await;
    assert_eq!(r, json!({"type":"subscribed","channel":"room:1"}));
    let j = a.recv().await;
    assert_eq!(j, json!({"type":"join","channel":"room:1","user_id":"bob","device_id":"d1"}));

    let ack = b
        .request(json!({"type":"publish","channel":"room:1","event":"msg","data":{"text":"hi","n":[1,2]},"id":"x"}))
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "x");
    let e = a.recv().await;
    assert_eq!(e["type"], "event");
    assert_eq!(e["channel"], "room:1");
    assert_eq!(e["event"], "msg");
    assert_eq!(e["data"], json!({"text":"hi","n":[1,2]}));
    assert_eq!(e["from"], json!({"user_id":"bob","device_id":"d1"}));
    assert!(e["ts"].is_u64());
    // The sender never receives its own event; without an id there is no ack.
    b.send(json!({"type":"publish","channel":"room:1","event":"e2","data":null})).await;
    assert_eq!(a.recv().await["event"], "e2");
    b.silent(300).await;

    let r = a.request(json!({"type":"unsubscribe","channel":"room:1","id":2})).await;
    assert_eq!(r, json!({"type":"unsubscribed","channel":"room:1","id":2}));
    assert_eq!(b.recv().await, json!({"type":"leave","channel":"room:1","user_id":"alice","device_id":"d1"}));
    b.send(json!({"type":"publish","channel":"room:1","event":"e3","data":1})).await;
    a.silent(300).await;
    s.stop().await;
}

#[tokio::test]
async fn user_fan_out_to_three_devices_and_binary_relay() {
    let s = Server::start(&[]).await;
    let mut d1 = s.client("alice", "phone").await;
    let mut d2 = s.client("alice", "laptop").await;
    let mut d3 = s.client("alice", "tablet").await;
    let mut other = s.client("bob", "x").await;
    let ack = d1.request(json!({"type":"publish","channel":"user","event":"clip","data":"copied","id":1})).await;
    assert_eq!(ack["type"], "ack");
    for d in [&mut d2, &mut d3] {
        let e = d.recv().await;
        assert_eq!(e["channel"], "user:alice");
        assert_eq!(e["data"], "copied");
        assert_eq!(e["from"]["device_id"], "phone");
    }
    d1.silent(200).await;
    other.silent(100).await;

    let blob: Vec<u8> = (0..=255u8).cycle().take(4000).collect();
    d2.ws.send(tokio_tungstenite::tungstenite::Message::binary(blob.clone())).await.unwrap();
    for d in [&mut d1, &mut d3] {
        assert_eq!(d.recv().await, json!({ "binary": blob }));
    }
    d2.silent(200).await;
    other.silent(100).await;
    s.stop().await;
}

#[tokio::test]
async fn presence_typing_and_abrupt_disconnect() {
    let s = Server::start(&[("SYNCGATE_PUBLIC_NAMESPACES", "room")]).await;
    let mut a = s.client("alice", "d1").await;
    a.subscribe("room:p").await;
    let mut b = s.client("bob", "d1").await;
    b.subscribe("room:p").await;
    assert_eq!(a.recv().await["type"], "join");
    // A second connection of the same device is not a new join.
    let mut b2 = s.client("bob", "d1").await;
    b2.subscribe("room:p").await;
    a.silent(300).await;

    let p = a.request(json!({"type":"presence","channel":"room:p","id":"q"})).await;
    assert_eq!(p["type"], "presence");
    assert_eq!(p["id"], "q");
    assert_eq!(p["members"], json!([{"user_id":"alice","device_id":"d1"},{"user_id":"bob","device_id":"d1"}]));

    b.send(json!({"type":"typing","channel":"room:p","state":"start"})).await;
    assert_eq!(
        a.recv().await,
        json!({"type":"typing","channel":"room:p","user_id":"bob","device_id":"d1","state":"start"})
    );
    assert_eq!(b2.recv().await["state"], "start");
    b.silent(200).await;

    // Abrupt disconnect of one of bob's two connections: no leave yet.
    drop(b);
    a.silent(400).await;
    // Abrupt disconnect of the last one: leave.
    drop(b2);
    assert_eq!(a.recv().await, json!({"type":"leave","channel":"room:p","user_id":"bob","device_id":"d1"}));
    let p = a.request(json!({"type":"presence","channel":"room:p"})).await;
    assert_eq!(p["members"], json!([{"user_id":"alice","device_id":"d1"}]));
    s.stop().await;
}

#[tokio::test]
async fn channel_rules() {
    let s = Server::start(&[("SYNCGATE_PUBLIC_NAMESPACES", "public,lobby")]).await;
    let mut a = s.client_with(&token_channels("alice", &["room:*", "note:abc"]), "d1", "").await;
    for ok in ["public:x", "lobby:1", "room:42", "note:abc", "user:alice", "dm:alice:bob", "dm:aaron:alice"] {
        assert_eq!(a.subscribe(ok).await["type"], "subscribed", "{ok}");
    }
    let r = a.subscribe("user").await;
    assert_eq!(r, json!({"type":"subscribed","channel":"user:alice"}));
    for forbidden in ["user:bob", "dm:bob:carol", "note:abd", "private:x", "rooms:1"] {
        let r = a.request(json!({"type":"subscribe","channel":forbidden,"id":"f"})).await;
        assert_eq!(r["type"], "error", "{forbidden}");
        assert_eq!(r["code"], "forbidden", "{forbidden}");
        assert_eq!(r["id"], "f");
        let r = a.request(json!({"type":"publish","channel":forbidden,"event":"e","data":1})).await;
        assert_eq!(r["code"], "forbidden", "{forbidden}");
    }
    for bad in ["dm:bob:alice", "has space", "x".repeat(129).as_str(), "", "ünï:x"] {
        let r = a.subscribe(bad).await;
        assert_eq!(r["code"], "bad_request", "{bad}");
    }
    // dm: only the two named users, both of whom receive.
    let mut b = s.client("bob", "d1").await;
    b.subscribe("dm:alice:bob").await;
    a.request(json!({"type":"publish","channel":"dm:alice:bob","event":"dm","data":"psst","id":1})).await;
    assert_eq!(b.recv().await["data"], "psst");
    let mut c = s.client("carol", "d1").await;
    assert_eq!(c.subscribe("dm:alice:bob").await["code"], "forbidden");

    // ?channel= at connect follows the same rules.
    let mut d = s.client_with(&token("dave"), "d1", "&channel=public:y&channel=secret:z").await;
    assert_eq!(d.recv().await, json!({"type":"subscribed","channel":"public:y"}));
    let r = d.recv().await;
    assert_eq!(r["code"], "forbidden");
    s.stop().await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_server_keeps_serving() {
    let s = Server::start(&[("SYNCGATE_PUBLIC_NAMESPACES", "room")]).await;
    let mut a = s.client("alice", "d1").await;
    let mut b = s.client("bob", "d1").await;
    b.subscribe("room:1").await;
    let cases = [
        ("{not json", "bad_request"),
        ("[1,2,3]", "bad_request"),
        ("\"str\"", "bad_request"),
        (r#"{"type":"dance"}"#, "bad_request"),
        (r#"{"no_type":1}"#, "bad_request"),
        (r#"{"type":"subscribe","channel":7}"#, "bad_request"),
        (r#"{"type":"publish","channel":"room:1","event":{}}"#, "bad_request"),
        (r#"{"type":"typing","channel":"room:1","state":"maybe"}"#, "bad_request"),
        (r#"{"type":"ping","id":[1]}"#, "bad_request"),
    ];
    for (frame, code) in cases {
        a.send_text(frame).await;
        let r = a.recv().await;
        assert_eq!(r["type"], "error", "{frame}");
        assert_eq!(r["code"], code, "{frame}");
        assert!(r["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = a.request(json!({"type":"unknown_kind","id":9})).await;
    assert_eq!(r["id"], 9);
    // Still works after all that.
    a.request(json!({"type":"publish","channel":"room:1","event":"ok","data":1,"id":1})).await;
    assert_eq!(b.recv().await["event"], "ok");

    // A 2 MiB frame: too_large, close 1009; others unaffected.
    let big = "x".repeat(2 << 20);
    let _ = a.ws.send(tokio_tungstenite::tungstenite::Message::text(big)).await;
    let mut saw_error = false;
    let code = loop {
        match tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut a.ws)).await.unwrap() {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["code"], "too_large");
                saw_error = true;
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => break u16::from(f.code),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1009);
    assert!(saw_error);
    let mut c = s.client("carol", "d1").await;
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    assert_eq!(b.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn health() {
    let s = Server::start(&[]).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("OK"), "{out}");
    s.stop().await;
}
