//! Authorization end to end, with rmcp clients of different identities in every protocol
//! revision: filtered lists (JSON and SSE), the configured denial answers, insufficient scope,
//! batches, and server→client requests blocked per caller. The upstream counts what reaches it.

mod common;

use std::collections::BTreeSet;

use common::bed::Bed;
use common::client::{
    ClientOptions, Era, connect, legacy_headers, modern_headers, modern_request, raw_post,
    tool_call,
};
use common::keys::{pairs, write_keys};
use common::upstream::UpstreamConfig;
use serde_json::{Value, json};

const ALICE: &str = "ak_alice_staff_0001";
const BOB: &str = "ak_bob_guest_0002";
const CAROL: &str = "ak_carol_staff_scoped_0003";

const POLICY: &str = r#"
policy:
  default: deny
  answer: {ANSWER}
  rules:
    - {name: staff-tools, effect: allow, groups: [staff], tools: [echo, add, roots, roots_mrtr, slow]}
    - {name: guest-tools, effect: allow, groups: [guests], tools: [echo, roots, roots_mrtr]}
    - name: guest-small-sums
      effect: allow
      groups: [guests]
      tools: [add]
      arguments: [{path: /a, range: {max: 10}}]
    - name: delete-needs-scope
      effect: allow
      groups: [staff]
      scopes: ["files:delete"]
      tools: [delete_file]
    - name: docs
      effect: allow
      groups: [staff]
      resources: ["file:///docs/*", "file:///logs/{day}.log"]
    - {name: greet, effect: allow, groups: [staff, guests], prompts: [greet]}
    - {name: no-roots-for-guests, effect: deny, groups: [guests], methods: [roots/list]}
"#;

async fn bed(answer: &str) -> Bed {
    Bed::start("policy", UpstreamConfig::default(), |dir| {
        let keys = dir.path("keys.yaml");
        write_keys(
            &keys,
            &[(ALICE, "alice", &["staff"]), (BOB, "bob", &["guests"])],
        );
        // Carol's key carries a scope: API-key files list scopes too.
        let mut text = std::fs::read_to_string(&keys).unwrap();
        text.push_str(&format!(
            "  - sha256: {}\n    subject: carol\n    groups: [staff]\n    scopes: [\"files:delete\"]\n",
            common::keys::sha256_hex(CAROL)
        ));
        std::fs::write(&keys, text).unwrap();
        format!(
            "auth:\n  api_keys:\n    file: {}\n  scopes_supported: [\"files:delete\"]\n{}",
            keys.display(),
            POLICY.replace("{ANSWER}", answer)
        )
    })
    .await
}

fn key(k: &str) -> ClientOptions {
    ClientOptions::default().header("X-API-Key", k)
}

fn names<T>(items: &[T], f: impl Fn(&T) -> String) -> BTreeSet<String> {
    items.iter().map(f).collect()
}

