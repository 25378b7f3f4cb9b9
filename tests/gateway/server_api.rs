//! The server API for backends (issue 15, part): one event to many channels
//! (`POST /api/publish` with `"channels"`) and `GET /api/presence`, on one instance and across
//! two over Redis.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const KEY: &str = "server-api-key-0123456789";

fn env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("SYNCGATE_API_KEY", KEY), ("SYNCGATE_PUBLIC_NAMESPACES", "room")];
    v.extend_from_slice(extra);
    v
}

async fn publish(s: &Server, body: Value) -> (u16, Value) {
    http_json(s.addr, "POST", "/api/publish", Some(KEY), &body.to_string()).await
}

#[tokio::test]
async fn one_event_to_many_channels_in_order() {
    let s = Server::start(&env(&[])).await;
    let mut a = s.client("alice", "a").await;
    let mut b = s.client("bob", "b").await;
    assert_eq!(a.subscribe("room:one").await["type"], "subscribed");
    assert_eq!(b.subscribe("room:two").await["type"], "subscribed");

    let (status, r) = publish(
        &s,
        json!({"channels":["room:two","room:one","dm:alice:bob","room:empty"],"event":"news","data":{"n":1},"msg_id":"m-1"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let results = r["results"].as_array().unwrap();
    let names: Vec<&str> = results.iter().map(|x| x["channel"].as_str().unwrap()).collect();
    assert_eq!(names, ["room:two", "room:one", "dm:alice:bob", "room:empty"], "in the given order");
    // dm is durable by default: stored, with its seq.
    assert_eq!((results[2]["seq"].as_u64(), results[2]["duplicate"].as_bool()), (Some(1), Some(false)), "{r}");
    assert!(results[0].get("seq").is_none(), "{r}");
    for (c, channels) in [(&mut a, ["room:one", "dm:alice:bob"]), (&mut b, ["room:two", "dm:alice:bob"])] {
        let mut got = [c.recv_type("event").await, c.recv_type("event").await];
        got.sort_by_key(|e| e["channel"].as_str().unwrap().to_string());
        let mut want = channels.to_vec();
        want.sort();
        for (e, ch) in got.iter().zip(want) {
            assert_eq!((e["channel"].as_str(), e["event"].as_str()), (Some(ch), Some("news")), "{e}");
            assert_eq!(e["from"], json!({"user_id":"server"}));
            assert_eq!(e["data"], json!({"n":1}));
        }
    }
    // The same msg_id again: the durable channel answers the original seq, as a duplicate.
    let (_, r) = publish(&s, json!({"channels":["dm:alice:bob"],"event":"news","data":{"n":1},"msg_id":"m-1"})).await;
    assert_eq!((r["results"][0]["seq"].as_u64(), r["results"][0]["duplicate"].as_bool()), (Some(1), Some(true)));

    // Refusals send nothing: a bad name among good ones, too many, none, both forms.
    let (status, e) = publish(&s, json!({"channels":["room:one","bad channel"],"event":"x","data":1})).await;
    assert_eq!(status, 400, "{e}");
    let many: Vec<String> = (0..101).map(|i| format!("room:c{i}")).collect();
    assert_eq!(publish(&s, json!({"channels":many,"event":"x"})).await.0, 400);
    assert_eq!(publish(&s, json!({"channels":[],"event":"x"})).await.0, 400);
    assert_eq!(publish(&s, json!({"event":"x"})).await.0, 400);
    assert_eq!(publish(&s, json!({"channel":"room:one","channels":["room:one"],"event":"x"})).await.0, 400);
    a.silent(300).await;
    // Exactly 100 is fine.
    let hundred: Vec<String> = (0..100).map(|i| format!("room:c{i}")).collect();
    let (status, r) = publish(&s, json!({"channels":hundred,"event":"x"})).await;
    assert_eq!((status, r["results"].as_array().map(Vec::len)), (200, Some(100)));
    // The one-channel form is unchanged.
    let (status, r) = publish(&s, json!({"channel":"room:one","event":"solo","data":2})).await;
    assert_eq!((status, r["local_recipients"].as_u64()), (200, Some(1)), "{r}");
    assert_eq!(a.recv_type("event").await["event"], "solo");
    s.stop().await;
}

async fn presence(s: &Server, channel: &str) -> (u16, Value) {
    http_json(s.addr, "GET", &format!("/api/presence?channel={channel}"), Some(KEY), "").await
}

fn members(v: &Value) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["user_id"].as_str().unwrap().to_string(), x["device_id"].as_str().unwrap().to_string()))
        .collect();
    m.sort();
    m
}

#[tokio::test]
async fn presence_across_instances() {
    let p = crate::cluster::prefix();
    let extra = [("REDIS_URL", crate::cluster::REDIS), ("SYNCGATE_REDIS_PREFIX", p.as_str())];
    let (s1, s2) = (Server::start(&env(&extra)).await, Server::start(&env(&extra)).await);
    let mut a = s1.client("alice", "phone").await;
    let mut b = s2.client("bob", "laptop").await;
    assert_eq!(a.subscribe("room:lobby").await["type"], "subscribed");
    assert_eq!(b.subscribe("room:lobby").await["type"], "subscribed");
    let want = vec![("alice".to_string(), "phone".to_string()), ("bob".to_string(), "laptop".to_string())];
    for s in [&s1, &s2] {
        let seen = eventually(Duration::from_secs(5), || async {
            let (status, v) = presence(s, "room:lobby").await;
            (status == 200 && members(&v) == want).then_some(v)
        })
        .await;
        let v = seen.expect("both members, seen from either instance");
        assert_eq!(v["channel"], "room:lobby");
    }
    let (status, v) = presence(&s1, "room:nobody").await;
    assert_eq!((status, v["members"].clone()), (200, json!([])));
    // The API key is required; the channel must be a valid name.
    let (status, _) = http_json(s1.addr, "GET", "/api/presence?channel=room:lobby", None, "").await;
    assert_eq!(status, 401);
    assert_eq!(presence(&s1, "bad%20name").await.0, 400);
    assert_eq!(http_json(s1.addr, "GET", "/api/presence", Some(KEY), "").await.0, 400);
    drop((a, b));
    s1.stop().await;
    s2.stop().await;
}
