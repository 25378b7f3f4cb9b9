//! The OpenAPI 3.1 document for the HTTP API, served at `GET /api/openapi.json`.

use serde_json::{json, Value};

fn op(summary: &str, auth: Option<&str>, body: Option<Value>, responses: &[(&str, &str)]) -> Value {
    let mut o = json!({ "summary": summary, "responses": {} });
    for (code, desc) in responses {
        o["responses"][*code] = json!({ "description": desc });
    }
    if let Some(scheme) = auth {
        o["security"] = json!([{ scheme: [] }]);
    }
    if let Some(schema) = body {
        o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    }
    o
}

fn object(required: &[&str], props: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": props })
}

pub fn document() -> Value {
    let s = json!({"type": "string"});
    let err = &[("400", "bad request"), ("401", "unauthorized"), ("429", "rate limited")];
    let mut paths = serde_json::Map::new();
    let mut add = |path: &str, method: &str, v: Value| {
        paths.entry(path.to_string()).or_insert_with(|| json!({}))[method] = v;
    };
    add(
        "/ws",
        "get",
        op(
            "WebSocket upgrade (protocol v1, docs/protocol.md)",
            None,
            None,
            &[
                ("101", "switching protocols"),
                ("401", "unauthorized"),
                ("403", "origin refused, device revoked, or a token bound to another device"),
                ("429", "too many connections"),
                ("503", "overloaded or draining"),
            ],
        ),
    );
    add("/health", "get", op("Liveness", None, None, &[("200", "OK")]));
    add("/ready", "get", op("Readiness", None, None, &[("200", "serving"), ("503", "draining or a backend is down")]));
    add("/metrics", "get", op("Prometheus metrics", None, None, &[("200", "text format 0.0.4")]));
    add(
        "/register",
        "post",
        op(
            "Create an account",
            None,
            Some(object(&["email", "password"], json!({"email": s, "password": s, "username": s, "device_id": s}))),
            &[
                ("201", "token pair bound to a device (device_id), and the user"),
                ("400", "invalid body"),
                ("409", "duplicate"),
                ("429", "rate limited"),
            ],
        ),
    );
    add(
        "/login",
        "post",
        op(
            "Log in by email or username",
            None,
            Some(object(&["password"], json!({"email": s, "username": s, "password": s, "device_id": s}))),
            &[
                ("200", "token pair bound to a device (device_id), and the user"),
                ("400", "invalid body"),
                ("401", "invalid credentials"),
                ("403", "device revoked"),
                ("409", "too_many_devices"),
                ("429", "rate limited"),
            ],
        ),
    );
    add(
        "/token/refresh",
        "post",
        op(
            "Rotate a refresh token",
            None,
            Some(object(&["refresh_token"], json!({"refresh_token": s}))),
            &[("200", "new token pair"), ("401", "invalid, expired or reused")],
        ),
    );
    add(
        "/logout",
        "post",
        op("Revoke a login", None, Some(object(&["refresh_token"], json!({"refresh_token": s}))), &[("200", "ok")]),
    );
    add(
        "/change-password",
        "post",
        op(
            "Change the password",
            Some("bearer"),
            Some(object(&["current_password", "new_password"], json!({"current_password": s, "new_password": s}))),
            &[
                ("200", "new token pair for the calling device; every earlier token is void"),
                ("400", "bad request"),
                ("401", "unauthorized"),
                ("429", "rate limited"),
            ],
        ),
    );
    add(
        "/forgot-password",
        "post",
        op(
            "Request a reset code",
            None,
            Some(object(&["email"], json!({"email": s}))),
            &[("202", "accepted (whether or not the account exists)"), ("400", "bad request"), ("429", "rate limited")],
        ),
    );
    add(
        "/reset-password",
        "post",
        op(
            "Reset the password with a code",
            None,
            Some(object(&["email", "otp", "new_password"], json!({"email": s, "otp": s, "new_password": s}))),
            err,
        ),
    );
    add(
        "/api/devices",
        "get",
        op("The caller's devices", Some("bearer"), None, &[("200", "devices"), ("401", "unauthorized")]),
    );
    add(
        "/api/devices/{id}",
        "delete",
        op(
            "Revoke one of the caller's devices",
            Some("bearer"),
            None,
            &[("200", "revoked"), ("401", "unauthorized"), ("404", "no such device")],
        ),
    );
    add(
        "/api/users/search",
        "get",
        op(
            "Search users by username similarity (q)",
            Some("bearer"),
            None,
            &[("200", "users"), ("400", "bad query"), ("401", "unauthorized")],
        ),
    );
    add(
        "/api/history",
        "get",
        op(
            "A durable channel's events (channel, after, before, limit 1-1000); same rules as subscribe",
            Some("bearer"),
            None,
            &[
                ("200", "events, latest_seq, has_more"),
                ("400", "bad query or channel not durable"),
                ("401", "unauthorized"),
                ("403", "forbidden channel"),
            ],
        ),
    );
    add(
        "/api/conversation",
        "get",
        op(
            "Direct messages with one user (with, before, after, limit)",
            Some("bearer"),
            None,
            &[("200", "events, latest_seq, has_more"), ("400", "bad query"), ("401", "unauthorized")],
        ),
    );
    add(
        "/api/conversations",
        "get",
        op(
            "The caller's dm channels with latest seq and read position",
            Some("bearer"),
            None,
            &[("200", "conversations"), ("401", "unauthorized")],
        ),
    );
    add(
        "/api/publish",
        "post",
        op(
            "Publish an event into a channel",
            Some("apiKey"),
            Some(object(&["channel", "event"], json!({"channel": s, "event": s, "data": {}, "msg_id": s}))),
            &[("200", "published"), ("400", "bad body"), ("401", "wrong key"), ("404", "API off")],
        ),
    );
    add(
        "/api/disconnect",
        "post",
        op(
            "Disconnect a user or device everywhere",
            Some("apiKey"),
            Some(object(&["user_id"], json!({"user_id": s, "device_id": s}))),
            &[("200", "done"), ("400", "bad body"), ("401", "wrong key"), ("404", "API off")],
        ),
    );
    add(
        "/api/status",
        "get",
        op("Cluster status", Some("apiKey"), None, &[("200", "status"), ("401", "missing or wrong key")]),
    );
    add(
        "/login-client",
        "get",
        op(
            "HTML login page for native apps (RFC 8252 + PKCE): redirect_uri (loopback or allow-listed), \
             state (16-128 of [A-Za-z0-9._~-]), code_challenge, code_challenge_method=S256, device_id?",
            None,
            None,
            &[("200", "login form"), ("400", "a parameter refused (HTML page, no redirect)")],
        ),
    );
    add(
        "/login-client",
        "post",
        op(
            "Login form submission: 303 to redirect_uri?code=…&state=… (a one-time code, no token)",
            None,
            None,
            &[
                ("303", "signed in"),
                ("400", "a parameter refused (HTML page, no redirect)"),
                ("401", "wrong credentials"),
                ("429", "rate limited"),
            ],
        ),
    );
    let mut token = op(
        "Redeem a login page code once (RFC 6749 §4.1.3, PKCE S256): the token JSON of /login",
        None,
        None,
        &[
            ("200", "token pair and user (Cache-Control: no-store)"),
            ("400", "invalid_grant: wrong verifier, used or expired code, other redirect_uri; or a bad body"),
            ("429", "rate limited"),
        ],
    );
    let grant = object(
        &["code", "code_verifier", "redirect_uri"],
        json!({"grant_type": {"type": "string", "enum": ["authorization_code"]}, "code": s, "code_verifier": s, "redirect_uri": s}),
    );
    token["requestBody"] = json!({ "required": true, "content": {
        "application/json": { "schema": grant },
        "application/x-www-form-urlencoded": { "schema": grant }
    }});
    add("/login-client/token", "post", token);
    add("/api/openapi.json", "get", op("This document", None, None, &[("200", "OpenAPI 3.1")]));
    json!({
        "openapi": "3.1.0",
        "info": { "title": "syncgate", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            "apiKey": { "type": "http", "scheme": "bearer", "description": "SYNCGATE_API_KEY" }
        }}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        for (method, path) in crate::server::ROUTES {
            let m = method.to_lowercase();
            assert!(doc["paths"][*path][&m].is_object(), "{method} {path} missing from the OpenAPI document");
        }
    }
}
