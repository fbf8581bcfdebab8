//! mTLS end to end: the sentinel terminates TLS on the traffic port (`tls` + `auth.mtls`), a
//! verified client certificate becomes the principal the upstream is told about, bad
//! certificates fail the handshake, a bearer credential still wins over the certificate, and the
//! server certificate rotates without a restart.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::bed::Bed;
use common::keys::{init_body, write_keys};
use common::metrics::authn;
use common::tls::{CertPair, HttpsResponse, ServerFiles, TestCa, https_post};
use common::upstream::UpstreamConfig;
use serde_json::Value;

const AGENT_SPIFFE: &str = "spiffe://cluster.local/ns/tools/sa/agent";
const ALICE_KEY: &str = "ak_alice_0123456789";
const MTLS_OK: &str = r#"mcp_sentinel_authn_total{method="mtls",reason="ok",result="success"}"#;
const HANDSHAKE_FAILURES: &str = "mcp_sentinel_tls_handshake_failures_total";

/// What the mTLS bed adds: the CAs, the server certificate files and the TLS address.
struct Mtls {
    /// Signs the server certificate; what clients trust.
    server_ca: TestCa,
    /// Signs client certificates; the sentinel's `client_ca_file`.
    client_ca: TestCa,
    files: ServerFiles,
    addr: SocketAddr,
}

impl Bed<Mtls> {
    async fn post(
        &self,
        client: Option<&CertPair>,
        headers: &[(&str, &str)],
    ) -> Result<HttpsResponse, String> {
        self.post_trusting(&self.server_ca.ca_pem(), client, headers)
            .await
    }

    /// Asserts that the handshake fails with `error`, is counted (the `failures`-th), and that
    /// nothing reached the upstream.
    async fn assert_handshake_refused(
        &self,
        client: Option<&CertPair>,
        headers: &[(&str, &str)],
        error: &str,
        failures: f64,
    ) {
        let err = self.post(client, headers).await.unwrap_err();
        assert!(err.contains(error), "{err}");
        assert_eq!(
            self.sentinel
                .metric_eventually(HANDSHAKE_FAILURES, failures)
                .await,
            failures
        );
        assert_eq!(self.upstream.mcp_requests().len(), 0);
    }

    /// Every value of a header the upstream saw on its last `initialize`.
    fn seen(&self, name: &str) -> Vec<String> {
        let seen = self
            .upstream
            .last_request("initialize")
            .expect("initialize");
        seen.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    async fn post_trusting(
        &self,
        roots_pem: &str,
        client: Option<&CertPair>,
        headers: &[(&str, &str)],
    ) -> Result<HttpsResponse, String> {
        https_post(
            self.addr,
            "127.0.0.1",
            roots_pem,
            client,
            "/mcp",
            headers,
            &init_body(),
        )
        .await
    }
}

/// An upstream and a TLS sentinel with `auth.mtls` (`mtls` is its body) and API keys (alice).
async fn mtls_bed(mtls: &str, require_client_cert: bool) -> Bed<Mtls> {
    let server_ca = TestCa::named("server CA");
    let client_ca = TestCa::named("client CA");
    let mut files = None;
    let bed = Bed::start("mtls", UpstreamConfig::default(), |dir| {
        let server = ServerFiles::write(
            dir,
            &server_ca.server_cert(&["127.0.0.1", "localhost"]),
            &client_ca.ca_pem(),
        );
        let keys = dir.path("keys.yaml");
        write_keys(&keys, &[(ALICE_KEY, "alice", &["dev"])]);
        let yaml = format!(
            "tls:
  cert_file: {}
  key_file: {}
  client_ca_file: {}
  require_client_cert: {require_client_cert}
policy: {{default: allow}}
auth:
  mtls: {mtls}
  api_keys:
    file: {}
",
            server.cert.display(),
            server.key.display(),
            server.client_ca.display(),
            keys.display(),
        );
        files = Some(server);
        yaml
    })
    .await;
    let addr = bed.sentinel.sentinel().traffic_addr();
    bed.with(Mtls {
        server_ca,
        client_ca,
        files: files.expect("written"),
        addr,
    })
}

#[tokio::test]
async fn spiffe_client_certificate_is_the_principal() {
    let bed = mtls_bed(
        "{identity: auto, trust_domain_prefix: \"spiffe://cluster.local/\"}",
        false,
    )
    .await;
    let cert =
        bed.client_ca
            .client_cert_with(Some("agent-1"), Some(AGENT_SPIFFE), &["agents"], None);
    let (status, headers, body) = bed
        .post(
            Some(&cert),
            &[
                ("X-MCP-Sentinel-Subject", "root"),
                ("X-MCP-Sentinel-Groups", "admins"),
                ("X-MCP-Sentinel-Auth-Method", "api_key"),
            ],
        )
        .await
        .expect("handshake with a valid client certificate");
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("mcp-session-id"), "{headers:?}");
    // The SAN URI wins over the CN; spoofed copies are gone, one value each.
    assert_eq!(bed.seen("x-mcp-sentinel-subject"), [AGENT_SPIFFE]);
    assert_eq!(bed.seen("x-mcp-sentinel-groups"), ["agents"]);
    assert_eq!(bed.seen("x-mcp-sentinel-auth-method"), ["mtls"]);
    assert_eq!(bed.upstream.mcp_requests().len(), 1);
    assert_eq!(bed.sentinel.metric(MTLS_OK).await, 1.0);
    assert_eq!(bed.sentinel.metric(HANDSHAKE_FAILURES).await, 0.0);
}

