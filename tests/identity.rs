//! Identities end to end: the same subject string from two JWT issuers, from an API key, a
//! Kubernetes service account and a JWT is a different caller each time — for session
//! ownership, rate budgets and policy `issuers`. Client-sent identity headers never reach the
//! upstream under any spelling, and credentials in the query string are refused unforwarded.
//! Real peers throughout: two HTTPS IdPs, a TokenReview API server, an rmcp upstream.

mod common;

use common::apiserver::{AGENT, AGENT_TOKEN, ApiServer, agent_cluster};
use common::bed::Bed;
use common::client::{RawResponse, legacy_headers, raw_post};
use common::idp::Idp;
use common::keys::{api_key, bearer};
use common::keys::{init_body, write_keys};
use common::metrics::denials;
use common::upstream::{SeenRequest, UpstreamConfig};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const VERSION: &str = "2025-11-25";
/// A service-account token as kubelet projects it: JWT-shaped, opaque to the sentinel.
/// API keys whose subjects copy other callers' subjects.
const AGENT_KEY: &str = "ak_named_like_the_agent_01";
const ALICE_KEY: &str = "ak_named_like_alice_02";

/// What the identity bed adds: the two identity providers with their key ids, and the API
/// server.
struct Issuers {
    a: Idp,
    b: Idp,
    kid_a: String,
    kid_b: String,
    _api: ApiServer,
}

impl Bed<Issuers> {
    /// A token for `sub` from issuer a or b.
    fn token(&self, from_a: bool, sub: &str) -> String {
        let (idp, kid) = if from_a {
            (&self.a, &self.kid_a)
        } else {
            (&self.b, &self.kid_b)
        };
        idp.mint(kid, &idp.claims(sub, RESOURCE))
    }

    fn jwt(&self, from_a: bool, sub: &str) -> Vec<(String, String)> {
        bearer(&self.token(from_a, sub))
    }
}

/// A sentinel with every bearer authenticator at once — API keys, JWTs from two issuers
/// (`{A}` and `{B}` in `policy` name them), Kubernetes TokenReview — and `extra` config.
async fn bed(upstream: UpstreamConfig, policy: &str, extra: &str) -> Bed<Issuers> {
    let (a, b) = (Idp::start().await, Idp::start().await);
    let (kid_a, kid_b) = (a.add_key("RS256"), b.add_key("ES256"));
    let api = agent_cluster().await;
    let issuer = |idp: &Idp, alg: &str| {
        format!(
            "      - issuer: {}\n        jwks_url: {}\n        algorithms: [{alg}]\n        ca_file: {}\n",
            idp.issuer(),
            idp.jwks_uri(),
            idp.ca_file().display()
        )
    };
    let bed = Bed::start("identity", upstream, |dir| {
        let keys = dir.path("keys.yaml");
        write_keys(&keys, &[(AGENT_KEY, AGENT, &[]), (ALICE_KEY, "alice", &[])]);
        format!(
            "{}\nauth:\n  resource: {RESOURCE}\n  api_keys:\n    file: {}\n  jwt:\n    issuers:\n{}{}  kubernetes:\n    kubeconfig: {}\n    audiences: [mcp-sentinel]\n{extra}",
            policy
                .replace("{A}", &a.issuer())
                .replace("{B}", &b.issuer()),
            keys.display(),
            issuer(&a, "RS256"),
            issuer(&b, "ES256"),
            api.kubeconfig(&dir.0).display(),
        )
    })
    .await;
    bed.with(Issuers {
        a,
        b,
        kid_a,
        kid_b,
        _api: api,
    })
}

/// A caller with a legacy session of its own.
struct Caller {
    creds: Vec<(String, String)>,
    session: String,
}

