//! The login page (RFC 8252 with PKCE): the whole flow in a real headless Chromium (Debian's
//! `chromium`, driven over the DevTools protocol) — form, redirect with a one-time code to a
//! loopback listener, code traded for tokens that open `/ws` — and every refusal over HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// The desktop app's loopback listener: hands the query string of each `/cb?…` request line to
/// the test.
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
                if let Some(q) = path.strip_prefix("/cb?") {
                    let _ = tx.send(q.to_string());
                }
                let body = "<!doctype html><title>Signed in</title><p id=\"done\">You can close this tab.</p>";
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

/// A headless Chromium driven over the DevTools protocol (one page target).
pub struct Browser {
    child: std::process::Child,
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl Browser {
    pub async fn launch() -> Browser {
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

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
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

    pub async fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true})).await;
        r["result"]["result"]["value"].clone()
    }

    pub async fn wait_for(&mut self, js: &str) {
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

/// One HTTP/1.1 request; the whole raw response (status line and headers included).
async fn http_raw(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn raw(s: &Server, path: &str) -> String {
    http_raw(s.addr, "GET", path, "text/plain", "").await
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn status(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn body_json(response: &str) -> Value {
    serde_json::from_str(response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).unwrap_or(Value::Null)
}

fn encode(s: &str) -> String {
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

/// A fresh RFC 7636 verifier (43 characters) and its S256 challenge, computed here
/// independently of the gateway.
fn pkce() -> (String, String) {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = b64.encode(bytes);
    let challenge = b64.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    (verifier, challenge)
}

const STATE: &str = "st4te-0123456789_abc~.";

/// The query of a valid authorization request.
fn authorize_query(redirect: &str, state: &str, challenge: &str) -> String {
    format!("redirect_uri={}&state={state}&code_challenge={challenge}&code_challenge_method=S256", encode(redirect))
}

async fn register(s: &Server, email: &str, username: &str) {
    let body = json!({"email": email, "password": "tray password", "username": username}).to_string();
    let (status, r) = http_json(s.addr, "POST", "/register", None, &body).await;
    assert_eq!(status, 201, "{r}");
}

/// Submits the form as a browser would; the raw response.
async fn submit_form(s: &Server, query: &str, login: &str, password: &str) -> String {
    let body = format!("{query}&login={}&password={}", encode(login), encode(password));
    http_raw(s.addr, "POST", "/login-client", "application/x-www-form-urlencoded", &body).await
}

/// Signs in through the form; the one-time code from the redirect, whose `Location` must be
/// exactly `redirect?code=…&state=…`.
async fn code_for(s: &Server, redirect: &str, challenge: &str) -> String {
    let r = submit_form(s, &authorize_query(redirect, STATE, challenge), "tray@example.com", "tray password").await;
    assert_eq!(status(&r), 303, "{r}");
    let location = header(&r, "location").expect("a Location").to_string();
    let query = location.strip_prefix(&format!("{redirect}?")).unwrap_or_else(|| panic!("{location}"));
    let pairs: Vec<(&str, &str)> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    assert_eq!(pairs.len(), 2, "only code and state: {location}");
    assert_eq!(pairs[1], ("state", STATE), "{location}");
    assert_eq!(pairs[0].0, "code", "{location}");
    assert!(!location.contains("token"), "{location}");
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    pairs[0].1.to_string()
}

async fn redeem_json(s: &Server, code: &str, verifier: &str, redirect: &str) -> (u16, Value) {
    let body =
        json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "redirect_uri": redirect});
    http_json(s.addr, "POST", "/login-client/token", None, &body.to_string()).await
}

async fn redeem_form(s: &Server, code: &str, verifier: &str, redirect: &str) -> String {
    let body =
        format!("grant_type=authorization_code&code={code}&code_verifier={verifier}&redirect_uri={}", encode(redirect));
    http_raw(s.addr, "POST", "/login-client/token", "application/x-www-form-urlencoded", &body).await
}

/// The access token opens `/ws` as the registered user.
async fn opens_ws(s: &Server, access: &str) {
    let mut c = Client::connect(&s.url(&format!("token={access}"))).await.unwrap();
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome", "{w}");
    assert!(w["user_id"].as_str().is_some_and(|u| !u.is_empty()));
}

fn assert_invalid_grant((status, body): (u16, Value), what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
    assert!(body.get("access_token").is_none(), "{what}: {body}");
}

#[tokio::test]
async fn login_page_refuses_foreign_redirects_and_escapes() {
    let s = Server::start(&[]).await;
    let (_, challenge) = pkce();
    let q = |redirect: &str| authorize_query(redirect, STATE, &challenge);
    let ok = raw(&s, &format!("/login-client?{}", q("http://127.0.0.1:5555/cb"))).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let lower = ok.to_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'none'"), "{ok}");
    assert!(lower.contains("form-action 'self' http://127.0.0.1:5555"));
    assert!(lower.contains("x-frame-options: deny"));
    // The parameters travel through the form as hidden fields.
    for hidden in [
        format!("name=\"state\" value=\"{STATE}\""),
        format!("name=\"code_challenge\" value=\"{challenge}\""),
        "name=\"code_challenge_method\" value=\"S256\"".to_string(),
        "name=\"redirect_uri\" value=\"http://127.0.0.1:5555/cb\"".to_string(),
    ] {
        assert!(ok.contains(&hidden), "{hidden}: {ok}");
    }
    for bad in ["http://evil.example.com/cb", "javascript:alert(1)", "", "http://127.0.0.1:5555@evil.com/"] {
        let r = raw(&s, &format!("/login-client?{}", q(bad))).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{bad}: {r}");
        assert!(header(&r, "location").is_none(), "{bad}: {r}");
    }
    // Markup is refused; quotes in an accepted URI come back escaped in the form.
    let r = raw(&s, &format!("/login-client?{}", q("http://127.0.0.1:5555/<script>"))).await;
    assert!(r.starts_with("HTTP/1.1 400") && !r.contains("<script>"), "{r}");
    let r = raw(&s, &format!("/login-client?{}", q("http://127.0.0.1:5555/cb?x='onmouseover=alert(1)"))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("value=\"http://127.0.0.1:5555/cb?x=&#39;onmouseover=alert(1)\""), "{r}");
    s.stop().await;
}

#[tokio::test]
async fn login_page_refuses_bad_state_and_pkce_parameters_on_get_and_post() {
    let s = Server::start(&[]).await;
    register(&s, "tray@example.com", "tray").await;
    let (_, challenge) = pkce();
    let redirect = "http://127.0.0.1:5555/cb";
    let r = encode(redirect);
    let m = "code_challenge_method=S256";
    let cases = [
        ("missing state", format!("redirect_uri={r}&code_challenge={challenge}&{m}")),
        ("short state", format!("redirect_uri={r}&state=abcdefghijklmno&code_challenge={challenge}&{m}")),
        ("long state", format!("redirect_uri={r}&state={}&code_challenge={challenge}&{m}", "a".repeat(129))),
        ("state charset", format!("redirect_uri={r}&state=abcdefghijklmnop%3C&code_challenge={challenge}&{m}")),
        (
            "plain method",
            format!("redirect_uri={r}&state={STATE}&code_challenge={challenge}&code_challenge_method=plain"),
        ),
        ("missing method", format!("redirect_uri={r}&state={STATE}&code_challenge={challenge}")),
        ("missing challenge", format!("redirect_uri={r}&state={STATE}&{m}")),
        ("short challenge", format!("redirect_uri={r}&state={STATE}&code_challenge={}&{m}", &challenge[..42])),
        ("two states", format!("redirect_uri={r}&state={STATE}&state={STATE}x&code_challenge={challenge}&{m}")),
        (
            "foreign redirect",
            format!("redirect_uri=http%3A%2F%2Fevil.example.com%2Fcb&state={STATE}&code_challenge={challenge}&{m}"),
        ),
    ];
    for (what, query) in &cases {
        let got = raw(&s, &format!("/login-client?{query}")).await;
        assert_eq!(status(&got), 400, "GET {what}: {got}");
        assert!(header(&got, "content-type").is_some_and(|c| c.starts_with("text/html")), "{what}");
        // The right password with the same parameters: still 400, never a redirect.
        let posted = submit_form(&s, query, "tray@example.com", "tray password").await;
        assert_eq!(status(&posted), 400, "POST {what}: {posted}");
        assert!(header(&posted, "location").is_none(), "POST {what}: {posted}");
    }
    // A wrong password: the form again with an error, the parameters kept.
    let wrong = submit_form(&s, &authorize_query(redirect, STATE, &challenge), "tray", "nope nope").await;
    assert_eq!(status(&wrong), 401, "{wrong}");
    assert!(wrong.contains("class=\"err\"") && wrong.contains(&format!("value=\"{STATE}\"")), "{wrong}");
    // The gateway is fine: the same sign-in with valid parameters goes through.
    let ok = submit_form(&s, &authorize_query(redirect, STATE, &challenge), "tray", "tray password").await;
    assert_eq!(status(&ok), 303, "{ok}");
    s.stop().await;
}

/// Every way a code is refused, and both body encodings, on one store.
async fn code_flow(env: &[(&str, &str)]) {
    let mut vars = env.to_vec();
    vars.push(("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "1000"));
    let s = Server::start(&vars).await;
    register(&s, "tray@example.com", "tray").await;
    let redirect = "http://127.0.0.1:5555/cb";
    let other = "http://127.0.0.1:5556/cb";

    // Another redirect_uri: refused, and the code is spent.
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    assert_invalid_grant(redeem_json(&s, &code, &verifier, other).await, "other redirect_uri");
    assert_invalid_grant(redeem_json(&s, &code, &verifier, redirect).await, "code spent by a bad attempt");

    // A wrong verifier (well-formed, and malformed).
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    let (wrong, _) = pkce();
    assert_invalid_grant(redeem_json(&s, &code, "short", redirect).await, "malformed verifier");
    assert_invalid_grant(redeem_json(&s, &code, &challenge, redirect).await, "challenge as verifier");
    assert_invalid_grant(redeem_json(&s, &code, &wrong, redirect).await, "wrong verifier");
    assert_invalid_grant(redeem_json(&s, &code, &verifier, redirect).await, "code spent by a wrong verifier");

    // An unknown code; a bad body.
    assert_invalid_grant(redeem_json(&s, &"0".repeat(64), &verifier, redirect).await, "unknown code");
    let (st, body) = http_json(s.addr, "POST", "/login-client/token", None, "{\"code\":").await;
    assert_eq!((st, body["error"].as_str()), (400, Some("bad_request")), "{body}");
    let (st, body) = http_json(s.addr, "POST", "/login-client/token", None, r#"{"code":"x"}"#).await;
    assert_eq!((st, body["error"].as_str()), (400, Some("bad_request")), "{body}");

    // A form-encoded body works; the response is not cached; the tokens work.
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    let r = redeem_form(&s, &code, &verifier, redirect).await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(header(&r, "cache-control"), Some("no-store"), "{r}");
    let tokens = body_json(&r);
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    assert_eq!(tokens["user"]["username"], "tray", "{tokens}");
    opens_ws(&s, tokens["access_token"].as_str().unwrap()).await;
    // Presented again: refused, and the login it issued is revoked.
    let again = redeem_form(&s, &code, &verifier, redirect).await;
    assert_invalid_grant((status(&again), body_json(&again)), "reused code");
    let refresh = json!({"refresh_token": tokens["refresh_token"]}).to_string();
    let (st, body) = http_json(s.addr, "POST", "/token/refresh", None, &refresh).await;
    assert_eq!(st, 401, "the reused code's login is revoked: {body}");

    // A JSON body works too.
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    let (st, tokens) = redeem_json(&s, &code, &verifier, redirect).await;
    assert_eq!(st, 200, "{tokens}");
    opens_ws(&s, tokens["access_token"].as_str().unwrap()).await;

    // Two redemptions at once: exactly one wins.
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    let (a, b) = tokio::join!(redeem_json(&s, &code, &verifier, redirect), redeem_json(&s, &code, &verifier, redirect));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "{a:?} {b:?}");
    s.stop().await;
}

on_both_stores!(login_codes_single_use_with_pkce_sqlite, login_codes_single_use_with_pkce_postgres, code_flow);

#[tokio::test]
async fn login_code_expires() {
    let s = Server::start(&[("SYNCGATE_LOGIN_CODE_TTL_SECS", "1")]).await;
    register(&s, "tray@example.com", "tray").await;
    let redirect = "http://127.0.0.1:5555/cb";
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_invalid_grant(redeem_json(&s, &code, &verifier, redirect).await, "expired code");
    // A fresh code redeemed at once still works.
    let (verifier, challenge) = pkce();
    let code = code_for(&s, redirect, &challenge).await;
    let (st, tokens) = redeem_json(&s, &code, &verifier, redirect).await;
    assert_eq!(st, 200, "{tokens}");
    s.stop().await;
}

/// Signs in with `device_id=tray-laptop` on the page; the code.
async fn sign_in_with_device(s: &Server, redirect: &str, challenge: &str) -> String {
    let query = format!("{}&device_id=tray-laptop", authorize_query(redirect, STATE, challenge));
    let r = submit_form(s, &query, "tray", "tray password").await;
    assert_eq!(status(&r), 303, "{r}");
    let location = header(&r, "location").unwrap().to_string();
    location.split(['?', '&']).find_map(|kv| kv.strip_prefix("code=")).unwrap().to_string()
}

#[tokio::test]
async fn login_code_binds_the_device_named_on_the_page() {
    let s = Server::start(&[]).await;
    register(&s, "tray@example.com", "tray").await;
    let redirect = "http://127.0.0.1:5555/cb";
    let (verifier, challenge) = pkce();
    let code = sign_in_with_device(&s, redirect, &challenge).await;
    let (st, tokens) = redeem_json(&s, &code, &verifier, redirect).await;
    assert_eq!(st, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let mut c = Client::connect(&s.url(&format!("token={access}"))).await.unwrap();
    let w = c.recv().await;
    assert_eq!((w["type"].as_str(), w["device_id"].as_str()), (Some("welcome"), Some("tray-laptop")), "{w}");
    // Once the device is revoked, a code issued for it yields no tokens.
    let (st, body) = http_json(s.addr, "DELETE", "/api/devices/tray-laptop", Some(&access), "").await;
    assert_eq!(st, 200, "{body}");
    let (verifier, challenge) = pkce();
    let code = sign_in_with_device(&s, redirect, &challenge).await;
    let (st, body) = redeem_json(&s, &code, &verifier, redirect).await;
    assert_eq!((st, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    s.stop().await;
}

#[tokio::test]
async fn login_code_redemption_is_rate_limited_per_address() {
    let s = Server::start(&[("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "3")]).await;
    let (verifier, _) = pkce();
    for _ in 0..3 {
        assert_invalid_grant(redeem_json(&s, &"0".repeat(64), &verifier, "http://127.0.0.1:5555/cb").await, "guess");
    }
    let (st, body) = redeem_json(&s, &"0".repeat(64), &verifier, "http://127.0.0.1:5555/cb").await;
    assert_eq!((st, body["error"].as_str()), (429, Some("rate_limited")), "{body}");
    let (st, _) = http_json(s.addr, "GET", "/health", None, "").await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test]
async fn login_page_in_headless_chromium_returns_a_code_that_opens_ws() {
    let s = Server::start(&[]).await;
    register(&s, "tray@example.com", "tray").await;
    let (cb_port, mut got) = callback_server().await;
    let redirect = format!("http://127.0.0.1:{cb_port}/cb");
    let (verifier, challenge) = pkce();
    let state = "tray-state-0123456789";
    let page = format!("http://{}/login-client?{}", s.addr, authorize_query(&redirect, state, &challenge));

    let mut b = Browser::launch().await;
    b.call("Page.enable", json!({})).await;
    b.call("Page.navigate", json!({"url": page})).await;
    b.wait_for("!!document.querySelector('#login')").await;
    // A wrong password first: the page comes back with an error.
    b.eval("document.querySelector('#login').value='tray'; document.querySelector('#password').value='nope nope'; document.querySelector('#submit').click(); true").await;
    b.wait_for("!!document.querySelector('.err')").await;
    b.eval("document.querySelector('#login').value='tray@example.com'; document.querySelector('#password').value='tray password'; document.querySelector('#submit').click(); true").await;
    let query = tokio::time::timeout(Duration::from_secs(20), got.recv()).await.expect("callback reached").unwrap();
    let pairs: Vec<(&str, &str)> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    assert_eq!(pairs.len(), 2, "only code and state in the redirect: {query}");
    assert_eq!(pairs[1], ("state", state), "{query}");
    let code = pairs[0].1.to_string();
    assert_eq!(pairs[0].0, "code", "{query}");
    b.wait_for("!!document.querySelector('#done')").await;
    let href = b.eval("location.href").await;
    assert!(href.as_str().is_some_and(|h| !h.contains("token") && !h.contains('#')), "{href}");

    // The app's side: the code and its verifier, once.
    let (st, tokens) = redeem_json(&s, &code, &verifier, &redirect).await;
    assert_eq!(st, 200, "{tokens}");
    opens_ws(&s, tokens["access_token"].as_str().unwrap()).await;
    assert_invalid_grant(redeem_json(&s, &code, &verifier, &redirect).await, "second redemption");
    drop(b);
    s.stop().await;
}
