//! Accounts for products without an identity provider: register, login, refresh (rotating),
//! logout, change-password. Access tokens are the gateway's own HS256 JWTs, accepted by `/ws`.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;

use super::json_body;
use crate::app::AppState;
use crate::error::{json_response, HttpError};
use crate::store::devices::Registered;
use crate::store::tokens::Redeemed;
use crate::store::users::User;

const BODY_LIMIT: usize = 16 * 1024;
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 1024;

#[derive(Deserialize)]
struct RegisterBody {
    email: String,
    password: String,
    #[serde(default)]
    username: Option<String>,
    /// The device the tokens are bound to; a new one is created when absent.
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Deserialize)]
struct LoginBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    username: Option<String>,
    password: String,
    /// Binds the tokens to this device (`did`): revoking the device revokes this login.
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
struct ChangePasswordBody {
    current_password: String,
    new_password: String,
}

/// Trimmed and lower-cased; `None` when it is not a plausible address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && e.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && e.chars().all(|c| !c.is_whitespace() && !c.is_control());
    ok.then_some(e)
}

fn valid_username(u: &str) -> bool {
    (3..=32).contains(&u.len()) && u.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_password(p: &str) -> Result<(), HttpError> {
    if p.chars().count() < MIN_PASSWORD {
        return Err(HttpError::BadRequest(format!("password must be at least {MIN_PASSWORD} characters")));
    }
    if p.len() > MAX_PASSWORD {
        return Err(HttpError::BadRequest("password is too long".into()));
    }
    Ok(())
}

fn enabled(state: &AppState) -> Result<(), HttpError> {
    // Accounts mint HS256 tokens: only with a secret (configured or the development one).
    if state.verifier.can_sign() {
        Ok(())
    } else {
        Err(HttpError::NotFound)
    }
}

/// A freshly issued token pair, bound to `device_id`.
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub expires_in: u64,
    pub device_id: String,
}

/// The device tokens are bound to: `requested` if it is one of the user's unrevoked devices (or
/// can become one), else a new device. 403 for a revoked device, 409 `too_many_devices` when a
/// new one would pass `SYNCGATE_MAX_DEVICES_PER_USER`.
async fn bind_device(state: &AppState, user_id: &str, requested: Option<&str>) -> Result<String, HttpError> {
    if let Some(d) = requested {
        if !crate::identity::valid_device_id(d) {
            return Err(HttpError::BadRequest(crate::identity::DEVICE_ID_RULE.into()));
        }
        if state.registry.is_revoked(user_id, d) {
            return Err(HttpError::Forbidden("device revoked"));
        }
    }
    let device = requested.map_or_else(|| format!("d-{}", crate::util::random_hex(8)), str::to_string);
    match state.store.register_device(user_id, &device, None, state.config.accounts.max_devices_per_user).await? {
        Registered::Ok => Ok(device),
        Registered::Revoked => Err(HttpError::Forbidden("device revoked")),
        Registered::TooMany => Err(HttpError::TooManyDevices),
    }
}

/// Signs an access token (generation `gen`, bound to `device`) and stores a new refresh token in
/// `family`.
async fn issue(state: &AppState, user_id: &str, gen: u64, family: &str, device: &str) -> Result<Tokens, HttpError> {
    let ttl = state.config.accounts.access_ttl_secs;
    let access = state.verifier.sign(user_id, Some(device), gen, ttl, &[]).ok_or(HttpError::Internal)?;
    let refresh = crate::util::random_hex(32);
    state.store.insert_refresh(&refresh, user_id, family, Some(device), state.config.accounts.refresh_ttl_secs).await?;
    Ok(Tokens { access, refresh, expires_in: ttl, device_id: device.to_string() })
}

/// Email-or-username + password → the user (the login page; its tokens come later, from
/// [`issue_login`]).
pub async fn password_login(state: &AppState, login: &str, password: String) -> Result<User, HttpError> {
    let found = state.store.credentials_by_login(login).await?;
    let ok = state.hasher.verify(password, found.as_ref().map(|c| c.password_hash.clone())).await;
    match found {
        Some(c) if ok => Ok(c.user),
        _ => Err(HttpError::InvalidCredentials),
    }
}

