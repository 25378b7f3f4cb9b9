//! Key login (`GET /ws?auth=key`): the signed challenge, the device's answer and every refusal
//! (4001), no downgrade to a token for a keyed device, revocation of a keyed device (4003), on
//! SQLite and PostgreSQL, and the keyed mark across instances over Redis.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use crate::common::*;

pub fn keypair() -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
}

pub fn public_key(pair: &Ed25519KeyPair) -> String {
    URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
}

/// The answer a client builds for `challenge`: `sig` by `signer` over the device-auth text with
/// `device` and `presented` (the key it claims).
pub fn answer(challenge: &Value, device: &str, presented: &str, signer: &Ed25519KeyPair) -> Value {
    let n = challenge["nonce"].as_str().unwrap();
    let cn = "cn-0123456789abcdef";
    let text = format!("syncgate-device-auth-v1\n{n}\n{cn}\n{device}\n{presented}");
    let sig = URL_SAFE_NO_PAD.encode(signer.sign(text.as_bytes()));
    json!({"type":"auth","device_id":device,"public_key":presented,"client_nonce":cn,"sig":sig})
}

/// Opens `/ws?auth=key` and reads the challenge, checking its signature with the key that
/// `GET /api/server-key` publishes (what a client must do before answering).
pub async fn challenged(s: &Server) -> (Client, Value) {
    let (status, server_key) = http_json(s.addr, "GET", "/api/server-key", None, "").await;
    assert_eq!(status, 200);
    let mut c = Client::connect(&s.url("auth=key")).await.expect("key login upgrades");
    let ch = c.recv().await;
    assert_eq!(ch["type"], "challenge", "{ch}");
    assert_eq!(ch.as_object().unwrap().len(), 5, "{ch}");
    assert_eq!(ch["key_id"], server_key["key_id"]);
    let nonce = ch["nonce"].as_str().unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(nonce).unwrap().len(), 32);
    let ts = ch["ts"].as_u64().unwrap();
    assert!(ts.abs_diff(now() * 1000) < 60_000, "ts is the server's time in ms");
    let signed = format!("syncgate-challenge-v1\n{nonce}\n{ts}");
    let pk = URL_SAFE_NO_PAD.decode(server_key["public_key"].as_str().unwrap()).unwrap();
    let sig = URL_SAFE_NO_PAD.decode(ch["sig"].as_str().unwrap()).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pk)
        .verify(signed.as_bytes(), &sig)
        .expect("the challenge is signed by the server key");
    (c, ch)
}

/// Key login of `device` with `pair`: the welcome.
pub async fn key_login(s: &Server, device: &str, pair: &Ed25519KeyPair) -> Client {
    let (mut c, ch) = challenged(s).await;
    c.send(answer(&ch, device, &public_key(pair), pair)).await;
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome", "{w}");
    c.welcome = w;
    c
}

/// The close code a key login gets when it answers with `make(challenge)`.
async fn refused(s: &Server, make: impl FnOnce(&Value) -> String) -> u16 {
    let (mut c, ch) = challenged(s).await;
    c.send_text(&make(&ch)).await;
    c.close_code().await
}

/// Builds a (bad) answer from the challenge.
type Answerer<'a> = Box<dyn FnOnce(&Value) -> String + 'a>;

async fn register(s: &Server, email: &str) {
    let body = json!({"email": email, "password": "key login pw 1"}).to_string();
    let (status, r) = http_json(s.addr, "POST", "/register", None, &body).await;
    assert_eq!(status, 201, "{r}");
}

/// Logs `device` in: (access token, refresh token).
async fn login(s: &Server, email: &str, device: &str) -> (String, String) {
    let body = json!({"email": email, "password": "key login pw 1", "device_id": device}).to_string();
    let (status, t) = http_json(s.addr, "POST", "/login", None, &body).await;
    assert_eq!(status, 200, "{t}");
    (t["access_token"].as_str().unwrap().to_string(), t["refresh_token"].as_str().unwrap().to_string())
}

