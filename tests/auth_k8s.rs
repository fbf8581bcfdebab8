//! Kubernetes TokenReview end to end: rmcp clients present service-account tokens to the
//! sentinel, which reviews them against a fake API server (real HTTPS, real TokenReview shapes,
//! a kubeconfig written here) and tells the upstream who called — never the token. Rejected
//! tokens, tokens for another audience and an API server that is down, hanging or failing are
//! all 401: never a 5xx, never let through.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::{
    AGENT, AGENT_TOKEN, ApiServer, OWN_TOKEN, Reply, agent_cluster, k8s_status, kubeconfig,
    service_account,
};
use common::bed::Bed;
use common::client::{ClientOptions, Era, connect, raw_post};
use common::keys::bearer;
use common::keys::init_body;
use common::metrics;
use common::sentinel::{TempDir, TestSentinel};
use common::tls::TestCa;
use common::upstream::UpstreamConfig;
use hyper::StatusCode;
use serde_json::Value;
use tokio::net::TcpListener;

const AGENT_GROUPS: &str =
    "system:serviceaccounts,system:serviceaccounts:tools,system:authenticated";

fn authn(reason: &str, result: &str) -> String {
    metrics::authn("kubernetes", reason, result)
}

/// An upstream and a sentinel whose only authenticator is TokenReview through `kubeconfig`.
async fn bed(write_kubeconfig: impl FnOnce(&TempDir) -> std::path::PathBuf) -> Bed {
    Bed::start("k8s", UpstreamConfig::default(), |dir| {
        format!(
            "policy: {{default: allow}}\nauth:\n  kubernetes:\n    kubeconfig: {}\n    audiences: [mcp-sentinel]\n    timeout: 500ms\n",
            write_kubeconfig(dir).display()
        )
    })
    .await
}

/// The challenge of a 401 for a presented credential.
fn invalid_token_challenge(sentinel: &TestSentinel) -> String {
    let base = sentinel.url.trim_end_matches("/mcp");
    format!(
        "Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\", error=\"invalid_token\""
    )
}

#[tokio::test]
async fn service_account_tokens_identify_rmcp_clients_of_every_era() {
    let api = agent_cluster().await;
    let bed = bed(|dir| api.kubeconfig(&dir.0)).await;
    let options = ClientOptions::bearer(AGENT_TOKEN).header("X-MCP-Sentinel-Subject", "root");
    let eras = bed
        .echo_in_every_era(&options, [AGENT, AGENT_GROUPS, "kubernetes"])
        .await;
    assert_eq!(bed.upstream.calls("echo"), eras);

    // Every request the upstream saw was the agent's, and none carried a token.
    let seen = bed.upstream.mcp_requests();
    assert!(seen.len() >= 2 * eras, "{}", seen.len());
    for r in &seen {
        assert!(r.header("authorization").is_none(), "{:?}", r.headers);
        assert_eq!(r.header("x-mcp-sentinel-subject").as_deref(), Some(AGENT));
        assert_eq!(
            r.headers.get_all("x-mcp-sentinel-subject").iter().count(),
            1
        );
        let all = format!("{:?}", r.headers);
        assert!(
            !all.contains(AGENT_TOKEN) && !all.contains(OWN_TOKEN),
            "{all}"
        );
    }

    // The API server was asked about the agent's token, for our audience, as the sentinel; the
    // verdict is cached, so not once per request.
    let reviews = api.seen();
    assert!(!reviews.is_empty());
    assert!(reviews.len() < seen.len(), "{} reviews", reviews.len());
    for r in &reviews {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {OWN_TOKEN}").as_str())
        );
        let review = r.review.as_ref().unwrap();
        assert_eq!(review.spec.token.as_deref(), Some(AGENT_TOKEN));
        assert_eq!(
            review.spec.audiences.as_deref(),
            Some(&["mcp-sentinel".to_string()][..])
        );
    }
    let ok = bed.sentinel.metric(&authn("ok", "success")).await;
    assert!(ok >= seen.len() as f64, "{ok}");
    assert_eq!(
        bed.sentinel.metric(&authn("rejected", "failure")).await,
        0.0
    );
}

