//! Pairing codes (issue 14, part), over HTTP and WebSocket on SQLite and PostgreSQL: a signed-in
//! device creates a code (`POST /api/pairing`), a new device claims it once (`POST
//! /api/pairing/claim`) and logs in as the same user; the first device's connections get
//! `pairing_complete`. Also the code rules, the claim limits (per address, global — across
//! instances through Redis) and concurrent claims on two instances sharing one PostgreSQL.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

const ALPHABET: &str = "23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const PASSWORD: &str = "pairing test pw";

/// A real Ed25519 public key (ring), base64url without padding.
fn ed25519_public_key() -> String {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
}

/// Registers `email` and logs in as device `device` (over HTTP): (user id, access token).
async fn account(s: &Server, email: &str, device: &str) -> (String, String) {
    let (status, r) =
        http_json(s.addr, "POST", "/register", None, &json!({"email":email,"password":PASSWORD}).to_string()).await;
    assert_eq!(status, 201, "{r}");
    let (status, t) = http_json(
        s.addr,
        "POST",
        "/login",
        None,
        &json!({"email":email,"password":PASSWORD,"device_id":device}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["device_id"], device);
    (t["user"]["id"].as_str().unwrap().to_string(), t["access_token"].as_str().unwrap().to_string())
}

/// `POST /api/pairing` with `token`: the code (201 expected).
async fn new_code(s: &Server, token: &str) -> String {
    let (status, r) = http_json(s.addr, "POST", "/api/pairing", Some(token), "").await;
    assert_eq!(status, 201, "{r}");
    r["code"].as_str().unwrap().to_string()
}

async fn claim(s: &Server, body: &Value) -> (u16, Value) {
    http_json(s.addr, "POST", "/api/pairing/claim", None, &body.to_string()).await
}

fn assert_code_format(code: &str) {
    assert_eq!(code.len(), 9, "{code}");
    assert_eq!(&code[4..5], "-", "{code}");
    assert!(code.chars().enumerate().all(|(i, c)| i == 4 || ALPHABET.contains(c)), "{code}");
}

/// The global claim limit counts per clock minute: a test of it must not straddle a minute.
async fn avoid_minute_edge() {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    if ms % 60_000 > 50_000 {
        tokio::time::sleep(Duration::from_millis(60_000 - ms % 60_000 + 200)).await;
    }
}

// A keyed device's token-only connection stays allowed here (the test connects with tokens).
const ALLOW_TOKEN: (&str, &str) = ("SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN", "1");

async fn end_to_end(env: &[(&str, &str)]) {
    let s = Server::start(env).await;
    let (user_id, a_token) = account(&s, "pair-a@example.com", "phone-a").await;
    let mut a = Client::connect(&s.url(&format!("token={a_token}"))).await.unwrap();
    let w = a.recv().await;
    assert_eq!((w["type"].as_str(), w["device_id"].as_str()), (Some("welcome"), Some("phone-a")), "{w}");

    let (status, created) = http_json(s.addr, "POST", "/api/pairing", Some(&a_token), "").await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["expires_in"], 600);
    let code = created["code"].as_str().unwrap().to_string();
    assert_code_format(&code);

    let pair = crate::key_login::keypair();
    let key = crate::key_login::public_key(&pair);
    let (status, t) = claim(&s, &json!({"code":code,"device_name":"Work laptop","public_key":key})).await;
    assert_eq!(status, 201, "{t}");
    let device = t["device_id"].as_str().unwrap().to_string();
    assert!(!device.is_empty() && device != "phone-a", "{t}");
    assert_eq!(t["user"]["id"], user_id.as_str());
    assert_eq!(t["token_type"], "Bearer");
    assert!(t["refresh_token"].as_str().is_some_and(|r| !r.is_empty()), "{t}");
    let new_access = t["access_token"].as_str().unwrap().to_string();

    // A's socket: exactly these fields.
    let notice = a.recv_type("pairing_complete").await;
    assert_eq!(
        notice,
        json!({"type":"pairing_complete","device_id":device,"device_name":"Work laptop","public_key":key})
    );

    // The new device is listed at once, with its name and key.
    let (status, list) = http_json(s.addr, "GET", "/api/devices", Some(&a_token), "").await;
    assert_eq!(status, 200, "{list}");
    let listed = list["devices"].as_array().unwrap().iter().find(|d| d["id"] == device.as_str()).cloned();
    let listed = listed.unwrap_or_else(|| panic!("{device} not in {list}"));
    assert_eq!((listed["name"].as_str(), listed["public_key"].as_str()), (Some("Work laptop"), Some(key.as_str())));

    // The new device has a key: it connects with key login (its token alone is refused, no
    // downgrade), as the same user and the new device.
    let r = Client::connect(&s.url(&format!("token={new_access}"))).await.err().expect("a keyed device");
    assert_eq!(r.status, 403, "{:?}", r.body);
    let mut b = crate::key_login::key_login(&s, &device, &pair).await;
    let w = b.welcome.clone();
    assert_eq!((w["user_id"].as_str(), w["device_id"].as_str()), (Some(user_id.as_str()), Some(device.as_str())));
    // Its refresh token works too.
    let refresh = json!({"refresh_token": t["refresh_token"]}).to_string();
    let (status, r) = http_json(s.addr, "POST", "/token/refresh", None, &refresh).await;
    assert_eq!((status, r["device_id"].as_str()), (200, Some(device.as_str())), "{r}");

    // Without a key: public_key null in the notice (to every connection of the user) and the list.
    let code = new_code(&s, &a_token).await;
    let (status, t) = claim(&s, &json!({"code":code,"device_name":"Tablet","public_key":null})).await;
    assert_eq!(status, 201, "{t}");
    let tablet = t["device_id"].as_str().unwrap().to_string();
    let expected = json!({"type":"pairing_complete","device_id":tablet,"device_name":"Tablet","public_key":null});
    assert_eq!(a.recv_type("pairing_complete").await, expected);
    assert_eq!(b.recv_type("pairing_complete").await, expected);
    let (_, list) = http_json(s.addr, "GET", "/api/devices", Some(&new_access), "").await;
    let listed = list["devices"].as_array().unwrap().iter().find(|d| d["id"] == tablet.as_str()).cloned().unwrap();
    assert_eq!((listed["name"].as_str(), &listed["public_key"]), (Some("Tablet"), &Value::Null));

    // Another user's connection hears nothing.
    let (_, c_token) = account(&s, "pair-c@example.com", "phone-c").await;
    let mut c = Client::connect(&s.url(&format!("token={c_token}"))).await.unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    let code = new_code(&s, &a_token).await;
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"Other"})).await.0, 201);
    a.recv_type("pairing_complete").await;
    c.silent(300).await;
    s.stop().await;
}

