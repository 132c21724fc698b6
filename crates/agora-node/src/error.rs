//! The node's errors: one type per layer, each keeping its cause as `source()`, as the library's do.
//!
//! - [`ConfigError`]: the configuration (file, command line) cannot be run with;
//! - [`TlsError`]: the HTTPS certificate or key cannot be used;
//! - [`StartError`]: the node could not start (listen, join the cluster, start its services);
//! - [`ServeError`]: the HTTP server could not start serving;
//! - [`CliError`]: what a subcommand ends with, and the one place that maps errors to exit codes
//!   (2 for usage and configuration, 1 for everything at run time).
//!
//! Messages say what failed and where, never include secrets, and do not repeat their source: [`Report`] prints the
//! whole chain.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit status for a bad command line or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit status for a failure at run time.
pub const EXIT_RUNTIME: u8 = 1;

/// A configuration the node or a tool cannot run with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file failed validation; the source lists every problem, one per line.
    #[error("invalid configuration {}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, each naming its key.
        #[source]
        errors: agora::config::ConfigErrors,
    },
    /// Settings that are valid one by one but not together (e.g. a public `--http` address without a token).
    #[error("{0}")]
    Inconsistent(String),
    /// `[http.tls]` files cannot be used.
    #[error("cannot use the HTTPS certificate")]
    Tls(#[source] TlsError),
    /// `--stalwart VERSION` is not a release agora knows.
    #[error("--stalwart")]
    StalwartVersion(#[source] agora::stalwart::VersionError),
    /// A tool that reads the bus was given a file without a NATS store.
    #[error(
        "{} names no NATS store: set [cluster] coordinator to the id of a [store.<id>] with type = \"nats\"",
        path.display()
    )]
    NoNatsStore {
        /// The file.
        path: PathBuf,
    },
    /// `agora watch` without `--config`.
    #[error("watch needs --config FILE naming the NATS store to watch: without one there is no bus to watch")]
    WatchWithoutConfig,
    /// `agora publish` was given JSON that is not an event.
    #[error("invalid event JSON")]
    EventJson(#[source] serde_json::Error),
}

