//! One contract, two buses: what every `Bus` must do, checked against the in-process bus and the
//! Redis bus (real Redis) through the public API, with registry handles standing in for sockets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use syncgate::bus::{Bus, Control, LocalBus, RedisBus, RedisSettings};
use syncgate::registry::{ConnHandle, Membership, Registry};
use tokio_tungstenite::tungstenite::Message;

struct Node {
    registry: Arc<Registry>,
    bus: Arc<dyn Bus>,
}

async fn local() -> Node {
    let registry = Arc::new(Registry::new());
    Node { bus: Arc::new(LocalBus::new(registry.clone())), registry }
}

async fn redis(prefix: &str) -> (Node, Arc<RedisBus>) {
    let registry = Arc::new(Registry::new());
    let settings = RedisSettings {
        presence_ttl: Duration::from_secs(5),
        ..RedisSettings::for_url(crate::cluster::REDIS, prefix).unwrap()
    };
    let bus = RedisBus::start(settings, registry.clone()).await.unwrap();
    registry.set_hooks(bus.clone());
    (Node { bus: bus.clone(), registry }, bus)
}

fn conn(id: u64, user: &str) -> Arc<ConnHandle> {
    Arc::new(ConnHandle::new(id, user.into(), "d".into(), 1024, 1 << 20, Arc::default()))
}

/// Frames queued for `c` within `wait`, as text.
async fn drain(c: &ConnHandle, wait: Duration) -> Vec<String> {
    tokio::time::sleep(wait).await;
    let mut q = VecDeque::new();
    c.take(&mut q);
    q.into_iter().filter_map(|m| m.into_text().ok().map(|t| t.to_string())).collect()
}

async fn join(node: &Node, c: &Arc<ConnHandle>, channel: &str) -> Membership {
    let mut m = Membership::new(node.registry.clone(), c.clone());
    m.join(channel);
    node.bus.subscribe(channel).await;
    m
}

/// The contract on one node: publish reaches every local member but the origin, once.
async fn contract_single(node: &Node) {
    let (a, b, c) = (conn(1, "a"), conn(2, "b"), conn(3, "c"));
    let _ma = join(node, &a, "room:1").await;
    let _mb = join(node, &b, "room:1").await;
    let _mc = join(node, &c, "other:1").await;
    // Join announcements (asynchronous on a cluster bus) are not part of this check.
    let _ = drain(&a, Duration::from_millis(200)).await;
    let _ = drain(&b, Duration::ZERO).await;
    let n = node.bus.publish("room:1", Message::text("{\"k\":1}"), a.id);
    assert_eq!(n, 1, "local recipients");
    assert!(drain(&a, Duration::from_millis(100)).await.is_empty(), "the origin is excluded");
    assert_eq!(drain(&b, Duration::ZERO).await, vec!["{\"k\":1}"]);
    assert!(drain(&c, Duration::ZERO).await.is_empty(), "other channels unaffected");

    // Presence lists each member once.
    let p = node.bus.presence("room:1", &None).await;
    let v: serde_json::Value = serde_json::from_str(p.as_str()).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 2, "{v} {}", p.as_str());

    // Control: disconnect reaches the user's connections.
    let u = conn(9, "u");
    let _mu = join(node, &u, "user:u").await;
    node.bus.control(Control::Disconnect { user_id: "u".into(), device_id: None });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(u.closing().is_some());
    assert!(node.bus.healthy());
}

#[tokio::test]
async fn local_bus_meets_the_contract() {
    let node = local().await;
    contract_single(&node).await;
    assert_eq!(node.bus.state(), "local");
}

#[tokio::test]
async fn redis_bus_meets_the_contract_and_crosses_instances() {
    let prefix = format!("sgcontract:{}:", syncgate::util::random_hex(6));
    let (n1, b1) = redis(&prefix).await;
    contract_single(&n1).await;
    assert_eq!(n1.bus.state(), "up");

    // Across instances: a second node receives, exactly once, without decoding on the way.
    let (n2, _b2) = redis(&prefix).await;
    let remote = conn(1, "r");
    let _mr = join(&n2, &remote, "room:x").await;
    let origin = conn(5, "o");
    let _mo = join(&n1, &origin, "room:x").await;
    let _ = drain(&remote, Duration::from_millis(300)).await; // join
    for i in 0..100 {
        n1.bus.publish("room:x", Message::text(format!("{{\"i\":{i}}}")), origin.id);
    }
    let got = drain(&remote, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], "{\"i\":99}");
    // Batched: fewer PUBLISH commands than messages.
    let stats = &b1.metrics.bus;
    let (cmds, msgs) = (stats.publish_commands.get(), stats.messages.get());
    assert!(msgs >= 100 && cmds < msgs, "{cmds} commands for {msgs} messages");
    // Per-user cap across instances.
    assert!(n1.bus.acquire_user("capped", 2).await);
    assert!(n2.bus.acquire_user("capped", 2).await);
    assert!(!n1.bus.acquire_user("capped", 2).await);
    forget_prefix(&prefix);
}

/// Deletes what the test left under `prefix` in the shared Redis: its buses end without the
/// graceful leave, and the instance keys (`tops`, `instances`, …) have no expiry.
fn forget_prefix(prefix: &str) {
    let cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379"])
            .args(args)
            .output()
            .expect("redis-cli")
    };
    let out = cli(&["--scan", "--pattern", &format!("{prefix}*")]);
    let keys: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    if !keys.is_empty() {
        let mut args = vec!["del"];
        args.extend(keys.iter().map(String::as_str));
        cli(&args);
    }
}
