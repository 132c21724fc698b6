//! The `[http]` section: the local API's listen address, tokens, CORS origins, limits, timeouts and TLS files
//! (`[http.clients]`, the end clients' tokens, is in `clients`).

use std::net::SocketAddr;
use std::time::Duration;

use toml::Value;

use super::keys::quote;
use super::parse::Walker;
use super::types::{HttpConfig, HttpTls, Secret};

/// Keys of `[http]`.
const HTTP_KEYS: &[&str] = &[
    "listen",
    "token",
    "cors-origins",
    "journal-events",
    "journal-bytes",
    "min-block-prefix-v4",
    "min-block-prefix-v6",
    "max-connections",
    "max-streams",
    "header-timeout",
    "body-timeout",
    "tls",
    "clients",
];

/// Keys of `[http] tls`.
const HTTP_TLS_KEYS: &[&str] = &["cert-file", "key-file"];

impl Walker {
    /// `[http]`: the local API's listen address, tokens, browser origins, limits and timeouts, and optional HTTPS.
    pub(super) fn http(&mut self, value: Option<&Value>) -> HttpConfig {
        let mut http = HttpConfig::default();
        let Some(table) = value.and_then(|v| self.table("http", v)) else {
            return http;
        };
        self.check_keys("http", table, HTTP_KEYS);
        if let Some(v) = table.get("listen") {
            if let Some(text) = self.string("http.listen", v) {
                match text.parse::<SocketAddr>() {
                    Ok(addr) => http.listen = addr,
                    Err(_) => self.error(
                        "http.listen",
                        format!(
                            "expected a socket address ip:port such as \"127.0.0.1:7911\" or \"[::1]:7911\", found {}",
                            quote(&text)
                        ),
                    ),
                }
            }
        }
        if let Some(v) = table.get("token") {
            if let Some(tokens) = self.http_tokens(v) {
                http.tokens = tokens;
            }
        }
        if let Some(v) = table.get("cors-origins") {
            http.cors_origins = self.cors_origins(v);
        }
        if let Some(n) = table
            .get("journal-events")
            .and_then(|v| self.integer_in("http.journal-events", v, 1, 100_000_000))
        {
            http.journal_events = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = table
            .get("journal-bytes")
            .and_then(|v| self.integer_in("http.journal-bytes", v, 1 << 20, 1 << 40))
        {
            http.journal_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = table
            .get("min-block-prefix-v4")
            .and_then(|v| self.integer_in("http.min-block-prefix-v4", v, 0, 32))
        {
            http.min_block_prefix.0 = u8::try_from(n).unwrap_or(32);
        }
        if let Some(n) = table
            .get("max-connections")
            .and_then(|v| self.integer_in("http.max-connections", v, 16, 1_000_000))
        {
            http.max_connections = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = table
            .get("max-streams")
            .and_then(|v| self.integer_in("http.max-streams", v, 1, 1_000_000))
        {
            http.max_streams = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let max = Some(Duration::from_secs(600));
        if let Some(d) = table
            .get("header-timeout")
            .and_then(|v| self.duration("http.header-timeout", v, "10s", Duration::from_millis(100), max))
        {
            http.header_timeout = d;
        }
        if let Some(d) = table
            .get("body-timeout")
            .and_then(|v| self.duration("http.body-timeout", v, "30s", Duration::from_millis(100), max))
        {
            http.body_timeout = d;
        }
        if let Some(n) = table
            .get("min-block-prefix-v6")
            .and_then(|v| self.integer_in("http.min-block-prefix-v6", v, 0, 128))
        {
            http.min_block_prefix.1 = u8::try_from(n).unwrap_or(128);
        }
        if let Some(v) = table.get("tls") {
            http.tls = self.http_tls(v);
        }
        if let Some(v) = table.get("clients") {
            http.clients = self.http_clients(v);
        }
        if let Err(message) = http.check_exposure() {
            self.error("http.token", message.trim_start_matches("http.token: ").to_string());
        }
        http
    }

    /// `[http] tls`: both files must be given and readable now, so that a typo fails at start and not at the
    /// first HTTPS client.
    fn http_tls(&mut self, value: &Value) -> Option<HttpTls> {
        let table = self.table("http.tls", value)?;
        self.check_keys("http.tls", table, HTTP_TLS_KEYS);
        let mut path = |key: &str| -> Option<std::path::PathBuf> {
            let full = format!("http.tls.{key}");
            let Some(v) = table.get(key) else {
                self.error(&full, "missing: HTTPS needs both tls.cert-file and tls.key-file");
                return None;
            };
            let text = self.string(&full, v)?;
            let path = std::path::PathBuf::from(&text);
            if !path.is_file() {
                self.error(&full, format!("{} is not a readable file", quote(&text)));
                return None;
            }
            Some(path)
        };
        let (cert_file, key_file) = (path("cert-file"), path("key-file"));
        Some(HttpTls {
            cert_file: cert_file?,
            key_file: key_file?,
        })
    }

    /// `[http] token`: one or a list (several for rotation); each travels in an HTTP header, so no whitespace.
    fn http_tokens(&mut self, value: &Value) -> Option<Vec<Secret>> {
        let items = self.one_or_list(
            "http.token",
            value,
            "give at least one token, or remove `token` (allowed only on a loopback listen)",
            "a string or a list of strings",
            false,
        )?;
        let mut tokens = Vec::with_capacity(items.len());
        for (key, item) in items {
            let token = self.secret(&key, item)?;
            if token.expose().is_empty() || token.expose().chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    &key,
                    "must be non-empty and contain no spaces or control characters (it travels in an HTTP header)",
                );
                return None;
            }
            tokens.push(token);
        }
        Some(tokens)
    }

    /// `[http] cors-origins`: bare origins (`scheme://host[:port]`), the form a browser's `Origin` header has.
    fn cors_origins(&mut self, value: &Value) -> Vec<String> {
        let Some(items) = self.one_or_list(
            "http.cors-origins",
            value,
            "list the browser origins allowed, e.g. [\"https://webmail.example.com\"], or remove the key",
            "a list of origins such as [\"https://webmail.example.com\"]",
            true,
        ) else {
            return Vec::new();
        };
        let mut origins = Vec::new();
        for (key, item) in items {
            let Some(origin) = self.string(&key, item) else {
                continue;
            };
            let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains('/')
            });
            if valid {
                origins.push(origin);
            } else {
                self.error(
                    &key,
                    format!(
                        "{} is not an origin: expected scheme://host[:port] with no path, e.g. \"https://webmail.example.com\"",
                        quote(&origin)
                    ),
                );
            }
        }
        origins
    }
}