async fn tools(c: &common::client::McpClient) -> BTreeSet<String> {
    let t = c.list_all_tools().await.unwrap();
    names(&t, |t| t.name.to_string())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn each_identity_sees_only_what_it_may_use_in_every_era() {
    let bed = bed("unknown").await;
    for era in Era::all() {
        let label = era.label();
        let alice = connect(&bed.sentinel.url, &era, &key(ALICE)).await.unwrap();
        let bob = connect(&bed.sentinel.url, &era, &key(BOB)).await.unwrap();
        let carol = connect(&bed.sentinel.url, &era, &key(CAROL)).await.unwrap();

        assert_eq!(
            tools(&alice).await,
            set(&["echo", "add", "roots", "roots_mrtr", "slow"]),
            "{label}"
        );
        // add is listed for bob: its argument condition can be met.
        assert_eq!(
            tools(&bob).await,
            set(&["echo", "add", "roots", "roots_mrtr"]),
            "{label}"
        );
        assert_eq!(
            tools(&carol).await,
            set(&["echo", "add", "roots", "roots_mrtr", "slow", "delete_file"]),
            "{label}"
        );

        let res = alice.list_all_resources().await.unwrap();
        assert_eq!(
            names(&res, |r| r.uri.clone()),
            set(&["file:///docs/readme.md", "file:///docs/café.md"]),
            "{label}"
        );
        assert!(
            bob.list_all_resources().await.unwrap().is_empty(),
            "{label}"
        );
        let templates = alice.list_all_resource_templates().await.unwrap();
        assert_eq!(
            names(&templates, |t| t.uri_template.clone()),
            set(&["file:///logs/{day}.log"]),
            "{label}"
        );
        assert!(bob.list_all_resource_templates().await.unwrap().is_empty());
        let prompts = bob.list_all_prompts().await.unwrap();
        assert_eq!(
            names(&prompts, |p| p.name.clone()),
            set(&["greet"]),
            "{label}"
        );

        // What is listed works; what is hidden fails like something that does not exist.
        let ok = alice
            .call_tool(tool_call("echo", json!({"text": "hi"})))
            .await
            .unwrap();
        assert_eq!(ok.content[0].as_text().unwrap().text, "hi", "{label}");
        let small = bob
            .call_tool(tool_call("add", json!({"a": 2, "b": 3})))
            .await;
        assert!(small.is_ok(), "{label}: {small:?}");
        for (tool, args) in [
            ("delete_file", json!({"path": "/x"})),
            ("no_such_tool", json!({})),
            ("add", json!({"a": 50, "b": 1})),
        ] {
            let err = bob
                .call_tool(tool_call(tool, args))
                .await
                .expect_err("denied");
            let text = format!("{err:?}");
            assert!(
                text.contains("-32602") && text.contains("tool not found"),
                "{label} {tool}: {text}"
            );
        }
        let err = bob
            .read_resource(rmcp::model::ReadResourceRequestParams::new(
                "file:///docs/readme.md",
            ))
            .await
            .expect_err("denied");
        assert!(format!("{err:?}").contains("Resource not found"), "{label}");
        for c in [alice, bob, carol] {
            let _ = c.cancel().await;
        }
    }
    assert_eq!(bed.upstream.calls("delete_file"), 0);
    assert_eq!(bed.upstream.calls("no_such_tool"), 0);
    assert_eq!(bed.upstream.reads("file:///docs/readme.md"), 0);
    let n = Era::all().len() as f64;
    assert_eq!(
        bed.upstream.calls("add") as f64,
        n,
        "only bob's small sums ran"
    );
    let m = &bed.sentinel;
    assert_eq!(
        m.metric(r#"mcp_sentinel_authz_decisions_total{decision="deny",reason="default",tool="delete_file"}"#)
            .await,
        n
    );
    assert_eq!(
        m.metric(
            r#"mcp_sentinel_authz_decisions_total{decision="deny",reason="default",tool="other"}"#
        )
        .await,
        n
    );
    assert!(
        m.metric(r#"mcp_sentinel_list_items_hidden_total{list="tools"}"#)
            .await
            >= 3.0 * n
    );
}

/// The exact answers on the wire: legacy 200 with -32602 / -32002, modern 200 with -32602 and
/// 404 with -32601 for a denied method; the hidden tool and the missing one are the same.
#[tokio::test]
async fn denial_answers_on_the_wire() {
    let bed = bed("unknown").await;
    let url = &bed.sentinel.url;
    let h = session_headers(url, BOB).await;
    let call = |id: i64, name: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": {"path": "/etc"}}})
    };
    let hidden = raw_post(url, &h, &call(7, "delete_file")).await;
    let missing = raw_post(url, &h, &call(7, "nope")).await;
    assert_eq!((hidden.status, missing.status), (200, 200));
    assert_eq!(hidden.body, missing.body, "a hidden tool looks missing");
    assert_eq!(
        serde_json::from_str::<Value>(&hidden.body).unwrap(),
        json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "tool not found"}})
    );
    let read = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "id": "r", "method": "resources/read",
                "params": {"uri": "file:///secret/keys.txt"}}),
    )
    .await;
    assert_eq!(read.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&read.body).unwrap()["error"],
        json!({"code": -32002, "message": "Resource not found"})
    );
    let prompt = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "prompts/get",
                "params": {"name": "admin_prompt"}}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&prompt.body).unwrap()["error"],
        json!({"code": -32602, "message": "prompt 'admin_prompt' not found"})
    );
    // A denied notification gets a status and no body.
    let note = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "method": "resources/subscribe", "params": {"uri": "file:///secret/keys.txt"}}),
    )
    .await;
    assert_eq!(note.status, 403);
    assert!(note.body.is_empty());

    // Modern era.
    let mut mh = modern_headers("tools/call", Some("delete_file"));
    mh.extend(pairs(&[("X-API-Key", BOB)]));
    let body = modern_request(
        9,
        "tools/call",
        json!({"name": "delete_file", "arguments": {"path": "/x"}}),
    );
    let r = raw_post(url, &mh, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"],
        json!({"code": -32602, "message": "tool not found"})
    );
    let mut mh = modern_headers("resources/read", Some("file:///secret/keys.txt"));
    mh.extend(pairs(&[("X-API-Key", BOB)]));
    let r = raw_post(
        url,
        &mh,
        &modern_request(
            10,
            "resources/read",
            json!({"uri": "file:///secret/keys.txt"}),
        ),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"],
        -32602
    );
    let mut mh = modern_headers("completion/complete", None);
    mh.extend(pairs(&[("X-API-Key", BOB)]));
    let r = raw_post(
        url,
        &mh,
        &modern_request(
            11,
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "admin_prompt"},
                   "argument": {"name": "x", "value": ""}}),
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"],
        -32602
    );
    assert_eq!(bed.upstream.calls("delete_file"), 0);
    assert_eq!(bed.upstream.reads("file:///secret/keys.txt"), 0);
    assert_eq!(bed.upstream.prompt_gets("admin_prompt"), 0);
}

