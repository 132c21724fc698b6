//! `check-config` output: the effective configuration, defaults filled in, secrets redacted, as TOML.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::keys::{quote, store_key};
use super::types::{Backend, ClientTokensConfig, Config, JetStreamConfig, NatsAuth, NatsConfig, Reconnects};

/// What a password is shown as.
const REDACTED: &str = "<redacted>";
/// What a cluster key is shown as: long enough (16 bytes) for the output to parse back.
const REDACTED_KEY: &str = "<redacted cluster key>";
/// What an HS256 client-token key is shown as: long enough (32 bytes) for the output to parse back.
const REDACTED_HMAC_KEY: &str = "<redacted HS256 client-token key>";
/// What credentials are shown as: the shape of a `.creds` file, so that the output parses back.
const REDACTED_CREDENTIALS: &str = "\"\"\"\n-----BEGIN NATS USER JWT-----\n<redacted>\n------END NATS USER JWT------\n\
-----BEGIN USER NKEY SEED-----\n<redacted>\n------END USER NKEY SEED------\n\"\"\"";

impl Config {
    /// The effective configuration as TOML, every default filled in and every secret replaced by `<redacted>`:
    /// what `check-config` prints. The output parses back with [`parse`](crate::config::parse()) to the same settings (but
    /// placeholder secrets).
    pub fn to_redacted_toml(&self) -> String {
        let mut out = String::new();
        // `write!` to a String cannot fail.
        let _ = self.render(&mut out);
        out
    }

    fn render(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "# agora effective configuration (defaults filled in, secrets redacted)"
        )?;
        for note in &self.notes {
            writeln!(out, "# note: {}", note.replace(['\n', '\r'], " "))?;
        }
        writeln!(out)?;

        writeln!(out, "[cluster]")?;
        match &self.backend {
            Backend::SingleNode => writeln!(out, "# coordinator unset: single-node mode")?,
            Backend::Nats { store_id, .. } => writeln!(out, "coordinator = {}", quote(store_id))?,
        }
        match self.cluster.node_id {
            Some(id) => writeln!(out, "node-id = {}", id.get())?,
            None => writeln!(out, "# node-id unset: random at start")?,
        }
        match self.cluster.keys.len() {
            0 => writeln!(out, "# key unset: messages are not authenticated")?,
            1 => writeln!(out, "key = {}", quote(REDACTED_KEY))?,
            n => {
                let keys = vec![quote(REDACTED_KEY); n];
                writeln!(out, "key = [{}]", keys.join(", "))?;
            }
        }
        writeln!(
            out,
            "heartbeat-interval = {}",
            duration(self.cluster.heartbeat_interval)
        )?;

        if let Backend::Nats { store_id, config } = &self.backend {
            render_nats(out, &store_key(store_id), config)?;
        }

        writeln!(out)?;
        writeln!(out, "[http]")?;
        writeln!(out, "listen = {}", quote(&self.http.listen.to_string()))?;
        match self.http.tokens.len() {
            0 => writeln!(out, "# no token: no authentication (loopback only)")?,
            n => {
                let redacted: Vec<String> = (0..n).map(|_| quote(REDACTED)).collect();
                writeln!(out, "token = [{}]", redacted.join(", "))?;
            }
        }
        writeln!(out, "journal-events = {}", self.http.journal_events)?;
        writeln!(out, "journal-bytes = {}", self.http.journal_bytes)?;
        writeln!(out, "min-block-prefix-v4 = {}", self.http.min_block_prefix.0)?;
        writeln!(out, "min-block-prefix-v6 = {}", self.http.min_block_prefix.1)?;
        writeln!(out, "max-connections = {}", self.http.max_connections)?;
        writeln!(out, "max-streams = {}", self.http.max_streams)?;
        writeln!(out, "header-timeout = {}", duration(self.http.header_timeout))?;
        writeln!(out, "body-timeout = {}", duration(self.http.body_timeout))?;
        if let Some(tls) = &self.http.tls {
            writeln!(out, "tls.cert-file = {}", quote(&tls.cert_file.display().to_string()))?;
            writeln!(out, "tls.key-file = {}", quote(&tls.key_file.display().to_string()))?;
        }
        if self.http.cors_origins.is_empty() {
            writeln!(out, "# no cors-origins: browsers on other origins cannot call the API")?;
        } else {
            let origins: Vec<String> = self.http.cors_origins.iter().map(|o| quote(o)).collect();
            writeln!(out, "cors-origins = [{}]", origins.join(", "))?;
        }
        if let Some(clients) = &self.http.clients {
            render_clients(out, clients)?;
        }
        writeln!(out)?;
        writeln!(out, "[push]")?;
        writeln!(
            out,
            "max-subscriptions-per-account = {}",
            self.push.max_subscriptions_per_account
        )?;
        if self.push.allow_networks.is_empty() {
            writeln!(
                out,
                "# no allow-networks: pushes reach public addresses only (no loopback, private, link-local...)"
            )?;
        }
        let allowed: Vec<String> = self.push.allow_networks.iter().map(|n| quote(&n.to_string())).collect();
        writeln!(out, "allow-networks = [{}]", allowed.join(", "))?;
        match &self.push.vapid {
            Some(vapid) => {
                // The path and the public key only: the private key is never shown.
                writeln!(out, "vapid-key-file = {}", path(&vapid.key_file))?;
                writeln!(out, "vapid-subject = {}", quote(&vapid.subject))?;
            }
            None => writeln!(
                out,
                "# no vapid-key-file: pushes are not signed (push services that require VAPID refuse them)"
            )?,
        }
        writeln!(out, "ttl = {}", duration(self.push.ttl))?;
        writeln!(out, "max-expiry = {}", duration(self.push.max_expiry))?;
        if let Some(stalwart) = &self.stalwart {
            writeln!(out)?;
            writeln!(out, "[stalwart]")?;
            writeln!(out, "version = {}", quote(&stalwart.version.to_string()))?;
            writeln!(out, "subject = {}", quote(&stalwart.subject))?;
            match stalwart.node_id {
                Some(id) => writeln!(out, "node-id = {id}")?,
                None => writeln!(out, "# node-id unset: read only")?,
            }
            let forward: Vec<String> = stalwart.forward.iter().map(|f| quote(f)).collect();
            writeln!(out, "forward = [{}]", forward.join(", "))?;
        }
        Ok(())
    }
}

