//! The configuration parser, through the public API only.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use agora::config::{
    load, parse, Backend, Config, ConfigErrors, JetStreamConfig, JetStreamStorage, NatsAuth, NatsConfig, PushConfig,
    Reconnects,
};

const SEED: &str = r#"[store."nats"]
type = "nats"
address = ["nats1:4222", "nats2:4222"]
user = "nats-user"
password = "nats-password"
ping-interval = "60s"
max-reconnects = 0
no-echo = true
tls.enable = false

[store."nats".timeout]
connection = "5s"
request = "10s"

[store."nats".capacity]
client = 2048
subscription = 65536
read-buffer = 65535

[cluster]
coordinator = "nats"
"#;

const CREDS: &str = "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.creds-jwt-body\n\
------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY\n\
------END USER NKEY SEED------\n";

/// A config whose coordinator is a nats store with `address = "nats1"` plus `store_lines`.
fn nats(store_lines: &str) -> String {
    format!(
        "[cluster]\ncoordinator = \"nats\"\n\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"nats1\"\n{store_lines}\n"
    )
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(errors) => panic!("unexpected errors:\n{errors}\n--- in:\n{text}"),
    }
}

fn nats_config(config: &Config) -> &NatsConfig {
    match &config.backend {
        Backend::Nats { config, .. } => config,
        Backend::SingleNode => panic!("expected a nats backend"),
    }
}

fn errors(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(config) => panic!("expected errors, got {config:?}\n--- in:\n{text}"),
        Err(errors) => errors,
    }
}

/// Asserts that parsing `text` fails with an error at `key` whose Display contains every fragment; returns its
/// Display.
#[track_caller]
fn assert_error(text: &str, key: &str, fragments: &[&str]) -> String {
    let errors = errors(text);
    let Some(error) = errors.errors().iter().find(|e| e.key() == key) else {
        panic!("no error at {key}; got:\n{errors}");
    };
    let shown = error.to_string();
    assert!(shown.starts_with(&format!("{key}: ")), "{shown}");
    for fragment in fragments {
        assert!(shown.contains(fragment), "{fragment:?} missing from {shown:?}");
    }
    shown
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("agora-config-test-{}-{name}", std::process::id()))
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

// ----- the documented example and defaults ------------------------------------------------------------------

