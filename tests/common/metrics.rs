//! Reads one series out of a Prometheus text scrape, and refuses to read a metric the scrape does
//! not have: a renamed metric or a typo in a name must fail a test, not read as zero.

/// One sample line: `name{labels} value`, split.
struct Sample<'a> {
    name: &'a str,
    /// `{a="x",b="y"}`, or empty for a series without labels.
    labels: &'a str,
    value: &'a str,
}

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let rest = &line[name_end..];
    let labels_end = if rest.starts_with('{') {
        // Label values are quoted and may hold `}` or spaces: scan for the closing brace.
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    end = Some(i + 1);
                    break;
                }
                _ => {}
            }
        }
        end?
    } else {
        0
    };
    Some(Sample {
        name,
        labels: &rest[..labels_end],
        value: rest[labels_end..].trim(),
    })
}

/// The pairs of `{a="x",b="y"}`, sorted by name: `[("a", "x"), ("b", "y")]` (values as written,
/// escapes kept).
fn label_pairs(labels: &str) -> Vec<(&str, &str)> {
    let inner = labels
        .strip_prefix('{')
        .map_or("", |l| l.strip_suffix('}').unwrap_or(l));
    let mut pairs = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    let mut eq = 0;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' if in_quotes => {
                in_quotes = false;
                pairs.push((inner[start..eq].trim(), &inner[eq + 2..i]));
            }
            '"' => in_quotes = true,
            '=' if !in_quotes => eq = i,
            ',' if !in_quotes => start = i + 1,
            _ => {}
        }
    }
    pairs.sort();
    pairs
}

fn label_names(labels: &str) -> Vec<&str> {
    label_pairs(labels).into_iter().map(|(n, _)| n).collect()
}

/// The family a sample name belongs to, as `# TYPE` names it (a histogram's `_count`, `_sum` and
/// `_bucket` belong to the histogram).
fn declared_family<'a>(text: &'a str, sample_name: &str) -> Option<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .find(|family| {
            *family == sample_name
                || ["_count", "_sum", "_bucket"]
                    .iter()
                    .any(|s| sample_name.strip_suffix(s) == Some(family))
        })
}

/// The value of `series` (e.g. `mcp_sentinel_requests_total{method="ping",outcome="forwarded"}`)
/// in the scrape `text`.
///
/// `Err` names the series and lists what the scrape has instead when the metric family (the
/// name before `{`) is absent, or when no series of the family has the same label names (a
/// misspelt label). A series of a present family whose label values were never seen is 0: a
/// counter that has not counted yet.
pub fn try_metric_value(text: &str, series: &str) -> Result<f64, String> {
    let line = format!("{series} 0");
    let want = parse_sample(&line).unwrap_or_else(|| panic!("not a series: {series:?}"));
    let samples: Vec<Sample> = text.lines().filter_map(parse_sample).collect();
    let family: Vec<&Sample> = samples.iter().filter(|s| s.name == want.name).collect();
    if family.is_empty() {
        let stem: String = want.name.split('_').take(3).collect::<Vec<_>>().join("_");
        let mut near: Vec<&str> = samples
            .iter()
            .map(|s| s.name)
            .filter(|n| n.starts_with(&stem))
            .collect();
        near.sort_unstable();
        near.dedup();
        let declared = declared_family(text, want.name).map_or(String::new(), |f| {
            format!(" (`{f}` is declared, but no sample is named so)")
        });
        return Err(format!(
            "metric family `{}` is not in the scrape{declared}: is the name right? \
             asked for `{series}`; families starting `{stem}`: {near:?}",
            want.name
        ));
    }
    let pairs = label_pairs(want.labels);
    if let Some(hit) = family.iter().find(|s| label_pairs(s.labels) == pairs) {
        return hit
            .value
            .parse()
            .map_err(|e| format!("`{series}` has the value {:?}: {e}", hit.value));
    }
    let names = label_names(want.labels);
    if !family.iter().any(|s| label_names(s.labels) == names) {
        let existing: Vec<String> = family
            .iter()
            .map(|s| format!("  {}{}", s.name, s.labels))
            .collect();
        return Err(format!(
            "no series of `{}` has the labels {names:?}: is a label name misspelt? \
             asked for `{series}`; the family has:\n{}",
            want.name,
            existing.join("\n")
        ));
    }
    Ok(0.0)
}

/// [`try_metric_value`], panicking with its message when the metric is not in the scrape.
pub fn metric_value(text: &str, series: &str) -> f64 {
    try_metric_value(text, series).unwrap_or_else(|e| panic!("{e}"))
}

/// A counter read before the action a test then counts with [`metric_value`]: 0 when its family
/// is not in the scrape yet (a labelled counter appears with its first count). The read after
/// the action is the strict one, so a misspelt name still fails there.
pub fn counter_before(text: &str, series: &str) -> f64 {
    try_metric_value(text, series).unwrap_or(0.0)
}

/// The text exposition of `registry`, as `/metrics` serves it.
pub fn registry_text(registry: &prometheus::Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("the registry encodes")
}

/// `text` as a real OpenMetrics parser of another language reads it: Python's
/// `prometheus_client` (strict: it refuses malformed OpenMetrics), from the virtualenv of
/// scripts/mcp-peers.sh. A family per element, with `name`, `type`, `help` and `samples`
/// (`name`, `labels`, `value`, `exemplar`: null or `labels`, `value`, `timestamp`); a
/// non-finite value as its Python text (`inf`). A scrape it refuses fails the test with its
/// reason; a missing parser fails it too.
pub fn parse_openmetrics(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const PARSE: &str = r#"
import json, math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
def num(v):
    return v if math.isfinite(v) else str(v)
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    samples = []
    for s in f.samples:
        e = s.exemplar
        samples.append({"name": s.name, "labels": s.labels, "value": num(s.value),
            "exemplar": None if e is None else {"labels": e.labels, "value": num(e.value),
                "timestamp": None if e.timestamp is None else float(e.timestamp)}})
    out.append({"name": f.name, "type": f.type, "help": f.documentation, "samples": samples})
json.dump(out, sys.stdout)
"#;
    let python = super::peers::python("prometheus_client (the OpenMetrics parser)");
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = text.to_owned();
    // Written from a thread so a large answer cannot fill the pipes both ways.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("python ends");
    writer
        .join()
        .expect("the writer thread")
        .expect("the scrape reaches python");
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The family `name` of a [`parse_openmetrics`] reading; fails the test when it is absent.
pub fn om_family<'a>(families: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in the OpenMetrics scrape"))
}

/// The `mcp_sentinel_authn_total` series of one authentication outcome.
pub fn authn(method: &str, reason: &str, result: &str) -> String {
    format!(r#"mcp_sentinel_authn_total{{method="{method}",reason="{reason}",result="{result}"}}"#)
}

/// The `mcp_sentinel_check_denials_total` series of one check's denial reason.
pub fn denials(check: &str, reason: &str) -> String {
    format!(r#"mcp_sentinel_check_denials_total{{check="{check}",reason="{reason}"}}"#)
}

/// The `mcp_sentinel_ratelimit_total` series of one rule's result.
pub fn ratelimited(result: &str, rule: &str) -> String {
    format!(r#"mcp_sentinel_ratelimit_total{{result="{result}",rule="{rule}"}}"#)
}
