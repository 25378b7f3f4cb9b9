//! Routes: `GET /ws` (through the middleware chain, then the upgrade), `GET /health`; JSON 404
//! for anything else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{middleware, AppState};
use crate::error::HttpError;

/// `GET /ready`: 200 while serving; 503 while shutting down or while the bus is down.
fn ready(state: &AppState) -> Response<Full<Bytes>> {
    let stopping = *state.shutdown.borrow();
    let bus = state.bus.state();
    let ok = !stopping && state.bus.healthy();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    crate::error::json_response(
        status,
        &serde_json::json!({"ready": ok, "bus": bus, "draining": stopping}),
    )
}

pub async fn route(
    state: Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ws") => match middleware::admit(&state, peer, &req).await {
            Ok(admitted) => {
                crate::ws::upgrade(state, req, admitted).unwrap_or_else(HttpError::into_response)
            }
            Err(e) => e.into_response(),
        },
        (&Method::GET | &Method::HEAD, "/health") => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"OK")));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            r
        }
        (&Method::GET | &Method::HEAD, "/ready") => ready(&state),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render(&state))));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::POST, "/api/publish") => crate::api::server_api::publish(state, req)
            .await
            .unwrap_or_else(HttpError::into_response),
        (&Method::POST, "/api/disconnect") => crate::api::server_api::disconnect(state, req)
            .await
            .unwrap_or_else(HttpError::into_response),
        (_, "/ws" | "/health" | "/ready" | "/api/publish" | "/api/disconnect") => {
            HttpError::MethodNotAllowed.into_response()
        }
        _ => HttpError::NotFound.into_response(),
    };
    Ok(resp)
}
