//! Rate limiting end to end with the memory backend: the exact 429, budgets keyed by caller and
//! tool, the strictest rule deciding, batches refused whole, concurrency limits under parallel
//! slow calls (slots held to the end of streamed answers and returned when the client leaves),
//! and rmcp clients reading the 429.

mod common;

use std::time::{Duration, Instant};

use common::client::{ClientOptions, Era, connect, raw_send, tool_call};
use common::metrics::{denials, ratelimited};
use common::ratelimit::{
    ALICE, BOB, CAROL, add, assert_limited, call, call_body, echo, keyed, keyed_bed, post,
};
use common::sentinel::TempDir;
use common::upstream::{UpstreamConfig, spawn_upstream_with};
use rmcp::model::ProtocolVersion;
use rmcp::transport::streamable_http_client::{HttpStatusError, StreamableHttpError};
use serde_json::{Value, json};

#[tokio::test]
async fn over_the_budget_answers_429_with_the_wait_in_headers_and_body() {
    let bed = keyed_bed("rl-answer", "  rules:\n    - name: per-caller\n      match: {methods: [tools/call]}\n      limits: [{rate: 3/minute}]\n      key: [subject, tool]\n").await;
    let (upstream, s) = (&bed.upstream, &bed.sentinel);
    for id in 1..=3 {
        let r = echo(&s.url, ALICE, id).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // One every 20 s after the burst of 3: the fourth waits (just under) 20 s.
    let r = echo(&s.url, ALICE, 4).await;
    assert_limited(&r, json!(4), "per-caller", 3, 60, 20);
    // A string id comes back as sent.
    let r = post(
        &s.url,
        ALICE,
        &json!({"jsonrpc":"2.0","id":"x-9","method":"tools/call",
        "params":{"name":"echo","arguments":{"text":"hi"}}}),
    )
    .await;
    assert_limited(&r, json!("x-9"), "per-caller", 3, 60, 20);
    // Methods the rule does not match, and notifications, are never limited.
    let list = post(
        &s.url,
        ALICE,
        &json!({"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}),
    )
    .await;
    assert_eq!(list.status, 200);
    let note = post(
        &s.url,
        ALICE,
        &json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}),
    )
    .await;
    assert_eq!(note.status, 202, "{}", note.body);
    assert_eq!(
        upstream.calls("echo"),
        3,
        "refused calls never reach the upstream"
    );

    assert_eq!(s.metric(&ratelimited("allowed", "per-caller")).await, 3.0);
    assert_eq!(s.metric(&ratelimited("limited", "per-caller")).await, 2.0);
    assert_eq!(s.metric(&denials("ratelimit", "rate_limited")).await, 2.0);
    let rejected = s
        .metric_eventually(
            r#"mcp_sentinel_requests_total{method="tools/call",outcome="rejected"}"#,
            2.0,
        )
        .await;
    assert_eq!(rejected, 2.0);
}

#[tokio::test]
async fn keys_separate_callers_and_tools() {
    let bed = keyed_bed(
        "rl-keys",
        "  rules:
    - name: per-tool
      limits: [{rate: 2/hour}]
      key: [subject, tool]
    - name: dev-group
      match: {groups: [dev]}
      limits: [{rate: 5/hour}]
      key: [group]
",
    )
    .await;
    let (upstream, s) = (&bed.upstream, &bed.sentinel);
    // Alice: 2 echo and 2 add, each tool its own budget.
    for id in 0..2 {
        assert_eq!(echo(&s.url, ALICE, id).await.status, 200);
        assert_eq!(add(&s.url, ALICE, id).await.status, 200);
    }
    assert_limited(
        &echo(&s.url, ALICE, 7).await,
        json!(7),
        "per-tool",
        2,
        3600,
        1800,
    );
    assert_limited(
        &add(&s.url, ALICE, 8).await,
        json!(8),
        "per-tool",
        2,
        3600,
        1800,
    );
    // Bob has budgets of his own per tool, but shares dev's 5 with alice: 4 are gone, the
    // refusals above took nothing.
    assert_eq!(echo(&s.url, BOB, 1).await.status, 200);
    let r = add(&s.url, BOB, 2).await;
    assert_limited(&r, json!(2), "dev-group", 5, 3600, 720);
    // Carol is in no dev group: only her per-tool budget applies.
    for id in 0..2 {
        assert_eq!(echo(&s.url, CAROL, id).await.status, 200);
    }
    assert_limited(
        &echo(&s.url, CAROL, 3).await,
        json!(3),
        "per-tool",
        2,
        3600,
        1800,
    );
    assert_eq!(upstream.calls("echo"), 5);
    assert_eq!(upstream.calls("add"), 2);
    assert_eq!(s.metric(&ratelimited("limited", "dev-group")).await, 1.0);
}

#[tokio::test]
async fn batches_are_checked_element_by_element_and_refused_whole() {
    let bed = keyed_bed("rl-batch", "  rules:\n    - name: calls\n      match: {methods: [tools/call]}\n      limits: [{rate: 3/minute}]\n").await;
    let (upstream, s) = (&bed.upstream, &bed.sentinel);
    let batch = |ids: &[i64]| {
        Value::Array(
            ids.iter()
                .map(|id| call_body(*id, "echo", json!({"text": "b"})))
                .chain([json!({"jsonrpc":"2.0","id":99,"method":"ping"})])
                .collect(),
        )
    };
    let post_2025_03 = |body: Value| {
        let url = s.url.clone();
        async move {
            let headers = common::keys::pairs(&[
                ("X-API-Key", ALICE),
                ("MCP-Protocol-Version", "2025-03-26"),
            ]);
            common::client::raw_post(&url, &headers, &body).await
        }
    };
    // The sentinel admits the first batch (rmcp itself refuses batches: 415, passed through).
    let r = post_2025_03(batch(&[1, 2])).await;
    assert_eq!(r.status, 415, "{}", r.body);
    let forwarded = |u: &common::upstream::Upstream| {
        u.mcp_requests()
            .iter()
            .filter(|r| r.json().is_some_and(|v| v.is_array()))
            .count()
    };
    assert_eq!(forwarded(upstream), 1);
    // Two more do not fit in the one left: the whole batch is refused (id null: a batch has
    // no single id), and takes nothing.
    let r = post_2025_03(batch(&[3, 4])).await;
    assert_limited(&r, Value::Null, "calls", 3, 60, 20);
    assert_eq!(forwarded(upstream), 1);
    assert_eq!(echo(&s.url, ALICE, 5).await.status, 200);
    assert_limited(&echo(&s.url, ALICE, 6).await, json!(6), "calls", 3, 60, 20);
    assert_eq!(upstream.calls("echo"), 1);
}

#[tokio::test]
async fn the_concurrency_limit_holds_under_parallel_slow_calls() {
    let bed = keyed_bed(
        "rl-conc",
        "  rules:\n    - name: slow-tools\n      match: {tools: [slow]}\n      concurrency: 2\n",
    )
    .await;
    let (upstream, s) = (&bed.upstream, &bed.sentinel);
    let slow = |key: &'static str, id: i64| {
        let url = s.url.clone();
        async move { call(&url, key, id, "slow", json!({"steps": 1, "delay_ms": 600})).await }
    };
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|i| tokio::spawn(slow(if i < 5 { ALICE } else { BOB }, i)))
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    let ok = answers[..5].iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 2, "two of alice's five run at once");
    for r in answers[..5].iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        assert_eq!(
            r.header("ratelimit-policy").as_deref(),
            Some("\"slow-tools\";q=2;qu=\"concurrent-requests\"")
        );
        assert_eq!(r.header("ratelimit").as_deref(), Some("\"slow-tools\";r=0"));
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let id = body["id"].clone();
        assert_eq!(
            body,
            json!({"jsonrpc":"2.0","id":id,"error":{"code":429,
                "message":"Too many concurrent tool calls",
                "data":{"retryAfter":1,"policy":"slow-tools"}}})
        );
    }
    assert_eq!(answers[5].status, 200, "bob's slots are his own");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slots came back with the answers; other tools were never counted.
    assert_eq!(slow(ALICE, 10).await.status, 200);
    assert_eq!(echo(&s.url, ALICE, 11).await.status, 200);
    assert_eq!(upstream.calls("slow"), 4);
    assert_eq!(
        s.metric(&ratelimited("concurrency_limited", "slow-tools"))
            .await,
        3.0
    );
}