/// The headers of requests in a fresh legacy session of `key`'s.
async fn session_headers(url: &str, key: &str) -> Vec<(String, String)> {
    let (session, _) = raw_legacy_session_as(url, key).await;
    let mut h = legacy_headers("2025-06-18", session.as_deref());
    h.extend(pairs(&[("X-API-Key", key)]));
    h
}

/// `initialize` as `key`, returning the session id.
async fn raw_legacy_session_as(url: &str, key: &str) -> (Option<String>, Value) {
    let mut h = legacy_headers("2025-06-18", None);
    h.extend(pairs(&[("X-API-Key", key)]));
    let init = common::keys::init_body();
    let r = raw_post(url, &h, &init).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let session = r.header("mcp-session-id");
    let mut h = legacy_headers("2025-06-18", session.as_deref());
    h.extend(pairs(&[("X-API-Key", key)]));
    let done = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    assert_eq!(done.status, 202);
    (session, r.final_message().unwrap_or(Value::Null))
}

#[tokio::test]
async fn insufficient_scope_is_a_403_challenge_naming_the_scope() {
    let bed = bed("unknown").await;
    let url = &bed.sentinel.url;
    for (key, expect) in [(ALICE, 403), (CAROL, 200)] {
        let h = session_headers(url, key).await;
        let r = raw_post(
            url,
            &h,
            &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                    "params": {"name": "delete_file", "arguments": {"path": "/tmp/x"}}}),
        )
        .await;
        assert_eq!(r.status, expect, "{key}: {}", r.body);
        if expect == 403 {
            let addr = url.trim_start_matches("http://").trim_end_matches("/mcp");
            assert_eq!(
                r.header("www-authenticate").unwrap(),
                format!(
                    "Bearer error=\"insufficient_scope\", scope=\"files:delete\", resource_metadata=\"http://{addr}/.well-known/oauth-protected-resource/mcp\""
                )
            );
            assert_eq!(
                serde_json::from_str::<Value>(&r.body).unwrap(),
                json!({"jsonrpc": "2.0", "id": 4, "error": {"code": -32600, "message": "Insufficient scope"}})
            );
        }
    }
    assert_eq!(
        bed.upstream.calls("delete_file"),
        1,
        "only carol's call ran"
    );
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_authz_decisions_total{decision="deny",reason="insufficient_scope",tool="delete_file"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn forbidden_answers_and_batches_denied_whole() {
    let bed = bed("forbidden").await;
    let url = &bed.sentinel.url;
    let h = session_headers(url, BOB).await;
    let r = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "delete_file", "arguments": {"path": "/x"}}}),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32600, "message": "Forbidden"}})
    );
    assert!(r.header("www-authenticate").is_none());

    // A 2025-03-26 batch: one denied element denies the whole batch; nothing runs.
    let mut h = vec![
        ("MCP-Protocol-Version".to_string(), "2025-03-26".to_string()),
        ("X-API-Key".to_string(), BOB.to_string()),
    ];
    let mut init = common::keys::init_body();
    init["params"]["protocolVersion"] = json!("2025-03-26");
    let init = raw_post(url, &h, &init).await;
    assert_eq!(init.status, 200, "{}", init.body);
    let sid = init.header("mcp-session-id").unwrap();
    h.push(("Mcp-Session-Id".into(), sid));
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "a"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_file", "arguments": {"path": "/"}}}
    ]);
    let r = raw_post(url, &h, &batch).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap(),
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "Forbidden"}})
    );
    assert_eq!(bed.upstream.calls("echo"), 0);
    assert_eq!(bed.upstream.calls("delete_file"), 0);
}