/// `[http.clients]`: the number of HS256 keys (never the keys), the public key files, the claims checked, the bounds.
fn render_clients(out: &mut String, clients: &ClientTokensConfig) -> std::fmt::Result {
    writeln!(out)?;
    writeln!(out, "[http.clients]")?;
    let n = clients.hmac_keys.len();
    if n > 0 {
        writeln!(out, "# {n} HS256 key{} (redacted)", if n == 1 { "" } else { "s" })?;
        writeln!(out, "hmac-keys = [{}]", vec![quote(REDACTED_HMAC_KEY); n].join(", "))?;
    }
    if !clients.public_key_files.is_empty() {
        let kinds: Vec<String> = clients.public_keys.iter().map(|k| format!("{k:?}")).collect();
        writeln!(out, "# public keys: {}", kinds.join(", "))?;
        let files: Vec<String> = clients.public_key_files.iter().map(|p| path(p)).collect();
        writeln!(out, "public-key-files = [{}]", files.join(", "))?;
    }
    match &clients.issuer {
        Some(issuer) => writeln!(out, "issuer = {}", quote(issuer))?,
        None => writeln!(out, "# issuer unset: `iss` is not checked")?,
    }
    match &clients.audience {
        Some(audience) => writeln!(out, "audience = {}", quote(audience))?,
        None => writeln!(out, "# audience unset: `aud` is not checked")?,
    }
    writeln!(out, "max-token-lifetime = {}", duration(clients.max_token_lifetime))?;
    writeln!(out, "max-revocations = {}", clients.max_revocations)
}

fn render_nats(out: &mut String, key: &str, nats: &NatsConfig) -> std::fmt::Result {
    writeln!(out)?;
    writeln!(out, "[{key}]")?;
    writeln!(out, "type = \"nats\"")?;
    let addresses: Vec<String> = nats.addresses.iter().map(|a| quote(a)).collect();
    writeln!(out, "address = [{}]", addresses.join(", "))?;
    match &nats.auth {
        NatsAuth::None => writeln!(out, "# no user/password or credentials")?,
        NatsAuth::UserPassword { user, .. } => {
            writeln!(out, "user = {}", quote(user))?;
            writeln!(out, "password = {}", quote(REDACTED))?;
        }
        NatsAuth::Credentials(_) => writeln!(out, "credentials = {REDACTED_CREDENTIALS}")?,
        NatsAuth::Token(_) => writeln!(out, "token = {}", quote(REDACTED))?,
    }
    writeln!(out, "no-echo = {}", nats.no_echo)?;
    writeln!(out, "ping-interval = {}", duration(nats.ping_interval))?;
    match nats.max_reconnects {
        Reconnects::Unlimited => writeln!(out, "# max-reconnects unset: unlimited (reconnect forever)")?,
        Reconnects::Never => writeln!(out, "max-reconnects = 0 # never reconnect")?,
        Reconnects::AtMost(n) => writeln!(out, "max-reconnects = {n}")?,
    }
    writeln!(out, "subject = {}", quote(&nats.subject))?;
    writeln!(out, "tls.enable = {}", nats.tls.enable)?;
    for (name, file) in [
        ("ca-file", &nats.tls.ca_file),
        ("cert-file", &nats.tls.cert_file),
        ("key-file", &nats.tls.key_file),
    ] {
        if let Some(file) = file {
            writeln!(out, "tls.{name} = {}", path(file))?;
        }
    }

    let js = &nats.jetstream;
    if js.enable {
        writeln!(out, "jetstream.enable = true")?;
        writeln!(out, "jetstream.stream = {}", quote(&js.stream))?;
        writeln!(out, "jetstream.max-age = {}", duration(js.max_age))?;
        writeln!(out, "jetstream.storage = {}", quote(js.storage.as_str()))?;
        writeln!(out, "jetstream.replicas = {}", js.replicas)?;
    } else {
        // The other keys are rejected while the durable mode is off, so their defaults are shown as a comment.
        let d = JetStreamConfig::default();
        writeln!(out, "jetstream.enable = false")?;
        writeln!(
            out,
            "# durable mode off; when enabled: jetstream.stream = {}, jetstream.max-age = {}, jetstream.storage = {}, \
             jetstream.replicas = {}",
            quote(&d.stream),
            duration(d.max_age),
            quote(d.storage.as_str()),
            d.replicas
        )?;
    }

    writeln!(out)?;
    writeln!(out, "[{key}.timeout]")?;
    writeln!(out, "connection = {}", duration(nats.connection_timeout))?;
    writeln!(out, "request = {}", duration(nats.request_timeout))?;

    writeln!(out)?;
    writeln!(out, "[{key}.capacity]")?;
    writeln!(out, "client = {}", nats.client_capacity)?;
    writeln!(out, "subscription = {}", nats.subscription_capacity)?;
    writeln!(out, "read-buffer = {}", nats.read_buffer_capacity)?;
    Ok(())
}

fn duration(d: Duration) -> String {
    quote(&humantime::format_duration(d).to_string())
}

fn path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}
