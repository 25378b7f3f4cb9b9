//! Set-up shared by the benches (each bench includes it with `#[path]`).

use std::sync::Arc;

use syncgate::registry::{ConnHandle, Membership, Registry};

/// A fresh registry with `n` connections (`user0`, `user1`, … on device `d`, queues of 65 536
/// frames) joined to `room:lobby`; the memberships keep them joined while they live.
pub fn lobby(n: usize) -> (Arc<Registry>, Vec<Arc<ConnHandle>>, Vec<Membership>) {
    let registry = Arc::new(Registry::new());
    let stats = Arc::new(syncgate::metrics::Metrics::default());
    let conns: Vec<Arc<ConnHandle>> = (0..n as u64)
        .map(|i| {
            Arc::new(ConnHandle::new(
                i + 1,
                Arc::from(format!("user{i}")),
                Arc::from("d"),
                1 << 16,
                usize::MAX,
                stats.clone(),
            ))
        })
        .collect();
    let members = conns
        .iter()
        .map(|c| {
            let mut m = Membership::new(registry.clone(), c.clone());
            m.join("room:lobby");
            m
        })
        .collect();
    (registry, conns, members)
}
