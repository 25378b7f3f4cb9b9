//! Exactly once at the seam between live delivery and replay: a durable event reaches one
//! connection at most once, whether it came live (a `dm:` event through the user channel before
//! any subscribe) or from the store (a replay after `since`), in any order of the two; what
//! follows the `subscribed` reply is in `seq` order, and nothing after `since` is missed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Publishes on `c` and waits for its ack (event frames in between are skipped).
async fn publish(c: &mut Client, channel: &str, id: u64) -> u64 {
    c.send(json!({"type":"publish","id":id,"channel":channel,"event":"m","data":id})).await;
    loop {
        let v = c.recv().await;
        assert_ne!(v["type"], "error", "{v}");
        if v["type"] == "ack" && v["id"] == id {
            return v["seq"].as_u64().expect("a durable ack has a seq");
        }
    }
}

/// Event seqs of `channel` until `n` have arrived.
async fn events(c: &mut Client, channel: &str, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv().await;
        if v["type"] == "event" && v["channel"] == channel {
            out.push(v["seq"].as_u64().expect("durable events carry seq"));
        }
    }
    out
}

/// The deterministic seam: events given live before the subscribe are not replayed again, the
/// missed ones below them are; a later re-subscribe with `since` replays only what this
/// connection was never given.
#[tokio::test]
async fn live_dm_before_subscribe_is_not_replayed_again() {
    let s = Server::start(&[]).await;
    let dm = "dm:alice:bob";
    let mut alice = s.client("alice", "phone").await;
    for i in 1..=5 {
        assert_eq!(publish(&mut alice, dm, i).await, i);
    }
    // A fresh connection of bob's: 6 and 7 arrive live (implicit dm membership), unsubscribed.
    let mut bob = s.client("bob", "phone").await;
    for i in 6..=7 {
        publish(&mut alice, dm, i).await;
    }
    assert_eq!(events(&mut bob, dm, 2).await, vec![6, 7]);
    // The client had 1..=3: the replay brings 4 and 5, not 6 and 7 again.
    let sub = bob.request(json!({"type":"subscribe","channel":dm,"since":3,"id":"s"})).await;
    assert_eq!((sub["type"].as_str(), sub["recovered"].as_bool()), (Some("subscribed"), Some(true)), "{sub}");
    assert_eq!(sub["seq"], 7);
    assert_eq!(events(&mut bob, dm, 2).await, vec![4, 5]);
    bob.silent(300).await;
    publish(&mut alice, dm, 8).await;
    assert_eq!(events(&mut bob, dm, 1).await, vec![8]);
    // Left and subscribed again with an older `since`: only 1..=3 were never given here.
    let r = bob.request(json!({"type":"unsubscribe","channel":dm})).await;
    assert_eq!(r["type"], "unsubscribed", "{r}");
    let sub = bob.request(json!({"type":"subscribe","channel":dm,"since":0,"id":"again"})).await;
    assert_eq!(sub["recovered"], true, "{sub}");
    assert_eq!(events(&mut bob, dm, 3).await, vec![1, 2, 3]);
    bob.silent(300).await;
    publish(&mut alice, dm, 9).await;
    assert_eq!(events(&mut bob, dm, 1).await, vec![9]);
    bob.silent(200).await;
    s.stop().await;
}

/// Live events arriving while the held subscribe reads the stream state, with a `since` below
/// them: each once, in order after the reply.
#[tokio::test]
async fn live_dm_after_subscribe_with_since_is_once_and_in_order() {
    let s = Server::start(&[]).await;
    let dm = "dm:carol:dave";
    let mut carol = s.client("carol", "phone").await;
    for i in 1..=70 {
        publish(&mut carol, dm, i).await;
    }
    let mut dave = s.client("dave", "phone").await;
    publish(&mut carol, dm, 71).await;
    assert_eq!(events(&mut dave, dm, 1).await, vec![71]);
    // A replay longer than one page below the live event: 2..=70, then live 72.. in order.
    dave.send(json!({"type":"subscribe","channel":dm,"since":1,"id":1})).await;
    publish(&mut carol, dm, 72).await;
    let mut after = Vec::new();
    loop {
        let v = dave.recv().await;
        if v["type"] == "subscribed" {
            assert_eq!(v["recovered"], true, "{v}");
            continue;
        }
        if v["type"] == "event" {
            after.push(v["seq"].as_u64().expect("seq"));
            if after.len() == 70 {
                break;
            }
        }
    }
    let want: Vec<u64> = (2..=70).chain([72]).collect();
    assert_eq!(after, want);
    dave.silent(300).await;
    s.stop().await;
}

/// One round's connection: the recipient connects while events are being published, and asks
/// for what it missed after `since` (a dm subscribe, or `?since=` on a durable user channel).
async fn connect(s: &Server, user: &str, channel: &str, since: u64, by_query: bool) -> Client {
    if by_query {
        let c = s.client_with(&token(user), "reader", &format!("&since={since}")).await;
        assert_eq!(c.welcome["recovered"], true, "{}", c.welcome);
        return c;
    }
    let mut c = s.client(user, "reader").await;
    // Let live events reach the fresh connection before its subscribe is read.
    tokio::time::sleep(Duration::from_millis(since % 4)).await;
    c.send(json!({"type":"subscribe","channel":channel,"since":since,"id":"seam"})).await;
    c
}

