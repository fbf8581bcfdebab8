//! The verifier against a real HTTPS IdP (`tests/common/idp.rs`): the attack table, rotation,
//! the unknown-kid throttle, the cache, discovery, the fetch rules, readiness and metrics.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use prometheus::{Encoder as _, Registry, TextEncoder};
use serde_json::{Value, json};

use super::idp::{Idp, b64, now, replace_payload};
use super::*;

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

#[tokio::test]
async fn every_supported_algorithm_verifies() {
    let idp = Idp::start().await;
    let kids: Vec<(Algorithm, String)> = Algorithm::ALL
        .iter()
        .map(|a| (*a, idp.add_key(a.as_str())))
        .collect();
    let v = verifier(config(issuer_cfg(&idp)));
    refresh(&v).await;
    for (alg, kid) in &kids {
        let token = idp.mint(kid, &idp.claims("alice", AUD));
        let p = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(p.subject, "alice", "{alg}");
        assert_eq!(p.method, AuthMethod::Jwt);
    }
    // RSA keys without a JWK `alg` verify both paddings and all hashes.
    let kid = idp.add_key_with("RS256", false);
    refresh(&v).await;
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        let header = json!({"alg": alg, "kid": kid});
        let token = idp.sign(&kid, alg, &header, &idp.claims("bob", AUD));
        assert_eq!(v.verify(&token).await.map(|p| p.subject), Ok("bob".into()));
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let (idp, _, v) = setup("RS256").await;
    let token = idp.mint_none(&idp.claims("mallory", AUD));
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Algorithm));
    // Also with a signature part present, and spelled differently.
    for alg in ["none", "None", "NONE", ""] {
        let header = json!({"alg": alg});
        let token = format!(
            "{}.{}.{}",
            b64(header.to_string()),
            b64(idp.claims("mallory", AUD).to_string()),
            b64("x")
        );
        assert_eq!(v.verify(&token).await, Err(AuthFailure::Algorithm), "{alg}");
    }
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let (idp, kid, v) = setup("RS256").await;
    let token = idp.mint_hs256_with_public_key(&kid, &idp.claims("mallory", AUD));
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Algorithm));
}

#[tokio::test]
async fn algorithm_outside_the_issuer_list_is_refused() {
    let idp = Idp::start().await;
    let rsa = idp.add_key("RS256");
    let ec = idp.add_key("ES256");
    let mut cfg = issuer_cfg(&idp);
    cfg.algorithms = vec![Algorithm::ES256];
    let v = verifier(config(cfg));
    refresh(&v).await;
    assert!(
        v.verify(&idp.mint(&ec, &idp.claims("a", AUD)))
            .await
            .is_ok()
    );
    assert_eq!(
        v.verify(&idp.mint(&rsa, &idp.claims("a", AUD))).await,
        Err(AuthFailure::Algorithm)
    );
}

#[tokio::test]
async fn key_must_fit_the_token_algorithm() {
    let (idp, rsa, v) = setup("PS256").await;
    let ec = idp.add_key("ES256");
    refresh(&v).await;
    let claims = idp.claims("a", AUD);
    // The RSA key's JWK pins PS256: an RS256 token under its kid is refused.
    let header = json!({"alg": "RS256", "kid": rsa});
    let token = idp.sign(&rsa, "RS256", &header, &claims);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Algorithm));
    // An ES384 token naming the P-256 key.
    let header = json!({"alg": "ES384", "kid": ec});
    let token = idp.sign(&ec, "ES256", &header, &claims);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Algorithm));
    // An EdDSA token naming the RSA key.
    let header = json!({"alg": "EdDSA", "kid": rsa});
    let token = idp.sign(&rsa, "PS256", &header, &claims);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Algorithm));
}