/// The token JSON of `/login` (and `/register`, `/token/refresh`, `/change-password`).
pub fn tokens_json(t: &Tokens, user: &User) -> serde_json::Value {
    serde_json::json!({
        "access_token": t.access,
        "refresh_token": t.refresh,
        "token_type": "Bearer",
        "expires_in": t.expires_in,
        "device_id": t.device_id,
        "user": user,
    })
}

/// Issues an access token and a new refresh token in `family`, bound to `device`.
async fn session(
    state: &AppState,
    user: User,
    gen: u64,
    family: &str,
    device: &str,
    status: StatusCode,
) -> Result<Response<Full<Bytes>>, HttpError> {
    let t = issue(state, &user.id, gen, family, device).await?;
    Ok(json_response(status, &tokens_json(&t, &user)))
}

/// Counts an attempt against every key; 429 when one is over its limit.
fn attempt(limiter: &crate::limits::AttemptLimiter, keys: &[String]) -> Result<(), HttpError> {
    if limiter.allow(keys, std::time::Instant::now()) {
        Ok(())
    } else {
        Err(HttpError::TooManyAttempts)
    }
}

/// Login, forgot and reset attempts, before any hashing work: per (address, account)
/// (guessing), per address (spraying) and per account across addresses (see
/// [`crate::limits::AuthLimiter`]). The login string is validated first — a normalised email or a
/// valid username, lower-cased — and only its keyed hash is kept; a string that cannot name an
/// account shares one key.
pub fn limit_auth(state: &AppState, peer: IpAddr, login: &str) -> Result<(), HttpError> {
    let login = login.trim().to_lowercase();
    let account = match login.contains('@') {
        true => normalize_email(&login),
        false => valid_username(&login).then_some(login),
    };
    if state.auth_attempts.allow(peer, account.as_deref(), std::time::Instant::now()) {
        Ok(())
    } else {
        Err(HttpError::TooManyAttempts)
    }
}

/// A request's email, normalised, or 400.
fn email_field(raw: &str) -> Result<String, HttpError> {
    normalize_email(raw).ok_or_else(|| HttpError::BadRequest("malformed email".into()))
}

/// Stores a new password hash and starts a new token generation: every refresh token of the
/// user is revoked, and every instance refuses older access tokens and closes the connections
/// opened with them (4003). Returns the new generation.
async fn replace_password(state: &AppState, user_id: &str, password: String) -> Result<u64, HttpError> {
    let hash = state.hasher.hash(password).await.ok_or(HttpError::Internal)?;
    let gen = state.store.replace_password(user_id, &hash).await?;
    state.bus.control(crate::bus::Control::TokenGeneration { user_id: user_id.to_string(), gen });
    Ok(gen)
}

/// `POST /register {email, password, username?}` → 201.
pub async fn register(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    attempt(&state.registrations, &[format!("ip:{}", crate::limits::client_key(peer))])?;
    let body: RegisterBody = json_body(&state, req, BODY_LIMIT).await?;
    let email = email_field(&body.email)?;
    check_password(&body.password)?;
    let username = body.username.map(|u| u.trim().to_string()).filter(|u| !u.is_empty());
    if let Some(u) = &username {
        if !valid_username(u) {
            return Err(HttpError::BadRequest("username must be 3-32 characters of [A-Za-z0-9_.-]".into()));
        }
    }
    if let Some(d) = &body.device_id {
        if !crate::identity::valid_device_id(d) {
            return Err(HttpError::BadRequest(crate::identity::DEVICE_ID_RULE.into()));
        }
    }
    let hash = state.hasher.hash(body.password).await.ok_or(HttpError::Internal)?;
    let user = state.store.create_user(&email, username.as_deref(), &hash).await?;
    let device = bind_device(&state, &user.id, body.device_id.as_deref()).await?;
    session(&state, user, 0, &crate::util::random_hex(16), &device, StatusCode::CREATED).await
}

