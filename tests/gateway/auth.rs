//! Authentication over real sockets: query, header and first-frame tokens; rejected tokens
//! (expired, wrong key, alg none, HS/RS confusion); PEM keys; JWKS with rotation; expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::*;

pub(crate) fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub(crate) fn sign_with(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "exp": now() + 600})
}

pub(crate) async fn rejected(s: &Server, token: &str) -> Rejected {
    match Client::connect(&s.url(&format!("token={token}"))).await {
        Ok(_) => panic!("token {token} was accepted"),
        Err(r) => r,
    }
}

#[tokio::test]
async fn token_in_query_header_and_first_frame() {
    let s = Server::start(&[]).await;
    // Query.
    let mut c = Client::connect(&s.url(&format!("token={}", token("alice")))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], "alice");
    // Header.
    let mut req = s.url("device_id=hdr").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", token("bob")).parse().unwrap());
    let mut c = Client::connect_req(req).await.unwrap();
    let w = c.recv().await;
    assert_eq!((w["user_id"].as_str(), w["device_id"].as_str()), (Some("bob"), Some("hdr")));
    // First frame.
    let mut c = Client::connect(&s.url("device_id=ff")).await.unwrap();
    c.send(json!({"type":"auth","token":token("carol")})).await;
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["user_id"], "carol");
    assert_eq!(w["device_id"], "ff");
    // A generated device id when none is given.
    let mut c = Client::connect(&s.url(&format!("token={}", token("dan")))).await.unwrap();
    assert!(c.recv().await["device_id"].as_str().is_some_and(|d| !d.is_empty()));
    // `sub` falls back to `user_id`.
    let mut c =
        Client::connect(&s.url(&format!("token={}", sign(&json!({"user_id":"eve","exp":now()+60}))))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], "eve");
    // A bad device id is a 400.
    let r = Client::connect(&s.url(&format!("token={}&device_id=bad%20id", token("x")))).await.err().unwrap();
    assert_eq!(r.status, 400);
    s.stop().await;
}

#[tokio::test]
async fn rejected_tokens() {
    let s = Server::start(&[]).await;
    let expired = sign(&json!({"sub":"a","exp": now() - 10}));
    let r = rejected(&s, &expired).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"], "unauthorized");
    assert_eq!(r.body["message"], "token expired");

    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("a"),
        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    let r = rejected(&s, &wrong).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, json!({"error":"unauthorized","message":"invalid token"}));

    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(&json!({"alg":"none","typ":"JWT"})), b64(&claims("a")));
    assert_eq!(rejected(&s, &none).await.status, 401);
    let no_exp = sign(&json!({"sub":"a"}));
    assert_eq!(rejected(&s, &no_exp).await.status, 401);
    assert_eq!(rejected(&s, "garbage").await.status, 401);
    let no_sub = sign(&json!({"exp": now() + 60}));
    assert_eq!(rejected(&s, &no_sub).await.status, 401);

    // First-frame: a bad token closes with 4001; so does silence past the timeout.
    let mut c = Client::connect(&s.url("")).await.unwrap();
    c.send(json!({"type":"auth","token":wrong})).await;
    assert_eq!(c.close_code().await, 4001);
    let mut c = Client::connect(&s.url("")).await.unwrap();
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.close_code().await, 4001);
    s.stop().await;

    let s = Server::start(&[("SYNCGATE_AUTH_TIMEOUT_MS", "300")]).await;
    let mut c = Client::connect(&s.url("")).await.unwrap();
    // From here only the gateway's auth timer runs: the clock jumps instead of sleeping, and the
    // close must come at 300 ms (not before, not after the 2 s bound).
    tokio::time::pause();
    let waited = tokio::time::Instant::now();
    assert_eq!(c.close_code_within(Duration::from_secs(2)).await, 4001);
    let waited = waited.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(1), "{waited:?}");
    tokio::time::resume();
    s.stop().await;
}

