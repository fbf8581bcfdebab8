//! A test OpenID provider: an HTTPS server (certificate from an rcgen CA) serving
//! `/.well-known/openid-configuration` and `/jwks.json`, keys that can be added and removed
//! (rotation) while it runs, and token minting — including the forgeries an attacker would try
//! (`alg: none`, HS256 keyed with the RSA public key, arbitrary headers and claims).
//!
//! Self-contained: it uses no `mcp_sentinel` item, so both the library's unit tests (through
//! `#[path]`) and the integration tests can compile it.
//!
//! RSA keys come from `tests/fixtures/jwt/*.pem` (ring cannot generate RSA keys); they are
//! handed out round-robin, each under a fresh `kid`. EC and Ed25519 keys are generated.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use ring::rand::SystemRandom;
use ring::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const RSA_KEYS: [&str; 3] = [
    include_str!("../fixtures/jwt/rsa2048-a.pem"),
    include_str!("../fixtures/jwt/rsa2048-b.pem"),
    include_str!("../fixtures/jwt/rsa3072-c.pem"),
];

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `token` with its payload replaced by `claims` (signature kept): a tampered token.
pub fn replace_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string()),
        parts.get(2).copied().unwrap_or("")
    )
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

struct IdpKey {
    kid: String,
    alg: String,
    signer: Signer,
    jwk: Value,
    published: bool,
}

#[derive(Default)]
struct State {
    keys: Vec<IdpKey>,
    down: bool,
    /// `issuer` in the discovery document, when not the real one.
    discovery_issuer: Option<String>,
    /// `jwks_uri` in the discovery document, when not `{issuer}/jwks.json`.
    jwks_uri: Option<String>,
    /// Served after these keys (raw JWKs, e.g. unusable ones).
    extra_jwks: Vec<Value>,
    jwks_delay: Duration,
    next_kid: usize,
    next_rsa: usize,
}

struct Shared {
    issuer: String,
    state: Mutex<State>,
    jwks_fetches: AtomicUsize,
    discovery_fetches: AtomicUsize,
}

