//! Authentication end to end: API keys (right, wrong, revoked by editing the file), the 401
//! challenge and RFC 9728 metadata, token passthrough and identity-header spoofing, tokens in
//! the query string, Origin, and session hijacking — with rmcp peers on real sockets.

mod common;

use std::time::Duration;

use common::bed::Bed;
use common::client::{
    ClientOptions, Era, connect, legacy_headers, raw_legacy_session, raw_post, raw_request,
    tool_call,
};
use common::keys::{init_body, pairs, write_keys};
use common::metrics::{authn, denials};
use common::upstream::UpstreamConfig;
use reqwest::Method;
use serde_json::{Value, json};

const ALICE_KEY: &str = "ak_alice_0123456789";
const BOB_KEY: &str = "ak_bob_9876543210";

/// An upstream and a sentinel whose only authenticator is API keys for alice and bob.
async fn keyed(extra: &str) -> Bed {
    Bed::start("auth", UpstreamConfig::default(), |dir| {
        let keys = dir.path("keys.yaml");
        write_keys(
            &keys,
            &[(ALICE_KEY, "alice", &["dev", "ops"]), (BOB_KEY, "bob", &[])],
        );
        format!(
            "policy: {{default: allow}}\nauth:\n  api_keys:\n    file: {}\n    reload_interval: 100ms\n  scopes_supported: [mcp:tools, mcp:resources]\n{extra}",
            keys.display()
        )
    })
    .await
}

#[tokio::test]
async fn missing_and_wrong_credentials_get_401_with_the_challenge() {
    let bed = keyed("").await;
    let url = &bed.sentinel.url;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    let metadata = format!("http://{addr}/.well-known/oauth-protected-resource/mcp");

    let none = raw_post(url, &[], &init_body()).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(
        none.header("www-authenticate").unwrap(),
        format!("Bearer resource_metadata=\"{metadata}\", scope=\"mcp:tools mcp:resources\"")
    );
    let body: Value = serde_json::from_str(&none.body).unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(body["error"]["code"], -32600);
    assert_eq!(body["error"]["message"], "Unauthorized");

    for headers in [
        pairs(&[("Authorization", "Bearer ak_mallory")]),
        pairs(&[("X-API-Key", "ak_mallory")]),
        pairs(&[("Authorization", "Basic YWxpY2U6eA==")]),
        pairs(&[("Authorization", "Bearer")]),
    ] {
        let r = raw_post(url, &headers, &init_body()).await;
        assert_eq!(r.status, 401, "{headers:?}: {}", r.body);
        assert_eq!(
            r.header("www-authenticate").unwrap(),
            format!(
                "Bearer resource_metadata=\"{metadata}\", scope=\"mcp:tools mcp:resources\", error=\"invalid_token\""
            ),
            "{headers:?}"
        );
        // The body never says which check failed.
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["message"], "Unauthorized");
    }
    // A notification is refused with the status alone.
    let note = raw_post(
        url,
        &[],
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(note.status, 401);
    assert!(note.body.is_empty());
    assert!(note.header("www-authenticate").is_some());

    assert_eq!(
        bed.upstream.mcp_requests().len(),
        0,
        "nothing reached the upstream"
    );
    let m = &bed.sentinel;
    assert_eq!(m.metric(&authn("none", "missing", "failure")).await, 2.0);
    assert_eq!(
        m.metric(&authn("api_key", "unknown_credential", "failure"))
            .await,
        2.0
    );
    assert_eq!(
        m.metric(&denials("authenticate", "unauthenticated")).await,
        6.0
    );
}

#[tokio::test]
async fn protected_resource_metadata_is_served_without_credentials() {
    let bed = keyed("  resource: https://mcp.example.com/mcp\n  authorization_servers: [https://idp.example.com]\n").await;
    let base = bed.sentinel.url.trim_end_matches("/mcp").to_string();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let r = raw_request(Method::GET, &format!("{base}{path}"), &[], None).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.content_type(), "application/json");
        let doc: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://idp.example.com"],
                "scopes_supported": ["mcp:tools", "mcp:resources"],
                "bearer_methods_supported": ["header"],
            })
        );
    }
    // The challenge points at the configured resource's metadata.
    let r = raw_post(&bed.sentinel.url, &[], &init_body()).await;
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools mcp:resources\""
    );
    let other = raw_request(
        Method::GET,
        &format!("{base}/.well-known/oauth-protected-resource/other"),
        &[],
        None,
    )
    .await;
    assert_eq!(other.status, 404);
}

#[tokio::test]
async fn api_keys_identify_callers_and_never_reach_the_upstream() {
    let bed = keyed("").await;
    let options = ClientOptions::bearer(ALICE_KEY)
        // Spoofed identity headers: removed before forwarding.
        .header("X-MCP-Sentinel-Subject", "root")
        .header("X-MCP-Sentinel-Groups", "admins")
        .header("X-MCP-Sentinel-Auth-Method", "mtls");
    bed.echo_in_every_era(&options, ["alice", "dev,ops", "api_key"])
        .await;
    // No request the upstream saw carried a credential or a client-sent identity.
    let seen = bed.upstream.mcp_requests();
    assert!(seen.len() >= 10);
    for r in &seen {
        assert!(r.header("authorization").is_none(), "{:?}", r.headers);
        assert!(r.header("x-api-key").is_none());
        assert_ne!(r.header("x-mcp-sentinel-subject").as_deref(), Some("root"));
        assert_eq!(r.header("x-mcp-sentinel-subject").as_deref(), Some("alice"));
        assert!(!format!("{:?}", r.headers).contains(ALICE_KEY));
    }
    assert!(
        bed.sentinel
            .metric(&authn("api_key", "ok", "success"))
            .await
            >= 10.0
    );
}

