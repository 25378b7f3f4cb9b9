//! Prometheus text for `GET /metrics`: lock-free counters read at scrape time.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::server::AppState;

pub fn render(state: &AppState) -> String {
    let mut out = String::with_capacity(2048);
    let s = &state.stats;
    let _ = write!(
        out,
        "# HELP syncgate_connections Open WebSocket connections.\n# TYPE syncgate_connections gauge\nsyncgate_connections {}\n\
         # HELP syncgate_deliveries_total Frames handed to recipients' queues.\n# TYPE syncgate_deliveries_total counter\nsyncgate_deliveries_total {}\n\
         # HELP syncgate_slow_consumer_disconnects_total Connections closed with 1013.\n# TYPE syncgate_slow_consumer_disconnects_total counter\nsyncgate_slow_consumer_disconnects_total {}\n\
         # HELP syncgate_ready 1 while /ready answers 200.\n# TYPE syncgate_ready gauge\nsyncgate_ready {}\n",
        s.open_connections.load(Ordering::Relaxed),
        state.registry.deliveries(),
        s.slow_consumer_closes.load(Ordering::Relaxed),
        u8::from(!*state.shutdown.borrow() && state.bus.healthy()),
    );
    state.bus.metrics(&mut out);
    out
}