/// Rounds of connect + replay while a publisher hammers `channel` (bounded in count and time):
/// every round, each seq at most once, everything after `since` received, and every event
/// after the subscribe reply in increasing order. Returns (rounds, events received).
/// The publisher connects to `ps`, the reader to `s` (the same server or another instance).
async fn hammer(
    ps: &Server,
    s: &Server,
    publisher: (&str, &str),
    reader: &str,
    channel: &str,
    by_query: bool,
) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut p = ps.client(publisher.0, publisher.1).await;
    let (ch, flag) = (channel.to_string(), stop.clone());
    let pub_task = tokio::spawn(async move {
        let mut id = 0;
        while !flag.load(Ordering::Relaxed) && id < 20_000 {
            id += 1;
            publish(&mut p, &ch, id).await;
            if id % 8 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        id
    });
    let full = if channel == "user" { format!("user:{reader}") } else { channel.to_string() };
    let mut since = 0u64;
    let (mut rounds, mut received) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while rounds < 40 && tokio::time::Instant::now() < deadline {
        rounds += 1;
        let mut c = connect(s, reader, channel, since, by_query).await;
        let mut replied = by_query;
        let mut got = BTreeSet::new();
        let mut after_reply: Vec<u64> = Vec::new();
        // Read until the reply came, 20 events followed it and nothing after `since` is missing.
        loop {
            let v = c.recv().await;
            if v["type"] == "subscribed" {
                assert_eq!(v["recovered"], true, "round {rounds}: {v}");
                replied = true;
                continue;
            }
            if v["type"] != "event" || v["channel"] != full.as_str() {
                continue;
            }
            let seq = v["seq"].as_u64().expect("durable events carry seq");
            assert!(got.insert(seq), "round {rounds} (since {since}): seq {seq} received twice");
            if replied {
                if let Some(&prev) = after_reply.last() {
                    assert!(seq > prev, "round {rounds}: seq {seq} after {prev}");
                }
                after_reply.push(seq);
            }
            let top = *got.last().unwrap_or(&since);
            let contiguous = got.range(since + 1..).count() as u64 == top.saturating_sub(since);
            if replied && after_reply.len() >= 20 && contiguous {
                since = top;
                break;
            }
        }
        received += got.len();
        drop(c);
        // Missed while away: the next round replays them.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let published = pub_task.await.expect("publisher ran");
    assert!(published > 100, "the publisher kept publishing ({published})");
    (rounds, received)
}

#[tokio::test]
async fn dm_seam_under_hammering_publisher() {
    let s = Server::start(&[("SYNCGATE_DURABLE_EVENTS_PER_MIN", "1000000"), ("SYNCGATE_MESSAGES_PER_MIN", "1000000")])
        .await;
    let (rounds, received) = hammer(&s, &s, ("erin", "phone"), "frank", "dm:erin:frank", false).await;
    assert!(rounds >= 10, "{rounds} rounds");
    eprintln!("dm seam: {rounds} rounds, {received} events received");
    s.stop().await;
}

#[tokio::test]
async fn user_channel_since_at_connect_under_hammering_publisher() {
    let s = Server::start(&[
        ("SYNCGATE_DURABLE_NAMESPACES", "dm,user"),
        ("SYNCGATE_DURABLE_EVENTS_PER_MIN", "1000000"),
        ("SYNCGATE_MESSAGES_PER_MIN", "1000000"),
    ])
    .await;
    let (rounds, received) = hammer(&s, &s, ("gina", "desk"), "gina", "user", true).await;
    assert!(rounds >= 10, "{rounds} rounds");
    eprintln!("user seam: {rounds} rounds, {received} events received");
    s.stop().await;
}

/// The publisher on one instance, the reader on another: live events come through Redis (and
/// the cluster sequencer), replays from the shared PostgreSQL database.
#[tokio::test]
async fn dm_seam_across_instances() {
    let db = crate::accounts::fresh_pg_database().await;
    let prefix = format!("sgtest:{}:", syncgate::util::random_hex(6));
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", crate::cluster::REDIS),
        ("SYNCGATE_REDIS_PREFIX", prefix.as_str()),
        ("SYNCGATE_DURABLE_EVENTS_PER_MIN", "1000000"),
        ("SYNCGATE_MESSAGES_PER_MIN", "1000000"),
    ];
    let (a, b) = (Server::start(&env).await, Server::start(&env).await);
    let (rounds, received) = hammer(&a, &b, ("hana", "phone"), "ivan", "dm:hana:ivan", false).await;
    assert!(rounds >= 10, "{rounds} rounds");
    eprintln!("dm seam across instances: {rounds} rounds, {received} events received");
    a.stop().await;
    b.stop().await;
}
