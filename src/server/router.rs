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
        (_, "/ws" | "/health") => HttpError::MethodNotAllowed.into_response(),
        _ => HttpError::NotFound.into_response(),
    };
    Ok(resp)
}
