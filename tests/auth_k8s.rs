//! Kubernetes TokenReview end to end: rmcp clients present service-account tokens to the
//! sentinel, which reviews them against a fake API server (real HTTPS, real TokenReview shapes,
//! a kubeconfig written here) and tells the upstream who called — never the token. Rejected
//! tokens, tokens for another audience and an API server that is down, hanging or failing are
//! all 401: never a 5xx, never let through.

mod common;

use std::time::{Duration, Instant};

use common::apiserver::{
    ApiServer, OWN_TOKEN, Reply, k8s_status, kubeconfig, rejected, service_account,
};
use common::client::{ClientOptions, Era, connect, raw_post, tool_call};
use common::keys::init_body;
use common::sentinel::{self, TempDir, TestSentinel};
use common::tls::TestCa;
use common::upstream::{Upstream, spawn_upstream};
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A service-account token as kubelet projects it: JWT-shaped, opaque to the sentinel.
const AGENT_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dG9vbHM6YWdlbnQifQ.c2lnbmF0dXJl";
const AGENT: &str = "system:serviceaccount:tools:agent";
const AGENT_GROUPS: &str =
    "system:serviceaccounts,system:serviceaccounts:tools,system:authenticated";

fn authn(reason: &str, result: &str) -> String {
    format!(
        r#"mcp_sentinel_authn_total{{method="kubernetes",reason="{reason}",result="{result}"}}"#
    )
}

struct Bed {
    upstream: Upstream,
    sentinel: TestSentinel,
    _dir: TempDir,
}

/// An upstream and a sentinel whose only authenticator is TokenReview through `kubeconfig`.
async fn bed(write_kubeconfig: impl FnOnce(&TempDir) -> std::path::PathBuf) -> Bed {
    let upstream = spawn_upstream().await;
    let dir = TempDir::new("k8s");
    let path = write_kubeconfig(&dir);
    let yaml = format!(
        "policy: {{default: allow}}\nauth:\n  kubernetes:\n    kubeconfig: {}\n    audiences: [mcp-sentinel]\n    timeout: 500ms\n",
        path.display()
    );
    let cfg = sentinel::config_from_yaml(&yaml, &upstream.url());
    let sentinel = sentinel::start_with(cfg, true).await;
    Bed {
        upstream,
        sentinel,
        _dir: dir,
    }
}

/// The agent's token is authenticated for our audience; any other token is not.
async fn cluster() -> ApiServer {
    ApiServer::start(|review| {
        if review.spec.token.as_deref() == Some(AGENT_TOKEN) {
            Reply::Review(service_account("tools", "agent", &["mcp-sentinel"]))
        } else {
            Reply::Review(rejected("invalid bearer token"))
        }
    })
    .await
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".to_string(), format!("Bearer {token}"))]
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
    let api = cluster().await;
    let bed = bed(|dir| api.kubeconfig(&dir.0)).await;
    let eras = Era::all();
    for era in &eras {
        let client = connect(
            &bed.sentinel.url,
            era,
            &ClientOptions::bearer(AGENT_TOKEN).header("X-MCP-Sentinel-Subject", "root"),
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", era.label()));
        let result = client
            .call_tool(tool_call("echo", json!({"text": "hi"})))
            .await
            .unwrap();
        assert!(!result.is_error.unwrap_or(false), "{}", era.label());
        let seen = bed.upstream.last_request("tools/call").unwrap();
        assert_eq!(
            seen.header("x-mcp-sentinel-subject").as_deref(),
            Some(AGENT),
            "{}",
            era.label()
        );
        assert_eq!(
            seen.header("x-mcp-sentinel-groups").as_deref(),
            Some(AGENT_GROUPS)
        );
        assert_eq!(
            seen.header("x-mcp-sentinel-auth-method").as_deref(),
            Some("kubernetes")
        );
        client.cancel().await.unwrap();
    }
    assert_eq!(bed.upstream.calls("echo"), eras.len());

    // Every request the upstream saw was the agent's, and none carried a token.
    let seen = bed.upstream.mcp_requests();
    assert!(seen.len() >= 2 * eras.len(), "{}", seen.len());
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
    let api = cluster().await;
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
