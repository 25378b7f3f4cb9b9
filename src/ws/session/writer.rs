//! The one write path: swap the connection's queue out, feed every frame, flush once. It never
//! waits on a request: a pending request runs beside the loop, and its reply comes through the
//! queue like every other frame.

use std::collections::VecDeque;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use super::Session;
use crate::app::AppState;
use crate::error::CloseReason;
use crate::metrics::FrameOut;
use crate::registry::ConnHandle;
use crate::ws::io::{self, Ws};

/// Writes everything queued until the queue stays empty (frames queued while flushing are
/// written in the next round): each frame fed and each flush bounded by the write timeout.
/// `Err(Some(r))`: close with `r`; `Err(None)`: the socket failed.
pub(super) async fn drain(
    state: &AppState,
    s: &mut Session<'_>,
    ws: &mut Ws,
    conn: &ConnHandle,
    spare: &mut VecDeque<Message>,
) -> Result<(), Option<CloseReason>> {
    loop {
        if let Some(r) = conn.take(spare) {
            return Err(Some(r));
        }
        if spare.is_empty() {
            return Ok(());
        }
        for m in spare.drain(..) {
            // Durable events: never twice, and in order on tracked channels.
            if !crate::ws::streams::admit(&mut s.streams, &m) {
                continue;
            }
            let kind = match &m {
                Message::Text(_) => FrameOut::Text,
                Message::Binary(_) => FrameOut::Binary,
                Message::Ping(_) => FrameOut::Ping,
                _ => FrameOut::Other,
            };
            state.metrics.frames_out.inc(kind);
            state.metrics.bytes_out.add(m.len() as u64);
            // A stalled feed still notices a close request (slow consumer, kick).
            io::timed(state, Some(conn), ws.feed(m)).await?;
        }
        conn.written();
        io::timed(state, Some(conn), ws.flush()).await?;
        if let Some(st) = s.streams.as_deref_mut() {
            st.push_backlog(conn);
        }
    }
}
