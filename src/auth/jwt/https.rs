//! A one-shot HTTPS GET for JWKS and OIDC discovery documents: `https://` only, rustls with the
//! ring provider, HTTP/1.1, one request per connection, no redirects, a deadline over the whole
//! exchange and a cap on the body. Deliberately small: the verifier fetches a few documents every
//! few minutes and must never be talked into fetching anything else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::auth::jwt::{UrlError, https_uri};
use crate::tls::roots::{self, RootsError};

/// Largest JWKS/discovery document accepted.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// Why no TLS client could be set up for an issuer.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("ca_file {0}")]
    Ca(RootsError),
    #[error("{0}; set ca_file for the issuer")]
    NoSystemRoots(RootsError),
    #[error("{0}")]
    Protocols(rustls::Error),
}

impl From<RootsError> for TlsSetupError {
    fn from(e: RootsError) -> Self {
        match e {
            RootsError::NoSystemRoots(_) => TlsSetupError::NoSystemRoots(e),
            e => TlsSetupError::Ca(e),
        }
    }
}

/// Why a GET gave no document.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("GET {url}: {source}")]
    Failed { url: String, source: GetFailure },
    #[error("GET {url}: timed out after {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
}

/// What went wrong on the way, below `GetError`.
#[derive(Debug, thiserror::Error)]
pub enum GetFailure {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("no host")]
    NoHost,
    #[error("host {host}: {source}")]
    Host {
        host: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(hyper::Error),
    #[error("{0}")]
    Request(http::Error),
    #[error("status {0}")]
    Status(StatusCode),
    #[error("body of {0} bytes exceeds {max}", max = MAX_BODY)]
    TooBig(u64),
    #[error("body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// Root store from the PEM certificates of an issuer's `ca_file`. They replace the system roots:
/// naming a CA for an IdP pins trust to it.
pub(crate) fn ca_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsSetupError> {
    Ok(roots::ca_file(path)?)
}

/// The operating system's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured).
pub(crate) fn system_roots() -> Result<Arc<RootCertStore>, TlsSetupError> {
    Ok(roots::system()?)
}

pub(crate) fn client_config(roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Protocols)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// GETs `url` and returns the body of a 200 answer; anything else is an error.
pub(crate) async fn get(
    tls: &Arc<ClientConfig>,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, GetError> {
    match tokio::time::timeout(timeout, get_inner(tls, url)).await {
        Ok(r) => r.map_err(|source| GetError::Failed {
            url: url.to_string(),
            source,
        }),
        Err(_) => Err(GetError::TimedOut {
            url: url.to_string(),
            timeout,
        }),
    }
}

async fn get_inner(tls: &Arc<ClientConfig>, url: &str) -> Result<Bytes, GetFailure> {
    let uri = https_uri(url)?;
    let authority = uri.authority().ok_or(GetFailure::NoHost)?.clone();
    let host = authority.host();
    // `[::1]` in a URL is `::1` for DNS/SNI purposes.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(bare_host.to_string()).map_err(|source| GetFailure::Host {
            host: host.to_string(),
            source,
        })?;

    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(GetFailure::Connect)?;
    let _ = tcp.set_nodelay(true);
    let stream = TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(GetFailure::Tls)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(GetFailure::Http)?;
    let conn = tokio::spawn(conn);

    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let req = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("mcp-sentinel/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(GetFailure::Request)?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(GetFailure::Http)?;
        if resp.status() != StatusCode::OK {
            // Redirects included: a key URL that moves is a config change, not something to follow.
            return Err(GetFailure::Status(resp.status()));
        }
        if let Some(len) = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > MAX_BODY as u64
        {
            return Err(GetFailure::TooBig(len));
        }
        Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(GetFailure::Body)
    }
    .await;
    conn.abort();
    result
}
