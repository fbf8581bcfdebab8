use super::*;
use crate::config::Config;

fn cfg(section: &str) -> TracingConfig {
    let text = format!("auth: {{anonymous: allow}}\npolicy: {{default: allow}}\n{section}");
    Config::from_yaml(&text, "t.yaml").unwrap().tracing
}

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn off_by_default_and_by_the_environment() {
    assert_eq!(cfg("").resolve(&env(&[])).unwrap(), None);
    assert_eq!(
        cfg("")
            .resolve(&env(&[("OTEL_TRACES_EXPORTER", "none")]))
            .unwrap(),
        None
    );
    let on = env(&[
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_SDK_DISABLED", "true"),
    ]);
    assert_eq!(cfg("").resolve(&on).unwrap(), None);
    // The file wins over the environment.
    assert_eq!(
        cfg("tracing: {enabled: false}")
            .resolve(&env(&[("OTEL_TRACES_EXPORTER", "otlp")]))
            .unwrap(),
        None
    );
}

#[test]
fn the_environment_fills_what_the_file_leaves_out() {
    let e = env(&[
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "X-Api-Key=a%3Db, tenant=t1"),
        ("OTEL_SERVICE_NAME", "mcp-weather"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
    ]);
    let s = cfg("").resolve(&e).unwrap().unwrap();
    assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(s.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(s.headers["x-api-key"], "a=b");
    assert_eq!(s.headers["tenant"], "t1");
    assert_eq!(s.service_name, "mcp-weather");
    assert_eq!(s.sampler, SamplerKind::ParentBasedTraceIdRatio);
    assert_eq!(s.ratio, 0.25);
    assert_eq!((s.max_queue_size, s.max_export_batch_size), (100, 100));
    assert!(!s.summary().contains("a=b"), "header values are secrets");

    let file = cfg(
        "tracing:\n  enabled: true\n  endpoint: http://otel:4317\n  sample_ratio: 0.1\n  service_name: s\n",
    );
    let s = file.resolve(&e).unwrap().unwrap();
    assert_eq!(s.endpoint, "http://otel:4317");
    assert_eq!(s.ratio, 0.1);
    assert_eq!(s.service_name, "s");
    // Not set in the file: still from the environment.
    assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
}

#[test]
fn bad_settings_are_all_reported() {
    let text = "auth: {anonymous: allow}\npolicy: {default: allow}\ntracing:\n  enabled: yes please\n  protocol: http/json\n  endpoint: ftp://x:4317\n  sample_ratio: 2\n  max_queue_size: 0\n  headers: {\"bad name\": v}\n  tls: {cert_file: /c.pem, colour: red}\n  bogus: 1\n";
    let errs = Config::from_yaml(text, "t.yaml").unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tracing.enabled",
            "tracing.protocol",
            "tracing.endpoint",
            "tracing.headers",
            "tracing.sample_ratio",
            "tracing.max_queue_size",
            "tracing.tls",
            "tracing.tls.colour",
            "tracing.bogus"
        ]
    );
    let e = env(&[
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ("OTEL_TRACES_SAMPLER", "xray"),
    ]);
    let errs = cfg("").resolve(&e).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs[0].starts_with("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"));
}

