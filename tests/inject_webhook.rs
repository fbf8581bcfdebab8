//! The injector as the API server sees it: real AdmissionReview JSON over HTTPS (HTTP/1.1 and
//! HTTP/2) with certificates generated here, a certificate rotated the way a Kubernetes Secret
//! volume rotates it, its admin port, and its shutdown.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::apiserver::{ApiServer, OWN_TOKEN, Reply};
use common::metrics::{metric_value, om_family, parse_openmetrics};
use common::sentinel::TempDir;
use common::tls::TestCa;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Service;
use mcp_sentinel::k8s::settings::{ServiceCheck, Settings};
use mcp_sentinel::k8s::webhook::{Injector, InjectorOptions};
use mcp_sentinel::tls::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The names of the injector's serving certificate: `localhost` and its Service's name.
const INJECTOR_NAMES: &[&str] = &["localhost", "mcp-sentinel-injector.mcp-sentinel.svc"];

/// A directory laid out like a Kubernetes Secret volume: `tls.crt -> ..data/tls.crt`,
/// `..data -> ..<version>`. `publish` swaps `..data` atomically, as the kubelet does.
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(test: &str) -> SecretVolume {
        let dir = std::env::temp_dir().join(format!("mcp-sentinel-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.join(f)).unwrap();
        }
        SecretVolume { dir, version: 0 }
    }

    fn publish(&mut self, cert: &str, key: &str) {
        self.version += 1;
        let name = format!("..v{}", self.version);
        let data = self.dir.join(&name);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), cert).unwrap();
        std::fs::write(data.join("tls.key"), key).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("tls.crt"),
            key: self.dir.join("tls.key"),
            client_ca: None,
        }
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/k8s")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn settings() -> Settings {
    Settings::with_image("registry.example.com/mcp-sentinel:0.1.0")
}

async fn start(volume: &SecretVolume, drain_delay: Duration) -> Injector {
    start_with(volume, drain_delay, settings()).await
}

async fn start_with(volume: &SecretVolume, drain_delay: Duration, settings: Settings) -> Injector {
    Injector::start(InjectorOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        tls: volume.files(),
        tls_reload_interval: Duration::from_millis(100),
        settings,
        drain_delay,
    })
    .await
    .expect("injector starts")
}

async fn connect(addr: SocketAddr, ca_pem: &str, alpn: &[u8]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the injector")
}

/// The leaf certificate the injector presents.
async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let tls = connect(addr, ca_pem, b"http/1.1").await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One request over a fresh HTTPS connection; HTTP/2 when `h2`.
async fn send(
    addr: SocketAddr,
    ca_pem: &str,
    h2: bool,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let tls = connect(addr, ca_pem, if h2 { b"h2" } else { b"http/1.1" }).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(if h2 { &b"h2"[..] } else { &b"http/1.1"[..] })
    );
    let req = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let io = TokioIo::new(tls);
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

