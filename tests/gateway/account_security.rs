//! Account security, attacked over real sockets: device-bound tokens and the device cap,
//! revocation and password changes honoured everywhere (on one instance per store, and across
//! two instances over Redis sharing PostgreSQL), usernames unique in any case, the SQLite file's
//! permissions.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn post(s: &Server, path: &str, body: &Value, bearer: Option<&str>) -> (u16, Value) {
    http_json(s.addr, "POST", path, bearer, &body.to_string()).await
}

async fn get(s: &Server, path: &str, bearer: &str) -> (u16, Value) {
    http_json(s.addr, "GET", path, Some(bearer), "").await
}

fn access(v: &Value) -> String {
    v["access_token"].as_str().expect("access_token").to_string()
}

fn refresh(v: &Value) -> String {
    v["refresh_token"].as_str().expect("refresh_token").to_string()
}

/// Every login creates a device unless it names one; past the cap a login that would create
/// one more is 409 `too_many_devices`, while logins on existing devices still work.
async fn device_cap_flow(env: &[(&str, &str)]) {
    let mut env = env.to_vec();
    env.push(("SYNCGATE_MAX_DEVICES_PER_USER", "3"));
    let s = Server::start(&env).await;
    let (status, reg) = post(&s, "/register", &json!({"email":"cap@example.com","password":"cap owner 1"}), None).await;
    assert_eq!(status, 201, "{reg}");
    let first = reg["device_id"].as_str().expect("device_id in the register response").to_string();
    let login = |device: Option<&str>| {
        let mut body = json!({"email":"cap@example.com","password":"cap owner 1"});
        if let Some(d) = device {
            body["device_id"] = d.into();
        }
        body
    };
    let (status, second) = post(&s, "/login", &login(None), None).await;
    assert_eq!(status, 200);
    let second_id = second["device_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first, "a login without device_id creates a new device");
    let (status, _) = post(&s, "/login", &login(Some("laptop")), None).await;
    assert_eq!(status, 200);
    // The fourth device is refused, however it is asked for.
    let (status, body) = post(&s, "/login", &login(None), None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("too_many_devices")), "{body}");
    let (status, body) = post(&s, "/login", &login(Some("tablet")), None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("too_many_devices")));
    // Existing devices still log in; the list shows exactly the three.
    let (status, again) = post(&s, "/login", &login(Some("laptop")), None).await;
    assert_eq!((status, again["device_id"].as_str()), (200, Some("laptop")));
    let (status, list) = get(&s, "/api/devices", &access(&reg)).await;
    assert_eq!(status, 200);
    let mut ids: Vec<String> =
        list["devices"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    let mut want = vec![first.clone(), second_id.clone(), "laptop".to_string()];
    want.sort();
    assert_eq!(ids, want);
    // Revoking one frees a place.
    let (status, _) = http_json(s.addr, "DELETE", &format!("/api/devices/{second_id}"), Some(&access(&reg)), "").await;
    assert_eq!(status, 200);
    let (status, _) = post(&s, "/login", &login(Some("tablet")), None).await;
    assert_eq!(status, 200);
    // Each token opens /ws only as its own device.
    let mut c = Client::connect(&s.url(&format!("token={}", access(&again)))).await.unwrap();
    assert_eq!(c.recv().await["device_id"], "laptop");
    let r = Client::connect(&s.url(&format!("token={}&device_id=tablet", access(&again)))).await.err().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

on_both_stores!(device_cap_on_sqlite, device_cap_on_postgres, device_cap_flow);

/// After `/change-password` every earlier access and refresh token of the user is void (REST
/// 401, live connections 4003, reconnects refused) except the new pair it returns (the reset
/// path is in `accounts::reset_flow`).
async fn password_change_flow(env: &[(&str, &str)]) {
    let s = Server::start(env).await;
    let (_, reg) =
        post(&s, "/register", &json!({"email":"pw@example.com","password":"first password","username":"PwUser"}), None)
            .await;
    let (_, other) = post(&s, "/login", &json!({"username":"pwuser","password":"first password"}), None).await;
    let mut live = Client::connect(&s.url(&format!("token={}", access(&other)))).await.unwrap();
    assert_eq!(live.recv().await["type"], "welcome");
    let mut bystander = s.client("someone-else", "d").await;

    let (status, changed) = post(
        &s,
        "/change-password",
        &json!({"current_password":"first password","new_password":"second password"}),
        Some(&access(&reg)),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["device_id"], reg["device_id"], "new tokens for the calling device");
    assert_eq!(live.close_code_within(Duration::from_secs(1)).await, 4003);
    for old in [access(&reg), access(&other)] {
        assert_eq!(get(&s, "/api/devices", &old).await.0, 401);
        let r = Client::connect(&s.url(&format!("token={old}"))).await.err().expect("old token refused");
        assert_eq!(r.status, 401);
    }
    for old in [refresh(&reg), refresh(&other)] {
        assert_eq!(post(&s, "/token/refresh", &json!({"refresh_token": old}), None).await.0, 401);
    }
    // The new pair works: REST, /ws, refresh.
    assert_eq!(get(&s, "/api/devices", &access(&changed)).await.0, 200);
    let mut fresh = Client::connect(&s.url(&format!("token={}", access(&changed)))).await.unwrap();
    assert_eq!(fresh.recv().await["type"], "welcome");
    let (status, rotated) = post(&s, "/token/refresh", &json!({"refresh_token": refresh(&changed)}), None).await;
    assert_eq!(status, 200);
    assert_eq!(bystander.request(json!({"type":"ping"})).await["type"], "pong");

    // A second change from the new tokens voids them in turn (two changes within one second:
    // generations, not `iat`), and the connection opened with them closes.
    let (status, third) = post(
        &s,
        "/change-password",
        &json!({"current_password":"second password","new_password":"third password"}),
        Some(&access(&rotated)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fresh.close_code_within(Duration::from_secs(1)).await, 4003);
    assert_eq!(get(&s, "/api/devices", &access(&rotated)).await.0, 401);
    assert_eq!(get(&s, "/api/devices", &access(&third)).await.0, 200);
    assert_eq!(bystander.request(json!({"type":"ping"})).await["type"], "pong");
    s.stop().await;
}

on_both_stores!(password_change_on_sqlite, password_change_on_postgres, password_change_flow);

async fn cluster_pair(pg: &str) -> (Server, Server) {
    let p = crate::cluster::prefix();
    let env = |p: &str| {
        vec![
            ("REDIS_URL", crate::cluster::REDIS.to_string()),
            ("SYNCGATE_REDIS_PREFIX", p.to_string()),
            ("DATABASE_URL", pg.to_string()),
        ]
    };
    let a = env(&p);
    let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (Server::start(&a).await, Server::start(&a).await)
}

/// Two instances over Redis sharing PostgreSQL: a device revoked on one is refused on the
/// other (REST 401, upgrade 403, refresh 401) within a second; a password changed on one voids
/// the old tokens on the other within a second and closes the connections there.
#[tokio::test]
async fn revocation_and_password_change_reach_every_instance() {
    let pg = crate::accounts::fresh_pg_database().await;
    let (a, b) = cluster_pair(&pg).await;
    let (_, reg) = post(&a, "/register", &json!({"email":"two@example.com","password":"two places"}), None).await;
    let (_, phone) =
        post(&b, "/login", &json!({"email":"two@example.com","password":"two places","device_id":"phone"}), None).await;
    let phone_access = access(&phone);
    let mut on_b = Client::connect(&b.url(&format!("token={phone_access}"))).await.unwrap();
    assert_eq!(on_b.recv().await["type"], "welcome");
    assert_eq!(get(&b, "/api/devices", &phone_access).await.0, 200);

    // Revoked on A.
    let (status, _) = http_json(a.addr, "DELETE", "/api/devices/phone", Some(&access(&reg)), "").await;
    assert_eq!(status, 200);
    assert_eq!(on_b.close_code_within(Duration::from_secs(1)).await, 4003);
    let took = eventually(Duration::from_secs(1), || async {
        (get(&b, "/api/devices", &phone_access).await.0 == 401).then_some(())
    })
    .await;
    assert!(took.is_some(), "the revoked device's token still works on the other instance");
    let r = Client::connect(&b.url(&format!("token={phone_access}"))).await.err().unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(post(&b, "/token/refresh", &json!({"refresh_token": refresh(&phone)}), None).await.0, 401);

    // Password changed on A: B refuses the old tokens and closes the connection opened with them.
    let (_, laptop) =
        post(&b, "/login", &json!({"email":"two@example.com","password":"two places","device_id":"laptop"}), None)
            .await;
    let mut laptop_ws = Client::connect(&b.url(&format!("token={}", access(&laptop)))).await.unwrap();
    assert_eq!(laptop_ws.recv().await["type"], "welcome");
    let (status, changed) = post(
        &a,
        "/change-password",
        &json!({"current_password":"two places","new_password":"one place now"}),
        Some(&access(&reg)),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(laptop_ws.close_code_within(Duration::from_secs(1)).await, 4003);
    let took = eventually(Duration::from_secs(1), || async {
        (get(&b, "/api/devices", &access(&laptop)).await.0 == 401).then_some(())
    })
    .await;
    assert!(took.is_some(), "an access token from before the change still works on the other instance");
    let r = Client::connect(&b.url(&format!("token={}", access(&laptop)))).await.err().unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(post(&b, "/token/refresh", &json!({"refresh_token": refresh(&laptop)}), None).await.0, 401);
    // The new tokens work on both.
    for s in [&a, &b] {
        assert_eq!(get(s, "/api/devices", &access(&changed)).await.0, 200);
    }
    let mut new_ws = Client::connect(&b.url(&format!("token={}", access(&changed)))).await.unwrap();
    assert_eq!(new_ws.recv().await["type"], "welcome");
    assert_eq!(new_ws.request(json!({"type":"ping"})).await["type"], "pong");
    a.stop().await;
    b.stop().await;
}

/// An instance started after a password change still refuses the older tokens (the
/// generations are loaded from the store at start).
#[tokio::test]
async fn a_new_instance_knows_earlier_password_changes() {
    let dir = temp_dir();
    let dir = dir.display().to_string();
    let env = [("SYNCGATE_DATA_DIR", dir.as_str())];
    let s = Server::start(&env).await;
    let (_, reg) = post(&s, "/register", &json!({"email":"late@example.com","password":"late password"}), None).await;
    let (status, _) = post(
        &s,
        "/change-password",
        &json!({"current_password":"late password","new_password":"later password"}),
        Some(&access(&reg)),
    )
    .await;
    assert_eq!(status, 200);
    s.stop().await;
    let s = Server::start(&env).await;
    assert_eq!(get(&s, "/api/devices", &access(&reg)).await.0, 401);
    let r = Client::connect(&s.url(&format!("token={}", access(&reg)))).await.err().unwrap();
    assert_eq!(r.status, 401);
    s.stop().await;
}

/// "Alice" and "alice" are one username: the second registration is 409, and login works in
/// any case.
async fn usernames_flow(env: &[(&str, &str)]) {
    let s = Server::start(env).await;
    let (status, _) =
        post(&s, "/register", &json!({"email":"a1@example.com","password":"alice pw 123","username":"Alice"}), None)
            .await;
    assert_eq!(status, 201);
    let (status, body) =
        post(&s, "/register", &json!({"email":"a2@example.com","password":"alice pw 123","username":"alice"}), None)
            .await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    let (status, body) = post(&s, "/login", &json!({"username":"ALICE","password":"alice pw 123"}), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["username"], "Alice");
    s.stop().await;
}

on_both_stores!(usernames_on_sqlite, usernames_on_postgres, usernames_flow);

/// The embedded database is created readable by its owner only.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir();
    let d = dir.display().to_string();
    let s = Server::start(&[("SYNCGATE_DATA_DIR", d.as_str())]).await;
    let (status, _) = post(&s, "/register", &json!({"email":"p@example.com","password":"private pw"}), None).await;
    assert_eq!(status, 201);
    for name in ["syncgate.db", "syncgate.db-wal"] {
        let mode = std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
    s.stop().await;
}

/// A device that has just connected (here with another issuer's token, so no login created
/// it) is listed by `/api/devices` as soon as its `welcome` arrives, and can be revoked at once.
async fn just_connected_flow(env: &[(&str, &str)]) {
    let s = Server::start(env).await;
    let user = format!("fresh-{}", syncgate::util::random_hex(4));
    let tok = token(&user);
    for round in 0..20 {
        let device = format!("dev{round}");
        let mut c = Client::connect(&s.url(&format!("token={tok}&device_id={device}"))).await.unwrap();
        assert_eq!(c.recv().await["type"], "welcome");
        let (status, list) = get(&s, "/api/devices", &tok).await;
        assert_eq!(status, 200);
        let listed = list["devices"].as_array().unwrap().iter().any(|d| d["id"] == device.as_str());
        assert!(listed, "round {round}: {device} not listed right after welcome: {list}");
        let (status, _) = http_json(s.addr, "DELETE", &format!("/api/devices/{device}"), Some(&tok), "").await;
        assert_eq!(status, 200, "round {round}: revoking {device} right after welcome");
        assert_eq!(c.close_code_within(Duration::from_secs(1)).await, 4003);
    }
    s.stop().await;
}

on_both_stores!(just_connected_on_sqlite, just_connected_on_postgres, just_connected_flow);
