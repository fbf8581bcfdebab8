//! Verification of one token, before and after its signature: the JWS compact form and header
//! rules (steps 1 and 3 of the module docs), and the claims (step 6).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::config::auth::IssuerConfig;
use crate::identity::{AuthFailure, AuthMethod, Principal};

/// A NumericDate claim: absent/null → None; a JSON number → seconds; anything else malformed.
fn numeric_date(v: Option<&Value>) -> Result<Option<f64>, AuthFailure> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(AuthFailure::Malformed),
        Some(_) => Err(AuthFailure::Malformed),
    }
}

/// A string (split on whitespace when `split`, else taken whole) or an array of strings
/// (non-strings skipped).
fn strings(v: &Value, split: bool) -> Vec<String> {
    match v {
        Value::String(s) if split => s.split_whitespace().map(str::to_string).collect(),
        Value::String(s) if !s.is_empty() => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// A JWS in compact form, decoded but not verified.
pub(super) struct Jws<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, what the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

pub(super) fn parse(token: &str) -> Result<Jws<'_>, AuthFailure> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed);
    };
    let b64 = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthFailure::Malformed)
    };
    let header: Map<String, Value> =
        serde_json::from_slice(&b64(h)?).map_err(|_| AuthFailure::Malformed)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&b64(p)?).map_err(|_| AuthFailure::Malformed)?;
    let signature = b64(s)?;
    if header.contains_key("crit") {
        return Err(AuthFailure::Malformed);
    }
    let alg = match header.get("alg") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(AuthFailure::Malformed),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthFailure::Malformed),
    };
    Ok(Jws {
        alg,
        kid,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// Time claims, audience and subject of a token whose signature verified; the principal and
/// its `exp`.
pub(super) fn check_claims(
    cfg: &IssuerConfig,
    leeway: f64,
    claims: &Map<String, Value>,
    now: f64,
) -> Result<(Principal, f64), AuthFailure> {
    let exp = numeric_date(claims.get("exp"))?.ok_or(AuthFailure::Malformed)?;
    if now >= exp + leeway {
        return Err(AuthFailure::Expired);
    }
    if let Some(nbf) = numeric_date(claims.get("nbf"))?
        && now + leeway < nbf
    {
        return Err(AuthFailure::NotYetValid);
    }
    // A token issued in the future was minted by a clock (or a forger) we should not
    // trust; issuers are not required to send `iat`, so only a present one is checked.
    if let Some(iat) = numeric_date(claims.get("iat"))?
        && now + leeway < iat
    {
        return Err(AuthFailure::NotYetValid);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => cfg.audiences.iter().any(|c| c == a),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|a| cfg.audiences.iter().any(|c| c == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(AuthFailure::Audience);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthFailure::Malformed),
    };

    let mut p = Principal::new(subject, AuthMethod::Jwt);
    p.issuer = Some(cfg.issuer.clone());
    p.scopes = match (claims.get("scope"), claims.get("scp")) {
        (Some(v), _) | (None, Some(v)) => strings(v, true),
        (None, None) => Vec::new(),
    };
    if let Some(v) = claims.get(&cfg.groups_claim) {
        p.groups = strings(v, false);
    }
    for name in &cfg.claims {
        if let Some(v) = claims.get(name) {
            p.claims.insert(name.clone(), v.clone());
        }
    }
    Ok((p, exp))
}