#[tokio::test]
async fn public_keys_decide_the_algorithm() {
    let rsa_pub = fixture("rsa1.pub.pem");
    let s = Server::start(&[("SYNCGATE_JWT_PUBLIC_KEY", rsa_pub.as_str())]).await;
    let rsa = EncodingKey::from_rsa_pem(fixture("rsa1.key.pem").as_bytes()).unwrap();
    let t = sign_with(Algorithm::RS256, None, &rsa, &claims("alice"));
    let mut c = Client::connect(&s.url(&format!("token={t}"))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], "alice");
    // HS/RS confusion: an HS256 token whose secret is the public key itself.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(rsa_pub.as_bytes()),
    )
    .unwrap();
    assert_eq!(rejected(&s, &forged).await.status, 401);
    // Signed by another RSA key.
    let other = EncodingKey::from_rsa_pem(fixture("rsa2.key.pem").as_bytes()).unwrap();
    assert_eq!(rejected(&s, &sign_with(Algorithm::RS256, None, &other, &claims("a"))).await.status, 401);
    s.stop().await;

    let s = Server::start(&[("SYNCGATE_JWT_PUBLIC_KEY", fixture("ec.pub.pem").as_str())]).await;
    let ec = EncodingKey::from_ec_pem(fixture("ec.key.pem").as_bytes()).unwrap();
    let mut c = Client::connect(&s.url(&format!("token={}", sign_with(Algorithm::ES256, None, &ec, &claims("e")))))
        .await
        .unwrap();
    assert_eq!(c.recv().await["user_id"], "e");
    s.stop().await;

    let s = Server::start(&[("SYNCGATE_JWT_PUBLIC_KEY", fixture("ed.pub.pem").as_str())]).await;
    let ed = EncodingKey::from_ed_pem(fixture("ed.key.pem").as_bytes()).unwrap();
    let mut c = Client::connect(&s.url(&format!("token={}", sign_with(Algorithm::EdDSA, None, &ed, &claims("f")))))
        .await
        .unwrap();
    assert_eq!(c.recv().await["user_id"], "f");
    s.stop().await;
}

/// A tiny JWKS HTTP server whose document the test can swap.
pub(crate) async fn jwks_server(doc: Arc<Mutex<String>>, hits: Arc<Mutex<u32>>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let doc = doc.clone();
            let hits = hits.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                *hits.lock().unwrap() += 1;
                let body = doc.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/.well-known/jwks.json")
}

#[tokio::test]
async fn jwks_with_key_rotation() {
    let jwk1: Value = serde_json::from_str(&fixture("rsa1.jwk.json")).unwrap();
    let jwk2: Value = serde_json::from_str(&fixture("rsa2.jwk.json")).unwrap();
    let doc = Arc::new(Mutex::new(json!({"keys":[jwk1]}).to_string()));
    let hits = Arc::new(Mutex::new(0));
    let url = jwks_server(doc.clone(), hits.clone()).await;
    let s = Server::start(&[("SYNCGATE_JWKS_URL", url.as_str())]).await;
    let k1 = EncodingKey::from_rsa_pem(fixture("rsa1.key.pem").as_bytes()).unwrap();
    let k2 = EncodingKey::from_rsa_pem(fixture("rsa2.key.pem").as_bytes()).unwrap();
    let t1 = sign_with(Algorithm::RS256, Some("rsa1"), &k1, &claims("alice"));
    let mut c = Client::connect(&s.url(&format!("token={t1}"))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], "alice");
    assert_eq!(*hits.lock().unwrap(), 1, "fetched once at start, then cached");

    // Rotation: the provider publishes rsa2 and retires rsa1.
    *doc.lock().unwrap() = json!({"keys":[jwk2]}).to_string();
    let t2 = sign_with(Algorithm::RS256, Some("rsa2"), &k2, &claims("bob"));
    let mut c = Client::connect(&s.url(&format!("token={t2}"))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], "bob");
    assert_eq!(*hits.lock().unwrap(), 2, "an unknown kid triggers one refetch");
    // The retired key no longer verifies, and unknown kids do not hammer the JWKS endpoint.
    assert_eq!(rejected(&s, &t1).await.status, 401);
    let t3 = sign_with(Algorithm::RS256, Some("nope"), &k2, &claims("x"));
    assert_eq!(rejected(&s, &t3).await.status, 401);
    assert_eq!(*hits.lock().unwrap(), 2, "unknown-kid refetches are limited to one per 30 s");
    // A token with the right kid but the HS256 algorithm is refused (the JWK fixes RS256).
    let forged = sign_with(Algorithm::HS256, Some("rsa2"), &EncodingKey::from_secret(b"x"), &claims("x"));
    assert_eq!(rejected(&s, &forged).await.status, 401);
    s.stop().await;
}

