//! The login page in a real headless Chromium (Debian's `chromium`, driven over the DevTools
//! protocol): fill the form, submit, arrive at a local callback with a token that opens `/ws`.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// The desktop app's callback: serves a page that hands the URL fragment back to the test.
async fn callback_server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body = if let Some(q) = path.strip_prefix("/got?") {
                    let _ = tx.send(q.to_string());
                    "ok".to_string()
                } else {
                    "<!doctype html><script>fetch('/got?' + location.hash.slice(1))</script>".to_string()
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, rx)
}

struct Browser {
    child: std::process::Child,
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Browser {
        let profile = temp_dir();
        let child = std::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromium (scripts/test.sh installs Debian's chromium package)");
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|t| t.lines().next().map(str::to_string))
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // The page target's DevTools WebSocket.
        let list = http_get(&format!("127.0.0.1:{port}"), "/json/list").await;
        let targets: Value = serde_json::from_str(&list).unwrap();
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Browser { child, ws, next_id: 0 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("CDP reply")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
        }
    }

    async fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true})).await;
        r["result"]["result"]["value"].clone()
    }

    async fn wait_for(&mut self, js: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(js).await != json!(true) {
            if Instant::now() >= deadline {
                let page = self.eval("location.href + ' | ' + document.documentElement.outerHTML").await;
                panic!("timed out waiting for {js}; page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get(hostport: &str, path: &str) -> String {
    // The DevTools server keeps connections open: read exactly Content-Length bytes.
    let mut s = tokio::net::TcpStream::connect(hostport).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if len.is_some_and(|n| body.len() >= n) {
                return body.to_string();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), s.read(&mut chunk))
            .await
            .expect("DevTools answered")
            .unwrap();
        if n == 0 {
            return text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn raw(s: &Server, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn login_page_refuses_foreign_redirects_and_escapes() {
    let s = Server::start(&[]).await;
    let ok = raw(&s, "/login-client?redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let lower = ok.to_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'none'"), "{ok}");
    assert!(lower.contains("form-action 'self' http://127.0.0.1:5555"));
    assert!(lower.contains("x-frame-options: deny"));
    for bad in [
        "http%3A%2F%2Fevil.example.com%2Fcb",
        "javascript%3Aalert(1)",
        "",
        "http%3A%2F%2F127.0.0.1%3A5555%40evil.com%2F",
    ] {
        let r = raw(&s, &format!("/login-client?redirect_uri={bad}")).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{bad}: {r}");
    }
    // Markup is refused; quotes in an accepted URI come back escaped in the form.
    let r = raw(&s, "/login-client?redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2F%3Cscript%3E").await;
    assert!(r.starts_with("HTTP/1.1 400") && !r.contains("<script>"), "{r}");
    let r =
        raw(&s, "/login-client?redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb%3Fx%3D%27onmouseover%3Dalert(1)").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("value=\"http://127.0.0.1:5555/cb?x=&#39;onmouseover=alert(1)\""), "{r}");
    s.stop().await;
}

#[tokio::test]
async fn login_page_in_headless_chromium_returns_a_token_that_opens_ws() {
    let s = Server::start(&[]).await;
    let body = r#"{"email":"tray@example.com","password":"tray password","username":"tray"}"#;
    let (status, r) = http_json(s.addr, "POST", "/register", None, body).await;
    assert_eq!(status, 201, "{r}");
    let (cb_port, mut got) = callback_server().await;
    let redirect = format!("http://127.0.0.1:{cb_port}/cb");
    let page = format!("http://{}/login-client?redirect_uri={}", s.addr, syncgate_encode(&redirect));

    let mut b = Browser::launch().await;
    b.call("Page.enable", json!({})).await;
    b.call("Page.navigate", json!({"url": page})).await;
    b.wait_for("!!document.querySelector('#login')").await;
    // A wrong password first: the page comes back with an error.
    b.eval("document.querySelector('#login').value='tray'; document.querySelector('#password').value='nope nope'; document.querySelector('#submit').click(); true").await;
    b.wait_for("!!document.querySelector('.err')").await;
    b.eval("document.querySelector('#login').value='tray@example.com'; document.querySelector('#password').value='tray password'; document.querySelector('#submit').click(); true").await;
    let fragment = tokio::time::timeout(Duration::from_secs(20), got.recv()).await.expect("callback reached").unwrap();
    let access = fragment
        .split('&')
        .find_map(|kv| kv.strip_prefix("access_token="))
        .expect("access_token in the fragment")
        .to_string();
    assert!(fragment.contains("refresh_token=") && fragment.contains("token_type=Bearer"), "{fragment}");
    let mut c = Client::connect(&s.url(&format!("token={access}"))).await.unwrap();
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome");
    assert!(w["user_id"].as_str().is_some_and(|u| !u.is_empty()));
    drop(b);
    s.stop().await;
}

fn syncgate_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