impl Caller {
    async fn open(url: &str, creds: Vec<(String, String)>) -> Caller {
        let init = raw_post(url, &creds, &init_body()).await;
        assert_eq!(init.status, 200, "{}", init.body);
        let session = init.header("mcp-session-id").expect("a session");
        let c = Caller { creds, session };
        let ack = c
            .post_in(
                url,
                &c.session,
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(ack.status, 202, "{}", ack.body);
        c
    }

    /// `body` with this caller's credentials in session `session` (its own or another's).
    async fn post_in(&self, url: &str, session: &str, body: &Value) -> RawResponse {
        let mut headers = self.creds.clone();
        headers.extend(legacy_headers(VERSION, Some(session)));
        raw_post(url, &headers, body).await
    }

    async fn echo(&self, url: &str, id: i64) -> RawResponse {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}});
        self.post_in(url, &self.session, &call).await
    }
}

fn ping(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "ping"})
}

/// The exact answer to a session presented by someone else.
fn assert_session_not_found(r: &RawResponse, id: i64, what: &str) {
    assert_eq!(r.status, 404, "{what}: {}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": "Session not found"}}),
        "{what}"
    );
}

fn assert_rate_limited(r: &RawResponse, id: i64, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.body);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["id"], id, "{what}");
    assert_eq!(body["error"]["code"], 429, "{what}");
}

const ALLOW_ALL: &str = "policy: {default: allow}";
/// Two echo calls a minute per caller.
const ECHO_BUDGET: &str = "rate_limits:\n  rules:\n    - name: per-caller\n      match: {tools: [echo]}\n      limits: [{rate: 2/minute}]\n      key: [subject]\n";

#[tokio::test]
async fn the_same_subject_from_two_issuers_is_two_callers() {
    let bed = bed(UpstreamConfig::default(), ALLOW_ALL, ECHO_BUDGET).await;
    let url = &bed.sentinel.url;
    let alice_a = Caller::open(url, bed.jwt(true, "alice")).await;
    let alice_b = Caller::open(url, bed.jwt(false, "alice")).await;

    // Neither may use the other's session, though both are "alice".
    let hijack = alice_b.post_in(url, &alice_a.session, &ping(2)).await;
    assert_session_not_found(&hijack, 2, "b in a's session");
    let hijack = alice_a.post_in(url, &alice_b.session, &ping(3)).await;
    assert_session_not_found(&hijack, 3, "a in b's session");
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_hijack_attempts_total{kind="session"}"#)
            .await,
        2.0
    );
    assert_eq!(
        alice_a
            .post_in(url, &alice_a.session, &ping(4))
            .await
            .status,
        200
    );

    // Separate budgets: a spends hers; b's is untouched.
    for id in [10, 11] {
        let r = alice_a.echo(url, id).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_rate_limited(&alice_a.echo(url, 12).await, 12, "a over her budget");
    for id in [20, 21] {
        let r = alice_b.echo(url, id).await;
        assert_eq!(r.status, 200, "b has her own budget: {}", r.body);
    }
    assert_rate_limited(&alice_b.echo(url, 22).await, 22, "b over her budget");
    assert_eq!(bed.upstream.calls("echo"), 4);

    // The upstream learns the issuer too, so it can tell them apart.
    let seen: Vec<(Option<String>, Option<String>)> = bed
        .upstream
        .mcp_requests()
        .iter()
        .filter(|r| r.rpc_method().as_deref() == Some("tools/call"))
        .map(|r| {
            (
                r.header("x-mcp-sentinel-subject"),
                r.header("x-mcp-sentinel-issuer"),
            )
        })
        .collect();
    let (a, b) = (Some(bed.a.issuer()), Some(bed.b.issuer()));
    let alice = Some("alice".to_string());
    assert_eq!(
        seen,
        [
            (alice.clone(), a.clone()),
            (alice.clone(), a),
            (alice.clone(), b.clone()),
            (alice, b)
        ]
    );
}

