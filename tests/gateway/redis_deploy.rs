//! Real Redis deployments the tests start themselves from the Debian `redis-server` binary: one
//! node over TLS with a CA the test generates (openssl), a Sentinel-watched primary with a
//! replica, and a three-shard Redis Cluster with a replica per shard. Each one carries traffic
//! between two gateway instances, and the failure tests SIGKILL a primary and measure how long
//! delivery takes to resume.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// Redis processes started by a test, SIGKILLed (by PID) when it ends.
struct Procs {
    children: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Procs {
    fn new() -> Procs {
        Procs { children: Vec::new(), dir: temp_dir() }
    }

    /// Starts `redis-server` with `args` (its port is `port`) and waits until it answers.
    fn start(&mut self, port: u16, args: &[String], tls: bool) {
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.children.push((port, child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(tls || ping(port)) {
            assert!(Instant::now() < deadline, "redis-server on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        if tls {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server (TLS) on {port} did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILLs the server on `port`.
    fn kill(&mut self, port: u16) {
        let (_, c) = self.children.iter_mut().find(|(p, _)| *p == port).expect("a server on that port");
        c.kill().unwrap();
        let _ = c.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ping(port: u16) -> bool {
    cli(port, &["ping"]) == "PONG"
}

fn s(v: &str) -> String {
    v.to_string()
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl in `dir`.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let st = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status().expect("openssl");
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=syncgate-test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

/// Two gateway instances on `url` sharing a fresh PostgreSQL database and a key prefix.
async fn pair(url: &str, extra: &[(&str, &str)]) -> (Server, Server) {
    let db = crate::accounts::fresh_pg_database().await;
    let prefix = crate::cluster::prefix();
    let mut env = vec![
        ("REDIS_URL", url),
        ("SYNCGATE_REDIS_PREFIX", prefix.as_str()),
        ("DATABASE_URL", db.as_str()),
        ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
        ("SYNCGATE_PRESENCE_TTL_MS", "3000"),
    ];
    env.extend_from_slice(extra);
    (Server::start(&env).await, Server::start(&env).await)
}

/// Publishes on `from` until `to` (subscribed to `channel`) receives one: how long it took.
async fn until_delivered(from: &mut Client, to: &mut Client, channel: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < within {
        n += 1;
        from.send(json!({"type":"publish","channel":channel,"event":"probe","data":{"n":n}})).await;
        let got = tokio::time::timeout(Duration::from_millis(100), async {
            loop {
                let v = to.recv().await;
                if v["type"] == "event" && v["event"] == "probe" {
                    return v;
                }
            }
        })
        .await;
        if got.is_ok() {
            return Some(started.elapsed());
        }
    }
    None
}

/// What `/ready` answers (status code).
async fn ready(s: &Server) -> u16 {
    http_json(s.addr, "GET", "/ready", None, "").await.0
}

/// Within 900 ms of `since`, `/ready` answers 503 and `syncgate_redis_up` reads 0 on `s`.
async fn outage_shows(s: &Server, since: Instant) {
    let (mut saw_503, mut saw_down) = (false, false);
    while since.elapsed() < Duration::from_millis(900) && !(saw_503 && saw_down) {
        saw_503 |= ready(s).await == 503;
        saw_down |= metrics_text(s).await.contains("syncgate_redis_up 0\n");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "/ready never showed the outage");
    assert!(saw_down, "syncgate_redis_up never showed the outage");
}

/// Cross-instance traffic over `url`: fan-out both ways on several channels, presence. Returns
/// the two clients (still members of the four channels).
async fn traffic_flows(a: &Server, b: &Server) -> (Client, Client) {
    let mut x = a.client("xa", "d1").await;
    let mut y = b.client("yb", "d1").await;
    for ch in ["room:alpha", "room:beta", "room:gamma", "room:delta"] {
        x.subscribe(ch).await;
        y.subscribe(ch).await;
        let took = until_delivered(&mut x, &mut y, ch, Duration::from_secs(5)).await;
        assert!(took.is_some(), "{ch}: a → b");
        let took = until_delivered(&mut y, &mut x, ch, Duration::from_secs(5)).await;
        assert!(took.is_some(), "{ch}: b → a");
    }
    let p = x.request(json!({"type":"presence","channel":"room:alpha","id":"p"})).await;
    let mut members: Vec<String> =
        p["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap().to_string()).collect();
    members.sort();
    assert_eq!(members, vec!["xa", "yb"], "{p}");
    (x, y)
}

#[tokio::test]
async fn tls_single_node_with_a_private_ca() {
    let mut procs = Procs::new();
    let (ca, cert, key) = make_certs(&procs.dir);
    let port = free_port();
    procs.start(
        port,
        &[
            s("--port"),
            s("0"),
            s("--tls-port"),
            port.to_string(),
            s("--tls-cert-file"),
            cert.display().to_string(),
            s("--tls-key-file"),
            key.display().to_string(),
            s("--tls-ca-cert-file"),
            ca.display().to_string(),
            s("--tls-auth-clients"),
            s("no"),
            s("--save"),
            s(""),
            s("--bind"),
            s("127.0.0.1"),
        ],
        true,
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let ca_path = ca.display().to_string();
    let (a, b) = pair(&url, &[("SYNCGATE_REDIS_CA_FILE", &ca_path)]).await;
    assert_eq!(ready(&a).await, 200);
    let _members = traffic_flows(&a, &b).await;
    a.stop().await;
    b.stop().await;

    // Without the CA the server's certificate is not trusted: the bus stays down (503).
    let lone = Server::start(&[("REDIS_URL", url.as_str()), ("SYNCGATE_REDIS_PREFIX", "sgtest:tls-untrusted:")]).await;
    assert_eq!(ready(&lone).await, 503);
    lone.stop().await;

    // A CA file that is not a CA, or one without TLS, stops start-up naming the variable.
    let mut vars = std::collections::HashMap::new();
    vars.insert(s("SYNCGATE_JWT_SECRET"), s(SECRET));
    vars.insert(s("REDIS_URL"), format!("redis://127.0.0.1:{port}"));
    vars.insert(s("SYNCGATE_REDIS_CA_FILE"), ca_path.clone());
    let err = syncgate::config::Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.contains("SYNCGATE_REDIS_CA_FILE"), "{err}");
    vars.insert(s("REDIS_URL"), "redis-sentinel://127.0.0.1:1".into());
    let err = syncgate::config::Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.contains("REDIS_URL"), "{err}");
    let junk = procs.dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let config = syncgate::config::Config::from_map(
        &[
            (s("SYNCGATE_JWT_SECRET"), s(SECRET)),
            (s("REDIS_URL"), url.clone()),
            (s("SYNCGATE_REDIS_CA_FILE"), junk.display().to_string()),
            (s("SYNCGATE_DATA_DIR"), procs.dir.join("data").display().to_string()),
        ]
        .into_iter()
        .collect(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = syncgate::server::run(listener, config, std::future::pending()).await.expect_err("refused");
    assert!(err.to_string().contains("SYNCGATE_REDIS_CA_FILE"), "{err}");
}

/// Durable events published on `a` while `b`'s client watches: each seq at most once live, and
/// after a resubscribe with `since` every one exactly once.
async fn durable_exactly_once(a: &Server, b: &Server, kill: impl FnOnce()) {
    let mut alice = a.client("alice", "d1").await;
    let mut bob = b.client("bob", "d1").await;
    let total = 60u64;
    let mut seen: Vec<u64> = Vec::new();
    let mut kill = Some(kill);
    for i in 1..=total {
        if i == 20 {
            (kill.take().unwrap())();
        }
        alice
            .send(json!({"type":"publish","channel":"dm:alice:bob","event":"m","data":{"i":i},"id":format!("p{i}")}))
            .await;
        // The ack (stored) before the next one; errors while the store is fine never happen.
        loop {
            let v = alice.recv().await;
            if v["id"] == format!("p{i}") {
                assert_eq!(v["type"], "ack", "{v}");
                break;
            }
        }
        while let Ok(v) = tokio::time::timeout(Duration::from_millis(20), bob.recv()).await {
            if v["type"] == "event" && v["channel"] == "dm:alice:bob" {
                seen.push(v["seq"].as_u64().unwrap());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a durable event delivered twice live: {seen:?}");
    // Whatever the outage cost, `since` brings back the rest, and nothing twice.
    let mut since = 0;
    while seen.contains(&(since + 1)) {
        since += 1;
    }
    let mut fresh = b.client("bob", "d2").await;
    fresh.send(json!({"type":"subscribe","channel":"dm:alice:bob","since":since,"id":"s"})).await;
    let mut replayed = Vec::new();
    let mut subscribed = false;
    while !subscribed || replayed.len() < (total - since) as usize {
        let v = tokio::time::timeout(Duration::from_secs(5), fresh.recv()).await.expect("replay");
        match v["type"].as_str() {
            Some("event") => replayed.push(v["seq"].as_u64().unwrap()),
            Some("subscribed") => subscribed = true,
            _ => {}
        }
    }
    eprintln!(
        "durable across the outage: {} of {total} live, {} replayed after since={since}",
        seen.len(),
        replayed.len()
    );
    assert_eq!(replayed, ((since + 1)..=total).collect::<Vec<_>>());
    fresh.silent(300).await;
}

/// A primary, its replica (in sync) and one sentinel watching them as `mymaster` (quorum 1,
/// down after 1 s): their ports.
fn start_sentinel(procs: &mut Procs) -> (u16, u16, u16) {
    let (primary, replica, sentinel) = (free_port(), free_port(), free_port());
    let base = |port: u16| vec![s("--port"), port.to_string(), s("--bind"), s("127.0.0.1"), s("--save"), s("")];
    procs.start(primary, &base(primary), false);
    let mut r = base(replica);
    r.extend([s("--replicaof"), s("127.0.0.1"), primary.to_string()]);
    procs.start(replica, &r, false);
    let conf = procs.dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {sentinel}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {primary} 1\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n\
             sentinel parallel-syncs mymaster 1\n"
        ),
    )
    .unwrap();
    procs.start(sentinel, &[conf.display().to_string(), s("--sentinel")], false);
    // The replica is in sync before anything depends on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cli(replica, &["info", "replication"]).contains("master_link_status:up") {
        assert!(Instant::now() < deadline, "replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    (primary, replica, sentinel)
}

#[tokio::test]
async fn sentinel_failover_resumes_delivery() {
    let mut procs = Procs::new();
    let (primary, replica, sentinel) = start_sentinel(&mut procs);
    let url = format!("redis-sentinel://127.0.0.1:{sentinel}/mymaster");
    let (a, b) = pair(&url, &[]).await;
    let _members = traffic_flows(&a, &b).await;

    // SIGKILL the primary while a client on each instance waits in room:f.
    let mut x = a.client("fx", "d1").await;
    let mut y = b.client("fy", "d1").await;
    x.subscribe("room:f").await;
    y.subscribe("room:f").await;
    assert!(until_delivered(&mut x, &mut y, "room:f", Duration::from_secs(5)).await.is_some());
    procs.kill(primary);
    let killed = Instant::now();
    // The outage shows on /ready and in the metrics while it lasts.
    outage_shows(&b, killed).await;
    let took = until_delivered(&mut x, &mut y, "room:f", Duration::from_secs(10)).await;
    let resumed = killed.elapsed();
    assert!(took.is_some(), "delivery did not resume after the failover");
    assert!(resumed <= Duration::from_secs(5), "resumed after {resumed:?}");
    eprintln!("sentinel failover: delivery resumed {resumed:?} after SIGKILL of the primary");
    // Both directions, so both instances' subscriptions are back; both ready again.
    assert!(until_delivered(&mut y, &mut x, "room:f", Duration::from_secs(5)).await.is_some());
    for s in [&a, &b] {
        let back = eventually(Duration::from_secs(5), || async { (ready(s).await == 200).then_some(()) }).await;
        assert!(back.is_some(), "/ready still 503 after the failover");
    }
    // The promoted node is the replica.
    assert!(cli(replica, &["info", "replication"]).contains("role:master"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn sentinel_failover_loses_no_durable_event_and_duplicates_none() {
    let mut procs = Procs::new();
    let (primary, _replica, sentinel) = start_sentinel(&mut procs);
    let url = format!("redis-sentinel://127.0.0.1:{sentinel}/mymaster");
    let (a, b) = pair(&url, &[]).await;
    let pid = procs.children.iter().find(|(p, _)| *p == primary).map(|(_, c)| c.id()).unwrap();
    durable_exactly_once(&a, &b, move || {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    })
    .await;
    a.stop().await;
    b.stop().await;
}

/// A three-shard Redis Cluster with one replica per shard: the primaries' ports first.
fn start_cluster(procs: &mut Procs) -> Vec<u16> {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    for p in &ports {
        let dir = procs.dir.join(p.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        procs.start(
            *p,
            &[
                s("--port"),
                p.to_string(),
                s("--bind"),
                s("127.0.0.1"),
                s("--save"),
                s(""),
                s("--appendonly"),
                s("no"),
                s("--cluster-enabled"),
                s("yes"),
                s("--cluster-config-file"),
                dir.join("nodes.conf").display().to_string(),
                s("--cluster-node-timeout"),
                s("1000"),
            ],
            false,
        );
    }
    let mut args: Vec<String> = vec![s("--cluster"), s("create")];
    args.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
    args.extend([s("--cluster-replicas"), s("1"), s("--cluster-yes")]);
    let out = Command::new("redis-cli").args(&args).output().expect("redis-cli");
    assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ports.iter().all(|p| cli(*p, &["cluster", "info"]).contains("cluster_state:ok")) {
        assert!(Instant::now() < deadline, "the cluster never became ok");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Replicas in sync.
    while !ports.iter().all(|p| {
        let info = cli(*p, &["info", "replication"]);
        info.contains("role:master") || info.contains("master_link_status:up")
    }) {
        assert!(Instant::now() < deadline, "replicas never synced");
        std::thread::sleep(Duration::from_millis(100));
    }
    ports.into_iter().filter(|p| cli(*p, &["info", "replication"]).contains("role:master")).collect()
}

/// The primary that owns `key`'s slot.
fn owner(primaries: &[u16], key: &str) -> u16 {
    let slot: u16 = cli(primaries[0], &["cluster", "keyslot", key]).parse().unwrap();
    for p in primaries {
        let nodes = cli(*p, &["cluster", "nodes"]);
        for line in nodes.lines().filter(|l| l.contains("myself") && l.contains("master")) {
            for range in line.split_whitespace().skip(8) {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                    if (lo..=hi).contains(&slot) {
                        return *p;
                    }
                }
            }
        }
    }
    panic!("no owner for slot {slot}");
}

#[tokio::test]
async fn cluster_sharded_pubsub_presence_and_a_killed_primary() {
    let mut procs = Procs::new();
    let primaries = start_cluster(&mut procs);
    assert_eq!(primaries.len(), 3);
    let url = format!("redis-cluster://127.0.0.1:{},127.0.0.1:{}", primaries[0], primaries[1]);
    let (a, b) = pair(&url, &[("SYNCGATE_API_KEY", "deploy-test-api-key-0123")]).await;
    let _members = traffic_flows(&a, &b).await;

    // Channel traffic is sharded: the subscriptions sit on the shards (SSUBSCRIBE), spread over
    // more than one, and only the control channel uses classic pub/sub.
    let mut sharded_on = 0;
    for p in &primaries {
        let chans = cli(*p, &["pubsub", "shardchannels"]);
        if chans.lines().any(|l| l.contains("room:")) {
            sharded_on += 1;
        }
        let classic = cli(*p, &["pubsub", "channels"]);
        assert!(classic.lines().all(|l| l.is_empty() || l.ends_with("!control")), "{classic}");
    }
    assert!(sharded_on >= 2, "room channels on {sharded_on} shard(s)");
    // Presence keys spread over the shards too (hash-tagged per channel).
    let mut keys_on = 0;
    for p in &primaries {
        if cli(*p, &["--scan", "--pattern", "*pc:{room:*"]).lines().count() > 0 {
            keys_on += 1;
        }
    }
    assert!(keys_on >= 2, "presence keys on {keys_on} shard(s)");
    // The server API lists channels over every shard.
    let (code, body) =
        http_json(a.addr, "GET", "/api/channels?prefix=room:&limit=1000", Some("deploy-test-api-key-0123"), "").await;
    assert_eq!(code, 200, "{body}");
    let mut names: Vec<String> = Vec::new();
    let mut page = body;
    loop {
        names.extend(page["channels"].as_array().unwrap().iter().map(|c| c["channel"].as_str().unwrap().to_string()));
        let Some(next) = page["next_cursor"].as_str().map(str::to_string) else { break };
        let path = format!("/api/channels?prefix=room:&limit=1000&cursor={next}");
        page = http_json(a.addr, "GET", &path, Some("deploy-test-api-key-0123"), "").await.1;
    }
    names.sort();
    assert_eq!(names, vec!["room:alpha", "room:beta", "room:delta", "room:gamma"]);
    let (_, page) = http_json(a.addr, "GET", "/api/channels?prefix=room:a", Some("deploy-test-api-key-0123"), "").await;
    let mut all = page["channels"].as_array().unwrap().clone();
    let mut page = page;
    while let Some(next) = page["next_cursor"].as_str().map(str::to_string) {
        page = http_json(
            a.addr,
            "GET",
            &format!("/api/channels?prefix=room:a&cursor={next}"),
            Some("deploy-test-api-key-0123"),
            "",
        )
        .await
        .1;
        all.extend(page["channels"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(all, vec![json!({"channel": "room:alpha", "members": 2})]);

    // SIGKILL the primary that owns a channel; its replica is promoted; delivery resumes.
    let channel = "room:k";
    let mut x = a.client("kx", "d1").await;
    let mut y = b.client("ky", "d1").await;
    for ch in [channel, "room:alpha"] {
        x.subscribe(ch).await;
        y.subscribe(ch).await;
    }
    assert!(until_delivered(&mut x, &mut y, channel, Duration::from_secs(5)).await.is_some());
    // The sharded channel's key is the prefix plus the channel name.
    let shards: Vec<String> = primaries
        .iter()
        .flat_map(|p| cli(*p, &["pubsub", "shardchannels"]).lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let key = shards.iter().find(|k| k.ends_with(channel)).expect("room:k is a shard channel").clone();
    let victim = owner(&primaries, &key);
    procs.kill(victim);
    let killed = Instant::now();
    outage_shows(&b, killed).await;
    let took = until_delivered(&mut x, &mut y, channel, Duration::from_secs(15)).await;
    let resumed = killed.elapsed();
    assert!(took.is_some(), "delivery on {channel} did not resume after its primary died");
    eprintln!("cluster: delivery on the killed shard resumed {resumed:?} after SIGKILL of its primary");
    assert!(resumed <= Duration::from_secs(5), "resumed after {resumed:?}");
    // Channels on the other shards kept working too.
    assert!(until_delivered(&mut x, &mut y, "room:alpha", Duration::from_secs(5)).await.is_some());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn cluster_primary_loss_loses_no_durable_event_and_duplicates_none() {
    let mut procs = Procs::new();
    let primaries = start_cluster(&mut procs);
    let url = format!("redis-cluster://127.0.0.1:{}", primaries[0]);
    let (a, b) = pair(&url, &[]).await;
    // bob's connections get dm events through his user channel: kill the shard that carries it.
    let key_probe = a.client("bob", "probe").await;
    let shard_key = eventually(Duration::from_secs(5), || async {
        primaries
            .iter()
            .flat_map(|p| cli(*p, &["pubsub", "shardchannels"]).lines().map(str::to_string).collect::<Vec<_>>())
            .find(|k| k.ends_with("user:bob"))
    })
    .await
    .expect("bob's user channel is a shard channel");
    drop(key_probe);
    let victim = owner(&primaries, &shard_key);
    let pid = procs.children.iter().find(|(p, _)| *p == victim).map(|(_, c)| c.id()).unwrap();
    durable_exactly_once(&a, &b, move || {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn cluster_subscribed_means_subscribed() {
    let mut procs = Procs::new();
    let primaries = start_cluster(&mut procs);
    let url = format!("redis-cluster://127.0.0.1:{}", primaries[0]);
    let (a, b) = pair(&url, &[]).await;
    let mut publisher = a.client("pub", "d1").await;
    for round in 0..5 {
        let channel = format!("room:z{round}");
        let mut subs = Vec::new();
        for i in 0..100 {
            let mut c = b.client(&format!("s{round}-{i}"), "d1").await;
            assert_eq!(c.subscribe(&channel).await["type"], "subscribed");
            subs.push(c);
        }
        publisher.send(json!({"type":"publish","channel":channel,"event":"once","data":{}})).await;
        let mut missing = 0;
        for c in subs.iter_mut() {
            let got = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    let v = c.recv().await;
                    if v["event"] == "once" {
                        return;
                    }
                }
            })
            .await;
            missing += usize::from(got.is_err());
        }
        assert_eq!(missing, 0, "round {round}: {missing} of 100 subscribers missed the event");
    }
    a.stop().await;
    b.stop().await;
}
