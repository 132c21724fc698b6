//! The validated configuration types: what the rest of agora consumes. Parsing lives beside them.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use crate::event::NodeId;

/// A secret value (password, credentials, cluster key): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole node configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The `[cluster]` section.
    pub cluster: ClusterConfig,
    /// The backend `[cluster] coordinator` selects.
    pub backend: Backend,
    /// The `[http]` section.
    pub http: HttpConfig,
    /// The `[stalwart]` section: the Stalwart bus this cluster also speaks, if any.
    pub stalwart: Option<StalwartConfig>,
    /// The `[push]` section: bounds and address rules for push deliveries.
    pub push: PushConfig,
    /// Things the parser ignored on purpose (stores of other types, unrelated sections), to be logged by the caller.
    pub notes: Vec<String>,
}

/// The `[cluster]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// `node-id`; `None` = pick a random one at start (a clash with a live node is detected and reported).
    pub node_id: Option<NodeId>,
    /// `key`: shared secrets authenticating every message; sign with the first, accept any (rotation). Empty = off.
    pub keys: Vec<Secret>,
    /// `heartbeat-interval` (extension, default 1s): how often a node announces itself; a node is considered gone
    /// after three missed heartbeats.
    pub heartbeat_interval: Duration,
}

/// Which transport carries cluster events.
#[derive(Clone, Debug, PartialEq)]
pub enum Backend {
    /// No `coordinator`: a single node; events stay in-process.
    SingleNode,
    /// `coordinator = "<id>"` naming a `[store.<id>]` with `type = "nats"`.
    Nats {
        /// The store id, e.g. `nats`.
        store_id: String,
        /// The store's settings.
        config: Box<NatsConfig>,
    },
}

/// A `[store.<id>]` section with `type = "nats"`: every key of Stalwart's NATS documentation, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct NatsConfig {
    /// `address`: server URLs, normalised to `nats://host:port` or `tls://host:port` (IPv6 hosts in brackets).
    pub addresses: Vec<String>,
    /// `user` / `password` or `credentials`.
    pub auth: NatsAuth,
    /// `no-echo` (default true).
    pub no_echo: bool,
    /// `tls.*`.
    pub tls: TlsConfig,
    /// `timeout.connection` (default 5s).
    pub connection_timeout: Duration,
    /// `timeout.request` (default 10s).
    pub request_timeout: Duration,
    /// `ping-interval` (default 60s).
    pub ping_interval: Duration,
    /// `max-reconnects` (default unlimited; 0 = never reconnect).
    pub max_reconnects: Reconnects,
    /// `capacity.client` (default 2048).
    pub client_capacity: usize,
    /// `capacity.subscription` (default 65536).
    pub subscription_capacity: usize,
    /// `capacity.read-buffer` (default 65535, at most 65535).
    pub read_buffer_capacity: u16,
    /// `subject` (extension, default `agora.events`): the subject carrying this cluster's events; clusters sharing
    /// one NATS deployment use different subjects.
    pub subject: String,
    /// `jetstream.*` (extension): the durable mode, off by default.
    pub jetstream: JetStreamConfig,
}

/// The `jetstream.*` keys of a NATS store: the durable mode. Core NATS forgets a message once it is delivered to
/// whoever listens at that moment; with `jetstream.enable = true` every batch is stored in a JetStream stream and
/// every node reads it through its own durable consumer, so a node that was away gets what it missed, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct JetStreamConfig {
    /// `jetstream.enable` (default false).
    pub enable: bool,
    /// `jetstream.stream` (default `AGORA`): the stream bound to the cluster subject. Clusters sharing one NATS
    /// deployment use different subjects and streams.
    pub stream: String,
    /// `jetstream.max-age` (default 24h): how long events are kept, so how long a node may be away and still catch
    /// up. Also how long the durable consumer of a node that stopped for good is kept.
    pub max_age: Duration,
    /// `jetstream.storage` (default file): memory streams are lost when the server restarts.
    pub storage: JetStreamStorage,
    /// `jetstream.replicas` (default 1, 1..=5): copies of the stream in a JetStream cluster; 3 survives the loss of
    /// one server.
    pub replicas: u8,
}

