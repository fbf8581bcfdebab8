//! The identity provider behind the `sentinel-jwt` target: an HTTPS server (rustls with ring, a
//! certificate for 127.0.0.1 from a throwaway rcgen CA) on its own thread and runtime, answering
//! `GET /jwks.json` with one EC P-256 key; and one ES256 token signed with that key, which the
//! load generator presents on every request (so after the first, the sentinel verifies it from
//! its cache).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio_rustls::TlsAcceptor;

/// The canonical URI of the protected MCP server: `auth.resource`, and the tokens' `aud`.
pub const RESOURCE: &str = "https://mcp.bench.invalid/mcp";
const KID: &str = "bench-es256";
/// The token's `sub`: the principal every request with it is.
pub const SUBJECT: &str = "bench";
/// Lifetime of the minted token: longer than any bench run.
const TOKEN_SECONDS: u64 = 3600;

pub struct Idp {
    pub issuer: String,
    pub jwks_url: String,
    /// PEM of the CA that signed the server certificate (the issuer's `ca_file`).
    pub ca_file: PathBuf,
    /// `Bearer <token>`, marked sensitive.
    pub authorization: HeaderValue,
    jwks_fetches: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Idp {
    /// Binds 127.0.0.1, writes `idp-ca.pem` into `workdir` and starts serving.
    pub fn start(workdir: &Path) -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mcp-sentinel bench IdP CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let leaf_key = KeyPair::generate()?;
        // An IP address becomes an IP SAN, which is what rustls matches `https://127.0.0.1`.
        let leaf =
            CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&leaf_key, &ca)?;
        let ca_file = workdir.join("idp-ca.pem");
        std::fs::write(&ca_file, ca.pem())
            .with_context(|| format!("writing {}", ca_file.display()))?;

        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes())
            .context("the IdP's server key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let issuer = format!("https://127.0.0.1:{port}");
        let jwks_url = format!("{issuer}/jwks.json");

        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow!("generating the P-256 signing key"))?;
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .map_err(|_| anyhow!("loading the P-256 signing key"))?;
        // Uncompressed point: 0x04 || x || y, 32 bytes each.
        let point = signer.public_key().as_ref();
        anyhow::ensure!(
            point.len() == 65 && point[0] == 4,
            "unexpected P-256 public key"
        );
        let jwks = json!({"keys": [{
            "kid": KID, "kty": "EC", "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
            "alg": "ES256", "use": "sig",
        }]})
        .to_string();

        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": KID});
        let claims = json!({
            "iss": issuer, "sub": SUBJECT, "aud": RESOURCE,
            "iat": now, "exp": now + TOKEN_SECONDS,
        });
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        // FIXED signing: the JOSE r || s form JWS wants, not ASN.1.
        let signature = signer
            .sign(&rng, input.as_bytes())
            .map_err(|_| anyhow!("signing the bench token"))?;
        let mut authorization =
            HeaderValue::from_str(&format!("Bearer {input}.{}", b64(signature.as_ref())))?;
        authorization.set_sensitive(true);

        let jwks = Bytes::from(jwks);
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let fetches = jwks_fetches.clone();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("bench-idp".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("bench IdP: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        () = serve(listener, acceptor, jwks, fetches) => {}
                        _ = stop => {}
                    }
                });
            })?;
        Ok(Self {
            issuer,
            jwks_url,
            ca_file,
            authorization,
            jwks_fetches,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::Relaxed)
    }

    /// `base` (the passthrough config) with its `auth` section replaced by [`Self::auth_section`].
    /// Everything else stays the same, so the two sentinels differ only in authentication.
    /// Written to `workdir`.
    pub fn sentinel_config(&self, base: &Path, workdir: &Path) -> Result<PathBuf> {
        crate::procs::config_with(base, workdir, "sentinel-jwt", "auth", self.auth_section())
    }

    /// One JWT issuer: this IdP, ES256, audience [`RESOURCE`]; no anonymous callers.
    pub fn auth_section(&self) -> serde_json::Value {
        json!({
            "resource": RESOURCE,
            "jwt": {"issuers": [{
                "issuer": self.issuer,
                "jwks_url": self.jwks_url,
                "algorithms": ["ES256"],
                "ca_file": self.ca_file,
            }]},
        })
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    jwks: Bytes,
    fetches: Arc<AtomicUsize>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let jwks = jwks.clone();
        let fetches = fetches.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req: Request<Incoming>| {
                let response = if req.method() == Method::GET && req.uri().path() == "/jwks.json" {
                    fetches.fetch_add(1, Ordering::Relaxed);
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(jwks.clone()))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::new()))
                };
                async move { Ok::<_, Infallible>(response.expect("static response parts")) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
