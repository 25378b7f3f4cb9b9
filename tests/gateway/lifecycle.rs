//! The binary end to end: development secret and `syncgate token`, SIGTERM closing every
//! connection with 1001, start-up errors naming the variable.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_syncgate");

/// Spawns the binary on 127.0.0.1:0 and reads the bound address from its log.
fn spawn(dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("SYNCGATE_LISTEN", "127.0.0.1:0")
        .env("SYNCGATE_DATA_DIR", dir)
        .env("SYNCGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let addr = read_addr(child.stderr.take().unwrap());
    (child, addr)
}

/// Reads the bound address from a JSON-logging syncgate's stderr (and keeps draining it).
pub fn read_addr(stderr: std::process::ChildStderr) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(addr) = v["fields"]["addr"].as_str() {
                        let _ = tx.send(addr.to_string());
                        sent = true;
                    }
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server logs its address")
}

fn token_cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN).env_clear().env("SYNCGATE_DATA_DIR", dir).arg("token").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn development_secret_survives_restart_and_sigterm_closes_1001() {
    let dir = temp_dir();
    let t = token_cli(&dir, &["--user", "alice", "--device", "d1", "--ttl", "1h", "--channel", "room:*"]);
    let (mut child, addr) = spawn(&dir, &[]);
    let mut a = Client::connect(&format!("ws://{addr}/ws?token={t}")).await.unwrap();
    let w = a.recv().await;
    assert_eq!((w["user_id"].as_str(), w["device_id"].as_str()), (Some("alice"), Some("d1")));
    assert_eq!(a.subscribe("room:1").await["type"], "subscribed");
    assert_eq!(a.subscribe("other:1").await["code"], "forbidden");
    drop(a);
    child.kill().unwrap();
    child.wait().unwrap();

    // Restart on the same data directory: the same token still works.
    let (child, addr) = spawn(&dir, &[]);
    let mut a = Client::connect(&format!("ws://{addr}/ws?token={t}")).await.unwrap();
    assert_eq!(a.recv().await["type"], "welcome");
    let t2 = token_cli(&dir, &["--user", "bob"]);
    let mut b = Client::connect(&format!("ws://{addr}/ws?token={t2}")).await.unwrap();
    assert_eq!(b.recv().await["type"], "welcome");

    // SIGTERM: every connection gets 1001 and the process exits.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(a.close_code().await, 1001);
    assert_eq!(b.close_code().await, 1001);
    let mut child = child;
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn in_process_shutdown_closes_every_connection_with_1001() {
    let s = Server::start(&[]).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(s.client(&format!("u{i}"), "d").await);
    }
    let stop = tokio::spawn(s.stop());
    for c in &mut clients {
        assert_eq!(c.close_code().await, 1001);
    }
    stop.await.unwrap();
}

#[test]
fn bad_env_stops_start_up_naming_the_variable() {
    for (key, value) in [
        ("SYNCGATE_JWT_SECRET", "too-short"),
        ("SYNCGATE_LISTEN", "not-an-address"),
        ("SYNCGATE_HEARTBEAT_MS", "soon"),
        ("SYNCGATE_MAX_CONNECTIONS_PER_USER", "-1"),
        ("SYNCGATE_LOG_FORMAT", "xml"),
    ] {
        let out = Command::new(BIN).env_clear().env(key, value).env("SYNCGATE_DATA_DIR", temp_dir()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

#[tokio::test]
async fn http_errors_are_json() {
    let s = Server::start(&[]).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (req, status) in [
        ("GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "404"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer x.y.z\r\n\r\n", "401"),
        (&*format!("GET /ws?token={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", token("a")), "400"),
        ("POST /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "405"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    }
    let _ = json!(null);
    s.stop().await;
}
