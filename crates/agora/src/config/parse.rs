//! The walker over the parsed TOML: validates every key, tracks full key names, collects every error.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::error::{ConfigError, ConfigErrors};
use super::keys::{closest, join, quote, store_key};
use super::types::{Backend, ClusterConfig, Config, HttpConfig, NatsConfig, PushConfig, Secret};
use crate::event::NodeId;

/// The top-level sections agora reads.
const SECTIONS: &[&str] = &["cluster", "store", "http", "stalwart", "push"];
/// Keys of `[cluster]`.
const CLUSTER_KEYS: &[&str] = &["coordinator", "node-id", "key", "heartbeat-interval"];
/// Sections of a full Stalwart configuration: ignored without a "did you mean" (`storage` is not a typo of `store`).
const STALWART_SECTIONS: &[&str] = &[
    "account",
    "acme",
    "asn",
    "auth",
    "authentication",
    "authorization",
    "blob",
    "cache",
    "calendar",
    "certificate",
    "changes",
    "config",
    "contact",
    "dav",
    "directory",
    "email",
    "enterprise",
    "file-storage",
    "form",
    "housekeeper",
    "imap",
    "jmap",
    "lookup",
    "managesieve",
    "metrics",
    "oauth",
    "pop3",
    "queue",
    "report",
    "resolver",
    "server",
    "session",
    "sharing",
    "sieve",
    "signature",
    "spam-filter",
    "storage",
    "telemetry",
    "tracer",
    "tracing",
    "webadmin",
];

/// Default `[cluster] heartbeat-interval` bounds.
const HEARTBEAT_MIN: Duration = Duration::from_millis(100);
const HEARTBEAT_MAX: Duration = Duration::from_secs(3600);
/// Minimum length of a cluster key, in bytes.
const KEY_MIN_BYTES: usize = 16;

/// Parses and validates a configuration file's text.
///
/// Every problem is reported (not just the first), each naming its full key. Stores of other types and sections
/// agora does not use are skipped with a line in [`Config::notes`].
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with(text, Walker::default())
}

/// Parses an unmodified Stalwart configuration file (for `agora watch --stalwart`): only the NATS store that
/// `[cluster] coordinator` names is read, strictly; everything else, Stalwart's own `[cluster]` and `[http]` keys
/// included, is ignored and named in one line of [`Config::notes`].
pub fn parse_stalwart_file(text: &str) -> Result<Config, ConfigErrors> {
    parse_with(
        text,
        Walker {
            stalwart_file: true,
            ..Walker::default()
        },
    )
}

fn parse_with(text: &str, mut walker: Walker) -> Result<Config, ConfigErrors> {
    let root = match text.parse::<Table>() {
        Ok(root) => root,
        Err(error) => return Err(syntax_error(text, &error).into()),
    };
    let config = walker.config(&root);
    if walker.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors::new(walker.errors))
    }
}

/// Reads and parses a configuration file; a read error is one [`ConfigError`] naming the file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    read(path).and_then(|text| parse(&text))
}

/// [`load`] for an unmodified Stalwart configuration file (see [`parse_stalwart_file`]).
pub fn load_stalwart_file(path: &Path) -> Result<Config, ConfigErrors> {
    read(path).and_then(|text| parse_stalwart_file(&text))
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    let error = |message: String| -> ConfigErrors { ConfigError::new(path.display().to_string(), message).into() };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1), &mut bytes))
        .map_err(|e| error(format!("cannot read the configuration file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(error(format!(
            "the configuration file is larger than {MAX_CONFIG_BYTES} bytes, the most agora reads (is it the right \
             file?)"
        )));
    }
    String::from_utf8(bytes).map_err(|_| error("cannot read the configuration file: it is not valid UTF-8".into()))
}

/// Largest configuration file read: real ones are a few KiB (a Stalwart server's whole file included); a mistyped
/// path (a log, `/dev/zero`) must not be read into memory without end.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A TOML syntax error, located by line and column. The offending source line is deliberately not quoted: it may
/// hold a secret.
fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = format!("invalid TOML: {}", error.message().trim());
    match error.span() {
        Some(span) => {
            let start = floor_char_boundary(text, span.start);
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |last| last.chars().count()) + 1;
            ConfigError::new(format!("line {line}, column {column}"), message)
        }
        None => ConfigError::new("(file)", message),
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// What `[store.<id>]` turned out to be, for resolving `coordinator`.
enum Store {
    /// `type = "nats"`; `None` when it had errors.
    Nats(Option<Box<NatsConfig>>),
    /// Another type, ignored.
    Other(String),
    /// No usable type (already reported).
    Invalid,
}

