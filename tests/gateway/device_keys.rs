//! Device keys (issue 14, part): `PUT /api/devices/{id}/key` registers a device's Ed25519 public
//! key once, with the device's own token; `GET /api/devices` lists it. SQLite and PostgreSQL.

use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

fn b64(raw: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

async fn put_key(s: &Server, device: &str, token: &str, body: &str) -> (u16, Value) {
    http_json(s.addr, "PUT", &format!("/api/devices/{device}/key"), Some(token), body).await
}

async fn login(s: &Server, device: &str) -> String {
    let body = json!({"email":"keys@example.com","password":"device keys pw","device_id":device}).to_string();
    let (status, t) = http_json(s.addr, "POST", "/login", None, &body).await;
    assert_eq!(status, 200, "{t}");
    t["access_token"].as_str().unwrap().to_string()
}

async fn device_keys_flow(s: &Server) {
    let (status, r) =
        http_json(s.addr, "POST", "/register", None, r#"{"email":"keys@example.com","password":"device keys pw"}"#)
            .await;
    assert_eq!(status, 201, "{r}");
    let phone = login(s, "phone").await;
    let laptop = login(s, "laptop").await;
    let key = b64(&[7u8; 32]);
    let body = json!({ "public_key": key }).to_string();

    // Only the device itself: another device's id (or an unknown one) is 404.
    assert_eq!(put_key(s, "laptop", &phone, &body).await.0, 404);
    assert_eq!(put_key(s, "nope", &phone, &body).await.0, 404);
    // Malformed keys: 400.
    for bad in [
        json!({"public_key": b64(&[7u8; 31])}),
        json!({"public_key": b64(&[7u8; 33])}),
        json!({"public_key": format!("{key}=")}),
        json!({"public_key": format!("+{}", &key[1..])}),
        json!({"public_key": 5}),
        json!({}),
    ] {
        let (status, e) = put_key(s, "phone", &phone, &bad.to_string()).await;
        assert_eq!(status, 400, "{bad} {e}");
    }
    // Hostile bodies: oversized and deeply nested are refused (400); the server keeps serving.
    let huge = format!(r#"{{"public_key":"{}"}}"#, "A".repeat(1 << 20));
    assert_eq!(put_key(s, "phone", &phone, &huge).await.0, 400);
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(put_key(s, "phone", &phone, &deep).await.0, 400);
    // Registered: 200 with the device as /api/devices lists it.
    let (status, d) = put_key(s, "phone", &phone, &body).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["id"], "phone");
    assert_eq!(d["public_key"], key.as_str());
    // The same key again is fine; another key is 409 (a lost key means revoking the device).
    assert_eq!(put_key(s, "phone", &phone, &body).await.0, 200);
    let other = json!({ "public_key": b64(&[9u8; 32]) }).to_string();
    let (status, e) = put_key(s, "phone", &phone, &other).await;
    assert_eq!((status, e["error"].as_str()), (409, Some("conflict")), "{e}");
    // Listed for every device: the key, or null.
    let (status, list) = http_json(s.addr, "GET", "/api/devices", Some(&laptop), "").await;
    assert_eq!(status, 200);
    let devices = list["devices"].as_array().unwrap();
    let by_id = |id: &str| devices.iter().find(|d| d["id"] == id).cloned().unwrap_or_default();
    assert_eq!(by_id("phone")["public_key"], key.as_str());
    assert_eq!(by_id("laptop")["public_key"], Value::Null);
    assert!(devices.iter().all(|d| d.get("public_key").is_some()), "{list}");
    // A token without a device, or none: refused.
    assert_eq!(put_key(s, "phone", &token("someone"), &body).await.0, 404);
    assert_eq!(http_json(s.addr, "PUT", "/api/devices/phone/key", None, &body).await.0, 401);
}

on_both_stores!(device_keys_on_sqlite, device_keys_on_postgres, server device_keys_flow);
