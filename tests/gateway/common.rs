//! Helpers: a real syncgate server on 127.0.0.1:0 and real WebSocket clients.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const WAIT: Duration = Duration::from_secs(5);

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

pub fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("syncgate-test-{}", syncgate::util::random_hex(8)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts a server with `SYNCGATE_JWT_SECRET=SECRET` unless `env` names another key source.
    pub async fn start(env: &[(&str, &str)]) -> Server {
        let mut vars: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let has_key = ["SYNCGATE_JWT_SECRET", "SYNCGATE_JWT_PUBLIC_KEY", "SYNCGATE_JWKS_URL", "SYNCGATE_OIDC_ISSUER"]
            .iter()
            .any(|k| vars.contains_key(*k));
        if !has_key {
            vars.insert("SYNCGATE_JWT_SECRET".into(), SECRET.into());
        }
        vars.entry("SYNCGATE_DATA_DIR".into()).or_insert_with(|| temp_dir().display().to_string());
        let config = syncgate::config::Config::from_map(&vars).expect("valid test config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            syncgate::server::run(listener, config, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Server { addr, stop: Some(tx), task }
    }

    /// A handle on a server running elsewhere (a spawned binary); `stop` is not available.
    pub fn attach(addr: SocketAddr) -> Server {
        Server { addr, stop: None, task: tokio::spawn(async {}) }
    }

    pub fn url(&self, query: &str) -> String {
        if query.is_empty() {
            format!("ws://{}/ws", self.addr)
        } else {
            format!("ws://{}/ws?{}", self.addr, query)
        }
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task).await.expect("server stops").unwrap();
    }

    /// Opens a connection for `user`/`device` with a query token and reads the welcome.
    pub async fn client(&self, user: &str, device: &str) -> Client {
        self.client_with(&token(user), device, "").await
    }

    pub async fn client_with(&self, token: &str, device: &str, extra: &str) -> Client {
        let url = self.url(&format!("token={token}&device_id={device}{extra}"));
        let mut c = Client::connect(&url).await.expect("connects");
        let w = c.recv().await;
        assert_eq!(w["type"], "welcome", "{w}");
        c.welcome = w;
        c
    }
}

pub fn sign(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn token(user: &str) -> String {
    sign(&json!({"sub": user, "exp": now() + 3600}))
}

pub fn token_channels(user: &str, globs: &[&str]) -> String {
    sign(&json!({"sub": user, "exp": now() + 3600, "channels": globs}))
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Value,
}

/// Why a connect failed: the HTTP status and JSON body.
#[derive(Debug)]
pub struct Rejected {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, Rejected> {
        Self::connect_req(url.into_client_request().unwrap()).await
    }

    pub async fn connect_req(req: http::Request<()>) -> Result<Client, Rejected> {
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(Client { ws, welcome: Value::Null }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                Err(Rejected { status: resp.status().as_u16(), body })
            }
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_text(&mut self, s: &str) {
        self.ws.send(Message::text(s.to_string())).await.unwrap();
    }

    /// The next data frame, as JSON (binary frames come back as `{"binary": [..]}`).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a frame within 5 s");
            match msg {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("server sends JSON"),
                Some(Ok(Message::Binary(b))) => return json!({ "binary": b.to_vec() }),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a data frame, got {other:?}"),
            }
        }
    }

    /// The next frame of type `ty`, skipping others (join/leave announcements are asynchronous
    /// on a cluster bus, so their order relative to other traffic is not fixed).
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Reads until the server's close frame; returns its code.
    pub async fn close_code(&mut self) -> u16 {
        self.close_code_within(WAIT).await
    }

    pub async fn close_code_within(&mut self, wait: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await.expect("closed in time");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return f.code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("error before close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }

    /// Asserts that no data frame arrives within `ms`.
    pub async fn silent(&mut self, ms: u64) {
        let until = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(until, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }

    /// Sends a request and returns the reply.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.request(json!({"type": "subscribe", "channel": channel})).await
    }
}

/// The real binary on 127.0.0.1:0 with JSON logs and `env` (no key unless `env` sets one):
/// returns the child, its address and its log lines as they come.
pub fn spawn_binary(env: &[(&str, &str)]) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
    cmd.env_clear()
        .env("SYNCGATE_LISTEN", "127.0.0.1:0")
        .env("SYNCGATE_DATA_DIR", temp_dir())
        .env("SYNCGATE_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let line =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("address logged");
        if let Some(a) =
            serde_json::from_str::<Value>(&line).ok().and_then(|v| v["fields"]["addr"].as_str().map(str::to_string))
        {
            break a;
        }
    };
    (child, addr, rx)
}

/// One HTTP/1.1 request to `addr` (JSON body, optional Bearer): the status and the JSON body
/// (`Null` when the body is not JSON).
pub async fn http_json(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    http_json_over(stream, method, path, bearer, body).await
}

/// [`http_json`] over a stream the caller connected (from a chosen source address, say).
pub async fn http_json_over(
    mut stream: TcpStream,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let auth = bearer.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    (status, serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or(Value::Null))
}

/// The raw `/metrics` page (status line and headers included).
pub async fn metrics_text(s: &Server) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

/// Kills and reaps a spawned gateway when dropped, so a failing test leaves no process behind.
pub struct Reap(pub std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `probe` every 20 ms until it yields `Some`, for at most `within`: the value, or `None`
/// when time ran out. The one polling loop of the suite (the gateway's effects that travel
/// through Redis, a background writer or a released slot arrive a little later).
pub async fn eventually<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