/// The upstream answers a legacy `tools/list` over SSE: the filtered stream is still valid SSE,
/// event ids and priming events untouched; modern lists come back `cacheScope: "private"`.
#[tokio::test]
async fn filtered_lists_stay_valid_sse_and_modern_lists_are_private() {
    let bed = bed("unknown").await;
    let url = &bed.sentinel.url;
    let h = session_headers(url, BOB).await;
    let r = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.is_sse(),
        "the upstream answers lists over SSE in a session"
    );
    assert!(r.header("content-length").is_none());
    let events = r.sse_events();
    let with_data: Vec<_> = events.iter().filter(|e| !e.data.is_empty()).collect();
    assert_eq!(with_data.len(), 1, "{:?}", r.body);
    assert!(with_data[0].id.is_some(), "the event keeps its id");
    let msg: Value = serde_json::from_str(&with_data[0].data).unwrap();
    assert_eq!(msg["id"], 5);
    let tools: BTreeSet<String> = msg["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tools, set(&["echo", "add", "roots", "roots_mrtr"]));
    assert!(
        msg["result"].get("cacheScope").is_none(),
        "legacy lists are unmarked"
    );

    let mut mh = modern_headers("tools/list", None);
    mh.extend(pairs(&[("X-API-Key", BOB)]));
    let r = raw_post(url, &mh, &modern_request(6, "tools/list", json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let msg = r.final_message().unwrap();
    assert_eq!(msg["result"]["cacheScope"], "private");
    assert_eq!(msg["result"]["tools"].as_array().unwrap().len(), 4);
}

/// `roots/list` from the upstream reaches alice's client, not bob's: bob's is answered to the
/// upstream with an error, so the tool call finishes instead of hanging.
#[tokio::test]
async fn server_to_client_requests_are_blocked_per_caller() {
    let bed = bed("unknown").await;
    for era in Era::all()
        .into_iter()
        .filter(|e| matches!(e, Era::Legacy(_)))
    {
        let label = era.label();
        let alice = connect(&bed.sentinel.url, &era, &key(ALICE)).await.unwrap();
        let bob = connect(&bed.sentinel.url, &era, &key(BOB)).await.unwrap();
        let a = alice
            .call_tool(tool_call("roots", json!({})))
            .await
            .unwrap();
        assert_eq!(a.content[0].as_text().unwrap().text, "roots: 1", "{label}");
        assert_eq!(alice.service().roots_asked(), 1, "{label}");
        let b = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            bob.call_tool(tool_call("roots", json!({}))),
        )
        .await
        .expect("the blocked request does not hang the call")
        .unwrap();
        let text = &b.content[0].as_text().unwrap().text;
        assert!(text.starts_with("roots refused"), "{label}: {text}");
        assert!(
            text.contains("-32601") || text.contains("Method not found"),
            "{label}: {text}"
        );
        assert_eq!(bob.service().roots_asked(), 0, "{label}: bob never saw it");
        let _ = alice.cancel().await;
        let _ = bob.cancel().await;
    }
    let n = Era::all()
        .iter()
        .filter(|e| matches!(e, Era::Legacy(_)))
        .count() as f64;
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_server_requests_blocked_total{method="roots/list"}"#)
            .await,
        n
    );
}