#[tokio::test]
async fn expired_and_not_yet_valid() {
    let (idp, kid, v) = setup("ES256").await;
    let t = now();
    let expired = with(idp.claims("a", AUD), json!({"exp": t - 120}));
    assert_eq!(
        v.verify(&idp.mint(&kid, &expired)).await,
        Err(AuthFailure::Expired)
    );
    let early = with(idp.claims("a", AUD), json!({"nbf": t + 120}));
    assert_eq!(
        v.verify(&idp.mint(&kid, &early)).await,
        Err(AuthFailure::NotYetValid)
    );
    let no_exp = with(idp.claims("a", AUD), json!({"exp": null}));
    assert_eq!(
        v.verify(&idp.mint(&kid, &no_exp)).await,
        Err(AuthFailure::Malformed)
    );
    let text_exp = with(idp.claims("a", AUD), json!({"exp": "tomorrow"}));
    assert_eq!(
        v.verify(&idp.mint(&kid, &text_exp)).await,
        Err(AuthFailure::Malformed)
    );
}

#[tokio::test]
async fn leeway_is_honoured() {
    let idp = Idp::start().await;
    let kid = idp.add_key("EdDSA");
    let lenient = verifier(config(issuer_cfg(&idp)));
    let strict = verifier(JwtConfig {
        leeway: Duration::ZERO,
        ..config(issuer_cfg(&idp))
    });
    refresh(&lenient).await;
    refresh(&strict).await;
    let t = now();
    let just_expired = idp.mint(&kid, &with(idp.claims("a", AUD), json!({"exp": t - 30})));
    let almost_valid = idp.mint(&kid, &with(idp.claims("a", AUD), json!({"nbf": t + 30})));
    assert!(lenient.verify(&just_expired).await.is_ok());
    assert!(lenient.verify(&almost_valid).await.is_ok());
    assert_eq!(
        strict.verify(&just_expired).await,
        Err(AuthFailure::Expired)
    );
    assert_eq!(
        strict.verify(&almost_valid).await,
        Err(AuthFailure::NotYetValid)
    );
    // Fractional NumericDates are fine.
    let frac = idp.mint(
        &kid,
        &with(idp.claims("a", AUD), json!({"exp": t as f64 + 100.5})),
    );
    assert!(strict.verify(&frac).await.is_ok());
}

#[tokio::test]
async fn iat_in_the_future_beyond_the_leeway_is_refused() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES256");
    let v = verifier(JwtConfig {
        leeway: Duration::from_secs(60),
        ..config(issuer_cfg(&idp))
    });
    refresh(&v).await;
    let t = now();
    let table: [(&str, Value, Result<(), AuthFailure>); 7] = [
        ("iat now", json!(t), Ok(())),
        ("iat in the past", json!(t - 3600), Ok(())),
        ("iat now + leeway - 1", json!(t + 59), Ok(())),
        (
            "iat now + leeway + 60",
            json!(t + 120),
            Err(AuthFailure::NotYetValid),
        ),
        (
            "iat a day ahead",
            json!(t + 86_400),
            Err(AuthFailure::NotYetValid),
        ),
        ("iat missing", Value::Null, Ok(())),
        (
            "iat not a number",
            json!("yesterday"),
            Err(AuthFailure::Malformed),
        ),
    ];
    for (name, iat, want) in table {
        let mut claims = idp.claims("a", AUD);
        match iat {
            Value::Null => {
                claims.as_object_mut().unwrap().remove("iat");
            }
            iat => claims["iat"] = iat,
        }
        let got = v.verify(&idp.mint(&kid, &claims)).await.map(|_| ());
        assert_eq!(got, want, "{name}");
    }
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let (idp, kid, v) = setup("ES256").await;
    for iss in [json!("https://evil.example"), json!(null), json!(7)] {
        // `with` removes the claim for null.
        let claims = with(idp.claims("a", AUD), json!({ "iss": iss }));
        assert_eq!(
            v.verify(&idp.mint(&kid, &claims)).await,
            Err(AuthFailure::Issuer),
            "{iss}"
        );
    }
    // Trailing slash is a different issuer: exact match.
    let claims = with(
        idp.claims("a", AUD),
        json!({"iss": format!("{}/", idp.issuer())}),
    );
    assert_eq!(
        v.verify(&idp.mint(&kid, &claims)).await,
        Err(AuthFailure::Issuer)
    );
}

