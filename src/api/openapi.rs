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

/// Query parameters of an operation: (name, required, JSON type, description).
fn query(mut o: Value, params: &[(&str, bool, &str, &str)]) -> Value {
    o["parameters"] = params
        .iter()
        .map(|(name, required, ty, description)| {
            json!({ "name": name, "in": "query", "required": required, "schema": { "type": ty }, "description": description })
        })
        .collect();
    o
}

/// A JSON body schema for the response `code` of `o`.
fn returns(mut o: Value, code: &str, schema: Value) -> Value {
    o["responses"][code]["content"] = json!({ "application/json": { "schema": schema } });
    o
}

/// The whole document: each area's operations, then the security schemes.
pub fn document() -> Value {
    let mut paths = Paths::default();
    gateway_paths(&mut paths);
    account_paths(&mut paths);
    password_paths(&mut paths);
    user_api_paths(&mut paths);
    server_api_paths(&mut paths);
    login_page_paths(&mut paths);
    paths.add("/api/openapi.json", "get", op("This document", None, None, &[("200", "OpenAPI 3.1")]));
    json!({
        "openapi": "3.1.0",
        "info": { "title": "syncgate", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths.0,
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
            "apiKey": { "type": "http", "scheme": "bearer", "description": "SYNCGATE_API_KEY" }
        }}
    })
}

/// The `paths` object, filled one operation at a time.
#[derive(Default)]
struct Paths(serde_json::Map<String, Value>);

impl Paths {
    fn add(&mut self, path: &str, method: &str, v: Value) {
        self.0.entry(path.to_string()).or_insert_with(|| json!({}))[method] = v;
    }
}

/// The gateway itself: the WebSocket upgrade, health, readiness, metrics.
fn gateway_paths(paths: &mut Paths) {
    let ws = op(
        "WebSocket upgrade (protocol v1, docs/protocol.md)",
        None,
        None,
        &[
            ("101", "switching protocols"),
            ("400", "bad device_id, device_name or since, too many channel=, or not a WebSocket upgrade"),
            ("401", "token expired or invalid, or issued before the user's last password change"),
            ("403", "origin refused, device revoked, or a token bound to another device"),
            ("429", "too many connections for the user (too_many_connections) or from the address (rate_limited)"),
            ("503", "overloaded (SYNCGATE_MAX_CONNECTIONS reached) or shutting down (unavailable)"),
        ],
    );
    let ws = query(
        ws,
        &[
            ("token", false, "string", "JWT (else Authorization: Bearer, else an auth frame first)"),
            ("device_id", false, "string", "1-64 of [A-Za-z0-9._:-]; generated when absent"),
            ("device_name", false, "string", "name in the device list, at most 64 printable characters"),
            ("since", false, "integer", "replay the user channel after this seq (durable user namespace)"),
            ("channel", false, "string", "repeatable: subscribe at connect"),
        ],
    );
    paths.add("/ws", "get", ws);
    paths.add("/health", "get", op("Liveness", None, None, &[("200", "OK")]));
    let ready_body = object(
        &["ready", "bus", "draining"],
        json!({
            "ready": {"type": "boolean"},
            "bus": {"type": "string", "enum": ["local", "up", "down"], "description": "local without Redis; down when Redis is unreachable"},
            "draining": {"type": "boolean", "description": "shutting down or draining: stop routing new connections here"}
        }),
    );
    let ready = op(
        "Readiness: 200 when serving; 503 when draining or the Redis bus is down",
        None,
        None,
        &[("200", "serving: {ready:true}"), ("503", "draining (draining:true) or bus:\"down\"; {ready:false}")],
    );
    let ready = returns(returns(ready, "200", ready_body.clone()), "503", ready_body);
    paths.add("/ready", "get", ready);
    paths.add("/metrics", "get", op("Prometheus metrics", None, None, &[("200", "text format 0.0.4")]));
}