/// 2026-07-28: the server asks for roots inside its result (`input_required`). Alice's client
/// answers and retries; bob's call ends with the error a client without the capability causes,
/// and his client never sees the request.
#[tokio::test]
async fn modern_input_requests_are_blocked_per_caller() {
    let bed = bed("unknown").await;
    let era = Era::Modern;
    let alice = connect(&bed.sentinel.url, &era, &key(ALICE)).await.unwrap();
    let bob = connect(&bed.sentinel.url, &era, &key(BOB)).await.unwrap();
    let a = alice
        .call_tool(tool_call("roots_mrtr", json!({})))
        .await
        .unwrap();
    assert_eq!(a.content[0].as_text().unwrap().text, "roots: 1");
    assert_eq!(alice.service().roots_asked(), 1);
    let err = bob
        .call_tool(tool_call("roots_mrtr", json!({})))
        .await
        .expect_err("blocked");
    let text = format!("{err:?}");
    assert!(text.contains("-32021"), "{text}");
    assert_eq!(bob.service().roots_asked(), 0, "bob's client never saw it");
    assert_eq!(
        bed.upstream.calls("roots_mrtr"),
        3,
        "alice's two rounds, bob's one"
    );
    assert_eq!(
        bed.sentinel
            .metric(r#"mcp_sentinel_server_requests_blocked_total{method="roots/list"}"#)
            .await,
        1.0
    );
    let _ = alice.cancel().await;
    let _ = bob.cancel().await;
}

/// What a caller cannot use does not leak through the other shapes an answer can take: a
/// 2025-03-26 batch holding a list, a compressed answer, or a URI spelled another way; a body
/// whose arguments the policy cannot read is refused, and so is a client response outside the
/// caller's session.
#[tokio::test]
async fn other_shapes_of_a_request_do_not_bypass_the_policy() {
    let bed = bed("unknown").await;
    let url = &bed.sentinel.url;
    // An id the upstream may echo in another spelling (1.0 → 1), and a client asking for a
    // compressed answer: the list is filtered all the same.
    let mut h = vec![
        ("MCP-Protocol-Version".to_string(), "2025-03-26".to_string()),
        ("X-API-Key".to_string(), BOB.to_string()),
        ("Accept-Encoding".to_string(), "gzip, br".to_string()),
    ];
    let mut init = common::keys::init_body();
    init["params"]["protocolVersion"] = json!("2025-03-26");
    let init = raw_post(url, &h, &init).await;
    h.push((
        "Mcp-Session-Id".into(),
        init.header("mcp-session-id").unwrap(),
    ));
    let r = raw_post(
        url,
        &h,
        &json!({"jsonrpc": "2.0", "id": 1.0, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-encoding").is_none());
    let msgs: Vec<Value> = r
        .messages()
        .into_iter()
        .flat_map(|m| match m {
            Value::Array(items) => items,
            one => vec![one],
        })
        .collect();
    let tools = msgs
        .iter()
        .find_map(|m| m["result"]["tools"].as_array().cloned())
        .expect("the tools/list answer");
    let names: BTreeSet<String> = tools
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, set(&["echo", "add", "roots", "roots_mrtr"]));
    let seen = bed.upstream.last_request("tools/list").unwrap();
    assert_eq!(
        seen.header("accept-encoding"),
        None,
        "the upstream is asked for an uncompressed answer the policy can read"
    );

    // Resource URIs are decided in normal form.
    let h = session_headers(url, BOB).await;
    for uri in [
        "file:///docs/../secret/keys.txt",
        "FILE:///secret/keys.txt",
        "file:///%73ecret/keys.txt",
    ] {
        let r = raw_post(
            url,
            &h,
            &json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": uri}}),
        )
        .await;
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"],
            -32002,
            "{uri}"
        );
    }
    let ah = session_headers(url, ALICE).await;
    let r = raw_post(
        url,
        &ah,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read",
                "params": {"uri": "file:///docs/../docs/./readme.md"}}),
    )
    .await;
    // Allowed (its normal form is under file:///docs/) and forwarded as sent.
    assert_eq!(r.status, 200);
    assert_eq!(bed.upstream.reads("file:///docs/../docs/./readme.md"), 1);

    // Bodies that upstream parsers read differently are refused before any decision: a
    // duplicated key, and an argument spelled like one the policy's condition names (`/a`) in
    // another case, which a Go handler decoding into a struct reads as `a`.
    let ambiguous = "Invalid request: it can be read more than one way";
    for (id, body) in [
        (
            Value::Null,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2},"arguments":{"a":50,"b":2}}}"#,
        ),
        (
            json!(5),
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"add","arguments":{"A":50,"b":2}}}"#,
        ),
    ] {
        let mut req = common::client::http_client()
            .post(url.as_str())
            .header("Content-Type", "application/json")
            .header("Accept", "application/json, text/event-stream");
        for (k, v) in &h {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": ambiguous}}),
            "{body}"
        );
    }
    assert_eq!(bed.upstream.calls("add"), 0);

    // A client response outside any session of the caller's.
    let mut nh = legacy_headers("2025-06-18", None);
    nh.extend(pairs(&[("X-API-Key", BOB)]));
    let r = raw_post(url, &nh, &json!({"jsonrpc": "2.0", "id": 9, "result": {}})).await;
    assert_eq!(r.status, 403);
    assert!(r.body.is_empty());
    assert_eq!(bed.upstream.reads("file:///secret/keys.txt"), 0);
}

