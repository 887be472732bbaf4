//! amqps: TLS listeners (rustls), optional client-certificate verification, and the identity
//! (the certificate's CN) the `EXTERNAL` mechanism authenticates.
//!
//! A TLS connection is accepted and handshaken here; its clear bytes are pumped to one end of a
//! Unix socket pair whose other end runs the ordinary connection code, so AMQP handling is the
//! same over TLS and TCP. Settings follow RabbitMQ's `ssl_options.*`: `certfile`, `keyfile`,
//! `cacertfile`, `verify` (`verify_peer` / `verify_none`) and `fail_if_no_peer_cert`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::socket::Socket;
use crate::broker::Broker;

/// How long a client has for the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A required `ssl_options` key is missing.
    #[error("ssl_options.{0} is required for TLS listeners")]
    Missing(&'static str),
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// An option has a value Leveret does not know.
    #[error("ssl_options.{key} = {value}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// rustls refused the certificate, key or CA set.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// What a TLS client proved about itself.
#[derive(Debug, Clone, Default)]
pub struct TlsIdentity {
    /// The common name of the client certificate's subject, if it presented one.
    pub peer_cn: Option<String>,
}

fn read(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_owned(),
            reason: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// A rustls server configuration from RabbitMQ-style `ssl_options`.
pub fn server_config(options: &BTreeMap<String, String>) -> Result<Arc<ServerConfig>, TlsError> {
    let get = |key: &'static str| options.get(key).ok_or(TlsError::Missing(key));
    let chain = certificates(get("certfile")?)?;
    let keyfile = get("keyfile")?;
    let key = PrivateKeyDer::from_pem_slice(&read(keyfile)?).map_err(|e| TlsError::File {
        path: keyfile.clone(),
        reason: format!("no private key: {e}"),
    })?;
    let verify_peer = match options.get("verify").map(String::as_str) {
        None | Some("verify_none") => false,
        Some("verify_peer") => true,
        Some(other) => {
            return Err(TlsError::Invalid {
                key: "verify".into(),
                value: other.into(),
                reason: "expected verify_peer or verify_none",
            })
        }
    };
    let fail_if_no_peer_cert = match options.get("fail_if_no_peer_cert").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(TlsError::Invalid {
                key: "fail_if_no_peer_cert".into(),
                value: other.into(),
                reason: "expected true or false",
            })
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if verify_peer {
        let mut roots = RootCertStore::empty();
        for ca in certificates(get("cacertfile")?)? {
            roots.add(ca).map_err(|e| TlsError::Rustls(e.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if fail_if_no_peer_cert {
            verifier
        } else {
            verifier.allow_unauthenticated()
        };
        builder.with_client_cert_verifier(
            verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
        )
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The subject CN of a DER certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// Accept amqps connections until `shutdown` turns true, then close them all and return.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    ids: &'static AtomicU64,
) {
    let acceptor = TlsAcceptor::from(config);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let (acceptor, broker, shutdown) = (acceptor.clone(), broker.clone(), shutdown.clone());
                    connections.spawn(async move {
                        let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(error)) => {
                                tracing::warn!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::warn!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let identity = TlsIdentity {
                            peer_cn: tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|certs| certs.first())
                                .and_then(common_name),
                        };
                        let (clear, inner) = match UnixStream::pair() {
                            Ok(pair) => pair,
                            Err(error) => {
                                tracing::error!(%error, "cannot make a socket pair for TLS");
                                return;
                            }
                        };
                        let pump = tokio::spawn(async move {
                            let (mut tls, mut inner) = (tls, inner);
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut inner).await;
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                        });
                        super::connection::run(
                            Socket::Unix(clear),
                            (peer, local),
                            Some(identity),
                            broker,
                            shutdown,
                            id,
                        )
                        .await;
                        let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Bind `addr` (see [`super::bind`]) and serve amqps on it; returns the bound address and the
/// server task.
pub async fn start(
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    broker: Arc<Broker>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listeners = super::bind(addr)?;
    let local = listeners[0].local_addr()?;
    let servers: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(serve(
                listener,
                config.clone(),
                broker.clone(),
                shutdown.clone(),
                &super::NEXT_CONNECTION_ID,
            ))
        })
        .collect();
    let task = tokio::spawn(async move {
        futures::future::join_all(servers).await;
    });
    Ok((local, task))
}
