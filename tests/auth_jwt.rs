//! JWT bearer tokens end to end: an HTTPS IdP (JWKS + OIDC discovery, certificates from a CA
//! made in the test) and tokens minted in the test, through the sentinel to an rmcp upstream.
//! The attack table asserts the exact 401 and challenge of each case.

mod common;

use std::time::Duration;

use common::bed::Bed;
use common::client::{ClientOptions, Era, connect, raw_post, tool_call};
use common::idp::{Idp, now, replace_payload};
use common::keys::bearer;
use common::metrics::authn;
use common::sentinel;
use common::upstream::{UpstreamConfig, spawn_upstream};
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const METADATA: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

/// What the JWT bed adds: the identity provider that signs, and its key id.
struct Jwt {
    idp: Idp,
    kid: String,
}

async fn bed(discovery: bool) -> Bed<Jwt> {
    let idp = Idp::start().await;
    let kid = idp.add_key("RS256");
    let keys = if discovery {
        String::new()
    } else {
        format!("        jwks_url: {}\n", idp.jwks_uri())
    };
    let yaml = format!(
        "policy: {{default: allow}}\nauth:\n  resource: {RESOURCE}\n  scopes_supported: [mcp]\n  jwt:\n    leeway: 5s\n    issuers:\n      - issuer: {}\n{keys}        algorithms: [RS256, ES256]\n        ca_file: {}\n        refresh_interval: 1s\n        min_refresh_interval: 1s\n        claims: [tenant]\n",
        idp.issuer(),
        idp.ca_file().display()
    );
    let bed = Bed::start("jwt", UpstreamConfig::default(), |_| yaml).await;
    bed.with(Jwt { idp, kid })
}

fn init() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 7, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}
    })
}

const INVALID: &str = "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\", error=\"invalid_token\"";

