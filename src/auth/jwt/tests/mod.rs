//! The verifier against a real HTTPS IdP (`tests/common/idp.rs`), by concern: `verification`
//! (the attack table, claims, config), `keys` (rotation, the unknown-kid throttle, discovery,
//! the fetch rules, readiness and metrics), `cache`. Here: what they share.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use prometheus::{Encoder as _, Registry, TextEncoder};
use serde_json::{Value, json};

use super::idp::{Idp, b64, now, replace_payload};
use super::jwks::KeySet;
use super::*;
use crate::config::auth::{IssuerConfig, KeySource};
use crate::identity::AuthMethod;

mod cache;
mod keys;
mod verification;

const AUD: &str = "https://mcp.example.com/mcp";

fn issuer_cfg(idp: &Idp) -> IssuerConfig {
    let mut c = IssuerConfig::new(
        idp.issuer(),
        KeySource::Jwks(idp.jwks_uri()),
        vec![AUD.to_string()],
    );
    c.algorithms = Algorithm::ALL.to_vec();
    c.ca_file = Some(idp.ca_file());
    c
}

fn config(issuer: IssuerConfig) -> JwtConfig {
    JwtConfig {
        issuers: vec![issuer],
        ..JwtConfig::default()
    }
}

fn verifier(cfg: JwtConfig) -> Arc<JwtVerifier> {
    JwtVerifier::new(cfg, &Registry::new()).expect("valid config")
}

async fn refresh(v: &JwtVerifier) {
    for i in &v.issuers {
        i.refresh_now().await.expect("JWKS fetch");
    }
}

/// An IdP with one key for `alg` and a verifier (all algorithms allowed) that has fetched it.
async fn setup(alg: &str) -> (Idp, String, Arc<JwtVerifier>) {
    let idp = Idp::start().await;
    let kid = idp.add_key(alg);
    let v = verifier(config(issuer_cfg(&idp)));
    refresh(&v).await;
    (idp, kid, v)
}

fn with(mut claims: Value, extra: Value) -> Value {
    if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        for (k, v) in extra {
            if v.is_null() {
                c.remove(&k);
            } else {
                c.insert(k, v);
            }
        }
    }
    claims
}
