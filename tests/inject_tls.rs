//! `tls::ReloadingTls` on its own: client certificates against a client CA (optional and
//! required), and every way a certificate set can be unusable, each with its own error.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::sentinel::TempDir;
use common::tls::{TestCa, write_file};
use mcp_sentinel::tls::{ClientAuth, ReloadingTls, TlsError, TlsFiles, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// Handshakes once with `tls` as the server; returns whether it succeeded and how many client
/// certificates the server saw.
async fn handshake(
    tls: &ReloadingTls,
    server_ca: &TestCa,
    client: Option<(&str, &str)>,
) -> Result<usize, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.acceptor();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor
            .accept(tcp)
            .await
            .map(|s| s.get_ref().1.peer_certificates().map_or(0, <[_]>::len))
            .map_err(|e| e.to_string())
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    // TLS 1.3: the client finishes before the server has checked its certificate, so the
    // server's verdict is the one that counts.
    let verdict = server.await.unwrap();
    drop(client);
    verdict
}

#[tokio::test]
async fn client_certificates_are_verified_against_the_client_ca() {
    let dir = TempDir::new("mtls");
    let server_ca = TestCa::named("server CA");
    let client_ca = TestCa::named("client CA");
    let stranger_ca = TestCa::named("stranger CA");
    let (cert, key) = server_ca.leaf(&["localhost"]);
    let files = TlsFiles {
        cert: write_file(&dir, "tls.crt", &cert),
        key: write_file(&dir, "tls.key", &key),
        client_ca: Some(write_file(&dir, "client-ca.crt", &client_ca.ca_pem())),
    };
    let (good_cert, good_key) = client_ca.leaf(&["agent.example"]);
    let (bad_cert, bad_key) = stranger_ca.leaf(&["agent.example"]);

    let optional = ReloadingTls::load(files.clone(), TlsOptions::default(), None).unwrap();
    assert_eq!(handshake(&optional, &server_ca, None).await, Ok(0));
    assert_eq!(
        handshake(&optional, &server_ca, Some((&good_cert, &good_key))).await,
        Ok(1)
    );
    assert!(
        handshake(&optional, &server_ca, Some((&bad_cert, &bad_key)))
            .await
            .is_err()
    );

    let required = ReloadingTls::load(
        files,
        TlsOptions {
            client_auth: ClientAuth::Required,
            ..TlsOptions::default()
        },
        None,
    )
    .unwrap();
    assert!(handshake(&required, &server_ca, None).await.is_err());
    assert_eq!(
        handshake(&required, &server_ca, Some((&good_cert, &good_key))).await,
        Ok(1)
    );
}

#[tokio::test]
async fn server_only_tls_ignores_client_certificates() {
    let dir = TempDir::new("server-only");
    let ca = TestCa::named("server CA");
    let (cert, key) = ca.leaf(&["localhost"]);
    let tls = ReloadingTls::load(
        TlsFiles {
            cert: write_file(&dir, "tls.crt", &cert),
            key: write_file(&dir, "tls.key", &key),
            client_ca: None,
        },
        TlsOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(handshake(&tls, &ca, None).await, Ok(0));
    assert_eq!(
        tls.config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    // Unchanged files: nothing to reload.
    assert!(!tls.reload_if_changed().unwrap());
}

#[test]
fn unusable_certificate_sets_name_their_problem() {
    let dir = TempDir::new("errors");
    let ca = TestCa::named("CA");
    let (cert, key) = ca.leaf(&["localhost"]);
    let (_, other_key) = ca.leaf(&["localhost"]);
    let cert_path = write_file(&dir, "tls.crt", &cert);
    let key_path = write_file(&dir, "tls.key", &key);
    let load = |cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>| {
        ReloadingTls::load(
            TlsFiles {
                cert,
                key,
                client_ca,
            },
            TlsOptions::default(),
            None,
        )
        .err()
        .expect("refused")
    };
    assert!(matches!(
        load(dir.path("absent.crt"), key_path.clone(), None),
        TlsError::Read { .. }
    ));
    assert!(matches!(
        load(write_file(&dir, "empty.crt", ""), key_path.clone(), None),
        TlsError::NoCertificate { .. }
    ));
    assert!(matches!(
        load(
            cert_path.clone(),
            write_file(&dir, "cert-as-key.pem", &cert),
            None
        ),
        TlsError::NoKey { .. }
    ));
    assert!(matches!(
        load(
            cert_path.clone(),
            write_file(&dir, "other.key", &other_key),
            None
        ),
        TlsError::Rustls(_)
    ));
    assert!(matches!(
        load(
            cert_path.clone(),
            key_path.clone(),
            Some(write_file(&dir, "ca.pem", "no PEM here"))
        ),
        TlsError::ClientCa { .. }
    ));
    let err = load(cert_path, key_path, Some(dir.path("absent-ca.pem")));
    assert!(err.to_string().contains("absent-ca.pem"), "{err}");
}
