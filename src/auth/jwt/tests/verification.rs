//! Verification: every algorithm, the header rules, the claims, the principal, and the
//! checks on the configuration.

use super::*;

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