on_both_stores!(pairing_end_to_end_on_sqlite, pairing_end_to_end_on_postgres, end_to_end);

async fn code_rules(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("SYNCGATE_PAIRING_CLAIMS_PER_MIN", "1000"));
    let s = Server::start(&env).await;
    let (_, token) = account(&s, "rules@example.com", "phone").await;

    // Every code has the format; lower case and no dash are accepted.
    let code = new_code(&s, &token).await;
    assert_code_format(&code);
    let (status, t) = claim(&s, &json!({"code":code.to_lowercase(),"device_name":"lower"})).await;
    assert_eq!(status, 201, "{t}");
    // Single use.
    let (status, e) = claim(&s, &json!({"code":code,"device_name":"again"})).await;
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")), "{e}");
    let code = new_code(&s, &token).await;
    assert_eq!(claim(&s, &json!({"code":code.replace('-', ""),"device_name":"no dash"})).await.0, 201);

    // A second code from the same device voids the first.
    let first = new_code(&s, &token).await;
    let second = new_code(&s, &token).await;
    assert_ne!(first, second);
    assert_eq!(claim(&s, &json!({"code":first,"device_name":"x"})).await.0, 404);
    assert_eq!(claim(&s, &json!({"code":second,"device_name":"x"})).await.0, 201);

    // Unknown codes: 404 {"error":"not_found"}, also when they cannot be codes at all.
    for unknown in ["ZZZZ-ZZZZ", "0000-0000", "abc", ""] {
        let (status, e) = claim(&s, &json!({"code":unknown,"device_name":"x"})).await;
        assert_eq!((status, e["error"].as_str()), (404, Some("not_found")), "{unknown}: {e}");
    }

    // Malformed bodies: 400, and the live code survives them.
    let live = new_code(&s, &token).await;
    let huge = json!({"code": live, "device_name": "x".repeat(1 << 20)}).to_string();
    let bad_bodies = [
        json!({"device_name":"x"}).to_string(),
        json!({"code":live}).to_string(),
        json!({"code":live,"device_name":""}).to_string(),
        json!({"code":live,"device_name":"x".repeat(65)}).to_string(),
        json!({"code":live,"device_name":"a\u{7}b"}).to_string(),
        json!({"code":5,"device_name":"x"}).to_string(),
        json!({"code":live,"device_name":"x","public_key":"not-a-key"}).to_string(),
        json!({"code":live,"device_name":"x","public_key":ed25519_public_key() + "="}).to_string(),
        json!({"code":live,"device_name":"x","public_key":7}).to_string(),
        "not json".to_string(),
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)),
        huge,
    ];
    for body in &bad_bodies {
        let (status, e) = http_json(s.addr, "POST", "/api/pairing/claim", None, body).await;
        assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")), "{}: {e}", &body[..body.len().min(80)]);
    }
    assert_eq!(claim(&s, &json!({"code":live,"device_name":"survivor"})).await.0, 201);

    // Creating needs a device-bound token: none → 401, one without did → 403 with a JSON error.
    assert_eq!(http_json(s.addr, "POST", "/api/pairing", None, "").await.0, 401);
    let (status, e) = http_json(s.addr, "POST", "/api/pairing", Some(&crate::common::token("someone")), "").await;
    assert_eq!((status, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("did"), "{e}");
    // Only POST.
    assert_eq!(http_json(s.addr, "GET", "/api/pairing", Some(&token), "").await.0, 404);

    // Still serving.
    assert_eq!(http_json(s.addr, "GET", "/api/devices", Some(&token), "").await.0, 200);
    let code = new_code(&s, &token).await;
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"last"})).await.0, 201);
    s.stop().await;
}

