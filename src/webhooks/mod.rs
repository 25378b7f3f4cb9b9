//! Webhooks: what happens inside syncgate, told to the application (`SYNCGATE_WEBHOOK_URL`).
//!
//! - Events: `channel_occupied`/`channel_vacated`, `member_added`/`member_removed` (a user's
//!   first/last connection in a channel), `user_online`/`user_offline` (a user's first/last
//!   connection anywhere) and `message_undelivered` (a durable `dm` event stored while its
//!   recipient has no connection anywhere). User channels carry no channel or member events.
//! - Once per cluster: on one instance the registry reports transitions ([`Transitions`]); with
//!   Redis the bus reports the cluster-wide ones its atomic scripts saw (exactly one instance
//!   sees each).
//! - Reporting never blocks: events go into one bounded queue (`SYNCGATE_WEBHOOK_QUEUE`; full:
//!   dropped and counted). One task delivers them in order, in signed batches, retried with
//!   backoff for `SYNCGATE_WEBHOOK_RETRY_SECS` ([`delivery`]). WebSocket traffic never waits
//!   for it.
//!
//! ## Files
//! - `mod.rs`: [`Webhooks`] (the queue and the [`Transitions`] sink), [`Event`], the device
//!   counting that turns one instance's presence into member events, the undelivered check.
//! - `delivery.rs`: batches, their JSON and signature, the POST and its retries.

mod delivery;

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bus::Bus;
use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use crate::registry::{Registry, Transitions};

/// One webhook event (its `id` is given when it is batched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ChannelOccupied {
        channel: Arc<str>,
    },
    ChannelVacated {
        channel: Arc<str>,
    },
    MemberAdded {
        channel: Arc<str>,
        user: Arc<str>,
    },
    MemberRemoved {
        channel: Arc<str>,
        user: Arc<str>,
    },
    UserOnline {
        user: Arc<str>,
    },
    UserOffline {
        user: Arc<str>,
    },
    /// A durable `dm` event stored while `user` (its recipient) had no connection anywhere;
    /// `from` is the sender's user id (`server` for the server API).
    MessageUndelivered {
        channel: Arc<str>,
        seq: u64,
        user: Arc<str>,
        from: Arc<str>,
    },
}

impl Event {
    /// The event's `name`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ChannelOccupied { .. } => "channel_occupied",
            Event::ChannelVacated { .. } => "channel_vacated",
            Event::MemberAdded { .. } => "member_added",
            Event::MemberRemoved { .. } => "member_removed",
            Event::UserOnline { .. } => "user_online",
            Event::UserOffline { .. } => "user_offline",
            Event::MessageUndelivered { .. } => "message_undelivered",
        }
    }
}

/// A stored dm event to check: is its recipient connected anywhere?
struct Undelivered {
    channel: Arc<str>,
    seq: u64,
    user: Arc<str>,
    from: Arc<str>,
}

/// The webhook sink, shared behind an `Arc` by the registry (as its [`Transitions`]), the bus
/// and the durable writer.
pub struct Webhooks {
    queue: mpsc::Sender<Event>,
    checks: mpsc::Sender<Undelivered>,
    /// One instance only: devices present per (channel, user), for member events.
    devices: DashMap<(Arc<str>, Arc<str>), u32>,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// `None` without `SYNCGATE_WEBHOOK_URL`. Otherwise connects itself to the registry and
    /// starts the delivery and undelivered-check tasks (returned for the caller to stop).
    pub fn start(
        config: &WebhookConfig,
        registry: &Arc<Registry>,
        bus: Arc<dyn Bus>,
        metrics: Arc<Metrics>,
        instance: crate::util::InstanceId,
    ) -> Option<(Arc<Webhooks>, Vec<JoinHandle<()>>)> {
        let url: http::Uri = config.url.as_deref()?.parse().ok()?;
        let secret = config.secret.clone()?;
        let (tx, rx) = mpsc::channel(config.queue);
        let (checks_tx, checks_rx) = mpsc::channel(config.queue);
        let hooks =
            Arc::new(Webhooks { queue: tx, checks: checks_tx, devices: DashMap::new(), metrics: metrics.clone() });
        let sender = delivery::Sender::new(url, secret.as_bytes(), config, metrics, instance);
        let tasks = vec![
            tokio::spawn(sender.run(rx, config.batch)),
            tokio::spawn(hooks.clone().check_undelivered(checks_rx, bus)),
        ];
        registry.set_transitions(hooks.clone());
        Some((hooks, tasks))
    }