/// `jetstream.storage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JetStreamStorage {
    /// `"file"`: survives server restarts.
    File,
    /// `"memory"`: faster, lost when the server restarts.
    Memory,
}

impl JetStreamStorage {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JetStreamStorage::File => "file",
            JetStreamStorage::Memory => "memory",
        }
    }
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            enable: false,
            stream: "AGORA".to_string(),
            max_age: Duration::from_secs(24 * 3600),
            storage: JetStreamStorage::File,
            replicas: 1,
        }
    }
}

/// How the NATS connection authenticates.
#[derive(Clone, Debug, PartialEq)]
pub enum NatsAuth {
    /// No credentials.
    None,
    /// `user` and `password`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `credentials`: the contents of a NATS `.creds` file (user JWT + NKEY seed).
    Credentials(Secret),
    /// `token`: NATS token authentication (Stalwart 0.16 sends its `credentials` setting this way).
    Token(Secret),
}

/// The `tls.*` keys of a NATS store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TlsConfig {
    /// `tls.enable` (default false): require TLS.
    pub enable: bool,
    /// `tls.ca-file` (extension): PEM CA bundle to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// `tls.cert-file` (extension): PEM client certificate, for servers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// `tls.key-file` (extension): PEM key of the client certificate.
    pub key_file: Option<PathBuf>,
}

/// `max-reconnects`, as Stalwart's documentation defines it (not as async-nats reads it, where 0 means unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reconnects {
    /// Absent: reconnect forever.
    Unlimited,
    /// `0`: after the first loss the node stays disconnected and says so.
    Never,
    /// `N`: at most N attempts per loss, then disconnected for good.
    AtMost(NonZeroU32),
}

/// The `[stalwart]` section: agora also reads (and, for the `forward` types, writes) a Stalwart cluster's bus.
#[derive(Clone, Debug, PartialEq)]
pub struct StalwartConfig {
    /// The Stalwart release whose bus format agora speaks: the format has no version byte and changed inside 0.16.x.
    pub version: crate::stalwart::StalwartVersion,
    /// The Stalwart subject (default `stwt.agora`, which Stalwart hard-codes).
    pub subject: String,
    /// The node id agora's batches carry on the Stalwart bus; required when `forward` is not empty. Any u16: Stalwart
    /// 0.16 leases ids from 0.
    pub node_id: Option<u16>,
    /// The agora event types that their origin node also publishes on the Stalwart bus (default none: read only).
    pub forward: Vec<&'static str>,
}

/// The `[http]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// `listen` (default 127.0.0.1:7911).
    pub listen: SocketAddr,
    /// `token`: bearer tokens, any of which is accepted (a list rotates); empty = no authentication, which is
    /// allowed only on a loopback `listen`.
    pub tokens: Vec<Secret>,
    /// `cors-origins`: browser origins allowed to call the API (exact `scheme://host[:port]`); default none.
    pub cors_origins: Vec<String>,
    /// `journal-events`: notifications kept for clients that resume a stream (default 600,000: a minute at
    /// 10,000 events/s).
    pub journal_events: usize,
    /// `journal-bytes`: the same bound in bytes (default 128 MiB).
    pub journal_bytes: usize,
    /// `min-block-prefix-v4` / `-v6`: blocks broader than these prefixes (default /8 and /32) are refused unless the
    /// request says `"force": true`, so that one mistyped request cannot block the internet cluster-wide.
    pub min_block_prefix: (u8, u8),
    /// `max-connections`: open HTTP connections at most (default 10,000); beyond it new connections get 503 with
    /// `Retry-After`, except `GET /healthz`, which is still answered.
    pub max_connections: usize,
    /// `max-streams`: open SSE streams at most (default 20,000); beyond it 503 with `Retry-After`.
    pub max_streams: usize,
    /// `header-timeout`: how long a client may take to send its request headers (default 10s): slowloris bound.
    pub header_timeout: Duration,
    /// `body-timeout`: how long a client may take to send a request body (default 30s).
    pub body_timeout: Duration,
    /// `tls.cert-file` and `tls.key-file`: serve HTTPS with this PEM chain and key (reloaded when they change).
    pub tls: Option<HttpTls>,
    /// `[http.clients]`: scoped client tokens for end clients' own streams; `None`: only the node token works.
    pub clients: Option<ClientTokensConfig>,
}

