//! Accounts over HTTP, on SQLite (the default) and on a real PostgreSQL (127.0.0.1:5432, a fresh
//! database per test): register, login, rotating refresh with reuse detection, logout,
//! change-password, and the access token opening `/ws`.

use serde_json::{json, Value};

use crate::common::*;

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh PostgreSQL database; returns its URL.
pub async fn fresh_pg_database() -> String {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let admin =
        sqlx::AnyPool::connect(PG_ADMIN).await.expect("PostgreSQL at 127.0.0.1:5432 (scripts/test.sh starts it)");
    let name = format!("sgtest_{}", syncgate::util::random_hex(6));
    admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

async fn post(s: &Server, path: &str, body: &str, bearer: Option<&str>) -> (u16, Value) {
    http_json(s.addr, "POST", path, bearer, body).await
}

async fn accounts_flow(s: &Server) {
    // Register: 201 with a token pair; emails are trimmed and lower-cased.
    let (status, r) =
        post(s, "/register", r#"{"email":"  Alice@Example.com ","password":"correct horse","username":"alice"}"#, None)
            .await;
    assert_eq!(status, 201, "{r}");
    assert_eq!(r["user"]["email"], "alice@example.com");
    assert_eq!(r["user"]["username"], "alice");
    assert!(r["expires_in"].as_u64().unwrap() > 0);
    let user_id = r["user"]["id"].as_str().unwrap().to_string();
    let access = r["access_token"].as_str().unwrap().to_string();

    // The access token opens /ws as that user.
    let mut c = Client::connect(&s.url(&format!("token={access}"))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], user_id.as_str());

    // Duplicates and invalid bodies.
    assert_eq!(post(s, "/register", r#"{"email":"alice@example.com","password":"another pw"}"#, None).await.0, 409);
    assert_eq!(
        post(s, "/register", r#"{"email":"bob@example.com","password":"another pw","username":"alice"}"#, None).await.0,
        409
    );
    for bad in [
        "not json",
        r#"{"password":"long enough"}"#,
        r#"{"email":"x@example.com"}"#,
        r#"{"email":5,"password":"long enough"}"#,
        r#"{"email":"not-an-email","password":"long enough"}"#,
        r#"{"email":"c@example.com","password":"short"}"#,
    ] {
        let (status, body) = post(s, "/register", bad, None).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].is_string());
    }

    // Login by email or username; unknown user and wrong password are the same 401.
    let (status, l) = post(s, "/login", r#"{"email":"ALICE@example.com","password":"correct horse"}"#, None).await;
    assert_eq!(status, 200, "{l}");
    let (status, _) = post(s, "/login", r#"{"username":"alice","password":"correct horse"}"#, None).await;
    assert_eq!(status, 200);
    let wrong = post(s, "/login", r#"{"email":"alice@example.com","password":"wrong password"}"#, None).await;
    let unknown = post(s, "/login", r#"{"email":"nobody@example.com","password":"wrong password"}"#, None).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong.0, 401);

    // Refresh rotates; presenting a rotated token revokes the whole login.
    let r1 = l["refresh_token"].as_str().unwrap().to_string();
    let (status, n1) = post(s, "/token/refresh", &json!({"refresh_token": r1}).to_string(), None).await;
    assert_eq!(status, 200);
    let r2 = n1["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r2);
    assert_eq!(post(s, "/token/refresh", &json!({"refresh_token": r1}).to_string(), None).await.0, 401, "reuse");
    assert_eq!(
        post(s, "/token/refresh", &json!({"refresh_token": r2}).to_string(), None).await.0,
        401,
        "family revoked"
    );
    assert_eq!(post(s, "/token/refresh", r#"{"refresh_token":"garbage"}"#, None).await.0, 401);

    // Logout revokes that login.
    let (_, l2) = post(s, "/login", r#"{"email":"alice@example.com","password":"correct horse"}"#, None).await;
    let r3 = l2["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(post(s, "/logout", &json!({"refresh_token": r3}).to_string(), None).await.0, 200);
    assert_eq!(post(s, "/token/refresh", &json!({"refresh_token": r3}).to_string(), None).await.0, 401);

    // Change password: authenticated; old password then fails, every refresh token is revoked.
    let (_, l3) = post(s, "/login", r#"{"email":"alice@example.com","password":"correct horse"}"#, None).await;
    let r4 = l3["refresh_token"].as_str().unwrap().to_string();
    let a3 = l3["access_token"].as_str().unwrap().to_string();
    let body = r#"{"current_password":"correct horse","new_password":"battery staple"}"#;
    assert_eq!(post(s, "/change-password", body, None).await.0, 401);
    assert_eq!(
        post(s, "/change-password", r#"{"current_password":"nope nope","new_password":"battery staple"}"#, Some(&a3))
            .await
            .0,
        401
    );
    let (status, changed) = post(s, "/change-password", body, Some(&a3)).await;
    assert_eq!(status, 200, "{changed}");
    // New tokens for the calling device, in the JSON of /login.
    assert_eq!(changed["device_id"], l3["device_id"]);
    assert_eq!(changed["token_type"], "Bearer");
    let fresh = changed["access_token"].as_str().unwrap();
    assert_eq!(get(s, "/api/devices", fresh).await.0, 200);
    assert_eq!(get(s, "/api/devices", &a3).await.0, 401, "the old access token is void");
    assert_eq!(post(s, "/login", r#"{"email":"alice@example.com","password":"correct horse"}"#, None).await.0, 401);
    assert_eq!(post(s, "/login", r#"{"email":"alice@example.com","password":"battery staple"}"#, None).await.0, 200);
    assert_eq!(post(s, "/token/refresh", &json!({"refresh_token": r4}).to_string(), None).await.0, 401);
}

on_both_stores!(accounts_on_sqlite, accounts_on_postgres, server accounts_flow);

async fn get(s: &Server, path: &str, bearer: &str) -> (u16, Value) {
    request(s, "GET", path, bearer).await
}

async fn request(s: &Server, method: &str, path: &str, bearer: &str) -> (u16, Value) {
    http_json(s.addr, method, path, Some(bearer), "").await
}

/// A login bound to `device` (created on first use): (access, refresh).
async fn login_as(s: &Server, email: &str, password: &str, device: &str) -> (String, String) {
    let body = json!({"email": email, "password": password, "device_id": device}).to_string();
    let (status, t) = post(s, "/login", &body, None).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["device_id"], device);
    (t["access_token"].as_str().unwrap().to_string(), t["refresh_token"].as_str().unwrap().to_string())
}

async fn devices_flow(s: &Server) {
    let (_, r) = post(s, "/register", r#"{"email":"dev@example.com","password":"device owner"}"#, None).await;
    let access = r["access_token"].as_str().unwrap().to_string();
    let first = r["device_id"].as_str().expect("register creates a device").to_string();
    let (phone_access, phone_refresh) = login_as(s, "dev@example.com", "device owner", "phone").await;
    let mut phone =
        Client::connect(&s.url(&format!("token={phone_access}&device_id=phone&device_name=My%20Phone"))).await.unwrap();
    assert_eq!(phone.recv().await["device_id"], "phone");
    let (laptop_access, _) = login_as(s, "dev@example.com", "device owner", "laptop").await;
    let mut laptop = Client::connect(&s.url(&format!("token={laptop_access}"))).await.unwrap();
    assert_eq!(laptop.recv().await["type"], "welcome");
    // A login bound to a third device.
    let (tablet_access, tablet_refresh) = login_as(s, "dev@example.com", "device owner", "tablet").await;
    let mut tablet = Client::connect(&s.url(&format!("token={tablet_access}"))).await.unwrap();
    assert_eq!(tablet.recv().await["device_id"], "tablet");

    // Connected devices are listed at once (the sighting is committed before `welcome`).
    let (status, listed) = get(s, "/api/devices", &access).await;
    assert_eq!(status, 200);
    let devices = listed["devices"].as_array().expect("devices listed");
    let mut ids: Vec<&str> = devices.iter().map(|d| d["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = vec![first.as_str(), "laptop", "phone", "tablet"];
    want.sort_unstable();
    assert_eq!(ids, want);
    let phone_row = devices.iter().find(|d| d["id"] == "phone").unwrap();
    assert_eq!(phone_row["name"], "My Phone");
    assert_eq!(phone_row["online"], true);
    assert!(phone_row["last_seen"].as_i64().unwrap() > 0);
    assert_eq!(get(s, "/api/devices", "garbage").await.0, 401);

    // Revoke: live connection closed with 4003 within a second; never again.
    let started = std::time::Instant::now();
    assert_eq!(request(s, "DELETE", "/api/devices/phone", &access).await.0, 200);
    assert_eq!(phone.close_code_within(std::time::Duration::from_secs(1)).await, 4003);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(laptop.request(json!({"type":"ping"})).await["type"], "pong");
    let r = Client::connect(&s.url(&format!("token={phone_access}&device_id=phone"))).await.err().unwrap();
    assert_eq!(r.status, 403);
    let r = Client::connect(&s.url(&format!("token={phone_access}"))).await.err().unwrap();
    assert_eq!(r.status, 403);
    // The revoked device's access token is refused by every REST endpoint, its refresh token too.
    let (status, body) = get(s, "/api/devices", &phone_access).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    assert_eq!(get(s, "/api/conversations", &phone_access).await.0, 401);
    assert_eq!(post(s, "/token/refresh", &json!({"refresh_token": phone_refresh}).to_string(), None).await.0, 401);
    let mut ff = Client::connect(&s.url("device_id=phone")).await.unwrap();
    ff.send(json!({"type":"auth","token":phone_access})).await;
    assert_eq!(ff.close_code().await, 4003);
    assert_eq!(
        post(s, "/login", r#"{"email":"dev@example.com","password":"device owner","device_id":"phone"}"#, None).await.0,
        403
    );
    let (_, v) = get(s, "/api/devices", &access).await;
    assert!(v["devices"].as_array().unwrap().iter().all(|d| d["id"] != "phone"));

    // Revoking the tablet revokes its login's refresh tokens too.
    assert_eq!(request(s, "DELETE", "/api/devices/tablet", &access).await.0, 200);
    assert_eq!(tablet.close_code_within(std::time::Duration::from_secs(1)).await, 4003);
    assert_eq!(post(s, "/token/refresh", &json!({"refresh_token": tablet_refresh}).to_string(), None).await.0, 401);

    // Another user's device (or an unknown one) is 404.
    let (_, other) = post(s, "/register", r#"{"email":"other@example.com","password":"other owner"}"#, None).await;
    let other_access = other["access_token"].as_str().unwrap().to_string();
    assert_eq!(request(s, "DELETE", "/api/devices/laptop", &other_access).await.0, 404);
    assert_eq!(request(s, "DELETE", "/api/devices/nope", &access).await.0, 404);
    assert_eq!(laptop.request(json!({"type":"ping"})).await["type"], "pong");
}

on_both_stores!(devices_on_sqlite, devices_on_postgres, server devices_flow);

async fn search_flow(s: &Server) {
    let mut access = String::new();
    for (name, mail) in [("alice", "a1"), ("alicia", "a2"), ("malice", "a3"), ("bob", "b1"), ("alfred", "a4")] {
        let (status, r) = post(
            s,
            "/register",
            &json!({"email": format!("{mail}@search.test"), "password": "search pw 123", "username": name}).to_string(),
            None,
        )
        .await;
        assert_eq!(status, 201, "{r}");
        if name == "alice" {
            access = r["access_token"].as_str().unwrap().to_string();
        }
    }
    let (status, v) = get(s, "/api/users/search?q=alic", &access).await;
    assert_eq!(status, 200, "{v}");
    let users = v["users"].as_array().unwrap();
    let names: Vec<&str> = users.iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert!(!names.contains(&"alice"), "never the caller: {names:?}");
    assert!(names.contains(&"alicia") && names.contains(&"malice"), "{names:?}");
    assert!(!names.contains(&"bob"), "{names:?}");
    assert_eq!(names[0], "alicia", "best match first: {names:?}");
    for u in users {
        assert!(u.get("email").is_none(), "never an email: {u}");
        assert!(u["id"].is_string());
    }
    assert_eq!(get(s, "/api/users/search?q=alic", "nope").await.0, 401);
    assert_eq!(get(s, "/api/users/search?q=", &access).await.0, 400);
}

on_both_stores!(search_on_sqlite, search_on_postgres_with_pg_trgm, server search_flow);

#[test]
fn migrate_command_on_sqlite_and_postgres() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pg = rt.block_on(fresh_pg_database());
    for url in [None, Some(pg)] {
        let dir = temp_dir();
        let run = || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_syncgate"));
            cmd.arg("migrate").env_clear().env("SYNCGATE_DATA_DIR", &dir);
            if let Some(u) = &url {
                cmd.env("DATABASE_URL", u);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        assert!(run().starts_with("10 migration(s) applied"), "{url:?}");
        assert!(run().starts_with("0 migration(s) applied"), "{url:?}");
    }
}

#[tokio::test]
async fn abuse_limits_on_login_and_register() {
    let s = Server::start(&[("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "3"), ("SYNCGATE_REGISTER_PER_HOUR", "2")]).await;
    for i in 0..2 {
        let body = json!({"email": format!("r{i}@limits.test"), "password": "limits pw 123"}).to_string();
        assert_eq!(post(&s, "/register", &body, None).await.0, 201);
    }
    let (status, body) = post(&s, "/register", r#"{"email":"r3@limits.test","password":"limits pw 123"}"#, None).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"], "rate_limited");
    for _ in 0..3 {
        assert_eq!(post(&s, "/login", r#"{"email":"r0@limits.test","password":"wrong wrong"}"#, None).await.0, 401);
    }
    // Over the limit even with the right password: guessing stops here.
    let (status, body) = post(&s, "/login", r#"{"email":"r0@limits.test","password":"limits pw 123"}"#, None).await;
    assert_eq!(status, 429);
    assert!(body["message"].is_string());
    s.stop().await;
}

/// The binary in the development set-up (no key): the reset code is written to the log.
fn spawn_dev(env: &[(&str, &str)]) -> (std::process::Child, String, std::sync::mpsc::Receiver<String>) {
    let mut all = vec![("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "100")];
    all.extend_from_slice(env);
    spawn_binary(&all)
}

fn otp_from(logs: &std::sync::mpsc::Receiver<String>, email: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let line =
            logs.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).expect("OTP logged");
        if line.contains("DEVELOPMENT OTP") && line.contains(email) {
            let digits: String = line.rsplit(": ").next().unwrap().chars().take_while(|c| c.is_ascii_digit()).collect();
            assert_eq!(digits.len(), 6, "{line}");
            return digits;
        }
    }
}

async fn reset_flow(env: &[(&str, &str)]) {
    let (mut child, addr, logs) = spawn_dev(env);
    let s = Server::attach(addr.parse().unwrap());
    let (_, r) = post(&s, "/register", r#"{"email":"reset@example.com","password":"old password"}"#, None).await;
    let access = r["access_token"].as_str().unwrap().to_string();
    let refresh = r["refresh_token"].as_str().unwrap().to_string();
    let mut live = Client::connect(&s.url(&format!("token={access}"))).await.unwrap();
    assert_eq!(live.recv().await["type"], "welcome");

    assert_eq!(post(&s, "/forgot-password", r#"{"email":"nobody@example.com"}"#, None).await.0, 202);
    assert_eq!(post(&s, "/forgot-password", r#"{"email":"Reset@Example.com"}"#, None).await.0, 202);
    let code = otp_from(&logs, "reset@example.com");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let reset = |otp: &str, pw: &str| json!({"email":"reset@example.com","otp":otp,"new_password":pw}).to_string();
    assert_eq!(post(&s, "/reset-password", &reset(wrong, "new password"), None).await.0, 401);
    assert_eq!(post(&s, "/reset-password", &reset(&code, "new password"), None).await.0, 200);
    assert_eq!(live.close_code().await, 4003, "live connections are closed");
    assert_eq!(post(&s, "/token/refresh", &json!({"refresh_token": refresh}).to_string(), None).await.0, 401);
    // The access token from before the reset is void too: REST 401, reconnect refused.
    assert_eq!(get(&s, "/api/devices", &access).await.0, 401);
    assert_eq!(Client::connect(&s.url(&format!("token={access}"))).await.err().unwrap().status, 401);
    assert_eq!(post(&s, "/login", r#"{"email":"reset@example.com","password":"old password"}"#, None).await.0, 401);
    assert_eq!(post(&s, "/login", r#"{"email":"reset@example.com","password":"new password"}"#, None).await.0, 200);
    assert_eq!(post(&s, "/reset-password", &reset(&code, "third password"), None).await.0, 401, "a code works once");

    // Five wrong tries burn a code.
    assert_eq!(post(&s, "/forgot-password", r#"{"email":"reset@example.com"}"#, None).await.0, 202);
    let code = otp_from(&logs, "reset@example.com");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        assert_eq!(post(&s, "/reset-password", &reset(wrong, "third password"), None).await.0, 401);
    }
    assert_eq!(post(&s, "/reset-password", &reset(&code, "third password"), None).await.0, 401);
    assert_eq!(
        post(&s, "/reset-password", r#"{"email":"reset@example.com","otp":"12ab","new_password":"x y z w v"}"#, None)
            .await
            .0,
        400
    );
    child.kill().unwrap();
    let _ = child.wait();
}

on_both_stores!(password_reset_on_sqlite, password_reset_on_postgres, reset_flow);

#[tokio::test]
async fn cors_for_allowed_origins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&[("SYNCGATE_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let raw = |req: String| async move {
        let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out.to_lowercase()
    };
    let pre = raw("OPTIONS /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n\r\n".into()).await;
    assert!(pre.starts_with("http/1.1 204"), "{pre}");
    assert!(pre.contains("access-control-allow-origin: https://app.example.com"));
    assert!(pre.contains("access-control-allow-headers: authorization, content-type"));
    let bad =
        raw("OPTIONS /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://evil.example.com\r\n\r\n"
            .into())
        .await;
    assert!(bad.starts_with("http/1.1 403"), "{bad}");
    let body = r#"{"email":"cors@example.com","password":"cors password"}"#;
    let reg = raw(format!("POST /register HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://app.example.com\r\nContent-Length: {}\r\n\r\n{body}", body.len())).await;
    assert!(
        reg.starts_with("http/1.1 201") && reg.contains("access-control-allow-origin: https://app.example.com"),
        "{reg}"
    );
    let other =
        raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://evil.example.com\r\n\r\n".into())
            .await;
    assert!(!other.contains("access-control-allow-origin"));
    s.stop().await;
}

/// A minimal SMTP listener that accepts every message and hands over its text.
async fn smtp_sink() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 localhost ESMTP test\r\n").await;
                let mut data: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = data.as_mut() {
                        if line == "." {
                            let _ = tx.send(std::mem::take(body));
                            data = None;
                            let _ = w.write_all(b"250 OK queued\r\n").await;
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let cmd = line.to_uppercase();
                    let reply: &[u8] = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        b"250-localhost\r\n250 8BITMIME\r\n"
                    } else if cmd.starts_with("DATA") {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn reset_code_by_smtp_and_never_in_the_log() {
    let (port, mut mails) = smtp_sink().await;
    let url = format!("smtp://127.0.0.1:{port}");
    let (mut child, addr, logs) =
        spawn_dev(&[("SYNCGATE_SMTP_URL", url.as_str()), ("SYNCGATE_SMTP_FROM", "gate <gate@example.com>")]);
    let s = Server::attach(addr.parse().unwrap());
    assert_eq!(post(&s, "/register", r#"{"email":"mail@example.com","password":"mail password"}"#, None).await.0, 201);
    assert_eq!(post(&s, "/forgot-password", r#"{"email":"mail@example.com"}"#, None).await.0, 202);
    let mail =
        tokio::time::timeout(std::time::Duration::from_secs(10), mails.recv()).await.expect("mail sent").unwrap();
    assert!(mail.contains("mail@example.com") && mail.contains("gate@example.com"), "{mail}");
    let code: String =
        mail.split("code is ").nth(1).expect("code in the mail").chars().take_while(|c| c.is_ascii_digit()).collect();
    assert_eq!(code.len(), 6);
    let body = json!({"email":"mail@example.com","otp":code,"new_password":"new mail password"}).to_string();
    assert_eq!(post(&s, "/reset-password", &body, None).await.0, 200);
    child.kill().unwrap();
    let _ = child.wait();
    let log: Vec<String> = logs.try_iter().collect();
    let log = log.join("\n");
    assert!(!log.contains("DEVELOPMENT OTP"), "never logged when SMTP is configured");
    // The code as a number of its own (timestamps may contain the same six digits by chance).
    let b = log.as_bytes();
    let standalone = log.match_indices(&code).any(|(i, _)| {
        let before = i.checked_sub(1).map(|j| b[j].is_ascii_digit()).unwrap_or(false);
        let after = b.get(i + 6).is_some_and(|c| c.is_ascii_digit());
        !before && !after
    });
    assert!(!standalone, "the reset code reached the log");
}

/// Reset codes cannot be walked: wrong codes count per account across every code issued (a new
/// code does not reset the budget); past `SYNCGATE_OTP_GUESSES_PER_DAY` even the right code gets
/// 429 while the password still logs in; concurrent wrong guesses never exceed a code's 5.
async fn otp_budget_flow(env: &[(&str, &str)]) {
    let mut all = vec![("SYNCGATE_OTP_GUESSES_PER_DAY", "8")];
    all.extend_from_slice(env);
    let (child, addr, logs) = spawn_dev(&all);
    let _child = Reap(child);
    let s = Server::attach(addr.parse().unwrap());
    let email = "budget@example.com";
    assert_eq!(
        post(&s, "/register", &json!({"email":email,"password":"budget password"}).to_string(), None).await.0,
        201
    );
    let reset = |otp: &str| json!({"email":email,"otp":otp,"new_password":"another password"}).to_string();
    let wrong_for = |code: &str| if code == "000000" { "111111".to_string() } else { "000000".to_string() };

    // Concurrent wrong guesses on one code: at most 5 are checked, so the right code is burned.
    assert_eq!(post(&s, "/forgot-password", &json!({"email":email}).to_string(), None).await.0, 202);
    let code = otp_from(&logs, email);
    let wrong = wrong_for(&code);
    let body = reset(&wrong);
    let guesses: Vec<_> = (0..6).map(|_| post(&s, "/reset-password", &body, None)).collect();
    for (status, _) in futures_util::future::join_all(guesses).await {
        assert_eq!(status, 401);
    }
    assert_eq!(post(&s, "/reset-password", &reset(&code), None).await.0, 401, "burned after 5 attempts");
    // 7 failures so far (6 wrong + the burned one); a new code does not reset the budget.
    assert_eq!(post(&s, "/forgot-password", &json!({"email":email}).to_string(), None).await.0, 202);
    let code = otp_from(&logs, email);
    assert_eq!(post(&s, "/reset-password", &reset(&wrong_for(&code)), None).await.0, 401);
    let (status, body) = post(&s, "/reset-password", &reset(&code), None).await;
    assert_eq!((status, body["error"].as_str()), (429, Some("rate_limited")), "even the right code waits: {body}");
    // Only the reset waits: the password still logs in, and forgot still answers 202.
    assert_eq!(post(&s, "/login", &json!({"email":email,"password":"budget password"}).to_string(), None).await.0, 200);
    assert_eq!(post(&s, "/forgot-password", &json!({"email":email}).to_string(), None).await.0, 202);
}

on_both_stores!(otp_budget_on_sqlite, otp_budget_on_postgres, otp_budget_flow);

/// Without SMTP and outside the development set-up no code can be delivered: none is stored.
#[tokio::test]
async fn undeliverable_reset_codes_are_not_stored() {
    let dir = temp_dir();
    let s = Server::start(&[("SYNCGATE_DATA_DIR", dir.to_str().unwrap())]).await;
    let email = "nomail@example.com";
    assert_eq!(
        post(&s, "/register", &json!({"email":email,"password":"nomail password"}).to_string(), None).await.0,
        201
    );
    assert_eq!(post(&s, "/forgot-password", &json!({"email":email}).to_string(), None).await.0, 202);
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/syncgate.db", dir.display())).await.unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM otps").fetch_one(&db).await.unwrap();
    assert_eq!(n, 0);
    s.stop().await;
}
