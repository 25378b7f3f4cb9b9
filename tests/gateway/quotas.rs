//! Durable publish quotas per user (`SYNCGATE_DURABLE_EVENTS_PER_MIN`,
//! `SYNCGATE_DURABLE_BYTES_PER_MIN`): over budget a publish alone gets `rate_limited`, the
//! connection and other users carry on, the server API is exempt, and instances sharing Redis
//! share the budget.

use serde_json::{json, Value};

use crate::common::*;

const API_KEY: &str = "quota-api-key-0123456789";

/// The budget is a fixed clock minute: start a test well inside one so it cannot roll over
/// half-way (a test takes a few seconds).
async fn inside_one_minute() {
    let into =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 60_000) as u64;
    if into > 45_000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_000 - into + 200)).await;
    }
}

/// Publishes `text` on `channel` with request id `id`; the ack or error frame answering it.
async fn publish(c: &mut Client, channel: &str, id: u64, text: &str) -> Value {
    c.send(json!({"type":"publish","id":id,"channel":channel,"event":"message","data":{"text":text}})).await;
    loop {
        let v = c.recv().await;
        if (v["type"] == "ack" || v["type"] == "error") && v["id"] == id {
            return v;
        }
    }
}

/// The connection still answers a ping (events of the user's other devices may come first).
async fn still_answers(c: &mut Client) {
    c.send(json!({"type":"ping","id":"p"})).await;
    loop {
        let v = c.recv().await;
        if v["type"] != "event" {
            assert_eq!((v["type"].as_str(), v["id"].as_str()), (Some("pong"), Some("p")), "{v}");
            return;
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test]
async fn events_quota_refuses_one_publish_and_spares_others() {
    inside_one_minute().await;
    let s = Server::start(&[("SYNCGATE_DURABLE_EVENTS_PER_MIN", "5"), ("SYNCGATE_API_KEY", API_KEY)]).await;
    let dm = "dm:qa:qb";
    // Two connections of one user share the budget.
    let mut phone = s.client("qa", "phone").await;
    let mut laptop = s.client("qa", "laptop").await;
    for i in 1..=5u64 {
        let c = if i % 2 == 0 { &mut laptop } else { &mut phone };
        let ack = publish(c, dm, i, &format!("m{i}")).await;
        assert_eq!((ack["type"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(i)), "{ack}");
    }
    for c in [&mut phone, &mut laptop] {
        let e = publish(c, dm, 6, "over").await;
        assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("rate_limited")), "{e}");
        still_answers(c).await;
    }
    // Another user is unaffected, and sees only the five stored events.
    let mut other = s.client("qb", "phone").await;
    let ack = publish(&mut other, dm, 1, "from b").await;
    assert_eq!((ack["type"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(6)), "{ack}");
    // The server API is exempt.
    let body = r#"{"channel":"dm:qa:qb","event":"note","data":{"n":1}}"#;
    let (status, r) = http_json(s.addr, "POST", "/api/publish", Some(API_KEY), body).await;
    assert_eq!((status, r["seq"].as_u64()), (200, Some(7)), "{r}");
    let m = metrics_text(&s).await;
    assert_eq!(metric(&m, "syncgate_durable_rate_limited_total"), 2, "{m}");
    s.stop().await;
}

#[tokio::test]
async fn bytes_quota_counts_data_and_event() {
    inside_one_minute().await;
    let s = Server::start(&[("SYNCGATE_DURABLE_BYTES_PER_MIN", "2048")]).await;
    let dm = "dm:qc:qd";
    let mut c = s.client("qc", "phone").await;
    let big = "x".repeat(900);
    for i in 1..=2u64 {
        let ack = publish(&mut c, dm, i, &big).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    // About 1 850 bytes used: another 900 would pass 2 048.
    let e = publish(&mut c, dm, 3, &big).await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    // The refused publish was not counted: a small one still fits.
    let ack = publish(&mut c, dm, 4, "small").await;
    assert_eq!((ack["type"].as_str(), ack["seq"].as_u64()), (Some("ack"), Some(3)), "{ack}");
    still_answers(&mut c).await;
    let mut d = s.client("qd", "phone").await;
    assert_eq!(publish(&mut d, dm, 1, &big).await["type"], "ack");
    s.stop().await;
}

#[tokio::test]
async fn two_instances_share_one_budget_through_redis() {
    inside_one_minute().await;
    let db = crate::accounts::fresh_pg_database().await;
    let prefix = crate::cluster::prefix();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", crate::cluster::REDIS),
        ("SYNCGATE_REDIS_PREFIX", prefix.as_str()),
        ("SYNCGATE_DURABLE_EVENTS_PER_MIN", "6"),
    ];
    let (a, b) = (Server::start(&env).await, Server::start(&env).await);
    let dm = "dm:qe:qf";
    let mut on_a = a.client("qe", "phone").await;
    let mut on_b = b.client("qe", "laptop").await;
    // Alternating instances: six in all are admitted, wherever they arrive.
    let mut acked = 0;
    for i in 1..=6u64 {
        let c = if i % 2 == 0 { &mut on_b } else { &mut on_a };
        let r = publish(c, dm, i, "x").await;
        assert_eq!(r["type"], "ack", "{r}");
        acked += 1;
    }
    assert_eq!(acked, 6);
    for c in [&mut on_a, &mut on_b] {
        let e = publish(c, dm, 7, "over").await;
        assert_eq!(e["code"], "rate_limited", "{e}");
        still_answers(c).await;
    }
    let mut other = b.client("qf", "phone").await;
    assert_eq!(publish(&mut other, dm, 1, "fine").await["type"], "ack");
    let refused = metric(&metrics_text(&a).await, "syncgate_durable_rate_limited_total")
        + metric(&metrics_text(&b).await, "syncgate_durable_rate_limited_total");
    assert_eq!(refused, 2);
    a.stop().await;
    b.stop().await;
}