async fn put_key(s: &Server, device: &str, token: &str, pair: &Ed25519KeyPair) {
    let body = json!({ "public_key": public_key(pair) }).to_string();
    let (status, d) = http_json(s.addr, "PUT", &format!("/api/devices/{device}/key"), Some(token), &body).await;
    assert_eq!(status, 200, "{d}");
}

async fn key_login_flow(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("SYNCGATE_AUTH_TIMEOUT_MS", "1500"));
    let s = Server::start(&env).await;
    register(&s, "kl@example.com").await;
    let (phone_token, phone_refresh) = login(&s, "kl@example.com", "phone").await;
    let (laptop_token, _) = login(&s, "kl@example.com", "laptop").await;
    // The device must be listed (it connected once) before it can register a key.
    let mut first = s.client_with(&phone_token, "phone", "").await;
    first.ws.close(None).await.unwrap();
    let phone = keypair();
    put_key(&s, "phone", &phone_token, &phone).await;
    let user = first.welcome["user_id"].as_str().unwrap().to_string();

    // Success: welcome as the device's user and device; the connection works.
    let mut c = key_login(&s, "phone", &phone).await;
    assert_eq!(c.welcome["user_id"], user.as_str());
    assert_eq!(c.welcome["device_id"], "phone");
    let mut laptop = s.client_with(&laptop_token, "laptop", "").await;
    laptop.send(json!({"type":"publish","channel":"user","event":"clip","data":{"t":1},"id":1})).await;
    assert_eq!(laptop.recv().await["type"], "ack");
    let e = c.recv().await;
    assert_eq!((e["event"].clone(), e["data"].clone()), (json!("clip"), json!({"t":1})), "{e}");
    let ping = c.request(json!({"type":"ping","id":"p"})).await;
    assert_eq!(ping["type"], "pong");

    // Every refusal closes with 4001 and the server keeps serving.
    let other = keypair();
    let pk = public_key(&phone);
    let cases: Vec<(&str, Answerer)> = vec![
        ("unknown device", Box::new(|ch: &Value| answer(ch, "tablet", &public_key(&other), &other).to_string())),
        ("other key", Box::new(|ch: &Value| answer(ch, "phone", &public_key(&other), &other).to_string())),
        ("bad signature", Box::new(|ch: &Value| answer(ch, "phone", &pk, &other).to_string())),
        (
            "tampered client nonce",
            Box::new(|ch: &Value| {
                let mut a = answer(ch, "phone", &pk, &phone);
                a["client_nonce"] = json!("cn-0123456789abcdeX");
                a.to_string()
            }),
        ),
        (
            "another connection's nonce",
            Box::new(|_: &Value| answer(&json!({"nonce": "A".repeat(43)}), "phone", &pk, &phone).to_string()),
        ),
        (
            "short client nonce",
            Box::new(|ch: &Value| {
                let mut a = answer(ch, "phone", &pk, &phone);
                a["client_nonce"] = json!("short");
                a.to_string()
            }),
        ),
        ("a token instead", Box::new(|_: &Value| json!({"type":"auth","token": phone_token.clone()}).to_string())),
        ("garbage", Box::new(|_: &Value| "{\"type\":\"auth\",".to_string())),
        ("deep", Box::new(|_: &Value| format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)))),
    ];
    for (what, make) in cases {
        assert_eq!(refused(&s, make).await, 4001, "{what}");
    }
    // A nonce from another connection's challenge (issued, but not on this connection).
    let (mut a, cha) = challenged(&s).await;
    let (mut b, _chb) = challenged(&s).await;
    b.send(answer(&cha, "phone", &pk, &phone)).await;
    assert_eq!(b.close_code().await, 4001, "a nonce issued on another connection");
    a.send(answer(&cha, "phone", &pk, &phone)).await;
    assert_eq!(a.recv().await["type"], "welcome", "the connection that got the nonce may use it");
    drop(a);
    // No answer within SYNCGATE_AUTH_TIMEOUT_MS.
    let (mut slow, _) = challenged(&s).await;
    assert_eq!(slow.close_code_within(Duration::from_secs(4)).await, 4001);
    // A token with auth=key is a bad request.
    let r = Client::connect(&s.url(&format!("auth=key&token={phone_token}"))).await.err().expect("refused");
    assert_eq!(r.status, 400);
    assert_eq!(Client::connect(&s.url("auth=password")).await.err().expect("refused").status, 400);
    // The open connection was never disturbed.
    assert_eq!(c.request(json!({"type":"ping","id":"q"})).await["type"], "pong");

    // No downgrade: the keyed device cannot connect with its token alone…
    let r = Client::connect(&s.url(&format!("token={phone_token}&device_id=phone"))).await.err().expect("refused");
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = Client::connect(&s.url(&format!("token={phone_token}"))).await.err().expect("refused");
    assert_eq!(r.status, 403, "{:?}", r.body);
    let mut ff = Client::connect(&s.url("")).await.unwrap();
    ff.send(json!({"type":"auth","token": phone_token})).await;
    assert_eq!(ff.close_code().await, 4001, "first-frame token auth of a keyed device");
    // …an unkeyed device still can, and the keyed device's tokens keep working for REST.
    drop(s.client_with(&laptop_token, "laptop", "").await);
    let (status, list) = http_json(s.addr, "GET", "/api/devices", Some(&phone_token), "").await;
    assert_eq!(status, 200);
    let listed = list["devices"].as_array().unwrap().iter().find(|d| d["id"] == "phone").cloned().unwrap();
    assert_eq!(listed["public_key"], pk.as_str());
    let body = json!({ "refresh_token": phone_refresh }).to_string();
    let (status, t) = http_json(s.addr, "POST", "/token/refresh", None, &body).await;
    assert_eq!(status, 200, "{t}");

    // Revocation closes key connections with 4003; the key no longer logs in.
    let (status, _) = http_json(s.addr, "DELETE", "/api/devices/phone", Some(&laptop_token), "").await;
    assert_eq!(status, 200);
    assert_eq!(c.close_code().await, 4003);
    assert_eq!(
        refused(&s, |ch| answer(ch, "phone", &public_key(&phone), &phone).to_string()).await,
        4001,
        "a revoked device"
    );
    assert_eq!(laptop.request(json!({"type":"ping","id":1})).await["type"], "pong");
    let m = metrics_text(&s).await;
    assert!(m.contains("syncgate_auth_failures_total{reason=\"key\"} "), "{m}");
    s.stop().await;
}