pub struct Idp {
    shared: Arc<Shared>,
    ca_pem: String,
    dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
    rng: SystemRandom,
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Idp {
    /// Starts the server on 127.0.0.1; the issuer is `https://localhost:{port}`. No keys yet.
    pub async fn start() -> Idp {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test IdP CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::from_pem_slice(leaf_key.serialize_pem().as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            issuer: format!("https://localhost:{port}"),
            state: Mutex::new(State::default()),
            jwks_fetches: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
        });
        let server = tokio::spawn(serve(listener, acceptor, shared.clone()));

        let dir =
            std::env::temp_dir().join(format!("mcp-sentinel-idp-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_pem = ca.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Idp {
            shared,
            ca_pem,
            dir,
            server,
            rng: SystemRandom::new(),
        }
    }

    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.shared.issuer)
    }

    /// Any path on the server, e.g. `/redirect` (a 302 to the JWKS) or `/big` (a 2 MiB body).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.issuer)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A PEM file with the CA that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    /// Adds and publishes a key for `alg` (RS*/PS*: RSA, ES256: P-256, ES384: P-384, EdDSA:
    /// Ed25519); its JWK carries `kid`, `use: sig` and `alg`. Returns the kid.
    pub fn add_key(&self, alg: &str) -> String {
        self.add_key_with(alg, true)
    }

    /// Like `add_key`; `jwk_alg: false` leaves `alg` out of the JWK (then any algorithm of the
    /// key's type fits it).
    pub fn add_key_with(&self, alg: &str, jwk_alg: bool) -> String {
        let mut st = self.state();
        st.next_kid += 1;
        let kid = format!("key-{}", st.next_kid);
        let (signer, mut jwk) = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                let pem = RSA_KEYS[st.next_rsa % RSA_KEYS.len()];
                st.next_rsa += 1;
                let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
                let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
                let public = RsaPublicKeyComponents::<Vec<u8>>::from(key.public());
                let jwk = json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)});
                (Signer::Rsa(key), jwk)
            }
            "ES256" | "ES384" => {
                let (signing, crv) = if alg == "ES256" {
                    (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
                } else {
                    (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
                };
                let doc = EcdsaKeyPair::generate_pkcs8(signing, &self.rng).unwrap();
                let key = EcdsaKeyPair::from_pkcs8(signing, doc.as_ref(), &self.rng).unwrap();
                let point = key.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                let jwk = json!({
                    "kty": "EC", "crv": crv,
                    "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..]),
                });
                (Signer::Ec(key), jwk)
            }
            "EdDSA" => {
                let doc = Ed25519KeyPair::generate_pkcs8(&self.rng).unwrap();
                let key = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
                let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key())});
                (Signer::Ed(key), jwk)
            }
            other => panic!("Idp cannot make a key for {other}"),
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        if jwk_alg {
            jwk["alg"] = json!(alg);
        }
        st.keys.push(IdpKey {
            kid: kid.clone(),
            alg: alg.to_string(),
            signer,
            jwk,
            published: true,
        });
        kid
    }

    /// Stops publishing the key (rotation); it can still sign, to mint now-orphaned tokens.
    pub fn remove_key(&self, kid: &str) {
        for k in self.state().keys.iter_mut().filter(|k| k.kid == kid) {
            k.published = false;
        }
    }

    /// The JWK of a key, as published.
    pub fn jwk(&self, kid: &str) -> Value {
        let st = self.state();
        st.keys.iter().find(|k| k.kid == kid).unwrap().jwk.clone()
    }

    /// While down, both documents answer 503.
    pub fn set_down(&self, down: bool) {
        self.state().down = down;
    }

    pub fn set_discovery_issuer(&self, issuer: Option<String>) {
        self.state().discovery_issuer = issuer;
    }

    pub fn set_jwks_uri(&self, uri: Option<String>) {
        self.state().jwks_uri = uri;
    }

    pub fn set_extra_jwks(&self, jwks: Vec<Value>) {
        self.state().extra_jwks = jwks;
    }

    /// The JWKS answer waits this long (to hold a fetch in flight).
    pub fn set_jwks_delay(&self, delay: Duration) {
        self.state().jwks_delay = delay;
    }

    /// Claims a verifier configured with `audience` accepts: `iss`, `sub`, `aud`, `iat`, and
    /// `exp` in 5 minutes.
    pub fn claims(&self, sub: &str, audience: &str) -> Value {
        let now = now();
        json!({
            "iss": self.shared.issuer,
            "sub": sub,
            "aud": audience,
            "iat": now,
            "exp": now + 300,
        })
    }

    /// A token signed by `kid` with the key's algorithm, header `{alg, typ, kid}`.
    pub fn mint(&self, kid: &str, claims: &Value) -> String {
        let alg = self.key_alg(kid);
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
        self.sign(kid, &alg, &header, claims)
    }

    pub fn key_alg(&self, kid: &str) -> String {
        let st = self.state();
        st.keys.iter().find(|k| k.kid == kid).unwrap().alg.clone()
    }

    /// A token with exactly this header, signed by `kid` with `alg` (which must suit the key's
    /// type: any RS*/PS* for RSA keys). Whatever the header says.
    pub fn sign(&self, kid: &str, alg: &str, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let st = self.state();
        let key = st.keys.iter().find(|k| k.kid == kid).unwrap();
        let sig = match &key.signer {
            Signer::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} with an RSA key"),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &self.rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
            Signer::Ec(k) => k
                .sign(&self.rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Ed(k) => k.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(sig))
    }

    /// `{"alg":"none"}` and an empty signature.
    pub fn mint_none(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT"});
        format!("{}.{}.", b64(header.to_string()), b64(claims.to_string()))
    }

    /// The key-confusion attack: HS256 keyed with RSA key `kid`'s public key, as the PEM
    /// (`RSA PUBLIC KEY`, PKCS#1) a naive verifier would feed to HMAC.
    pub fn mint_hs256_with_public_key(&self, kid: &str, claims: &Value) -> String {
        let secret = {
            let st = self.state();
            let key = st.keys.iter().find(|k| k.kid == kid).unwrap();
            let Signer::Rsa(k) = &key.signer else {
                panic!("{kid} is not an RSA key")
            };
            let der = k.public().as_ref();
            let body = STANDARD.encode(der);
            let lines: Vec<&str> = body
                .as_bytes()
                .chunks(64)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            format!(
                "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
                lines.join("\n")
            )
        };
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let tag = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(tag.as_ref()))
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(req, &shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

async fn route(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/.well-known/openid-configuration" => {
            shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
            let st = shared.state.lock().unwrap();
            if st.down {
                return json_response(StatusCode::SERVICE_UNAVAILABLE, "{}".into());
            }
            let doc = json!({
                "issuer": st.discovery_issuer.clone().unwrap_or_else(|| shared.issuer.clone()),
                "jwks_uri": st.jwks_uri.clone()
                    .unwrap_or_else(|| format!("{}/jwks.json", shared.issuer)),
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
            });
            json_response(StatusCode::OK, doc.to_string())
        }
        "/jwks.json" => {
            shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let delay = shared.state.lock().unwrap().jwks_delay;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let st = shared.state.lock().unwrap();
            if st.down {
                return json_response(StatusCode::SERVICE_UNAVAILABLE, "{}".into());
            }
            let keys: Vec<Value> = st
                .keys
                .iter()
                .filter(|k| k.published)
                .map(|k| k.jwk.clone())
                .chain(st.extra_jwks.iter().cloned())
                .collect();
            json_response(StatusCode::OK, json!({ "keys": keys }).to_string())
        }
        "/redirect" => Response::builder()
            .status(StatusCode::FOUND)
            .header("location", "/jwks.json")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        "/big" => json_response(StatusCode::OK, " ".repeat(2 * 1024 * 1024)),
        _ => json_response(StatusCode::NOT_FOUND, "{}".into()),
    }
}
