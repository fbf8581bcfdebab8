//! `auth::kubernetes::TokenReviewer` against a fake API server: real HTTPS (rustls, a certificate
//! from a throwaway rcgen CA), the real TokenReview wire shapes (k8s-openapi types both ways),
//! and the kube client pointed at it through a kubeconfig file.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::apiserver::{
    ApiServer, OWN_TOKEN, Reply, TOKENREVIEW_PATH, k8s_status, kubeconfig, rejected,
    service_account,
};
use common::metrics::{metric_value, registry_text};
use common::sentinel::TempDir;
use common::tls::TestCa;
use hyper::StatusCode;
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use mcp_sentinel::auth::kubernetes::TokenReviewer;
use mcp_sentinel::config::auth::KubernetesConfig;
use mcp_sentinel::identity::{AuthFailure, AuthMethod, Principal};
use prometheus::Registry;
use serde_json::json;
use tokio::net::TcpListener;

fn config(kubeconfig: PathBuf) -> KubernetesConfig {
    KubernetesConfig {
        audiences: vec!["mcp-sentinel".into(), "https://mcp.example".into()],
        kubeconfig: Some(kubeconfig),
        timeout: Duration::from_millis(500),
        ..KubernetesConfig::default()
    }
}

async fn start_reviewer(
    test: &str,
    server: &ApiServer,
    tweak: impl FnOnce(&mut KubernetesConfig),
) -> (TokenReviewer, Registry, TempDir) {
    let dir = TempDir::new(&format!("tokenreview-{test}"));
    let path = server.kubeconfig(&dir.0);
    let mut cfg = config(path);
    tweak(&mut cfg);
    let registry = Registry::new();
    let reviewer = TokenReviewer::new(cfg, &registry).await.unwrap();
    (reviewer, registry, dir)
}

fn service_account_status(audiences: &[&str]) -> TokenReviewStatus {
    service_account("agents", "research-bot", audiences)
}

fn rejected_status(why: &str) -> TokenReviewStatus {
    rejected(why)
}

/// A counter's value, or a histogram's sample count, for one `result` label; panics when the
/// registry has no such metric.
fn metric(registry: &Registry, name: &str, result: &str) -> u64 {
    let sample = if name.ends_with("_seconds") {
        format!("{name}_count")
    } else {
        name.to_string()
    };
    metric_value(
        &registry_text(registry),
        &format!("{sample}{{result=\"{result}\"}}"),
    ) as u64
}

const DURATION: &str = "mcp_sentinel_tokenreview_duration_seconds";
const CACHE: &str = "mcp_sentinel_tokenreview_cache_total";

#[tokio::test]
async fn authenticated_token_yields_the_service_account() {
    let server = ApiServer::start(|review| {
        if review.spec.token.as_deref() == Some("good-token") {
            Reply::Review(service_account_status(&["mcp-sentinel"]))
        } else {
            Reply::Review(rejected_status("invalid bearer token"))
        }
    })
    .await;
    let (reviewer, registry, _dir) = start_reviewer("authenticated", &server, |_| {}).await;

    let principal = reviewer.review("good-token").await.unwrap();
    let mut expected = Principal::new(
        "system:serviceaccount:agents:research-bot",
        AuthMethod::Kubernetes,
    );
    expected.groups = vec![
        "system:serviceaccounts".into(),
        "system:serviceaccounts:agents".into(),
        "system:authenticated".into(),
    ];
    expected.claims = json!({
        "uid": "4b0c6a9e-1f0e-4c55-9d0b-6f1c1e0f8a11",
        "authentication.kubernetes.io/pod-name": ["research-bot-7d9f-x2k4q"],
        "authentication.kubernetes.io/pod-uid": ["0d1f1a47-77a5-4f54-9d0e-2a8e2b6f9c3d"],
        "authentication.kubernetes.io/credential-id": ["JTI=9a1d8c2e-3f4b-4c5d-8e6f-7a8b9c0d1e2f"],
    })
    .as_object()
    .unwrap()
    .clone();
    assert_eq!(principal, expected);

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, TOKENREVIEW_PATH);
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {OWN_TOKEN}").as_str())
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    let review = request.review.as_ref().expect("body is a TokenReview");
    assert_eq!(review.spec.token.as_deref(), Some("good-token"));
    assert_eq!(
        review.spec.audiences.as_deref(),
        Some(
            &[
                "mcp-sentinel".to_string(),
                "https://mcp.example".to_string()
            ][..]
        )
    );
    assert!(review.status.is_none());

    assert_eq!(metric(&registry, DURATION, "authenticated"), 1);
    assert_eq!(metric(&registry, DURATION, "rejected"), 0);
    assert_eq!(metric(&registry, DURATION, "error"), 0);
    assert_eq!(metric(&registry, CACHE, "miss"), 1);
    assert_eq!(metric(&registry, CACHE, "hit"), 0);
}

