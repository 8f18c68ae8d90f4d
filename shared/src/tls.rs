//! TLS settings for MQTT, the same on every side: rustls with the `ring` provider (no
//! aws-lc C build), TLS 1.2 and 1.3 with rustls' safe defaults.
//!
//! * a cabinet, the simulator and the fleet-server's link to an external broker trust one
//!   CA (a PEM file, usually the operator's own) — [`client_config`];
//! * the fleet-server's MQTT front door presents a certificate chain and key — [`server_config`].
//!
//! Callers read the PEM files themselves (this crate does no I/O) and name the
//! configuration key in their errors.

use std::sync::Arc;

pub use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Why PEM material cannot be used for TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate found in the PEM data")]
    NoCertificate,
    #[error("no private key found in the PEM data")]
    NoKey,
    #[error("the PEM data cannot be read: {0}")]
    Pem(#[from] std::io::Error),
    #[error("rustls refused the material: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

/// A client that trusts exactly the CA certificates in `ca_pem` (and no system roots: a
/// cabinet talks to one operator's broker).
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots.add(cert)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server presenting the chain in `cert_pem` (leaf first) with the key in `key_pem`
/// (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates(cert_pem)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key_pem[..])?.ok_or(TlsError::NoKey)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_or_keys_is_refused_by_name() {
        assert!(matches!(client_config(b"not pem"), Err(TlsError::NoCertificate)));
        assert!(matches!(server_config(b"", b""), Err(TlsError::NoCertificate)));
    }
}
