//! TLS: the configured certificate, or a self-signed one generated on first start.

use crate::config::Config;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
#[error("TLS {path}: {reason}")]
pub struct TlsError {
    pub path: String,
    pub reason: String,
}

fn err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Where the certificate and key are, generating a self-signed pair into `data_dir` when
/// the config names none.
pub fn cert_paths(config: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) {
        return Ok((cert.clone(), key.clone()));
    }
    let cert = config.data_dir.join("tls-cert.pem");
    let key = config.data_dir.join("tls-key.pem");
    if !cert.exists() || !key.exists() {
        let host = config.issuer_host();
        let mut names = vec![host.clone()];
        for extra in ["localhost", "127.0.0.1", "::1"] {
            if extra != host {
                names.push(extra.to_string());
            }
        }
        let generated = rcgen::generate_simple_self_signed(names).map_err(|e| err(&cert, e))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| err(&config.data_dir, e))?;
        crate::keys::write_private(&key, generated.signing_key.serialize_pem().as_bytes())
            .map_err(|e| err(&key, e))?;
        std::fs::write(&cert, generated.cert.pem()).map_err(|e| err(&cert, e))?;
    }
    Ok((cert, key))
}

/// The rustls server config (ALPN h2 and http/1.1) and the certificate's SHA-256
/// fingerprint.
pub fn server_config(cert: &Path, key: &Path) -> Result<(Arc<ServerConfig>, String), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, e))?;
    let first = certs
        .first()
        .ok_or_else(|| err(cert, "no certificate in file"))?;
    let fingerprint = crate::crypto::sha256(first.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| err(cert, e))?
            .with_no_client_auth()
            .with_single_cert(certs, private)
            .map_err(|e| err(key, e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint))
}