#[tokio::test]
async fn without_configured_audiences_none_are_sent_or_checked() {
    let server = ApiServer::start(|_| {
        let mut status = service_account_status(&[]);
        status.audiences = None;
        Reply::Review(status)
    })
    .await;
    let (reviewer, _registry, _dir) =
        start_reviewer("no-audience", &server, |c| c.audiences.clear()).await;
    let principal = reviewer.review("good-token").await.unwrap();
    assert_eq!(
        principal.subject,
        "system:serviceaccount:agents:research-bot"
    );
    let review = server.seen()[0].review.clone().unwrap();
    assert_eq!(review.spec.audiences, None);
    assert_eq!(review.spec.token.as_deref(), Some("good-token"));
}

#[tokio::test]
async fn unauthenticated_token_is_rejected() {
    let server = ApiServer::start(|_| Reply::Review(rejected_status("token has expired"))).await;
    let (reviewer, registry, _dir) = start_reviewer("unauthenticated", &server, |_| {}).await;
    assert_eq!(
        reviewer.review("expired-token").await,
        Err(AuthFailure::Rejected)
    );
    assert_eq!(
        server.seen()[0]
            .review
            .as_ref()
            .unwrap()
            .spec
            .token
            .as_deref(),
        Some("expired-token")
    );
    assert_eq!(metric(&registry, DURATION, "rejected"), 1);
}

#[tokio::test]
async fn missing_authenticated_field_is_rejected() {
    let server = ApiServer::start(|_| Reply::Review(TokenReviewStatus::default())).await;
    let (reviewer, _registry, _dir) =
        start_reviewer("missing-authenticated", &server, |_| {}).await;
    assert_eq!(reviewer.review("token").await, Err(AuthFailure::Rejected));
}

#[tokio::test]
async fn token_for_another_audience_is_rejected() {
    // Authenticated, but for the API server's audience rather than ours.
    let server = ApiServer::start(|_| {
        Reply::Review(service_account_status(&[
            "https://kubernetes.default.svc.cluster.local",
        ]))
    })
    .await;
    let (reviewer, registry, _dir) = start_reviewer("audience", &server, |_| {}).await;
    assert_eq!(
        reviewer.review("api-server-token").await,
        Err(AuthFailure::Rejected)
    );
    assert_eq!(metric(&registry, DURATION, "rejected"), 1);

    // An authenticated answer naming no audience at all is not audience-aware: also rejected.
    let server = ApiServer::start(|_| {
        let mut status = service_account_status(&[]);
        status.audiences = None;
        Reply::Review(status)
    })
    .await;
    let (reviewer, _registry, _dir) = start_reviewer("audience-none", &server, |_| {}).await;
    assert_eq!(reviewer.review("token").await, Err(AuthFailure::Rejected));

    // Any one of ours is enough.
    let server =
        ApiServer::start(|_| Reply::Review(service_account_status(&["https://mcp.example"]))).await;
    let (reviewer, _registry, _dir) = start_reviewer("audience-second", &server, |_| {}).await;
    assert!(reviewer.review("token").await.is_ok());
}

