//! TLS on the node's listeners, with rustls and the ring crypto provider.
//!
//! [`Tls::load`] reads the PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1)
//! named in [`TlsFiles`] and builds one rustls `ServerConfig` per listener: the Kinesis
//! listener offers ALPN `h2` and `http/1.1`; the gRPC listener offers `h2` and, when a
//! client CA is configured, requires a client certificate that CA signed (mutual TLS for
//! node-to-node traffic). Both configurations take their certificate from one
//! [`ReloadingCert`], which the [`Reloader`] task refreshes when the files change; a file
//! that cannot be used is logged and the certificate in use stays.
//!
//! The same certificate is the client certificate of the node's calls to its peers
//! ([`Tls::peer_tls`]): peers' certificates must chain to the peer CA (`tls_peer_ca`,
//! default `tls_client_ca`), read at start-up like the client CA.
//!
//! [`handshake`] is the one place a TLS handshake is accepted: bounded by
//! [`HANDSHAKE_TIMEOUT`], and a failure is a `debug!` line, never an error of the node.

use crate::config::TlsFiles;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How often the [`Reloader`] looks at the certificate and key files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse the pem file {}", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key in {}", path.display())]
    NoKey { path: PathBuf },
    #[error("use the private key in {} with the certificate in {}", key.display(), cert.display())]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("trust the client ca certificates in {}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("trust the peer ca certificates in {}", path.display())]
    PeerCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("build the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    #[error("build the tls configuration")]
    Rustls(#[from] rustls::Error),
}

/// The node's TLS set-up: one server configuration per listener, sharing one certificate.
#[derive(Debug)]
pub struct Tls {
    kinesis: Arc<ServerConfig>,
    grpc: Arc<ServerConfig>,
    peer: sluice_cluster::PeerTls,
    reloader: Reloader,
}

impl Tls {
    /// Reads and checks the files; refuses anything a handshake could not use.
    pub async fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let contents = KeyFiles::read(files).await?;
        let certified = contents.certified_key(files, &provider)?;
        let certificate = Arc::new(ReloadingCert::new(Arc::new(certified)));

        let mut kinesis = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        kinesis.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let grpc = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let grpc = match &files.client_ca {
            None => grpc.with_no_client_auth(),
            Some(path) => {
                let roots =
                    read_ca(path, |path, source| TlsError::ClientCa { path, source }).await?;
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .build()
                .map_err(TlsError::ClientVerifier)?;
                grpc.with_client_cert_verifier(verifier)
            }
        };
        let mut grpc = grpc.with_cert_resolver(certificate.clone());
        grpc.alpn_protocols = vec![b"h2".to_vec()];

        let peer_roots = match &files.peer_ca {
            Some(path) => read_ca(path, |path, source| TlsError::PeerCa { path, source }).await?,
            None => {
                tracing::warn!(
                    "tls is on without tls_peer_ca or tls_client_ca: this node cannot verify other nodes, so calls to peers fail (a single node needs none)"
                );
                RootCertStore::empty()
            }
        };
        let peer = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(peer_roots)
            .with_client_cert_resolver(certificate.clone());

        Ok(Tls {
            kinesis: Arc::new(kinesis),
            grpc: Arc::new(grpc),
            peer: sluice_cluster::PeerTls::new(peer),
            reloader: Reloader {
                files: files.clone(),
                provider,
                certificate,
                seen: contents,
                unreadable: false,
            },
        })
    }

    /// Accepts Kinesis connections: HTTP/2 or HTTP/1.1 by ALPN, no client certificate.
    pub fn kinesis_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.kinesis))
    }

    /// Accepts gRPC connections: HTTP/2, and a client certificate when mutual TLS is on.
    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.grpc))
    }

    /// Dials peers over TLS: trusts the peer CA, presents this node's (reloaded) certificate.
    pub fn peer_tls(&self) -> sluice_cluster::PeerTls {
        self.peer.clone()
    }

    /// The task that keeps the certificate in step with the files.
    pub fn into_reloader(self) -> Reloader {
        self.reloader
    }
}

/// Accepts a TLS session on `stream`, for at most [`HANDSHAKE_TIMEOUT`]. A failed or slow
/// handshake is the client's problem: it is logged at debug level and `None` is returned.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    listener: &'static str,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(listener, peer = %peer, error = %error, "tls handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(listener, peer = %peer, timeout_secs = HANDSHAKE_TIMEOUT.as_secs(), "tls handshake timed out");
            None
        }
    }
}

/// The certificate presented in every handshake, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn new(certified: Arc<CertifiedKey>) -> ReloadingCert {
        ReloadingCert {
            current: RwLock::new(certified),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        // The lock guards a plain `Arc` swap: a poisoned lock still holds a whole value.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = certified;
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The node presents its own certificate to peers that ask for one (mutual TLS).
impl ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Polls the certificate and key files every [`RELOAD_INTERVAL`] and swaps in a new
/// certificate when their contents change.
#[derive(Debug)]
pub struct Reloader {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    certificate: Arc<ReloadingCert>,
    /// The contents last tried, so a broken file is reported once, not on every poll.
    seen: KeyFiles,
    unreadable: bool,
}

impl Reloader {
    /// Runs until `stop` turns true (or its sender is gone).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval_at(
            tokio::time::Instant::now() + RELOAD_INTERVAL,
            RELOAD_INTERVAL,
        );
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopped = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => true,
                _ = ticks.tick() => false,
            };
            if stopped {
                return;
            }
            self.check().await;
        }
    }

    /// Reads the files once; installs their certificate if they changed and are usable.
    /// Returns whether a new certificate was installed.
    pub async fn check(&mut self) -> bool {
        let contents = match KeyFiles::read(&self.files).await {
            Ok(contents) => contents,
            Err(error) => {
                if !self.unreadable {
                    tracing::warn!(error = %error_chain(&error), "cannot read the tls files; the current certificate stays");
                    self.unreadable = true;
                }
                return false;
            }
        };
        self.unreadable = false;
        if contents == self.seen {
            return false;
        }
        let certified = contents.certified_key(&self.files, &self.provider);
        self.seen = contents;
        match certified {
            Ok(certified) => {
                self.certificate.replace(Arc::new(certified));
                tracing::info!(cert = %self.files.cert.display(), key = %self.files.key.display(), "tls certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "the changed tls files cannot be used; the current certificate stays");
                false
            }
        }
    }
}

/// The bytes of the certificate and key files.
#[derive(Debug, PartialEq, Eq)]
struct KeyFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl KeyFiles {
    async fn read(files: &TlsFiles) -> Result<KeyFiles, TlsError> {
        Ok(KeyFiles {
            cert: read(&files.cert).await?,
            key: read(&files.key).await?,
        })
    }

    /// Parses the chain and key and checks that they belong together.
    fn certified_key(
        &self,
        files: &TlsFiles,
        provider: &CryptoProvider,
    ) -> Result<CertifiedKey, TlsError> {
        let chain = certificates(&files.cert, &self.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|source| match source {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
                path: files.key.clone(),
            },
            source => TlsError::Pem {
                path: files.key.clone(),
                source,
            },
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::KeyPair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Every certificate in a PEM file, in order; at least one.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

async fn read_ca(
    path: &Path,
    error: impl Fn(PathBuf, rustls::Error) -> TlsError,
) -> Result<RootCertStore, TlsError> {
    let pem = read(path).await?;
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path, &pem)? {
        roots
            .add(certificate)
            .map_err(|source| error(path.to_owned(), source))?;
    }
    Ok(roots)
}

/// An error and its causes on one line, for log fields and one-line reports (hyper's own
/// message is often just "client error").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