#[tokio::test]
async fn audience_must_match() {
    let (idp, kid, v) = setup("ES256").await;
    for (aud, ok) in [
        (json!("https://other.example.com/mcp"), false),
        (json!(["https://other.example.com/mcp"]), false),
        (json!([]), false),
        (json!(null), false),
        (json!(42), false),
        (json!(AUD), true),
        (json!(["https://other.example.com/mcp", AUD]), true),
    ] {
        let claims = with(idp.claims("a", AUD), json!({ "aud": aud }));
        let r = v.verify(&idp.mint(&kid, &claims)).await;
        if ok {
            assert!(r.is_ok(), "{aud}: {r:?}");
        } else {
            assert_eq!(r, Err(AuthFailure::Audience), "{aud}");
        }
    }
}

#[tokio::test]
async fn tampered_tokens_fail_the_signature() {
    let (idp, kid, v) = setup("RS256").await;
    let token = idp.mint(&kid, &idp.claims("alice", AUD));
    let forged = replace_payload(&token, &idp.claims("admin", AUD));
    assert_eq!(v.verify(&forged).await, Err(AuthFailure::Signature));
    // A flipped signature byte.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
    raw[10] ^= 1;
    let flipped = format!("{head}.{}", b64(raw));
    assert_eq!(v.verify(&flipped).await, Err(AuthFailure::Signature));
    // An empty signature.
    assert_eq!(
        v.verify(&format!("{head}.")).await,
        Err(AuthFailure::Signature)
    );
    // Another key's valid signature under this kid.
    let other = idp.add_key("RS256");
    refresh(&v).await;
    let theirs = idp.mint(&other, &idp.claims("alice", AUD));
    let swapped = format!("{}.{}", head, theirs.rsplit_once('.').unwrap().1);
    assert_eq!(v.verify(&swapped).await, Err(AuthFailure::Signature));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn header_rules() {
    let (idp, kid, v) = setup("ES256").await;
    let claims = idp.claims("a", AUD);
    // crit: no extension is understood.
    let header = json!({"alg": "ES256", "kid": kid, "crit": ["exp"], "exp": 1});
    let token = idp.sign(&kid, "ES256", &header, &claims);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Malformed));
    // jku/x5u/jwk/x5c are ignored: the kid still has to be in the configured JWKS.
    let fetches = idp.jwks_fetches();
    let header = json!({
        "alg": "ES256", "kid": "attacker",
        "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert.pem",
        "jwk": idp.jwk(&kid), "x5c": ["MIIB"],
    });
    let token = idp.sign(&kid, "ES256", &header, &claims);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::UnknownKey));
    assert_eq!(idp.jwks_fetches(), fetches + 1, "one refresh, at the IdP");
    // ... and do not get in the way of a good kid.
    let header = json!({"alg": "ES256", "kid": kid, "jku": "https://evil.example/jwks.json"});
    let token = idp.sign(&kid, "ES256", &header, &claims);
    assert!(v.verify(&token).await.is_ok());
    // No kid: the single fitting key is used.
    let header = json!({"alg": "ES256"});
    let token = idp.sign(&kid, "ES256", &header, &claims);
    assert!(v.verify(&token).await.is_ok());
    // ... unless there are two.
    let _second = idp.add_key("ES256");
    refresh(&v).await;
    let token = idp.sign(
        &kid,
        "ES256",
        &header,
        &with(claims.clone(), json!({"jti": "x"})),
    );
    assert_eq!(v.verify(&token).await, Err(AuthFailure::UnknownKey));
    // A non-string kid.
    let header = json!({"alg": "ES256", "kid": 1});
    let token = idp.sign(&kid, "ES256", &header, &claims);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Malformed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES256");
    let mut cfg = issuer_cfg(&idp);
    cfg.min_refresh_interval = Duration::from_millis(800);
    let v = verifier(config(cfg));
    refresh(&v).await;
    assert_eq!(idp.jwks_fetches(), 1);

    // A concurrent flood of bogus kids: all wait on one slow fetch.
    idp.set_jwks_delay(Duration::from_millis(200));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let header = json!({"alg": "ES256", "kid": format!("bogus-{i}")});
        let token = idp.sign(&kid, "ES256", &header, &idp.claims("a", AUD));
        let v = v.clone();
        tasks.push(tokio::spawn(async move { v.verify(&token).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Err(AuthFailure::UnknownKey));
    }
    assert_eq!(idp.jwks_fetches(), 2, "one refetch for the whole flood");
    idp.set_jwks_delay(Duration::ZERO);

    // More of them within the interval: no fetch at all.
    for i in 0..20 {
        let header = json!({"alg": "ES256", "kid": format!("again-{i}")});
        let token = idp.sign(&kid, "ES256", &header, &idp.claims("a", AUD));
        assert_eq!(v.verify(&token).await, Err(AuthFailure::UnknownKey));
    }
    assert_eq!(idp.jwks_fetches(), 2);
    // A good token is unaffected meanwhile.
    assert!(
        v.verify(&idp.mint(&kid, &idp.claims("a", AUD)))
            .await
            .is_ok()
    );

    // After the interval, one more.
    tokio::time::sleep(Duration::from_millis(900)).await;
    for i in 0..5 {
        let header = json!({"alg": "ES256", "kid": format!("later-{i}")});
        let token = idp.sign(&kid, "ES256", &header, &idp.claims("a", AUD));
        assert_eq!(v.verify(&token).await, Err(AuthFailure::UnknownKey));
    }
    assert_eq!(idp.jwks_fetches(), 3);
}

