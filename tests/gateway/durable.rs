//! Durable streams over real sockets, on SQLite and on a real PostgreSQL: `seq` in acks and
//! events, dm implicit membership, idempotent `msg_id`, replay with `since` while live traffic
//! continues, read positions, history and conversations, retention, SIGKILL after acks, and
//! several instances over Redis publishing to one channel.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn get(s: &Server, path: &str, bearer: &str) -> (u16, Value) {
    http_json(s.addr, "GET", path, Some(bearer), "").await
}

/// Publishes on `c` and returns the ack (skipping any event frames in between).
async fn publish(c: &mut Client, channel: &str, id: u64, msg_id: Option<&str>, text: &str) -> Value {
    let mut frame = json!({"type":"publish","id":id,"channel":channel,"event":"message","data":{"text":text}});
    if let Some(m) = msg_id {
        frame["msg_id"] = json!(m);
    }
    c.send(frame).await;
    loop {
        let v = c.recv().await;
        if v["type"] == "ack" && v["id"] == id {
            return v;
        }
        assert_ne!(v["type"], "error", "{v}");
    }
}

/// Reads event frames of `channel` until `n` have arrived; returns their seqs.
async fn seqs(c: &mut Client, channel: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv().await;
        if v["type"] == "event" && v["channel"] == channel {
            out.push(v["seq"].as_u64().unwrap());
        }
    }
    out
}