/// Why the HTTPS certificate or key cannot be used. Never carries key material: the key's own parse error is
/// dropped on purpose (it may quote the key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file cannot be read or parsed.
    #[error("http.tls.cert-file {}", path.display())]
    CertFile {
        /// The file.
        path: PathBuf,
        /// What the PEM reader reported.
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("http.tls.cert-file {}: no certificate in it", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no usable private key.
    #[error("http.tls.key-file {}: no usable PEM private key in it", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the protocol setup.
    #[error("TLS setup")]
    Setup(#[source] tokio_rustls::rustls::Error),
    /// The key does not belong to the certificate (or rustls cannot use them together).
    #[error("http.tls: the certificate and key do not go together")]
    Mismatch(#[source] tokio_rustls::rustls::Error),
}

/// Why `agora node` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The HTTP port cannot be bound (taken, or not allowed).
    #[error("cannot listen on {addr} (http.listen)")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The bound listener's address cannot be read.
    #[error("cannot read the listening address")]
    LocalAddr(#[source] std::io::Error),
    /// The coordinator (the cluster connection) could not start.
    #[error("cannot join the cluster")]
    Coordinator(#[source] agora::StartError),
    /// The cluster connection's own runtime could not start.
    #[error("cannot start the cluster connection's runtime")]
    BusRuntime(#[source] std::io::Error),
    /// The cluster connection's start-up task ended without an answer (it panicked).
    #[error("the cluster connection's start-up task failed")]
    BusTask(#[source] tokio::task::JoinError),
    /// The node's services (replicated state, membership) could not start.
    #[error("cannot start the node's services")]
    Services(#[source] agora::StartError),
}

/// Why the HTTP server could not start serving. Returned instead of logged, so that a supervisor sees a failed
/// start as a failure, not as a clean stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener cannot move to the accept thread.
    #[error("cannot hand the HTTP listener to its thread")]
    Listener(#[source] std::io::Error),
    /// The accept thread cannot be spawned.
    #[error("cannot start the HTTP accept thread")]
    AcceptThread(#[source] std::io::Error),
    /// The accept thread's runtime cannot be built.
    #[error("cannot start the HTTP accept thread's runtime")]
    AcceptRuntime(#[source] std::io::Error),
    /// The accept thread ended before it reported that it serves (it panicked).
    #[error("the HTTP accept thread ended before serving")]
    AcceptThreadDied,
}

/// What a subcommand ends with; [`CliError::exit_code`] is the one mapping to the process's exit status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad command line or configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A tool (`watch`, `publish`) could not join the bus.
    #[error("cannot join the bus")]
    Join(#[source] agora::StartError),
    /// `publish` could not publish the event.
    #[error("cannot publish")]
    Publish(#[source] agora::PublishError),
    /// `publish` published, but NATS did not confirm it.
    #[error("NATS did not confirm the event: it may not have been published (see the log)")]
    NotConfirmed,
    /// `bench` failed; `usage` tells a bad invocation from a failed run.
    #[error("{message}")]
    Bench {
        /// What failed.
        message: String,
        /// A bad invocation (exit 2) rather than a failed run (exit 1).
        usage: bool,
    },
}

impl CliError {
    /// The process's exit status: 2 for usage and configuration errors (including an event the configured Stalwart
    /// release cannot decode: the invocation is wrong, not the bus), 1 for failures at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) => EXIT_USAGE,
            CliError::Publish(agora::PublishError::StalwartCannotDecode { .. }) => EXIT_USAGE,
            CliError::Bench { usage: true, .. } => EXIT_USAGE,
            CliError::Start(_)
            | CliError::Serve(_)
            | CliError::Join(_)
            | CliError::Publish(_)
            | CliError::NotConfirmed
            | CliError::Bench { usage: false, .. } => EXIT_RUNTIME,
        }
    }
}

/// Displays an error and its sources (`what failed: why: root cause`), as the library does.
pub use agora::Report;

#[cfg(test)]
mod tests {
    use super::*;

    fn io(msg: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, msg.to_string())
    }

    #[test]
    fn the_report_shows_the_whole_chain_once() {
        let err = CliError::from(StartError::Listen {
            addr: "127.0.0.1:8080".parse().expect("addr"),
            source: io("Address already in use"),
        });
        assert_eq!(
            Report(&err).to_string(),
            "cannot listen on 127.0.0.1:8080 (http.listen): Address already in use"
        );
        assert_eq!(err.exit_code(), EXIT_RUNTIME);
    }

    #[test]
    fn a_multi_line_source_starts_on_its_own_line() {
        let errors = agora::config::parse("[http]\nlisten = 5\nbogus = 1\n").expect_err("invalid");
        let err = CliError::from(ConfigError::Invalid {
            path: "/etc/agora.toml".into(),
            errors,
        });
        let text = Report(&err).to_string();
        assert!(text.starts_with("invalid configuration /etc/agora.toml:\n"), "{text}");
        assert!(text.lines().count() >= 3, "one problem per line: {text}");
        assert_eq!(err.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn every_kind_maps_to_its_documented_exit_code() {
        let usage = [
            CliError::Config(ConfigError::WatchWithoutConfig),
            CliError::Publish(agora::PublishError::StalwartCannotDecode { reason: "no".into() }),
            CliError::Bench {
                message: "bad".into(),
                usage: true,
            },
        ];
        for e in &usage {
            assert_eq!(e.exit_code(), 2, "{e}");
        }
        let runtime = [
            CliError::Serve(ServeError::AcceptThreadDied),
            CliError::Publish(agora::PublishError::ShutDown),
            CliError::NotConfirmed,
            CliError::Bench {
                message: "failed".into(),
                usage: false,
            },
        ];
        for e in &runtime {
            assert_eq!(e.exit_code(), 1, "{e}");
        }
    }

    #[test]
    fn a_serve_error_keeps_its_cause() {
        let err = CliError::from(ServeError::AcceptThread(io("Resource temporarily unavailable")));
        assert_eq!(
            Report(&err).to_string(),
            "cannot start the HTTP accept thread: Resource temporarily unavailable"
        );
    }
}
