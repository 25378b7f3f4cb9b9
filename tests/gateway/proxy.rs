//! Behind a TCP load balancer: the PROXY protocol header (v1, v2; hand-written and from a real
//! HAProxy with `send-proxy-v2`) gives every per-address limit the client's address; a connection
//! without a valid header is closed; the admin listener answers health checks and scrapes without
//! one.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::MaybeTlsStream;

use crate::common::*;

const API_KEY: &str = "test-api-key-0123456789";
const SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header (TCP over IPv4) from `src`.
fn v2(src: &str) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let SocketAddr::V4(src) = src else { panic!("IPv4 only") };
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&8080u16.to_be_bytes());
    h
}

/// A v2 LOCAL header (a proxy's own health check: the socket's address stays the peer).
fn v2_local() -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

fn v1(src_ip: &str) -> Vec<u8> {
    format!("PROXY TCP4 {src_ip} 127.0.0.1 40000 8080\r\n").into_bytes()
}

/// A WebSocket client over `stream` (already connected; `preamble` written first, in the same
/// segment as the upgrade request when `same_write`): the welcome, or the refusal's status.
async fn ws_over(mut stream: TcpStream, preamble: &[u8], user: &str, same_write: bool) -> Result<Client, u16> {
    let url = format!("ws://gateway/ws?token={}&device_id=d-{}", token(user), syncgate::util::random_hex(3));
    let req = url.into_client_request().unwrap();
    if same_write {
        // The header and the start of HTTP in one segment: the bytes after the header must reach
        // HTTP. A raw upgrade request, then tungstenite over the rest.
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let path = req.uri().path_and_query().unwrap().as_str().to_string();
        let mut bytes = preamble.to_vec();
        bytes.extend_from_slice(
            format!(
                "GET {path} HTTP/1.1\r\nHost: gateway\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            )
            .as_bytes(),
        );
        stream.write_all(&bytes).await.unwrap();
        let head = read_head(&mut stream).await;
        let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).expect("a status line");
        if status != 101 {
            return Err(status);
        }
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            MaybeTlsStream::Plain(stream),
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        let mut c = Client { ws, welcome: Value::Null };
        c.welcome = c.recv().await;
        assert_eq!(c.welcome["type"], "welcome");
        return Ok(c);
    }
    stream.write_all(preamble).await.unwrap();
    match tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => {
            let mut c = Client { ws, welcome: Value::Null };
            c.welcome = c.recv().await;
            assert_eq!(c.welcome["type"], "welcome");
            Ok(c)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("connect failed: {e}"),
    }
}

/// Reads an HTTP response head byte by byte (nothing of what follows it).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut b)).await.expect("a response head").unwrap();
        assert!(n == 1, "closed inside the response head: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn ws_with(addr: SocketAddr, preamble: &[u8], user: &str) -> Result<Client, u16> {
    ws_over(TcpStream::connect(addr).await.unwrap(), preamble, user, false).await
}

/// Sends `bytes` and asserts the gateway closes the connection without answering a byte.
async fn closed_without_answer(addr: SocketAddr, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let r = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("closed in time");
    // A reset is as good as an EOF; what matters is that HTTP never answered.
    if r.is_ok() {
        assert!(out.is_empty(), "answered: {}", String::from_utf8_lossy(&out));
    }
}