/// One glob matcher: the same patterns match the same names as a policy rule and as a
/// rate-limit rule (rate-limit rules once read `?` as itself), for tools and subjects alike.
#[test]
fn policy_and_rate_limit_globs_match_the_same_names() {
    use mcp_sentinel::config::Config;
    use mcp_sentinel::identity::{AuthMethod, Principal};
    use mcp_sentinel::policy::{Args, Effect, OpTarget, Operation, Policy};
    use mcp_sentinel::ratelimit::rules::{Call, Rule};

    let names = [
        "get_a",
        "get_ü",
        "get_",
        "get_ab",
        "get",
        "xget_a",
        "search",
        "search_docs",
        "a/b",
        "a/b/c",
        "",
        "a?c",
        "abc",
    ];
    for pattern in [
        "get_?", "get_*", "?et_?", "search*", "*/?", "a?c", "*", "??*?",
    ] {
        let policy = Policy::from_yaml(
            &format!(
                "default: deny\nrules:\n  - name: r\n    effect: allow\n    \
                 subjects: [{pattern:?}]\n    tools: [{pattern:?}]\n"
            ),
            "p.yaml",
        )
        .unwrap();
        let config = Config::from_yaml(
            &format!(
                "auth: {{anonymous: allow}}\npolicy: {{default: allow}}\nrate_limits:\n  rules:\n    \
                 - name: r\n      limits: [{{rate: 10/minute}}]\n      \
                 match: {{subjects: [{pattern:?}], tools: [{pattern:?}]}}\n"
            ),
            "rl.yaml",
        )
        .unwrap();
        let rule = Rule::new(&config.rate_limits.unwrap().rules[0]);
        for name in names {
            // The same name as the tool (the caller's subject matches) and as the subject.
            let fixed = Principal::new("get_a", AuthMethod::ApiKey);
            let named = Principal::new(name, AuthMethod::ApiKey);
            for (who, tool) in [(&fixed, name), (&named, "get_a")] {
                let op = Operation {
                    method: "tools/call",
                    target: OpTarget::Tool(tool),
                    args: Args::None,
                };
                let by_policy = policy.decide(who, &op).effect == Effect::Allow;
                let call = Call {
                    method: "tools/call",
                    tool: Some(tool),
                };
                let by_rate_limit = rule.matches_principal(who) && rule.matches_call(&call);
                assert_eq!(
                    by_policy, by_rate_limit,
                    "{pattern:?} on subject {:?}, tool {tool:?}",
                    who.subject
                );
            }
        }
        // And the answer is the glob's (not, say, always false on both sides).
        let expected = mcp_sentinel::glob::is_match(pattern, "get_a");
        let op = Operation {
            method: "tools/call",
            target: OpTarget::Tool("get_a"),
            args: Args::None,
        };
        let p = Principal::new("get_a", AuthMethod::ApiKey);
        assert_eq!(
            policy.decide(&p, &op).effect == Effect::Allow,
            expected,
            "{pattern:?}"
        );
    }
}
