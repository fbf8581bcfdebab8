//! Server-side TLS from PEM files that rotate under us: a certificate chain, its key and an
//! optional client CA (mTLS). The files are polled and a new `ServerConfig` is swapped in when
//! their content changes, so Kubernetes Secret updates (an atomic `..data` symlink swap) and
//! cert-manager renewals need no restart. A bad new set keeps the running config.

pub mod roots;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::reload::{Reloading, Source};

/// How often the files are read and compared with what is loaded.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key of the leaf.
    pub key: PathBuf,
    /// CA bundle that client certificates are verified against; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

/// What to do with client certificates when `client_ca` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may present a certificate (then it must verify) or none.
    Optional,
    /// The handshake fails without a verified client certificate.
    Required,
}

#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// ALPN protocols offered, most preferred first (e.g. `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    pub client_auth: ClientAuth,
    pub reload_interval: Duration,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self {
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            client_auth: ClientAuth::Optional,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found")]
    NoKey { path: PathBuf },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("client CA {path}: {why}")]
    ClientCa { path: PathBuf, why: String },
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Reload counters, registered in the app's registry.
#[derive(Clone)]
pub struct TlsMetrics {
    ok: IntCounter,
    failed: IntCounter,
}

impl TlsMetrics {
    /// Registers `mcp_sentinel_tls_reloads_total{result="success|failure"}` in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_tls_reloads_total",
                "Certificate reloads after the PEM files changed, by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        Ok(Self {
            ok: reloads.with_label_values(&["success"]),
            failed: reloads.with_label_values(&["failure"]),
        })
    }
}

/// The current server config, replaced when the files change. Cheap to clone.
#[derive(Clone)]
pub struct ReloadingTls {
    inner: Arc<Reloading<TlsSource>>,
}

/// How a config is built from the PEM files, for the reloader.
struct TlsSource {
    files: TlsFiles,
    options: TlsOptions,
    provider: Arc<CryptoProvider>,
    metrics: Option<TlsMetrics>,
}

impl Source for TlsSource {
    type Value = ServerConfig;
    type Error = TlsError;
    const WHAT: &'static str = "TLS";

    fn read_error(&self, path: &Path, source: std::io::Error) -> TlsError {
        TlsError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The contents are the cert, the key and the client CA, in the order of [`paths`].
    fn build(&self, contents: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
        build(
            &self.files,
            &self.options,
            &self.provider,
            &contents[0],
            &contents[1],
            contents.get(2).map(Vec::as_slice),
        )
    }

    fn reloaded(&self, _: &ServerConfig) {
        if let Some(m) = &self.metrics {
            m.ok.inc();
        }
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
    }

    fn rejected(&self, e: &TlsError) {
        if let Some(m) = &self.metrics {
            m.failed.inc();
        }
        tracing::warn!(error = %e, "TLS files changed but cannot be used; keeping the loaded certificate");
    }
}

/// The files a config is built from; a change in any of them means a reload.
fn paths(files: &TlsFiles) -> Vec<PathBuf> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
}

impl ReloadingTls {
    /// Loads the files once; an error here is a startup error.
    pub fn load(
        files: TlsFiles,
        options: TlsOptions,
        metrics: Option<TlsMetrics>,
    ) -> Result<Self, TlsError> {
        let paths = paths(&files);
        let source = TlsSource {
            files,
            options,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            metrics,
        };
        Ok(Self {
            inner: Arc::new(Reloading::load(source, paths)?),
        })
    }

    /// The config new connections should use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current()
    }

    /// An acceptor over the current config; take one per accepted connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.source().files
    }

    /// Reads the files; when their content differs from what is loaded, builds and installs a new
    /// config. `Ok(true)`: a new config is in use. On error the previous config stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.inner.reload_if_changed()
    }

    /// Polls the files every `reload_interval` until `stop`. A failure is logged and counted
    /// once per distinct error (a half-written rotation is simply retried on the next poll).
    pub fn spawn_reloader(&self, stop: CancellationToken) -> JoinHandle<()> {
        let interval = self.inner.source().options.reload_interval;
        self.inner.spawn(interval, stop)
    }
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))
}

fn build(
    files: &TlsFiles,
    options: &TlsOptions,
    provider: &Arc<CryptoProvider>,
    cert: &[u8],
    key: &[u8],
    client_ca: Option<&[u8]>,
) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert, cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        e => pem_error(&files.key, e),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match (&files.client_ca, client_ca) {
        (Some(path), Some(pem)) => {
            let ca_error = |why: String| TlsError::ClientCa {
                path: path.clone(),
                why,
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, pem)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no PEM certificate found".into()));
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match options.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            let verifier = verifier.build().map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols.clone_from(&options.alpn);
    Ok(config)
}