#[tokio::test]
async fn api_server_down_is_unavailable_within_the_timeout() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let dir = TempDir::new("tokenreview-down");
    let ca = TestCa::new();
    let path = kubeconfig(&dir.0, &format!("https://{addr}"), &ca.ca_pem(), OWN_TOKEN);
    let registry = Registry::new();
    let reviewer = TokenReviewer::new(config(path), &registry).await.unwrap();
    let started = Instant::now();
    assert_eq!(
        reviewer.review("token").await,
        Err(AuthFailure::Unavailable)
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(metric(&registry, DURATION, "error"), 1);
}

#[tokio::test]
async fn hanging_api_server_is_unavailable_within_the_timeout() {
    // Answers TLS and reads the request, then never responds.
    let server = ApiServer::start(|_| Reply::Hang).await;
    let (reviewer, registry, _dir) = start_reviewer("hang", &server, |_| {}).await;
    let started = Instant::now();
    assert_eq!(
        reviewer.review("token").await,
        Err(AuthFailure::Unavailable)
    );
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(server.requests(), 1);
    assert_eq!(metric(&registry, DURATION, "error"), 1);

    // Accepts TCP but never starts TLS.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let dir = TempDir::new("tokenreview-silent");
    let path = kubeconfig(
        &dir.0,
        &format!("https://{addr}"),
        &server.ca_pem,
        OWN_TOKEN,
    );
    let reviewer = TokenReviewer::new(config(path), &Registry::new())
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        reviewer.review("token").await,
        Err(AuthFailure::Unavailable)
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn api_server_errors_are_unavailable_and_not_cached() {
    for (code, body) in [
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            k8s_status(500, "InternalError", "etcd is sad"),
        ),
        (
            StatusCode::FORBIDDEN,
            k8s_status(
                403,
                "Forbidden",
                "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:mcp:sentinel\" cannot create resource \"tokenreviews\"",
            ),
        ),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error".to_string(),
        ),
        (
            StatusCode::TOO_MANY_REQUESTS,
            k8s_status(429, "TooManyRequests", "slow down"),
        ),
    ] {
        let server = ApiServer::start(move |_| Reply::Raw(code, body.clone())).await;
        let (reviewer, registry, _dir) =
            start_reviewer(&format!("status-{}", code.as_u16()), &server, |_| {}).await;
        let started = Instant::now();
        assert_eq!(
            reviewer.review("token").await,
            Err(AuthFailure::Unavailable),
            "{code}"
        );
        assert_eq!(
            reviewer.review("token").await,
            Err(AuthFailure::Unavailable),
            "{code}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{code}: retried?"
        );
        assert_eq!(server.requests(), 2, "{code}: not cached, not retried");
        assert_eq!(metric(&registry, DURATION, "error"), 2);
        assert_eq!(metric(&registry, CACHE, "miss"), 2);
    }
}

/// A reviewer whose kubeconfig trusts `ca_pem` for `server` and presents `own_token`.
async fn reviewer_trusting(
    server: &ApiServer,
    ca_pem: &str,
    own_token: &str,
) -> (TokenReviewer, TempDir) {
    let dir = TempDir::new("tokenreview-trusting");
    let path = kubeconfig(
        &dir.0,
        &format!("https://{}", server.addr),
        ca_pem,
        own_token,
    );
    let reviewer = TokenReviewer::new(config(path), &Registry::new())
        .await
        .unwrap();
    (reviewer, dir)
}

#[tokio::test]
async fn wrong_own_credentials_are_unavailable() {
    // The API server refuses the sentinel's own token (401): the caller's token is not judged.
    let server =
        ApiServer::start(|_| Reply::Review(service_account_status(&["mcp-sentinel"]))).await;
    let (reviewer, _dir) = reviewer_trusting(&server, &server.ca_pem, "stale-token").await;
    assert_eq!(
        reviewer.review("good-token").await,
        Err(AuthFailure::Unavailable)
    );
    assert_eq!(
        server.seen()[0].authorization.as_deref(),
        Some("Bearer stale-token")
    );
}

