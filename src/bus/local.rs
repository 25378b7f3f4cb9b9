//! The in-process bus: one instance, the registry is the whole cluster.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use super::{BoxFuture, Bus, Control};
use crate::error::CloseReason;
use crate::protocol::{Encoded, RequestId};
use crate::registry::Registry;

pub struct LocalBus {
    registry: Arc<Registry>,
}

impl LocalBus {
    pub fn new(registry: Arc<Registry>) -> LocalBus {
        LocalBus { registry }
    }
}

impl Bus for LocalBus {
    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }

    fn unsubscribe(&self, _channel: &str) {}

    fn publish(&self, channel: &str, frame: Message, origin: u64) -> usize {
        self.registry.fan_out(channel, &frame, origin)
    }

    fn control(&self, ctl: Control) {
        match ctl {
            Control::Disconnect { user_id, device_id } => {
                self.registry.close_user(&user_id, device_id.as_deref(), CloseReason::Forbidden);
            }
            Control::RevokeDevice { user_id, device_id } => {
                self.registry.revoke_device(&user_id, &device_id);
            }
            Control::TokenGeneration { user_id, gen } => {
                self.registry.set_token_gen(&user_id, gen);
            }
            Control::DeviceKeyed { user_id, device_id, public_key } => {
                self.registry.mark_keyed(&user_id, &device_id, &public_key)
            }
        }
    }

    fn channels<'a>(&'a self, prefix: &'a str, cursor: &'a str, limit: usize) -> BoxFuture<'a, super::ChannelPage> {
        Box::pin(std::future::ready(self.registry.channel_page(prefix, cursor, limit)))
    }

    fn presence<'a>(&'a self, channel: &'a str, id: &'a RequestId) -> BoxFuture<'a, Encoded> {
        Box::pin(std::future::ready(self.registry.presence(channel, id)))
    }

    fn user_connected<'a>(&'a self, user: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(std::future::ready(self.registry.user_connected(user)))
    }

    fn acquire_user<'a>(&'a self, _user: &'a str, _max: u32) -> BoxFuture<'a, bool> {
        // The registry's local slot is the whole cap on one instance.
        Box::pin(std::future::ready(true))
    }

    fn status<'a>(&'a self, top: usize) -> BoxFuture<'a, serde_json::Value> {
        let (users, total) = self.registry.top_users(top);
        Box::pin(std::future::ready(serde_json::json!({
            "bus": "local",
            "instances": [{"instance": "local", "connections": total, "self": true}],
            "top_users": users.into_iter().map(|(u, n)| serde_json::json!({"user_id": u, "connections": n})).collect::<Vec<_>>(),
        })))
    }

    fn healthy(&self) -> bool {
        true
    }

    fn state(&self) -> &'static str {
        "local"
    }
}