/// `[http.clients]`: who may sign the JWTs that let one end client (a browser, a phone) read its own accounts'
/// EventSource stream without the node token.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientTokensConfig {
    /// `hmac-keys`: HS256 secrets, each at least 32 bytes; every listed key is accepted (rotation). Never printed.
    pub hmac_keys: Vec<Secret>,
    /// `public-key-files`: where the public keys were read from (shown by `check-config`).
    pub public_key_files: Vec<PathBuf>,
    /// The keys of `public-key-files`, in the same order; each key's kind decides its algorithm.
    pub public_keys: Vec<ClientPublicKey>,
    /// `issuer`: when set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// `audience`: when set, a token's `aud` must be (or contain) it.
    pub audience: Option<String>,
    /// `max-token-lifetime` (default 24h): a token living longer (`exp - iat`, or `exp - now` without `iat`) is
    /// refused, so a revocation held this long outlives every token it covers.
    pub max_token_lifetime: Duration,
    /// `max-revocations` (default 100,000): revocations held at most; past it a new one is refused (507).
    pub max_revocations: usize,
}

impl Default for ClientTokensConfig {
    fn default() -> Self {
        ClientTokensConfig {
            hmac_keys: Vec::new(),
            public_key_files: Vec::new(),
            public_keys: Vec::new(),
            issuer: None,
            audience: None,
            max_token_lifetime: Duration::from_secs(24 * 3600),
            max_revocations: 100_000,
        }
    }
}

/// A public key of `[http.clients] public-key-files`; its kind pins the one algorithm tokens signed with it may use.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientPublicKey {
    /// A P-256 key, as a 65-byte uncompressed SEC1 point: ES256.
    P256(Vec<u8>),
    /// An Ed25519 key: EdDSA.
    Ed25519([u8; 32]),
}

impl fmt::Debug for ClientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientPublicKey::P256(_) => "ClientPublicKey(ES256 P-256)",
            ClientPublicKey::Ed25519(_) => "ClientPublicKey(EdDSA Ed25519)",
        })
    }
}

