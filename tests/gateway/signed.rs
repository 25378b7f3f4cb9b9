//! Signed frames (issue 14, part): on `SYNCGATE_SIGNED_NAMESPACES` every client publish carries
//! `nonce`, `sig_ts` and `sig` (the device key's Ed25519 signature); refusals keep the connection
//! open; signed events reach recipients, replay and history byte-exact with the fields to verify
//! them end to end. SQLite and PostgreSQL; the nonce memory across two instances over Redis.

use futures_util::StreamExt;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

/// Odd but valid JSON text: spacing, escapes, number spellings a re-encoder would change.
const DATA: &str = r#"{ "text" : "h\u00e9llo \"you\"",  "n":[1.50, 2E3 ,-0], "ok":true }"#;

/// Keyed devices may still open token connections (the key login's own rule; set for when it lands).
const ENV: &[(&str, &str)] = &[
    ("SYNCGATE_SIGNED_NAMESPACES", "user,dm"),
    ("SYNCGATE_SIGNATURE_WINDOW_SECS", "300"),
    ("SYNCGATE_KEYED_DEVICES_ALLOW_TOKEN", "1"),
    ("SYNCGATE_PUBLIC_NAMESPACES", "room"),
];

fn b64(raw: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn fresh_nonce() -> String {
    format!("n-{}", syncgate::util::random_hex(12))
}

/// A device that signs with its key pair.
struct Signer {
    pair: Ed25519KeyPair,
}

impl Signer {
    fn public_key(&self) -> String {
        b64(self.pair.public_key().as_ref())
    }

    /// `"syncgate-event-v1\n" + channel + "\n" + event + "\n" + nonce + "\n" + sig_ts + "\n" + data`.
    fn sign(&self, channel: &str, event: &str, nonce: &str, sig_ts: u64, data: &str) -> String {
        let text = format!("syncgate-event-v1\n{channel}\n{event}\n{nonce}\n{sig_ts}\n{data}");
        b64(self.pair.sign(text.as_bytes()).as_ref())
    }

    /// A signed publish frame's text, `data` written verbatim.
    fn frame(&self, channel: &str, event: &str, data: &str, extra: &str) -> (String, String, u64, String) {
        let (nonce, ts) = (fresh_nonce(), now_ms());
        let sig = self.sign(channel, event, &nonce, ts, data);
        (self.frame_with(channel, event, data, &nonce, ts, &sig, extra), nonce, ts, sig)
    }

    #[allow(clippy::too_many_arguments)]
    fn frame_with(
        &self,
        channel: &str,
        event: &str,
        data: &str,
        nonce: &str,
        ts: u64,
        sig: &str,
        extra: &str,
    ) -> String {
        format!(
            r#"{{"type":"publish","channel":"{channel}","event":"{event}","data":{data},"nonce":"{nonce}","sig_ts":{ts},"sig":"{sig}"{extra}}}"#
        )
    }
}

/// Verifies a received event end to end: its fields, the sender's key, the exact data text.
fn verify_received(frame: &str, data: &str) {
    assert!(frame.contains(&format!(r#""data":{data},"from""#)), "data not byte-exact: {frame}");
    let v: Value = serde_json::from_str(frame).unwrap();
    let text = format!(
        "syncgate-event-v1\n{}\n{}\n{}\n{}\n{data}",
        v["channel"].as_str().unwrap(),
        v["event"].as_str().unwrap(),
        v["nonce"].as_str().unwrap(),
        v["sig_ts"].as_u64().unwrap()
    );
    use base64::Engine;
    let d = |f: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(f.as_str().unwrap()).unwrap();
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, d(&v["from"]["public_key"]));
    key.verify(text.as_bytes(), &d(&v["sig"])).expect("the recipient can verify the signature");
}

/// The next text frame, as sent (pings skipped).
async fn recv_raw(c: &mut Client) -> String {
    loop {
        match tokio::time::timeout(WAIT, c.ws.next()).await.expect("a frame within 5 s") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The next text frame of type `ty`, as sent.
async fn recv_raw_type(c: &mut Client, ty: &str) -> String {
    loop {
        let t = recv_raw(c).await;
        if serde_json::from_str::<Value>(&t).unwrap()["type"] == ty {
            return t;
        }
    }
}

async fn send_raw(c: &mut Client, text: &str) -> Value {
    c.send_text(text).await;
    c.recv().await
}

/// An error reply with `code`, then proof the connection still works (ping → pong).
async fn refused(c: &mut Client, text: &str, code: &str) {
    let e = send_raw(c, text).await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some(code)), "{text} → {e}");
    let pong = c.request(json!({"type":"ping","id":"alive"})).await;
    assert_eq!((pong["type"].as_str(), pong["id"].as_str()), (Some("pong"), Some("alive")), "{pong}");
}

/// The raw body of a GET.
async fn get_raw(s: &Server, path: &str, bearer: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    (out[9..12].parse().unwrap(), out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Registers `email`, logs `device` in and registers a fresh key for it: (signer, access token).
async fn keyed_device(s: &Server, email: &str, device: &str, seed: u8) -> (Signer, String) {
    let body = json!({"email": email, "password": "signed frames pw"}).to_string();
    let (status, r) = http_json(s.addr, "POST", "/register", None, &body).await;
    assert!(status == 201 || status == 409, "{status} {r}");
    let body = json!({"email": email, "password": "signed frames pw", "device_id": device}).to_string();
    let (status, t) = http_json(s.addr, "POST", "/login", None, &body).await;
    assert_eq!(status, 200, "{t}");
    let access = t["access_token"].as_str().unwrap().to_string();
    let pair = Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap();
    let key = json!({"public_key": b64(pair.public_key().as_ref())}).to_string();
    let (status, d) = http_json(s.addr, "PUT", &format!("/api/devices/{device}/key"), Some(&access), &key).await;
    assert_eq!(status, 200, "{d}");
    (Signer { pair }, access)
}

async fn connect(s: &Server, access: &str, device: &str) -> Client {
    s.client_with(access, device, "").await
}

async fn signed_flow(s: &Server) {
    let (alice, phone_token) = keyed_device(s, "alice-signed@example.com", "phone", 7).await;
    let mut phone = connect(s, &phone_token, "phone").await;
    let me = phone.welcome["user_id"].as_str().unwrap().to_string();
    let user_ch = format!("user:{me}");
    // Alice's second device has no key; Bob receives.
    let mut laptop = s.client(&me, "laptop").await;
    let mut bob = s.client("bob", "bp").await;

    // 1. Accepted: the other device gets the event byte-exact with the fields to verify it.
    let (text, nonce, ts, sig) = alice.frame(&user_ch, "clip", DATA, r#","id":1"#);
    let ack = send_raw(&mut phone, &text).await;
    assert_eq!(ack, json!({"type":"ack","id":1,"channel":user_ch}));
    let got = recv_raw_type(&mut laptop, "event").await;
    verify_received(&got, DATA);
    let v: Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["from"], json!({"user_id": me, "device_id": "phone", "public_key": alice.public_key()}));
    assert_eq!((v["nonce"].as_str(), v["sig_ts"].as_u64(), v["sig"].as_str()), (Some(&*nonce), Some(ts), Some(&*sig)));
    assert!(v["ts"].as_u64().unwrap().abs_diff(now_ms()) < 60_000);
    // `"channel":"user"` is the same channel (the signature is over the full name).
    let (nonce2, ts2) = (fresh_nonce(), now_ms());
    let sig2 = alice.sign(&user_ch, "clip", &nonce2, ts2, "7");
    let short = alice.frame_with("user", "clip", "7", &nonce2, ts2, &sig2, r#","id":2"#);
    assert_eq!(send_raw(&mut phone, &short).await["type"], "ack");
    verify_received(&recv_raw_type(&mut laptop, "event").await, "7");

    // 2. Replayed nonce (the exact frame again): unauthorized, nothing delivered.
    refused(&mut phone, &text, "unauthorized").await;
    // 3. Tampered data (one space removed), another event name, another channel.
    let tampered = text.replacen("\"text\" :", "\"text\":", 1);
    refused(&mut phone, &tampered.replace(&nonce, &fresh_nonce()), "unauthorized").await;
    let (fresh, ..) = alice.frame(&user_ch, "clip", DATA, "");
    refused(&mut phone, &fresh.replace("\"clip\"", "\"clap\""), "unauthorized").await;
    // 4. Stale and future sig_ts (correctly signed).
    for skew in [-301_000i64, 301_000] {
        let (n, t) = (fresh_nonce(), (now_ms() as i64 + skew) as u64);
        let sig = alice.sign(&user_ch, "clip", &n, t, DATA);
        refused(&mut phone, &alice.frame_with(&user_ch, "clip", DATA, &n, t, &sig, ""), "unauthorized").await;
    }
    // 5. Missing, malformed and mistyped fields.
    let base = json!({"type":"publish","channel":user_ch,"event":"clip","data":1,"nonce":fresh_nonce(),"sig_ts":now_ms(),"sig":sig});
    for field in ["nonce", "sig_ts", "sig"] {
        let mut f = base.clone();
        f.as_object_mut().unwrap().remove(field);
        refused(&mut phone, &f.to_string(), "unauthorized").await;
    }
    for (field, bad) in [
        ("nonce", json!("short")),
        ("nonce", json!("has a space in it!!")),
        ("nonce", json!(12345678901234567u64)),
        ("sig_ts", json!("soon")),
        ("sig", json!("!!")),
        ("sig", json!(5)),
    ] {
        let mut f = base.clone();
        f[field] = bad;
        refused(&mut phone, &f.to_string(), "unauthorized").await;
    }
    refused(
        &mut phone,
        &json!({"type":"publish","channel":"user","event":"clip","data":1}).to_string(),
        "unauthorized",
    )
    .await;
    // 6. A device without a key: forbidden (signed or not), and it stays connected.
    let (t_laptop, ..) = alice.frame(&user_ch, "clip", DATA, "");
    refused(&mut laptop, &t_laptop, "forbidden").await;
    refused(&mut laptop, &json!({"type":"publish","channel":"user","event":"e","data":1}).to_string(), "forbidden")
        .await;
    laptop.silent(200).await;
    // Unsigned namespaces are unaffected, for a device without a key too.
    let plain = json!({"type":"publish","channel":"room:lobby","event":"e","data":1,"id":9});
    assert_eq!(laptop.request(plain).await, json!({"type":"ack","id":9,"channel":"room:lobby"}));

    // 7. Durable dm: stored with the signature; the retry with the same msg_id, nonce and
    //    signature gets the original ack; the nonce with another msg_id is unauthorized.
    let dm = if me.as_str() < "bob" { format!("dm:{me}:bob") } else { format!("dm:bob:{me}") };
    let (dm_text, ..) = alice.frame(&dm, "msg", DATA, r#","id":"d1","msg_id":"m-1""#);
    let ack = send_raw(&mut phone, &dm_text).await;
    assert_eq!((ack["type"].as_str(), ack["msg_id"].as_str()), (Some("ack"), Some("m-1")), "{ack}");
    let seq = ack["seq"].as_u64().unwrap();
    assert!(ack.get("duplicate").is_none(), "{ack}");
    let live = recv_raw_type(&mut bob, "event").await;
    verify_received(&live, DATA);
    // Alice's other device gets it too (a dm reaches both users' connections but the sender's).
    assert_eq!(recv_raw_type(&mut laptop, "event").await, live);
    let again = send_raw(&mut phone, &dm_text).await;
    assert_eq!(again, json!({"type":"ack","id":"d1","channel":dm,"seq":seq,"msg_id":"m-1","duplicate":true}));
    refused(&mut phone, &dm_text.replace("\"m-1\"", "\"m-2\""), "unauthorized").await;
    // The same msg_id signed afresh is the ordinary duplicate too.
    let (dm_fresh, ..) = alice.frame(&dm, "msg", DATA, r#","id":"d3","msg_id":"m-1""#);
    let dup = send_raw(&mut phone, &dm_fresh).await;
    assert_eq!((dup["seq"].as_u64(), dup["duplicate"].as_bool()), (Some(seq), Some(true)), "{dup}");
    bob.silent(200).await;
    laptop.silent(50).await;

    // 8. Replay and history: byte-exact, with every signature field.
    let mut bob2 = s.client("bob", "bp2").await;
    bob2.send(json!({"type":"subscribe","channel":dm,"since":0})).await;
    let replayed = recv_raw_type(&mut bob2, "event").await;
    verify_received(&replayed, DATA);
    let (rv, lv): (Value, Value) = (serde_json::from_str(&replayed).unwrap(), serde_json::from_str(&live).unwrap());
    for f in ["nonce", "sig_ts", "sig", "from", "msg_id", "seq", "ts"] {
        assert_eq!(rv[f], lv[f], "{f}: replay {replayed} live {live}");
    }
    let (status, body) = get_raw(s, &format!("/api/history?channel={dm}"), &token("bob")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!(r#""data":{DATA},"from""#)), "history not byte-exact: {body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    let e = &h["events"][0];
    for f in ["nonce", "sig_ts", "sig", "msg_id", "seq", "ts"] {
        assert_eq!(e[f], lv[f], "{f}: history {body}");
    }
    assert_eq!(e["from"], lv["from"]);

    // 9. After every refusal the connection still publishes.
    let (last, ..) = alice.frame(&user_ch, "clip", "[]", r#","id":"end""#);
    assert_eq!(send_raw(&mut phone, &last).await["type"], "ack");
    verify_received(&recv_raw_type(&mut laptop, "event").await, "[]");
}

mod sqlite_and_postgres {
    use super::*;

    async fn run(env: &[(&str, &str)]) {
        let mut all: Vec<(&str, &str)> = ENV.to_vec();
        all.extend_from_slice(env);
        let s = Server::start(&all).await;
        signed_flow(&s).await;
        s.stop().await;
    }

    on_both_stores!(signed_frames_on_sqlite, signed_frames_on_postgres, run);
}

/// A nonce used on one instance is refused on another (Redis `SET NX PX`); both instances share
/// one PostgreSQL database (the device key).
#[tokio::test]
async fn replayed_nonce_through_a_second_instance_over_redis() {
    let url = crate::accounts::fresh_pg_database().await;
    let prefix = crate::cluster::prefix();
    let mut env: Vec<(&str, &str)> = ENV.to_vec();
    env.extend([
        ("DATABASE_URL", url.as_str()),
        ("REDIS_URL", crate::cluster::REDIS),
        ("SYNCGATE_REDIS_PREFIX", &prefix),
    ]);
    let (s1, s2) = (Server::start(&env).await, Server::start(&env).await);
    let (alice, access) = keyed_device(&s1, "alice-cluster@example.com", "phone", 9).await;
    let mut on1 = connect(&s1, &access, "phone").await;
    let mut on2 = connect(&s2, &access, "phone").await;
    let me = on1.welcome["user_id"].as_str().unwrap().to_string();
    let mut laptop = s2.client(&me, "laptop").await;
    let ch = format!("user:{me}");
    let (text, ..) = alice.frame(&ch, "clip", DATA, r#","id":1"#);
    assert_eq!(send_raw(&mut on1, &text).await["type"], "ack");
    verify_received(&recv_raw_type(&mut laptop, "event").await, DATA);
    verify_received(&recv_raw_type(&mut on2, "event").await, DATA);
    // The same frame through the second instance: its own memory never saw the nonce.
    refused(&mut on2, &text, "unauthorized").await;
    let (text, ..) = alice.frame(&ch, "clip", "2", r#","id":2"#);
    assert_eq!(send_raw(&mut on2, &text).await["type"], "ack");
    verify_received(&recv_raw_type(&mut on1, "event").await, "2");
    verify_received(&recv_raw_type(&mut laptop, "event").await, "2");
    refused(&mut on1, &text, "unauthorized").await;
    laptop.silent(300).await;
    s1.stop().await;
    s2.stop().await;
}