/// `POST /login {email or username, password}` → 200. Unknown user and wrong password are the
/// same 401, in about the same time (a dummy hash is verified for unknown users).
pub async fn login(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    let body: LoginBody = json_body(&state, req, BODY_LIMIT).await?;
    if let Some(d) = &body.device_id {
        if !crate::identity::valid_device_id(d) {
            return Err(HttpError::BadRequest(crate::identity::DEVICE_ID_RULE.into()));
        }
    }
    let login = match (&body.email, &body.username) {
        (Some(e), _) => e.trim().to_lowercase(),
        (None, Some(u)) => u.trim().to_lowercase(),
        (None, None) => return Err(HttpError::BadRequest("email or username is required".into())),
    };
    // Per IP (spraying) and per account (guessing), before any hashing work.
    limit_auth(&state, peer, &login)?;
    let found = state.store.credentials_by_login(&login).await?;
    let ok = state.hasher.verify(body.password, found.as_ref().map(|c| c.password_hash.clone())).await;
    match found {
        Some(c) if ok => {
            let device = bind_device(&state, &c.user.id, body.device_id.as_deref()).await?;
            session(&state, c.user, c.token_gen, &crate::util::random_hex(16), &device, StatusCode::OK).await
        }
        _ => Err(HttpError::InvalidCredentials),
    }
}

/// `POST /token/refresh {refresh_token}` → a new pair; a rotated token presented again revokes
/// that whole login.
pub async fn refresh(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    let body: RefreshBody = json_body(&state, req, BODY_LIMIT).await?;
    match state.store.redeem_refresh(&body.refresh_token).await? {
        Redeemed::Valid { user_id, family, device_id } => {
            let c = state.store.credentials_by_id(&user_id).await?.ok_or(HttpError::InvalidCredentials)?;
            // A revoked device's refresh tokens are revoked in the store too; this also covers
            // the moment between the two writes.
            if device_id.as_deref().is_some_and(|d| state.registry.is_revoked(&user_id, d)) {
                return Err(HttpError::InvalidCredentials);
            }
            // Logins from before device binding get a device now.
            let device = match device_id {
                Some(d) => d,
                None => bind_device(&state, &user_id, None).await?,
            };
            session(&state, c.user, c.token_gen, &family, &device, StatusCode::OK).await
        }
        Redeemed::Reused => {
            tracing::warn!("a rotated refresh token was presented again; its login was revoked");
            Err(HttpError::InvalidCredentials)
        }
        Redeemed::Invalid => Err(HttpError::InvalidCredentials),
    }
}

/// `POST /logout {refresh_token}` → 200 (also for unknown tokens: nothing to reveal).
pub async fn logout(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    let body: RefreshBody = json_body(&state, req, BODY_LIMIT).await?;
    state.store.revoke_by_token(&body.refresh_token).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true})))
}

/// `POST /change-password {current_password, new_password}` with `Authorization: Bearer
/// <access token>` → 200 with new tokens for the calling device (the JSON of `/login`). Every
/// earlier access and refresh token of the user stops working on every instance, and
/// connections opened with them close with 4003.
pub async fn change_password(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    let claims = super::authenticate(&state, &req).await?;
    let body: ChangePasswordBody = json_body(&state, req, BODY_LIMIT).await?;
    check_password(&body.new_password)?;
    let creds = state.store.credentials_by_id(&claims.user_id).await?.ok_or(HttpError::InvalidCredentials)?;
    if !state.hasher.verify(body.current_password, Some(creds.password_hash)).await {
        return Err(HttpError::InvalidCredentials);
    }
    let gen = replace_password(&state, &claims.user_id, body.new_password).await?;
    let device = bind_device(&state, &claims.user_id, claims.device_id.as_deref()).await?;
    session(&state, creds.user, gen, &crate::util::random_hex(16), &device, StatusCode::OK).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email("  Alice@Example.COM ").as_deref(), Some("alice@example.com"));
        for bad in ["", "alice", "@x.com", "a@b", "a@.com", "a@com.", "a b@x.com", "a@b@c.com"] {
            assert!(normalize_email(bad).is_none(), "{bad}");
        }
        assert!(valid_username("alice_1"));
        assert!(!valid_username("al"));
        assert!(!valid_username("has space"));
    }
}