#[tokio::test]
async fn a_key_removed_from_the_file_stops_working_without_a_restart() {
    let bed = keyed("").await;
    let url = &bed.sentinel.url;
    let key = pairs(&[("X-API-Key", BOB_KEY)]);
    let ok = raw_post(url, &key, &init_body()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    write_keys(&bed.dir.path("keys.yaml"), &[(ALICE_KEY, "alice", &[])]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw_post(url, &key, &init_body()).await;
        if r.status == 401 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob's key still works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let alice = raw_post(url, &pairs(&[("X-API-Key", ALICE_KEY)]), &init_body()).await;
    assert_eq!(alice.status, 200);
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_api_keys_reloads_total{result="success"}"#)
            .await,
        1.0
    );
    assert_eq!(bed.sentinel.metric("mcp_sentinel_api_keys").await, 1.0);
}

#[tokio::test]
async fn tokens_in_the_query_string_are_refused() {
    let bed = keyed("").await;
    for q in ["access_token=abc", "x=1&api_key=abc", "X-API-Key=abc"] {
        let r = raw_post(
            &format!("{}?{q}", bed.sentinel.url),
            &pairs(&[("X-API-Key", ALICE_KEY)]),
            &init_body(),
        )
        .await;
        assert_eq!(r.status, 400, "{q}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["code"], -32600);
        assert_eq!(body["id"], 1);
    }
    assert_eq!(bed.upstream.mcp_requests().len(), 0);
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let bed = keyed("  allowed_origins: [https://app.example.com]\n").await;
    let key = ("X-API-Key", ALICE_KEY);
    let bad = raw_post(
        &bed.sentinel.url,
        &pairs(&[key, ("Origin", "http://evil.example")]),
        &init_body(),
    )
    .await;
    assert_eq!(bad.status, 403);
    let body: Value = serde_json::from_str(&bad.body).unwrap();
    assert_eq!(body["error"]["message"], "Origin not allowed");
    let good = raw_post(
        &bed.sentinel.url,
        &pairs(&[key, ("Origin", "https://app.example.com")]),
        &init_body(),
    )
    .await;
    assert_eq!(good.status, 200, "{}", good.body);
    let none = raw_post(&bed.sentinel.url, &pairs(&[key]), &init_body()).await;
    assert_eq!(none.status, 200);
    assert_eq!(
        bed.sentinel
            .metric(&denials("transport", "origin_not_allowed"))
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_initialized_it() {
    let bed = keyed("").await;
    let url = &bed.sentinel.url;
    let version = "2025-11-25";
    let alice = pairs(&[("X-API-Key", ALICE_KEY)]);
    let bob = pairs(&[("X-API-Key", BOB_KEY)]);

    // alice's session, made by hand so its id can be replayed.
    let init = raw_post(url, &alice, &init_body()).await;
    assert_eq!(init.status, 200);
    let sid = init.header("mcp-session-id").expect("a session");
    let mut alice_s = alice.clone();
    alice_s.extend(legacy_headers(version, Some(&sid)));
    let ack = raw_post(
        url,
        &alice_s,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(ack.status, 202);
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "mine"}}});
    assert_eq!(raw_post(url, &alice_s, &call).await.status, 200);

    // bob presents alice's session id: 404, and the upstream never sees it.
    let mut bob_s = bob.clone();
    bob_s.extend(legacy_headers(version, Some(&sid)));
    let before = bed.upstream.calls("echo");
    let hijack = raw_post(url, &bob_s, &call).await;
    assert_eq!(hijack.status, 404, "{}", hijack.body);
    let body: Value = serde_json::from_str(&hijack.body).unwrap();
    assert_eq!(body["id"], 2);
    let get = raw_request(Method::GET, url, &bob_s, None).await;
    assert_eq!(get.status, 404);
    let del = raw_request(Method::DELETE, url, &bob_s, None).await;
    assert_eq!(del.status, 404);
    assert_eq!(bed.upstream.calls("echo"), before);
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_hijack_attempts_total{kind="session"}"#)
            .await,
        3.0
    );

    // A made-up session id is not known either.
    let mut forged = alice.clone();
    forged.extend(legacy_headers(version, Some("not-a-session")));
    assert_eq!(raw_post(url, &forged, &call).await.status, 404);

    // alice's session still works, and ends with her DELETE.
    assert_eq!(raw_post(url, &alice_s, &call).await.status, 200);
    let del = raw_request(Method::DELETE, url, &alice_s, None).await;
    assert!(del.status < 300, "{} {}", del.status, del.body);
    assert_eq!(raw_post(url, &alice_s, &call).await.status, 404);
    assert_eq!(bed.sentinel.metric("mcp_sentinel_bindings").await, 0.0);
}

#[tokio::test]
async fn rmcp_clients_of_two_principals_keep_to_their_own_sessions() {
    let bed = keyed("").await;
    let era = Era::all().into_iter().next().unwrap();
    let alice = connect(&bed.sentinel.url, &era, &ClientOptions::bearer(ALICE_KEY))
        .await
        .unwrap();
    let bob = connect(&bed.sentinel.url, &era, &ClientOptions::bearer(BOB_KEY))
        .await
        .unwrap();
    for (client, who) in [(&alice, "alice"), (&bob, "bob")] {
        client
            .call_tool(tool_call("echo", json!({"text": who})))
            .await
            .unwrap();
        let seen = bed.upstream.last_request("tools/call").unwrap();
        assert_eq!(seen.header("x-mcp-sentinel-subject").as_deref(), Some(who));
    }
    assert_eq!(bed.sentinel.metric("mcp_sentinel_bindings").await, 2.0);
    let (session, _) = raw_legacy_session(&bed.upstream.url(), "2025-11-25").await;
    assert!(session.is_some(), "the upstream makes sessions");
}
