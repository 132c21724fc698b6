//! The `[stalwart]` section: attaching agora to a Stalwart cluster's own bus.

use toml::Value;

use super::keys::quote;
use super::parse::Walker;
use super::types::StalwartConfig;
use crate::stalwart::StalwartVersion;

/// Keys of `[stalwart]`.
pub(super) const STALWART_KEYS: &[&str] = &["version", "subject", "node-id", "forward"];

/// The agora event types that have a Stalwart form, and so may be listed in `forward`.
pub const FORWARDABLE: &[&str] = &[
    "state_change",
    "email_push",
    "cache_invalidate_all",
    "queue_paused",
    "queue_resumed",
    "queue_refresh",
    "stalwart",
];

impl Walker {
    /// Reads `[stalwart]`; `None` when absent or invalid (errors are recorded).
    pub(super) fn stalwart(&mut self, value: Option<&Value>) -> Option<StalwartConfig> {
        let table = value.and_then(|v| self.table("stalwart", v))?;
        self.check_keys("stalwart", table, STALWART_KEYS);
        let version = match table.get("version") {
            None => {
                self.error(
                    "stalwart.version",
                    "missing: name the Stalwart release of the cluster, e.g. version = \"0.16.18\" (its bus format \
                     changed between releases and has no version byte)",
                );
                None
            }
            Some(v) => self.string("stalwart.version", v).and_then(|text| {
                text.parse::<StalwartVersion>()
                    .map_err(|e| self.error("stalwart.version", e.to_string()))
                    .ok()
            }),
        };
        let subject = match table.get("subject") {
            None => Some(crate::stalwart::DEFAULT_SUBJECT.to_string()),
            Some(v) => self.string("stalwart.subject", v).and_then(|s| {
                if s.is_empty() || s.contains(char::is_whitespace) || s.contains(['*', '>']) {
                    self.error(
                        "stalwart.subject",
                        format!(
                            "{} is not a NATS subject to publish on; Stalwart uses \"stwt.agora\"",
                            quote(&s)
                        ),
                    );
                    None
                } else {
                    Some(s)
                }
            }),
        };
        let node_id = table.get("node-id").map(|v| {
            self.integer_in("stalwart.node-id", v, 0, i64::from(u16::MAX))
                .and_then(|n| u16::try_from(n).ok())
        });
        let forward = match table.get("forward") {
            None => Some(Vec::new()),
            Some(v) => self.forward_list(v),
        };
        let node_id = match (node_id, forward.as_deref()) {
            (Some(None), _) => return None,
            (None, Some([_, ..])) => {
                self.error(
                    "stalwart.node-id",
                    "missing: forward is not empty, so agora publishes on the Stalwart bus and needs an id of its \
                     own there; choose one that no Stalwart node and no other agora node uses, e.g. node-id = 65000",
                );
                return None;
            }
            (Some(Some(id)), _) => Some(id),
            (None, _) => None,
        };
        Some(StalwartConfig {
            version: version?,
            subject: subject?,
            node_id,
            forward: forward?,
        })
    }

    /// `forward`: a list of forwardable agora event types, each once.
    fn forward_list(&mut self, value: &Value) -> Option<Vec<&'static str>> {
        let Value::Array(items) = value else {
            self.error(
                "stalwart.forward",
                format!(
                    "expected a list of event types, e.g. [\"state_change\"]; allowed: {}",
                    FORWARDABLE.join(", ")
                ),
            );
            return None;
        };
        let mut forward = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let key = format!("stalwart.forward[{i}]");
            let Some(name) = self.string(&key, item) else {
                ok = false;
                continue;
            };
            match FORWARDABLE.iter().find(|f| **f == name) {
                Some(known) if !forward.contains(known) => forward.push(*known),
                Some(_) => {}
                None => {
                    self.error(
                        &key,
                        format!(
                            "{} has no Stalwart form and cannot be forwarded; allowed: {}",
                            quote(&name),
                            FORWARDABLE.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(forward)
    }
}
