//! A throwaway certificate authority (rcgen) for server and client certificates, PEM files in a
//! test's scratch directory, and a minimal HTTPS/1.1 client (tokio-rustls + hyper) that can
//! present a client certificate — reqwest here is built without TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::sentinel::TempDir;

/// A certificate and its private key, both PEM.
pub type CertPair = (String, String);

/// A self-signed CA that issues leaf certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        Self::named("mcp-sentinel test CA")
    }

    pub fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate, PEM: what a peer trusts.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for these names (IP addresses become IP SANs).
    pub fn server_cert(&self, names: &[&str]) -> CertPair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate with this subject CN and/or `URI` SAN. `not_after` (year, month,
    /// day) in the past makes an expired certificate (rcgen's `not_before` is 1975).
    pub fn client_cert(
        &self,
        cn: Option<&str>,
        san_uri: Option<&str>,
        not_after: Option<(i32, u8, u8)>,
    ) -> CertPair {
        self.client_cert_with(cn, san_uri, &[], not_after)
    }

    /// As [`Self::client_cert`], with subject organizations (O), which the sentinel reads as
    /// groups.
    pub fn client_cert_with(
        &self,
        cn: Option<&str>,
        san_uri: Option<&str>,
        orgs: &[&str],
        not_after: Option<(i32, u8, u8)>,
    ) -> CertPair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        if let Some(uri) = san_uri {
            params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some((y, m, d)) = not_after {
            params.not_before = rcgen::date_time_ymd(y - 1, m, d);
            params.not_after = rcgen::date_time_ymd(y, m, d);
        }
        self.sign(params)
    }

    /// A leaf certificate with these DNS SANs and nothing else (rcgen's defaults).
    pub fn leaf(&self, names: &[&str]) -> CertPair {
        self.sign(
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap(),
        )
    }

    fn sign(&self, params: CertificateParams) -> CertPair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` atomically (write, then rename over), as a Secret update does.
pub fn write_file(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path(name);
    write_atomically(&path, text);
    path
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The files of a TLS server: `tls.crt`, `tls.key` and the client CA `ca.crt`.
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl ServerFiles {
    pub fn write(dir: &TempDir, server: &CertPair, client_ca_pem: &str) -> Self {
        Self {
            cert: write_file(dir, "tls.crt", &server.0),
            key: write_file(dir, "tls.key", &server.1),
            client_ca: write_file(dir, "ca.crt", client_ca_pem),
        }
    }

    /// Replaces the server certificate and key (key first, then certificate).
    pub fn rotate(&self, server: &CertPair) {
        write_atomically(&self.key, &server.1);
        write_atomically(&self.cert, &server.0);
    }
}

/// The response to [`https_post`]: status, headers, body.
pub type HttpsResponse = (u16, http::HeaderMap, String);

/// Every source of an error, joined, so tests can match on rustls' alert names.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// POSTs `body` as JSON over HTTPS/1.1 to `addr`, verifying the server as `server_name` against
/// `roots_pem` only, presenting `client` (certificate, key) when given. `Host` is
/// `server_name:port` unless `headers` set it. Any TLS or HTTP failure is an `Err`, with the
/// stage and the whole error chain (a refused client certificate surfaces as the server's alert,
/// which in TLS 1.3 arrives after the client's side of the handshake is done).
pub async fn https_post(
    addr: SocketAddr,
    server_name: &str,
    roots_pem: &str,
    client: Option<&CertPair>,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Result<HttpsResponse, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;

    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", chain(&e)))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {}", chain(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("http handshake: {}", chain(&e)))?;
    let driver = tokio::spawn(conn);

    let mut req = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json, text/event-stream");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header(http::header::HOST, format!("{server_name}:{}", addr.port()));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap();
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {}", chain(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {}", chain(&e)))?
            .to_bytes();
        Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
    }
    .await;
    driver.abort();
    result
}
