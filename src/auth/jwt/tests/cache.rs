//! The verified-token cache: never past `exp`, never after a key it may rest on was removed,
//! bounded, and fast.

use super::*;

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
