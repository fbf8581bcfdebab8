//! The chart's monitoring against the binaries: every metric the PrometheusRule and the Grafana
//! dashboard query is one the sentinel or the injector serves (read from the /metrics of both,
//! started here with every feature that registers metrics), each query counts sidecars or
//! injectors, never both unawares, and with every monitor on each pod is scraped exactly once.
//! The chart is rendered with the pinned helm of scripts/k8s-tools.sh.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;

use common::k8s;
use common::sentinel::{TempDir, spawn_logged};
use common::tls::{TestCa, https_post, write_file};
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `helm template` of the chart (release mcp-sentinel, namespace mcp-sentinel) with `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let args: Vec<&str> = sets.iter().flat_map(|s| ["--set", s]).collect();
    k8s::documents(&k8s::helm_template(&args))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// GET `path` from `addr` (host:port) over HTTP/1.1; the body.
fn http_get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .1
}

/// Sends `request` and reads the answer to the end; (status line, body).
fn http(addr: &str, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// The metric families a /metrics text declares (`# TYPE name kind`): name -> kind.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
            (name.to_string(), kind.to_string())
        })
        .collect()
}

/// Both binaries' families: what a sidecar and what the injector serve.
struct Exposed {
    sidecar: BTreeMap<String, String>,
    injector: BTreeMap<String, String>,
}

impl Exposed {
    /// The family a series name belongs to (`x_bucket` of histogram `x` is `x`), if any.
    fn family(&self, series: &str) -> Option<String> {
        let known = |f: &str| {
            self.sidecar
                .get(f)
                .or_else(|| self.injector.get(f))
                .cloned()
        };
        if known(series).is_some() {
            return Some(series.to_string());
        }
        ["_bucket", "_count", "_sum"].iter().find_map(|suffix| {
            let base = series.strip_suffix(suffix)?;
            matches!(known(base).as_deref(), Some("histogram" | "summary"))
                .then(|| base.to_string())
        })
    }

    /// Names in `expr` that neither binary serves (`up` is Prometheus's own).
    fn unknown(&self, expr: &str) -> Vec<String> {
        metric_names(expr)
            .into_iter()
            .filter(|n| n != "up" && self.family(n).is_none())
            .collect()
    }

    /// Whom `expr` counts. Families both serve (mcp_sentinel_ready, build_info, TLS reloads)
    /// count sidecars only with `unless on (namespace, pod)` the injector-only
    /// mcp_sentinel_webhook_requests_total, injectors only with `and on` it.
    fn side(&self, expr: &str) -> Side {
        let only_sidecars = expr.contains(&format!("unless {QUALIFIER}"));
        let only_injectors = expr.contains(&format!("and {QUALIFIER}"));
        let mut sides = BTreeSet::new();
        for name in metric_names(expr) {
            if name == "up" {
                // The injector's scrape job (MCPSentinelInjectorDown).
                sides.insert(Side::Injector);
                continue;
            }
            let f = self.family(&name).expect("known names only");
            if (only_sidecars || only_injectors) && f == INJECTOR_ONLY {
                continue;
            }
            let side = match (
                self.sidecar.contains_key(&f),
                self.injector.contains_key(&f),
            ) {
                (true, true) if only_sidecars => Side::Sidecar,
                (true, true) if only_injectors => Side::Injector,
                (true, true) => Side::Both,
                (true, false) => Side::Sidecar,
                (false, _) => Side::Injector,
            };
            sides.insert(side);
        }
        match sides.len() {
            1 => sides.into_iter().next().unwrap(),
            _ => Side::Both,
        }
    }
}

