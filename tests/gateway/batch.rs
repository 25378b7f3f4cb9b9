//! One event the database refuses never fails the others of its group commit: the refused
//! publish alone gets `bad_request`, every other publisher of the batch its ack, on SQLite and
//! PostgreSQL. No realistic input is refused by the schema any more (NUL inside `data` is
//! stored; see `durable::nul_in_data_*`), so the test gives its own fresh database a real
//! refusal: a CHECK constraint (PostgreSQL) or a trigger (SQLite) refusing the event name
//! `poison`. To put the bad event in one batch with many others, it holds the channel's head
//! (a row lock on PostgreSQL, the write lock on SQLite) while the publishes queue up.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::common::*;

const CHANNEL: &str = "room:batch";
const PUBLISHERS: usize = 20;
const POISONED: usize = 10;

fn metric(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.trim().parse().ok())).unwrap_or(0)
}

/// Waits until the durable queue (publishes not yet taken by the writer) satisfies `ok`.
async fn queue_until(s: &Server, ok: impl Fn(u64) -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let n = metric(&metrics_text(s).await, "syncgate_durable_queue ");
        if ok(n) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "durable queue stuck at {n}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The reply frame to request `id` on `c`.
async fn reply(c: &mut Client, id: u64) -> Value {
    loop {
        let v = c.recv().await;
        if (v["type"] == "ack" || v["type"] == "error") && v["id"] == id {
            return v;
        }
    }
}

async fn one_bad_event(env: &[(&str, &str)]) {
    sqlx::any::install_default_drivers();
    let dir = temp_dir();
    let dir_text = dir.display().to_string();
    let mut all = vec![
        ("SYNCGATE_DATA_DIR", dir_text.as_str()),
        ("SYNCGATE_DURABLE_NAMESPACES", "dm,room"),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
    ];
    all.extend_from_slice(env);
    let s = Server::start(&all).await;
    let mut clients = Vec::new();
    for i in 0..PUBLISHERS {
        clients.push(s.client(&format!("pub{i}"), "d").await);
    }
    // The channel's head exists (its row is what PostgreSQL locks).
    clients[0].send(json!({"type":"publish","id":1,"channel":CHANNEL,"event":"m","data":"warm"})).await;
    assert_eq!(reply(&mut clients[0], 1).await["seq"], 1);

    let pg = env.iter().find(|(k, _)| *k == "DATABASE_URL").map(|(_, v)| v.to_string());
    let url = pg.clone().unwrap_or_else(|| format!("sqlite://{}", dir.join("syncgate.db").display()));
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
    if pg.is_some() {
        db.execute("ALTER TABLE events ADD CONSTRAINT test_refuses_poison CHECK (event <> 'poison')").await.unwrap();
        db.execute("BEGIN").await.unwrap();
        db.execute(sqlx::AssertSqlSafe(format!("SELECT 1 FROM channel_heads WHERE channel = '{CHANNEL}' FOR UPDATE")))
            .await
            .unwrap();
    } else {
        db.execute(
            "CREATE TRIGGER test_refuses_poison BEFORE INSERT ON events WHEN NEW.event = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison refused by the test'); END",
        )
        .await
        .unwrap();
        db.execute("BEGIN IMMEDIATE").await.unwrap();
    }

    // The first publishes are taken by the writer and wait on the lock (one batch on SQLite,
    // two pipelined ones on PostgreSQL); the rest, the bad one among them, queue up behind.
    clients[1].send(json!({"type":"publish","id":2,"channel":CHANNEL,"event":"m","data":1})).await;
    queue_until(&s, |n| n == 0).await;
    clients[2].send(json!({"type":"publish","id":2,"channel":CHANNEL,"event":"m","data":2})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (i, c) in clients.iter_mut().enumerate().skip(3) {
        let event = if i == POISONED { "poison" } else { "m" };
        c.send(json!({"type":"publish","id":2,"channel":CHANNEL,"event":event,"data":i})).await;
    }
    queue_until(&s, |n| n as usize >= PUBLISHERS - 3).await;
    db.execute("COMMIT").await.unwrap();

    let mut seqs = Vec::new();
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        let r = reply(c, 2).await;
        if i == POISONED {
            assert_eq!((r["type"].as_str(), r["code"].as_str()), (Some("error"), Some("bad_request")), "{r}");
            assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong", "the connection stays open");
        } else {
            assert_eq!(r["type"], "ack", "publisher {i}: {r}");
            seqs.push(r["seq"].as_u64().unwrap());
        }
    }
    seqs.sort_unstable();
    let expected: Vec<u64> = (2..PUBLISHERS as u64).collect();
    assert_eq!(seqs, expected, "every good event stored, seqs contiguous");

    // Replayed: the warm-up and the 18 good events, nothing of the bad one.
    let mut reader = s.client("reader", "d").await;
    reader.send(json!({"type":"subscribe","channel":CHANNEL,"since":0})).await;
    let mut replayed = Vec::new();
    while replayed.len() < PUBLISHERS - 1 {
        let v = reader.recv().await;
        if v["type"] == "event" {
            assert_ne!(v["event"], "poison");
            replayed.push(v["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(replayed, (1..PUBLISHERS as u64).collect::<Vec<_>>());
    let m = metrics_text(&s).await;
    assert_eq!(metric(&m, "syncgate_durable_refused_total "), 1, "{m}");
    assert_eq!(metric(&m, "syncgate_durable_failed_total "), 0, "{m}");
    // A later publish goes through as usual.
    clients[POISONED].send(json!({"type":"publish","id":3,"channel":CHANNEL,"event":"m","data":"after"})).await;
    assert_eq!(reply(&mut clients[POISONED], 3).await["seq"], PUBLISHERS as u64);
    s.stop().await;
}

on_both_stores!(
    one_refused_event_spares_its_batch_on_sqlite,
    one_refused_event_spares_its_batch_on_postgres,
    one_bad_event
);
