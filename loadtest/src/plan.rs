//! Which connections a scenario opens, where, as whom, and what each one sends: one deterministic
//! list shared by every worker process (worker `w` takes the connections with `idx % procs == w`).

use crate::args::{Args, Pattern, Scenario};

/// What a connection does during traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Receives only.
    Listen,
    /// Publishes to `channel`; its `sender` id is stamped into every message.
    Publish { channel: String, sender: u32, senders: u32 },
}

#[derive(Debug, Clone)]
pub struct ConnSpec {
    pub idx: usize,
    pub url: String,
    pub user: String,
    pub device: String,
    pub channels: Vec<String>,
    pub role: Role,
}

/// Channel every broadcast subscriber joins.
pub const BROADCAST_CHANNEL: &str = "lt:bcast";
/// Namespace granted to minted tokens (`channels: ["lt:*"]`).
pub const CLAIM: &str = "lt:*";

/// Recipients per message (the expected deliveries of one publish).
pub fn recipients(args: &Args) -> u64 {
    match (args.scenario, args.pattern) {
        (Scenario::Fanout, _) | (Scenario::Cluster, Pattern::Fanout) => args.devices.saturating_sub(1) as u64,
        (Scenario::Broadcast, _) | (Scenario::Cluster, Pattern::Broadcast) => args.subscribers as u64,
        _ => 0,
    }
}

/// Messages per second each sender sends at `rate` (the scenario's rate meaning).
pub fn per_sender_rate(args: &Args, rate: f64) -> f64 {
    match (args.scenario, args.pattern) {
        (Scenario::Fanout, _) | (Scenario::Cluster, Pattern::Fanout) => rate,
        _ => rate / args.publishers as f64,
    }
}

/// Intended send time of message `k` of `sender` (one of `senders`) relative to the step start:
/// open loop, evenly spread over one interval, never drifting (computed from `k`, not accumulated).
pub fn send_offset(k: u64, sender: u32, senders: u32, rate: f64) -> std::time::Duration {
    let phase = sender as f64 / senders.max(1) as f64;
    std::time::Duration::from_secs_f64((k as f64 + phase) / rate)
}

pub fn build(args: &Args) -> Vec<ConnSpec> {
    let url = |i: usize| args.urls[i % args.urls.len()].clone();
    let mut out = Vec::new();
    match (args.scenario, args.pattern) {
        // churn opens and closes its connections round by round (crate::churn), none stay open.
        (Scenario::Churn, _) => {}
        (Scenario::Connect, _) | (Scenario::Idle, _) => {
            for idx in 0..args.connections {
                let channels = if args.scenario == Scenario::Idle { vec![format!("lt:idle:{idx}")] } else { vec![] };
                out.push(ConnSpec {
                    idx,
                    url: url(idx),
                    user: format!("lt-u{idx}"),
                    // Key login registers new devices every run (see `Args::key_run_tag`).
                    device: if args.key_login { format!("k{}", args.key_run_tag) } else { "d0".into() },
                    channels,
                    role: Role::Listen,
                });
            }
        }
        (Scenario::Fanout, _) | (Scenario::Cluster, Pattern::Fanout) => {
            let senders = (args.users * args.devices) as u32;
            for u in 0..args.users {
                for d in 0..args.devices {
                    let idx = u * args.devices + d;
                    out.push(ConnSpec {
                        idx,
                        url: url(d),
                        user: format!("lt-u{u}"),
                        device: format!("d{d}"),
                        channels: vec![],
                        role: Role::Publish { channel: "user".into(), sender: idx as u32, senders },
                    });
                }
            }
        }
        (Scenario::Broadcast, _) | (Scenario::Cluster, Pattern::Broadcast) => {
            // cluster: publishers on the first URL, subscribers spread over the others.
            let sub_url = |i: usize| {
                if args.scenario == Scenario::Cluster && args.urls.len() > 1 {
                    args.urls[1 + i % (args.urls.len() - 1)].clone()
                } else {
                    url(i)
                }
            };
            for idx in 0..args.subscribers {
                out.push(ConnSpec {
                    idx,
                    url: sub_url(idx),
                    user: format!("lt-s{idx}"),
                    device: "d0".into(),
                    channels: vec![BROADCAST_CHANNEL.into()],
                    role: Role::Listen,
                });
            }
            for p in 0..args.publishers {
                let idx = args.subscribers + p;
                out.push(ConnSpec {
                    idx,
                    url: args.urls[0].clone(),
                    user: format!("lt-p{p}"),
                    device: "d0".into(),
                    channels: vec![],
                    role: Role::Publish {
                        channel: BROADCAST_CHANNEL.into(),
                        sender: p as u32,
                        senders: args.publishers as u32,
                    },
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        crate::args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn cluster_puts_publishers_first() {
        let a = args(
            "cluster --jwt-secret s --url ws://a/ws --url ws://b/ws --url ws://c/ws --subscribers 4 --publishers 2",
        );
        let plan = build(&a);
        assert_eq!(plan.len(), 6);
        assert!(plan[..4].iter().all(|c| c.url != "ws://a/ws"));
        assert!(plan[4..].iter().all(|c| c.url == "ws://a/ws"));
        assert_eq!(recipients(&a), 4);
        assert_eq!(per_sender_rate(&a, 10.0), 5.0);
    }

    #[test]
    fn pacing_is_open_loop_and_spread() {
        use std::time::Duration;
        // 10 msg/s: message k at k * 100 ms, the second of two senders half an interval later.
        assert_eq!(send_offset(0, 0, 2, 10.0), Duration::ZERO);
        assert_eq!(send_offset(3, 0, 2, 10.0), Duration::from_millis(300));
        assert_eq!(send_offset(3, 1, 2, 10.0), Duration::from_millis(350));
        // Messages due within a 2 s step at 250 msg/s: exactly 500, whatever the sender phase.
        for sender in 0..4 {
            let due = (0..).take_while(|k| send_offset(*k, sender, 4, 250.0) < Duration::from_secs(2)).count();
            assert_eq!(due, 500);
        }
    }

    #[test]
    fn fanout_devices_share_a_user() {
        let a = args("fanout --jwt-secret s --users 2 --devices 3");
        let plan = build(&a);
        assert_eq!(plan.len(), 6);
        assert_eq!(plan[4].user, "lt-u1");
        assert_eq!(plan[4].device, "d1");
        assert_eq!(recipients(&a), 2);
    }
}
