//! Attacks on device cryptography, performed against the real binary: forged and replayed key
//! logins, hostile answers, a stolen token of a keyed device, pairing-code guessing, replayed and
//! tampered signed frames. Each is refused as the protocol says, and the process — and a
//! bystander user's devices on it — carry on untouched.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;
use crate::key_login::{answer, challenged, key_login, keypair, public_key};

async fn account(s: &Server, email: &str, devices: &[&str]) -> Vec<String> {
    let body = json!({"email": email, "password": "attack pw 123"}).to_string();
    assert_eq!(http_json(s.addr, "POST", "/register", None, &body).await.0, 201);
    let mut tokens = Vec::new();
    for d in devices {
        let body = json!({"email": email, "password": "attack pw 123", "device_id": d}).to_string();
        let (status, t) = http_json(s.addr, "POST", "/login", None, &body).await;
        assert_eq!(status, 200, "{t}");
        tokens.push(t["access_token"].as_str().unwrap().to_string());
    }
    tokens
}

/// A signed publish frame on `channel` by `pair`, with `data` verbatim.
fn signed_frame(pair: &ring::signature::Ed25519KeyPair, channel: &str, nonce: &str, data: &str, id: u64) -> String {
    let ts = now() * 1000;
    let text = format!("syncgate-event-v1\n{channel}\nclip\n{nonce}\n{ts}\n{data}");
    let sig = URL_SAFE_NO_PAD.encode(pair.sign(text.as_bytes()));
    format!(
        r#"{{"type":"publish","id":{id},"channel":"{channel}","event":"clip","data":{data},"nonce":"{nonce}","sig_ts":{ts},"sig":"{sig}"}}"#
    )
}

/// Builds an answer (a hostile one) from the challenge.
type Attack<'a> = Box<dyn FnOnce(&Value) -> tokio_tungstenite::tungstenite::Message + 'a>;

