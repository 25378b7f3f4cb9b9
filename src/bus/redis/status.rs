//! What the Redis bus reports about itself and the cluster: the `/api/status` cluster view
//! (live instances with their connection counts, users with most connections), the bus
//! counters ([`BusStats`]) and their Prometheus series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use fred::prelude::*;

use super::RedisBus;
use crate::bus::Bus;

/// Bus counters (read by tests, benches and `/metrics`).
#[derive(Debug, Default)]
pub struct BusStats {
    pub messages: AtomicU64,
    pub publish_commands: AtomicU64,
    pub dropped: AtomicU64,
    pub received: AtomicU64,
    pub reconnects: AtomicU64,
    /// External publishes and control messages dropped as malformed or nested too deep.
    pub rejected: AtomicU64,
}

impl RedisBus {
    /// Cluster view for `/api/status`: the instances that heartbeated within half the presence
    /// TTL, with their connection counts, and the `top` users with most connections.
    pub(super) async fn cluster_status(&self, top: usize) -> serde_json::Value {
        let now = crate::util::now_millis();
        let alive_after = now.saturating_sub(self.settings.presence_ttl.as_millis() as u64 / 2) as f64;
        let alive: Vec<String> = self
            .client
            .zrangebyscore(self.key("instances"), alive_after, "+inf", false, None)
            .await
            .unwrap_or_default();
        let conns: HashMap<String, u64> = self.client.hgetall(self.key("conns")).await.unwrap_or_default();
        let mut users: Vec<(String, i64)> = self
            .client
            .hgetall::<HashMap<String, i64>, _>(self.key("uc"))
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        users.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        users.truncate(top);
        let instances: Vec<serde_json::Value> = alive
            .iter()
            .map(|i| serde_json::json!({"instance": i, "connections": conns.get(i).copied().unwrap_or(0), "self": *i == self.instance.to_string()}))
            .collect();
        serde_json::json!({
            "bus": self.state(),
            "instances": instances,
            "top_users": users.into_iter().map(|(u, n)| serde_json::json!({"user_id": u, "connections": n})).collect::<Vec<_>>(),
        })
    }

    /// Appends the bus's Prometheus series to `out`.
    pub(super) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# HELP syncgate_redis_up 1 while both Redis connections are up.\n# TYPE syncgate_redis_up gauge\nsyncgate_redis_up {}\n\
             # HELP syncgate_bus_messages_total Messages sent to Redis.\n# TYPE syncgate_bus_messages_total counter\nsyncgate_bus_messages_total {}\n\
             # HELP syncgate_bus_publish_commands_total PUBLISH commands (several messages per command when batched).\n# TYPE syncgate_bus_publish_commands_total counter\nsyncgate_bus_publish_commands_total {}\n\
             # HELP syncgate_bus_dropped_total Messages not carried between instances (queue full or Redis down).\n# TYPE syncgate_bus_dropped_total counter\nsyncgate_bus_dropped_total {}\n\
             # HELP syncgate_bus_received_total Messages received from other instances or external publishers.\n# TYPE syncgate_bus_received_total counter\nsyncgate_bus_received_total {}\n\
             # HELP syncgate_redis_reconnects_total Redis reconnections.\n# TYPE syncgate_redis_reconnects_total counter\nsyncgate_redis_reconnects_total {}\n\
             # HELP syncgate_bus_rejected_total External publishes and control messages dropped as malformed or nested deeper than SYNCGATE_MAX_JSON_DEPTH.\n# TYPE syncgate_bus_rejected_total counter\nsyncgate_bus_rejected_total {}\n",
            u8::from(self.healthy()),
            load(&s.messages),
            load(&s.publish_commands),
            load(&s.dropped),
            load(&s.received),
            load(&s.reconnects),
            load(&s.rejected),
        );
        self.batch_sizes.render(out, "syncgate_bus_batch_messages", "Messages per Redis PUBLISH batch.");
    }
}
