//! The `[push]` section: how many push subscriptions an account may hold, which non-public networks push
//! deliveries may reach, and how pushes present themselves to push services (VAPID key, TTL, expiry bound).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::Value;

use super::keys::{element, quote};
use super::parse::Walker;
use super::types::{PushConfig, VapidConfig, VapidKey};
use super::values::describe;

/// Keys of `[push]`.
const PUSH_KEYS: &[&str] = &[
    "max-subscriptions-per-account",
    "allow-networks",
    "vapid-key-file",
    "vapid-subject",
    "ttl",
    "max-expiry",
];

/// Bounds of `ttl`: at least a second (0 would make push services drop every push to an offline device), at most
/// the four weeks push services keep a message.
const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(28 * 24 * 3600));

/// Bounds of `max-expiry`: from a minute to a year.
const MAX_EXPIRY_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(365 * 24 * 3600));

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
        if let Some(d) = table
            .get("ttl")
            .and_then(|v| self.duration("push.ttl", v, "1d", TTL_RANGE.0, Some(TTL_RANGE.1)))
        {
            push.ttl = d;
        }
        if let Some(d) = table
            .get("max-expiry")
            .and_then(|v| self.duration("push.max-expiry", v, "7d", MAX_EXPIRY_RANGE.0, Some(MAX_EXPIRY_RANGE.1)))
        {
            push.max_expiry = d;
        }
        push.vapid = self.vapid(table.get("vapid-key-file"), table.get("vapid-subject"));
        push
    }

    /// `vapid-key-file` and `vapid-subject`: both or neither; the file a P-256 private key in PEM, the subject a
    /// `mailto:` or `https:` URI (RFC 8292 section 2.1).
    fn vapid(&mut self, key_file: Option<&Value>, subject: Option<&Value>) -> Option<VapidConfig> {
        let key_file = key_file.and_then(|v| self.string("push.vapid-key-file", v));
        let subject = subject.and_then(|v| self.string("push.vapid-subject", v));
        let (key_file, subject) = match (key_file, subject) {
            (None, None) => return None,
            (Some(_), None) => {
                self.error(
                    "push.vapid-subject",
                    "required with vapid-key-file: a mailto: or https: URI push services can reach the operator at, \
                     such as \"mailto:postmaster@example.com\""
                        .to_string(),
                );
                return None;
            }
            (None, Some(_)) => {
                self.error(
                    "push.vapid-key-file",
                    "required with vapid-subject: the P-256 private key (PEM) pushes are signed with; create one \
                     with `openssl ecparam -name prime256v1 -genkey -noout -out vapid.pem`"
                        .to_string(),
                );
                return None;
            }
            (Some(key_file), Some(subject)) => (key_file, subject),
        };
        let subject_ok = (subject.starts_with("mailto:") && subject.len() > "mailto:".len())
            || (subject.starts_with("https://") && subject.len() > "https://".len());
        if !subject_ok || subject.len() > 1024 || subject.chars().any(char::is_control) {
            self.error(
                "push.vapid-subject",
                format!(
                    "{} is not a mailto: or https: URI (RFC 8292 section 2.1): use e.g. \"mailto:postmaster@example.com\"",
                    quote(&subject)
                ),
            );
            return None;
        }
        let key = match read_key_file(&key_file) {
            Ok(key) => key,
            Err(why) => {
                self.error("push.vapid-key-file", format!("{}: {why}", quote(&key_file)));
                return None;
            }
        };
        Some(VapidConfig {
            key_file: PathBuf::from(key_file),
            key,
            subject,
        })
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

/// Reads and parses a VAPID key file; the error says what is wrong without quoting the file's contents.
fn read_key_file(path: &str) -> Result<VapidKey, String> {
    let text = super::key_file::read_pem(path)?;
    VapidKey::from_pem(&text).map_err(|why| {
        format!(
            "is not a P-256 private key: {why}; create one with `openssl ecparam -name prime256v1 -genkey -noout -out \
             vapid.pem`"
        )
    })
}