#[derive(Default)]
pub(super) struct Walker {
    pub(super) errors: Vec<ConfigError>,
    pub(super) notes: Vec<String>,
    /// Reading a Stalwart server's own file: keys agora does not own are collected in `ignored`, not errors.
    stalwart_file: bool,
    /// What a Stalwart file held that agora does not read, reported in one note.
    ignored: Vec<String>,
    /// Values read through `%{env:..}%` / `%{file:..}%`, with the substitution they came from: they may be secrets
    /// (`%{file:/proc/self/environ}%` is the environment, passwords included), so no error message quotes them.
    substituted: Vec<(String, String)>,
}

impl Walker {
    pub(super) fn error(&mut self, key: &str, message: impl Into<String>) {
        let message = self.without_substituted_values(message.into());
        self.errors.push(ConfigError::new(key, message));
    }

    /// Remembers that `value` came from the substitution `source`, so that errors never quote it.
    pub(super) fn note_substituted(&mut self, source: &str, value: &str) {
        if !value.is_empty() {
            self.substituted.push((source.to_string(), value.to_string()));
        }
    }

    /// `message`, with every substituted value it quotes (as is, escaped or quoted) replaced by the substitution
    /// it came from; if a part of one still shows (a message that quotes a piece of a value), the whole message is
    /// replaced by one that names the substitution only.
    fn without_substituted_values(&self, mut message: String) -> String {
        for (source, value) in &self.substituted {
            let shown = format!("(the value of {source})");
            for form in [value.clone(), format!("{value:?}"), super::keys::quote(value)] {
                if form.len() >= 3 && message.contains(&form) {
                    message = message.replace(&form, &shown);
                }
            }
            // Any 8 characters of the value (as is or escaped) still in the message: the message shows part of it.
            let escaped = value.escape_debug().to_string();
            let chars: Vec<char> = message.chars().collect();
            let shows_part = chars.windows(8).any(|w| {
                let w: String = w.iter().collect();
                value.contains(&w) || escaped.contains(&w)
            });
            if shows_part {
                return format!("the value of {source} is not valid here (not shown: it may be a secret)");
            }
        }
        message
    }

    pub(super) fn config(&mut self, root: &Table) -> Config {
        for (name, value) in root {
            if SECTIONS.contains(&name.as_str()) {
                continue;
            }
            if self.stalwart_file {
                self.ignored.push(join("", name));
                continue;
            }
            let what = if value.is_table() { "section" } else { "key" };
            let mut note = format!(
                "{what} `{}` ignored: agora only reads [cluster], [store.<id>], [http], [stalwart] and [push]",
                join("", name)
            );
            if !STALWART_SECTIONS.contains(&name.as_str()) {
                if let Some(suggestion) = closest(name, SECTIONS) {
                    note.push_str(&format!("; did you mean `{suggestion}`?"));
                }
            }
            self.notes.push(note);
        }

        let (cluster, coordinator) = self.cluster(root.get("cluster"));
        let stores = self.stores(root.get("store"));
        let backend = self.backend(coordinator, stores);
        let http = if self.stalwart_file {
            if root.contains_key("http") {
                self.ignored.push("http".into());
            }
            HttpConfig::default()
        } else {
            self.http(root.get("http"))
        };
        let stalwart = self.stalwart(root.get("stalwart"));
        let push = if self.stalwart_file {
            if root.contains_key("push") {
                self.ignored.push("push".into());
            }
            PushConfig::default()
        } else {
            self.push(root.get("push"))
        };
        if !self.ignored.is_empty() {
            let ignored = std::mem::take(&mut self.ignored);
            self.notes.push(format!(
                "ignored (a Stalwart server's own settings, not used by agora): {}",
                ignored.join(", ")
            ));
        }
        Config {
            cluster,
            backend,
            http,
            stalwart,
            push,
            notes: std::mem::take(&mut self.notes),
        }
    }

    // ----- sections -------------------------------------------------------------------------------------------

    pub(super) fn cluster(&mut self, value: Option<&Value>) -> (ClusterConfig, Option<String>) {
        let mut cluster = ClusterConfig::default();
        let Some(table) = value.and_then(|v| self.table("cluster", v)) else {
            return (cluster, None);
        };
        if self.stalwart_file {
            // Stalwart's own [cluster] keys (its node-id, its roles...) are not agora's: only the store matters.
            self.ignored
                .extend(table.keys().filter(|k| *k != "coordinator").map(|k| join("cluster", k)));
            let coordinator = table
                .get("coordinator")
                .and_then(|v| self.string("cluster.coordinator", v));
            return (cluster, coordinator);
        }
        self.check_keys("cluster", table, CLUSTER_KEYS);

        let coordinator = table.get("coordinator").and_then(|v| {
            let id = self.string("cluster.coordinator", v)?;
            if id.is_empty() {
                self.error(
                    "cluster.coordinator",
                    "must name a [store.<id>] of type \"nats\"; remove it for single-node mode",
                );
                return None;
            }
            Some(id)
        });

        if let Some(v) = table.get("node-id") {
            if let Some(n) = self.integer_in("cluster.node-id", v, 1, i64::from(u16::MAX)) {
                cluster.node_id = u16::try_from(n).ok().and_then(NodeId::new);
            }
        }

        if let Some(v) = table.get("key") {
            if let Some(keys) = self.cluster_keys("cluster.key", v) {
                cluster.keys = keys;
            }
        }

        if let Some(v) = table.get("heartbeat-interval") {
            if let Some(d) = self.duration(
                "cluster.heartbeat-interval",
                v,
                "1s",
                HEARTBEAT_MIN,
                Some(HEARTBEAT_MAX),
            ) {
                cluster.heartbeat_interval = d;
            }
        }
        (cluster, coordinator)
    }