#[tokio::test]
async fn key_rotation_without_restart() {
    let idp = Idp::start().await;
    let old = idp.add_key("RS256");
    let mut cfg = issuer_cfg(&idp);
    cfg.min_refresh_interval = Duration::from_millis(100);
    let v = verifier(config(cfg));
    refresh(&v).await;
    let old_token = idp.mint(&old, &idp.claims("alice", AUD));
    assert!(v.verify(&old_token).await.is_ok());
    assert_eq!(v.cache.len(), 1);

    // The IdP adds a key and starts signing with it: picked up through the unknown kid.
    let new = idp.add_key("ES256");
    let new_token = idp.mint(&new, &idp.claims("alice", AUD));
    assert!(v.verify(&new_token).await.is_ok());
    assert_eq!(idp.jwks_fetches(), 2);
    // The old key is still published: its token (cached) still verifies.
    assert!(v.verify(&old_token).await.is_ok());

    // The old key is withdrawn; once the verifier sees that, old tokens fail — cached or not.
    idp.remove_key(&old);
    refresh(&v).await;
    assert_eq!(v.verify(&old_token).await, Err(AuthFailure::UnknownKey));
    let fresh_old = idp.mint(&old, &with(idp.claims("bob", AUD), json!({"jti": "1"})));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(v.verify(&fresh_old).await, Err(AuthFailure::UnknownKey));
    assert!(v.verify(&new_token).await.is_ok());

    // A refresh that removes nothing keeps the cache.
    let before = v.cache.len();
    idp.add_key("EdDSA");
    refresh(&v).await;
    assert_eq!(v.cache.len(), before);
}

#[tokio::test]
async fn rotation_race_never_serves_a_token_of_a_removed_key() {
    // A verification that read the old key set before the rotation inserts after it: the
    // generation floor keeps the entry from being served.
    let (idp, kid, v) = setup("ES256").await;
    let token = idp.mint(&kid, &idp.claims("a", AUD));
    let (_, generation) = v.issuers[0]
        .key_for(Some(&kid), Algorithm::ES256)
        .await
        .unwrap();
    idp.remove_key(&kid);
    idp.add_key("ES256");
    refresh(&v).await;
    let mut key = [0u8; 32];
    key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    v.cache.insert(
        key,
        Entry {
            principal: Principal::new("a", AuthMethod::Jwt),
            exp: v.now() + 100.0,
            issuer: 0,
            generation,
        },
        v.now(),
    );
    assert_eq!(v.verify(&token).await, Err(AuthFailure::UnknownKey));
}