/// Accounts: register, log in, refresh, log out.
fn account_paths(paths: &mut Paths) {
    let s = json!({"type": "string"});
    paths.add(
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
    paths.add(
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
    paths.add(
        "/token/refresh",
        "post",
        op(
            "Rotate a refresh token",
            None,
            Some(object(&["refresh_token"], json!({"refresh_token": s}))),
            &[("200", "new token pair"), ("401", "invalid, expired or reused")],
        ),
    );
    paths.add(
        "/logout",
        "post",
        op("Revoke a login", None, Some(object(&["refresh_token"], json!({"refresh_token": s}))), &[("200", "ok")]),
    );
}

/// Passwords: change, forgot, reset.
fn password_paths(paths: &mut Paths) {
    let s = json!({"type": "string"});
    let err = &[("400", "bad request"), ("401", "unauthorized"), ("429", "rate limited")];
    paths.add(
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
    paths.add(
        "/forgot-password",
        "post",
        op(
            "Request a reset code",
            None,
            Some(object(&["email"], json!({"email": s}))),
            &[("202", "accepted (whether or not the account exists)"), ("400", "bad request"), ("429", "rate limited")],
        ),
    );
    paths.add(
        "/reset-password",
        "post",
        op(
            "Reset the password with a code",
            None,
            Some(object(&["email", "otp", "new_password"], json!({"email": s, "otp": s, "new_password": s}))),
            err,
        ),
    );
}

/// The caller's resources (bearer token): devices, user search, history, conversations.
fn user_api_paths(paths: &mut Paths) {
    paths.add(
        "/api/devices",
        "get",
        op("The caller's devices", Some("bearer"), None, &[("200", "devices"), ("401", "unauthorized")]),
    );
    paths.add(
        "/api/devices/{id}",
        "delete",
        op(
            "Revoke one of the caller's devices",
            Some("bearer"),
            None,
            &[("200", "revoked"), ("401", "unauthorized"), ("404", "no such device")],
        ),
    );
    paths.add(
        "/api/devices/{id}/key",
        "put",
        op(
            "Register the calling device's Ed25519 public key once ({\"public_key\": base64url of 32 bytes})",
            Some("bearer"),
            None,
            &[
                ("200", "the device"),
                ("400", "malformed key"),
                ("401", "unauthorized"),
                ("404", "not the caller's own device"),
                ("409", "another key is already registered"),
            ],
        ),
    );
    let code = object(
        &["code", "expires_in"],
        json!({ "code": { "type": "string", "pattern": "^[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}$" },
                "expires_in": { "type": "integer", "description": "seconds (SYNCGATE_PAIRING_TTL_SECS)" } }),
    );
    let create = op(
        "Create a pairing code for the calling device (replaces its earlier code)",
        Some("bearer"),
        None,
        &[
            ("201", "the code, valid expires_in seconds"),
            ("401", "unauthorized"),
            ("403", "the token names no device (no did claim) or no account of this server"),
            ("429", "rate limited"),
        ],
    );
    paths.add("/api/pairing", "post", returns(create, "201", code));
    let claim_body = object(
        &["code", "device_name"],
        json!({ "code": { "type": "string", "description": "ABCD-EFGH; any case, the dash optional" },
                "device_name": { "type": "string", "description": "1-64 printable characters" },
                "public_key": { "type": ["string", "null"], "description": "Ed25519, base64url of 32 bytes" } }),
    );
    paths.add(
        "/api/pairing/claim",
        "post",
        op(
            "Claim a pairing code: a login (the JSON of POST /login) for a new device of the code's user",
            None,
            Some(claim_body),
            &[
                ("201", "the token JSON of POST /login, device_id the new device"),
                ("400", "malformed body, device_name or public_key"),
                ("404", "unknown, used or expired code"),
                ("409", "too_many_devices"),
                ("429", "too many claims from this address or from everyone this minute"),
            ],
        ),
    );
    let search = op(
        "Search users by username similarity (q)",
        Some("bearer"),
        None,
        &[("200", "users"), ("400", "bad query"), ("401", "unauthorized"), ("429", "rate limited")],
    );
    paths.add("/api/users/search", "get", query(search, &[("q", true, "string", "1-64 characters")]));
    let after = ("after", false, "integer", "page forward: events with a seq above this; without it, the newest page");
    let before = ("before", false, "integer", "only events with a seq below this (page backward)");
    let limit = ("limit", false, "integer", "1-1000, default 100");
    let history = op(
        "A durable channel's events; same rules as subscribe",
        Some("bearer"),
        None,
        &[
            ("200", "events, latest_seq, has_more"),
            ("400", "bad query or channel not durable"),
            ("401", "unauthorized"),
            ("403", "forbidden channel"),
            ("429", "rate limited"),
        ],
    );
    let channel = ("channel", true, "string", "a channel name, as in subscribe");
    paths.add("/api/history", "get", query(history, &[channel, after, before, limit]));
    let conversation = op(
        "Direct messages with one user",
        Some("bearer"),
        None,
        &[
            ("200", "events, latest_seq, has_more"),
            ("400", "bad query, or dm not durable"),
            ("401", "unauthorized"),
            ("429", "rate limited"),
        ],
    );
    let with = ("with", true, "string", "the other user's id");
    paths.add("/api/conversation", "get", query(conversation, &[with, after, before, limit]));
    let conversations = op(
        "The caller's dm channels, most recent first, with latest seq and read position",
        Some("bearer"),
        None,
        &[("200", "conversations"), ("400", "bad limit"), ("401", "unauthorized"), ("429", "rate limited")],
    );
    let device = ("device_id", false, "string", "whose read position (when the token has no did claim)");
    paths.add("/api/conversations", "get", query(conversations, &[limit, device]));
}

/// The server API (`SYNCGATE_API_KEY`): publish, disconnect, status.
fn server_api_paths(paths: &mut Paths) {
    let s = json!({"type": "string"});
    paths.add(
        "/api/publish",
        "post",
        op(
            "Publish an event into a channel",
            Some("apiKey"),
            Some(object(
                &["event"],
                json!({"channel": s, "channels": {"type": "array", "items": s, "minItems": 1, "maxItems": 100}, "event": s, "data": {}, "msg_id": s}),
            )),
            &[
                ("200", "published: {ok, local_recipients}, on a durable channel {ok, seq, duplicate}; with channels: {ok, results:[{channel, seq?, duplicate?}]} in order"),
                ("400", "bad body, or an event the database refuses to store (durable channel)"),
                ("401", "wrong key"),
                ("404", "API off (no SYNCGATE_API_KEY)"),
                ("408", "body not received in time"),
                ("503", "durable channel: the write queue is full or the database is unavailable; retry"),
            ],
        ),
    );
    paths.add(
        "/api/presence",
        "get",
        op(
            "Who is in a channel, cluster-wide: {channel, members:[{user_id, device_id}]} (query: channel)",
            Some("apiKey"),
            None,
            &[("200", "members"), ("400", "missing or bad channel"), ("401", "wrong key"), ("404", "API off")],
        ),
    );
    paths.add(
        "/api/channels",
        "get",
        op(
            "Channels with members, cluster-wide, paged: {channels:[{channel, members}], next_cursor} (query: prefix, cursor, limit 1-1000)",
            Some("apiKey"),
            None,
            &[("200", "a page"), ("400", "bad prefix, cursor or limit"), ("401", "wrong key"), ("404", "API off")],
        ),
    );
    paths.add(
        "/api/disconnect",
        "post",
        op(
            "Disconnect a user or device everywhere",
            Some("apiKey"),
            Some(object(&["user_id"], json!({"user_id": s, "device_id": s}))),
            &[("200", "done"), ("400", "bad body"), ("401", "wrong key"), ("404", "API off")],
        ),
    );
    paths.add(
        "/api/status",
        "get",
        op("Cluster status", Some("apiKey"), None, &[("200", "status"), ("401", "missing or wrong key")]),
    );
    paths.add(
        "/api/server-key",
        "get",
        op(
            "The server's Ed25519 public key: {alg, key_id (16 hex of SHA-256 of the raw key), public_key (base64url)}",
            None,
            None,
            &[("200", "the key")],
        ),
    );
}

/// The login page for native apps and its token endpoint.
fn login_page_paths(paths: &mut Paths) {
    let s = json!({"type": "string"});
    let page = op(
        "HTML login page for native apps (RFC 8252 + PKCE)",
        None,
        None,
        &[("200", "login form"), ("400", "a parameter refused (HTML page, no redirect)")],
    );
    let page = query(
        page,
        &[
            ("redirect_uri", true, "string", "loopback (http://127.0.0.1:PORT/…) or in SYNCGATE_REDIRECT_ALLOWLIST"),
            ("state", true, "string", "16-128 of [A-Za-z0-9._~-]"),
            ("code_challenge", true, "string", "BASE64URL(SHA-256(code_verifier)), 43 characters"),
            ("code_challenge_method", true, "string", "S256"),
            ("device_id", false, "string", "the device the tokens are bound to"),
        ],
    );
    paths.add("/login-client", "get", page);
    let mut submit = op(
        "Login form submission: 303 to redirect_uri?code=…&state=… (a one-time code, no token)",
        None,
        None,
        &[
            ("303", "signed in"),
            ("400", "a parameter refused (HTML page, no redirect)"),
            ("401", "wrong credentials (the form again)"),
            ("429", "rate limited (the form again)"),
        ],
    );
    let form = object(
        &["login", "password", "redirect_uri", "state", "code_challenge", "code_challenge_method"],
        json!({
            "login": {"type": "string", "description": "email or username"},
            "password": s,
            "redirect_uri": s,
            "state": s,
            "code_challenge": s,
            "code_challenge_method": {"type": "string", "enum": ["S256"]},
            "device_id": s
        }),
    );
    submit["requestBody"] =
        json!({ "required": true, "content": { "application/x-www-form-urlencoded": { "schema": form } } });
    paths.add("/login-client", "post", submit);
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
    paths.add("/login-client/token", "post", token);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::document();
        for (method, path) in crate::routes::ROUTES {
            let m = method.to_lowercase();
            assert!(doc["paths"][*path][&m].is_object(), "{method} {path} missing from the OpenAPI document");
        }
    }

    #[test]
    fn documents_what_the_handlers_answer() {
        let doc = super::document();
        let p = &doc["paths"];
        for code in ["400", "503"] {
            assert!(p["/api/publish"]["post"]["responses"][code].is_object(), "publish {code}");
        }
        for path in ["/api/history", "/api/conversation"] {
            let names: Vec<&str> =
                p[path]["get"]["parameters"].as_array().unwrap().iter().filter_map(|q| q["name"].as_str()).collect();
            for name in ["after", "before", "limit"] {
                assert!(names.contains(&name), "{path} {name}");
            }
        }
        let ready = &p["/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]["properties"];
        assert!(ready["draining"].is_object() && ready["bus"]["enum"].as_array().unwrap().contains(&"down".into()));
        assert!(p["/login-client"]["post"]["requestBody"].is_object());
    }
}