#[test]
fn seed_example_parses() {
    let config = ok(SEED);
    let Backend::Nats { store_id, config: nats } = &config.backend else {
        panic!("expected nats, got {:?}", config.backend);
    };
    assert_eq!(store_id, "nats");
    let mut expected =
        NatsConfig::with_addresses(vec!["nats://nats1:4222".to_string(), "nats://nats2:4222".to_string()]);
    expected.auth = NatsAuth::UserPassword {
        user: "nats-user".to_string(),
        password: agora::config::Secret::new("nats-password"),
    };
    expected.max_reconnects = Reconnects::Never;
    assert_eq!(**nats, expected);
    assert_eq!(config.cluster.node_id, None);
    assert!(config.cluster.keys.is_empty());
    assert_eq!(config.cluster.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:7911");
    assert!(config.notes.is_empty(), "{:?}", config.notes);
}

#[test]
fn defaults_when_keys_are_absent() {
    let config = ok(&nats(""));
    let nats = nats_config(&config);
    assert_eq!(nats.addresses, ["nats://nats1:4222"]);
    assert_eq!(nats.auth, NatsAuth::None);
    assert_eq!(nats.connection_timeout, Duration::from_secs(5));
    assert_eq!(nats.request_timeout, Duration::from_secs(10));
    assert_eq!(nats.ping_interval, Duration::from_secs(60));
    assert_eq!(nats.max_reconnects, Reconnects::Unlimited);
    assert_eq!(nats.client_capacity, 2048);
    assert_eq!(nats.subscription_capacity, 65536);
    assert_eq!(nats.read_buffer_capacity, 65535);
    assert!(nats.no_echo);
    assert!(!nats.tls.enable);
    assert_eq!(nats.tls.ca_file, None);
    assert_eq!(nats.subject, "agora.events");
    assert_eq!(*nats, NatsConfig::with_addresses(vec!["nats://nats1:4222".to_string()]));
}

#[test]
fn empty_file_is_a_single_node_with_defaults() {
    let config = ok("");
    assert_eq!(config, Config::default());
}

#[test]
fn dotted_keys_and_table_headers_are_equivalent() {
    let dotted = ok(&nats(
        "tls.enable = true\ntimeout.connection = \"3s\"\ncapacity.client = 10",
    ));
    let headers = ok(
        "[cluster]\ncoordinator = \"nats\"\n[store.nats]\ntype = \"nats\"\naddress = \"nats1\"\n\
         [store.nats.tls]\nenable = true\n[store.nats.timeout]\nconnection = \"3s\"\n[store.nats.capacity]\nclient = 10\n",
    );
    assert_eq!(dotted, headers);
    let nats = nats_config(&dotted);
    assert!(nats.tls.enable);
    assert_eq!(nats.connection_timeout, Duration::from_secs(3));
    assert_eq!(nats.client_capacity, 10);
}

#[test]
fn all_extension_keys_parse() {
    let config = ok(
        "[cluster]\ncoordinator = \"nats\"\nnode-id = 7\nkey = [\"0123456789abcdef\", \"fedcba9876543210xx\"]\n\
         heartbeat-interval = \"250ms\"\n[http]\nlisten = \"[::1]:8080\"\n\
         [store.\"nats\"]\ntype = \"nats\"\naddress = \"tls://nats1:4443\"\nsubject = \"corp.mail.events\"\n\
         max-reconnects = 5\nno-echo = false\nping-interval = \"2m\"\n",
    );
    assert_eq!(config.cluster.node_id.map(|id| id.get()), Some(7));
    assert_eq!(config.cluster.keys.len(), 2);
    assert_eq!(config.cluster.keys[0].expose(), "0123456789abcdef");
    assert_eq!(config.cluster.heartbeat_interval, Duration::from_millis(250));
    assert_eq!(config.http.listen.to_string(), "[::1]:8080");
    let nats = nats_config(&config);
    assert_eq!(nats.addresses, ["tls://nats1:4443"]);
    assert_eq!(nats.subject, "corp.mail.events");
    assert_eq!(
        nats.max_reconnects,
        Reconnects::AtMost(NonZeroU32::new(5).expect("5 > 0"))
    );
    assert!(!nats.no_echo);
    assert_eq!(nats.ping_interval, Duration::from_secs(120));
}

// ----- value types ----------------------------------------------------------------------------------------------

#[test]
fn duration_must_be_a_string() {
    assert_error(
        &nats("ping-interval = 60"),
        "store.\"nats\".ping-interval",
        &["expected a duration", "60s", "integer 60"],
    );
}

#[test]
fn duration_must_parse() {
    assert_error(
        &nats("[store.\"nats\".timeout]\nrequest = \"ten seconds\""),
        "store.\"nats\".timeout.request",
        &["expected a duration", "\"ten seconds\""],
    );
    assert_error(
        &nats("ping-interval = \"60\""),
        "store.\"nats\".ping-interval",
        &["expected a duration", "\"60\""],
    );
}

#[test]
fn booleans_must_be_booleans() {
    assert_error(
        &nats("no-echo = \"yes\""),
        "store.\"nats\".no-echo",
        &["expected a boolean", "\"yes\""],
    );
}

#[test]
fn integers_must_be_integers() {
    assert_error(
        &nats("capacity.client = \"2048\""),
        "store.\"nats\".capacity.client",
        &["expected an integer", "\"2048\""],
    );
    assert_error(
        &nats("max-reconnects = 1.5"),
        "store.\"nats\".max-reconnects",
        &["expected an integer", "1.5"],
    );
}

#[test]
fn strings_must_be_strings() {
    assert_error(
        "[cluster]\ncoordinator = 1\n",
        "cluster.coordinator",
        &["expected a string", "integer 1"],
    );
}

// ----- substitutions --------------------------------------------------------------------------------------------

#[test]
fn env_substitution() {
    std::env::set_var("AGORA_CFG_TEST_ENV_USER", "env-user");
    std::env::set_var("AGORA_CFG_TEST_ENV_PASSWORD", "env-password");
    std::env::set_var("AGORA_CFG_TEST_ENV_NODE", "42");
    std::env::set_var("AGORA_CFG_TEST_ENV_ADDR", "nats9:4333");
    let config = ok(
        "[cluster]\ncoordinator = \"nats\"\nnode-id = \"%{env:AGORA_CFG_TEST_ENV_NODE}%\"\n\
         [store.\"nats\"]\ntype = \"nats\"\naddress = [\"nats1\", \"%{env:AGORA_CFG_TEST_ENV_ADDR}%\"]\n\
         user = \"%{env:AGORA_CFG_TEST_ENV_USER}%\"\npassword = \"%{env:AGORA_CFG_TEST_ENV_PASSWORD}%\"\n",
    );
    assert_eq!(config.cluster.node_id.map(|id| id.get()), Some(42));
    let nats = nats_config(&config);
    assert_eq!(nats.addresses, ["nats://nats1:4222", "nats://nats9:4333"]);
    match &nats.auth {
        NatsAuth::UserPassword { user, password } => {
            assert_eq!(user, "env-user");
            assert_eq!(password.expose(), "env-password");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_env_variable_is_an_error() {
    let shown = assert_error(
        &nats("user = \"%{env:AGORA_CFG_TEST_UNSET_VARIABLE}%\"\npassword = \"x\""),
        "store.\"nats\".user",
        &["AGORA_CFG_TEST_UNSET_VARIABLE", "not set"],
    );
    assert!(shown.contains("environment variable"), "{shown}");
}

#[test]
fn file_substitution() {
    let path = temp_file("password", "  file-password\n\n");
    let config = ok(&nats(&format!(
        "user = \"u\"\npassword = \"%{{file:{}}}%\"",
        path.display()
    )));
    let _ = std::fs::remove_file(&path);
    match &nats_config(&config).auth {
        NatsAuth::UserPassword { password, .. } => assert_eq!(password.expose(), "file-password"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unreadable_file_is_an_error() {
    let path = temp_path("does-not-exist");
    assert_error(
        &nats(&format!("user = \"u\"\npassword = \"%{{file:{}}}%\"", path.display())),
        "store.\"nats\".password",
        &[&path.display().to_string(), "cannot read"],
    );
}

// ----- unknown keys and sections -----------------------------------------------------------------------------------

#[test]
fn unknown_key_suggests_the_closest() {
    let shown = assert_error(
        &nats("ping-intervall = \"60s\""),
        "store.\"nats\".ping-intervall",
        &["unknown key", "did you mean ping-interval?"],
    );
    assert_eq!(
        shown,
        "store.\"nats\".ping-intervall: unknown key; did you mean ping-interval?"
    );
    assert_error(
        "[cluster]\nnode_id = 3\n",
        "cluster.node_id",
        &["did you mean node-id?"],
    );
    assert_error(
        &nats("[store.\"nats\".capacity]\nread-bufer = 10"),
        "store.\"nats\".capacity.read-bufer",
        &["did you mean read-buffer?"],
    );
    assert_error(
        &nats("timeout.conection = \"1s\""),
        "store.\"nats\".timeout.conection",
        &["did you mean connection?"],
    );
    assert_error(
        &nats("tls.enabled = true"),
        "store.\"nats\".tls.enabled",
        &["did you mean enable?"],
    );
    assert_error(
        "[http]\nlisen = \"127.0.0.1:1\"\n",
        "http.lisen",
        &["did you mean listen?"],
    );
}

#[test]
fn unknown_key_lists_allowed_keys_when_nothing_is_close() {
    assert_error(
        "[cluster]\nzzzzzz = 1\n",
        "cluster.zzzzzz",
        &[
            "unknown key",
            "allowed keys",
            "coordinator",
            "node-id",
            "key",
            "heartbeat-interval",
        ],
    );
}

#[test]
fn unknown_sections_and_store_types_are_ignored_with_notes() {
    let config = ok(&format!(
        "{}\n[store.\"rocksdb\"]\ntype = \"rocksdb\"\npath = \"/var/lib/stalwart\"\n\
         [server]\nhostname = \"mx\"\n[storage]\ndata = \"rocksdb\"\n[clustr]\nnode-id = 1\n",
        nats("")
    ));
    assert!(matches!(config.backend, Backend::Nats { .. }));
    let notes = config.notes.join("\n");
    assert!(
        notes.contains("store \"rocksdb\" of type \"rocksdb\" ignored: agora only uses nats stores"),
        "{notes}"
    );
    assert!(notes.contains("`server` ignored"), "{notes}");
    assert!(notes.contains("`storage` ignored"), "{notes}");
    assert!(!notes.contains("did you mean `store`"), "{notes}");
    assert!(
        notes.contains("`clustr` ignored") && notes.contains("did you mean `cluster`?"),
        "{notes}"
    );
}

// ----- address -----------------------------------------------------------------------------------------------------

#[test]
fn address_forms_are_normalised() {
    let config = ok(&nats(
        "address = [\"nats1:4222\", \"nats2\", \"nats://nats3:5222\", \"tls://nats4:4443\", \"[::1]:4222\", \
         \"nats://[2001:db8::1]:4222\"]",
    )
    .replacen("address = \"nats1\"\n", "", 1));
    assert_eq!(
        nats_config(&config).addresses,
        [
            "nats://nats1:4222",
            "nats://nats2:4222",
            "nats://nats3:5222",
            "tls://nats4:4443",
            "nats://[::1]:4222",
            "nats://[2001:db8::1]:4222",
        ]
    );
}

#[test]
fn address_is_required() {
    assert_error(
        "[store.\"nats\"]\ntype = \"nats\"\n",
        "store.\"nats\".address",
        &["missing"],
    );
}

#[test]
fn address_rejects_other_schemes() {
    assert_error(
        &nats("address = \"ws://nats1:4222\"").replacen("address = \"nats1\"\n", "", 1),
        "store.\"nats\".address",
        &["\"ws://\"", "nats://", "tls://"],
    );
}

#[test]
fn address_rejects_bad_ports() {
    let text = nats("address = [\"nats1:0\", \"nats2:99999\", \"nats3:abc\"]").replacen("address = \"nats1\"\n", "", 1);
    assert_error(&text, "store.\"nats\".address[0]", &["nats1:0", "1..=65535"]);
    assert_error(&text, "store.\"nats\".address[1]", &["99999", "1..=65535"]);
    assert_error(&text, "store.\"nats\".address[2]", &["abc", "1..=65535"]);
}

#[test]
fn address_rejects_empty_hosts() {
    let text = nats("address = [\":4222\", \"\", \"nats://\"]").replacen("address = \"nats1\"\n", "", 1);
    assert_error(&text, "store.\"nats\".address[0]", &["empty host"]);
    assert_error(&text, "store.\"nats\".address[1]", &["empty"]);
    assert_error(&text, "store.\"nats\".address[2]", &["empty host"]);
}

#[test]
fn address_rejects_embedded_credentials_without_echoing_them() {
    let shown = assert_error(
        &nats("address = \"nats://admin:Sup3rS3cretPw@nats1:4222\"").replacen("address = \"nats1\"\n", "", 1),
        "store.\"nats\".address",
        &["user and password"],
    );
    assert!(!shown.contains("Sup3rS3cretPw"), "{shown}");
}

#[test]
fn address_rejects_an_empty_list() {
    assert_error(
        &nats("address = []").replacen("address = \"nats1\"\n", "", 1),
        "store.\"nats\".address",
        &["empty list"],
    );
}

#[test]
fn address_rejects_unbracketed_ipv6() {
    assert_error(
        &nats("address = \"::1:4222\"").replacen("address = \"nats1\"\n", "", 1),
        "store.\"nats\".address",
        &["brackets"],
    );
}

// ----- authentication ------------------------------------------------------------------------------------------------

#[test]
fn user_requires_password() {
    assert_error(
        &nats("user = \"u\""),
        "store.\"nats\".password",
        &["store.\"nats\".user", "both"],
    );
}

#[test]
fn password_requires_user() {
    let shown = assert_error(
        &nats("password = \"only-a-password-here\""),
        "store.\"nats\".user",
        &["store.\"nats\".password", "both"],
    );
    assert!(!shown.contains("only-a-password-here"));
}

#[test]
fn credentials_exclude_user_and_password() {
    let text = nats(&format!(
        "user = \"u\"\npassword = \"pw-xyz-123\"\ncredentials = '''\n{CREDS}'''"
    ));
    let shown = assert_error(&text, "store.\"nats\".credentials", &["user/password"]);
    let all = errors(&text).to_string();
    assert!(!all.contains("pw-xyz-123") && !all.contains("SUACSSL3"), "{all}");
    assert!(!shown.contains("BEGIN NATS USER JWT-----\neyJ"));
}

#[test]
fn credentials_must_look_like_a_creds_file() {
    let shown = assert_error(
        &nats("credentials = \"/etc/nats/user-creds-path-not-content\""),
        "store.\"nats\".credentials",
        &[".creds", "%{file:"],
    );
    assert!(!shown.contains("user-creds-path-not-content"), "{shown}");
    let config = ok(&nats(&format!("credentials = '''\n{CREDS}'''")));
    assert_eq!(
        nats_config(&config).auth,
        NatsAuth::Credentials(agora::config::Secret::new(CREDS))
    );
}

// ----- numbers -------------------------------------------------------------------------------------------------------

#[test]
fn max_reconnects_must_not_be_negative() {
    assert_error(
        &nats("max-reconnects = -1"),
        "store.\"nats\".max-reconnects",
        &["-1", "0"],
    );
    let config = ok(&nats("max-reconnects = 3"));
    assert_eq!(
        nats_config(&config).max_reconnects,
        Reconnects::AtMost(NonZeroU32::new(3).expect("3 > 0"))
    );
}

#[test]
fn client_capacity_bounds() {
    assert_error(
        &nats("capacity.client = 0"),
        "store.\"nats\".capacity.client",
        &["found 0", "1..=1048576"],
    );
    assert_error(
        &nats("capacity.client = 2000000"),
        "store.\"nats\".capacity.client",
        &["2000000", "at most 1048576"],
    );
}

#[test]
fn subscription_capacity_bounds() {
    assert_error(
        &nats("capacity.subscription = 0"),
        "store.\"nats\".capacity.subscription",
        &["found 0", "1..=16777216"],
    );
    assert_error(
        &nats("capacity.subscription = 20000000"),
        "store.\"nats\".capacity.subscription",
        &["20000000", "at most 16777216"],
    );
}

#[test]
fn read_buffer_capacity_is_at_most_65535() {
    assert_error(
        &nats("[store.\"nats\".capacity]\nread-buffer = 65536"),
        "store.\"nats\".capacity.read-buffer",
        &["65536", "at most 65535"],
    );
    assert_error(
        &nats("capacity.read-buffer = 0"),
        "store.\"nats\".capacity.read-buffer",
        &["found 0", "1..=65535"],
    );
}

#[test]
fn ping_interval_must_be_positive() {
    assert_error(
        &nats("ping-interval = \"0s\""),
        "store.\"nats\".ping-interval",
        &["greater than zero", "\"0s\""],
    );
}

#[test]
fn timeouts_must_be_positive() {
    let text = nats("[store.\"nats\".timeout]\nconnection = \"0s\"\nrequest = \"0ms\"");
    assert_error(
        &text,
        "store.\"nats\".timeout.connection",
        &["greater than zero", "\"0s\""],
    );
    assert_error(
        &text,
        "store.\"nats\".timeout.request",
        &["greater than zero", "\"0ms\""],
    );
}

// ----- tls -----------------------------------------------------------------------------------------------------------

#[test]
fn tls_files_must_exist() {
    let missing = temp_path("missing-ca.pem");
    assert_error(
        &nats(&format!("tls.enable = true\ntls.ca-file = \"{}\"", missing.display())),
        "store.\"nats\".tls.ca-file",
        &[&missing.display().to_string()],
    );
    let ca = temp_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let config = ok(&nats(&format!("tls.enable = true\ntls.ca-file = \"{}\"", ca.display())));
    let _ = std::fs::remove_file(&ca);
    assert_eq!(nats_config(&config).tls.ca_file.as_deref(), Some(ca.as_path()));
}

#[test]
fn tls_cert_and_key_go_together() {
    let cert = temp_file("client-cert.pem", "cert");
    let key = temp_file("client-key.pem", "key");
    assert_error(
        &nats(&format!("tls.enable = true\ntls.cert-file = \"{}\"", cert.display())),
        "store.\"nats\".tls.key-file",
        &["store.\"nats\".tls.cert-file", "both"],
    );
    assert_error(
        &nats(&format!("tls.enable = true\ntls.key-file = \"{}\"", key.display())),
        "store.\"nats\".tls.cert-file",
        &["store.\"nats\".tls.key-file", "both"],
    );
    let config = ok(&nats(&format!(
        "tls.enable = true\ntls.cert-file = \"{}\"\ntls.key-file = \"{}\"",
        cert.display(),
        key.display()
    )));
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(&key);
    assert_eq!(nats_config(&config).tls.cert_file.as_deref(), Some(cert.as_path()));
}

#[test]
fn tls_files_require_tls_enable() {
    let ca = temp_file("ca-without-enable.pem", "ca");
    let text = nats(&format!("tls.ca-file = \"{}\"", ca.display()));
    assert_error(&text, "store.\"nats\".tls.ca-file", &["set tls.enable = true"]);
    let text = nats(&format!("tls.enable = false\ntls.ca-file = \"{}\"", ca.display()));
    assert_error(&text, "store.\"nats\".tls.ca-file", &["set tls.enable = true"]);
    // A tls:// address asks for TLS by itself: its CA file is used, not an error.
    let text = format!(
        "[cluster]\ncoordinator = \"nats\"\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"tls://nats1:4222\"\n\
         tls.ca-file = \"{}\"\n",
        ca.display()
    );
    let config = ok(&text);
    assert_eq!(nats_config(&config).tls.ca_file.as_deref(), Some(ca.as_path()));
    let _ = std::fs::remove_file(&ca);
}

// ----- subject -------------------------------------------------------------------------------------------------------

#[test]
fn subject_rules() {
    let key = "store.\"nats\".subject";
    assert_error(&nats("subject = \"\""), key, &["empty"]);
    assert_error(
        &nats("subject = \"agora..events\""),
        key,
        &["\"agora..events\"", "empty token"],
    );
    assert_error(&nats("subject = \"agora.events.\""), key, &["empty token"]);
    assert_error(&nats("subject = \"agora events\""), key, &["whitespace"]);
    assert_error(&nats("subject = \"agora.*\""), key, &["wildcard"]);
    assert_error(&nats("subject = \"agora.>\""), key, &["wildcard"]);
}

// ----- cluster -------------------------------------------------------------------------------------------------------

#[test]
fn node_id_range() {
    assert_error("[cluster]\nnode-id = 0\n", "cluster.node-id", &["found 0", "1..=65535"]);
    assert_error(
        "[cluster]\nnode-id = 65536\n",
        "cluster.node-id",
        &["65536", "1..=65535"],
    );
    assert_error(
        "[cluster]\nnode-id = \"one\"\n",
        "cluster.node-id",
        &["expected an integer"],
    );
    assert_eq!(
        ok("[cluster]\nnode-id = 65535\n").cluster.node_id.map(|id| id.get()),
        Some(65535)
    );
}

#[test]
fn cluster_key_rules() {
    let shown = assert_error(
        "[cluster]\nkey = \"short-key\"\n",
        "cluster.key",
        &["at least 16 bytes"],
    );
    assert!(!shown.contains("short-key"), "{shown}");
    let shown = assert_error(
        "[cluster]\nkey = [\"a-long-enough-cluster-key\", \"tiny-secret\"]\n",
        "cluster.key[1]",
        &["at least 16 bytes"],
    );
    assert!(!shown.contains("tiny-secret"), "{shown}");
    assert_error("[cluster]\nkey = []\n", "cluster.key", &["empty list"]);
    assert_error(
        "[cluster]\nkey = 12345678901234567\n",
        "cluster.key",
        &["expected a string"],
    );
    let config = ok("[cluster]\nkey = \"a-long-enough-cluster-key\"\n");
    assert_eq!(config.cluster.keys.len(), 1);
}

#[test]
fn heartbeat_interval_range() {
    assert_error(
        "[cluster]\nheartbeat-interval = \"10ms\"\n",
        "cluster.heartbeat-interval",
        &["\"10ms\"", "100ms", "1h"],
    );
    assert_error(
        "[cluster]\nheartbeat-interval = \"2h\"\n",
        "cluster.heartbeat-interval",
        &["\"2h\"", "100ms..=1h"],
    );
}

#[test]
fn coordinator_must_name_an_existing_store() {
    assert_error(
        "[cluster]\ncoordinator = \"natz\"\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"n\"\n\
         [store.\"db\"]\ntype = \"rocksdb\"\n",
        "cluster.coordinator",
        &["\"natz\"", "\"nats\"", "\"db\""],
    );
    assert_error(
        "[cluster]\ncoordinator = \"nats\"\n",
        "cluster.coordinator",
        &["\"nats\"", "no [store.<id>]"],
    );
}

#[test]
fn coordinator_must_be_a_nats_store() {
    assert_error(
        "[cluster]\ncoordinator = \"db\"\n[store.\"db\"]\ntype = \"rocksdb\"\n",
        "cluster.coordinator",
        &["\"db\"", "type \"rocksdb\"", "nats"],
    );
}

#[test]
fn no_coordinator_means_single_node_but_nats_stores_are_still_validated() {
    let config = ok("[store.\"nats\"]\ntype = \"nats\"\naddress = \"nats1\"\n");
    assert_eq!(config.backend, Backend::SingleNode);
    assert!(
        config.notes.iter().any(|n| n.contains("not used")),
        "{:?}",
        config.notes
    );
    assert_error(
        "[store.\"nats\"]\ntype = \"nats\"\naddress = \"nats1:0\"\n",
        "store.\"nats\".address",
        &["1..=65535"],
    );
}

#[test]
fn store_requires_a_type() {
    assert_error("[store.\"x\"]\naddress = \"nats1\"\n", "store.\"x\".type", &["missing"]);
}

#[test]
fn http_listen_must_be_a_socket_address() {
    assert_error(
        "[http]\nlisten = \"localhost:7911\"\n",
        "http.listen",
        &["\"localhost:7911\"", "ip:port"],
    );
    assert_eq!(
        ok("[http]\nlisten = \"0.0.0.0:80\"\ntoken = \"t0ken\"\n")
            .http
            .listen
            .to_string(),
        "0.0.0.0:80"
    );
}

// ----- whole-file behaviour --------------------------------------------------------------------------------------------

#[test]
fn every_error_is_reported() {
    let errors = errors(&format!(
        "[cluster]\nnode-id = 0\nheartbeat-interval = 5\n[http]\nlisten = \"nope\"\n{}",
        nats("ping-interval = \"0s\"\ncapacity.read-buffer = 70000\nno-echo = 1\nbogus = 1").replacen(
            "[cluster]\ncoordinator = \"nats\"\n",
            "",
            1
        )
    ));
    let keys: Vec<&str> = errors.errors().iter().map(|e| e.key()).collect();
    for key in [
        "cluster.node-id",
        "cluster.heartbeat-interval",
        "http.listen",
        "store.\"nats\".ping-interval",
        "store.\"nats\".capacity.read-buffer",
        "store.\"nats\".no-echo",
        "store.\"nats\".bogus",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(errors.to_string().lines().count(), errors.errors().len());
}

#[test]
fn syntax_errors_have_a_location() {
    let errors = errors("[cluster]\nnode-id = = 1\n");
    assert_eq!(errors.errors().len(), 1);
    assert!(errors.errors()[0].key().starts_with("line 2"), "{errors}");
}

#[test]
fn load_reads_a_file_and_names_it_on_error() {
    let path = temp_file("agora.toml", SEED);
    let config = load(&path);
    let _ = std::fs::remove_file(&path);
    assert!(matches!(
        config,
        Ok(Config {
            backend: Backend::Nats { .. },
            ..
        })
    ));

    let missing = temp_path("missing.toml");
    let Err(errors) = load(&missing) else {
        panic!("missing file loaded");
    };
    assert_eq!(errors.errors().len(), 1);
    assert!(errors.to_string().contains(&missing.display().to_string()), "{errors}");
}

// ----- secrets ---------------------------------------------------------------------------------------------------------

#[test]
fn secrets_never_appear_in_errors_notes_or_debug() {
    let password = "Pa55word-MUST-NOT-LEAK";
    let cluster_key = "cluster-key-MUST-NOT-LEAK-0123456789";
    let bad_credentials = "creds-MUST-NOT-LEAK";
    // A valid config: Debug must not show the secrets.
    let config = ok(&format!(
        "[cluster]\ncoordinator = \"nats\"\nkey = \"{cluster_key}\"\n[store.\"nats\"]\ntype = \"nats\"\n\
         address = \"nats1\"\nuser = \"u\"\npassword = \"{password}\"\n"
    ));
    let debug = format!("{config:?}");
    assert!(!debug.contains(password) && !debug.contains(cluster_key), "{debug}");
    let debug_pretty = format!("{config:#?}");
    assert!(!debug_pretty.contains(password) && !debug_pretty.contains(cluster_key));
    let rendered = config.to_redacted_toml();
    assert!(
        !rendered.contains(password) && !rendered.contains(cluster_key),
        "{rendered}"
    );

    // Bad values next to secrets, a wrong credentials value and a mistyped password key.
    let text = format!(
        "[cluster]\nkey = [\"{cluster_key}\", \"short-{bad_credentials}\"]\n[store.\"nats\"]\ntype = \"nats\"\n\
         address = \"nats1:0\"\nuser = \"u\"\npassword = \"{password}\"\ncredentials = \"{bad_credentials}\"\n\
         passwrd = \"{password}\"\n[store.\"other\"]\ntype = \"nats\"\naddress = \"n\"\npassword = 12345678\n"
    );
    let errors = errors(&text);
    let shown = format!("{errors}\n{errors:?}");
    for secret in [password, cluster_key, bad_credentials, "12345678"] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(shown.contains("store.\"nats\".credentials"), "{shown}");
    assert!(shown.contains("store.\"nats\".passwrd"), "{shown}");
}

#[test]
fn redacted_toml_round_trips() {
    let ca = temp_file("round-trip-ca.pem", "ca");
    let text = format!(
        "[cluster]\ncoordinator = \"nats\"\nnode-id = 9\nkey = [\"first-cluster-key-0123\", \"second-cluster-key-456\"]\n\
         [store.\"nats\"]\ntype = \"nats\"\naddress = [\"nats1\", \"tls://[::1]:4443\"]\nuser = \"nats-user\"\n\
         password = \"round-trip-password\"\nmax-reconnects = 0\ntls.enable = true\ntls.ca-file = \"{}\"\n\
         ping-interval = \"90s\"\n[store.\"db\"]\ntype = \"rocksdb\"\n[server]\nhostname = \"mx\"\n",
        ca.display()
    );
    let config = ok(&text);
    let rendered = config.to_redacted_toml();
    for secret in [
        "first-cluster-key-0123",
        "second-cluster-key-456",
        "round-trip-password",
    ] {
        assert!(!rendered.contains(secret), "{secret} in\n{rendered}");
    }
    assert!(rendered.contains("password = \"<redacted>\""), "{rendered}");
    assert!(
        rendered.contains("address = [\"nats://nats1:4222\", \"tls://[::1]:4443\"]"),
        "{rendered}"
    );
    assert!(rendered.contains("ping-interval = \"1m 30s\""), "{rendered}");
    assert!(rendered.contains("[store.\"nats\".timeout]"), "{rendered}");

    let again = ok(&rendered);
    let _ = std::fs::remove_file(&ca);
    // The reparsed file has no ignored sections, hence no notes; everything else renders the same.
    let without_notes: String = rendered
        .lines()
        .filter(|line| !line.starts_with("# note:"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(again.to_redacted_toml(), without_notes);
    let (original, reparsed) = (nats_config(&config), nats_config(&again));
    assert_eq!(reparsed.addresses, original.addresses);
    assert_eq!(reparsed.max_reconnects, Reconnects::Never);
    assert_eq!(reparsed.ping_interval, original.ping_interval);
    assert_eq!(reparsed.tls, original.tls);
    assert_eq!(again.cluster.node_id, config.cluster.node_id);
    assert_eq!(again.cluster.keys.len(), 2);
    assert_eq!(again.cluster.heartbeat_interval, config.cluster.heartbeat_interval);
    assert_eq!(again.http, config.http);
}

#[test]
fn redacted_toml_of_defaults_and_credentials_round_trips() {
    for text in [String::new(), nats(""), nats(&format!("credentials = '''\n{CREDS}'''"))] {
        let config = ok(&text);
        let rendered = config.to_redacted_toml();
        assert!(!rendered.contains("SUACSSL3"), "{rendered}");
        let again = ok(&rendered);
        assert_eq!(again.to_redacted_toml(), rendered);
        assert_eq!(again.backend == config.backend, !text.contains("credentials"));
    }
    let rendered = ok(&nats("")).to_redacted_toml();
    for line in [
        "connection = \"5s\"",
        "request = \"10s\"",
        "ping-interval = \"1m\"",
        "client = 2048",
        "subscription = 65536",
        "read-buffer = 65535",
        "no-echo = true",
        "tls.enable = false",
        "listen = \"127.0.0.1:7911\"",
        "heartbeat-interval = \"1s\"",
        "# node-id unset: random at start",
    ] {
        assert!(rendered.contains(line), "{line:?} missing from\n{rendered}");
    }
}

// ----- jetstream (durable mode) ----------------------------------------------------------------------------------

#[test]
fn jetstream_defaults_and_all_keys() {
    let defaults = nats_config(&ok(&nats(""))).jetstream.clone();
    assert_eq!(defaults, JetStreamConfig::default());
    assert!(!defaults.enable);
    assert_eq!(defaults.stream, "AGORA");
    assert_eq!(defaults.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(defaults.storage, JetStreamStorage::File);
    assert_eq!(defaults.replicas, 1);

    let config = ok(&nats(
        "jetstream.enable = true\njetstream.stream = \"MAIL_EVENTS\"\njetstream.max-age = \"2d\"\n\
         jetstream.storage = \"memory\"\njetstream.replicas = 3",
    ));
    let js = &nats_config(&config).jetstream;
    assert!(js.enable);
    assert_eq!(js.stream, "MAIL_EVENTS");
    assert_eq!(js.max_age, Duration::from_secs(2 * 24 * 3600));
    assert_eq!(js.storage, JetStreamStorage::Memory);
    assert_eq!(js.replicas, 3);

    // As a table header too.
    let table = ok(&format!(
        "{}\n[store.\"nats\".jetstream]\nenable = true\nreplicas = 5\n",
        nats("")
    ));
    assert_eq!(nats_config(&table).jetstream.replicas, 5);
}

#[test]
fn jetstream_rules() {
    let on = |line: &str| nats(&format!("jetstream.enable = true\n{line}"));
    let key = |k: &str| format!("store.\"nats\".jetstream.{k}");
    assert_error(&nats("jetstream.enable = \"yes\""), &key("enable"), &["boolean"]);
    assert_error(
        &nats("jetstream = true"),
        "store.\"nats\".jetstream",
        &["expected a table"],
    );
    assert_error(&on("jetstream.stream = \"\""), &key("stream"), &["empty"]);
    assert_error(
        &on("jetstream.stream = \"a.b\""),
        &key("stream"),
        &["\"a.b\"", "stream name"],
    );
    assert_error(&on("jetstream.stream = \"a b\""), &key("stream"), &["stream name"]);
    assert_error(&on("jetstream.stream = 5"), &key("stream"), &["expected a string"]);
    assert_error(
        &on("jetstream.max-age = \"0s\""),
        &key("max-age"),
        &["greater than zero"],
    );
    assert_error(&on("jetstream.max-age = \"500ms\""), &key("max-age"), &["at least 1s"]);
    assert_error(&on("jetstream.max-age = 3600"), &key("max-age"), &["duration", "unit"]);
    assert_error(&on("jetstream.max-age = \"forever\""), &key("max-age"), &["duration"]);
    assert_error(
        &on("jetstream.storage = \"disk\""),
        &key("storage"),
        &["\"file\" or \"memory\"", "\"disk\""],
    );
    assert_error(
        &on("jetstream.storage = \"memroy\""),
        &key("storage"),
        &["did you mean \"memory\""],
    );
    assert_error(
        &on("jetstream.replicas = 0"),
        &key("replicas"),
        &["at least 1", "1..=5"],
    );
    assert_error(&on("jetstream.replicas = 6"), &key("replicas"), &["at most 5", "1..=5"]);
    assert_error(&on("jetstream.replicas = \"3\""), &key("replicas"), &["integer"]);
    assert_error(
        &on("jetstream.enabled = true"),
        &key("enabled"),
        &["did you mean enable?"],
    );
    assert_error(
        &on("jetstream.max_age = \"1h\""),
        &key("max_age"),
        &["did you mean max-age?"],
    );
    assert_error(
        &on("jetstream.replica = 3"),
        &key("replica"),
        &["did you mean replicas?"],
    );
    assert_error(&on("jetstream.xyzzy = 3"), &key("xyzzy"), &["allowed keys", "max-age"]);
    assert_error(
        &nats("jetsream.enable = true"),
        "store.\"nats\".jetsream",
        &["did you mean jetstream?"],
    );
}

#[test]
fn jetstream_settings_without_enable_are_errors_not_ignored() {
    for line in [
        "jetstream.stream = \"X\"",
        "jetstream.replicas = 3",
        "jetstream.storage = \"memory\"",
    ] {
        let name = line.split(['.', ' ']).nth(1).expect("key");
        let key = format!("store.\"nats\".jetstream.{name}");
        assert_error(&nats(line), &key, &["would be ignored", "jetstream.enable = true"]);
        assert_error(
            &nats(&format!("jetstream.enable = false\n{line}")),
            &key,
            &["would be ignored"],
        );
    }
    assert!(!nats_config(&ok(&nats("jetstream.enable = false"))).jetstream.enable);
}

#[test]
fn jetstream_substitution() {
    std::env::set_var("AGORA_TEST_JS_ENABLE", "true");
    std::env::set_var("AGORA_TEST_JS_REPLICAS", "3");
    let config = ok(&nats(
        "jetstream.enable = \"%{env:AGORA_TEST_JS_ENABLE}%\"\njetstream.replicas = \"%{env:AGORA_TEST_JS_REPLICAS}%\"",
    ));
    assert!(nats_config(&config).jetstream.enable);
    assert_eq!(nats_config(&config).jetstream.replicas, 3);
}

#[test]
fn jetstream_renders_and_round_trips() {
    let off = ok(&nats(""));
    let rendered = off.to_redacted_toml();
    assert!(rendered.contains("jetstream.enable = false"), "{rendered}");
    assert!(
        rendered.contains("jetstream.stream = \"AGORA\""),
        "defaults shown: {rendered}"
    );
    assert_eq!(nats_config(&ok(&rendered)), nats_config(&off));

    let on = ok(&nats(
        "jetstream.enable = true\njetstream.stream = \"S\"\njetstream.max-age = \"90m\"\njetstream.storage = \"memory\"\n\
         jetstream.replicas = 3",
    ));
    let rendered = on.to_redacted_toml();
    for line in [
        "jetstream.enable = true",
        "jetstream.stream = \"S\"",
        "jetstream.max-age = \"1h 30m\"",
        "jetstream.storage = \"memory\"",
        "jetstream.replicas = 3",
    ] {
        assert!(rendered.contains(line), "{line} missing from {rendered}");
    }
    let again = ok(&rendered);
    assert_eq!(nats_config(&again), nats_config(&on));
    assert_eq!(again.to_redacted_toml(), rendered);

    let defaults_on = ok(&nats("jetstream.enable = true")).to_redacted_toml();
    for line in [
        "jetstream.max-age = \"1day\"",
        "jetstream.storage = \"file\"",
        "jetstream.replicas = 1",
    ] {
        assert!(defaults_on.contains(line), "{line} missing from {defaults_on}");
    }
}

// ----- the Stalwart bus ------------------------------------------------------------------------------------------

#[test]
fn the_stalwart_section_parses_with_defaults_and_renders() {
    let config = ok(&format!(
        "{}\n[stalwart]\nversion = \"0.16.18\"\nnode-id = 65000\nforward = [\"state_change\", \"stalwart\"]\n",
        nats("")
    ));
    let stalwart = config.stalwart.as_ref().expect("[stalwart] read");
    assert_eq!(stalwart.version, agora::stalwart::StalwartVersion::v0_16(18));
    assert_eq!(stalwart.subject, "stwt.agora");
    assert_eq!(stalwart.node_id, Some(65000));
    assert_eq!(stalwart.forward, ["state_change", "stalwart"]);
    let again = ok(&config.to_redacted_toml());
    assert_eq!(
        again.stalwart, config.stalwart,
        "check-config output parses back to the same section"
    );

    let read_only = ok(&format!("{}\n[stalwart]\nversion = \"0.15\"\nnode-id = 0\n", nats("")));
    let stalwart = read_only.stalwart.expect("[stalwart] read");
    assert!(stalwart.forward.is_empty() && stalwart.version.is_0_15());
    assert_eq!(
        stalwart.node_id,
        Some(0),
        "Stalwart 0.16 leases ids from 0, so 0 is valid"
    );
}

#[test]
fn stalwart_section_mistakes_name_the_key_and_the_allowed_values() {
    let with = |lines: &str| format!("{}\n[stalwart]\n{lines}\n", nats(""));
    assert_error(&with("node-id = 1"), "stalwart.version", &["missing", "0.16.18"]);
    assert_error(&with("version = \"0.14.2\""), "stalwart.version", &["0.15.x or 0.16.x"]);
    assert_error(
        &with("version = \"0.16.18\"\nforward = [\"state_change\"]"),
        "stalwart.node-id",
        &["missing", "forward"],
    );
    assert_error(
        &with("version = \"0.16.18\"\nnode-id = 9\nforward = [\"blocked_ip\"]"),
        "stalwart.forward[0]",
        &["blocked_ip", "state_change", "queue_refresh", "stalwart"],
    );
    assert_error(
        &with("version = \"0.16.18\"\nnode-id = 65536"),
        "stalwart.node-id",
        &["65535"],
    );
    assert_error(
        &with("version = \"0.16.18\"\nsubject = \"stwt.*\""),
        "stalwart.subject",
        &["stwt.agora"],
    );
    assert_error(&with("version = \"0.16.18\"\nnode = 1"), "stalwart.node", &["node-id"]);
}

#[test]
fn token_authentication_is_a_secret_and_excludes_the_other_methods() {
    let config = ok(&nats("token = \"s3cr3t-token-value\""));
    match &nats_config(&config).auth {
        agora::config::NatsAuth::Token(token) => assert_eq!(token.expose(), "s3cr3t-token-value"),
        other => panic!("expected token auth, got {other:?}"),
    }
    let shown = format!("{config:?}\n{}", config.to_redacted_toml());
    assert!(!shown.contains("s3cr3t-token-value"), "{shown}");
    assert_error(
        &nats("token = \"t\"\nuser = \"u\"\npassword = \"p\""),
        r#"store."nats".token"#,
        &["cannot be combined"],
    );
    assert_error(&nats("token = \"\""), r#"store."nats".token"#, &["must not be empty"]);
}

#[test]
fn an_unmodified_stalwart_file_is_read_for_its_nats_store_and_the_rest_named_once() {
    let text = &agora_testkit::stalwart_config_file("127.0.0.1:4222");
    assert!(
        parse(text).is_err(),
        "as an agora file, Stalwart's [http] and [cluster] keys are errors"
    );
    let config = agora::config::parse_stalwart_file(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(nats_config(&config).addresses, ["nats://127.0.0.1:4222"]);
    assert_eq!(config.cluster.node_id, None, "Stalwart's own node id is not agora's");
    let ignored: Vec<&String> = config.notes.iter().filter(|n| n.starts_with("ignored")).collect();
    assert_eq!(ignored.len(), 1, "one line: {:?}", config.notes);
    for name in ["server", "http", "cluster.node-id", "tracer"] {
        assert!(ignored[0].contains(name), "{name} not named in {ignored:?}");
    }
}

// ----- the HTTP API's edge ---------------------------------------------------------------------------------------

#[test]
fn http_tokens_rotate_stay_secret_and_an_exposed_listen_needs_one() {
    let config = ok("[http]\nlisten = \"0.0.0.0:7911\"\ntoken = [\"tok-current-1\", \"tok-next-2\"]\n");
    let tokens: Vec<&str> = config.http.tokens.iter().map(|t| t.expose()).collect();
    assert_eq!(tokens, ["tok-current-1", "tok-next-2"]);
    let shown = format!("{config:?}\n{}", config.to_redacted_toml());
    assert!(
        !shown.contains("tok-current-1") && !shown.contains("tok-next-2"),
        "{shown}"
    );
    assert_eq!(
        ok(&config.to_redacted_toml()).http.tokens.len(),
        2,
        "check-config output parses back"
    );
    assert_eq!(ok("[http]\ntoken = \"one-token\"\n").http.tokens.len(), 1);
    assert_error(
        "[http]\nlisten = \"0.0.0.0:7911\"\n",
        "http.token",
        &["0.0.0.0:7911", "loopback"],
    );
    assert_error("[http]\nlisten = \"[::]:7911\"\n", "http.token", &["token"]);
    assert!(
        parse("[http]\nlisten = \"[::1]:7911\"\n").is_ok(),
        "loopback needs no token"
    );
    assert_error("[http]\ntoken = \"has space\"\n", "http.token", &["spaces"]);
    assert_error("[http]\ntoken = []\n", "http.token", &["empty list"]);
}

#[test]
fn cors_origins_are_exact_origins() {
    let config = ok("[http]\ncors-origins = [\"https://webmail.example.com\", \"http://localhost:8080\"]\n");
    assert_eq!(
        config.http.cors_origins,
        ["https://webmail.example.com", "http://localhost:8080"]
    );
    assert_error(
        "[http]\ncors-origins = [\"https://webmail.example.com/app\"]\n",
        "http.cors-origins[0]",
        &["no path"],
    );
    assert_error(
        "[http]\ncors-origins = [\"webmail.example.com\"]\n",
        "http.cors-origins[0]",
        &["scheme"],
    );
}

// ----- [push] -----------------------------------------------------------------------------------------------------

#[test]
fn push_defaults_and_all_keys() {
    let defaults = ok("").push;
    assert_eq!(defaults, PushConfig::default());
    assert_eq!(defaults.max_subscriptions_per_account, 100);
    assert!(defaults.allow_networks.is_empty());

    let config = ok(
        "[push]\nmax-subscriptions-per-account = 5\nallow-networks = [\"10.0.0.0/8\", \"127.0.0.1\", \"fd00::/8\", \
         \"192.168.7.9/16\"]\n",
    );
    assert_eq!(config.push.max_subscriptions_per_account, 5);
    let networks: Vec<String> = config.push.allow_networks.iter().map(ToString::to_string).collect();
    assert_eq!(
        networks,
        ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "192.168.0.0/16"],
        "host bits dropped"
    );

    // check-config shows the section, and its output parses back to the same settings.
    let rendered = config.to_redacted_toml();
    assert!(
        rendered.contains("[push]\nmax-subscriptions-per-account = 5\n"),
        "{rendered}"
    );
    assert_eq!(ok(&rendered).push, config.push);
    let rendered = ok("").to_redacted_toml();
    assert!(rendered.contains("max-subscriptions-per-account = 100"), "{rendered}");
    assert!(rendered.contains("allow-networks = []"), "{rendered}");
    assert_eq!(ok(&rendered).push, PushConfig::default());
}

/// A P-256 key as `openssl ecparam -name prime256v1 -genkey` writes it (with the EC PARAMETERS block): a test key.
const P256_SEC1: &str = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n\
-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFW+xs5QIQyo58VAMKUwdDNmlJxeACswJrtQXUqWT9L0oAoGCCqGSM49\n\
AwEHoUQDQgAE9/42qb7Ehfxf0JqHacrO0T+ND2yXUVgUuMsZfkRD4vYZZx7wP1VM\nPEUOa86Isr+cZ2g7HvaP+GuoW4xFzCKq5w==\n\
-----END EC PRIVATE KEY-----\n";

/// A P-384 key: a valid EC key of the wrong curve.
const P384_SEC1: &str = "-----BEGIN EC PRIVATE KEY-----\n\
MIGkAgEBBDDAIDdTKmhCo0VQJLOB5jf5qR7d3Fpkl4Tets/29pRTfWl4nkaIjUfW\n\
l7pJvgykaIGgBwYFK4EEACKhZANiAARE1hC2k0OsZZKaDVsG1VHCGroHdQ8eiLfa\n\
2RXNTKccVWbgPcN96TnK8K2ZpRukF9vfarrp/EsQS7m7ppc1ZWb1BKj5JySBD70d\n\
GfXCuRIIoW6UPu0jJlAbTjEF7wYPXcU=\n-----END EC PRIVATE KEY-----\n";

#[test]
fn push_vapid_ttl_and_expiry() {
    let defaults = ok("").push;
    assert_eq!(defaults.ttl, Duration::from_secs(86_400));
    assert_eq!(defaults.max_expiry, Duration::from_secs(7 * 86_400));
    assert!(defaults.vapid.is_none());

    let sec1 = temp_file("vapid-sec1.pem", P256_SEC1);
    let text = format!(
        "[push]\nvapid-key-file = {:?}\nvapid-subject = \"mailto:postmaster@example.com\"\nttl = \"2h\"\n\
         max-expiry = \"3d\"\n",
        sec1.display().to_string()
    );
    let config = ok(&text);
    let vapid = config.push.vapid.clone().expect("vapid configured");
    assert_eq!(vapid.subject, "mailto:postmaster@example.com");
    assert_eq!(vapid.key.public_key().len(), 65);
    assert_eq!(vapid.key.public_key()[0], 4, "uncompressed point");
    assert_eq!(config.push.ttl, Duration::from_secs(7_200));
    assert_eq!(config.push.max_expiry, Duration::from_secs(3 * 86_400));
    // The same key as PKCS#8 (what rcgen and `openssl pkcs8 -topk8` write) is the same key.
    let pkcs8 = {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let sec1 = &P256_SEC1[P256_SEC1.find("-----BEGIN EC PRIVATE KEY").expect("block")..];
        let key = p256::SecretKey::from_sec1_pem(sec1).expect("test key");
        key.to_pkcs8_pem(LineEnding::LF).expect("pkcs8").to_string()
    };
    assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----"));
    let pkcs8_file = temp_file("vapid-pkcs8.pem", &pkcs8);
    let config8 = ok(&text.replace(&sec1.display().to_string(), &pkcs8_file.display().to_string()));
    assert_eq!(config8.push.vapid.map(|v| v.key), Some(vapid.key.clone()));

    // check-config: the path and the subject, never the key; and it parses back.
    let rendered = config.to_redacted_toml();
    assert!(
        rendered.contains("vapid-subject = \"mailto:postmaster@example.com\""),
        "{rendered}"
    );
    assert!(rendered.contains("ttl = \"2h\""), "{rendered}");
    assert!(!rendered.contains("MHcCAQEE"), "{rendered}");
    assert!(!format!("{config:?}").contains("MHcCAQEE"), "Debug never shows the key");
    assert_eq!(ok(&rendered).push, config.push);
}

#[test]
fn push_vapid_rules() {
    let sec1 = temp_file("vapid-rules.pem", P256_SEC1);
    let key = format!("vapid-key-file = {:?}\n", sec1.display().to_string());
    assert_error(
        &format!("[push]\n{key}"),
        "push.vapid-subject",
        &["required with vapid-key-file", "mailto:"],
    );
    assert_error(
        "[push]\nvapid-subject = \"mailto:a@example.com\"\n",
        "push.vapid-key-file",
        &["required with vapid-subject", "openssl ecparam"],
    );
    assert_error(
        &format!("[push]\n{key}vapid-subject = \"postmaster@example.com\"\n"),
        "push.vapid-subject",
        &["not a mailto: or https: URI"],
    );
    let subject = "vapid-subject = \"mailto:a@example.com\"\n";
    let p384 = temp_file("vapid-p384.pem", P384_SEC1);
    let message = assert_error(
        &format!("[push]\nvapid-key-file = {:?}\n{subject}", p384.display().to_string()),
        "push.vapid-key-file",
        &["not a P-256", "prime256v1"],
    );
    assert!(!message.contains("MIGkAgEB"), "the key file is never quoted: {message}");
    let secret = temp_file("vapid-not-pem.pem", "password=hunter2\n");
    let message = assert_error(
        &format!("[push]\nvapid-key-file = {:?}\n{subject}", secret.display().to_string()),
        "push.vapid-key-file",
        &["no PEM private key"],
    );
    assert!(!message.contains("hunter2"), "{message}");
    assert_error(
        &format!("[push]\nvapid-key-file = \"/nonexistent/vapid.pem\"\n{subject}"),
        "push.vapid-key-file",
        &["cannot be read", "/nonexistent/vapid.pem"],
    );
    assert_error("[push]\nttl = \"0s\"\n", "push.ttl", &["1s"]);
    assert_error("[push]\nttl = 60\n", "push.ttl", &["duration"]);
    assert_error("[push]\nmax-expiry = \"10s\"\n", "push.max-expiry", &["1m"]);
}

#[test]
fn push_rules() {
    assert_error(
        "[push]\nmax-subscriptions-per-account = 0\n",
        "push.max-subscriptions-per-account",
        &["at least 1", "allowed 1..=10000"],
    );
    assert_error(
        "[push]\nmax-subscriptions-per-account = \"many\"\n",
        "push.max-subscriptions-per-account",
        &["integer"],
    );
    assert_error(
        "[push]\nallow-networks = [\"10.0.0.0/8\", \"intranet\"]\n",
        "push.allow-networks[1]",
        &["\"intranet\"", "not a network", "10.0.0.0/8"],
    );
    assert_error(
        "[push]\nallow-networks = [\"10.0.0.0/33\"]\n",
        "push.allow-networks[0]",
        &["CIDR"],
    );
    assert_error(
        "[push]\nallow-networks = \"10.0.0.0/8\"\n",
        "push.allow-networks",
        &["expected a list", "[\"10.0.0.0/8\"]"],
    );
    assert_error(
        "[push]\nallow-networks = [8]\n",
        "push.allow-networks[0]",
        &["expected a string"],
    );
    assert_error(
        "[push]\nallow-network = []\n",
        "push.allow-network",
        &["did you mean allow-networks"],
    );
    assert_error("push = 1\n", "push", &["expected a table"]);
}

#[test]
fn substituted_contents_are_never_echoed_in_errors() {
    // A file whose contents look like an environment with a password, used where a value is checked.
    let secret = "PATH=/usr/bin\u{0}DB_PASSWORD=hunter2-very-secret\u{0}";
    let path = agora_testkit::scratch_file("environ", secret);
    let file = format!("%{{file:{}}}%", path.display());
    for text in [
        format!("[cluster]\ncoordinator = \"nats\"\n[store.\"nats\"]\ntype = \"nats\"\naddress = \"{file}\"\n"),
        format!("[http]\nlisten = \"{file}\"\n"),
        format!("[cluster]\nnode-id = \"{file}\"\n"),
        format!("[http]\ncors-origins = [\"{file}\"]\n"),
    ] {
        let errors = agora::config::parse(&text).expect_err("not a valid value");
        let shown = errors.to_string();
        assert!(!shown.contains("hunter2"), "{text}: {shown}");
        assert!(!shown.contains("DB_PASSWORD"), "{text}: {shown}");
        assert!(
            shown.contains(&path.display().to_string()),
            "the file is named: {shown}"
        );
    }
}

#[test]
fn a_huge_or_endless_configuration_file_is_refused_with_a_clear_error() {
    let errors = agora::config::load(std::path::Path::new("/dev/zero")).expect_err("refused");
    let shown = errors.to_string();
    assert!(shown.contains("larger than"), "{shown}");
    let big = agora_testkit::scratch_file("big.toml", &"# padding\n".repeat(500_000));
    let shown = agora::config::load(&big).expect_err("refused").to_string();
    assert!(shown.contains("larger than"), "{shown}");
}