const INJECTOR_ONLY: &str = "mcp_sentinel_webhook_requests_total";
const QUALIFIER: &str = "on (namespace, pod) mcp_sentinel_webhook_requests_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Sidecar,
    Injector,
    Both,
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping lists that are neither functions, aggregations nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Operators and modifiers; GROUPING below are keywords too.
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];
    // Aggregations may take their grouping before the parenthesis: `sum by (x) (...)`.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening delimiter to its match, past any quoted strings inside.
    let skip = |mut i: usize, close: char| {
        while i < c.len() && c[i] != close {
            if c[i] == '"' || c[i] == '\'' {
                let q = c[i];
                i += 1;
                while i < c.len() && c[i] != q {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < c.len() {
        match c[i] {
            '"' | '\'' => i = skip(i + 1, c[i]),
            '{' => i = skip(i + 1, '}'),
            '[' => i = skip(i + 1, ']'),
            ch if ch.is_ascii_digit() || ch == '.' => {
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                    i += 1;
                }
            }
            ch if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' => {
                let start = i;
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                let mut j = i;
                while j < c.len() && c[j].is_whitespace() {
                    j += 1;
                }
                let call = j < c.len() && c[j] == '(';
                if call && GROUPING.contains(&word.as_str()) {
                    i = skip(j + 1, ')');
                } else if !call
                    && ![KEYWORDS, GROUPING, AGGREGATIONS]
                        .iter()
                        .any(|set| set.contains(&word.as_str()))
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Starts a sidecar (`run`) with API keys, JWT, a policy file, TLS, Redis rate limits with a
/// concurrency rule and an audit sink with a spool — every part that registers metrics — and the
/// injector (`inject`); reads both /metrics. Families with labels appear once a series exists:
/// one refused request creates mcp_sentinel_check_denials_total's.
fn exposed() -> Exposed {
    let dir = TempDir::new("monitoring");
    let ca = TestCa::new();
    let (cert, key) = ca.server_cert(&["localhost"]);
    let cert = write_file(&dir, "tls.crt", &cert);
    let key = write_file(&dir, "tls.key", &key);
    let keys = write_file(&dir, "keys.yaml", "keys: []\n");
    let policy = write_file(&dir, "policy.yaml", "default: deny\nrules: []\n");
    let config = format!(
        "mcp_path: /mcp
tls: {{cert_file: {cert}, key_file: {key}}}
auth:
  resource: https://mcp.example.com/mcp
  api_keys: {{file: {keys}}}
  jwt:
    issuers:
      - issuer: https://idp.example.com
        jwks_url: https://127.0.0.1:1/jwks
        algorithms: [ES256]
        audiences: [mcp]
policy: {{file: {policy}}}
rate_limits:
  backend: redis
  redis: {{url: \"redis://127.0.0.1:1/0\"}}
  failure_mode: local
  rules:
    - {{name: per-caller, match: {{methods: [tools/call]}}, limits: [{{rate: 60/minute}}], key: [subject]}}
    - {{name: slow, match: {{tools: [slow]}}, concurrency: 2}}
audit:
  spool: {{dir: {spool}, max_bytes: 1MiB}}
  sinks: [{{type: stdout}}]
",
        cert = cert.display(),
        key = key.display(),
        keys = keys.display(),
        policy = policy.display(),
        spool = dir.path("spool").display(),
    );
    let config = write_file(&dir, "config.yaml", &config);
    let settings = write_file(
        &dir,
        "injector.yaml",
        "image: registry.example.com/mcp-sentinel:0.1.0\n",
    );

    let (mut sidecar, started) = spawn_logged(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            "http://127.0.0.1:1/mcp",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        "mcp-sentinel started",
        Stdio::null(),
    );
    let (mut injector, injector_started) = spawn_logged(
        &[
            "inject",
            "--config",
            settings.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        "mcp-sentinel injector started",
        Stdio::null(),
    );

    // A call without credentials: refused (401), and counted.
    let traffic: std::net::SocketAddr = started["traffic"].as_str().unwrap().parse().unwrap();
    let refused = tokio::runtime::Runtime::new().unwrap().block_on(https_post(
        traffic,
        "localhost",
        &ca.ca_pem(),
        None,
        "/mcp",
        &[],
        &serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    ));
    assert_eq!(refused.expect("an answer").0, 401);
    let sidecar_text = http_get(started["admin"].as_str().unwrap(), "/metrics");
    let injector_text = http_get(injector_started["admin"].as_str().unwrap(), "/metrics");
    let _ = sidecar.kill();
    let _ = injector.kill();
    let _ = sidecar.wait();
    let _ = injector.wait();
    Exposed {
        sidecar: families(&sidecar_text),
        injector: families(&injector_text),
    }
}

/// Every alert of the chart's PrometheusRule: (name, expr).
fn alert_rules() -> Vec<(String, String)> {
    let docs = render(&[
        "monitoring.prometheusRule.enabled=true",
        "monitoring.serviceMonitor.enabled=true",
    ]);
    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    rule[0]["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| {
            (
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every query of files/dashboard.json: (panel title, expr).
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("helm/mcp-sentinel/files/dashboard.json"))
        .expect("the dashboard");
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            "sum by (namespace, pod) (rate(a_total{result=~\"x|y\", le=\"1\"}[5m])) / ignoring(le) \
             b_bucket offset 5m > 0.2 unless on (pod) c and time() - d > 1e3 or vector(0)"
        ),
        ["a_total", "b_bucket", "c", "d"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        metric_names("absent(up{job=\"x\", namespace=\"y\"} == 1)"),
        BTreeSet::from(["up".to_string()])
    );
}

/// The alerts an on-call needs (issue 15), each on metrics the binaries serve; sidecar alerts
/// count sidecars, injector alerts injectors, and only the TLS-reload alert means both.
#[test]
fn alert_rules_query_only_metrics_the_binaries_serve() {
    let exposed = exposed();
    // The families this test relies on: if a feature's metrics stop registering, say so here.
    for f in [
        "mcp_sentinel_audit_records_total",
        "mcp_sentinel_audit_sink_up",
        "mcp_sentinel_ratelimit_backend_up",
        "mcp_sentinel_jwks_last_refresh_timestamp_seconds",
        "mcp_sentinel_check_denials_total",
        "mcp_sentinel_tls_reloads_total",
    ] {
        assert!(exposed.sidecar.contains_key(f), "the sidecar serves no {f}");
    }
    for f in [
        INJECTOR_ONLY,
        "mcp_sentinel_injections_total",
        "mcp_sentinel_ready",
    ] {
        assert!(
            exposed.injector.contains_key(f),
            "the injector serves no {f}"
        );
    }
    assert!(!exposed.sidecar.contains_key(INJECTOR_ONLY));

    // The check fails on a name no binary serves.
    assert_eq!(
        exposed.unknown("rate(mcp_sentinel_audit_dropped_total[5m]) > 0"),
        ["mcp_sentinel_audit_dropped_total"]
    );

    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "MCPSentinelNotReady",
            "MCPSentinelUpstreamErrors",
            "MCPSentinelAuthFailureSpike",
            "MCPSentinelDenials",
            "MCPSentinelRateLimitSaturation",
            "MCPSentinelConcurrencyLimited",
            "MCPSentinelRateLimitBackendDown",
            "MCPSentinelAuditRecordsDropped",
            "MCPSentinelAuditSinkDown",
            "MCPSentinelAuditSpoolFilling",
            "MCPSentinelAuditBacklog",
            "MCPSentinelPolicyReloadFailed",
            "MCPSentinelApiKeysReloadFailed",
            "MCPSentinelTlsReloadFailed",
            "MCPSentinelJwksStale",
            "MCPSentinelInjectorDown",
            "MCPSentinelInjectorNotReady",
            "MCPSentinelWebhookErrors",
            "MCPSentinelWebhookSlow",
            "MCPSentinelInjectionErrors",
            "MCPSentinelPodsRefused",
        ]
    );
    for (name, expr) in &rules {
        assert!(
            !metric_names(expr).is_empty(),
            "{name}: no metric in {expr}"
        );
        assert_eq!(
            exposed.unknown(expr),
            Vec::<String>::new(),
            "{name}: {expr}"
        );
        let want = match name.as_str() {
            "MCPSentinelTlsReloadFailed" => Side::Both,
            n if n.starts_with("MCPSentinelInject")
                || n.starts_with("MCPSentinelWebhook")
                || n == "MCPSentinelPodsRefused" =>
            {
                Side::Injector
            }
            _ => Side::Sidecar,
        };
        assert_eq!(exposed.side(expr), want, "{name}: {expr}");
    }
}

/// Each dashboard query counts sidecars or injectors, never both; the overview counts the
/// sidecars, the injector row the injectors.
#[test]
fn the_dashboard_counts_sidecars_and_injectors_apart() {
    let exposed = exposed();
    let queries = dashboard_queries();
    let mut sides: BTreeMap<String, BTreeSet<Side>> = BTreeMap::new();
    for (title, expr) in &queries {
        assert_eq!(
            exposed.unknown(expr),
            Vec::<String>::new(),
            "{title}: {expr}"
        );
        let side = exposed.side(expr);
        assert_ne!(
            side,
            Side::Both,
            "{title} mixes sidecars and injectors: {expr}"
        );
        sides.entry(title.clone()).or_default().insert(side);
    }
    for (title, s) in &sides {
        assert_eq!(
            s.len(),
            1,
            "panel {title} queries both sidecars and injectors"
        );
    }
    let expected = [
        ("Sidecars", Side::Sidecar),
        ("Sidecars ready", Side::Sidecar),
        ("Sidecar pods not ready", Side::Sidecar),
        ("Requests/s", Side::Sidecar),
        ("Injectors", Side::Injector),
        ("Injectors ready", Side::Injector),
        ("Injections by result", Side::Injector),
        ("Admission latency", Side::Injector),
    ];
    for (title, side) in expected {
        assert_eq!(sides[title], BTreeSet::from([side]), "{title}");
    }
}

/// A scrape target: a workload's pod and one of its container ports (by name).
type Target = (String, String);

/// What each ServiceMonitor and PodMonitor of `docs` scrapes: monitor -> targets. Pods are the
/// Deployments' templates (the example's carries the sidecar exactly as injected pods do).
fn scraped(docs: &[Value]) -> BTreeMap<String, BTreeSet<Target>> {
    let matches = |labels: &Value, selector: &Value| {
        selector
            .as_object()
            .into_iter()
            .flatten()
            .all(|(k, v)| labels[k] == *v)
    };
    let pods: Vec<(String, &Value)> = of_kind(docs, "Deployment")
        .into_iter()
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap().to_string(),
                &d["spec"]["template"],
            )
        })
        .collect();
    let port_names = |pod: &Value| -> BTreeMap<String, u64> {
        ["containers", "initContainers"]
            .iter()
            .flat_map(|k| pod["spec"][k].as_array().into_iter().flatten())
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let mut out = BTreeMap::new();
    for m in of_kind(docs, "PodMonitor") {
        let mut targets = BTreeSet::new();
        for (name, pod) in &pods {
            if !matches(
                &pod["metadata"]["labels"],
                &m["spec"]["selector"]["matchLabels"],
            ) {
                continue;
            }
            for e in m["spec"]["podMetricsEndpoints"].as_array().unwrap() {
                let port = e["port"].as_str().unwrap();
                if port_names(pod).contains_key(port) {
                    targets.insert((name.clone(), port.to_string()));
                }
            }
        }
        out.insert(
            format!("PodMonitor/{}", m["metadata"]["name"].as_str().unwrap()),
            targets,
        );
    }
    for m in of_kind(docs, "ServiceMonitor") {
        let mut targets = BTreeSet::new();
        for svc in of_kind(docs, "Service") {
            if !matches(
                &svc["metadata"]["labels"],
                &m["spec"]["selector"]["matchLabels"],
            ) {
                continue;
            }
            for e in m["spec"]["endpoints"].as_array().unwrap() {
                let port = svc["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == e["port"])
                    .unwrap_or_else(|| {
                        panic!("{} has no port {}", svc["metadata"]["name"], e["port"])
                    });
                for (name, pod) in &pods {
                    if !matches(&pod["metadata"]["labels"], &svc["spec"]["selector"]) {
                        continue;
                    }
                    let ports = port_names(pod);
                    // targetPort: a container port's name, or its number.
                    let target = match &port["targetPort"] {
                        Value::String(s) => ports.contains_key(s).then(|| s.clone()),
                        Value::Number(n) => ports
                            .iter()
                            .find(|(_, p)| Some(**p) == n.as_u64())
                            .map(|(k, _)| k.clone()),
                        _ => None,
                    };
                    if let Some(t) = target {
                        targets.insert((name.clone(), t));
                    }
                }
            }
        }
        out.insert(
            format!("ServiceMonitor/{}", m["metadata"]["name"].as_str().unwrap()),
            targets,
        );
    }
    out
}

/// Which monitors scrape each pod.
fn scrapers(scraped: &BTreeMap<String, BTreeSet<Target>>) -> BTreeMap<String, Vec<String>> {
    let mut by_pod: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (monitor, targets) in scraped {
        for (pod, port) in targets {
            by_pod
                .entry(pod.clone())
                .or_default()
                .push(format!("{monitor}:{port}"));
        }
    }
    by_pod
}

#[test]
fn with_every_monitor_on_each_pod_is_scraped_once() {
    let docs = render(&[
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "example.enabled=true",
        "example.serviceMonitor=true",
    ]);
    assert_eq!(
        scrapers(&scraped(&docs)),
        BTreeMap::from([
            (
                "mcp-sentinel-injector".to_string(),
                vec!["ServiceMonitor/mcp-sentinel-injector:admin".to_string()]
            ),
            (
                "mcp-server".to_string(),
                vec!["PodMonitor/mcp-sentinel-sidecars:sentinel-admin".to_string()]
            ),
        ])
    );

    // Without the PodMonitor, the example's own ServiceMonitor scrapes its sidecar: the one the
    // PodMonitor would otherwise scrape a second time.
    let docs = render(&[
        "monitoring.serviceMonitor.enabled=true",
        "example.enabled=true",
        "example.serviceMonitor=true",
    ]);
    let by_pod = scrapers(&scraped(&docs));
    assert_eq!(
        by_pod["mcp-server"],
        ["ServiceMonitor/mcp-server:sentinel-admin"]
    );
    assert_eq!(
        by_pod["mcp-sentinel-injector"],
        ["ServiceMonitor/mcp-sentinel-injector:admin"]
    );
}