#[test]
fn tls_comes_from_the_file_or_the_environment() {
    let on = ("OTEL_TRACES_EXPORTER", "otlp");
    let pem = |path: &str, from: &str| PemFile {
        path: path.into(),
        from: from.into(),
    };
    // An https:// endpoint alone: the system roots, no client certificate.
    let s = cfg("tracing: {enabled: true, endpoint: \"https://otel:4317\"}")
        .resolve(&env(&[]))
        .unwrap()
        .unwrap();
    assert_eq!(
        s.tls,
        Some(ExportTls {
            ca: None,
            client: None
        })
    );
    assert!(
        s.summary().contains("TLS on: CA system roots"),
        "{}",
        s.summary()
    );
    // No TLS over http://.
    let s = cfg("").resolve(&env(&[on])).unwrap().unwrap();
    assert_eq!(s.tls, None);
    assert!(s.summary().contains("TLS off"), "{}", s.summary());

    // The file's keys win; the environment fills the rest, the signal's variable first.
    let file = cfg(
        "tracing:\n  enabled: true\n  endpoint: https://otel:4317\n  tls:\n    ca_file: /ca.pem\n",
    );
    let e = env(&[
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env-ca.pem"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "/traces-c.pem",
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
    ]);
    let s = file.resolve(&e).unwrap().unwrap();
    assert_eq!(
        s.tls,
        Some(ExportTls {
            ca: Some(pem("/ca.pem", "tracing.tls.ca_file")),
            client: Some((
                pem(
                    "/traces-c.pem",
                    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE"
                ),
                pem("/k.pem", "OTEL_EXPORTER_OTLP_CLIENT_KEY")
            )),
        })
    );
    let summary = s.summary();
    assert!(
        summary.contains("CA /ca.pem (tracing.tls.ca_file)")
            && summary.contains("client certificate /traces-c.pem with key /k.pem"),
        "{summary}"
    );
    let e = env(&[
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel:4317"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/env-ca.pem"),
        ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces-ca.pem"),
    ]);
    let s = cfg("").resolve(&e).unwrap().unwrap();
    assert_eq!(
        s.tls.unwrap().ca,
        Some(pem(
            "/traces-ca.pem",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"
        ))
    );
    let file = cfg(
        "tracing:\n  enabled: true\n  endpoint: https://otel:4317\n  tls: {cert_file: /c.pem, key_file: /k.pem}\n",
    );
    let s = file.resolve(&env(&[])).unwrap().unwrap();
    assert_eq!(
        s.tls.unwrap().client,
        Some((
            pem("/c.pem", "tracing.tls.cert_file"),
            pem("/k.pem", "tracing.tls.key_file")
        ))
    );

    // TLS settings with an http:// endpoint, and half a client pair, are errors that name
    // what is at fault.
    let errs =
        cfg("tracing:\n  enabled: true\n  endpoint: http://otel:4317\n  tls: {ca_file: /ca.pem}\n")
            .resolve(&env(&[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem")]))
            .unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("OTEL_EXPORTER_OTLP_CLIENT_KEY: a client certificate needs"),
        "{errs:?}"
    );
    assert!(
        errs[1].starts_with("tracing.tls.ca_file: TLS settings need an https:// endpoint"),
        "{errs:?}"
    );
    let errs = cfg("")
        .resolve(&env(&[
            on,
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/ca.pem"),
        ]))
        .unwrap_err();
    assert_eq!(
        errs,
        [
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: TLS settings need an https:// endpoint, not http://localhost:4317"
        ]
    );
}

#[test]
fn insecure_decides_the_scheme_of_a_grpc_endpoint_written_without_one() {
    let on = ("OTEL_TRACES_EXPORTER", "otlp");
    let endpoint = |vars: &[(&str, &str)]| {
        let mut all = vec![on];
        all.extend_from_slice(vars);
        cfg("").resolve(&env(&all)).map(|s| s.unwrap().endpoint)
    };
    assert_eq!(
        endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).unwrap(),
        "https://collector:4317"
    );
    assert_eq!(
        endpoint(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
        ])
        .unwrap(),
        "http://collector:4317"
    );
    // A scheme, when written, decides.
    assert_eq!(
        endpoint(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "TRUE"),
            ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
        ])
        .unwrap(),
        "https://collector:4317"
    );
    // HTTP needs the scheme; INSECURE is a boolean.
    let errs = endpoint(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
    ])
    .unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("OTEL_EXPORTER_OTLP_INSECURE: must be true or false"));
    assert!(
        errs[1].starts_with("OTEL_EXPORTER_OTLP_ENDPOINT:"),
        "{errs:?}"
    );
}