#[tokio::test]
async fn common_name_only_certificate_is_the_principal() {
    let bed = mtls_bed("{identity: auto}", false).await;
    let cert = bed.client_ca.client_cert(Some("batch-runner"), None, None);
    let (status, _, body) = bed.post(Some(&cert), &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(bed.seen("x-mcp-sentinel-subject"), ["batch-runner"]);
    assert_eq!(bed.seen("x-mcp-sentinel-auth-method"), ["mtls"]);
    assert_eq!(bed.sentinel.metric(MTLS_OK).await, 1.0);
}

#[tokio::test]
async fn a_certificate_without_a_usable_identity_is_401() {
    // Verified, but its SAN is outside the trust domain and `san_uri` allows no CN fallback.
    let bed = mtls_bed(
        "{identity: san_uri, trust_domain_prefix: \"spiffe://cluster.local/\"}",
        false,
    )
    .await;
    let cert = bed.client_ca.client_cert(
        Some("agent-1"),
        Some("spiffe://other.domain/ns/tools/sa/agent"),
        None,
    );
    let (status, headers, body) = bed.post(Some(&cert), &[]).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(", error=\"invalid_token\""),
        "{headers:?}"
    );
    assert_eq!(bed.upstream.mcp_requests().len(), 0);
    assert_eq!(
        bed.sentinel
            .metric(&authn("mtls", "certificate", "failure"))
            .await,
        1.0
    );
    assert_eq!(bed.sentinel.metric(MTLS_OK).await, 0.0);
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_fails_the_handshake() {
    let bed = mtls_bed("{}", false).await;
    let stranger = TestCa::named("someone else's CA");
    let cert = stranger.client_cert(Some("agent-1"), Some(AGENT_SPIFFE), None);
    bed.assert_handshake_refused(Some(&cert), &[], "UnknownCA", 1.0)
        .await;
    assert_eq!(bed.sentinel.metric(MTLS_OK).await, 0.0);
}

#[tokio::test]
async fn an_expired_certificate_fails_the_handshake() {
    let bed = mtls_bed("{}", false).await;
    let cert = bed
        .client_ca
        .client_cert(Some("agent-1"), Some(AGENT_SPIFFE), Some((2020, 1, 1)));
    bed.assert_handshake_refused(Some(&cert), &[], "CertificateExpired", 1.0)
        .await;
    // The same identity in a current certificate is fine.
    let fresh = bed
        .client_ca
        .client_cert(Some("agent-1"), Some(AGENT_SPIFFE), None);
    assert_eq!(bed.post(Some(&fresh), &[]).await.unwrap().0, 200);
}

#[tokio::test]
async fn no_certificate_is_a_401_challenge_over_https() {
    let bed = mtls_bed("{}", false).await;
    let (status, headers, body) = bed.post(None, &[]).await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        headers["www-authenticate"].to_str().unwrap(),
        format!(
            "Bearer resource_metadata=\"https://127.0.0.1:{}/.well-known/oauth-protected-resource/mcp\"",
            bed.addr.port()
        )
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["message"], "Unauthorized");
    assert_eq!(bed.upstream.mcp_requests().len(), 0);
    assert_eq!(
        bed.sentinel
            .metric(&authn("none", "missing", "failure"))
            .await,
        1.0
    );
    assert_eq!(bed.sentinel.metric(HANDSHAKE_FAILURES).await, 0.0);
}

