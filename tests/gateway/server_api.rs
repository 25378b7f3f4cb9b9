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

async fn channel_pages(s: &Server, prefix: &str, limit: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        let path = format!("/api/channels?prefix={prefix}&limit={limit}&cursor={cursor}");
        let (status, v) = http_json(s.addr, "GET", &path, Some(KEY), "").await;
        assert_eq!(status, 200, "{v}");
        for c in v["channels"].as_array().unwrap() {
            out.push((c["channel"].as_str().unwrap().to_string(), c["members"].as_u64().unwrap()));
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => {
                out.sort();
                out.dedup();
                return out;
            }
        }
    }
    panic!("the pages never ended");
}

/// `GET /api/channels`: every active channel with its member count, page by page, on the local
/// bus and across two instances over Redis.
#[tokio::test]
async fn active_channels_page_by_page() {
    let p = crate::cluster::prefix();
    let redis = [("REDIS_URL", crate::cluster::REDIS), ("SYNCGATE_REDIS_PREFIX", p.as_str())];
    let local = Server::start(&env(&[])).await;
    let (s1, s2) = (Server::start(&env(&redis)).await, Server::start(&env(&redis)).await);
    let mut keep = Vec::new();
    for (s, i) in [(&local, 0), (&s1, 1), (&s2, 2)] {
        for room in 0..7 {
            let mut c = s.client(&format!("u{i}-{room}"), "d").await;
            assert_eq!(c.subscribe(&format!("room:r{room}")).await["type"], "subscribed");
            keep.push(c);
        }
    }
    // A second device of one user in room:r0 on s2: two members there across the cluster, one
    // more connection of the same member does not count twice.
    let mut twice = s2.client("u2-0", "d2").await;
    assert_eq!(twice.subscribe("room:r0").await["type"], "subscribed");
    let local_rooms = channel_pages(&local, "room:", 3).await;
    assert_eq!(local_rooms, (0..7).map(|r| (format!("room:r{r}"), 1)).collect::<Vec<_>>());
    let want: Vec<(String, u64)> = (0..7).map(|r| (format!("room:r{r}"), if r == 0 { 3 } else { 2 })).collect();
    for s in [&s1, &s2] {
        let seen = eventually(Duration::from_secs(5), || async {
            let got = channel_pages(s, "room:", 2).await;
            (got == want).then_some(())
        })
        .await;
        assert!(seen.is_some(), "{:?}", channel_pages(s, "room:", 2).await);
    }
    // Another prefix lists the user channels only; bad parameters are 400.
    assert!(channel_pages(&s1, "user:u1-", 100).await.iter().all(|(c, _)| c.starts_with("user:u1-")));
    for q in ["limit=0", "limit=1001", "limit=x", "prefix=a%20b", "cursor=a*"] {
        assert_eq!(http_json(s1.addr, "GET", &format!("/api/channels?{q}"), Some(KEY), "").await.0, 400, "{q}");
    }
    drop((keep, twice));
    for s in [local, s1, s2] {
        s.stop().await;
    }
}