#[tokio::test]
async fn the_attack_table() {
    let b = bed(false).await;
    let idp = &b.idp;
    let good = idp.claims("alice", RESOURCE);
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let valid = idp.mint(&b.kid, &good);
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", idp.mint_none(&good), "algorithm"),
        (
            "HS256 keyed with the RSA public key",
            idp.mint_hs256_with_public_key(&b.kid, &good),
            "algorithm",
        ),
        (
            "expired",
            idp.mint(&b.kid, &with(json!({"exp": now() - 60}))),
            "expired",
        ),
        (
            "nbf in the future",
            idp.mint(&b.kid, &with(json!({"nbf": now() + 120}))),
            "not_yet_valid",
        ),
        (
            "iat in the future beyond the leeway",
            idp.mint(&b.kid, &with(json!({"iat": now() + 65}))),
            "not_yet_valid",
        ),
        (
            "wrong iss",
            idp.mint(&b.kid, &with(json!({"iss": "https://evil.example.com"}))),
            "issuer",
        ),
        (
            "wrong aud",
            idp.mint(
                &b.kid,
                &with(json!({"aud": "https://other.example.com/mcp"})),
            ),
            "audience",
        ),
        (
            "unknown kid",
            idp.sign(
                &b.kid,
                "RS256",
                &json!({"alg": "RS256", "kid": "no-such-kid"}),
                &good,
            ),
            "unknown_key",
        ),
        (
            "tampered payload",
            replace_payload(&valid, &with(json!({"sub": "admin"}))),
            "signature",
        ),
    ];
    for (name, token, reason) in &cases {
        let r = raw_post(&b.sentinel.url, &bearer(token), &init()).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some(INVALID),
            "{name}"
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["message"], "Unauthorized", "{name}");
        assert_eq!(body["id"], 7);
        let series = authn("jwt", reason, "failure");
        assert!(b.sentinel.metric(&series).await >= 1.0, "{name}: {series}");
    }
    // No token: the challenge without error=.
    let r = raw_post(&b.sentinel.url, &[], &init()).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        format!("Bearer resource_metadata=\"{METADATA}\", scope=\"mcp\"")
    );
    // Token in the query string.
    let r = raw_post(
        &format!("{}?access_token={valid}", b.sentinel.url),
        &[],
        &init(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        b.upstream.mcp_requests().len(),
        0,
        "no attack reached the upstream"
    );

    // And the valid token works.
    let r = raw_post(&b.sentinel.url, &bearer(&valid), &init()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = b.upstream.last_request("initialize").unwrap();
    assert_eq!(
        seen.header("x-mcp-sentinel-subject").as_deref(),
        Some("alice")
    );
    assert_eq!(
        seen.header("x-mcp-sentinel-auth-method").as_deref(),
        Some("jwt")
    );
    assert!(seen.header("authorization").is_none());
}

#[tokio::test]
async fn keys_rotate_without_a_restart() {
    let b = bed(true).await;
    let idp = &b.idp;
    let old = idp.mint(&b.kid, &idp.claims("alice", RESOURCE));
    assert_eq!(
        raw_post(&b.sentinel.url, &bearer(&old), &init())
            .await
            .status,
        200
    );

    // A new key: its first token makes the sentinel refetch the JWKS (unknown kid).
    let new_kid = idp.add_key("ES256");
    let new = idp.mint(&new_kid, &idp.claims("alice", RESOURCE));
    let r = raw_post(&b.sentinel.url, &bearer(&new), &init()).await;
    assert_eq!(r.status, 200, "new key picked up: {}", r.body);

    // The old key is withdrawn: after the next refresh (1 s here) its tokens fail, cached or
    // not.
    idp.remove_key(&b.kid);
    let fresh_old = idp.mint(&b.kid, &idp.claims("bob", RESOURCE));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw_post(&b.sentinel.url, &bearer(&fresh_old), &init()).await;
        if r.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed key still verifies"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = raw_post(&b.sentinel.url, &bearer(&old), &init()).await;
    assert_eq!(r.status, 401, "a cached token of a removed key: {}", r.body);
    assert_eq!(
        raw_post(&b.sentinel.url, &bearer(&new), &init())
            .await
            .status,
        200
    );
    assert!(idp.discovery_fetches() >= 1);
}

#[tokio::test]
async fn readiness_waits_for_the_first_jwks_fetch() {
    let idp = Idp::start().await;
    idp.add_key("RS256");
    idp.set_down(true);
    let upstream = spawn_upstream().await;
    let yaml = format!(
        "policy: {{default: allow}}\nauth:\n  resource: {RESOURCE}\n  jwt:\n    issuers:\n      - issuer: {}\n        jwks_url: {}\n        ca_file: {}\n",
        idp.issuer(),
        idp.jwks_uri(),
        idp.ca_file().display()
    );
    let cfg = sentinel::config_from_yaml(&yaml, &upstream.url());
    let s = sentinel::start_with(cfg, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = s.get_admin("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("jwks"), "{body}");
    idp.set_down(false);
    s.wait_ready(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn rmcp_clients_with_a_bearer_token_in_both_eras() {
    let b = bed(false).await;
    let mut claims = b.idp.claims("carol", RESOURCE);
    claims["groups"] = json!(["dev", "sre"]);
    claims["scope"] = json!("mcp tools:call");
    claims["tenant"] = json!("acme");
    let token = b.idp.mint(&b.kid, &claims);
    for era in Era::all() {
        let client = connect(&b.sentinel.url, &era, &ClientOptions::bearer(&token))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", era.label()));
        let r = client
            .call_tool(tool_call("add", json!({"a": 2, "b": 3})))
            .await
            .unwrap();
        assert!(!r.is_error.unwrap_or(false));
        let seen = b.upstream.last_request("tools/call").unwrap();
        assert_eq!(
            seen.header("x-mcp-sentinel-subject").as_deref(),
            Some("carol")
        );
        assert_eq!(
            seen.header("x-mcp-sentinel-groups").as_deref(),
            Some("dev,sre")
        );
        client.cancel().await.unwrap();
    }
    for r in b.upstream.mcp_requests() {
        assert!(r.header("authorization").is_none());
        assert!(!format!("{:?} {:?}", r.headers, r.body).contains(&token));
    }
}