async fn durable_flow(env: &[(&str, &str)]) {
    let s = Server::start(env).await;
    let dm = "dm:alice:bob";
    let mut alice_phone = s.client("alice", "phone").await;
    let mut alice_laptop = s.client("alice", "laptop").await;
    let mut bob = s.client("bob", "phone").await;
    let mut bob_subscribed = s.client("bob", "tablet").await;
    let sub = bob_subscribed.subscribe(dm).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["seq"], 0);
    assert_eq!(sub["read_seq"], 0);

    // Acks carry contiguous seqs from 1; every connection of both users but the sender's gets
    // each event exactly once, subscribed or not.
    for i in 1..=3u64 {
        let ack = publish(&mut alice_phone, dm, i, None, &format!("hi {i}")).await;
        assert_eq!(ack["seq"], i, "{ack}");
        assert_eq!(ack["channel"], dm);
    }
    for c in [&mut alice_laptop, &mut bob] {
        assert_eq!(seqs(c, dm, 3).await, vec![1, 2, 3]);
    }
    let first = bob_subscribed.recv().await;
    assert_eq!(first["seq"], 1);
    assert_eq!(first["data"]["text"], "hi 1");
    assert_eq!(first["from"]["user_id"], "alice");
    assert_eq!(seqs(&mut bob_subscribed, dm, 2).await, vec![2, 3]);
    bob_subscribed.silent(200).await;
    alice_phone.silent(100).await;

    // Idempotency: a retried msg_id is acked with its original seq and not delivered again.
    let a = publish(&mut bob, dm, 10, Some("m-1"), "once").await;
    assert_eq!(a["seq"], 4);
    assert_eq!(a["msg_id"], "m-1");
    let again = publish(&mut bob, dm, 11, Some("m-1"), "once").await;
    assert_eq!(again["seq"], 4);
    assert_eq!(again["duplicate"], true);
    let e = alice_phone.recv().await;
    assert_eq!((e["seq"].as_u64(), e["msg_id"].as_str()), (Some(4), Some("m-1")));
    alice_phone.silent(200).await;
    // The same msg_id from another device is a different message.
    let other = publish(&mut bob_subscribed, dm, 12, Some("m-1"), "from the tablet").await;
    assert_eq!(other["seq"], 5);
    assert_eq!(other.get("duplicate"), None);
    assert_eq!(seqs(&mut alice_phone, dm, 1).await, vec![5]);
    assert_eq!(seqs(&mut alice_laptop, dm, 2).await, vec![4, 5]);

    // Read positions: stored per device, reported by `subscribed` and the conversation list.
    alice_laptop.send(json!({"type":"ack","channel":dm,"seq":3})).await;
    let r = alice_laptop.request(json!({"type":"ack","channel":dm,"seq":4,"id":"r"})).await;
    assert_eq!(r, json!({"type":"ack","id":"r","channel":dm,"read_seq":4}));
    let sub = alice_laptop.subscribe(dm).await;
    assert_eq!((sub["seq"].as_u64(), sub["read_seq"].as_u64()), (Some(5), Some(4)));
    let (status, list) = get(&s, "/api/conversations?device_id=laptop", &token("alice")).await;
    assert_eq!(status, 200, "{list}");
    let conv = &list["conversations"][0];
    assert_eq!(conv["channel"], dm);
    assert_eq!(conv["with"], "bob");
    assert_eq!(conv["latest_seq"], 5);
    assert_eq!(conv["read_seq"], 4);
    assert_eq!(conv["unread"], 1);
    let (_, list) = get(&s, "/api/conversations", &token("bob")).await;
    assert_eq!(list["conversations"][0]["with"], "alice");
    assert_eq!(list["conversations"][0]["read_seq"], 0);
    let (_, list) = get(&s, "/api/conversations", &token("carol")).await;
    assert_eq!(list["conversations"], json!([]));
    // Acks on non-durable channels and foreign channels are refused.
    let e = alice_laptop.request(json!({"type":"ack","channel":"dm:bob:carol","seq":1})).await;
    assert_eq!(e["code"], "forbidden");

    // Replay: subscribe with since delivers exactly what was missed, in order.
    let mut late = s.client("bob", "desktop").await;
    late.send(json!({"type":"subscribe","channel":dm,"since":2,"id":1})).await;
    let sub = late.recv().await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(true), Some(5)));
    assert_eq!(seqs(&mut late, dm, 3).await, vec![3, 4, 5]);
    late.silent(200).await;

    // History: pages oldest first; `after`, `before`, `limit`; the same rules as subscribe.
    let (status, h) = get(&s, &format!("/api/history?channel={dm}&limit=2"), &token("alice")).await;
    assert_eq!(status, 200, "{h}");
    let got: Vec<u64> = h["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![4, 5]);
    assert_eq!(h["has_more"], true);
    assert_eq!(h["latest_seq"], 5);
    assert_eq!(h["events"][1]["from"]["device_id"], "tablet");
    let (_, h) = get(&s, &format!("/api/history?channel={dm}&before=4&limit=2"), &token("alice")).await;
    let got: Vec<u64> = h["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![2, 3]);
    let (_, h) = get(&s, &format!("/api/history?channel={dm}&after=1&limit=10"), &token("bob")).await;
    assert_eq!(h["events"].as_array().unwrap().len(), 4);
    assert_eq!(h["has_more"], false);
    assert_eq!(h["events"][0]["data"], json!({"text":"hi 2"}));
    assert_eq!(get(&s, &format!("/api/history?channel={dm}"), &token("carol")).await.0, 403);
    assert_eq!(get(&s, "/api/history?channel=room:x", &token("alice")).await.0, 403);
    assert_eq!(get(&s, "/api/history?channel=dm:bob:alice", &token("alice")).await.0, 400);
    assert_eq!(get(&s, &format!("/api/history?channel={dm}&limit=0"), &token("alice")).await.0, 400);
    assert_eq!(get(&s, &format!("/api/history?channel={dm}&after=x"), &token("alice")).await.0, 400);
    assert_eq!(get(&s, &format!("/api/history?channel={dm}"), "garbage").await.0, 401);
    let (status, c) = get(&s, "/api/conversation?with=bob&limit=3", &token("alice")).await;
    assert_eq!(status, 200);
    assert_eq!(c["channel"], dm);
    let got: Vec<u64> = c["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(got, vec![3, 4, 5]);
    let (_, c) = get(&s, "/api/conversation?with=bob&before=3", &token("alice")).await;
    assert_eq!(c["events"].as_array().unwrap().len(), 2);
    assert_eq!(get(&s, "/api/conversation?with=alice", &token("alice")).await.0, 400);
    assert_eq!(get(&s, "/api/conversation", &token("alice")).await.0, 400);

    // Bad frames get clear errors and change nothing.
    for bad in [
        json!({"type":"subscribe","channel":dm,"since":-3}),
        json!({"type":"publish","channel":dm,"event":"m","msg_id":{"x":1}}),
        json!({"type":"ack","channel":dm}),
    ] {
        bob.send(bad).await;
        assert_eq!(bob.recv_type("error").await["code"], "bad_request");
    }
    s.stop().await;
}

on_both_stores!(durable_streams_on_sqlite, durable_streams_on_postgres, durable_flow);

/// A publisher keeps sending while a device reconnects with `since`: the device gets every event
/// after `since` exactly once and in order, the replayed ones and then the live ones.
async fn replay_under_live_traffic(env: &[(&str, &str)]) {
    let s = Server::start(env).await;
    replay_flow(&s, &s).await;
    s.stop().await;
}

/// The publisher on `p`, the reconnecting device on `r` (the same server or another instance).
async fn replay_flow(p: &Server, r: &Server) {
    let dm = "dm:ann:ben";
    let mut ann = p.client("ann", "a1").await;
    for i in 1..=20u64 {
        publish(&mut ann, dm, i, Some(&format!("pre-{i}")), "x").await;
    }
    let total = 200u64;
    let publisher = tokio::spawn(async move {
        for i in 21..=total {
            ann.send(json!({"type":"publish","channel":dm,"event":"m","data":i,"msg_id":format!("live-{i}")})).await;
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        ann
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut ben = r.client("ben", "b1").await;
    ben.send(json!({"type":"subscribe","channel":dm,"since":7})).await;
    // Events reaching ben live before the subscribe reply came through his user channel (he is
    // a participant); from the reply on, the stream is the rest of since+1..=total in order:
    // what came before the reply is not replayed again (exactly once at the seam).
    let (mut before, mut got) = (Vec::new(), Vec::new());
    let mut replied = false;
    // Until all of since+1..=total came (every event may arrive before the reply).
    while !replied || before.len() + got.len() < (total - 7) as usize {
        let v = ben.recv().await;
        match v["type"].as_str() {
            Some("subscribed") => {
                assert_eq!(v["recovered"], true, "{v}");
                replied = true;
            }
            Some("event") if replied => got.push(v["seq"].as_u64().unwrap()),
            Some("event") => before.push(v["seq"].as_u64().unwrap()),
            _ => panic!("unexpected {v}"),
        }
    }
    let rest: Vec<u64> = (8..=total).filter(|s| !before.contains(s)).collect();
    assert_eq!(got, rest, "after the reply (before it: {before:?})");
    // The live ones before the reply: published after ben connected (so after the 20 stored
    // first), in order, each once.
    assert!(before.windows(2).all(|w| w[0] < w[1]), "{before:?}");
    assert!(before.iter().all(|s| (21..=total).contains(s)), "{before:?}");
    ben.silent(200).await;
    publisher.await.unwrap();
}

/// Two instances sharing a fresh PostgreSQL database and a Redis key prefix of their own.
async fn two_instances() -> (Server, Server) {
    let db = crate::accounts::fresh_pg_database().await;
    let prefix = format!("sgtest:{}:", syncgate::util::random_hex(6));
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", crate::cluster::REDIS),
        ("SYNCGATE_REDIS_PREFIX", prefix.as_str()),
    ];
    (Server::start(&env).await, Server::start(&env).await)
}

/// Reconnecting to another instance than the publisher's: the live part arrives through Redis.
#[tokio::test]
async fn replay_while_live_traffic_continues_across_instances() {
    let (a, b) = two_instances().await;
    replay_flow(&a, &b).await;
    a.stop().await;
    b.stop().await;
}

on_both_stores!(
    replay_while_live_traffic_continues_on_sqlite,
    replay_while_live_traffic_continues_on_postgres,
    replay_under_live_traffic
);

#[tokio::test]
async fn replay_limit_user_channel_since_and_retention() {
    let s = Server::start(&[
        ("SYNCGATE_DURABLE_NAMESPACES", "dm,user,log"),
        ("SYNCGATE_PUBLIC_NAMESPACES", "log"),
        ("SYNCGATE_REPLAY_MAX", "5"),
        ("SYNCGATE_HISTORY_MAX", "4"),
        ("SYNCGATE_RETENTION_INTERVAL_SECS", "1"),
    ])
    .await;
    let mut a = s.client("u1", "d1").await;
    assert_eq!(a.welcome["seq"], 0, "{}", a.welcome);
    for i in 1..=8u64 {
        let ack = publish(&mut a, "user", i, None, "sync").await;
        assert_eq!(ack["seq"], i);
        assert_eq!(ack["channel"], "user:u1");
    }
    a.send(json!({"type":"ack","channel":"user","seq":6})).await;
    // Connecting with ?since= replays the user channel right after welcome.
    let mut b = s.client_with(&token("u1"), "d2", "&since=5").await;
    assert_eq!(b.welcome["recovered"], true, "{}", b.welcome);
    assert_eq!(b.welcome["seq"], 8);
    assert_eq!(seqs(&mut b, "user:u1", 3).await, vec![6, 7, 8]);
    // Device d1's read position is reported to d1 on its next connect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = s.client("u1", "d1").await;
    assert_eq!(c.welcome["read_seq"], 6, "{}", c.welcome);
    // More than SYNCGATE_REPLAY_MAX missed: nothing replayed, the reply says so.
    let mut d = s.client("u1", "d3").await;
    let sub = d.request(json!({"type":"subscribe","channel":"user","since":1})).await;
    assert_eq!((sub["recovered"].as_bool(), sub["seq"].as_u64()), (Some(false), Some(8)), "{sub}");
    d.silent(200).await;
    let sub = d.request(json!({"type":"subscribe","channel":"user","since":99})).await;
    assert_eq!(sub["recovered"], false);

    // Retention keeps the last SYNCGATE_HISTORY_MAX events per channel.
    for i in 1..=10u64 {
        publish(&mut a, "log:x", 100 + i, None, "l").await;
    }
    let kept = eventually(Duration::from_secs(4), || async {
        let (_, h) = get(&s, "/api/history?channel=log:x", &token("u1")).await;
        let kept: Vec<u64> = h["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        (kept.len() == 4).then_some(kept)
    })
    .await;
    assert_eq!(kept, Some(vec![7, 8, 9, 10]));
    // A replay from before the retained range cannot be complete.
    let sub = d.request(json!({"type":"subscribe","channel":"log:x","since":3})).await;
    assert_eq!(sub["recovered"], false, "{sub}");
    s.stop().await;
}

on_both_stores!(retention_by_age_with_metrics_on_sqlite, retention_by_age_with_metrics_on_postgres, retention_by_age);

async fn retention_by_age(env: &[(&str, &str)]) {
    let mut vars = vec![("SYNCGATE_HISTORY_TTL_SECS", "1"), ("SYNCGATE_RETENTION_INTERVAL_SECS", "1")];
    vars.extend_from_slice(env);
    let s = Server::start(&vars).await;
    let mut a = s.client("p", "d").await;
    for i in 1..=3u64 {
        publish(&mut a, "dm:p:q", i, None, "old").await;
    }
    let emptied = eventually(Duration::from_secs(5), || async {
        let (_, h) = get(&s, "/api/history?channel=dm:p:q", &token("p")).await;
        h["events"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    assert!(emptied.is_some(), "expired events are deleted");
    let text = metrics_text(&s).await;
    let deleted = text
        .lines()
        .find_map(|l| l.strip_prefix("syncgate_retention_deleted_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(deleted >= 3, "{text}");
    assert!(text.contains("syncgate_durable_events_total 3"), "{text}");
    // The head survives retention: the next event continues the sequence.
    assert_eq!(publish(&mut a, "dm:p:q", 9, None, "new").await["seq"], 4);
    s.stop().await;
}

/// SIGKILL right after the acks: every acked event is in history and replayed after a restart.
async fn killed_after_acks(env: &[(&str, &str)]) {
    let dir = temp_dir();
    let dir_s = dir.display().to_string();
    let mut vars: Vec<(&str, &str)> = vec![("SYNCGATE_JWT_SECRET", SECRET), ("SYNCGATE_DATA_DIR", dir_s.as_str())];
    vars.extend_from_slice(env);
    let (child, addr, _logs) = spawn_binary(&vars);
    let mut child = Reap(child);
    let s = Server::attach(addr.parse().unwrap());
    let mut c = s.client("kim", "k1").await;
    let n = 300u64;
    for i in 1..=n {
        c.send(json!({"type":"publish","id":i,"channel":"dm:kim:lee","event":"m","data":i,"msg_id":format!("k-{i}")}))
            .await;
    }
    let mut acked = BTreeSet::new();
    while acked.len() < n as usize {
        let v = c.recv().await;
        assert_eq!(v["type"], "ack", "{v}");
        acked.insert(v["seq"].as_u64().unwrap());
    }
    // No delay: kill the moment the last ack is read.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    assert_eq!(acked, (1..=n).collect::<BTreeSet<_>>());

    let (child, addr, _logs) = spawn_binary(&vars);
    let _child = Reap(child);
    let s = Server::attach(addr.parse().unwrap());
    let (status, h) = get(&s, "/api/history?channel=dm:kim:lee&after=0&limit=1000", &token("lee")).await;
    assert_eq!(status, 200, "{h}");
    let stored: Vec<u64> = h["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(stored, (1..=n).collect::<Vec<_>>());
    let mut lee = s.client("lee", "l1").await;
    let sub = lee.request(json!({"type":"subscribe","channel":"dm:kim:lee","since":250})).await;
    assert_eq!(sub["recovered"], true);
    assert_eq!(seqs(&mut lee, "dm:kim:lee", 50).await, (251..=n).collect::<Vec<_>>());
    // A retry of an acked msg_id after the restart is still a duplicate.
    let mut kim = s.client("kim", "k1").await;
    let again = publish(&mut kim, "dm:kim:lee", 1, Some("k-7"), "retry").await;
    assert_eq!((again["seq"].as_u64(), again["duplicate"].as_bool()), (Some(7), Some(true)));
}

on_both_stores!(
    sigkill_after_acks_loses_nothing_on_sqlite,
    sigkill_after_acks_loses_nothing_on_postgres,
    killed_after_acks
);

/// Two instances (one PostgreSQL, one Redis) with publishers on both writing to one dm channel at
/// once: the acks' seqs are exactly 1..=N, and every receiving connection on either instance
/// gets every event once, in order.
#[tokio::test]
async fn concurrent_publishers_on_two_instances() {
    let (a, b) = two_instances().await;
    let dm = "dm:xa:xb";
    let mut rx_a = a.client("xb", "on-a").await;
    let mut rx_b = b.client("xb", "on-b").await;
    let per = 150u64;
    let mut tasks = Vec::new();
    for (server, device) in [(&a, "pa"), (&b, "pb")] {
        let mut c = server.client("xa", device).await;
        tasks.push(tokio::spawn(async move {
            for i in 1..=per {
                c.send(json!({"type":"publish","id":i,"channel":dm,"event":"m","data":i})).await;
            }
            let mut seqs = Vec::new();
            while seqs.len() < per as usize {
                let v = c.recv().await;
                if v["type"] == "ack" {
                    seqs.push(v["seq"].as_u64().unwrap());
                }
            }
            seqs
        }));
    }
    // A retry that lands on the other instance (the phone reconnected elsewhere) is still a
    // duplicate: same device, same msg_id.
    let mut on_a = a.client("xa", "phone").await;
    let first = publish(&mut on_a, dm, 1, Some("retry-1"), "once").await;
    let mut on_b = b.client("xa", "phone").await;
    let again = publish(&mut on_b, dm, 1, Some("retry-1"), "once").await;
    assert_eq!((again["seq"].clone(), again["duplicate"].as_bool()), (first["seq"].clone(), Some(true)));
    let retry_seq = first["seq"].as_u64().unwrap();

    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        // One publisher's events get increasing seqs in the order it sent them.
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    all.push(retry_seq);
    all.sort_unstable();
    assert_eq!(all, (1..=2 * per + 1).collect::<Vec<_>>());
    // Every receiver, on either instance, sees 1..=N exactly once and in seq order (its own
    // instance's commits and the other's arriving through Redis are sequenced).
    for rx in [&mut rx_a, &mut rx_b] {
        let got = seqs(rx, dm, 2 * per as usize + 1).await;
        assert_eq!(got, (1..=2 * per + 1).collect::<Vec<_>>());
        rx.silent(200).await;
    }
    a.stop().await;
    b.stop().await;
}

/// The server API on a durable channel: stored first, answered with the seq, idempotent by
/// msg_id; a dm reaches both users. With `dm` not durable, dm events still reach both users'
/// connections (implicit membership) without a seq.
#[tokio::test]
async fn server_api_publish_and_implicit_dm_membership() {
    let key = "server-api-key-0123456789";
    let s = Server::start(&[("SYNCGATE_API_KEY", key)]).await;
    let mut a = s.client("sa", "d1").await;
    let mut b = s.client("sb", "d1").await;
    let body = r#"{"channel":"dm:sa:sb","event":"note","data":{"n":1},"msg_id":"srv-1"}"#;
    let (status, r) = http_json(s.addr, "POST", "/api/publish", Some(key), body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["seq"].as_u64(), r["duplicate"].as_bool()), (Some(1), Some(false)));
    for c in [&mut a, &mut b] {
        let e = c.recv().await;
        assert_eq!((e["seq"].as_u64(), e["from"]["user_id"].as_str()), (Some(1), Some("server")), "{e}");
    }
    let (_, r) = http_json(s.addr, "POST", "/api/publish", Some(key), body).await;
    assert_eq!((r["seq"].as_u64(), r["duplicate"].as_bool()), (Some(1), Some(true)));
    a.silent(200).await;
    let (status, _) =
        http_json(s.addr, "POST", "/api/publish", Some(key), r#"{"channel":"dm:sb:sa","event":"x"}"#).await;
    assert_eq!(status, 400);
    s.stop().await;

    let s = Server::start(&[("SYNCGATE_DURABLE_NAMESPACES", "none")]).await;
    let mut a1 = s.client("sa", "d1").await;
    let mut a2 = s.client("sa", "d2").await;
    let mut b = s.client("sb", "d1").await;
    let ack = a1.request(json!({"type":"publish","id":1,"channel":"dm:sa:sb","event":"m","data":1})).await;
    assert_eq!(ack, json!({"type":"ack","id":1,"channel":"dm:sa:sb"}));
    for c in [&mut a2, &mut b] {
        let e = c.recv().await;
        assert_eq!(e["channel"], "dm:sa:sb");
        assert_eq!(e.get("seq"), None);
    }
    a1.silent(200).await;
    let e = a1.request(json!({"type":"ack","channel":"dm:sa:sb","seq":1})).await;
    assert_eq!(e["code"], "bad_request");
    assert_eq!(get(&s, "/api/history?channel=dm:sa:sb", &token("sa")).await.0, 400);
    s.stop().await;
}

/// The durable queue is bounded in bytes too: a publish that does not fit is refused with
/// `unavailable` (nothing stored, nothing delivered) and the connection keeps working.
#[tokio::test]
async fn durable_queue_byte_bound() {
    let s = Server::start(&[("SYNCGATE_DURABLE_QUEUE_BYTES", "1024")]).await;
    let mut a = s.client("qa", "d").await;
    let mut b = s.client("qb", "d").await;
    let big = "x".repeat(2000);
    let e = a.request(json!({"type":"publish","id":1,"channel":"dm:qa:qb","event":"m","data":big})).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("unavailable")), "{e}");
    assert_eq!(e["id"], 1);
    b.silent(200).await;
    assert_eq!(publish(&mut a, "dm:qa:qb", 2, None, "small").await["seq"], 1);
    s.stop().await;
}

/// A replay far larger than the connection's queue (16 frames) goes through that queue page by
/// page while live events keep coming: every event once, in order, and no slow-consumer close.
#[tokio::test]
async fn replay_pages_through_a_small_outbound_queue() {
    let s = Server::start(&[("SYNCGATE_OUTBOUND_QUEUE", "16"), ("SYNCGATE_MESSAGES_PER_MIN", "100000")]).await;
    let dm = "dm:ann:ben";
    let mut ann = s.client("ann", "a1").await;
    for i in 1..=300u64 {
        ann.send(json!({"type":"publish","id":i,"channel":dm,"event":"m","data":i})).await;
        if i % 10 == 0 {
            // Acks come back in order; waiting every 10 keeps ann's own queue small too.
            while ann.recv().await["id"] != i {}
        }
    }
    let total = 400u64;
    // ben is a participant: dm events reach his connection through his user channel, so live
    // events published before his subscribe is handled may come first; the stream starts at
    // the `subscribed` reply.
    let mut ben = s.client("ben", "b1").await;
    let publisher = tokio::spawn(async move {
        for i in 301..=total {
            // Each ack is read: ann's own 16-frame queue must not overflow.
            ann.send(json!({"type":"publish","id":i,"channel":dm,"event":"m","data":i})).await;
            while ann.recv().await["id"] != i {}
        }
        ann
    });
    ben.send(json!({"type":"subscribe","channel":dm,"since":0})).await;
    let mut got = Vec::new();
    let mut subscribed = false;
    while got.last().copied() != Some(total) {
        let v = match tokio::time::timeout(Duration::from_secs(4), ben.recv()).await {
            Ok(v) => v,
            Err(_) => panic!("stalled after {:?}", got.last()),
        };
        match v["type"].as_str() {
            Some("subscribed") => {
                assert_eq!(v["recovered"], true, "{v}");
                subscribed = true;
            }
            Some("event") if subscribed => got.push(v["seq"].as_u64().unwrap()),
            Some("event") => {}
            _ => panic!("unexpected {v}"),
        }
    }
    assert_eq!(got, (1..=total).collect::<Vec<_>>());
    ben.silent(200).await;
    publisher.await.unwrap();
    assert_eq!(ben.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

/// A durable event over `SYNCGATE_DURABLE_MAX_EVENT_BYTES` gets `too_large` and nothing is
/// stored; the connection stays open and the next publish is acked. `event` and `msg_id` with
/// control characters are `bad_request`.
#[tokio::test]
async fn oversized_durable_events_and_control_characters_are_refused() {
    let s = Server::start(&[("SYNCGATE_DURABLE_MAX_EVENT_BYTES", "1024")]).await;
    let dm = "dm:ann:ben";
    let mut ann = s.client("ann", "a1").await;
    let mut ben = s.client("ben", "b1").await;
    let e = ann.request(json!({"type":"publish","id":1,"channel":dm,"event":"m","data":"x".repeat(2000)})).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str(), e["id"].as_u64()), (Some("error"), Some("too_large"), Some(1)));
    for (field, value) in [("event", "m\u{0}"), ("msg_id", "id\n1")] {
        let mut frame = json!({"type":"publish","id":2,"channel":dm,"event":"m","data":1});
        frame[field] = json!(value);
        let e = ann.request(frame).await;
        assert_eq!(e["code"], "bad_request", "{field}: {e}");
    }
    let ack = publish(&mut ann, dm, 3, None, "small").await;
    assert_eq!(ack["seq"], 1, "nothing was stored before: {ack}");
    assert_eq!(seqs(&mut ben, dm, 1).await, vec![1]);
    s.stop().await;
}

/// History passes `data` through as the stored JSON text (not rebuilt as a tree: key order is
/// kept, where a map would sort it) and a page holds at most `SYNCGATE_HISTORY_PAGE_BYTES` of events, stopping early
/// with `has_more` in either paging direction.
#[tokio::test]
async fn history_pages_are_bounded_in_bytes_and_pass_data_through() {
    let s = Server::start(&[("SYNCGATE_HISTORY_PAGE_BYTES", "8192")]).await;
    let dm = "dm:ann:ben";
    let mut ann = s.client("ann", "a1").await;
    ann.send_text(&format!(r#"{{"type":"publish","id":1,"channel":"{dm}","event":"m","data":{{"z":1,"a":[2,"x"]}}}}"#))
        .await;
    while ann.recv().await["id"] != 1 {}
    for i in 2..=11u64 {
        ann.send(json!({"type":"publish","id":i,"channel":dm,"event":"m","data":"x".repeat(3000)})).await;
        while ann.recv().await["id"] != i {}
    }
    let bearer = token("ann");
    // Raw body: the first event's data exactly as published.
    let raw = |path: String| {
        let addr = s.addr;
        let bearer = bearer.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n\r\n"
            );
            c.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out.split("\r\n\r\n").nth(1).unwrap().to_string()
        }
    };
    let body = raw(format!("/api/history?channel={dm}&after=0&limit=100")).await;
    assert!(body.contains(r#""data":{"z":1,"a":[2,"x"]}"#), "{}", &body[..200.min(body.len())]);
    let v: Value = serde_json::from_str(&body).unwrap();
    let n = v["events"].as_array().unwrap().len();
    assert!((2..=3).contains(&n), "8 KiB holds the small event and two of 3 000 bytes: {n}");
    assert_eq!(v["has_more"], true);
    // Newest page first: the byte bound keeps the newest events.
    let v: Value = serde_json::from_str(&raw(format!("/api/history?channel={dm}&limit=100")).await).unwrap();
    let seqs: Vec<u64> = v["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.last(), Some(&11), "{seqs:?}");
    assert!(seqs.len() < 11 && v["has_more"] == true, "{seqs:?}");
    // One event larger than the bound still makes a page.
    let v: Value = serde_json::from_str(&raw(format!("/api/history?channel={dm}&after=1&limit=100")).await).unwrap();
    assert!(!v["events"].as_array().unwrap().is_empty());
    s.stop().await;
}

/// The read APIs are limited per user (`SYNCGATE_API_REQUESTS_PER_MIN`): 429 JSON beyond it,
/// while another user is still served.
#[tokio::test]
async fn read_apis_are_rate_limited_per_user() {
    let s = Server::start(&[("SYNCGATE_API_REQUESTS_PER_MIN", "5")]).await;
    let (ann, ben) = (token("ann"), token("ben"));
    let paths = [
        "/api/history?channel=dm:ann:ben",
        "/api/conversation?with=ben",
        "/api/conversations",
        "/api/devices",
        "/api/users/search?q=be",
    ];
    for p in paths {
        assert_ne!(get(&s, p, &ann).await.0, 429, "{p}");
    }
    for p in paths {
        let (status, body) = get(&s, p, &ann).await;
        assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "{p}: {body}");
    }
    assert_eq!(get(&s, "/api/conversations", &ben).await.0, 200, "another user is not affected");
    s.stop().await;
}

/// A NUL inside `data` (PostgreSQL refuses `\u0000` in JSON text it converts) is stored and
/// replayed as published, and the other events committed beside it are acked.
async fn nul_in_data(s: &Server) {
    let dm = "dm:ann:ben";
    let mut ann = s.client("ann", "a1").await;
    let mut ben = s.client("ben", "b1").await;
    ann.send_text(&format!(r#"{{"type":"publish","id":1,"channel":"{dm}","event":"m","data":{{"t":"a\u0000b"}}}}"#))
        .await;
    ben.send(json!({"type":"publish","id":2,"channel":dm,"event":"m","data":"plain"})).await;
    let a = loop {
        let v = ann.recv().await;
        if v["id"] == 1 {
            break v;
        }
    };
    let b = loop {
        let v = ben.recv().await;
        if v["id"] == 2 {
            break v;
        }
    };
    assert_eq!((a["type"].as_str(), b["type"].as_str()), (Some("ack"), Some("ack")), "{a} {b}");
    let mut c = s.client("ben", "b2").await;
    c.send(json!({"type":"subscribe","channel":dm,"since":0})).await;
    let mut datas = Vec::new();
    while datas.len() < 2 {
        let v = c.recv().await;
        if v["type"] == "event" {
            datas.push(v["data"].clone());
        }
    }
    assert!(datas.contains(&json!({"t":"a\u{0}b"})), "{datas:?}");
    assert!(datas.contains(&json!("plain")), "{datas:?}");
}

on_both_stores!(nul_in_data_on_sqlite, nul_in_data_on_postgres, server nul_in_data);