/// The `[push]` section: what a push subscription may cost the cluster and where a node may send it.
///
/// Push URLs come from API clients, so a node POSTing to them must not become a way into the networks it can reach
/// (server-side request forgery): only addresses on the public internet are delivered to unless the operator allows
/// more here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushConfig {
    /// `max-subscriptions-per-account` (default 100, like JMAP servers): registrations beyond it are refused, and a
    /// state change is pushed to at most this many subscriptions of its account (the first by id), so one account
    /// cannot make a node send thousands of POSTs per change.
    pub max_subscriptions_per_account: usize,
    /// `allow-networks` (default none): networks push deliveries may reach although they are not public (loopback,
    /// private, link-local...), e.g. `["10.0.0.0/8"]` for push gateways inside the operator's network.
    pub allow_networks: Vec<ipnet::IpNet>,
    /// `vapid-key-file` and `vapid-subject`: the key every push is signed with (RFC 8292), if any.
    pub vapid: Option<VapidConfig>,
    /// `ttl` (default 1d): the `TTL` header of every push (RFC 8030 section 5.2), how long a push service keeps a
    /// push for a device that is offline.
    pub ttl: Duration,
    /// `max-expiry` (default 7d): a JMAP subscription's `expires` is clamped to now + this (RFC 8620 lets the server
    /// shorten it); a JMAP subscription without `expires` gets it.
    pub max_expiry: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_subscriptions_per_account: 100,
            allow_networks: Vec::new(),
            vapid: None,
            ttl: Duration::from_secs(24 * 3600),
            max_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[push] vapid-key-file` and `vapid-subject`: who the node says it is to push services (RFC 8292).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VapidConfig {
    /// Where the key was read from (shown by `check-config`; the key itself never is).
    pub key_file: PathBuf,
    /// The key.
    pub key: VapidKey,
    /// `vapid-subject`: a `mailto:` or `https:` URI a push service can reach the operator at (the JWT's `sub`).
    pub subject: String,
}

/// A VAPID private key: a P-256 scalar. Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct VapidKey(p256::SecretKey);

impl VapidKey {
    /// Parses a PEM P-256 private key, SEC1 (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes) or PKCS#8
    /// (`PRIVATE KEY`). The error never quotes the input.
    pub fn from_pem(pem: &str) -> Result<Self, &'static str> {
        use p256::pkcs8::DecodePrivateKey;
        // The key's own block only: `openssl ecparam -genkey` writes an EC PARAMETERS block before it.
        let block = |label: &str| {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            let start = pem.find(&begin)?;
            let stop = pem[start..].find(&end)? + start + end.len();
            Some(&pem[start..stop])
        };
        if let Some(sec1) = block("EC PRIVATE KEY") {
            p256::SecretKey::from_sec1_pem(sec1)
                .map(VapidKey)
                .map_err(|_| "its EC PRIVATE KEY block is not a P-256 (prime256v1) key")
        } else if let Some(pkcs8) = block("PRIVATE KEY") {
            p256::SecretKey::from_pkcs8_pem(pkcs8)
                .map(VapidKey)
                .map_err(|_| "its PRIVATE KEY block is not a P-256 (prime256v1) key")
        } else {
            Err("it holds no PEM private key (\"-----BEGIN EC PRIVATE KEY-----\" or \"-----BEGIN PRIVATE KEY-----\")")
        }
    }

    /// The private key, for the one place that signs.
    pub fn secret(&self) -> &p256::SecretKey {
        &self.0
    }

    /// The public key as a 65-byte uncompressed point: the `applicationServerKey` and the `k=` of every push.
    pub fn public_key(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        self.0.public_key().to_encoded_point(false).as_bytes().to_vec()
    }
}

impl PartialEq for VapidKey {
    fn eq(&self, other: &Self) -> bool {
        self.public_key() == other.public_key()
    }
}

impl Eq for VapidKey {}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VapidKey(<redacted>)")
    }
}

/// The API's own certificate: `[http] tls.cert-file` (PEM chain, leaf first) and `tls.key-file` (PEM key).
#[derive(Clone, Debug, PartialEq)]
pub struct HttpTls {
    /// The certificate chain.
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7911)),
            tokens: Vec::new(),
            cors_origins: Vec::new(),
            journal_events: 600_000,
            journal_bytes: 128 << 20,
            min_block_prefix: (8, 32),
            max_connections: 10_000,
            max_streams: 20_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            tls: None,
            clients: None,
        }
    }
}

impl HttpConfig {
    /// The exposure rule: an API reachable from other hosts must require a token. `Err` names the key to set.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "http.token: the API listens on {}, which other hosts can reach, but no token is set: anyone could \
                 block addresses cluster-wide or read every account's changes; set [http] token (e.g. token = \
                 \"%{{env:AGORA_HTTP_TOKEN}}%\") or listen on a loopback address",
                self.listen
            ));
        }
        Ok(())
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: None,
            keys: Vec::new(),
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

impl Default for Config {
    /// A single node with every default: what `agora node` runs without `--config`.
    fn default() -> Self {
        Config {
            cluster: ClusterConfig::default(),
            backend: Backend::SingleNode,
            http: HttpConfig::default(),
            stalwart: None,
            push: PushConfig::default(),
            notes: Vec::new(),
        }
    }
}

impl Config {
    /// A cluster over one NATS store (id `nats`) with these settings and every other default: what a minimal
    /// configuration file gives, for programs and tests that build their configuration in code.
    pub fn nats(nats: NatsConfig) -> Config {
        Config {
            backend: Backend::Nats {
                store_id: "nats".into(),
                config: Box::new(nats),
            },
            ..Config::default()
        }
    }
}

impl NatsConfig {
    /// The seed's defaults for everything but the addresses.
    pub fn with_addresses(addresses: Vec<String>) -> Self {
        NatsConfig {
            addresses,
            auth: NatsAuth::None,
            no_echo: true,
            tls: TlsConfig::default(),
            connection_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(60),
            max_reconnects: Reconnects::Unlimited,
            client_capacity: 2048,
            subscription_capacity: 65536,
            read_buffer_capacity: 65535,
            subject: "agora.events".to_string(),
            jetstream: JetStreamConfig::default(),
        }
    }
}
