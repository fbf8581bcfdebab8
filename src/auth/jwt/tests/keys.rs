//! Key fetching: rotation, the unknown-kid throttle, discovery, the fetch rules, the first fetch
//! and readiness, and the metrics.

use super::*;

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
    let err = v.issuers[0].refresh_now().await.unwrap_err().to_string();
    assert!(err.contains("not the configured one"), "{err}");
    assert_eq!(
        v.verify(&idp.mint(&kid, &idp.claims("a", AUD))).await,
        Err(AuthFailure::Unavailable)
    );
    idp.set_discovery_issuer(None);
    idp.set_jwks_uri(Some(idp.jwks_uri().replace("https://", "http://")));
    let err = v.issuers[0].refresh_now().await.unwrap_err().to_string();
    assert!(err.contains("https"), "{err}");
    assert_eq!(idp.jwks_fetches(), 0);
}

async fn fetch(idp: &Idp, url: String, ca: std::path::PathBuf) -> Result<(), String> {
    let mut cfg = issuer_cfg(idp);
    cfg.keys = KeySource::Jwks(url);
    cfg.ca_file = Some(ca);
    cfg.timeout = Duration::from_millis(500);
    let v = verifier(config(cfg));
    v.issuers[0].refresh_now().await.map_err(|e| e.to_string())
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

#[test]
fn retries_are_jittered_down_never_up() {
    let d = Duration::from_secs(8);
    let waits: Vec<Duration> = (0..64)
        .map(|_| crate::auth::jwt::keys::jittered(d))
        .collect();
    assert!(
        waits.iter().all(|w| *w <= d && *w >= d * 3 / 4),
        "{waits:?}"
    );
    assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
}