#[tokio::test]
async fn one_name_under_three_authenticators_is_three_callers() {
    let bed = bed(UpstreamConfig::default(), ALLOW_ALL, ECHO_BUDGET).await;
    let url = &bed.sentinel.url;
    // The service account, an API key whose subject copies it, and a JWT whose `sub` does.
    let callers = [
        ("kubernetes", Caller::open(url, bearer(AGENT_TOKEN)).await),
        ("api key", Caller::open(url, api_key(AGENT_KEY)).await),
        ("jwt", Caller::open(url, bed.jwt(true, AGENT)).await),
    ];
    let mut id = 100;
    for (owner, o) in &callers {
        for (intruder, i) in &callers {
            if owner == intruder {
                continue;
            }
            id += 1;
            let r = i.post_in(url, &o.session, &ping(id)).await;
            assert_session_not_found(&r, id, &format!("{intruder} in {owner}'s session"));
        }
    }
    // The same across a JWT subject and an API key's.
    let alice_jwt = Caller::open(url, bed.jwt(false, "alice")).await;
    let alice_key = Caller::open(url, api_key(ALICE_KEY)).await;
    let r = alice_key.post_in(url, &alice_jwt.session, &ping(200)).await;
    assert_session_not_found(&r, 200, "api key in the jwt's session");
    let r = alice_jwt.post_in(url, &alice_key.session, &ping(201)).await;
    assert_session_not_found(&r, 201, "jwt in the api key's session");

    // Budgets: the service account spends its own; the look-alikes keep theirs.
    let (_, agent) = &callers[0];
    for id in [300, 301] {
        assert_eq!(agent.echo(url, id).await.status, 200);
    }
    assert_rate_limited(&agent.echo(url, 302).await, 302, "the service account");
    for (name, c) in &callers[1..] {
        for id in [310, 311] {
            let r = c.echo(url, id).await;
            assert_eq!(r.status, 200, "{name}: {}", r.body);
        }
    }
    // Every owner still has its session.
    for (name, c) in &callers {
        let r = c.post_in(url, &c.session, &ping(400)).await;
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }
    let methods: Vec<Option<String>> = bed
        .upstream
        .mcp_requests()
        .iter()
        .filter(|r| r.rpc_method().as_deref() == Some("tools/call"))
        .map(|r| r.header("x-mcp-sentinel-auth-method"))
        .collect();
    assert_eq!(
        methods,
        [
            "kubernetes",
            "kubernetes",
            "api_key",
            "api_key",
            "jwt",
            "jwt"
        ]
        .map(|m| Some(m.to_string()))
    );
}

#[tokio::test]
async fn a_rule_naming_an_issuer_matches_only_that_issuer() {
    let policy = "policy:\n  default: deny\n  answer: forbidden\n  rules:\n    - name: echo-for-issuer-a\n      effect: allow\n      subjects: [alice]\n      issuers: [\"{A}\"]\n      tools: [echo]\n";
    let bed = bed(UpstreamConfig::default(), policy, "").await;
    let url = &bed.sentinel.url;
    let a = Caller::open(url, bed.jwt(true, "alice")).await;
    let ok = a.echo(url, 1).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let forbidden = json!({"jsonrpc": "2.0", "id": 2,
        "error": {"code": -32600, "message": "Forbidden"}});
    for (who, creds) in [
        ("alice of issuer b", bed.jwt(false, "alice")),
        ("an API key named alice", api_key(ALICE_KEY)),
    ] {
        let c = Caller::open(url, creds).await;
        let r = c.echo(url, 2).await;
        assert_eq!(r.status, 403, "{who}: {}", r.body);
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            forbidden,
            "{who}"
        );
    }
    assert_eq!(bed.upstream.calls("echo"), 1);
}

/// A header name as CGI/WSGI/PHP/Apache may fold it (see `proxy::headers`), computed here
/// independently of the sentinel.
fn folded(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b.to_ascii_lowercase())
            } else {
                '-'
            }
        })
        .collect()
}