on_both_stores!(pairing_code_rules_on_sqlite, pairing_code_rules_on_postgres, code_rules);

async fn expiry(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("SYNCGATE_PAIRING_TTL_SECS", "1"));
    let s = Server::start(&env).await;
    let (_, token) = account(&s, "expiry@example.com", "phone").await;
    let (status, r) = http_json(s.addr, "POST", "/api/pairing", Some(&token), "").await;
    assert_eq!((status, r["expires_in"].as_u64()), (201, Some(1)), "{r}");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, e) = claim(&s, &json!({"code":r["code"],"device_name":"late"})).await;
    assert_eq!((status, e["error"].as_str()), (404, Some("not_found")), "{e}");
    // A fresh code claimed at once still works.
    let code = new_code(&s, &token).await;
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"quick"})).await.0, 201);
    s.stop().await;
}

on_both_stores!(pairing_expiry_on_sqlite, pairing_expiry_on_postgres, expiry);

async fn limits(env: &[(&str, &str)]) {
    // Per address: the 4th claim within the minute is refused, even with a live code.
    let mut per_address = env.to_vec();
    per_address.push(("SYNCGATE_PAIRING_CLAIMS_PER_MIN", "3"));
    let s = Server::start(&per_address).await;
    let (_, token) = account(&s, "limits@example.com", "phone").await;
    let code = new_code(&s, &token).await;
    for _ in 0..3 {
        assert_eq!(claim(&s, &json!({"code":"ZZZZ-ZZZZ","device_name":"x"})).await.0, 404);
    }
    let (status, e) = claim(&s, &json!({"code":code,"device_name":"x"})).await;
    assert_eq!((status, e["error"].as_str()), (429, Some("rate_limited")), "{e}");
    assert!(e["message"].is_string(), "{e}");
    // Still serving (and malformed bodies are still answered 400).
    assert_eq!(http_json(s.addr, "GET", "/health", None, "").await.0, 200);
    assert_eq!(claim(&s, &json!({"device_name":"x"})).await.0, 400);
    assert_eq!(http_json(s.addr, "POST", "/api/pairing", Some(&token), "").await.0, 201);
    s.stop().await;

    // Global (one loopback address, so the per-address limit is set high).
    avoid_minute_edge().await;
    let mut global = env.to_vec();
    global.extend([("SYNCGATE_PAIRING_CLAIMS_PER_MIN", "1000"), ("SYNCGATE_PAIRING_CLAIMS_GLOBAL_PER_MIN", "3")]);
    let s = Server::start(&global).await;
    let (_, token) = account(&s, "global@example.com", "phone").await;
    let code = new_code(&s, &token).await;
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"x"})).await.0, 201);
    for _ in 0..2 {
        assert_eq!(claim(&s, &json!({"code":"ZZZZ-ZZZZ","device_name":"x"})).await.0, 404);
    }
    let code = new_code(&s, &token).await;
    let (status, e) = claim(&s, &json!({"code":code,"device_name":"x"})).await;
    assert_eq!((status, e["error"].as_str()), (429, Some("rate_limited")), "{e}");
    assert_eq!(http_json(s.addr, "GET", "/health", None, "").await.0, 200);
    assert_eq!(http_json(s.addr, "GET", "/api/devices", Some(&token), "").await.0, 200);
    s.stop().await;
}

