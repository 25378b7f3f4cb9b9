//! Accept loop, routing and two-step shutdown: `run(listener, config, shutdown)` is the
//! injectable entry point used by `main` and by the tests. The state it serves, and the
//! background tasks it stops on return, are built by [`crate::app`].

pub mod proxy;
mod router;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

pub use crate::app::{AppState, StartError};
use crate::config::{Config, ProxyProtocol};

pub use crate::routes::ROUTES;

/// Binds the listening socket with `SO_REUSEADDR` and the configured backlog (the kernel caps it
/// at `net.core.somaxconn`; a short backlog drops SYNs during connect storms).
pub fn bind(config: &Config) -> std::io::Result<TcpListener> {
    let socket = if config.listener.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if config.listener.reuseport {
        // Several processes share the port; the kernel spreads new connections between them.
        socket.set_reuseport(true)?;
    }
    socket.bind(config.listener.listen)?;
    socket.listen(config.listener.listen_backlog)
}

/// Which listener a connection came in on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// Every route; the PROXY header `SYNCGATE_PROXY_PROTOCOL` asks for.
    Main,
    /// `SYNCGATE_ADMIN_LISTEN`: health, readiness, metrics and status only; no PROXY header.
    Admin,
}

async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves `listener` until `shutdown` resolves, then closes every connection with 1001 and waits
/// (at most `SYNCGATE_SHUTDOWN_TIMEOUT_MS`) for them to finish. With `SYNCGATE_ADMIN_LISTEN` a
/// second listener is bound here and served until the same moment.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let admin = match config.listener.admin_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, alive_rx) = mpsc::channel::<()>(1);
    let (state, background) = AppState::build(config, shutdown_rx, alive_tx).await?;
    announce(&state, &listener, admin.as_ref())?;
    accept_until_drained(&state, &listener, admin.as_ref(), shutdown).await;
    drop(listener);
    drop(admin);
    let _ = shutdown_tx.send(true);
    close_all(&state).await;
    stop(state, background, alive_rx).await;
    Ok(())
}

/// Start-up log lines: the listeners, and warnings about settings that open or change things.
fn announce(state: &AppState, listener: &TcpListener, admin: Option<&TcpListener>) -> std::io::Result<()> {
    if let Some(path) = &state.config.listener.echo_path {
        tracing::warn!(
            %path,
            "SYNCGATE_ECHO_PATH is set: an unauthenticated echo endpoint is open (for conformance runs only)"
        );
    }
    tracing::info!(addr = %listener.local_addr()?, proxy_protocol = ?state.config.listener.proxy_protocol, "syncgate listening");
    if let Some(a) = admin {
        tracing::info!(admin_addr = %a.local_addr()?, "admin listener: /health /ready /metrics /api/status");
    } else if state.config.listener.proxy_protocol != ProxyProtocol::Off {
        tracing::warn!(
            "SYNCGATE_PROXY_PROTOCOL is set and SYNCGATE_ADMIN_LISTEN is not: health checks must send the PROXY header too"
        );
    }
    Ok(())
}

/// The accept loop over both listeners. The first `shutdown` signal starts the drain: `/ready`
/// answers 503 at once while connections are still served (and accepted) until the load
/// balancer has noticed, `SYNCGATE_DRAIN_DELAY_MS` later; then it returns.
async fn accept_until_drained(
    state: &Arc<AppState>,
    listener: &TcpListener,
    admin: Option<&TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(5);
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let drained = async {
            match drain_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown, if drain_until.is_none() => {
                state.draining.store(true, Ordering::Relaxed);
                tracing::info!(delay_ms = state.config.listener.drain_delay.as_millis() as u64, "draining: /ready is 503");
                drain_until = Some(tokio::time::Instant::now() + state.config.listener.drain_delay);
            }
            _ = drained => break,
            accepted = listener.accept() => accepted_on(state, accepted, Listener::Main, &mut backoff).await,
            accepted = accept_on(admin) => accepted_on(state, accepted, Listener::Admin, &mut backoff).await,
        }
    }
}