on_both_stores!(key_login_sqlite, key_login_postgres, key_login_flow);

#[tokio::test]
async fn keyed_devices_may_keep_tokens_when_allowed() {
    let s = Server::start(&[("SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN", "1")]).await;
    register(&s, "allow@example.com").await;
    let (token, _) = login(&s, "allow@example.com", "phone").await;
    drop(s.client_with(&token, "phone", "").await);
    let pair = keypair();
    put_key(&s, "phone", &token, &pair).await;
    let w = s.client_with(&token, "phone", "").await;
    assert_eq!(w.welcome["device_id"], "phone");
    let k = key_login(&s, "phone", &pair).await;
    assert_eq!(k.welcome["user_id"], w.welcome["user_id"]);
    s.stop().await;
}

/// Two instances on one PostgreSQL and Redis: a key registered through one is refused for
/// token-only connects on the other (told over the bus), and on an instance started later
/// (loaded at start); key login works on every instance.
#[tokio::test]
async fn the_keyed_mark_reaches_every_instance() {
    let url = crate::accounts::fresh_pg_database().await;
    let p = crate::cluster::prefix();
    let env = [("DATABASE_URL", url.as_str()), ("REDIS_URL", crate::cluster::REDIS), ("SYNCGATE_REDIS_PREFIX", &p)];
    let (a, b) = (Server::start(&env).await, Server::start(&env).await);
    register(&a, "cluster@example.com").await;
    let (token, _) = login(&a, "cluster@example.com", "phone").await;
    drop(b.client_with(&token, "phone", "").await);
    let pair = keypair();
    put_key(&a, "phone", &token, &pair).await;
    let refused_on_b = eventually(Duration::from_secs(5), || async {
        let r = Client::connect(&b.url(&format!("token={token}&device_id=phone"))).await;
        matches!(r, Err(Rejected { status: 403, .. })).then_some(())
    })
    .await;
    assert!(refused_on_b.is_some(), "instance b learns that the device is keyed");
    let c = Server::start(&env).await;
    let r = Client::connect(&c.url(&format!("token={token}&device_id=phone"))).await.err().expect("refused");
    assert_eq!(r.status, 403);
    for s in [&a, &b, &c] {
        assert_eq!(key_login(s, "phone", &pair).await.welcome["device_id"], "phone");
    }
    // A key the instances were never told about (written behind their back) is found in the
    // store: the fallback past the in-memory bound.
    let (tablet_token, _) = login(&a, "cluster@example.com", "tablet").await;
    drop(a.client_with(&tablet_token, "tablet", "").await);
    let tablet = keypair();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let n = sqlx::query("UPDATE devices SET public_key = $1 WHERE device_id = 'tablet'")
        .bind(public_key(&tablet))
        .execute(&pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    assert_eq!(key_login(&b, "tablet", &tablet).await.welcome["device_id"], "tablet");
    for s in [a, b, c] {
        s.stop().await;
    }
}

/// A key-login connection signs its publishes with the key it logged in with (signed frames on
/// `user`): its user's other devices receive them with the key to verify.
#[tokio::test]
async fn a_key_login_connection_publishes_signed_frames() {
    let s = Server::start(&[("SYNCGATE_SIGNED_NAMESPACES", "user")]).await;
    register(&s, "signed@example.com").await;
    let (phone_token, _) = login(&s, "signed@example.com", "phone").await;
    let (laptop_token, _) = login(&s, "signed@example.com", "laptop").await;
    let phone = keypair();
    put_key(&s, "phone", &phone_token, &phone).await;
    let mut c = key_login(&s, "phone", &phone).await;
    let mut laptop = s.client_with(&laptop_token, "laptop", "").await;
    let channel = format!("user:{}", c.welcome["user_id"].as_str().unwrap());
    let (nonce, ts, data) = ("kl-nonce-0123456789", now() * 1000, r#"{"clip": "x" }"#);
    let text = format!("syncgate-event-v1\n{channel}\nclip\n{nonce}\n{ts}\n{data}");
    let sig = URL_SAFE_NO_PAD.encode(phone.sign(text.as_bytes()));
    let frame = format!(
        r#"{{"type":"publish","id":1,"channel":"{channel}","event":"clip","data":{data},"nonce":"{nonce}","sig_ts":{ts},"sig":"{sig}"}}"#
    );
    c.send_text(&frame).await;
    assert_eq!(c.recv().await["type"], "ack");
    let e = laptop.recv().await;
    assert_eq!(e["from"]["public_key"], public_key(&phone).as_str(), "{e}");
    assert_eq!((e["nonce"].as_str(), e["sig"].as_str()), (Some(nonce), Some(sig.as_str())), "{e}");
    // The same nonce again is a replay.
    c.send_text(&frame).await;
    let r = c.recv().await;
    assert_eq!((r["type"].as_str(), r["code"].as_str()), (Some("error"), Some("unauthorized")), "{r}");
    s.stop().await;
}

/// The same device id and key registered by two users logs neither in (4001): a key login never
/// picks one of two accounts. Once one of the devices is revoked, the other logs in again.
#[tokio::test]
async fn a_device_id_and_key_of_two_users_is_ambiguous() {
    let s = Server::start(&[]).await;
    register(&s, "one@example.com").await;
    register(&s, "two@example.com").await;
    let (one, _) = login(&s, "one@example.com", "phone").await;
    let (two, _) = login(&s, "two@example.com", "phone").await;
    let pair = keypair();
    put_key(&s, "phone", &one, &pair).await;
    let w = key_login(&s, "phone", &pair).await.welcome;
    put_key(&s, "phone", &two, &pair).await;
    assert_eq!(refused(&s, |ch| answer(ch, "phone", &public_key(&pair), &pair).to_string()).await, 4001);
    let (status, _) = http_json(s.addr, "DELETE", "/api/devices/phone", Some(&two), "").await;
    assert_eq!(status, 200);
    assert_eq!(key_login(&s, "phone", &pair).await.welcome["user_id"], w["user_id"]);
    s.stop().await;
}