fn error_code(v: &Value) -> (&str, &str) {
    (v["type"].as_str().unwrap_or(""), v["code"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn device_crypto_attacks_leave_the_binary_serving() {
    let (child, addr, _logs) = spawn_binary(&[
        ("SYNCGATE_JWT_SECRET", SECRET),
        ("SYNCGATE_SIGNED_NAMESPACES", "user"),
        ("SYNCGATE_AUTH_TIMEOUT_MS", "2000"),
    ]);
    let mut child = Reap(child);
    let s = Server::attach(addr.parse().unwrap());
    // A bystander user's two devices, keyed, on key login: they must notice nothing.
    let by = account(&s, "bystander@example.com", &["b1", "b2"]).await;
    let (b1_pair, b2_pair) = (keypair(), keypair());
    for (device, token, pair) in [("b1", &by[0], &b1_pair), ("b2", &by[1], &b2_pair)] {
        let body = json!({ "public_key": public_key(pair) }).to_string();
        let (status, _) = http_json(s.addr, "PUT", &format!("/api/devices/{device}/key"), Some(token), &body).await;
        assert_eq!(status, 200);
    }
    let mut b1 = key_login(&s, "b1", &b1_pair).await;
    let mut b2 = key_login(&s, "b2", &b2_pair).await;
    let by_channel = format!("user:{}", b1.welcome["user_id"].as_str().unwrap());

    // The victim: a keyed phone and a laptop.
    let victim = account(&s, "victim@example.com", &["phone", "laptop"]).await;
    let (phone_token, laptop_token) = (&victim[0], &victim[1]);
    let phone = keypair();
    let body = json!({ "public_key": public_key(&phone) }).to_string();
    assert_eq!(http_json(s.addr, "PUT", "/api/devices/phone/key", Some(phone_token), &body).await.0, 200);
    let pk = public_key(&phone);

    // 1. A captured key-login answer replayed on a new connection: its challenge differs → 4001.
    let (mut first, ch) = challenged(&s).await;
    let captured = answer(&ch, "phone", &pk, &phone);
    first.send(captured.clone()).await;
    let mut phone_conn = first;
    phone_conn.welcome = phone_conn.recv().await;
    assert_eq!(phone_conn.welcome["type"], "welcome");
    for _ in 0..3 {
        let (mut c, _) = challenged(&s).await;
        c.send(captured.clone()).await;
        assert_eq!(c.close_code().await, 4001, "a replayed answer");
    }
    // 2. Forgeries and hostile answers: another key's signature, the server's own challenge
    // signature echoed back, a nesting bomb, a huge answer, binary, non-UTF-8 → 4001 (or 1009 /
    // 1007 for what breaks the WebSocket rules), never a crash.
    let forger = keypair();
    let huge =
        json!({"type":"auth","device_id":"phone","public_key":pk,"client_nonce":"x".repeat(2_000_000),"sig":"AA"});
    let attacks: Vec<(&str, Attack)> = vec![
        ("forged", Box::new(|ch: &Value| answer(ch, "phone", &pk, &forger).to_string().into())),
        (
            "server sig echoed",
            Box::new(|ch: &Value| {
                let mut a = answer(ch, "phone", &pk, &phone);
                a["sig"] = ch["sig"].clone();
                a.to_string().into()
            }),
        ),
        ("bomb", Box::new(|_: &Value| format!("{}{}", "[".repeat(400_000), "]".repeat(400_000)).into())),
        ("huge", Box::new(move |_: &Value| huge.to_string().into())),
        (
            "binary",
            Box::new(|ch: &Value| {
                tokio_tungstenite::tungstenite::Message::binary(
                    answer(ch, "phone", &pk, &phone).to_string().into_bytes(),
                )
            }),
        ),
    ];
    for (what, make) in attacks {
        let (mut c, ch) = challenged(&s).await;
        use futures_util::SinkExt;
        let _ = c.ws.send(make(&ch)).await;
        let code = c.close_code_within(Duration::from_secs(5)).await;
        assert!([4001, 1009].contains(&code), "{what}: {code}");
    }
    // Silence after the challenge: cut at the auth timeout.
    let (mut mute, _) = challenged(&s).await;
    assert_eq!(mute.close_code_within(Duration::from_secs(5)).await, 4001);

    // 3. The keyed phone's stolen access token opens nothing (no downgrade).
    let r = Client::connect(&s.url(&format!("token={phone_token}"))).await.err().expect("refused");
    assert_eq!(r.status, 403);
    let mut ff = Client::connect(&s.url("")).await.unwrap();
    ff.send(json!({"type":"auth","token": phone_token})).await;
    assert_eq!(ff.close_code().await, 4001);

    // 4. Pairing-code guessing from one address: refused after the per-address limit (10/min).
    let mut statuses = Vec::new();
    for i in 0..14 {
        let guess = format!("{:04}-{:04}", 2000 + i, 3000 + i).replace('0', "2").replace('1', "3");
        let (status, _) =
            http_json(s.addr, "POST", "/api/pairing/claim", None, &json!({"code":guess,"device_name":"x"}).to_string())
                .await;
        statuses.push(status);
    }
    assert!(statuses[..10].iter().all(|s| *s == 404), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");

    // 5. Signed frames: the phone's event replayed (by the phone's own connection, as a stolen
    // session would), tampered, or sent by the unkeyed laptop → refused; the connection lives.
    let channel = format!("user:{}", phone_conn.welcome["user_id"].as_str().unwrap());
    let mut laptop = s.client_with(laptop_token, "laptop", "").await;
    let good = signed_frame(&phone, &channel, "attack-nonce-000001", r#"{"v":1}"#, 1);
    phone_conn.send_text(&good).await;
    assert_eq!(phone_conn.recv().await["type"], "ack");
    assert_eq!(laptop.recv_type("event").await["nonce"], "attack-nonce-000001");
    phone_conn.send_text(&good).await;
    assert_eq!(error_code(&phone_conn.recv().await), ("error", "unauthorized"), "replayed nonce");
    let tampered = good.replace(r#""data":{"v":1}"#, r#""data":{"v":2}"#);
    assert_ne!(tampered, good);
    phone_conn.send_text(&tampered.replace("attack-nonce-000001", "attack-nonce-000002")).await;
    assert_eq!(error_code(&phone_conn.recv().await), ("error", "unauthorized"), "tampered");
    laptop.send_text(&good.replace("attack-nonce-000001", "attack-nonce-000003")).await;
    assert_eq!(error_code(&laptop.recv().await), ("error", "forbidden"), "an unkeyed device");
    laptop.silent(200).await;
    assert_eq!(phone_conn.request(json!({"type":"ping","id":9})).await["type"], "pong");

    // The process and the bystanders never noticed.
    assert!(child.0.try_wait().unwrap().is_none(), "the gateway is alive");
    b1.send_text(&signed_frame(&b1_pair, &by_channel, "bystander-nonce-0001", r#""still here""#, 5)).await;
    assert_eq!(b1.recv().await["type"], "ack");
    let e = b2.recv_type("event").await;
    assert_eq!((e["data"].as_str(), e["from"]["device_id"].as_str()), (Some("still here"), Some("b1")), "{e}");
    assert_eq!(http_json(s.addr, "GET", "/health", None, "").await.0, 200);
}
