//! Server-side TLS from PEM files that rotate under us: a certificate chain, its key and an
//! optional client CA (mTLS). The files are polled and a new `ServerConfig` is swapped in when
//! their content changes, so Kubernetes Secret updates (an atomic `..data` symlink swap) and
//! cert-manager renewals need no restart. A bad new set keeps the running config.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
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

/// The bytes a config was built from; a change in any file means a reload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The current server config, replaced when the files change. Cheap to clone.
#[derive(Clone)]
pub struct ReloadingTls {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    options: TlsOptions,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<ServerConfig>>,
    /// What `current` was built from.
    loaded: Mutex<Material>,
    metrics: Option<TlsMetrics>,
}

impl ReloadingTls {
    /// Loads the files once; an error here is a startup error.
    pub fn load(
        files: TlsFiles,
        options: TlsOptions,
        metrics: Option<TlsMetrics>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let material = read_material(&files)?;
        let config = build(&files, &options, &provider, &material)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                options,
                provider,
                current: RwLock::new(Arc::new(config)),
                loaded: Mutex::new(material),
                metrics,
            }),
        })
    }

    /// The config new connections should use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.inner.current.read().expect("not poisoned").clone()
    }

    /// An acceptor over the current config; take one per accepted connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// Reads the files; when their content differs from what is loaded, builds and installs a new
    /// config. `Ok(true)`: a new config is in use. On error the previous config stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let inner = &self.inner;
        let material = read_material(&inner.files)?;
        let mut loaded = inner.loaded.lock().expect("not poisoned");
        if material == *loaded {
            return Ok(false);
        }
        let config = build(&inner.files, &inner.options, &inner.provider, &material)?;
        *inner.current.write().expect("not poisoned") = Arc::new(config);
        *loaded = material;
        Ok(true)
    }

    /// Polls the files every `reload_interval` until `stop`. A failure is logged and counted
    /// once per distinct error (a half-written rotation is simply retried on the next poll).
    pub fn spawn_reloader(&self, stop: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.options.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_error: Option<String> = None;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let worker = this.clone();
                let result = tokio::task::spawn_blocking(move || worker.reload_if_changed()).await;
                let metrics = this.inner.metrics.as_ref();
                match result {
                    Ok(Ok(true)) => {
                        last_error = None;
                        if let Some(m) = metrics {
                            m.ok.inc();
                        }
                        tracing::info!(cert = %this.inner.files.cert.display(), "TLS certificate reloaded");
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(e)) => {
                        let text = e.to_string();
                        if last_error.as_deref() != Some(text.as_str()) {
                            if let Some(m) = metrics {
                                m.failed.inc();
                            }
                            tracing::warn!(error = %text, "TLS files changed but cannot be used; keeping the loaded certificate");
                            last_error = Some(text);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
                }
            }
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_material(files: &TlsFiles) -> Result<Material, TlsError> {
    Ok(Material {
        cert: read(&files.cert)?,
        key: read(&files.key)?,
        client_ca: files.client_ca.as_deref().map(read).transpose()?,
    })
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
    material: &Material,
) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert, &material.cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: files.key.clone(),
        },
        e => pem_error(&files.key, e),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match (&files.client_ca, &material.client_ca) {
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