#[tokio::test]
async fn token_expiry_and_refresh_on_a_live_connection() {
    let s = Server::start(&[]).await;
    // Expires in 2 s and is never refreshed: closed with 4001.
    let short = sign(&json!({"sub":"alice","exp": now() + 2}));
    let mut c = s.client_with(&short, "d1", "").await;
    // Welcomed: only the gateway's expiry timer is left, so the clock jumps instead of sleeping.
    tokio::time::pause();
    assert_eq!(c.close_code_within(Duration::from_secs(5)).await, 4001);
    tokio::time::resume();

    // Refreshed in time: stays open past the first expiry.
    let short = sign(&json!({"sub":"bob","exp": now() + 2}));
    let mut c = s.client_with(&short, "d1", "").await;
    let r = c.request(json!({"type":"auth","token":token("bob"),"id":"re"})).await;
    assert_eq!(r["type"], "auth_ok");
    assert_eq!(r["id"], "re");
    // A token for another user is refused and changes nothing.
    let r = c.request(json!({"type":"auth","token":token("mallory")})).await;
    assert_eq!(r["code"], "unauthorized");
    // Past the first token's expiry (the gateway's timer would fire at 2 s): still open.
    tokio::time::pause();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    tokio::time::resume();
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn device_bound_tokens() {
    let s = Server::start(&[]).await;
    let bound = sign(&json!({"sub":"alice","did":"phone","exp": now() + 60}));
    let mut c = Client::connect(&s.url(&format!("token={bound}"))).await.unwrap();
    assert_eq!(c.recv().await["device_id"], "phone");
    // Another device: refused before the upgrade (403), and 4001 with first-frame auth.
    let r = Client::connect(&s.url(&format!("token={bound}&device_id=laptop"))).await.err().unwrap();
    assert_eq!(r.status, 403);
    let mut ff = Client::connect(&s.url("device_id=laptop")).await.unwrap();
    ff.send(json!({"type":"auth","token":bound})).await;
    assert_eq!(ff.close_code().await, 4001);
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

/// With an issuer and an audience configured, a token must carry both (a missing claim is
/// refused, not ignored); `nbf` is honoured with the leeway; the tokens syncgate issues carry
/// them.
#[tokio::test]
async fn configured_issuer_and_audience_are_required_and_nbf_honoured() {
    let s = Server::start(&[
        ("SYNCGATE_JWT_ISSUER", "https://idp.example"),
        ("SYNCGATE_JWT_AUDIENCE", "syncgate"),
        ("SYNCGATE_JWT_LEEWAY_SECS", "5"),
    ])
    .await;
    let iss = "https://idp.example";
    let exp = now() + 600;
    let good = json!({"sub":"u1","exp":exp,"iss":iss,"aud":"syncgate"});
    let mut c = Client::connect(&s.url(&format!("token={}", sign(&good)))).await.unwrap();
    assert_eq!(c.recv().await["user_id"], "u1");
    for (what, claims) in [
        ("no iss", json!({"sub":"u1","exp":exp,"aud":"syncgate"})),
        ("no aud", json!({"sub":"u1","exp":exp,"iss":iss})),
        ("neither", json!({"sub":"u1","exp":exp})),
        ("wrong iss", json!({"sub":"u1","exp":exp,"iss":"https://evil","aud":"syncgate"})),
        ("wrong aud", json!({"sub":"u1","exp":exp,"iss":iss,"aud":"other"})),
        ("nbf in a minute", json!({"sub":"u1","exp":exp,"iss":iss,"aud":"syncgate","nbf":now() + 60})),
    ] {
        assert_eq!(rejected(&s, &sign(&claims)).await.status, 401, "{what}");
    }
    // Within the leeway, a token valid from two seconds on is accepted now.
    let soon = json!({"sub":"u1","exp":exp,"iss":iss,"aud":"syncgate","nbf":now() + 2});
    Client::connect(&s.url(&format!("token={}", sign(&soon)))).await.unwrap();
    // Tokens syncgate issues itself carry the issuer and the audience, and open /ws.
    let (status, body) = http_json(
        s.addr,
        "POST",
        "/register",
        None,
        &json!({"email":"iss@example.com","password":"correct horse battery"}).to_string(),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let token = body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some(iss), Some("syncgate")), "{claims}");
    let mut c = Client::connect(&s.url(&format!("token={token}"))).await.unwrap();
    assert_eq!(c.recv().await["type"], "welcome");
    s.stop().await;
}

/// One Bearer parser everywhere: the scheme is case-insensitive (RFC 7235) on `/ws`, the user
/// APIs and the server API; another scheme is 401.
#[tokio::test]
async fn bearer_scheme_in_any_case() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&[("SYNCGATE_API_KEY", "api-key-0123456789abcdef")]).await;
    let get = |path: &'static str, auth: String| {
        let addr = s.addr;
        async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n");
            stream.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            stream.read_to_string(&mut out).await.unwrap();
            out[9..12].parse::<u16>().unwrap()
        }
    };
    let tok = token("alice");
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(get("/api/conversations", format!("{scheme} {tok}")).await, 200, "{scheme}");
        assert_eq!(get("/api/status", format!("{scheme} api-key-0123456789abcdef")).await, 200, "{scheme}");
        let mut req = s.url("").into_client_request().unwrap();
        req.headers_mut().insert("authorization", format!("{scheme} {tok}").parse().unwrap());
        let mut c = Client::connect_req(req).await.unwrap();
        assert_eq!(c.recv().await["type"], "welcome", "{scheme}");
    }
    assert_eq!(get("/api/conversations", format!("Basic {tok}")).await, 401);
    assert_eq!(get("/api/status", "Basic api-key-0123456789abcdef".to_string()).await, 401);
    s.stop().await;
}
