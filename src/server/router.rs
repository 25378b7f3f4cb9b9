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
    use crate::metrics::ConnectResult as R;
    let m = &state.metrics;
    match e {
        HttpError::Unauthorized(a) => {
            m.connect(R::Unauthorized);
            m.auth_failure(match a {
                crate::auth::AuthError::Expired => "expired",
                _ => "invalid",
            });
        }
        HttpError::Forbidden(_) => m.connect(R::Origin),
        HttpError::RateLimited => m.connect(R::RateLimited),
        HttpError::TooManyConnections => m.connect(R::OverCap),
        HttpError::Overloaded | HttpError::Unavailable => m.connect(R::Shed),
        _ => m.connect(R::BadRequest),
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
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = if origin.is_some() { StatusCode::NO_CONTENT } else { StatusCode::FORBIDDEN };
        if let Some(o) = &origin {
            cors(&mut r, o);
            let h = r.headers_mut();
            h.insert("access-control-allow-methods", http::HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
            h.insert("access-control-allow-headers", http::HeaderValue::from_static("authorization, content-type"));
            h.insert("access-control-max-age", http::HeaderValue::from_static("600"));
        }
        return Ok(r);
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
    let mut resp = match (req.method(), req.uri().path()) {
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
        (&Method::POST, "/api/publish") => {
            crate::api::server_api::publish(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::POST, "/register") => {
            accounts::register(state, req, peer.ip()).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::POST, "/login") => {
            accounts::login(state, req, peer.ip()).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::POST, "/token/refresh") => {
            accounts::refresh(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::POST, "/logout") => accounts::logout(state, req).await.unwrap_or_else(HttpError::into_response),
        (&Method::POST, "/change-password") => {
            accounts::change_password(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/login-client") => crate::api::login_page::show(&state, &req),
        (&Method::POST, "/login-client") => crate::api::login_page::submit(state.clone(), req, peer.ip()).await,
        (&Method::POST, "/login-client/token") => {
            crate::api::login_page::token(state, req, peer.ip()).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/openapi.json") => {
            crate::error::json_response(StatusCode::OK, &crate::api::openapi::document())
        }
        (&Method::POST, "/forgot-password") => {
            accounts::forgot_password(state, req, peer.ip()).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::POST, "/reset-password") => {
            accounts::reset_password(state, req, peer.ip()).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/users/search") => {
            crate::api::devices::search_users(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/history") => {
            crate::api::history::history(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/conversation") => {
            crate::api::history::conversation(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/conversations") => {
            crate::api::history::conversations(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/devices") => {
            crate::api::devices::list(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::DELETE, p) if p.starts_with("/api/devices/") && p.len() > "/api/devices/".len() => {
            let id = p["/api/devices/".len()..].to_string();
            crate::api::devices::revoke(state, req, &id).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::GET, "/api/status") => {
            crate::api::server_api::status(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (&Method::POST, "/api/disconnect") => {
            crate::api::server_api::disconnect(state, req).await.unwrap_or_else(HttpError::into_response)
        }
        (_, "/ws" | "/health" | "/ready" | "/api/publish" | "/api/disconnect" | "/api/status" | "/metrics") => {
            HttpError::MethodNotAllowed.into_response()
        }
        _ => HttpError::NotFound.into_response(),
    };
    if let Some(o) = &origin {
        cors(&mut resp, o);
    }
    Ok(resp)
}

fn cors(r: &mut Response<Full<Bytes>>, origin: &str) {
    if let Ok(v) = http::HeaderValue::from_str(origin) {
        let h = r.headers_mut();
        h.insert("access-control-allow-origin", v);
        h.insert(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
}
