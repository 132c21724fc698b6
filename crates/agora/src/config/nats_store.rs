//! `[store.<id>]` sections of type `nats`: every key of Stalwart's NATS documentation with its default, plus the
//! `tls.*`, `jetstream.*` and `subject` extensions.

use std::net::Ipv6Addr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use toml::{Table, Value};

use super::keys::{closest, join, quote};
use super::parse::Walker;
use super::types::{JetStreamConfig, JetStreamStorage, NatsAuth, NatsConfig, Reconnects, TlsConfig};

/// Keys of a `[store.<id>]` with `type = "nats"`.
pub(super) const NATS_KEYS: &[&str] = &[
    "type",
    "address",
    "user",
    "password",
    "credentials",
    "token",
    "no-echo",
    "ping-interval",
    "max-reconnects",
    "tls",
    "timeout",
    "capacity",
    "subject",
    "jetstream",
];

/// Keys of a NATS store's `tls` table.
pub(super) const TLS_KEYS: &[&str] = &["enable", "ca-file", "cert-file", "key-file"];

/// Keys of a NATS store's `timeout` table.
pub(super) const TIMEOUT_KEYS: &[&str] = &["connection", "request"];

/// Keys of a NATS store's `jetstream` table (the durable mode).
pub(super) const JETSTREAM_KEYS: &[&str] = &["enable", "stream", "max-age", "storage", "replicas"];

/// Values of `jetstream.storage`.
pub(super) const JETSTREAM_STORAGES: &[&str] = &["file", "memory"];

/// Bounds of `jetstream.replicas` (JetStream's own limit is 5).
pub(super) const JETSTREAM_REPLICAS_MAX: i64 = 5;

/// Shortest `jetstream.max-age`: below it a node could not even ride out a server restart.
pub(super) const JETSTREAM_MAX_AGE_MIN: Duration = Duration::from_secs(1);

/// Longest JetStream stream name the server accepts.
pub(super) const STREAM_NAME_MAX: usize = 255;

/// Keys of a NATS store's `capacity` table.
pub(super) const CAPACITY_KEYS: &[&str] = &["client", "subscription", "read-buffer"];

/// Bounds of the capacities.
pub(super) const CLIENT_CAPACITY_MAX: i64 = 1_048_576;

pub(super) const SUBSCRIPTION_CAPACITY_MAX: i64 = 16_777_216;

/// The default NATS port.
pub(super) const NATS_PORT: u16 = 4222;

pub(super) const CREDS_JWT_MARKER: &str = "-----BEGIN NATS USER JWT-----";

pub(super) const CREDS_SEED_MARKER: &str = "-----BEGIN USER NKEY SEED-----";

impl Walker {
    pub(super) fn nats(&mut self, path: &str, table: &Table) -> Option<NatsConfig> {
        let errors_before = self.errors.len();
        self.check_keys(path, table, NATS_KEYS);

        let address_key = join(path, "address");
        let addresses = match table.get("address") {
            Some(v) => self.addresses(&address_key, v),
            None => {
                self.error(
                    &address_key,
                    "missing: the NATS server address(es), e.g. address = [\"nats1:4222\", \"nats2:4222\"]",
                );
                Vec::new()
            }
        };
        let mut config = NatsConfig::with_addresses(addresses);

        config.auth = self.nats_auth(path, table);

        if let Some(v) = table.get("no-echo") {
            if let Some(b) = self.boolean(&join(path, "no-echo"), v) {
                config.no_echo = b;
            }
        }
        if let Some(v) = table.get("ping-interval") {
            if let Some(d) = self.positive_duration(&join(path, "ping-interval"), v, "60s") {
                config.ping_interval = d;
            }
        }
        if let Some(v) = table.get("max-reconnects") {
            if let Some(r) = self.reconnects(&join(path, "max-reconnects"), v) {
                config.max_reconnects = r;
            }
        }
        if let Some(v) = table.get("subject") {
            let key = join(path, "subject");
            if let Some(subject) = self.string(&key, v) {
                match check_subject(&subject) {
                    Ok(()) => config.subject = subject,
                    Err(message) => self.error(&key, message),
                }
            }
        }
        if let Some(v) = table.get("tls") {
            // A `tls://` address asks for TLS by itself, so its CA and client certificate files are used too.
            let tls_address = config.addresses.iter().any(|a| a.starts_with("tls://"));
            config.tls = self.tls(&join(path, "tls"), v, tls_address);
        }
        if let Some(v) = table.get("jetstream") {
            config.jetstream = self.jetstream(&join(path, "jetstream"), v);
        }
        if let Some(v) = table.get("timeout") {
            let key = join(path, "timeout");
            if let Some(timeout) = self.table(&key, v) {
                self.check_keys(&key, timeout, TIMEOUT_KEYS);
                if let Some(v) = timeout.get("connection") {
                    if let Some(d) = self.positive_duration(&join(&key, "connection"), v, "5s") {
                        config.connection_timeout = d;
                    }
                }
                if let Some(v) = timeout.get("request") {
                    if let Some(d) = self.positive_duration(&join(&key, "request"), v, "10s") {
                        config.request_timeout = d;
                    }
                }
            }
        }
        if let Some(v) = table.get("capacity") {
            let key = join(path, "capacity");
            if let Some(capacity) = self.table(&key, v) {
                self.check_keys(&key, capacity, CAPACITY_KEYS);
                if let Some(v) = capacity.get("client") {
                    if let Some(n) = self.integer_in(&join(&key, "client"), v, 1, CLIENT_CAPACITY_MAX) {
                        config.client_capacity = usize::try_from(n).unwrap_or(config.client_capacity);
                    }
                }
                if let Some(v) = capacity.get("subscription") {
                    let key = join(&key, "subscription");
                    if let Some(n) = self.integer_in(&key, v, 1, SUBSCRIPTION_CAPACITY_MAX) {
                        config.subscription_capacity = usize::try_from(n).unwrap_or(config.subscription_capacity);
                    }
                }
                if let Some(v) = capacity.get("read-buffer") {
                    let key = join(&key, "read-buffer");
                    if let Some(n) = self.integer_in(&key, v, 1, i64::from(u16::MAX)) {
                        config.read_buffer_capacity = u16::try_from(n).unwrap_or(u16::MAX);
                    }
                }
            }
        }

        (self.errors.len() == errors_before).then_some(config)
    }

