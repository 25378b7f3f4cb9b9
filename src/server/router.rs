//! Routes: `GET /ws` (through admission, then the upgrade), `GET /health`; JSON 404
//! for anything else. The admin listener serves a subset ([`ADMIN_PATHS`]) with the same rules.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::AppState;
use crate::admission;
use crate::api::accounts;
use crate::error::HttpError;

/// Counts a refused upgrade by result (and auth failures by reason).
fn count_refusal(state: &AppState, e: &HttpError) {
    use crate::metrics::{AuthFailure, ConnectResult as R};
    let m = &state.metrics;
    match e {
        HttpError::Unauthorized(a) => {
            m.connects.inc(R::Unauthorized);
            m.auth_failures.inc(match a {
                crate::auth::AuthError::Expired => AuthFailure::Expired,
                _ => AuthFailure::Invalid,
            });
        }
        HttpError::Forbidden(_) => m.connects.inc(R::Origin),
        HttpError::RateLimited => m.connects.inc(R::RateLimited),
        HttpError::TooManyConnections => m.connects.inc(R::OverCap),
        HttpError::Overloaded | HttpError::Unavailable => m.connects.inc(R::Shed),
        _ => m.connects.inc(R::BadRequest),
    }
}

/// `GET /ready`: 200 while serving; 503 while shutting down or while the bus is down.
fn ready(state: &AppState) -> Response<Full<Bytes>> {
    let stopping = *state.shutdown.borrow() || state.draining.load(std::sync::atomic::Ordering::Relaxed);
    let bus = state.bus.state();
    let ok = state.ready();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    crate::error::json_response(status, &serde_json::json!({"ready": ok, "bus": bus, "draining": stopping}))
}

/// What `SYNCGATE_ADMIN_LISTEN` serves (health checks and scrapes); anything else is a 404 there.
pub const ADMIN_PATHS: &[&str] = &["/health", "/ready", "/metrics", "/api/status"];

/// The admin listener: the same handlers (and the same API-key rule on `/api/status`) for
/// [`ADMIN_PATHS`] only.
pub async fn route_admin(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::OPTIONS || !ADMIN_PATHS.contains(&req.uri().path()) {
        return Ok(HttpError::NotFound.into_response());
    }
    route(state, peer, req).await
}

/// The main listener: CORS preflight, the echo endpoint when configured, then one handler per
/// area (the gateway itself, accounts, the `/api/` resources); CORS headers on every answer to
/// an allowed origin.
pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // CORS for browser clients of the HTTP API: only origins in SYNCGATE_ALLOWED_ORIGINS.
    let origin = req
        .headers()
        .get(http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| state.config.origin_allowed(o))
        .map(|o| o.to_string());
    if req.method() == Method::OPTIONS {
        return Ok(preflight(origin.as_deref()));
    }
    if let Some(echo) = &state.config.listener.echo_path {
        if req.uri().path() == echo {
            return Ok(match *req.method() {
                Method::GET => {
                    crate::ws::upgrade_echo(state.clone(), req, peer).unwrap_or_else(HttpError::into_response)
                }
                _ => HttpError::MethodNotAllowed.into_response(),
            });
        }
    }
    let path = req.uri().path();
    let mut resp = if path.starts_with("/api/") {
        api_routes(state, peer, req).await
    } else if matches!(path, "/ws" | "/health" | "/ready" | "/metrics") {
        gateway_routes(state, peer, req).await
    } else {
        account_routes(state, peer, req).await
    };
    if let Some(o) = &origin {
        cors(&mut resp, o);
    }
    Ok(resp)
}

/// Paths that answer 405 to another method; any other unknown (method, path) is a 404.
const METHOD_NOT_ALLOWED_PATHS: &[&str] =
    &["/ws", "/health", "/ready", "/api/publish", "/api/disconnect", "/api/status", "/api/server-key", "/metrics"];

/// The answer when no handler takes (method, `path`): 405 or 404.
fn unrouted(path: &str) -> Response<Full<Bytes>> {
    if METHOD_NOT_ALLOWED_PATHS.contains(&path) {
        HttpError::MethodNotAllowed.into_response()
    } else {
        HttpError::NotFound.into_response()
    }
}