#[derive(Deserialize)]
struct ForgotBody {
    email: String,
}

#[derive(Deserialize)]
struct ResetBody {
    email: String,
    otp: String,
    new_password: String,
}

/// `POST /forgot-password {email}` → 202 whether or not the account exists. The code goes by
/// SMTP once configured; in the development set-up (generated key) it is written to the log
/// behind a clear marker; otherwise it is not delivered and a warning says so (never the code).
pub async fn forgot_password(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    let body: ForgotBody = json_body(&state, req, BODY_LIMIT).await?;
    let email = email_field(&body.email)?;
    limit_auth(&state, peer, &email)?;
    let deliverable = state.mailer.is_some() || state.verifier.development;
    if !deliverable {
        // No code is stored that nobody could receive (it could only be guessed).
        tracing::warn!("password reset requested but no delivery channel (SYNCGATE_SMTP_URL) is configured");
    }
    if let Some(c) = state.store.credentials_by_login(&email).await?.filter(|_| deliverable) {
        let code = crate::store::otps::new_code().ok_or(HttpError::Internal)?;
        state.store.put_otp(&c.user.id, &code).await?;
        match &state.mailer {
            Some(mailer) => {
                // Sent in the background: the answer (202) and its timing are the same either way.
                let mailer = mailer.clone();
                tokio::spawn(async move {
                    if let Err(e) = mailer.send_code(&email, &code).await {
                        tracing::warn!(error = %e, "reset code not delivered");
                    }
                });
            }
            None if state.verifier.development => {
                tracing::warn!("DEVELOPMENT OTP (no SMTP in the development set-up) for {email}: {code}");
            }
            None => {
                tracing::warn!("password reset requested but no delivery channel (SYNCGATE_SMTP_URL) is configured")
            }
        }
    }
    Ok(json_response(StatusCode::ACCEPTED, &serde_json::json!({"ok": true})))
}

/// `POST /reset-password {email, otp, new_password}` → 200; revokes every refresh token of the
/// user and closes their live connections (4003) on every instance. A wrong, expired or used
/// code is 401; five wrong tries burn the code.
pub async fn reset_password(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(&state)?;
    let body: ResetBody = json_body(&state, req, BODY_LIMIT).await?;
    let email = email_field(&body.email)?;
    check_password(&body.new_password)?;
    limit_auth(&state, peer, &email)?;
    let code = body.otp.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadRequest("otp must be 6 digits".into()));
    }
    let Some(c) = state.store.credentials_by_login(&email).await? else {
        return Err(HttpError::InvalidCredentials);
    };
    match state.store.check_otp(&c.user.id, code, state.config.accounts.otp_guesses_per_day).await? {
        crate::store::otps::OtpCheck::Valid => {}
        crate::store::otps::OtpCheck::Invalid => return Err(HttpError::InvalidCredentials),
        // Even the right code waits: the budget is what stops a walk of the 10^6 codes.
        crate::store::otps::OtpCheck::OverBudget => return Err(HttpError::TooManyAttempts),
    }
    replace_password(&state, &c.user.id, body.new_password).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({"ok": true})))
}

/// The response of `POST /login` for a login checked earlier (the login page's code redeemed at
/// `POST /login-client/token`): tokens in `family`, bound to `device` if given, else to a new
/// device.
pub async fn issue_login(
    state: &AppState,
    user_id: &str,
    family: &str,
    device: Option<&str>,
) -> Result<Response<Full<Bytes>>, HttpError> {
    enabled(state)?;
    let c = state.store.credentials_by_id(user_id).await?.ok_or(HttpError::InvalidGrant)?;
    let device = bind_device(state, user_id, device).await?;
    session(state, c.user, c.token_gen, family, &device, StatusCode::OK).await
}
