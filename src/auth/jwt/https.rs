//! A one-shot HTTPS GET for JWKS and OIDC discovery documents: `https://` only, rustls with the
//! ring provider, HTTP/1.1, one request per connection, no redirects, a deadline over the whole
//! exchange and a cap on the body. Deliberately small: the verifier fetches a few documents every
//! few minutes and must never be talked into fetching anything else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest JWKS/discovery document accepted.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// Validates an `https://host[:port]/path` URL and returns it parsed.
pub(crate) fn https_uri(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?}: not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "{url:?}: only https:// URLs are fetched (keys must come over an authenticated channel)"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{url:?}: no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("{url:?}: credentials in the URL are not supported"));
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(uri)
}

/// Root store from the PEM certificates of an issuer's `ca_file`. They replace the system roots:
/// naming a CA for an IdP pins trust to it.
pub(crate) fn ca_roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("ca_file {}: no PEM certificate", path.display()));
    }
    Ok(Arc::new(store))
}

/// The operating system's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured).
pub(crate) fn system_roots() -> Result<Arc<RootCertStore>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "no system CA certificates found{why}; set ca_file for the issuer"
        ));
    }
    Ok(Arc::new(store))
}

pub(crate) fn client_config(roots: Arc<RootCertStore>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
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
) -> Result<Bytes, String> {
    match tokio::time::timeout(timeout, get_inner(tls, url)).await {
        Ok(r) => r.map_err(|e| format!("GET {url}: {e}")),
        Err(_) => Err(format!("GET {url}: timed out after {timeout:?}")),
    }
}

async fn get_inner(tls: &Arc<ClientConfig>, url: &str) -> Result<Bytes, String> {
    let uri = https_uri(url)?;
    let authority = uri.authority().ok_or("no host")?.clone();
    let host = authority.host();
    // `[::1]` in a URL is `::1` for DNS/SNI purposes.
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let server_name =
        ServerName::try_from(bare_host.to_string()).map_err(|e| format!("host {host}: {e}"))?;

    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream = TlsConnector::from(tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
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
        .map_err(|e| e.to_string())?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if resp.status() != StatusCode::OK {
            // Redirects included: a key URL that moves is a config change, not something to follow.
            return Err(format!("status {}", resp.status()));
        }
        if let Some(len) = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > MAX_BODY as u64
        {
            return Err(format!("body of {len} bytes exceeds {MAX_BODY}"));
        }
        Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("body: {e}"))
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls() {
        assert!(https_uri("https://idp.example.com/jwks").is_ok());
        assert!(https_uri("https://[::1]:8443/x").is_ok());
        for bad in [
            "http://idp.example.com/jwks",
            "file:///etc/passwd",
            "idp.example.com/jwks",
            "https://user:pw@idp.example.com/",
            "https:///nohost",
            "",
        ] {
            assert!(https_uri(bad).is_err(), "{bad}");
        }
    }
}
