//! Loading a certificate chain and key for an HTTPS (or SMTPS) port, with
//! errors that name the file and what is wrong with it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::listener::ServerError;

fn tls_err(what: &Path, reason: impl Into<String>) -> ServerError {
    ServerError::Tls {
        what: what.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads a PEM certificate chain and private key into a rustls server
/// configuration (HTTP/2 and HTTP/1.1 offered by ALPN).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let cert_pem = std::fs::read(cert).map_err(|e| tls_err(cert, format!("cannot read: {e}")))?;
    let key_pem = std::fs::read(key).map_err(|e| tls_err(key, format!("cannot read: {e}")))?;
    // PEM is read by rustls-pki-types' own `PemObject` (rustls-pemfile,
    // which did it before, is superseded by it and no longer maintained).
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(tls_err(cert, "holds no PEM certificate"));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => tls_err(key, "holds no PEM private key"),
        e => tls_err(key, format!("not a PEM key file: {e}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| tls_err(key, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