#[tokio::test]
async fn streamed_answers_hold_their_slot_until_the_end_or_the_client_leaves() {
    let bed = keyed_bed(
        "rl-stream",
        "  rules:\n    - name: one-at-a-time\n      match: {tools: [slow]}\n      concurrency: 1\n",
    )
    .await;
    let s = &bed.sentinel;
    // A progress token makes the answer an SSE stream: 40 steps of 100 ms.
    let streamed = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow",
        "arguments":{"steps":40,"delay_ms":100},"_meta":{"progressToken":"p"}}});
    let headers =
        common::keys::pairs(&[("X-API-Key", ALICE), ("MCP-Protocol-Version", "2025-06-18")]);
    let resp = raw_send(reqwest::Method::POST, &s.url, &headers, Some(&streamed)).await;
    assert_eq!(resp.status(), 200);
    let mut resp = resp;
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk())
        .await
        .expect("the stream starts")
        .unwrap();
    assert!(first.is_some());
    // The response head is long gone, but the stream runs: the slot is still taken.
    let quick = json!({"steps": 0, "delay_ms": 0});
    let r = call(&s.url, ALICE, 2, "slow", quick.clone()).await;
    assert_eq!(r.status, 429, "{}", r.body);
    // The client goes away: its slot comes back without waiting for the tool.
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = call(&s.url, ALICE, 3, "slow", quick.clone()).await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(
            Instant::now() < deadline,
            "the slot was not returned on disconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A stream read to its end returns the slot too.
    let short = json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"slow",
        "arguments":{"steps":3,"delay_ms":20},"_meta":{"progressToken":"q"}}});
    let r = post(&s.url, ALICE, &short).await;
    assert!(r.is_sse(), "{}", r.content_type());
    assert_eq!(
        r.final_message().unwrap()["result"]["content"][0]["text"],
        "done after 3 steps"
    );
    assert_eq!(call(&s.url, ALICE, 5, "slow", quick).await.status, 200);
}

