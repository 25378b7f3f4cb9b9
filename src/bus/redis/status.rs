//! What the Redis bus reports about the cluster: the `/api/status` cluster view (live
//! instances with their connection counts, users with most connections: each instance's
//! busiest users, counted cluster-wide). Its counters are
//! `metrics::BusSeries`, in the process's one registry.

use std::collections::HashMap;

use fred::prelude::*;

use super::RedisBus;
use crate::bus::Bus;

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
        // Candidates: each live instance's busiest users (`tops`); their counts are the
        // cluster-wide ones (`uc:{user}`).
        let tops: HashMap<String, String> = self.client.hgetall(self.key("tops")).await.unwrap_or_default();
        let mut candidates: Vec<&str> = alive
            .iter()
            .filter_map(|i| tops.get(i))
            .flat_map(|t| t.split('\u{1f}'))
            .filter(|u| !u.is_empty())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut users: Vec<(String, i64)> = Vec::with_capacity(candidates.len());
        for u in candidates {
            let n: Option<i64> = self.client.get(format!("{}uc:{{{u}}}", self.settings.prefix)).await.unwrap_or(None);
            if let Some(n) = n.filter(|n| *n > 0) {
                users.push((u.to_string(), n));
            }
        }
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
}