#[tokio::test]
async fn cache_hit_does_not_reverify() {
    let (idp, kid, v) = setup("RS256").await;
    let claims = with(
        idp.claims("alice", AUD),
        json!({"scope": "read write", "groups": ["dev"]}),
    );
    let token = idp.mint(&kid, &claims);
    let first = v.verify(&token).await.unwrap();
    // Take every key away without a rotation (no invalidation): only the cache can answer.
    {
        let mut keys = v.issuers[0].keys.write().unwrap();
        let generation = keys.generation;
        *keys = Arc::new(KeySet {
            keys: Vec::new(),
            generation,
            loaded: true,
        });
    }
    let hits = 10_000;
    let start = Instant::now();
    for _ in 0..hits {
        assert_eq!(v.verify(&token).await.as_ref(), Ok(&first));
    }
    let per_hit = start.elapsed() / hits;
    assert!(per_hit < Duration::from_micros(200), "{per_hit:?} per hit");
    // A token not in the cache does need a key.
    let other = idp.mint(&kid, &with(claims, json!({"jti": "2"})));
    idp.set_down(true);
    assert_eq!(v.verify(&other).await, Err(AuthFailure::UnknownKey));
}

#[tokio::test]
async fn cache_never_serves_past_exp() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES256");
    let v = verifier(JwtConfig {
        leeway: Duration::ZERO,
        ..config(issuer_cfg(&idp))
    });
    refresh(&v).await;
    let token = idp.mint(
        &kid,
        &with(idp.claims("a", AUD), json!({"exp": now() + 100})),
    );
    assert!(v.verify(&token).await.is_ok());
    assert_eq!(v.cache.len(), 1);
    v.skew.store(90, Ordering::Relaxed);
    assert!(v.verify(&token).await.is_ok());
    v.skew.store(101, Ordering::Relaxed);
    assert_eq!(v.verify(&token).await, Err(AuthFailure::Expired));
}

#[tokio::test]
async fn cache_is_bounded() {
    let idp = Idp::start().await;
    let kid = idp.add_key("EdDSA");
    let v = verifier(JwtConfig {
        cache_size: 40,
        ..config(issuer_cfg(&idp))
    });
    refresh(&v).await;
    let tokens: Vec<String> = (0..300)
        .map(|i| idp.mint(&kid, &with(idp.claims("a", AUD), json!({ "jti": i }))))
        .collect();
    for t in &tokens {
        assert!(v.verify(t).await.is_ok());
        assert!(v.cache.len() <= 40);
    }
    assert_eq!(v.cache.len(), 40);
    // Expired entries go first, then an arbitrary one.
    let c = Cache::new(2, 1);
    let entry = |exp| Entry {
        principal: Principal::new("x", AuthMethod::Jwt),
        exp,
        issuer: 0,
        generation: 0,
    };
    c.insert([1; 32], entry(10.0), 5.0);
    c.insert([2; 32], entry(100.0), 5.0);
    c.insert([3; 32], entry(100.0), 50.0);
    assert!(c.get(&[1; 32], 5.0).is_none());
    assert!(c.get(&[2; 32], 50.0).is_some());
    assert!(c.get(&[3; 32], 50.0).is_some());
    c.insert([4; 32], entry(100.0), 50.0);
    assert_eq!(c.len(), 2);
    assert!(c.get(&[4; 32], 50.0).is_some());
    // Disabled.
    let off = Cache::new(0, 1);
    off.insert([1; 32], entry(100.0), 5.0);
    assert!(off.get(&[1; 32], 5.0).is_none());
}