#[tokio::test]
async fn required_client_certificate_refuses_the_handshake_without_one() {
    let bed = mtls_bed("{}", true).await;
    bed.assert_handshake_refused(None, &[], "CertificateRequired", 1.0)
        .await;
    // Even a valid API key does not get past the handshake.
    bed.assert_handshake_refused(
        None,
        &[("X-API-Key", ALICE_KEY)],
        "CertificateRequired",
        2.0,
    )
    .await;
    // With a certificate it works.
    let cert = bed.client_ca.client_cert(None, Some(AGENT_SPIFFE), None);
    assert_eq!(bed.post(Some(&cert), &[]).await.unwrap().0, 200);
    assert_eq!(bed.seen("x-mcp-sentinel-subject"), [AGENT_SPIFFE]);
}

#[tokio::test]
async fn a_presented_credential_wins_over_the_certificate() {
    let bed = mtls_bed("{}", false).await;
    let cert = bed
        .client_ca
        .client_cert(Some("agent-1"), Some(AGENT_SPIFFE), None);
    // A valid API key on an mTLS connection: the key's principal.
    let (status, _, body) = bed
        .post(Some(&cert), &[("X-API-Key", ALICE_KEY)])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(bed.seen("x-mcp-sentinel-subject"), ["alice"]);
    assert_eq!(bed.seen("x-mcp-sentinel-auth-method"), ["api_key"]);
    assert!(bed.seen("x-api-key").is_empty());
    // A wrong key is a 401, not a fall back to the certificate.
    let (status, headers, _) = bed
        .post(Some(&cert), &[("Authorization", "Bearer ak_mallory")])
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(", error=\"invalid_token\"")
    );
    assert_eq!(bed.upstream.mcp_requests().len(), 1);
    assert_eq!(bed.sentinel.metric(MTLS_OK).await, 0.0);
}

#[tokio::test]
async fn the_server_certificate_rotates_without_a_restart() {
    let bed = mtls_bed("{}", false).await;
    let cert = bed
        .client_ca
        .client_cert(Some("agent-1"), Some(AGENT_SPIFFE), None);
    let new_ca = TestCa::named("rotated server CA");
    // Before: only the old server CA is accepted.
    assert_eq!(bed.post(Some(&cert), &[]).await.unwrap().0, 200);
    let err = bed
        .post_trusting(&new_ca.ca_pem(), Some(&cert), &[])
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    bed.files
        .rotate(&new_ca.server_cert(&["127.0.0.1", "localhost"]));
    let deadline = Instant::now() + Duration::from_secs(12);
    let (status, _, body) = loop {
        match bed.post_trusting(&new_ca.ca_pem(), Some(&cert), &[]).await {
            Ok(r) => break r,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the new certificate is not served: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(bed.seen("x-mcp-sentinel-subject"), [AGENT_SPIFFE]);
    // The old certificate is no longer served.
    let err = bed.post(Some(&cert), &[]).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_tls_reloads_total{result="success"}"#)
            .await,
        1.0
    );
    assert_eq!(bed.sentinel.metric(MTLS_OK).await, 2.0);
}
