//! The metrics reader of the test bed on its own: it reads a series of a family the scrape has,
//! refuses a family the scrape does not have (a renamed metric, a typo), and reads an unseen
//! label set of a present family as a counter that has not counted yet.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::metrics::{counter_before, metric_value, try_metric_value};
use common::sentinel;
use common::upstream::spawn_upstream;

const SCRAPE: &str = r#"# HELP mcp_sentinel_requests_total Requests
# TYPE mcp_sentinel_requests_total counter
mcp_sentinel_requests_total{method="ping",outcome="forwarded"} 3
mcp_sentinel_requests_total{method="tools/call",outcome="rejected"} 1
# HELP mcp_sentinel_ready 1 while ready
# TYPE mcp_sentinel_ready gauge
mcp_sentinel_ready 1
# HELP mcp_sentinel_request_duration_seconds Request duration
# TYPE mcp_sentinel_request_duration_seconds histogram
mcp_sentinel_request_duration_seconds_bucket{method="ping",le="+Inf"} 3
mcp_sentinel_request_duration_seconds_sum{method="ping"} 0.25
mcp_sentinel_request_duration_seconds_count{method="ping"} 3
# HELP mcp_sentinel_build_info Build information
# TYPE mcp_sentinel_build_info gauge
mcp_sentinel_build_info{version="0.1.0 {dev}, \"x\""} 1
"#;

fn panic_message(f: impl FnOnce() -> f64) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("the read panics");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_series_of_a_present_family_is_read() {
    let cases = [
        (
            r#"mcp_sentinel_requests_total{method="ping",outcome="forwarded"}"#,
            3.0,
        ),
        // Labels in another order are the same series.
        (
            r#"mcp_sentinel_requests_total{outcome="rejected",method="tools/call"}"#,
            1.0,
        ),
        ("mcp_sentinel_ready", 1.0),
        (
            r#"mcp_sentinel_request_duration_seconds_count{method="ping"}"#,
            3.0,
        ),
        (
            r#"mcp_sentinel_request_duration_seconds_sum{method="ping"}"#,
            0.25,
        ),
        (
            r#"mcp_sentinel_build_info{version="0.1.0 {dev}, \"x\""}"#,
            1.0,
        ),
    ];
    for (series, want) in cases {
        assert_eq!(metric_value(SCRAPE, series), want, "{series}");
    }
}

#[test]
fn a_present_family_with_unseen_labels_reads_zero() {
    let series = r#"mcp_sentinel_requests_total{method="tools/list",outcome="forwarded"}"#;
    assert_eq!(metric_value(SCRAPE, series), 0.0);
    assert_eq!(try_metric_value(SCRAPE, series), Ok(0.0));
}

#[test]
fn a_read_before_the_first_count_allows_an_unborn_family() {
    let series = r#"mcp_sentinel_check_denials_total{check="parse",reason="parse_error"}"#;
    assert_eq!(counter_before(SCRAPE, series), 0.0);
    assert!(try_metric_value(SCRAPE, series).is_err());
    assert_eq!(
        counter_before(
            SCRAPE,
            r#"mcp_sentinel_requests_total{method="ping",outcome="forwarded"}"#
        ),
        3.0
    );
}

#[test]
fn an_absent_family_panics_naming_the_series_and_what_exists() {
    for series in [
        // A typo in the name.
        r#"mcp_sentinel_request_total{method="ping",outcome="forwarded"}"#,
        // A metric that does not exist at all.
        "mcp_sentinel_requests_denied_total",
        // A histogram read without its suffix.
        r#"mcp_sentinel_request_duration_seconds{method="ping"}"#,
    ] {
        let msg = panic_message(|| metric_value(SCRAPE, series));
        let family = series.split('{').next().unwrap();
        assert!(
            msg.contains(&format!("metric family `{family}` is not in the scrape")),
            "{msg}"
        );
        assert!(msg.contains(series), "names the series: {msg}");
        assert!(
            msg.contains("mcp_sentinel_requests_total")
                || msg.contains("mcp_sentinel_request_duration_seconds_count"),
            "lists the families that exist: {msg}"
        );
    }
}

#[test]
fn a_misspelt_label_name_panics_listing_the_family() {
    let series = r#"mcp_sentinel_requests_total{method="ping",result="forwarded"}"#;
    let msg = panic_message(|| metric_value(SCRAPE, series));
    assert!(msg.contains("misspelt"), "{msg}");
    assert!(msg.contains(series), "{msg}");
    assert!(
        msg.contains(r#"mcp_sentinel_requests_total{method="ping",outcome="forwarded"}"#),
        "lists the family's series: {msg}"
    );
}

/// The same three answers on a real scrape of the sentinel.
#[tokio::test]
async fn a_real_scrape_reads_present_absent_and_unseen_series() {
    let upstream = spawn_upstream().await;
    let s = sentinel::start(&upstream.url()).await;
    let text = s.metrics().await;
    assert_eq!(metric_value(&text, "mcp_sentinel_ready"), 1.0);
    assert_eq!(s.metric("mcp_sentinel_ready").await, 1.0);
    assert_eq!(
        metric_value(
            &text,
            r#"mcp_sentinel_client_disconnects_total{phase="no_such_phase"}"#
        ),
        0.0
    );
    let msg = panic_message(|| metric_value(&text, "mcp_sentinel_no_such_metric_total"));
    assert!(
        msg.contains("`mcp_sentinel_no_such_metric_total` is not in the scrape"),
        "{msg}"
    );
}