    /// Queues `event`; a full queue drops it (counted). Never waits.
    pub fn emit(&self, event: Event) {
        match self.queue.try_send(event) {
            Ok(()) => {
                self.metrics.webhooks.events.inc();
                self.metrics.webhooks.queue.inc();
            }
            Err(_) => self.metrics.webhooks.dropped.inc(),
        }
    }

    /// A durable event of `channel` (`seq`) was stored: for a `dm:<a>:<b>`, each of its users
    /// other than the sender `from` (`None`: the server) who has no connection anywhere gets a
    /// `message_undelivered`. The check runs on its own task; a full check queue drops it
    /// (counted).
    pub fn stored(&self, channel: &str, seq: u64, from: Option<&str>) {
        let Some((a, b)) = crate::channel::dm_members(channel) else {
            return;
        };
        let sender: Arc<str> = Arc::from(from.unwrap_or("server"));
        let channel: Arc<str> = Arc::from(channel);
        for user in [a, b].into_iter().filter(|u| Some(*u) != from) {
            let check = Undelivered { channel: channel.clone(), seq, user: Arc::from(user), from: sender.clone() };
            if self.checks.try_send(check).is_err() {
                self.metrics.webhooks.dropped.inc();
            }
        }
    }

    /// Background task: asks the bus whether each stored dm's recipient is connected anywhere,
    /// in order, and emits `message_undelivered` for those who are not.
    async fn check_undelivered(self: Arc<Self>, mut rx: mpsc::Receiver<Undelivered>, bus: Arc<dyn Bus>) {
        while let Some(c) = rx.recv().await {
            if !bus.user_connected(&c.user).await {
                self.emit(Event::MessageUndelivered { channel: c.channel, seq: c.seq, user: c.user, from: c.from });
            }
        }
    }
}

impl Transitions for Webhooks {
    fn channel_changed(&self, channel: &str, occupied: bool) {
        let channel = Arc::from(channel);
        self.emit(match occupied {
            true => Event::ChannelOccupied { channel },
            false => Event::ChannelVacated { channel },
        });
    }

    fn member_changed(&self, channel: &str, user: &Arc<str>, added: bool) {
        let (channel, user) = (Arc::from(channel), user.clone());
        self.emit(match added {
            true => Event::MemberAdded { channel, user },
            false => Event::MemberRemoved { channel, user },
        });
    }

    fn user_changed(&self, user: &Arc<str>, online: bool) {
        let user = user.clone();
        self.emit(match online {
            true => Event::UserOnline { user },
            false => Event::UserOffline { user },
        });
    }

    fn device_changed(&self, channel: &str, user: &Arc<str>, _device: &Arc<str>, joined: bool) {
        let key = (Arc::from(channel), user.clone());
        match self.devices.entry(key) {
            dashmap::Entry::Vacant(v) if joined => {
                // Reported under this entry's lock, like every change of it.
                self.member_changed(channel, user, true);
                v.insert(1);
            }
            dashmap::Entry::Vacant(_) => {}
            dashmap::Entry::Occupied(mut o) if joined => *o.get_mut() += 1,
            dashmap::Entry::Occupied(mut o) => {
                *o.get_mut() -= 1;
                if *o.get() == 0 {
                    self.member_changed(channel, user, false);
                    o.remove();
                }
            }
        }
    }
}
