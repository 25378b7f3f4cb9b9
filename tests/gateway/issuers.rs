//! Several token issuers at once: an external issuer (JWKS, or OIDC discovery) beside syncgate's
//! own accounts on the HS256 secret, routed by algorithm, each with its own `iss`/`aud` rules.

use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::auth::{fixture, jwks_server, rejected, sign_with};
use crate::common::*;

const IDP: &str = "https://idp.example";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(claims)
}

/// A token whose header names `alg` but whose signature is HMAC-SHA256 under the shared secret:
/// what a verifier that checked every algorithm against the secret would accept.
fn hmac_signed_as(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(k) = kid {
        header["kid"] = k.into();
    }
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let sig = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(sig.as_ref()))
}

async fn welcomed(s: &Server, token: &str) -> Value {
    let mut c = Client::connect(&s.url(&format!("token={token}"))).await.unwrap_or_else(|r| panic!("{r:?}"));
    let w = c.recv().await;
    assert_eq!(w["type"], "welcome", "{w}");
    w
}

/// JWKS and accounts side by side: accounts register and log in, and their tokens (iss
/// `syncgate`) connect; the provider's RS256 tokens connect under the provider's issuer and
/// audience; an HS256 token naming a foreign issuer is refused; no algorithm crosses over.
#[tokio::test]
async fn jwks_and_accounts_side_by_side() {
    let jwk: Value = serde_json::from_str(&fixture("rsa1.jwk.json")).unwrap();
    let doc = Arc::new(Mutex::new(json!({ "keys": [jwk] }).to_string()));
    let url = jwks_server(doc, Arc::new(Mutex::new(0))).await;
    let env = [
        ("SYNCGATE_JWT_SECRET", SECRET),
        ("SYNCGATE_JWKS_URL", url.as_str()),
        ("SYNCGATE_JWT_ISSUER", IDP),
        ("SYNCGATE_JWT_AUDIENCE", "app"),
    ];
    let s = Server::start(&env).await;

    // Accounts stay on; their tokens carry iss = syncgate (and not the provider's audience).
    let creds = json!({"email":"side@example.com","password":"correct horse battery"}).to_string();
    let (status, reg) = http_json(s.addr, "POST", "/register", None, &creds).await;
    assert!(status == 200 || status == 201, "{status} {reg}");
    let access = reg["access_token"].as_str().unwrap();
    let claims = payload(access);
    assert_eq!(claims["iss"], "syncgate", "{claims}");
    assert!(claims.get("aud").is_none(), "{claims}");
    let user = welcomed(&s, access).await["user_id"].as_str().unwrap().to_string();
    let (status, login) = http_json(s.addr, "POST", "/login", None, &creds).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(welcomed(&s, login["access_token"].as_str().unwrap()).await["user_id"], user.as_str());
    // `syncgate token` mints the same kind.
    let vars = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = syncgate::config::Config::from_map(&vars).unwrap();
    let minted = syncgate::cli::token(&config, &["--user".into(), "cli-user".into()]).unwrap();
    assert_eq!(payload(&minted)["iss"], "syncgate");
    assert_eq!(welcomed(&s, &minted).await["user_id"], "cli-user");

    // A backend that shares the secret: HS256 with no iss, or with syncgate's, connects.
    let exp = now() + 600;
    welcomed(&s, &hs256(&json!({"sub":"b1","exp":exp}))).await;
    welcomed(&s, &hs256(&json!({"sub":"b2","exp":exp,"iss":"syncgate"}))).await;
    // … but never under another issuer's name, or with a non-string iss.
    for iss in [json!(IDP), json!("https://evil"), json!(7), json!(["syncgate"])] {
        let t = hs256(&json!({"sub":"b3","exp":exp,"iss":iss}));
        assert_eq!(rejected(&s, &t).await.status, 401, "HS256 with iss {iss}");
    }
    // Only HS256 goes to the secret.
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({"sub":"b4","exp":exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(rejected(&s, &hs512).await.status, 401);

    // The provider's RS256 tokens: its issuer and audience are required.
    let rsa = EncodingKey::from_rsa_pem(fixture("rsa1.key.pem").as_bytes()).unwrap();
    let good = json!({"sub":"kinde-1","exp":exp,"iss":IDP,"aud":"app"});
    assert_eq!(welcomed(&s, &sign_with(Algorithm::RS256, Some("rsa1"), &rsa, &good)).await["user_id"], "kinde-1");
    for (what, c) in [
        ("no iss", json!({"sub":"k","exp":exp,"aud":"app"})),
        ("no aud", json!({"sub":"k","exp":exp,"iss":IDP})),
        ("syncgate's iss", json!({"sub":"k","exp":exp,"iss":"syncgate","aud":"app"})),
    ] {
        let t = sign_with(Algorithm::RS256, Some("rsa1"), &rsa, &c);
        assert_eq!(rejected(&s, &t).await.status, 401, "RS256 {what}");
    }
    // An RS256 header is never checked against the secret (an HMAC signature under it)…
    for kid in [Some("rsa1"), None] {
        assert_eq!(rejected(&s, &hmac_signed_as("RS256", kid, &good)).await.status, 401, "kid {kid:?}");
    }
    // … and an HS256 token never against the provider's key (the public key as HMAC secret).
    let confused = sign_with(
        Algorithm::HS256,
        Some("rsa1"),
        &EncodingKey::from_secret(fixture("rsa1.pub.pem").as_bytes()),
        &json!({"sub":"k","exp":exp}),
    );
    assert_eq!(rejected(&s, &confused).await.status, 401);
    // A key the provider does not publish.
    let other = EncodingKey::from_rsa_pem(fixture("rsa2.key.pem").as_bytes()).unwrap();
    assert_eq!(rejected(&s, &sign_with(Algorithm::RS256, Some("rsa1"), &other, &good)).await.status, 401);
    s.stop().await;
}

/// A local OIDC issuer over plain HTTP on loopback: `/.well-known/openid-configuration` names
/// `issuer` (which the test may set to another value) and `jwks_uri`; `/jwks.json` is the JWKS.
/// `jwks` may be swapped (rotation). Returns the issuer URL and the request paths seen.
async fn oidc_issuer(jwks: Arc<Mutex<Value>>, named_issuer: Option<&str>) -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = json!({
        "issuer": named_issuer.unwrap_or(&base),
        "jwks_uri": format!("{base}/jwks.json"),
        "authorization_endpoint": format!("{base}/oauth2/auth"),
    })
    .to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (config, jwks, log) = (config.clone(), jwks.lock().unwrap().to_string(), log.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(path.clone());
                let (status, body) = match path.as_str() {
                    "/.well-known/openid-configuration" => ("200 OK", config),
                    "/jwks.json" => ("200 OK", jwks),
                    _ => ("404 Not Found", "{}".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (base, seen)
}

/// `SYNCGATE_OIDC_ISSUER` alone: `jwks_uri` is discovered, tokens must carry iss = the issuer;
/// a discovery document naming another issuer loads no keys.
#[tokio::test]
async fn oidc_discovery_against_a_local_issuer() {
    let jwk: Value = serde_json::from_str(&fixture("rsa1.jwk.json")).unwrap();
    let keys = Arc::new(Mutex::new(json!({ "keys": [jwk.clone()] })));
    let (issuer, seen) = oidc_issuer(keys.clone(), None).await;
    // A trailing slash in the variable is the same issuer.
    let configured = format!("{issuer}/");
    let s = Server::start(&[("SYNCGATE_OIDC_ISSUER", configured.as_str())]).await;
    let rsa = EncodingKey::from_rsa_pem(fixture("rsa1.key.pem").as_bytes()).unwrap();
    let exp = now() + 600;
    let good = sign_with(Algorithm::RS256, Some("rsa1"), &rsa, &json!({"sub":"o1","exp":exp,"iss":issuer}));
    assert_eq!(welcomed(&s, &good).await["user_id"], "o1");
    assert_eq!(
        *seen.lock().unwrap(),
        ["/.well-known/openid-configuration", "/jwks.json"],
        "discovered, then the keys fetched at start (the server answers once started)"
    );
    for (what, c) in [
        ("no iss", json!({"sub":"o","exp":exp})),
        ("another iss", json!({"sub":"o","exp":exp,"iss":"https://idp.example"})),
        ("iss with a slash", json!({"sub":"o","exp":exp,"iss":format!("{issuer}/")})),
    ] {
        let t = sign_with(Algorithm::RS256, Some("rsa1"), &rsa, &c);
        assert_eq!(rejected(&s, &t).await.status, 401, "{what}");
    }
    // Rotation: an unknown kid rediscovers and refetches (once), like a plain JWKS URL.
    let jwk2: Value = serde_json::from_str(&fixture("rsa2.jwk.json")).unwrap();
    *keys.lock().unwrap() = json!({ "keys": [jwk2] });
    let rsa2 = EncodingKey::from_rsa_pem(fixture("rsa2.key.pem").as_bytes()).unwrap();
    let rotated = sign_with(Algorithm::RS256, Some("rsa2"), &rsa2, &json!({"sub":"o2","exp":exp,"iss":issuer}));
    assert_eq!(welcomed(&s, &rotated).await["user_id"], "o2");
    assert_eq!(seen.lock().unwrap().len(), 4, "{:?}", seen.lock().unwrap());
    assert_eq!(seen.lock().unwrap()[2], "/.well-known/openid-configuration");
    // No secret: HS256 tokens are refused and the account endpoints are off.
    assert_eq!(rejected(&s, &hs256(&json!({"sub":"o","exp":exp,"iss":issuer}))).await.status, 401);
    let creds = json!({"email":"oidc@example.com","password":"correct horse battery"}).to_string();
    assert_eq!(http_json(s.addr, "POST", "/register", None, &creds).await.0, 404);
    s.stop().await;

    // Beside the secret: accounts on, and both kinds of token connect.
    let s = Server::start(&[("SYNCGATE_OIDC_ISSUER", issuer.as_str()), ("SYNCGATE_JWT_SECRET", SECRET)]).await;
    let (status, reg) = http_json(s.addr, "POST", "/register", None, &creds).await;
    assert!(status == 200 || status == 201, "{status} {reg}");
    welcomed(&s, reg["access_token"].as_str().unwrap()).await;
    welcomed(&s, &rotated).await;
    s.stop().await;

    // A discovery document that names another issuer is refused: no keys, no tokens.
    let keys = Arc::new(Mutex::new(json!({ "keys": [jwk] })));
    let (issuer, seen) = oidc_issuer(keys, Some("https://impostor.example")).await;
    let s = Server::start(&[("SYNCGATE_OIDC_ISSUER", issuer.as_str())]).await;
    let t = sign_with(Algorithm::RS256, Some("rsa1"), &rsa, &json!({"sub":"o","exp":exp,"iss":issuer}));
    assert_eq!(rejected(&s, &t).await.status, 401);
    assert!(!seen.lock().unwrap().iter().any(|p| p == "/jwks.json"), "{:?}", seen.lock().unwrap());
    s.stop().await;
}

/// A PEM public key beside the secret works the same way: accounts on, RS256 to the key, HS256
/// to the secret, nothing crossing over.
#[tokio::test]
async fn public_key_beside_the_secret() {
    let pem = fixture("rsa1.pub.pem");
    let s = Server::start(&[("SYNCGATE_JWT_SECRET", SECRET), ("SYNCGATE_JWT_PUBLIC_KEY", pem.as_str())]).await;
    let creds = json!({"email":"pem@example.com","password":"correct horse battery"}).to_string();
    let (status, reg) = http_json(s.addr, "POST", "/register", None, &creds).await;
    assert!(status == 200 || status == 201, "{status} {reg}");
    welcomed(&s, reg["access_token"].as_str().unwrap()).await;
    let exp = now() + 600;
    let rsa = EncodingKey::from_rsa_pem(fixture("rsa1.key.pem").as_bytes()).unwrap();
    // No issuer configured: the external route checks none.
    let ext = json!({"sub":"p1","exp":exp,"iss":"https://anyone"});
    assert_eq!(welcomed(&s, &sign_with(Algorithm::RS256, None, &rsa, &ext)).await["user_id"], "p1");
    welcomed(&s, &hs256(&json!({"sub":"p2","exp":exp}))).await;
    assert_eq!(rejected(&s, &hs256(&json!({"sub":"p3","exp":exp,"iss":"https://anyone"}))).await.status, 401);
    assert_eq!(rejected(&s, &hmac_signed_as("RS256", None, &ext)).await.status, 401);
    let confused = sign_with(Algorithm::HS256, None, &EncodingKey::from_secret(pem.as_bytes()), &ext);
    assert_eq!(rejected(&s, &confused).await.status, 401);
    s.stop().await;
}