#[tokio::test]
async fn untrusted_api_server_certificate_is_unavailable() {
    let server =
        ApiServer::start(|_| Reply::Review(service_account_status(&["mcp-sentinel"]))).await;
    let other_ca = TestCa::new();
    let (reviewer, _dir) = reviewer_trusting(&server, &other_ca.ca_pem(), OWN_TOKEN).await;
    assert_eq!(
        reviewer.review("good-token").await,
        Err(AuthFailure::Unavailable)
    );
    assert_eq!(
        server.requests(),
        0,
        "the token never left over an unverified connection"
    );
}

#[tokio::test]
async fn malformed_answers_are_unavailable() {
    for body in [
        "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"status\":",
        "<html>gateway</html>",
        "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"spec\":{},\"status\":{\"authenticated\":\"yes\"}}",
        "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"spec\":{},\"status\":{\"authenticated\":true,\"audiences\":[\"mcp-sentinel\"],\"user\":{}}}",
    ] {
        let server =
            ApiServer::start(move |_| Reply::Raw(StatusCode::CREATED, body.to_string())).await;
        let (reviewer, registry, _dir) = start_reviewer("malformed", &server, |_| {}).await;
        assert_eq!(
            reviewer.review("token").await,
            Err(AuthFailure::Unavailable),
            "{body}"
        );
        assert_eq!(metric(&registry, DURATION, "error"), 1, "{body}");
    }
}

#[tokio::test]
async fn authenticated_verdicts_are_cached() {
    let server =
        ApiServer::start(|_| Reply::Review(service_account_status(&["mcp-sentinel"]))).await;
    let (reviewer, registry, _dir) = start_reviewer("cache", &server, |c| {
        c.cache_ttl = Duration::from_millis(300);
    })
    .await;
    let first = reviewer.review("good-token").await.unwrap();
    let second = reviewer.clone().review("good-token").await.unwrap();
    assert_eq!(first, second);
    assert_eq!(
        server.requests(),
        1,
        "the second review came from the cache"
    );
    assert_eq!(metric(&registry, CACHE, "miss"), 1);
    assert_eq!(metric(&registry, CACHE, "hit"), 1);
    assert_eq!(metric(&registry, DURATION, "authenticated"), 1);

    // Another token is another entry.
    reviewer.review("other-token").await.unwrap();
    assert_eq!(server.requests(), 2);

    // Past the TTL the API server is asked again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    reviewer.review("good-token").await.unwrap();
    assert_eq!(server.requests(), 3);
    assert_eq!(metric(&registry, CACHE, "miss"), 3);
}