#[tokio::test]
async fn principal_from_claims() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES384");
    let mut cfg = issuer_cfg(&idp);
    cfg.claims = vec!["email".into(), "tenant".into(), "absent".into()];
    let v = verifier(config(cfg));
    refresh(&v).await;
    let claims = with(
        idp.claims("alice", AUD),
        json!({
            "scope": "tools:read  tools:call", "scp": ["ignored"],
            "groups": ["dev", 7, "ops"], "email": "a@example.com", "tenant": {"id": 1},
        }),
    );
    let p = v.verify(&idp.mint(&kid, &claims)).await.unwrap();
    assert_eq!(p.subject, "alice");
    assert_eq!(p.issuer.as_deref(), Some(idp.issuer().as_str()));
    assert_eq!(p.method, AuthMethod::Jwt);
    assert_eq!(p.scopes, ["tools:read", "tools:call"]);
    assert_eq!(p.groups, ["dev", "ops"]);
    assert_eq!(p.claims.get("email"), Some(&json!("a@example.com")));
    assert_eq!(p.claims.get("tenant"), Some(&json!({"id": 1})));
    assert_eq!(p.claims.len(), 2);

    let scp = with(
        idp.claims("bob", AUD),
        json!({"scp": ["a", "b"], "groups": "solo"}),
    );
    let p = v.verify(&idp.mint(&kid, &scp)).await.unwrap();
    assert_eq!(p.scopes, ["a", "b"]);
    assert_eq!(p.groups, ["solo"]);
    let scp_str = with(idp.claims("bob", AUD), json!({"scp": "x y"}));
    assert_eq!(
        v.verify(&idp.mint(&kid, &scp_str)).await.unwrap().scopes,
        ["x", "y"]
    );

    for sub in [json!(null), json!(""), json!(12)] {
        let claims = with(idp.claims("x", AUD), json!({ "sub": sub }));
        assert_eq!(
            v.verify(&idp.mint(&kid, &claims)).await,
            Err(AuthFailure::Malformed),
            "{sub}"
        );
    }
}

#[tokio::test]
async fn custom_groups_claim() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES256");
    let mut cfg = issuer_cfg(&idp);
    cfg.groups_claim = "roles".into();
    let v = verifier(config(cfg));
    refresh(&v).await;
    let claims = with(
        idp.claims("a", AUD),
        json!({"roles": ["admin"], "groups": ["dev"]}),
    );
    assert_eq!(
        v.verify(&idp.mint(&kid, &claims)).await.unwrap().groups,
        ["admin"]
    );
}

