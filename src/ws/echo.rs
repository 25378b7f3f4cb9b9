//! `SYNCGATE_ECHO_PATH`: an unauthenticated diagnostic endpoint that echoes every text and binary
//! frame. It runs on exactly the `/ws` stack — the same upgrade, WebSocket configuration (frame
//! and message limits), bounded writes and lingering close — so a conformance run against it
//! (Autobahn|Testsuite, `scripts/autobahn.sh`) measures `/ws` itself. Only the per-connection
//! message rate limit does not apply. Off by default.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::io;
use crate::admission::AdmitGuard;
use crate::app::AppState;
use crate::error::CloseReason;

/// Echoes until the peer closes, a frame breaks a limit or the protocol, or the server stops.
pub async fn run(state: Arc<AppState>, on_upgrade: OnUpgrade, _place: AdmitGuard, _alive: mpsc::Sender<()>) {
    let Ok(upgraded) = on_upgrade.await else { return };
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(state.ws_config)).await;
    let mut shutdown = state.shutdown.clone();
    let reason = loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = crate::shutdown::stopping(&mut shutdown) => break Some(CloseReason::GoingAway),
        };
        let reply = match msg {
            None => break None,
            Some(Err(e)) => break io::classify(&e),
            Some(Ok(Message::Close(_))) => break Some(CloseReason::Normal),
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => Some(m),
            // Pongs to pings are queued by the WebSocket layer; the flush below sends them.
            Some(Ok(_)) => None,
        };
        if let Some(m) = reply {
            if let Err(r) = io::timed(&state, None, ws.feed(m)).await {
                break r;
            }
        }
        if let Err(r) = io::timed(&state, None, ws.flush()).await {
            break r;
        }
    };
    if let Some(r) = reason {
        io::close(&state, &mut ws, r, None).await;
    }
}
