//! HTTPS for the API (`[http] tls.cert-file`, `tls.key-file`): the certificate is loaded at start (a bad one fails
//! the start, naming the key) and reloaded when its files change or a `certificate_renewed` event says so, without
//! dropping open connections: each connection keeps the configuration it was accepted with, new connections get
//! the new one. A reload that fails keeps the certificate in use and says why.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use agora::config::HttpTls;
use agora::{Coordinator, Event, Notification};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::error::TlsError;

/// How often the certificate files are checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The acceptor new connections use; swapped on reload.
#[derive(Clone)]
pub struct Acceptor {
    current: Arc<RwLock<TlsAcceptor>>,
}

impl Acceptor {
    /// Loads the certificate; the error names the key and what is wrong.
    pub fn load(tls: &HttpTls) -> Result<Self, TlsError> {
        Ok(Acceptor {
            current: Arc::new(RwLock::new(acceptor(tls)?)),
        })
    }

    /// The acceptor for a new connection.
    pub fn get(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn reload(&self, tls: &HttpTls, why: &str) {
        match acceptor(tls) {
            Ok(new) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new;
                tracing::info!("HTTPS certificate reloaded ({why})");
            }
            Err(e) => tracing::error!(
                "HTTPS certificate not reloaded ({why}), keeping the one in use: {}",
                agora::Report(&e)
            ),
        }
    }

    /// Reloads when the files change or a `certificate_renewed` event arrives, until shutdown.
    pub fn watch(self, tls: HttpTls, coordinator: &Coordinator, shutdown: CancellationToken) {
        let mut events = coordinator.subscribe();
        tokio::spawn(async move {
            let mut seen = modified(&tls);
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        let now = modified(&tls);
                        if now != seen {
                            seen = now;
                            self.reload(&tls, "the files changed");
                        }
                    }
                    n = events.recv() => match n {
                        Some(Notification::Event(d)) if matches!(d.event, Event::CertificateRenewed { .. }) => {
                            seen = modified(&tls);
                            self.reload(&tls, "certificate_renewed event");
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
        });
    }
}

fn modified(tls: &HttpTls) -> Option<(SystemTime, SystemTime)> {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((at(&tls.cert_file)?, at(&tls.key_file)?))
}

fn acceptor(tls: &HttpTls) -> Result<TlsAcceptor, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|source| TlsError::CertFile {
            path: tls.cert_file.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: tls.cert_file.clone(),
        });
    }
    // The key's own error is dropped: it may quote key material.
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|_| TlsError::KeyFile {
        path: tls.key_file.clone(),
    })?;
    let config = ServerConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Mismatch)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
