//! A fake Kubernetes API server: real HTTPS (rustls, a certificate from a throwaway rcgen CA),
//! the real TokenReview and ServiceList wire shapes (k8s-openapi types both ways), and the
//! kubeconfig that points the kube client at it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use k8s_openapi::api::core::v1::Service;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::TestCa;

/// The credential the sentinel itself presents to the API server (its own service account).
/// A service-account token as kubelet projects it: JWT-shaped, opaque to the sentinel.
pub const AGENT_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6dG9vbHM6YWdlbnQifQ.c2lnbmF0dXJl";
/// Who [`AGENT_TOKEN`] is.
pub const AGENT: &str = "system:serviceaccount:tools:agent";

pub const OWN_TOKEN: &str = "sentinel-own-sa-token";
pub const TOKENREVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// What the fake API server answers a well-authenticated TokenReview POST with.
#[derive(Clone)]
pub enum Reply {
    /// 201 Created, a TokenReview echoing the spec with this status.
    Review(TokenReviewStatus),
    /// This status code and body, as JSON.
    Raw(StatusCode, String),
    /// Never answer.
    Hang,
}

type Handler = Arc<dyn Fn(&TokenReview) -> Reply + Send + Sync>;

/// What `GET /api/v1/namespaces/{ns}/services` answers: the Services set per namespace (none:
/// an empty list), or never an answer.
#[derive(Default)]
struct Lists {
    services: HashMap<String, Vec<Service>>,
    hang: bool,
}

/// One request the fake API server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub review: Option<TokenReview>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    lists: Arc<Mutex<Lists>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiServer {
    pub async fn start(
        handler: impl Fn(&TokenReview) -> Reply + Send + Sync + 'static,
    ) -> ApiServer {
        let handler: Handler = Arc::new(handler);
        let ca = TestCa::named("test cluster CA");
        let (leaf_pem, key_pem) = ca.server_cert(&["127.0.0.1", "localhost"]);
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let lists = Arc::new(Mutex::new(Lists::default()));
        let served = lists.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                let log = log.clone();
                let served = served.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        let log = log.clone();
                        let served = served.clone();
                        async move { Ok::<_, hyper::Error>(answer(req, &handler, &log, &served).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ApiServer {
            addr,
            ca_pem: ca.ca_pem(),
            seen,
            lists,
            task,
        }
    }

    /// The Services `namespace` lists from now on.
    pub fn set_services(&self, namespace: &str, services: Vec<Service>) {
        let mut lists = self.lists.lock().unwrap();
        lists.services.insert(namespace.to_string(), services);
    }

    /// Lists are never answered from now on.
    pub fn hang_lists(&self) {
        self.lists.lock().unwrap().hang = true;
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The tokens of every TokenReview received, in order.
    pub fn reviewed_tokens(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter_map(|s| s.review.as_ref()?.spec.token.clone())
            .collect()
    }

    /// A kubeconfig in `dir` that points at this server, trusts its CA and authenticates with
    /// [`OWN_TOKEN`].
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig(dir, &self.url(), &self.ca_pem, OWN_TOKEN)
    }
}

pub fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A `metav1.Status` failure body.
pub fn k8s_status(code: u16, reason: &str, message: &str) -> String {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
    .to_string()
}

async fn answer(
    req: Request<Incoming>,
    handler: &Handler,
    log: &Mutex<Vec<Seen>>,
    lists: &Mutex<Lists>,
) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let mut seen = Seen {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        review: None,
    };
    let body = req.into_body().collect().await.unwrap().to_bytes();
    seen.review = serde_json::from_slice::<TokenReview>(&body).ok();
    let review = seen.review.clone();
    let authorized = seen.authorization.as_deref() == Some(&format!("Bearer {OWN_TOKEN}"));
    let right_place = seen.method == "POST" && seen.path == TOKENREVIEW_PATH;
    let services_of = (seen.method == "GET")
        .then(|| {
            seen.path
                .strip_prefix("/api/v1/namespaces/")?
                .strip_suffix("/services")
                .map(str::to_string)
        })
        .flatten();
    log.lock().unwrap().push(seen);

    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            k8s_status(401, "Unauthorized", "Unauthorized"),
        );
    }
    if let Some(namespace) = services_of {
        let (items, hang) = {
            let lists = lists.lock().unwrap();
            (
                lists.services.get(&namespace).cloned().unwrap_or_default(),
                lists.hang,
            )
        };
        if hang {
            return std::future::pending().await;
        }
        let list = k8s_openapi::List::<Service> {
            items,
            metadata: Default::default(),
        };
        return json_response(StatusCode::OK, serde_json::to_string(&list).unwrap());
    }
    if !right_place {
        return json_response(
            StatusCode::NOT_FOUND,
            k8s_status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    }
    let Some(review) = review else {
        return json_response(
            StatusCode::BAD_REQUEST,
            k8s_status(400, "BadRequest", "not a TokenReview"),
        );
    };
    match handler(&review) {
        Reply::Review(status) => {
            let answer = TokenReview {
                status: Some(status),
                ..review
            };
            json_response(StatusCode::CREATED, serde_json::to_string(&answer).unwrap())
        }
        Reply::Raw(code, body) => json_response(code, body),
        Reply::Hang => std::future::pending().await,
    }
}

/// Writes `dir/kubeconfig`: one cluster at `server` trusting `ca_pem`, one user with `token`.
pub fn kubeconfig(dir: &Path, server: &str, ca_pem: &str, token: &str) -> PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: sentinel
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: sentinel
current-context: test
"
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

/// An authenticated review of a service account `system:serviceaccount:<ns>:<name>`, for these
/// audiences, with the groups and pod-bound `extra` a real API server reports.
pub fn service_account(namespace: &str, name: &str, audiences: &[&str]) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        error: None,
        user: Some(UserInfo {
            username: Some(format!("system:serviceaccount:{namespace}:{name}")),
            uid: Some("4b0c6a9e-1f0e-4c55-9d0b-6f1c1e0f8a11".into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]),
            extra: Some(
                [
                    (
                        "authentication.kubernetes.io/pod-name",
                        format!("{name}-7d9f-x2k4q"),
                    ),
                    (
                        "authentication.kubernetes.io/pod-uid",
                        "0d1f1a47-77a5-4f54-9d0e-2a8e2b6f9c3d".to_string(),
                    ),
                    (
                        "authentication.kubernetes.io/credential-id",
                        "JTI=9a1d8c2e-3f4b-4c5d-8e6f-7a8b9c0d1e2f".to_string(),
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), vec![v]))
                .collect(),
            ),
        }),
    }
}

/// `authenticated: false` with the API server's reason.
pub fn rejected(why: &str) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(false),
        error: Some(why.into()),
        ..TokenReviewStatus::default()
    }
}

/// An API server that authenticates [`AGENT_TOKEN`] (tools/agent, for the `mcp-sentinel`
/// audience) and rejects any other token.
pub async fn agent_cluster() -> ApiServer {
    ApiServer::start(|review| {
        if review.spec.token.as_deref() == Some(AGENT_TOKEN) {
            Reply::Review(service_account("tools", "agent", &["mcp-sentinel"]))
        } else {
            Reply::Review(rejected("invalid bearer token"))
        }
    })
    .await
}