on_both_stores!(pairing_limits_on_sqlite, pairing_limits_on_postgres, limits);

/// Two instances on one fresh PostgreSQL and one Redis (own key prefix).
async fn two_instances(extra: &[(&str, &str)]) -> (Server, Server) {
    let url = crate::accounts::fresh_pg_database().await;
    let prefix = crate::cluster::prefix();
    let mut env = vec![
        ("DATABASE_URL", url.as_str()),
        ("REDIS_URL", crate::cluster::REDIS),
        ("SYNCGATE_REDIS_PREFIX", prefix.as_str()),
        ALLOW_TOKEN,
    ];
    env.extend_from_slice(extra);
    let s1 = Server::start(&env).await;
    // The second starts after the first migrated the fresh database.
    let s2 = Server::start(&env).await;
    (s1, s2)
}

#[tokio::test]
async fn concurrent_claims_on_two_instances_pay_out_once() {
    let (s1, s2) = two_instances(&[
        ("SYNCGATE_PAIRING_CLAIMS_PER_MIN", "1000"),
        ("SYNCGATE_PAIRING_CLAIMS_GLOBAL_PER_MIN", "1000"),
    ])
    .await;
    let (user_id, token) = account(&s1, "race@example.com", "phone").await;
    let mut a = Client::connect(&s1.url(&format!("token={token}"))).await.unwrap();
    assert_eq!(a.recv().await["type"], "welcome");
    let mut winners = Vec::new();
    for i in 0..20 {
        let code = new_code(if i % 2 == 0 { &s1 } else { &s2 }, &token).await;
        let body = json!({"code":code,"device_name":format!("race {i}")});
        let ((st1, r1), (st2, r2)) = tokio::join!(claim(&s1, &body), claim(&s2, &body));
        let mut statuses = [st1, st2];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 404], "code {i}: {r1} {r2}");
        let won = if st1 == 201 { r1 } else { r2 };
        assert_eq!(won["user"]["id"], user_id.as_str());
        winners.push(won["device_id"].as_str().unwrap().to_string());
    }
    // Exactly one new device per code.
    let (_, list) = http_json(s2.addr, "GET", "/api/devices", Some(&token), "").await;
    let listed: Vec<&str> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"].as_str().is_some_and(|n| n.starts_with("race ")))
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 20, "{list}");
    assert!(winners.iter().all(|w| listed.contains(&w.as_str())), "{winners:?} {list}");
    // A heard of every one of them, whichever instance paid out.
    let mut heard = Vec::new();
    while heard.len() < winners.len() {
        heard.push(a.recv_type("pairing_complete").await["device_id"].as_str().unwrap().to_string());
    }
    heard.sort();
    winners.sort();
    assert_eq!(heard, winners);

    // A claim on the other instance than A's reaches A through the bus.
    let key = ed25519_public_key();
    let code = new_code(&s1, &token).await;
    let (status, t) = claim(&s2, &json!({"code":code,"device_name":"remote","public_key":key})).await;
    assert_eq!(status, 201, "{t}");
    assert_eq!(
        a.recv_type("pairing_complete").await,
        json!({"type":"pairing_complete","device_id":t["device_id"],"device_name":"remote","public_key":key})
    );
    // The new device's token works on the first instance.
    let new_access = t["access_token"].as_str().unwrap();
    let mut b = Client::connect(&s1.url(&format!("token={new_access}"))).await.unwrap();
    assert_eq!(b.recv().await["device_id"], t["device_id"]);
    s1.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn global_claim_limit_is_shared_by_instances() {
    avoid_minute_edge().await;
    let (s1, s2) =
        two_instances(&[("SYNCGATE_PAIRING_CLAIMS_PER_MIN", "1000"), ("SYNCGATE_PAIRING_CLAIMS_GLOBAL_PER_MIN", "4")])
            .await;
    let unknown = json!({"code":"ZZZZ-ZZZZ","device_name":"x"});
    for s in [&s1, &s2, &s1, &s2] {
        assert_eq!(claim(s, &unknown).await.0, 404);
    }
    // Each instance has seen two claims only; together they reached the limit.
    for s in [&s1, &s2] {
        let (status, e) = claim(s, &unknown).await;
        assert_eq!((status, e["error"].as_str()), (429, Some("rate_limited")), "{e}");
    }
    s1.stop().await;
    s2.stop().await;
}

