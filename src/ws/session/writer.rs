//! The one write path: swap the connection's queue out, write every frame, flush once. It never
//! waits on a request: a pending request runs beside the loop, and its reply comes through the
//! queue like every other frame.
//!
//! Text frames — nearly everything a connection is sent — bypass tungstenite's write buffer: a
//! server frame is unmasked, so its 2–10 byte header depends on the payload length alone. Each
//! header is built on the stack and written with the payload `Bytes` that every recipient shares
//! in one vectored write per run of up to [`BATCH`] frames; the payload is never copied into a
//! per-connection buffer, and an idle connection keeps no write buffer. Control frames (pings)
//! still go through tungstenite, whose buffer is flushed before any raw write, so the bytes on the
//! wire stay in order.

use std::collections::VecDeque;
use std::io::IoSlice;

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

use super::Session;
use crate::app::AppState;
use crate::error::CloseReason;
use crate::metrics::FrameOut;
use crate::protocol::text_frame_header as text_header;
use crate::registry::ConnHandle;
use crate::ws::io::{self, Ws};

/// Most text frames one vectored write carries (two slices each: header and payload).
const BATCH: usize = 32;

/// Writes the text frames `frames` (at most [`BATCH`], all `Message::Text`) straight to the
/// socket: headers on the stack, payloads shared, one vectored write (more only when the socket
/// takes a part). `written` counts the bytes the socket took, for [`torn_rest`].
async fn write_texts<'m>(
    ws: &mut Ws,
    frames: impl ExactSizeIterator<Item = &'m Message>,
    written: &mut usize,
) -> Result<(), WsError> {
    let count = frames.len().min(BATCH);
    let mut headers = [[0u8; 10]; BATCH];
    let mut lens = [0u8; BATCH];
    let mut payloads = [&[][..]; BATCH];
    for (i, m) in frames.take(count).enumerate() {
        if let Message::Text(t) = m {
            payloads[i] = t.as_bytes();
        }
        lens[i] = text_header(payloads[i].len(), &mut headers[i]) as u8;
    }
    let mut slices = [IoSlice::new(&[]); 2 * BATCH];
    for (i, pair) in slices.chunks_exact_mut(2).take(count).enumerate() {
        pair[0] = IoSlice::new(&headers[i][..usize::from(lens[i])]);
        pair[1] = IoSlice::new(payloads[i]);
    }
    let mut left = &mut slices[..2 * count];
    let io = ws.get_mut();
    while !left.is_empty() {
        let n = io.write_vectored(left).await?;
        if n == 0 {
            return Err(WsError::Io(std::io::ErrorKind::WriteZero.into()));
        }
        *written += n;
        IoSlice::advance_slices(&mut left, n);
    }
    Ok(())
}

/// A raw write stopped (timeout, close request) after `written` bytes of `frames`: when that is
/// inside a frame, the rest of that one frame, which must reach the socket before the close frame
/// so that the close lands on a frame boundary ([`io::close`] writes it first).
fn torn_rest<'m>(frames: impl Iterator<Item = &'m Message>, mut written: usize) -> Option<Vec<u8>> {
    for m in frames {
        let Message::Text(t) = m else { continue };
        let mut header = [0u8; 10];
        let hlen = text_header(t.len(), &mut header);
        if written >= hlen + t.len() {
            written -= hlen + t.len();
            continue;
        }
        if written == 0 {
            return None;
        }
        let mut rest = Vec::with_capacity(hlen + t.len() - written);
        if written < hlen {
            rest.extend_from_slice(&header[written..hlen]);
        }
        rest.extend_from_slice(&t.as_bytes()[written.saturating_sub(hlen)..]);
        return Some(rest);
    }
    None
}

/// Why [`drain`] stopped: the close reason (`None`: the socket failed) and the rest of a frame
/// cut short, to be written before the close frame.
pub(super) type Stop = (Option<CloseReason>, Option<Vec<u8>>);

/// One run of text frames, `spare[start..end]`, under the write timeout.
async fn send_run(
    state: &AppState,
    conn: &ConnHandle,
    ws: &mut Ws,
    spare: &VecDeque<Message>,
    start: usize,
    end: usize,
) -> Result<(), Stop> {
    let mut written = 0;
    // A stalled write still notices a close request (slow consumer, kick).
    let r = io::timed(state, Some(conn), write_texts(ws, spare.range(start..end), &mut written)).await;
    r.map_err(|reason| (reason, reason.and_then(|_| torn_rest(spare.range(start..end), written))))
}

/// Writes everything queued until the queue stays empty (frames queued while flushing are
/// written in the next round): each write and each flush bounded by the write timeout.
/// `Err(Some(r))`: close with `r`; `Err(None)`: the socket failed.
pub(super) async fn drain(
    state: &AppState,
    s: &mut Session<'_>,
    ws: &mut Ws,
    conn: &ConnHandle,
    spare: &mut VecDeque<Message>,
) -> Result<(), Stop> {
    let plain = |r: Option<CloseReason>| (r, None);
    // Whatever tungstenite still holds (a pong it owes the peer) goes before any raw write.
    io::timed(state, Some(conn), ws.flush()).await.map_err(plain)?;
    loop {
        if let Some(r) = conn.take(spare) {
            return Err((Some(r), None));
        }
        if spare.is_empty() {
            return Ok(());
        }
        // Durable events: never twice, and in order on tracked channels.
        spare.retain(|m| crate::ws::streams::admit(&mut s.streams, m));
        // Runs of text frames go out raw, up to BATCH per write; anything else via tungstenite.
        let mut run: Option<usize> = None;
        for i in 0..spare.len() {
            let m = &spare[i];
            let kind = match m {
                Message::Text(_) => FrameOut::Text,
                Message::Binary(_) => FrameOut::Binary,
                Message::Ping(_) => FrameOut::Ping,
                _ => FrameOut::Other,
            };
            state.metrics.frames_out.inc(kind);
            state.metrics.bytes_out.add(m.len() as u64);
            if matches!(m, Message::Text(_)) {
                let start = *run.get_or_insert(i);
                if i + 1 - start == BATCH {
                    send_run(state, conn, ws, spare, start, i + 1).await?;
                    run = None;
                }
                continue;
            }
            if let Some(start) = run.take() {
                send_run(state, conn, ws, spare, start, i).await?;
            }
            io::timed(state, Some(conn), ws.feed(m.clone())).await.map_err(plain)?;
            io::timed(state, Some(conn), ws.flush()).await.map_err(plain)?;
        }
        if let Some(start) = run {
            send_run(state, conn, ws, spare, start, spare.len()).await?;
        }
        spare.clear();
        conn.written();
        io::timed(state, Some(conn), ws.flush()).await.map_err(plain)?;
        if let Some(st) = s.streams.as_deref_mut() {
            st.push_backlog(conn);
        }
    }
}
