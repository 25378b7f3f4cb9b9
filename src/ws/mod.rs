//! The WebSocket upgrade (RFC 6455 handshake on hyper) and the per-connection session.

mod echo;
mod io;
mod session;
mod streams;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::admission::Admitted;
use crate::app::AppState;
use crate::error::HttpError;

fn header_has_token(req: &Request<impl Sized>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The 101 response for a valid RFC 6455 upgrade request, and the future of the upgraded socket.
fn handshake<B>(req: &mut Request<B>) -> Result<(Response<Full<Bytes>>, hyper::upgrade::OnUpgrade), HttpError> {
    if !header_has_token(req, header::CONNECTION, "upgrade") || !header_has_token(req, header::UPGRADE, "websocket") {
        return Err(HttpError::BadRequest("expected a WebSocket upgrade".into()));
    }
    if req.headers().get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(HttpError::BadRequest("Sec-WebSocket-Version must be 13".into()));
    }
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| HttpError::BadRequest("missing Sec-WebSocket-Key".into()))?;
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|_| HttpError::BadRequest("bad key".into()))?,
    );
    Ok((resp, on_upgrade))
}

/// Answers 101 and hands the upgraded socket to a new session task.
pub fn upgrade<B: Send + 'static>(
    state: Arc<AppState>,
    mut req: Request<B>,
    admitted: Admitted,
) -> Result<Response<Full<Bytes>>, HttpError>
where
    Request<B>: Send,
{
    let (resp, on_upgrade) = handshake(&mut req)?;
    let alive = state.alive.clone();
    let task = session::run(state, on_upgrade, Box::new(admitted), alive);
    // The task's future is most of a connection's memory: log its size once.
    static SIZE_LOGGED: std::sync::Once = std::sync::Once::new();
    SIZE_LOGGED.call_once(|| tracing::debug!(bytes = std::mem::size_of_val(&task), "connection task state"));
    tokio::spawn(task);
    Ok(resp)
}

/// `SYNCGATE_ECHO_PATH`: the same handshake and stack as `/ws`, echoing frames (see `ws/echo.rs`).
/// The per-instance connection limit and the per-IP connect rate apply as on `/ws`.
pub fn upgrade_echo<B>(
    state: Arc<AppState>,
    mut req: Request<B>,
    peer: std::net::SocketAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    let place = crate::admission::admission(&state, peer)?;
    let (resp, on_upgrade) = handshake(&mut req)?;
    let alive = state.alive.clone();
    tokio::spawn(echo::run(state, on_upgrade, place, alive));
    Ok(resp)
}
