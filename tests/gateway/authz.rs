//! Channel rights (issue 15, part): the `subscribe` and `publish` claims beside `channels`,
//! typing and presence under subscribe rights, re-auth swapping rights, and server-publish
//! namespaces (clients subscribe, only the server API publishes).

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
async fn bad_server_publish_namespace_stops_start_up() {
    let mut vars = std::collections::HashMap::new();
    vars.insert("SYNCGATE_JWT_SECRET".to_string(), SECRET.to_string());
    vars.insert("SYNCGATE_SERVER_PUBLISH_NAMESPACES".to_string(), "ok,bad:ns".to_string());
    let err = syncgate::config::Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.contains("SYNCGATE_SERVER_PUBLISH_NAMESPACES"), "{err}");
}
