//! Login rate-limit keys over real sockets from several loopback source addresses: one address
//! hammering an account never locks its user out of another address; the per-address and the
//! per-account (across addresses) limits.

use std::net::{IpAddr, SocketAddr};

use serde_json::{json, Value};

use crate::common::*;

/// One HTTP/1.1 request from source address `from` (the server sees it as the peer).
async fn http_from(from: &str, addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let ip: IpAddr = from.parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    http_json_over(stream, "POST", path, None, body).await
}

async fn login(s: &Server, from: &str, login: &str, password: &str) -> u16 {
    let body = json!({"email": login, "password": password}).to_string();
    http_from(from, s.addr, "/login", &body).await.0
}

async fn register(s: &Server, email: &str) {
    let body = json!({"email": email, "password": "right password 1"}).to_string();
    assert_eq!(http_from("127.0.0.9", s.addr, "/register", &body).await.0, 201);
}

#[tokio::test]
async fn one_address_hammering_never_locks_the_user_out() {
    let s = Server::start(&[("SYNCGATE_AUTH_ATTEMPTS_PER_MIN", "4")]).await;
    register(&s, "alice@limits.test").await;
    register(&s, "bob@limits.test").await;
    for _ in 0..4 {
        assert_eq!(login(&s, "127.0.0.1", "alice@limits.test", "wrong password").await, 401);
    }
    for _ in 0..6 {
        assert_eq!(login(&s, "127.0.0.1", "alice@limits.test", "wrong password").await, 429);
    }
    // The right password from the hammering address waits too (the guessing stops here)…
    assert_eq!(login(&s, "127.0.0.1", "Alice@Limits.test", "right password 1").await, 429, "normalised first");
    // …but the user logs in from another address, and another user from the same one.
    assert_eq!(login(&s, "127.0.0.2", "alice@limits.test", "right password 1").await, 200);
    assert_eq!(login(&s, "127.0.0.1", "bob@limits.test", "right password 1").await, 200);
    // The server is fine for everyone else.
    let mut c = s.client("someone", "d").await;
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn one_address_spraying_many_accounts_is_limited_alone() {
    let s = Server::start(&[("SYNCGATE_AUTH_ATTEMPTS_PER_ADDRESS_PER_MIN", "5")]).await;
    register(&s, "carol@limits.test").await;
    for i in 0..5 {
        assert_eq!(login(&s, "127.0.0.1", &format!("u{i}@limits.test"), "wrong password").await, 401);
    }
    assert_eq!(login(&s, "127.0.0.1", "u9@limits.test", "wrong password").await, 429);
    assert_eq!(login(&s, "127.0.0.1", "carol@limits.test", "right password 1").await, 429);
    // Malformed and oversized login strings are limited under the same address.
    assert_eq!(login(&s, "127.0.0.1", &"x".repeat(2000), "wrong password").await, 429);
    // Another address is untouched.
    assert_eq!(login(&s, "127.0.0.2", "u9@limits.test", "wrong password").await, 401);
    assert_eq!(login(&s, "127.0.0.2", "carol@limits.test", "right password 1").await, 200);
    s.stop().await;
}

#[tokio::test]
async fn account_limit_needs_several_addresses() {
    // Hourly account limit 4: one (address, account) pair gets at most 2 of it.
    let s = Server::start(&[("SYNCGATE_AUTH_ATTEMPTS_PER_ACCOUNT_PER_HOUR", "4")]).await;
    register(&s, "dave@limits.test").await;
    register(&s, "erin@limits.test").await;
    for _ in 0..2 {
        assert_eq!(login(&s, "127.0.0.1", "dave@limits.test", "wrong password").await, 401);
    }
    assert_eq!(login(&s, "127.0.0.1", "dave@limits.test", "wrong password").await, 429, "the pair's share");
    // One address alone never reached the account limit.
    for _ in 0..2 {
        assert_eq!(login(&s, "127.0.0.2", "dave@limits.test", "wrong password").await, 401);
    }
    // Two addresses together did: now every address waits for this account…
    assert_eq!(login(&s, "127.0.0.3", "dave@limits.test", "right password 1").await, 429);
    // …and only for this one.
    assert_eq!(login(&s, "127.0.0.3", "erin@limits.test", "right password 1").await, 200);
    s.stop().await;
}
