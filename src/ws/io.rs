//! Socket-level helpers shared by every WebSocket endpoint (`/ws` and the echo endpoint): writes
//! bounded by `SYNCGATE_WRITE_TIMEOUT_MS`, the error → close-code mapping, and the lingering
//! close that makes the close code reach the client even with its frames still in flight.

use std::future::Future;
use std::time::Duration;

use futures_util::SinkExt;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::app::AppState;
use crate::error::CloseReason;
use crate::protocol::{self, ErrorCode};
use crate::registry::ConnHandle;

pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Runs one write step (`feed` or `flush`) under the write timeout, still noticing a close
/// request (kick, shutdown, overflow) while the socket is stalled. `Err(None)`: the socket
/// failed; `Err(Some(r))`: close with `r` (1013 and counted when the socket accepted nothing
/// for the whole timeout).
pub(crate) async fn timed<F>(state: &AppState, conn: Option<&ConnHandle>, op: F) -> Result<(), Option<CloseReason>>
where
    F: Future<Output = Result<(), WsError>>,
{
    let watched = async {
        tokio::pin!(op);
        let Some(conn) = conn else {
            return op.await.map_err(|_| None);
        };
        loop {
            tokio::select! {
                biased;
                r = &mut op => return r.map_err(|_| None),
                _ = conn.notified() => if let Some(r) = conn.closing() {
                    return Err(Some(r));
                },
            }
        }
    };
    match tokio::time::timeout(state.config.limits.write_timeout, watched).await {
        Ok(r) => r,
        Err(_) => {
            state.metrics.write_timeouts.inc();
            state.metrics.slow_consumer_closes.inc();
            Err(Some(CloseReason::SlowConsumer))
        }
    }
}

/// The close code for a read error; `None` when the peer simply vanished (counted as 1006).
pub(crate) fn classify(e: &WsError) -> Option<CloseReason> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => Some(CloseReason::TooLarge),
        WsError::Capacity(_) => Some(CloseReason::TooLarge),
        WsError::Utf8(_) => Some(CloseReason::InvalidPayload),
        WsError::Protocol(_) => Some(CloseReason::Protocol),
        WsError::Io(_) | WsError::ConnectionClosed | WsError::AlreadyClosed => None,
        _ => Some(CloseReason::Protocol),
    }
}

/// Sends the close frame for `reason` (after an `error` frame for 1009), then closes lingering:
/// the write half is shut (FIN after the close frame) and everything the client still sends is
/// read and discarded until its close frame and EOF arrive or `SYNCGATE_CLOSE_LINGER_MS` passes.
/// Closing a socket with unread bytes would make the kernel send a reset, which can destroy the
/// close frame before the client reads it (RFC 6455 §7.1.1: the server closes the TCP
/// connection first, but only after the close handshake).
///
/// `torn`: the rest of a frame whose raw write was cut short (see `session::writer`); it goes
/// first, and when it cannot be written in time no close frame follows (it would land inside a
/// frame): the connection is only shut.
pub(crate) async fn close(state: &AppState, ws: &mut Ws, reason: CloseReason, torn: Option<Vec<u8>>) {
    let linger = state.config.limits.close_linger;
    let deadline = tokio::time::Instant::now() + linger.max(Duration::from_millis(100));
    if let Some(rest) = torn {
        if !matches!(tokio::time::timeout_at(deadline, ws.get_mut().write_all(&rest)).await, Ok(Ok(()))) {
            linger_close(ws, deadline).await;
            return;
        }
    }
    if reason == CloseReason::TooLarge {
        let m = Message::Text(protocol::error(ErrorCode::TooLarge, "message exceeds max_message_bytes", &None));
        let _ = tokio::time::timeout_at(deadline, ws.send(m)).await;
    }
    let frame = CloseFrame { code: CloseCode::from(reason.code()), reason: reason.reason().into() };
    // After the peer's close frame `close` fails (SendAfterClosing) and queues nothing: the
    // reply tungstenite queued on reading it (the peer's code echoed) goes out with this flush.
    let _ = tokio::time::timeout_at(deadline, ws.close(Some(frame))).await;
    let _ = tokio::time::timeout_at(deadline, ws.flush()).await;
    linger_close(ws, deadline).await;
}

/// After our close frame (or the reply to the client's): FIN, then drain until EOF or `deadline`.
pub(crate) async fn linger_close(ws: &mut Ws, deadline: tokio::time::Instant) {
    let io = ws.get_mut();
    if tokio::time::timeout_at(deadline, io.shutdown()).await.is_err() {
        return;
    }
    let mut buf = [0u8; 2048];
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => continue,
            _ => return,
        }
    }
}