/// One `accept` result: a connection task, or (EMFILE and friends) a growing back-off instead of
/// spinning; accepting never stops.
async fn accepted_on(
    state: &Arc<AppState>,
    accepted: std::io::Result<(TcpStream, SocketAddr)>,
    on: Listener,
    backoff: &mut Duration,
) {
    match accepted {
        Ok((stream, peer)) => {
            *backoff = Duration::from_millis(5);
            if on == Listener::Main {
                let _ = stream.set_nodelay(true);
            }
            spawn_connection(state.clone(), stream, peer, on);
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(*backoff).await;
            *backoff = (*backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Closes every connection with 1001, spread over `SYNCGATE_DRAIN_SPREAD_MS` so clients do not
/// reconnect all at once.
async fn close_all(state: &AppState) {
    let conns = state.registry.all_conns();
    let spread = state.config.listener.drain_spread;
    tracing::info!(connections = conns.len(), spread_ms = spread.as_millis() as u64, "closing connections with 1001");
    let start = tokio::time::Instant::now();
    let n = conns.len().max(1) as u32;
    for (i, c) in conns.iter().enumerate() {
        if !spread.is_zero() {
            tokio::time::sleep_until(start + spread * i as u32 / n).await;
        }
        c.close(crate::error::CloseReason::GoingAway);
    }
    drop(conns);
    // Connections that registered meanwhile see the flag in their open phase; sweep once more.
    state.registry.close_all(crate::error::CloseReason::GoingAway);
}

/// Writes the acknowledged read positions, stops the background tasks and the bus, then waits
/// (at most `SYNCGATE_SHUTDOWN_TIMEOUT_MS`) until every connection task has dropped its guard.
async fn stop(state: Arc<AppState>, background: Vec<tokio::task::JoinHandle<()>>, mut alive_rx: mpsc::Receiver<()>) {
    let timeout = state.config.listener.shutdown_timeout;
    // Read positions acknowledged so far are written before the background tasks stop.
    state.durable.flush_positions().await;
    // Leave the cluster now, while the background tasks still run: the other instances announce
    // the leaves at once and the webhooks report the departures (given a moment to send them).
    if tokio::time::timeout(Duration::from_secs(3), state.bus.leave()).await.is_err() {
        tracing::warn!(
            "leaving the cluster timed out; the other instances reap this one after SYNCGATE_PRESENCE_TTL_MS"
        );
    }
    if state.config.webhooks.url.is_some() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while state.metrics.webhooks.queue.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for task in background {
        task.abort();
    }
    // Then the bus's own tasks: a stopped server neither heartbeats nor receives.
    state.bus.stop();
    let alive = state.alive.clone();
    drop(state);
    drop(alive);
    if tokio::time::timeout(timeout, alive_rx.recv()).await.is_err() {
        tracing::warn!("shutdown timeout reached with connections still open");
    }
}

/// One accepted socket's task: the PROXY header first when the main listener expects one (a
/// missing or malformed header closes the connection, counted), then HTTP with the client address
/// it carried as the peer.
fn spawn_connection(state: Arc<AppState>, stream: TcpStream, peer: SocketAddr, on: Listener) {
    tokio::spawn(async move {
        let alive = state.alive.clone();
        let mode = state.config.listener.proxy_protocol;
        if on == Listener::Admin || mode == ProxyProtocol::Off {
            serve_connection(&state, stream, peer, on).await;
        } else {
            let mut shutdown = state.shutdown.clone();
            let mut stream = stream;
            let header = tokio::select! {
                h = tokio::time::timeout(state.config.listener.handshake_timeout, proxy::read_header(&mut stream, mode)) => {
                    h.unwrap_or(Err(proxy::ProxyError::Timeout))
                }
                _ = crate::shutdown::stopping(&mut shutdown) => return,
            };
            match header {
                Ok((rest, source)) => {
                    serve_connection(&state, proxy::Proxied::new(rest, stream), source.unwrap_or(peer), on).await
                }
                // Connect-and-close (a TCP health check) sent no header to refuse.
                Err(proxy::ProxyError::Empty) => {}
                Err(e) => {
                    state.metrics.proxy_header_rejected.inc();
                    tracing::debug!(%peer, error = %e, "PROXY header refused; connection closed");
                }
            }
        }
        drop(alive);
    });
}

async fn serve_connection<I>(state: &Arc<AppState>, io: I, peer: SocketAddr, on: Listener)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = state.shutdown.clone();
    let handshake_timeout = state.config.listener.handshake_timeout;
    let svc_state = state.clone();
    let service = service_fn(move |req| {
        let state = svc_state.clone();
        async move {
            match on {
                Listener::Main => router::route(state, peer, req).await,
                Listener::Admin => router::route_admin(state, peer, req).await,
            }
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .keep_alive(true)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                if e.is_timeout() {
                    // Slowloris: the request head did not arrive within the handshake timeout.
                    state.metrics.handshake_timeouts.inc();
                }
                tracing::debug!(%peer, error = %e, "http connection error");
            }
        }
        _ = crate::shutdown::stopping(&mut shutdown) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