#[tokio::test]
async fn rejections_are_cached_briefly() {
    let server = ApiServer::start(|_| Reply::Review(rejected_status("invalid bearer token"))).await;
    let (reviewer, registry, _dir) = start_reviewer("negative-cache", &server, |c| {
        c.negative_cache_ttl = Duration::from_millis(300);
    })
    .await;
    for _ in 0..20 {
        assert_eq!(
            reviewer.review("bad-token").await,
            Err(AuthFailure::Rejected)
        );
    }
    assert_eq!(server.requests(), 1, "one review for the whole flood");
    assert_eq!(metric(&registry, CACHE, "hit"), 19);
    assert_eq!(metric(&registry, DURATION, "rejected"), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        reviewer.review("bad-token").await,
        Err(AuthFailure::Rejected)
    );
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn cache_is_bounded() {
    let server =
        ApiServer::start(|_| Reply::Review(service_account_status(&["mcp-sentinel"]))).await;
    let (reviewer, _registry, _dir) =
        start_reviewer("cache-bound", &server, |c| c.cache_size = 2).await;
    for token in ["t1", "t2", "t3"] {
        reviewer.review(token).await.unwrap();
    }
    assert_eq!(server.requests(), 3);
    // t2 and t3 are still cached; t1, the oldest, was evicted.
    reviewer.review("t2").await.unwrap();
    reviewer.review("t3").await.unwrap();
    assert_eq!(server.requests(), 3);
    reviewer.review("t1").await.unwrap();
    assert_eq!(server.requests(), 4);
    // Caching t1 again evicted t2.
    reviewer.review("t3").await.unwrap();
    assert_eq!(server.requests(), 4);
    reviewer.review("t2").await.unwrap();
    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn construction_errors_are_reported() {
    let registry = Registry::new();
    let missing = KubernetesConfig {
        kubeconfig: Some(PathBuf::from("/nonexistent/kubeconfig")),
        ..KubernetesConfig::default()
    };
    let err = TokenReviewer::new(missing, &registry)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");

    let server = ApiServer::start(|_| Reply::Hang).await;
    let (_reviewer, registry, dir) = start_reviewer("twice", &server, |_| {}).await;
    let again = config(dir.0.join("kubeconfig"));
    let err = TokenReviewer::new(again, &registry)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("metrics"), "{err}");

    let zero = KubernetesConfig {
        timeout: Duration::ZERO,
        ..config(dir.0.join("kubeconfig"))
    };
    assert!(TokenReviewer::new(zero, &Registry::new()).await.is_err());

    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        let err = TokenReviewer::new(KubernetesConfig::default(), &Registry::new())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("in-cluster"), "{err}");
    }
}

/// Log lines, collected from a subscriber installed for the current (test) thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_reach_the_log() {
    const SECRET: &str = "eyJhbGciOiJSUzI1NiJ9.SECRET-caller-token.sig";
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // `#[tokio::test]` runs everything (kube's background tasks too) on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    // Each answer echoes the caller's token the way the API server echoes `spec`.
    let server = ApiServer::start(|review| {
        let token = review.spec.token.clone().unwrap_or_default();
        match token.len() % 4 {
            0 => Reply::Raw(
                StatusCode::CREATED,
                json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                       "spec": {"token": token}, "status": {"authenticated": "yes"}})
                .to_string(),
            ),
            1 => Reply::Raw(StatusCode::BAD_GATEWAY, format!("bad gateway for {token}")),
            2 => Reply::Raw(
                StatusCode::BAD_REQUEST,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                       "reason": "BadRequest", "message": format!("cannot review {token}"),
                       "details": {"name": token}})
                .to_string(),
            ),
            _ => Reply::Review(rejected_status("invalid bearer token")),
        }
    })
    .await;
    let (reviewer, _registry, _dir) = start_reviewer("log", &server, |_| {}).await;
    for suffix in ["", "x", "xy", "xyz"] {
        let token = format!("{SECRET}{suffix}");
        let want = if token.len() % 4 == 3 {
            AuthFailure::Rejected
        } else {
            AuthFailure::Unavailable
        };
        assert_eq!(reviewer.review(&token).await, Err(want), "{}", token.len());
    }
    assert_eq!(server.requests(), 4);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("TokenReview failed"), "{log}");
    assert!(log.contains("BadRequest cannot review <token>"), "{log}");
    assert!(!log.contains("SECRET-caller-token"), "{log}");
    assert!(!log.contains(OWN_TOKEN), "{log}");
}

#[tokio::test]
async fn broken_kubeconfig_is_an_error() {
    let dir = TempDir::new("tokenreview-broken-kubeconfig");
    let path = dir.0.join("kubeconfig");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nusers:\n- name: x\n  user: {{token: {OWN_TOKEN}\n  - : ]\n"),
    )
    .unwrap();
    let err = TokenReviewer::new(config(path), &Registry::new())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("kubeconfig") && err.contains("line 5"),
        "{err}"
    );
    assert!(
        !err.contains(OWN_TOKEN),
        "the parser's snippet quotes our own token: {err}"
    );
}