    pub(super) fn nats_auth(&mut self, path: &str, table: &Table) -> NatsAuth {
        let user_key = join(path, "user");
        let password_key = join(path, "password");
        let credentials_key = join(path, "credentials");

        let user = table.get("user").and_then(|v| {
            let user = self.string(&user_key, v)?;
            if user.is_empty() {
                self.error(&user_key, "must not be empty");
                return None;
            }
            Some(user)
        });
        let password = table.get("password").and_then(|v| {
            let password = self.secret(&password_key, v)?;
            if password.expose().is_empty() {
                self.error(&password_key, "must not be empty");
                return None;
            }
            Some(password)
        });
        let credentials = table.get("credentials").and_then(|v| {
            let credentials = self.secret(&credentials_key, v)?;
            let text = credentials.expose();
            if !(text.contains(CREDS_JWT_MARKER) && text.contains(CREDS_SEED_MARKER)) {
                self.error(
                    &credentials_key,
                    format!(
                        "does not look like the contents of a NATS .creds file (expected the {CREDS_JWT_MARKER} \
                         and {CREDS_SEED_MARKER} blocks); to read a file write \
                         credentials = \"%{{file:/path/to/user.creds}}%\""
                    ),
                );
                return None;
            }
            Some(credentials)
        });

        let token_key = join(path, "token");
        let token = table.get("token").and_then(|v| {
            let token = self.secret(&token_key, v)?;
            if token.expose().is_empty() {
                self.error(&token_key, "must not be empty");
                return None;
            }
            Some(token)
        });

        let (has_user, has_password, has_credentials) = (
            table.contains_key("user"),
            table.contains_key("password"),
            table.contains_key("credentials"),
        );
        if table.contains_key("token") && (has_user || has_password || has_credentials) {
            self.error(
                &token_key,
                "cannot be combined with user/password or credentials: a NATS server takes one way of authenticating",
            );
            return NatsAuth::None;
        }
        if has_credentials && (has_user || has_password) {
            self.error(
                &credentials_key,
                "cannot be combined with user/password: authenticate with either credentials or user and password",
            );
            return NatsAuth::None;
        }
        if has_user && !has_password {
            self.error(
                &password_key,
                format!("missing: {user_key} is set, so a password is required too (set both or neither)"),
            );
        }
        if has_password && !has_user {
            self.error(
                &user_key,
                format!("missing: {password_key} is set, so a user is required too (set both or neither)"),
            );
        }
        match (user, password, credentials, token) {
            (Some(user), Some(password), None, None) => NatsAuth::UserPassword { user, password },
            (None, None, Some(credentials), None) => NatsAuth::Credentials(credentials),
            (None, None, None, Some(token)) => NatsAuth::Token(token),
            _ => NatsAuth::None,
        }
    }

