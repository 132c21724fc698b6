//! NATS decentralised auth for tests: operator, account and user keys and JWTs minted in-process with `nkeys`, a
//! nats-server configuration for operator mode (memory resolver) and `.creds` files.
//!
//! A JWT is `base64url(header).base64url(claims).base64url(ed25519 signature of the first two parts)`, signed by
//! the issuer's nkey: the operator signs itself and its accounts, an account signs its users.
//!
//! ```no_run
//! use agora_testkit::{operator::Operator, NatsServer};
//! let operator = Operator::new("test-operator");
//! let account = operator.account("app");
//! let user = account.user("node");
//! let server = NatsServer::start_with_config(&operator.server_config(&[&account]), &[]);
//! let creds: String = user.creds(); // the contents of a .creds file
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};

/// An operator: the root of trust a server in operator mode is configured with.
pub struct Operator {
    key: KeyPair,
    /// The operator's self-signed JWT.
    pub jwt: String,
}

/// An account, signed by an operator.
pub struct Account {
    key: KeyPair,
    /// The account JWT.
    pub jwt: String,
}

/// A user, signed by an account: what a client authenticates with.
pub struct User {
    /// The user JWT.
    pub jwt: String,
    /// The user's NKEY seed (`SU...`).
    pub seed: String,
}

impl Operator {
    /// A fresh operator with a self-signed JWT.
    pub fn new(name: &str) -> Self {
        let key = KeyPair::new_operator();
        let claims = claims(&key, &key.public_key(), name, json!({"type": "operator", "version": 2}));
        let jwt = encode_jwt(&key, &claims);
        Operator { key, jwt }
    }

    /// The operator's public key (`O...`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A new account signed by this operator, without limits.
    pub fn account(&self, name: &str) -> Account {
        let key = KeyPair::new_account();
        let nats = json!({
            "limits": {
                "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                "wildcards": true, "conn": -1, "leaf": -1
            },
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2
        });
        let claims = claims(&self.key, &key.public_key(), name, nats);
        let jwt = encode_jwt(&self.key, &claims);
        Account { key, jwt }
    }

    /// A nats-server configuration for operator mode trusting this operator, with `accounts` preloaded in a memory
    /// resolver. The first account is also the system account (nats-server wants one).
    pub fn server_config(&self, accounts: &[&Account]) -> String {
        let mut config = format!("operator: {}\nresolver: MEMORY\nresolver_preload: {{\n", self.jwt);
        for account in accounts {
            config.push_str(&format!("  {}: {}\n", account.public_key(), account.jwt));
        }
        config.push_str("}\n");
        if let Some(first) = accounts.first() {
            config.push_str(&format!("system_account: {}\n", first.public_key()));
        }
        config
    }
}

impl Account {
    /// The account's public key (`A...`).
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A new user of this account, without limits.
    pub fn user(&self, name: &str) -> User {
        let key = KeyPair::new_user();
        let nats = json!({
            "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2
        });
        let claims = claims(&self.key, &key.public_key(), name, nats);
        let jwt = encode_jwt(&self.key, &claims);
        let seed = key.seed().expect("a generated key pair has a seed");
        User { jwt, seed }
    }
}

impl User {
    /// The contents of a NATS `.creds` file for this user.
    pub fn creds(&self) -> String {
        creds(&self.jwt, &self.seed)
    }
}

/// The `.creds` file format: the user JWT and its NKEY seed between the usual armour lines.
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// Standard claims: a random `jti`, `iat` now, issuer, subject, name and the `nats` section.
fn claims(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> Value {
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Any unique id will do: the base32 public key of a throw-away key pair.
    let jti = KeyPair::new_user().public_key()[1..].to_string();
    json!({
        "jti": jti,
        "iat": iat,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    })
}

/// Encodes and signs a JWT with the issuer's nkey.
pub fn encode_jwt(issuer: &KeyPair, claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = issuer
        .sign(signing_input.as_bytes())
        .expect("ed25519 signing cannot fail");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