/// One HTTP request after `preamble`: status and body.
async fn http_after(addr: SocketAddr, preamble: &[u8], path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = bearer.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n").as_bytes());
    s.write_all(&bytes).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out)).await.expect("an answer").unwrap();
    let status = out.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {out:?}"));
    (status, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Asserts an open client still works: a publish on its user channel is acknowledged.
async fn still_serves(c: &mut Client) {
    let ack = c.request(json!({"type":"publish","channel":"user","event":"x","data":1,"id":7})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test]
async fn v2_header_address_drives_per_ip_limits_and_bad_headers_close() {
    let s = Server::start(&[
        ("SYNCGATE_PROXY_PROTOCOL", "v2"),
        ("SYNCGATE_CONNECT_RATE_PER_IP", "2"),
        ("SYNCGATE_HANDSHAKE_TIMEOUT_MS", "400"),
        ("SYNCGATE_API_KEY", "status-key-0123456789"),
    ])
    .await;
    // Every socket comes from 127.0.0.1; the headers say 192.0.2.7 and 192.0.2.8.
    let mut a1 = ws_with(s.addr, &v2("192.0.2.7:1000"), "a").await.expect("first from .7");
    let _a2 = ws_with(s.addr, &v2("192.0.2.7:1001"), "a").await.expect("second from .7");
    assert_eq!(ws_with(s.addr, &v2("192.0.2.7:1002"), "a").await.err(), Some(429), "third from .7 within a second");
    let mut b = ws_with(s.addr, &v2("192.0.2.8:1000"), "b").await.expect(".8 has its own budget");
    // LOCAL (a proxy health check): the socket's own address, a budget of its own too.
    let _l = ws_with(s.addr, &v2_local(), "l").await.expect("LOCAL keeps the socket address");
    // The header and the request in one segment: the request is not lost.
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let _c = ws_over(stream, &v2("192.0.2.9:1"), "c", true).await.expect("header + upgrade in one write");

    // No header, a v1 header, a wrong signature, hostile lengths and families: closed unanswered.
    closed_without_answer(s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    closed_without_answer(s.addr, &v1("192.0.2.7")).await;
    let mut bad_sig = v2("192.0.2.10:1");
    bad_sig[11] = b'X';
    closed_without_answer(s.addr, &bad_sig).await;
    let mut huge = SIG.to_vec();
    huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    huge.extend_from_slice(&[0u8; 64]);
    closed_without_answer(s.addr, &huge).await;
    let mut short = SIG.to_vec();
    short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
    closed_without_answer(s.addr, &short).await;
    let mut family = v2("192.0.2.10:1");
    family[13] = 0x51;
    closed_without_answer(s.addr, &family).await;
    let mut command = v2("192.0.2.10:1");
    command[12] = 0x2f;
    closed_without_answer(s.addr, &command).await;
    // Truncated and then silent: closed at the handshake timeout.
    let started = std::time::Instant::now();
    closed_without_answer(s.addr, &v2("192.0.2.10:1")[..20]).await;
    assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());

    // The process and the clients that sent a valid header are fine.
    still_serves(&mut a1).await;
    still_serves(&mut b).await;
    let (status, page) = http_after(s.addr, &v2("192.0.2.11:1"), "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "syncgate_proxy_header_rejected_total"), 8.0, "{page}");
    assert_eq!(metric(&page, "syncgate_connects_total{result=\"rate_limited\"}"), 1.0);
    // /api/status counts open connections by the client address the header carried.
    let (status, body) = http_after(s.addr, &v2("192.0.2.11:2"), "/api/status", Some("status-key-0123456789")).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let count = |ip: &str| {
        v["addresses"].as_array().unwrap().iter().find(|a| a["address"] == ip).map(|a| a["connections"].clone())
    };
    assert_eq!(count("192.0.2.7"), Some(serde_json::json!(2)), "{v}");
    assert_eq!(count("192.0.2.8"), Some(serde_json::json!(1)), "{v}");
    assert_eq!(count("127.0.0.1"), Some(serde_json::json!(1)), "LOCAL keeps the socket's address: {v}");
    s.stop().await;
}

#[tokio::test]
async fn v1_header_address_drives_per_ip_limits_and_bad_lines_close() {
    let s = Server::start(&[("SYNCGATE_PROXY_PROTOCOL", "v1"), ("SYNCGATE_CONNECT_RATE_PER_IP", "2")]).await;
    let mut a = ws_with(s.addr, &v1("198.51.100.7"), "a").await.expect("first from .7");
    // v1 lines are read in one go: the request bytes that came with the line reach HTTP.
    let stream = TcpStream::connect(s.addr).await.unwrap();
    let _a2 = ws_over(stream, &v1("198.51.100.7"), "a", true).await.expect("second from .7, one write");
    assert_eq!(ws_with(s.addr, &v1("198.51.100.7"), "a").await.err(), Some(429));
    let _b = ws_with(s.addr, &v1("198.51.100.8"), "b").await.expect(".8 has its own budget");
    let v6 = b"PROXY TCP6 2001:db8::1 ::1 40000 8080\r\n";
    let _c = ws_with(s.addr, v6, "c").await.expect("TCP6");
    let _u = ws_with(s.addr, b"PROXY UNKNOWN\r\n", "u").await.expect("UNKNOWN keeps the socket address");

    for bad in [
        &b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &v2("192.0.2.7:1"),
        b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\nGET /health HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 127.0.0.1 1 99999\r\nGET /health HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 ::1 127.0.0.1 1 2\r\nGET /health HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 127.0.0.1 1 2\nGET /health HTTP/1.1\r\n\r\n",
        format!("PROXY UNKNOWN {}\r\n", "x".repeat(300)).as_bytes(),
    ] {
        closed_without_answer(s.addr, bad).await;
    }
    still_serves(&mut a).await;
    let (status, page) = http_after(s.addr, &v1("198.51.100.9"), "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "syncgate_proxy_header_rejected_total"), 7.0, "{page}");
    s.stop().await;
}

#[tokio::test]
async fn admin_listener_serves_health_and_scrapes_without_a_header() {
    let (child, addr, logs) = spawn_binary(&[
        ("SYNCGATE_JWT_SECRET", SECRET),
        ("SYNCGATE_PROXY_PROTOCOL", "v2"),
        ("SYNCGATE_ADMIN_LISTEN", "127.0.0.1:0"),
        ("SYNCGATE_API_KEY", API_KEY),
    ]);
    let _reap = Reap(child);
    let main: SocketAddr = addr.parse().unwrap();
    let admin: SocketAddr = loop {
        let line = logs.recv_timeout(Duration::from_secs(10)).expect("admin address logged");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if let Some(a) = v["fields"]["admin_addr"].as_str() {
            break a.parse().unwrap();
        }
    };
    // The main port wants the header: a plain health check is closed unanswered.
    closed_without_answer(main, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(http_after(main, &v2("192.0.2.7:1"), "/health", None).await, (200, "OK".to_string()));

    // The admin port: no header; health, readiness, metrics; status with the API key only.
    assert_eq!(http_after(admin, b"", "/health", None).await, (200, "OK".to_string()));
    let (status, ready) = http_after(admin, b"", "/ready", None).await;
    assert_eq!((status, serde_json::from_str::<Value>(&ready).unwrap()["ready"].clone()), (200, json!(true)));
    let (status, page) = http_after(admin, b"", "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "syncgate_proxy_header_rejected_total"), 1.0, "{page}");
    assert_eq!(http_after(admin, b"", "/api/status", None).await.0, 401);
    assert_eq!(http_after(admin, b"", "/api/status", Some("wrong-key-wrong-key")).await.0, 401);
    let (status, body) = http_after(admin, b"", "/api/status", Some(API_KEY)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["totals"]["connections"], 0);
    // Nothing else is served there: no upgrades, no accounts, no API.
    let (status, body) = http_after(admin, b"", &format!("/ws?token={}", token("a")), None).await;
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["error"].clone()), (404, json!("not_found")));
    assert_eq!(http_json(admin, "POST", "/register", None, "{}").await.0, 404);
    assert_eq!(http_json(admin, "POST", "/api/publish", Some(API_KEY), "{}").await.0, 404);
    // The main port keeps serving WebSockets through the header.
    let mut c = ws_with(main, &v2("192.0.2.7:2"), "a").await.expect("upgrade through the header");
    still_serves(&mut c).await;
}

/// A free port on 127.0.0.1 for HAProxy's frontend (HAProxy cannot report a port-0 bind).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A WebSocket connection from source address `src` (any 127.0.0.x) to `to`.
async fn ws_from(src: &str, to: SocketAddr, user: &str) -> Result<Client, u16> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(to).await.unwrap();
    ws_over(stream, b"", user, false).await
}

/// HAProxy's view of server `gw1`: (status, check_status) from `show stat` on its stats socket.
async fn haproxy_server_state(sock: &std::path::Path) -> Option<(String, String)> {
    let mut c = tokio::net::UnixStream::connect(sock).await.ok()?;
    c.write_all(b"show stat\n").await.ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).await.ok()?;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (sv, status, check) = (col("svname")?, col("status")?, col("check_status")?);
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| r.get(sv) == Some(&"gw1"))
        .and_then(|r| Some((r.get(status)?.to_string(), r.get(check)?.to_string())))
}

#[tokio::test]
async fn haproxy_send_proxy_v2_gives_real_client_addresses() {
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let s = Server::start(&[
        ("SYNCGATE_PROXY_PROTOCOL", "v2"),
        ("SYNCGATE_CONNECT_RATE_PER_IP", "2"),
        ("SYNCGATE_ADMIN_LISTEN", admin.as_str()),
    ])
    .await;
    let port = free_port();
    let dir = temp_dir();
    let cfg = dir.join("haproxy.cfg");
    let stats = dir.join("haproxy.sock");
    // As tuning/haproxy.cfg: send-proxy-v2 to the gateway, /ready checks on the admin port.
    std::fs::write(
        &cfg,
        format!(
            "global\n    maxconn 100\n    stats socket {} mode 600 level admin\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend ws\n    bind 127.0.0.1:{port}\n    default_backend gw\n\
             backend gw\n    option httpchk GET /ready\n    http-check expect status 200\n\
             \x20   server gw1 {} send-proxy-v2 check port {admin_port} inter 100ms fall 1 rise 1\n",
            stats.display(),
            s.addr
        ),
    )
    .unwrap();
    let child = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("haproxy is installed (scripts/test.sh installs it)");
    let _reap = Reap(child);
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listening = eventually(Duration::from_secs(10), || async { TcpStream::connect(front).await.ok() }).await;
    assert!(listening.is_some(), "haproxy did not listen on {front}");
    // Its health check reached /ready on the admin port (no PROXY header there) and passed.
    let up = eventually(Duration::from_secs(10), || async {
        haproxy_server_state(&stats).await.filter(|(status, check)| status == "UP" && check == "L7OK")
    })
    .await;
    assert!(up.is_some(), "gw1 not UP with a passing check: {:?}", haproxy_server_state(&stats).await);

    // Every connection reaches the gateway from HAProxy's 127.0.0.1; the limit applies per client.
    let mut a = ws_from("127.0.0.2", front, "a").await.expect("first from 127.0.0.2");
    let _a2 = ws_from("127.0.0.2", front, "a").await.expect("second from 127.0.0.2");
    assert_eq!(ws_from("127.0.0.2", front, "a").await.err(), Some(429), "third from 127.0.0.2 within a second");
    let mut b = ws_from("127.0.0.3", front, "b").await.expect("127.0.0.3 still connects");
    let _b2 = ws_from("127.0.0.3", front, "b").await.expect("127.0.0.3 still connects");
    let _c = ws_from("127.0.0.4", front, "c").await.expect("127.0.0.4 still connects");

    // Straight to the gateway, past the balancer: no header, closed; the others are fine.
    closed_without_answer(s.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    still_serves(&mut a).await;
    still_serves(&mut b).await;
    let (status, page) = http_after(s.addr, &v2("192.0.2.1:1"), "/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(metric(&page, "syncgate_proxy_header_rejected_total"), 1.0, "{page}");
    assert_eq!(metric(&page, "syncgate_connects_total{result=\"rate_limited\"}"), 1.0);
    s.stop().await;
}