async fn stored_hashed_and_voided(env: &[(&str, &str)]) {
    use sqlx::Connection;
    let dir = temp_dir();
    let dir_s = dir.display().to_string();
    let mut env = env.to_vec();
    env.extend([("SYNCGATE_DATA_DIR", dir_s.as_str()), ("SYNCGATE_PAIRING_TTL_SECS", "1")]);
    let s = Server::start(&env).await;
    let pg = env.iter().find(|(k, _)| *k == "DATABASE_URL").map(|(_, v)| v.to_string());
    let url = pg.unwrap_or_else(|| format!("sqlite://{}", dir.join("syncgate.db").display()));
    let (_, phone) = account(&s, "stored@example.com", "phone").await;
    // The server has opened (and created) its database by now.
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();

    // Only a keyed hash is stored: neither the code nor its plain SHA-256.
    let code = new_code(&s, &phone).await;
    let rows: Vec<(String,)> = sqlx::query_as("SELECT code_hash FROM pairing_codes").fetch_all(&mut db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let stored = &rows[0].0;
    let plain = code.replace('-', "");
    let sha = |t: &str| {
        ring::digest::digest(&ring::digest::SHA256, t.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(stored.len() == 64 && stored.bytes().all(|b| b.is_ascii_hexdigit()), "{stored}");
    assert!(![code.clone(), plain.clone(), sha(&code), sha(&plain)].contains(stored), "{stored}");

    // Expired codes are deleted when a code is made (the table stays bounded).
    let (status, t) = http_json(
        s.addr,
        "POST",
        "/login",
        None,
        &json!({"email":"stored@example.com","password":PASSWORD,"device_id":"laptop"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    let laptop = t["access_token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    new_code(&s, &laptop).await;
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pairing_codes").fetch_one(&mut db).await.unwrap();
    assert_eq!(n, 1, "the expired code of phone is gone, laptop's is live");
    drop(db);
    s.stop().await;

    // A code of a device revoked since, or from before a password change, is void.
    let s = Server::start(&env[..env.len() - 1]).await;
    let login = |device: &'static str| {
        let body = json!({"email":"stored@example.com","password":PASSWORD,"device_id":device}).to_string();
        async move { http_json(s.addr, "POST", "/login", None, &body).await.1["access_token"].as_str().unwrap().to_string() }
    };
    let (phone, laptop) = (login("phone").await, login("laptop").await);
    let code = new_code(&s, &phone).await;
    assert_eq!(http_json(s.addr, "DELETE", "/api/devices/phone", Some(&laptop), "").await.0, 200);
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"x"})).await.0, 404);
    let code = new_code(&s, &laptop).await;
    let body = json!({"current_password":PASSWORD,"new_password":"another pairing pw"}).to_string();
    let (status, r) = http_json(s.addr, "POST", "/change-password", Some(&laptop), &body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"x"})).await.0, 404);
    // The new token of the same device pairs again.
    let code = new_code(&s, r["access_token"].as_str().unwrap()).await;
    assert_eq!(claim(&s, &json!({"code":code,"device_name":"x"})).await.0, 201);
    s.stop().await;
}

on_both_stores!(
    pairing_codes_stored_hashed_on_sqlite,
    pairing_codes_stored_hashed_on_postgres,
    stored_hashed_and_voided
);