    pub(super) fn addresses(&mut self, key: &str, value: &Value) -> Vec<String> {
        let Some(items) = self.one_or_list(
            key,
            value,
            "give at least one NATS server address, e.g. [\"nats1:4222\"]",
            "a string or a list of strings such as [\"nats1:4222\"]",
            true,
        ) else {
            return Vec::new();
        };
        let mut addresses: Vec<String> = Vec::with_capacity(items.len());
        for (item_key, item) in items {
            let Some(raw) = self.string(&item_key, item) else {
                continue;
            };
            match normalize_address(&raw) {
                Ok(address) if addresses.contains(&address) => {
                    self.error(&item_key, format!("duplicate address {}", quote(&address)));
                }
                Ok(address) => addresses.push(address),
                Err(message) => self.error(&item_key, message),
            }
        }
        addresses
    }

    pub(super) fn reconnects(&mut self, key: &str, value: &Value) -> Option<Reconnects> {
        let n = self.integer(key, value)?;
        if n < 0 {
            self.error(
                key,
                format!("must be 0 (never reconnect) or more, found {n}; remove the key to reconnect forever"),
            );
            return None;
        }
        let Ok(n) = u32::try_from(n) else {
            self.error(key, format!("must be at most {}, found {n}", u32::MAX));
            return None;
        };
        Some(NonZeroU32::new(n).map_or(Reconnects::Never, Reconnects::AtMost))
    }

    pub(super) fn tls(&mut self, key: &str, value: &Value, tls_address: bool) -> TlsConfig {
        let mut tls = TlsConfig::default();
        let Some(table) = self.table(key, value) else {
            return tls;
        };
        self.check_keys(key, table, TLS_KEYS);
        let enable_key = join(key, "enable");
        // `None` when `enable` is present but invalid (already reported).
        let enable = match table.get("enable") {
            Some(v) => self.boolean(&enable_key, v),
            None => Some(false),
        };
        tls.enable = enable.unwrap_or(false);
        let files_used = if tls_address { Some(true) } else { enable };
        tls.ca_file = self.tls_file(key, table, "ca-file", files_used);
        tls.cert_file = self.tls_file(key, table, "cert-file", files_used);
        tls.key_file = self.tls_file(key, table, "key-file", files_used);

        match (table.contains_key("cert-file"), table.contains_key("key-file")) {
            (true, false) => self.error(
                &join(key, "key-file"),
                format!(
                    "missing: {} is set; a client certificate needs both cert-file and key-file",
                    join(key, "cert-file")
                ),
            ),
            (false, true) => self.error(
                &join(key, "cert-file"),
                format!(
                    "missing: {} is set; a client certificate needs both cert-file and key-file",
                    join(key, "key-file")
                ),
            ),
            _ => {}
        }
        tls
    }

    pub(super) fn jetstream(&mut self, key: &str, value: &Value) -> JetStreamConfig {
        let mut js = JetStreamConfig::default();
        let Some(table) = self.table(key, value) else {
            return js;
        };
        self.check_keys(key, table, JETSTREAM_KEYS);
        let enable_key = join(key, "enable");
        // `None` when `enable` is present but invalid (already reported).
        let enable = match table.get("enable") {
            Some(v) => self.boolean(&enable_key, v),
            None => Some(false),
        };
        js.enable = enable.unwrap_or(false);
        if enable == Some(false) {
            // Like tls.*: a setting that would be ignored is a mistake to report, not to swallow.
            for name in JETSTREAM_KEYS
                .iter()
                .filter(|n| **n != "enable" && table.contains_key(**n))
            {
                self.error(
                    &join(key, name),
                    format!(
                        "{enable_key} is false or unset, so this setting would be ignored: set {enable_key} = true"
                    ),
                );
            }
        }
        if let Some(v) = table.get("stream") {
            let stream_key = join(key, "stream");
            if let Some(name) = self.string(&stream_key, v) {
                match check_stream_name(&name) {
                    Ok(()) => js.stream = name,
                    Err(message) => self.error(&stream_key, message),
                }
            }
        }
        if let Some(v) = table.get("max-age") {
            if let Some(d) = self.duration(&join(key, "max-age"), v, "24h", JETSTREAM_MAX_AGE_MIN, None) {
                js.max_age = d;
            }
        }
        if let Some(v) = table.get("storage") {
            let storage_key = join(key, "storage");
            if let Some(text) = self.string(&storage_key, v) {
                match text.as_str() {
                    "file" => js.storage = JetStreamStorage::File,
                    "memory" => js.storage = JetStreamStorage::Memory,
                    other => {
                        let hint = closest(other, JETSTREAM_STORAGES)
                            .map(|s| format!("; did you mean {}?", quote(s)))
                            .unwrap_or_default();
                        self.error(
                            &storage_key,
                            format!("expected \"file\" or \"memory\", found {}{hint}", quote(other)),
                        );
                    }
                }
            }
        }
        if let Some(v) = table.get("replicas") {
            if let Some(n) = self.integer_in(&join(key, "replicas"), v, 1, JETSTREAM_REPLICAS_MAX) {
                js.replicas = u8::try_from(n).unwrap_or(1);
            }
        }
        js
    }