/// Every header of `seen` that folds to one the sentinel controls, as (name, value).
fn identity_headers(seen: &SeenRequest) -> Vec<(String, String)> {
    let controlled = [
        "x-mcp-sentinel-subject",
        "x-mcp-sentinel-groups",
        "x-mcp-sentinel-auth-method",
        "x-mcp-sentinel-issuer",
        "authorization",
        "x-api-key",
    ];
    let mut out: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| controlled.contains(&folded(n.as_str()).as_str()))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream_under_any_spelling() {
    let bed = bed(UpstreamConfig::json(), ALLOW_ALL, "").await;
    let spoofs = [
        ("X-MCP-Sentinel-Subject", "root"),
        ("x-mcp-sentinel-subject", "root-again"),
        ("X_MCP_Sentinel_Subject", "root"),
        ("x_mcp_sentinel_subject", "root"),
        ("x.mcp.sentinel.subject", "root"),
        ("X-Mcp-Sentinel_Groups", "admins"),
        ("x_mcp_sentinel_groups", "admins"),
        ("X_MCP_SENTINEL_AUTH_METHOD", "mtls"),
        ("x-mcp-sentinel-auth_method", "mtls"),
        ("X-MCP-Sentinel-Issuer", "https://evil.example"),
        ("x_mcp_sentinel_issuer", "https://evil.example"),
        ("X_API_KEY", "forged"),
        ("x.api.key", "forged"),
    ];
    let want = |token_issuer: String| {
        let mut v = vec![
            ("x-mcp-sentinel-auth-method".to_string(), "jwt".to_string()),
            ("x-mcp-sentinel-issuer".to_string(), token_issuer),
            ("x-mcp-sentinel-subject".to_string(), "alice".to_string()),
        ];
        v.sort();
        v
    };
    for http2 in [false, true] {
        let client = if http2 {
            reqwest::Client::builder().http2_prior_knowledge()
        } else {
            reqwest::Client::builder().http1_only()
        }
        .build()
        .unwrap();
        let mut req = client
            .post(&bed.sentinel.url)
            .header("Accept", "application/json, text/event-stream")
            .header("Content-Type", "application/json")
            .header(
                "Authorization",
                format!("Bearer {}", bed.token(true, "alice")),
            );
        for (name, value) in spoofs {
            // `header` appends: names sent twice arrive twice.
            req = req.header(name, value).header(name, value);
        }
        bed.upstream.clear_requests();
        let r = req.json(&init_body()).send().await.unwrap();
        assert_eq!(r.status(), 200, "http2 {http2}");
        let seen = bed.upstream.last_request("initialize").expect("forwarded");
        assert_eq!(
            identity_headers(&seen),
            want(bed.a.issuer()),
            "http2 {http2}"
        );
    }
}

#[tokio::test]
async fn credentials_in_the_query_string_are_refused_and_never_forwarded() {
    let bed = bed(UpstreamConfig::json(), ALLOW_ALL, "").await;
    let jwt = bed.token(true, "alice");
    let queries = [
        "access_token=abc".to_string(),
        "Access%5FToken=abc".to_string(),
        "%61ccess_token=abc".to_string(),
        "x=1;access-token=abc".to_string(),
        "accessToken[]=abc".to_string(),
        "id_token=abc".to_string(),
        "api-key=abc".to_string(),
        "X_API_KEY=abc".to_string(),
        "bearer=abc".to_string(),
        "authorization=Bearer+abc".to_string(),
        format!("state={jwt}"),
        format!("q=Bearer%20{jwt}"),
    ];
    let refused = json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600,
        "message": "Access tokens must be sent in the Authorization header, not the query string"}});
    for q in &queries {
        // A valid credential in the header too: the query alone is the reason.
        let r = raw_post(
            &format!("{}?{q}", bed.sentinel.url),
            &bed.jwt(true, "alice"),
            &init_body(),
        )
        .await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            refused,
            "{q}"
        );
    }
    assert_eq!(bed.upstream.mcp_requests().len(), 0, "nothing forwarded");
    assert_eq!(
        bed.sentinel
            .metric(&denials("authenticate", "token_in_query"))
            .await,
        queries.len() as f64
    );
    // An ordinary query is not a credential.
    let r = raw_post(
        &format!("{}?page=2&keyword=rust", bed.sentinel.url),
        &bed.jwt(true, "alice"),
        &init_body(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(bed.upstream.mcp_requests().len(), 1);
}
