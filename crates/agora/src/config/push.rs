//! The `[push]` section: how many push subscriptions an account may hold, and which non-public networks push
//! deliveries may reach.

use std::net::IpAddr;

use ipnet::IpNet;
use toml::Value;

use super::keys::{element, quote};
use super::parse::Walker;
use super::types::PushConfig;
use super::values::describe;

/// Keys of `[push]`.
const PUSH_KEYS: &[&str] = &["max-subscriptions-per-account", "allow-networks"];

/// Upper bound of `max-subscriptions-per-account`: past this, one state change alone would be a flood of POSTs.
const MAX_PER_ACCOUNT: i64 = 10_000;

/// What a bad `allow-networks` entry is told to look like.
const NETWORK_EXAMPLE: &str = "a network in CIDR form such as \"10.0.0.0/8\" or \"fd00::/8\", or one address";

impl Walker {
    /// Reads `[push]`; the defaults when absent (errors are recorded, and the defaults kept for those keys).
    pub(super) fn push(&mut self, value: Option<&Value>) -> PushConfig {
        let mut push = PushConfig::default();
        let Some(table) = value.and_then(|v| self.table("push", v)) else {
            return push;
        };
        self.check_keys("push", table, PUSH_KEYS);
        if let Some(n) = table
            .get("max-subscriptions-per-account")
            .and_then(|v| self.integer_in("push.max-subscriptions-per-account", v, 1, MAX_PER_ACCOUNT))
        {
            push.max_subscriptions_per_account = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(v) = table.get("allow-networks") {
            push.allow_networks = self.allow_networks(v);
        }
        push
    }

    /// `allow-networks`: a list (possibly empty) of networks or addresses, each reported by its own key.
    fn allow_networks(&mut self, value: &Value) -> Vec<IpNet> {
        let key = "push.allow-networks";
        let Value::Array(items) = value else {
            self.error(
                key,
                format!(
                    "expected a list of networks such as [\"10.0.0.0/8\"], found {}",
                    describe(value)
                ),
            );
            return Vec::new();
        };
        let mut networks = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = element(key, i);
            let Some(text) = self.string(&item_key, item) else {
                continue;
            };
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                // Host bits are dropped, as for blocked networks: "10.1.2.3/8" means 10.0.0.0/8.
                Ok(network) => networks.push(network.trunc()),
                Err(_) => self.error(
                    &item_key,
                    format!("{} is not a network: expected {NETWORK_EXAMPLE}", quote(&text)),
                ),
            }
        }
        networks
    }
}