    pub(super) fn tls_file(&mut self, key: &str, table: &Table, name: &str, enable: Option<bool>) -> Option<PathBuf> {
        let value = table.get(name)?;
        let file_key = join(key, name);
        let path = PathBuf::from(self.string(&file_key, value)?);
        if enable == Some(false) {
            self.error(
                &file_key,
                format!(
                    "{} is false or unset and no address is tls://, so this file would be ignored: set tls.enable = true",
                    join(key, "enable")
                ),
            );
        }
        if path.as_os_str().is_empty() {
            self.error(&file_key, "must not be empty: give the path of a PEM file");
            return None;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Some(path),
            Ok(_) => {
                self.error(
                    &file_key,
                    format!(
                        "{} is not a file: give the path of a PEM file",
                        quote(&path.to_string_lossy())
                    ),
                );
                None
            }
            Err(error) => {
                self.error(
                    &file_key,
                    format!("cannot read {}: {error}", quote(&path.to_string_lossy())),
                );
                None
            }
        }
    }
}

/// Normalises one NATS server address to `nats://host:port` or `tls://host:port`.
pub(super) fn normalize_address(raw: &str) -> Result<String, String> {
    // First, before anything echoes the value: it may embed a password.
    if raw.contains('@') {
        return Err(
            "must not embed a user name or password (user:pass@host): use the store's user and password keys \
             (or credentials)"
                .to_string(),
        );
    }
    let shown = quote(raw);
    if raw.is_empty() {
        return Err("empty address: expected host:port, e.g. \"nats1:4222\"".to_string());
    }
    if raw.chars().any(char::is_whitespace) {
        return Err(format!("{shown} contains whitespace"));
    }
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "nats" && scheme != "tls" {
                return Err(format!(
                    "unsupported scheme \"{scheme}://\" in {shown}: allowed schemes are nats:// and tls:// \
                     (no scheme means nats://)"
                ));
            }
            (scheme, rest)
        }
        None => ("nats".to_string(), raw),
    };
    if let Some(at) = rest.find(['/', '?', '#']) {
        return Err(format!(
            "unexpected {} in {shown}: give only host:port, e.g. \"nats://nats1:4222\"",
            quote(&rest[at..])
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(format!("missing ']' after the IPv6 address in {shown}"));
        };
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("{} is not an IPv6 address in {shown}", quote(inside)))?;
        let port = if after.is_empty() {
            NATS_PORT
        } else if let Some(port) = after.strip_prefix(':') {
            parse_port(port, &shown)?
        } else {
            return Err(format!("expected ':port' after ']' in {shown}"));
        };
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            None => (rest, NATS_PORT),
            Some((_, port)) if port.contains(':') => {
                return Err(format!(
                    "{shown} has several ':': IPv6 addresses go in brackets, e.g. \"[::1]:4222\""
                ))
            }
            Some((host, port)) => (host, parse_port(port, &shown)?),
        };
        if host.is_empty() {
            return Err(format!(
                "empty host in {shown}: expected host:port, e.g. \"nats1:4222\""
            ));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(format!(
                "invalid host {} in {shown}: expected a host name or an IP address",
                quote(host)
            ));
        }
        (host.to_string(), port)
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

pub(super) fn parse_port(port: &str, shown: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) => Err(format!("port 0 in {shown}: allowed ports are 1..=65535")),
        Ok(port) => Ok(port),
        Err(_) => Err(format!(
            "invalid port {} in {shown}: allowed ports are 1..=65535",
            quote(port)
        )),
    }
}

/// A literal NATS subject: dot-separated non-empty tokens, no whitespace, no wildcards.
pub(super) fn check_subject(subject: &str) -> Result<(), String> {
    let shown = quote(subject);
    if subject.is_empty() {
        return Err("must not be empty: expected a NATS subject such as \"agora.events\"".to_string());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{shown} contains whitespace: expected a NATS subject such as \"agora.events\""
        ));
    }
    if subject.contains(['*', '>']) {
        return Err(format!(
            "{shown} contains a wildcard (* or >): the events subject must be literal, e.g. \"agora.events\""
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "{shown} has an empty token: tokens are separated by single dots, none at either end"
        ));
    }
    Ok(())
}

/// A JetStream stream name: what the server accepts (no whitespace, `.`, `*`, `>`, path separators).
pub(super) fn check_stream_name(name: &str) -> Result<(), String> {
    let shown = quote(name);
    if name.is_empty() {
        return Err("must not be empty: expected a stream name such as \"AGORA\"".to_string());
    }
    if name.len() > STREAM_NAME_MAX {
        return Err(format!("too long: at most {STREAM_NAME_MAX} bytes"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!(
            "{shown} is not a valid stream name: no whitespace, '.', '*', '>', '/' or '\\' (e.g. \"AGORA\")"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
