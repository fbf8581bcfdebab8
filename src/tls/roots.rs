//! Trust anchors for the TLS clients (the JWKS/OIDC fetch, the trace exporter): the PEM
//! certificates of a CA file, which then replace the system roots (naming a CA pins trust to
//! it), or the operating system's store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};

/// Why no root store could be made. Never quotes a file's content.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Pem { path: PathBuf, source: pem::Error },
    #[error("{}: {source}", .path.display())]
    Add {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: no PEM certificate", .0.display())]
    Empty(PathBuf),
    #[error(
        "no system CA certificates found{}",
        .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    NoSystemRoots(Option<rustls_native_certs::Error>),
}

/// The PEM certificates of the file at `path`.
pub fn ca_file(path: &Path) -> Result<Arc<RootCertStore>, RootsError> {
    let pem = std::fs::read(path).map_err(|source| RootsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|source| RootsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
        store.add(cert).map_err(|source| RootsError::Add {
            path: path.to_path_buf(),
            source,
        })?;
    }
    if store.is_empty() {
        return Err(RootsError::Empty(path.to_path_buf()));
    }
    Ok(Arc::new(store))
}

/// The operating system's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured).
pub fn system() -> Result<Arc<RootCertStore>, RootsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(RootsError::NoSystemRoots(found.errors.into_iter().next()));
    }
    Ok(Arc::new(store))
}
