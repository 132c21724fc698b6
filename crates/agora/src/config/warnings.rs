//! Settings that are valid but risky, named at start (log) and by `check-config`.

use super::types::{Backend, Config};

impl Config {
    /// What an operator should know about this configuration's exposure, one line each; empty when nothing is risky.
    ///
    /// Without `[cluster] key` a node believes whatever arrives on the cluster subject. That is fine while only this
    /// cluster can reach the NATS server (one host, loopback); once the server is reachable from elsewhere, anything
    /// that can publish there can inject events, appear as a node, and receive the state a joining node is sent
    /// (push URLs included).
    pub fn security_warnings(&self) -> Vec<String> {
        let Backend::Nats { store_id, config } = &self.backend else {
            return Vec::new();
        };
        if !self.cluster.keys.is_empty() {
            return Vec::new();
        }
        let exposed: Vec<&str> = config
            .addresses
            .iter()
            .map(String::as_str)
            .filter(|address| !is_loopback_address(address))
            .collect();
        if exposed.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "[cluster] key is not set and store.{store_id}.address {} is not a loopback address: anything that can \
             publish on subject {:?} of that server can inject events, appear as a node and receive the replicated \
             state (push URLs included); set [cluster] key (the same secret on every node)",
            exposed.join(", "),
            config.subject
        )]
    }
}

/// Whether a NATS address (`nats://user:pass@host:port`, `host:port`, `host`, `[::1]:4222`) names a loopback host.
pub fn is_loopback_address(address: &str) -> bool {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = if let Some(bracketed) = rest.strip_prefix('[') {
        bracketed.split_once(']').map_or(bracketed, |(host, _)| host)
    } else if rest.matches(':').count() > 1 {
        rest // a bare IPv6 address
    } else {
        rest.split_once(':').map_or(rest, |(host, _)| host)
    };
    let host = host.trim_end_matches('/');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses_are_recognised_in_every_form() {
        for loopback in [
            "127.0.0.1",
            "127.0.0.1:4222",
            "nats://127.0.0.1:4222",
            "nats://u:p@localhost:4222",
            "tls://[::1]:4222",
            "::1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_address(loopback), "{loopback}");
        }
        for exposed in [
            "10.0.0.5:4222",
            "nats://nats.example.com:4222",
            "nats://127.0.0.1.example.com",
            "[2001:db8::1]:4222",
            "0.0.0.0",
        ] {
            assert!(!is_loopback_address(exposed), "{exposed}");
        }
    }
}