/// The HTTP status (and `Retry-After`) rmcp's client reports for a refused request.
fn http_status(e: &rmcp::ServiceError) -> Option<&HttpStatusError> {
    let rmcp::ServiceError::TransportSend(t) = e else {
        return None;
    };
    match t
        .error
        .downcast_ref::<StreamableHttpError<reqwest::Error>>()?
    {
        StreamableHttpError::HttpStatus(h) => Some(h),
        _ => None,
    }
}

#[tokio::test]
async fn rmcp_clients_read_the_429_in_both_eras() {
    let upstream = spawn_upstream_with(UpstreamConfig::default()).await;
    let dir = TempDir::new("rl-rmcp");
    let s = keyed(
        &upstream.url(),
        "  rules:\n    - name: tool-calls\n      match: {methods: [tools/call]}\n      limits: [{rate: 2/minute}]\n",
        &dir,
    )
    .await;
    for (era, key) in [
        (Era::Legacy(ProtocolVersion::V_2025_11_25), ALICE),
        (Era::Modern, BOB),
    ] {
        let options = ClientOptions::default().header("X-API-Key", key);
        let client = connect(&s.url, &era, &options).await.expect("connects");
        for _ in 0..2 {
            client
                .call_tool(tool_call("echo", json!({"text": "ok"})))
                .await
                .expect("within the budget");
        }
        let err = client
            .call_tool(tool_call("echo", json!({"text": "one too many"})))
            .await
            .expect_err("over the budget");
        let status = http_status(&err).unwrap_or_else(|| panic!("{}: {err:?}", era.label()));
        assert_eq!(status.status, 429, "{}", era.label());
        assert_eq!(status.retry_after.as_deref(), Some("30"), "{}", era.label());
        // Other methods still work in the same session.
        client
            .list_tools(None)
            .await
            .expect("tools/list is not limited");
        let _ = client.cancel().await;
    }
    assert_eq!(upstream.calls("echo"), 4);
}