/// `OPTIONS` (CORS preflight): 204 with the allowed methods and headers for an allowed origin,
/// 403 otherwise.
fn preflight(origin: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = if origin.is_some() { StatusCode::NO_CONTENT } else { StatusCode::FORBIDDEN };
    if let Some(o) = origin {
        cors(&mut r, o);
        let h = r.headers_mut();
        h.insert("access-control-allow-methods", http::HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"));
        h.insert("access-control-allow-headers", http::HeaderValue::from_static("authorization, content-type"));
        h.insert("access-control-max-age", http::HeaderValue::from_static("600"));
    }
    r
}

/// The gateway itself: the WebSocket upgrade (through admission), health, readiness, metrics.
async fn gateway_routes(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") => {
            let result = match admission::admit(&state, peer, &req).await {
                Ok(admitted) => crate::ws::upgrade(state.clone(), req, admitted),
                Err(e) => Err(e),
            };
            result.unwrap_or_else(|e| {
                count_refusal(&state, &e);
                e.into_response()
            })
        }
        (&Method::GET | &Method::HEAD, "/health") => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"OK")));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
            r
        }
        (&Method::GET | &Method::HEAD, "/ready") => ready(&state),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(state.render_metrics())));
            r.headers_mut()
                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        (_, path) => unrouted(path),
    }
}

/// Accounts: register, log in (JSON and the login page), tokens, passwords.
async fn account_routes(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let ip = peer.ip();
    let result = match (req.method(), req.uri().path()) {
        (&Method::POST, "/register") => accounts::register(state, req, ip).await,
        (&Method::POST, "/login") => accounts::login(state, req, ip).await,
        (&Method::POST, "/token/refresh") => accounts::refresh(state, req).await,
        (&Method::POST, "/logout") => accounts::logout(state, req).await,
        (&Method::POST, "/change-password") => accounts::change_password(state, req).await,
        (&Method::POST, "/forgot-password") => accounts::forgot_password(state, req, ip).await,
        (&Method::POST, "/reset-password") => accounts::reset_password(state, req, ip).await,
        (&Method::GET, "/login-client") => return crate::api::login_page::show(&state, &req),
        (&Method::POST, "/login-client") => return crate::api::login_page::submit(state.clone(), req, ip).await,
        (&Method::POST, "/login-client/token") => crate::api::login_page::token(state, req, ip).await,
        (_, path) => return unrouted(path),
    };
    result.unwrap_or_else(HttpError::into_response)
}

/// The `/api/` resources: users, history, devices, pairing, the server API (API key), the OpenAPI document.
async fn api_routes(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use crate::api::{devices, history, pairing, server_api};
    let result = match (req.method(), req.uri().path()) {
        (&Method::GET, "/api/openapi.json") => {
            return crate::error::json_response(StatusCode::OK, &crate::api::openapi::document())
        }
        (&Method::POST, "/api/publish") => server_api::publish(state, req).await,
        (&Method::GET, "/api/presence") => server_api::presence(state, req).await,
        (&Method::GET, "/api/channels") => server_api::channels(state, req).await,
        (&Method::GET, "/api/status") => server_api::status(state, req).await,
        (&Method::GET, "/api/server-key") => Ok(server_api::server_key(&state)),
        (&Method::POST, "/api/disconnect") => server_api::disconnect(state, req).await,
        (&Method::GET, "/api/users/search") => devices::search_users(state, req).await,
        (&Method::GET, "/api/history") => history::history(state, req).await,
        (&Method::GET, "/api/conversation") => history::conversation(state, req).await,
        (&Method::GET, "/api/conversations") => history::conversations(state, req).await,
        (&Method::GET, "/api/devices") => devices::list(state, req).await,
        (&Method::POST, "/api/pairing") => pairing::create(state, req).await,
        (&Method::POST, "/api/pairing/claim") => pairing::claim(state, req, peer.ip()).await,
        (&Method::PUT, p)
            if p.starts_with("/api/devices/") && p.ends_with("/key") && p.len() > "/api/devices//key".len() =>
        {
            let id = p["/api/devices/".len()..p.len() - "/key".len()].to_string();
            devices::set_key(state, req, &id).await
        }
        (&Method::DELETE, p) if p.starts_with("/api/devices/") && p.len() > "/api/devices/".len() => {
            let id = p["/api/devices/".len()..].to_string();
            devices::revoke(state, req, &id).await
        }
        (_, path) => return unrouted(path),
    };
    result.unwrap_or_else(HttpError::into_response)
}

fn cors(r: &mut Response<Full<Bytes>>, origin: &str) {
    if let Ok(v) = http::HeaderValue::from_str(origin) {
        let h = r.headers_mut();
        h.insert("access-control-allow-origin", v);
        h.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
}