#[tokio::test]
async fn an_unauthenticated_token_is_401_invalid_token() {
    let api = agent_cluster().await;
    let bed = bed(|dir| api.kubeconfig(&dir.0)).await;
    let r = raw_post(
        &bed.sentinel.url,
        &bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln"),
        &init_body(),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        invalid_token_challenge(&bed.sentinel)
    );
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["error"]["message"], "Unauthorized");

    // An rmcp client with that token does not get a session.
    let era = Era::all().into_iter().next().unwrap();
    assert!(
        connect(
            &bed.sentinel.url,
            &era,
            &ClientOptions::bearer("not-a-real-token")
        )
        .await
        .is_err()
    );
    assert_eq!(bed.upstream.mcp_requests().len(), 0);
    assert_eq!(
        api.reviewed_tokens(),
        [
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln",
            "not-a-real-token"
        ]
    );
    assert_eq!(
        bed.sentinel.metric(&authn("rejected", "failure")).await,
        2.0
    );
    assert_eq!(bed.sentinel.metric(&authn("ok", "success")).await, 0.0);
}

#[tokio::test]
async fn a_token_for_another_audience_is_401() {
    // Authenticated — but for the API server's audience, not the sentinel's.
    let api = ApiServer::start(|_| {
        Reply::Review(service_account(
            "tools",
            "agent",
            &["https://kubernetes.default.svc.cluster.local"],
        ))
    })
    .await;
    let bed = bed(|dir| api.kubeconfig(&dir.0)).await;
    let r = raw_post(&bed.sentinel.url, &bearer(AGENT_TOKEN), &init_body()).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        invalid_token_challenge(&bed.sentinel)
    );
    assert_eq!(api.reviewed_tokens(), [AGENT_TOKEN]);
    assert_eq!(bed.upstream.mcp_requests().len(), 0);
    assert_eq!(
        bed.sentinel.metric(&authn("rejected", "failure")).await,
        1.0
    );
}

#[tokio::test]
async fn api_server_down_is_401_and_counted_unavailable() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let ca = TestCa::new();
    let bed =
        bed(|dir| kubeconfig(&dir.0, &format!("https://{addr}"), &ca.ca_pem(), OWN_TOKEN)).await;
    for attempt in 1..=2 {
        let started = Instant::now();
        let r = raw_post(&bed.sentinel.url, &bearer(AGENT_TOKEN), &init_body()).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            invalid_token_challenge(&bed.sentinel)
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        // Not cached: each request is another attempt.
        assert_eq!(
            bed.sentinel.metric(&authn("unavailable", "failure")).await,
            attempt as f64
        );
    }
    assert_eq!(bed.upstream.mcp_requests().len(), 0);
    assert_eq!(bed.sentinel.metric(&authn("ok", "success")).await, 0.0);
}

#[tokio::test]
async fn api_server_failing_or_hanging_is_401_never_5xx() {
    for (label, reply) in [
        (
            "500",
            Reply::Raw(
                StatusCode::INTERNAL_SERVER_ERROR,
                k8s_status(500, "InternalError", "etcd is sad"),
            ),
        ),
        (
            "403",
            Reply::Raw(
                StatusCode::FORBIDDEN,
                k8s_status(403, "Forbidden", "cannot create resource \"tokenreviews\""),
            ),
        ),
        ("hang", Reply::Hang),
    ] {
        let api = ApiServer::start(move |_| reply.clone()).await;
        let bed = bed(|dir| api.kubeconfig(&dir.0)).await;
        let started = Instant::now();
        let r = raw_post(&bed.sentinel.url, &bearer(AGENT_TOKEN), &init_body()).await;
        assert_eq!(r.status, 401, "{label}: {}", r.body);
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            invalid_token_challenge(&bed.sentinel),
            "{label}"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{label}");
        assert_eq!(api.reviewed_tokens(), [AGENT_TOKEN], "{label}");
        assert_eq!(bed.upstream.mcp_requests().len(), 0, "{label}");
        assert_eq!(
            bed.sentinel.metric(&authn("unavailable", "failure")).await,
            1.0,
            "{label}"
        );
    }
}