async fn admin(injector: &Injector, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}{path}", injector.admin_addr()))
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn webhook_answers_admission_reviews_over_https() {
    let ca = TestCa::named("webhook test CA");
    let (cert, key) = ca.leaf(INJECTOR_NAMES);
    let mut volume = SecretVolume::new("webhook");
    volume.publish(&cert, &key);
    let injector = start(&volume, Duration::ZERO).await;
    let addr = injector.addr();
    let ca_pem = ca.ca_pem();

    for h2 in [false, true] {
        let post =
            |path, content_type, body| send(addr, &ca_pem, h2, "POST", path, content_type, body);
        // An annotated pod: allowed, with a JSON Patch that adds the sidecar.
        let review = fixture("review-pod.json");
        let (status, answer) = post(
            "/inject/annotated",
            "application/json",
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let resp = &answer["response"];
        assert_eq!(resp["uid"], review["request"]["uid"]);
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        let pod = common::k8s::patched_pod(&review, resp);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        let init = pod.spec.unwrap().init_containers.unwrap();
        assert_eq!(init[0].name, "mcp-sentinel");

        // Opted out in a labelled namespace: allowed, no patch.
        let mut opted_out = fixture("review-pod.json");
        opted_out["request"]["object"]["metadata"]["annotations"]["mcp-sentinel.io/inject"] =
            json!("false");
        let (status, answer) = post(
            "/inject/namespace",
            "application/json; charset=utf-8",
            serde_json::to_vec(&opted_out).unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());

        // Not an AdmissionReview: a clean refusal, never a hang or a reset.
        let cut_short = b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":";
        let (status, answer) =
            post("/inject/annotated", "application/json", cut_short.to_vec()).await;
        assert_eq!(status, 400);
        assert_eq!(answer["response"]["allowed"], false);
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("not JSON"),
            "{answer}"
        );

        for (method, path, ctype, expect) in [
            ("GET", "/inject/annotated", "application/json", 405),
            ("POST", "/mutate", "application/json", 404),
            ("POST", "/inject/annotated", "text/plain", 415),
        ] {
            let (status, answer) =
                send(addr, &ca_pem, h2, method, path, ctype, b"{}".to_vec()).await;
            assert_eq!(status, expect, "{method} {path} {ctype}");
            assert_eq!(answer["response"]["allowed"], false);
        }
    }

    assert_eq!(admin(&injector, "/healthz").await.0, 200);
    let (status, ready) = admin(&injector, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&ready).unwrap(),
        json!({"ready": true, "blockers": []})
    );
    let (_, metrics) = admin(&injector, "/metrics").await;
    for line in [
        "mcp_sentinel_injections_total{result=\"injected\"} 2",
        "mcp_sentinel_injections_total{result=\"skipped\"} 2",
        "mcp_sentinel_injections_total{result=\"error\"} 0",
        "mcp_sentinel_injections_total{result=\"already_injected\"} 0",
        "mcp_sentinel_webhook_requests_total{code=\"200\"} 4",
        "mcp_sentinel_webhook_requests_total{code=\"400\"} 2",
        "mcp_sentinel_webhook_requests_total{code=\"404\"} 2",
        "mcp_sentinel_webhook_requests_total{code=\"405\"} 2",
        "mcp_sentinel_webhook_requests_total{code=\"413\"} 0",
        "mcp_sentinel_webhook_requests_total{code=\"415\"} 2",
        "mcp_sentinel_ready 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("mcp_sentinel_"), "{line}");
    }
    // The same, in OpenMetrics for a scraper that asks, read by a real parser: counters named as
    // OpenMetrics has them (the family without `_total`), the histogram whole.
    let resp = reqwest::Client::new()
        .get(format!("http://{}/metrics", injector.admin_addr()))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let families = parse_openmetrics(&resp.text().await.unwrap());
    let injections = om_family(&families, "mcp_sentinel_injections");
    assert_eq!(injections["type"], "counter");
    assert!(
        injections["samples"].as_array().unwrap().iter().any(|s| {
            s["name"] == "mcp_sentinel_injections_total"
                && s["labels"] == json!({"result": "injected"})
                && s["value"] == 2.0
        }),
        "{injections:#}"
    );
    let duration = om_family(&families, "mcp_sentinel_webhook_duration_seconds");
    assert_eq!(duration["type"], "histogram");
    assert!(
        duration["samples"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |s| s["name"] == "mcp_sentinel_webhook_duration_seconds_count"
                    && s["value"].as_f64() >= Some(4.0)
            ),
        "{duration:#}"
    );
    assert!(injector.shutdown().await);
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let old_ca = TestCa::named("old CA");
    let new_ca = TestCa::named("new CA");
    let (old_cert, old_key) = old_ca.leaf(INJECTOR_NAMES);
    let (new_cert, new_key) = new_ca.leaf(INJECTOR_NAMES);
    let mut volume = SecretVolume::new("rotation");
    volume.publish(&old_cert, &old_key);
    let injector = start(&volume, Duration::ZERO).await;
    let addr = injector.addr();
    let der = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    assert_eq!(
        served_certificate(addr, &old_ca.ca_pem()).await,
        der(&old_cert)
    );

    // The kubelet swaps ..data: the new certificate is served within a few polls.
    volume.publish(&new_cert, &new_key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tokio::time::timeout(Duration::from_secs(2), async {
            let mut roots = new_ca.ca_pem();
            roots.push_str(&old_ca.ca_pem());
            served_certificate(addr, &roots).await
        })
        .await
        .ok()
            == Some(der(&new_cert))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = admin(&injector, "/metrics").await;
    assert!(
        metrics.contains("mcp_sentinel_tls_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );

    // A key that does not match its certificate is refused; the loaded one keeps serving.
    let (_, other_key) = new_ca.leaf(INJECTOR_NAMES);
    volume.publish(&new_cert, &other_key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = admin(&injector, "/metrics").await;
        if metrics.contains("mcp_sentinel_tls_reloads_total{result=\"failure\"} 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bad key was never noticed:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        served_certificate(addr, &new_ca.ca_pem()).await,
        der(&new_cert)
    );
    assert!(injector.shutdown().await);
}

#[tokio::test]
async fn shutdown_fails_readiness_first_then_stops_serving() {
    let ca = TestCa::named("shutdown CA");
    let (cert, key) = ca.leaf(INJECTOR_NAMES);
    let mut volume = SecretVolume::new("shutdown");
    volume.publish(&cert, &key);
    let injector = start(&volume, Duration::from_millis(500)).await;
    let addr = injector.addr();
    let admin_addr = injector.admin_addr();
    let stopping = tokio::spawn(injector.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // During the drain delay: not ready, still answering reviews.
    let resp = reqwest::get(format!("http://{admin_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"ready": false, "blockers": ["shutting_down"]})
    );
    let review = serde_json::to_vec(&fixture("review-pod.json")).unwrap();
    let (status, _) = send(
        addr,
        &ca.ca_pem(),
        false,
        "POST",
        "/inject/annotated",
        "application/json",
        review,
    )
    .await;
    assert_eq!(status, 200);
    assert!(stopping.await.unwrap(), "drained before the deadline");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the webhook port is closed"
    );
    assert!(
        TcpStream::connect(admin_addr).await.is_err(),
        "the admin port is closed"
    );
}

#[tokio::test]
async fn a_missing_certificate_stops_the_start() {
    let volume = SecretVolume::new("missing");
    let err = Injector::start(InjectorOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        tls: volume.files(),
        tls_reload_interval: Duration::from_secs(1),
        settings: Settings::with_image("x"),
        drain_delay: Duration::ZERO,
    })
    .await
    .err()
    .expect("no certificate, no start");
    assert!(err.to_string().starts_with("TLS: cannot read "), "{err}");
}

/// With `service_check` on, the injector lists the pod's namespace's Services through the API
/// server (the real ServiceList wire shape) and warns about each one that reaches the MCP server
/// around the sentinel. A check that cannot finish in time still admits the patched pod, saying
/// the check failed. Each ending is counted.
#[tokio::test]
async fn services_that_reach_the_server_around_the_sentinel_are_warned_about() {
    let api = ApiServer::start(|_| Reply::Hang).await;
    let service = |name: &str, target: Value| -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "tools"},
            "spec": {
                "selector": {"app.kubernetes.io/name": "weather-mcp"},
                "ports": [{"name": "mcp", "port": 80, "targetPort": target, "protocol": "TCP"}],
            },
        }))
        .unwrap()
    };
    api.set_services(
        "tools",
        vec![
            service("weather", json!("http")),
            service("weather-direct", json!(8080)),
        ],
    );
    let dir = TempDir::new("service-check");
    let mut settings = settings();
    settings.service_check = Some(ServiceCheck {
        kubeconfig: Some(api.kubeconfig(&dir.0)),
        timeout: Duration::from_millis(500),
    });
    let ca = TestCa::named("service check CA");
    let (cert, key) = ca.leaf(INJECTOR_NAMES);
    let mut volume = SecretVolume::new("service-check");
    volume.publish(&cert, &key);
    let injector = start_with(&volume, Duration::ZERO, settings).await;
    let review = serde_json::to_vec(&fixture("review-pod.json")).unwrap();
    let ca_pem = ca.ca_pem();
    let post = || {
        send(
            injector.addr(),
            &ca_pem,
            false,
            "POST",
            "/inject/annotated",
            "application/json",
            review.clone(),
        )
    };

    let (status, answer) = post().await;
    assert_eq!(status, 200, "{answer}");
    let resp = &answer["response"];
    assert_eq!(resp["allowed"], true);
    assert!(resp["patch"].is_string(), "{answer}");
    assert_eq!(
        resp["warnings"],
        json!([
            "mcp-sentinel: Service weather-direct port \"mcp\" (80) reaches the MCP server's port 8080 directly (targetPort by number), around the sentinel: set its targetPort to \"http\", the name that now leads to the sentinel"
        ])
    );
    let lists: Vec<_> = api
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].path, "/api/v1/namespaces/tools/services");
    assert_eq!(
        lists[0].authorization.as_deref(),
        Some(format!("Bearer {OWN_TOKEN}").as_str())
    );

    api.hang_lists();
    let started = Instant::now();
    let (status, answer) = post().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the timeout"
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].is_string(), "{answer}");
    assert_eq!(
        answer["response"]["warnings"],
        json!([
            "mcp-sentinel: could not check whether a Service reaches the MCP server's port 8080 around the sentinel: no answer within 500ms"
        ])
    );

    let (_, text) = admin(&injector, "/metrics").await;
    for (result, n) in [("clear", 0.0), ("exposed", 1.0), ("failed", 1.0)] {
        assert_eq!(
            metric_value(
                &text,
                &format!("mcp_sentinel_injector_service_checks_total{{result=\"{result}\"}}")
            ),
            n,
            "{result}"
        );
    }
}