#[tokio::test]
async fn garbage_never_panics() {
    let (idp, kid, v) = setup("ES256").await;
    let good = idp.mint(&kid, &idp.claims("a", AUD));
    let (h, rest) = good.split_once('.').unwrap();
    let (p, s) = rest.split_once('.').unwrap();
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    let huge_parts = format!("{h}.{}.{s}", "A".repeat(4 * 1024 * 1024));
    let cases: Vec<String> = vec![
        String::new(),
        "a".into(),
        "a.b".into(),
        ".".into(),
        "..".into(),
        "...".into(),
        format!("{good}.x"),
        format!("{h}.{p}.{s}.{s}.{s}"),
        format!("{h}=.{p}.{s}"),
        format!("{h}.{p}.{s}="),
        "!!!.@@@.###".into(),
        "é.é.é".into(),
        format!("{}.{p}.{s}", b64("not json")),
        format!("{}.{p}.{s}", b64("[1,2]")),
        format!("{}.{p}.{s}", b64("{}")),
        format!("{}.{p}.{s}", b64(r#"{"alg": 5}"#)),
        format!("{h}.{}.{s}", b64("null")),
        format!("{h}.{}.{s}", b64("\"str\"")),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        huge,
        huge_parts,
        "\0.\0.\0".into(),
    ];
    for t in &cases {
        let short: String = t.chars().take(60).collect();
        assert_eq!(v.verify(t).await, Err(AuthFailure::Malformed), "{short}");
        let _ = v.handles(t);
    }
    assert!(v.verify(&good).await.is_ok());
}

#[tokio::test]
async fn handles_routes_by_unverified_issuer() {
    let (idp, kid, v) = setup("ES256").await;
    assert!(v.handles(&idp.mint(&kid, &idp.claims("a", AUD))));
    // Unverified: a bad signature is still "ours" (and then fails verification here).
    assert!(v.handles(&idp.mint_none(&idp.claims("a", AUD))));
    let k8s = with(
        idp.claims("system:serviceaccount:ns:sa", AUD),
        json!({"iss": "https://kubernetes.default.svc.cluster.local"}),
    );
    assert!(!v.handles(&idp.mint(&kid, &k8s)));
    assert!(!v.handles("sk-opaque-api-key"));
    assert!(!v.handles(""));
    assert!(!v.handles(&format!("{}.{}.x", b64("{}"), b64(r#"{"iss": 1}"#))));
}

#[tokio::test]
async fn discovery_finds_the_jwks() {
    let idp = Idp::start().await;
    let kid = idp.add_key("RS256");
    let mut cfg = issuer_cfg(&idp);
    cfg.keys = KeySource::Discovery;
    let v = verifier(config(cfg));
    // Not refreshed: the first token's unknown kid fetches.
    assert!(
        v.verify(&idp.mint(&kid, &idp.claims("a", AUD)))
            .await
            .is_ok()
    );
    assert_eq!(idp.discovery_fetches(), 1);
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn discovery_checks_issuer_and_jwks_uri() {
    let idp = Idp::start().await;
    let kid = idp.add_key("RS256");
    let mut cfg = issuer_cfg(&idp);
    cfg.keys = KeySource::Discovery;
    let v = verifier(config(cfg));
    idp.set_discovery_issuer(Some("https://evil.example".into()));
    let err = v.issuers[0].refresh_now().await.unwrap_err();
    assert!(err.contains("not the configured one"), "{err}");
    assert_eq!(
        v.verify(&idp.mint(&kid, &idp.claims("a", AUD))).await,
        Err(AuthFailure::Unavailable)
    );
    idp.set_discovery_issuer(None);
    idp.set_jwks_uri(Some(idp.jwks_uri().replace("https://", "http://")));
    let err = v.issuers[0].refresh_now().await.unwrap_err();
    assert!(err.contains("https"), "{err}");
    assert_eq!(idp.jwks_fetches(), 0);
}

async fn fetch(idp: &Idp, url: String, ca: std::path::PathBuf) -> Result<(), String> {
    let mut cfg = issuer_cfg(idp);
    cfg.keys = KeySource::Jwks(url);
    cfg.ca_file = Some(ca);
    cfg.timeout = Duration::from_millis(500);
    let v = verifier(config(cfg));
    v.issuers[0].refresh_now().await
}

#[tokio::test]
async fn fetch_rules() {
    let idp = Idp::start().await;
    idp.add_key("ES256");
    assert!(fetch(&idp, idp.jwks_uri(), idp.ca_file()).await.is_ok());
    let redirect = fetch(&idp, idp.url("/redirect"), idp.ca_file())
        .await
        .unwrap_err();
    assert!(redirect.contains("302"), "{redirect}");
    let big = fetch(&idp, idp.url("/big"), idp.ca_file())
        .await
        .unwrap_err();
    assert!(big.contains("exceeds"), "{big}");
    let missing = fetch(&idp, idp.url("/nope"), idp.ca_file())
        .await
        .unwrap_err();
    assert!(missing.contains("404"), "{missing}");
    // Another CA: the TLS handshake fails.
    let stranger = Idp::start().await;
    let tls = fetch(&idp, idp.jwks_uri(), stranger.ca_file())
        .await
        .unwrap_err();
    assert!(tls.contains("TLS"), "{tls}");
    // Slow: the timeout.
    idp.set_jwks_delay(Duration::from_secs(2));
    let slow = fetch(&idp, idp.jwks_uri(), idp.ca_file())
        .await
        .unwrap_err();
    assert!(slow.contains("timed out"), "{slow}");
    idp.set_jwks_delay(Duration::ZERO);
    // Only unusable keys: an error, the old set stays.
    idp.set_extra_jwks(vec![json!({"kty": "oct", "k": "c2VjcmV0"})]);
    idp.remove_key("key-1");
    let empty = fetch(&idp, idp.jwks_uri(), idp.ca_file())
        .await
        .unwrap_err();
    assert!(empty.contains("no usable"), "{empty}");
}

#[tokio::test]
async fn idp_down_keeps_cached_keys() {
    let (idp, kid, v) = setup("ES256").await;
    idp.set_down(true);
    assert!(v.issuers[0].refresh_now().await.is_err());
    let token = idp.mint(&kid, &idp.claims("a", AUD));
    assert!(v.verify(&token).await.is_ok());
}

#[tokio::test]
async fn unavailable_before_any_keys() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES256");
    idp.set_down(true);
    let v = verifier(config(issuer_cfg(&idp)));
    assert_eq!(
        v.verify(&idp.mint(&kid, &idp.claims("a", AUD))).await,
        Err(AuthFailure::Unavailable)
    );
}

#[tokio::test]
async fn config_is_validated() {
    let idp = Idp::start().await;
    let ok = issuer_cfg(&idp);
    assert!(JwtVerifier::new(config(ok.clone()), &Registry::new()).is_ok());
    let bad = |f: &dyn Fn(&mut IssuerConfig)| {
        let mut c = ok.clone();
        f(&mut c);
        JwtVerifier::new(config(c), &Registry::new()).err()
    };
    assert!(bad(&|c| c.keys = KeySource::Jwks("http://idp.example/jwks".into())).is_some());
    assert!(bad(&|c| c.keys = KeySource::Jwks("file:///etc/passwd".into())).is_some());
    assert!(
        bad(&|c| {
            c.keys = KeySource::Discovery;
            c.issuer = "http://idp.example".into();
        })
        .is_some()
    );
    assert!(bad(&|c| c.algorithms.clear()).is_some());
    assert!(bad(&|c| c.audiences.clear()).is_some());
    assert!(bad(&|c| c.audiences = vec![String::new()]).is_some());
    assert!(bad(&|c| c.issuer.clear()).is_some());
    assert!(bad(&|c| c.ca_file = Some("/nonexistent/ca.pem".into())).is_some());
    assert!(bad(&|c| c.timeout = Duration::ZERO).is_some());
    assert!(bad(&|c| c.groups_claim.clear()).is_some());
    assert!(JwtVerifier::new(JwtConfig::default(), &Registry::new()).is_err());
    let twice = JwtConfig {
        issuers: vec![ok.clone(), ok.clone()],
        ..JwtConfig::default()
    };
    assert!(JwtVerifier::new(twice, &Registry::new()).is_err());
    // Registering twice on one registry is an error, not a panic.
    let registry = Registry::new();
    assert!(JwtVerifier::new(config(ok.clone()), &registry).is_ok());
    assert!(JwtVerifier::new(config(ok), &registry).is_err());
}

#[test]
fn algorithm_names() {
    for a in Algorithm::ALL {
        assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        assert_eq!(a.to_string(), a.as_str());
    }
    for bad in [
        "none", "HS256", "HS384", "HS512", "rs256", "ES512", "Ed25519", "",
    ] {
        assert!(bad.parse::<Algorithm>().is_err(), "{bad}");
    }
}

fn metrics_text(registry: &Registry) -> String {
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .unwrap();
    String::from_utf8(buf).unwrap()
}

#[tokio::test]
async fn spawn_drives_readiness_and_metrics() {
    let idp = Idp::start().await;
    let kid = idp.add_key("ES256");
    idp.set_down(true);
    let registry = Registry::new();
    let v = JwtVerifier::new(config(issuer_cfg(&idp)), &registry).unwrap();
    let gauge = prometheus::IntGauge::new("ready", "ready").unwrap();
    let readiness = Arc::new(Readiness::new(gauge, &[]));
    let stop = CancellationToken::new();
    let task = v.spawn(readiness.clone(), stop.clone());
    assert_eq!(readiness.blockers(), vec![READINESS_BLOCKER]);

    // Down: stays blocked, errors counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !metrics_text(&registry).contains("result=\"error\"} 1") {
        assert!(Instant::now() < deadline, "{}", metrics_text(&registry));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(readiness.blockers(), vec![READINESS_BLOCKER]);

    // Up: the retry (1 s backoff) fetches and clears the blocker.
    idp.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !readiness.blockers().is_empty() {
        assert!(Instant::now() < deadline, "still blocked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        v.verify(&idp.mint(&kid, &idp.claims("a", AUD)))
            .await
            .is_ok()
    );
    let text = metrics_text(&registry);
    let iss = idp.issuer();
    assert!(
        text.contains(&format!(
            "mcp_sentinel_jwks_refresh_total{{issuer=\"{iss}\",result=\"ok\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("mcp_sentinel_jwks_keys{{issuer=\"{iss}\"}} 1")),
        "{text}"
    );
    let stamp = text
        .lines()
        .find(|l| l.starts_with("mcp_sentinel_jwks_last_refresh_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap();
    assert!((stamp - now() as f64).abs() < 60.0, "{stamp}");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops")
        .unwrap();
}
