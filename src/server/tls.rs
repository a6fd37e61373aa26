//! HTTPS: `server.tls_cert` / `server.tls_key` (PEM) served with rustls.
//!
//! The certificate is swappable while the server runs: each new connection reads the
//! current rustls config from an [`ArcSwap`] (one atomic load), so [`Tls::reload`]
//! (SIGHUP) changes what new connections get without touching open ones, and a bad
//! file is refused before anything is swapped, the old certificate staying in use.
//!
//! The crypto provider is `ring`, which the tree already has through reqwest; it is
//! named explicitly so that no process-wide default has to be installed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

use crate::config::TlsFiles;

/// Why a certificate or key could not be used. Each names the config key and file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {reason}")]
    Read {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("server.tls_cert: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("server.tls_key: {path} holds no PEM private key (PKCS#8, RSA or EC)")]
    NoKey { path: PathBuf },
    #[error("server.tls_cert / server.tls_key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The HTTPS side of the server: the current rustls config.
pub struct Tls {
    current: ArcSwap<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the certificate chain and key (the key must match the
    /// certificate).
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong with it.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(server_config(files)?),
        })
    }

    /// Replaces the certificate and key with those in `files` (the same paths, or the
    /// new ones of a reloaded config) for connections accepted from now on.
    ///
    /// # Errors
    /// When the new files cannot be used; the old certificate stays in use.
    pub fn reload(&self, files: &TlsFiles) -> Result<(), TlsError> {
        let config = server_config(files)?;
        self.current.store(Arc::new(config));
        tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    /// An acceptor with the current config, for one connection.
    pub(super) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    // The server speaks HTTP/1.1 only; saying so spares clients an h2 attempt.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_error(key: &'static str, path: &Path, error: &dyn std::fmt::Display) -> TlsError {
    TlsError::Read {
        key,
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let key = "server.tls_cert";
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(key, path, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(key, path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls::pki_types::pem::Error;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => read_error("server.tls_key", path, &other),
    })
}