    pub(super) fn cluster_keys(&mut self, key: &str, value: &Value) -> Option<Vec<Secret>> {
        let items = self.one_or_list(
            key,
            value,
            "give at least one key of 16 bytes or more, or remove `key`",
            "a string or a list of strings",
            false,
        )?;
        let mut keys = Vec::with_capacity(items.len());
        let mut ok = true;
        for (item_key, item) in items {
            match self.secret(&item_key, item) {
                Some(secret) if secret.expose().len() < KEY_MIN_BYTES => {
                    self.error(
                        &item_key,
                        format!("too short: a cluster key needs at least {KEY_MIN_BYTES} bytes"),
                    );
                    ok = false;
                }
                Some(secret) => keys.push(secret),
                None => ok = false,
            }
        }
        ok.then_some(keys)
    }

    fn stores(&mut self, value: Option<&Value>) -> BTreeMap<String, Store> {
        let mut stores = BTreeMap::new();
        let Some(table) = value.and_then(|v| self.table("store", v)) else {
            return stores;
        };
        for (id, value) in table {
            let key = store_key(id);
            let store = match self.table(&key, value) {
                None => Store::Invalid,
                Some(store) => match store.get("type") {
                    None => {
                        self.error(
                            &join(&key, "type"),
                            "missing: every store needs a type, e.g. type = \"nats\"",
                        );
                        Store::Invalid
                    }
                    Some(v) => match self.string(&join(&key, "type"), v) {
                        None => Store::Invalid,
                        Some(kind) if kind == "nats" => Store::Nats(self.nats(&key, store).map(Box::new)),
                        Some(kind) => {
                            let mut note = format!(
                                "store {} of type {} ignored: agora only uses nats stores",
                                quote(id),
                                quote(&kind)
                            );
                            if kind != "nats" && closest(&kind, &["nats"]).is_some() {
                                note.push_str("; did you mean type = \"nats\"?");
                            }
                            self.notes.push(note);
                            Store::Other(kind)
                        }
                    },
                },
            };
            stores.insert(id.clone(), store);
        }
        stores
    }

    fn backend(&mut self, coordinator: Option<String>, mut stores: BTreeMap<String, Store>) -> Backend {
        let Some(id) = coordinator else {
            for (id, store) in &stores {
                if matches!(store, Store::Nats(_)) {
                    self.notes.push(format!(
                        "nats store {} not used: [cluster] coordinator is unset (single-node mode)",
                        quote(id)
                    ));
                }
            }
            return Backend::SingleNode;
        };
        match stores.remove(&id) {
            None => {
                let known = if stores.is_empty() {
                    "no [store.<id>] section is defined".to_string()
                } else {
                    let ids: Vec<String> = stores.keys().map(|id| quote(id)).collect();
                    format!("defined stores: {}", ids.join(", "))
                };
                self.error(
                    "cluster.coordinator",
                    format!("{} does not name a store; {known}", quote(&id)),
                );
                Backend::SingleNode
            }
            Some(Store::Other(kind)) => {
                self.error(
                    "cluster.coordinator",
                    format!(
                        "store {} has type {}, but the coordinator must be a store with type = \"nats\"",
                        quote(&id),
                        quote(&kind)
                    ),
                );
                Backend::SingleNode
            }
            Some(Store::Nats(Some(config))) => {
                for (other, store) in &stores {
                    if matches!(store, Store::Nats(_)) {
                        self.notes.push(format!(
                            "nats store {} not used: the coordinator is {}",
                            quote(other),
                            quote(&id)
                        ));
                    }
                }
                Backend::Nats { store_id: id, config }
            }
            // Its errors are already reported.
            Some(Store::Nats(None) | Store::Invalid) => Backend::SingleNode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_do_not_quote_the_source() {
        let error = parse("[store.\"nats\"]\npassword = \"hunter2secret\nuser = 1\n").unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("hunter2secret"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        for source in [
            "password = hunter2secret\n",
            "password = \"hunter2secret\\q\"\n",
            "password = 'hunter2secret\n",
            "[a]\npassword = \"hunter2secret\"\npassword = \"hunter2secret\"\n",
            "password = \"hunter2secret\" x\n",
        ] {
            let text = parse(source).unwrap_err().to_string();
            assert!(!text.contains("hunter2secret"), "{text}");
            assert!(text.starts_with("line "), "{text}");
        }
    }
}
