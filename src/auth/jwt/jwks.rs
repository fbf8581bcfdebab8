//! JSON Web Key Sets (RFC 7517/7518) reduced to what the verifier accepts: signature keys of
//! the types `Algorithm` can use (RSA, EC P-256/P-384, Ed25519), and JWS signature checks over
//! them with `ring::signature`. Everything else in a JWKS (encryption keys, symmetric keys,
//! curves ring does not verify, malformed entries) is skipped, never an error for the whole set.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

use crate::config::auth::Algorithm;

/// Keys larger than this in a JWK field are not keys (RSA 16384 bits is 2 KiB).
const MAX_FIELD_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    /// Big-endian modulus and exponent, leading zeros stripped (ring wants them minimal).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed SEC1 point `0x04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
}

/// One usable verification key from a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jwk {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key is then only for that algorithm.
    pub alg: Option<String>,
    pub material: KeyMaterial,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`: key type, curve and the key's own
    /// `alg` (if any) must all agree.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if let Some(a) = &self.alg
            && a != alg.as_str()
        {
            return false;
        }
        use Algorithm::*;
        match (&self.material, alg) {
            (KeyMaterial::Rsa { .. }, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => true,
            (KeyMaterial::Ec { curve, .. }, ES256) => *curve == Curve::P256,
            (KeyMaterial::Ec { curve, .. }, ES384) => *curve == Curve::P384,
            (KeyMaterial::Ed25519(_), EdDSA) => true,
            _ => false,
        }
    }

    /// Checks a JWS signature over `message` (the ASCII `header.payload`). The caller has
    /// checked `fits(alg)`; a misfit simply fails here too.
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        use Algorithm::*;
        match &self.material {
            KeyMaterial::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            KeyMaterial::Ec { curve, point } => {
                let ring_alg = match (alg, curve) {
                    (ES256, Curve::P256) => &signature::ECDSA_P256_SHA256_FIXED,
                    (ES384, Curve::P384) => &signature::ECDSA_P384_SHA384_FIXED,
                    _ => return false,
                };
                UnparsedPublicKey::new(ring_alg, point)
                    .verify(message, sig)
                    .is_ok()
            }
            KeyMaterial::Ed25519(x) => {
                alg == EdDSA
                    && UnparsedPublicKey::new(&signature::ED25519, x)
                        .verify(message, sig)
                        .is_ok()
            }
        }
    }
}

/// A parsed key set with the generation it was installed as (bumped on every successful fetch),
/// so a caller that saw an unknown `kid` can tell whether a refresh happened meanwhile.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<Jwk>,
    pub generation: u64,
    /// False until the first successful fetch.
    pub loaded: bool,
}

/// What a lookup by the token's header found.
pub(crate) enum Lookup<'a> {
    Found(&'a Jwk),
    /// No key with that `kid` (or, without `kid`, no fitting key): worth a refresh.
    Unknown,
    /// The `kid` exists but its type/curve/alg does not fit the token's `alg`.
    Misfit,
    /// No `kid` in the token and more than one fitting key.
    Ambiguous,
}

impl KeySet {
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                let mut seen = false;
                for k in self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                    seen = true;
                    if k.fits(alg) {
                        return Lookup::Found(k);
                    }
                }
                if seen {
                    Lookup::Misfit
                } else {
                    Lookup::Unknown
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Lookup::Found(k),
                    (None, _) => Lookup::Unknown,
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                }
            }
        }
    }

    /// True when some key of `self` is not in `new` (same kid and material): tokens verified
    /// with it must not be served from the cache any more.
    pub fn loses_keys_in(&self, new: &[Jwk]) -> bool {
        self.keys.iter().any(|old| {
            !new.iter()
                .any(|k| k.kid == old.kid && k.material == old.material)
        })
    }
}

/// A document that is not a JWKS at all.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("JWKS has no \"keys\" array")]
    NoKeys,
}

/// Parses a JWKS document. An error only when it is not a JWKS at all; unusable keys are skipped
/// (returned count: how many were skipped, for the log).
pub(crate) fn parse_jwks(body: &[u8]) -> Result<(Vec<Jwk>, usize), JwksError> {
    let doc: Value = serde_json::from_slice(body).map_err(JwksError::NotJson)?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeys)?;
    let mut out = Vec::with_capacity(keys.len());
    let mut skipped = 0;
    for k in keys {
        match parse_jwk(k) {
            Some(jwk) => out.push(jwk),
            None => skipped += 1,
        }
    }
    Ok((out, skipped))
}

fn b64_field(k: &Value, name: &str) -> Option<Vec<u8>> {
    let s = k.get(name)?.as_str()?;
    if s.len() > MAX_FIELD_BYTES * 2 {
        return None;
    }
    // RFC 7515: base64url without padding; tolerate padding some IdPs emit.
    let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
    (!bytes.is_empty() && bytes.len() <= MAX_FIELD_BYTES).then_some(bytes)
}

fn strip_leading_zeros(mut v: Vec<u8>) -> Option<Vec<u8>> {
    let first = v.iter().position(|b| *b != 0)?;
    v.drain(..first);
    Some(v)
}

/// One JWK, or `None` when it is not a signature key this verifier can use.
pub(crate) fn parse_jwk(k: &Value) -> Option<Jwk> {
    let str_field = |name: &str| -> Result<Option<String>, ()> {
        match k.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(()),
        }
    };
    if let Some(u) = str_field("use").ok()?
        && u != "sig"
    {
        return None;
    }
    if let Some(ops) = k.get("key_ops") {
        let ops = ops.as_array()?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return None;
        }
    }
    let kid = str_field("kid").ok()?;
    let alg = str_field("alg").ok()?;
    if let Some(a) = &alg
        && a.parse::<Algorithm>().is_err()
    {
        // A key pinned to an algorithm we never accept (HS256, RSA-OAEP, ES512...).
        return None;
    }
    let material = match str_field("kty").ok()??.as_str() {
        "RSA" => KeyMaterial::Rsa {
            n: strip_leading_zeros(b64_field(k, "n")?)?,
            e: strip_leading_zeros(b64_field(k, "e")?)?,
        },
        "EC" => {
            let (curve, len) = match str_field("crv").ok()??.as_str() {
                "P-256" => (Curve::P256, 32),
                "P-384" => (Curve::P384, 48),
                _ => return None,
            };
            let x = b64_field(k, "x")?;
            let y = b64_field(k, "y")?;
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            KeyMaterial::Ec { curve, point }
        }
        "OKP" => {
            if str_field("crv").ok()?.as_deref() != Some("Ed25519") {
                return None;
            }
            let x = b64_field(k, "x")?;
            if x.len() != 32 {
                return None;
            }
            KeyMaterial::Ed25519(x)
        }
        _ => return None,
    };
    Some(Jwk { kid, alg, material })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec_jwk(extra: Value) -> Value {
        let mut k = json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1u8; 32]),
            "y": URL_SAFE_NO_PAD.encode([2u8; 32]),
        });
        if let (Some(k), Value::Object(extra)) = (k.as_object_mut(), extra) {
            k.extend(extra);
        }
        k
    }

    #[test]
    fn skips_unusable_keys() {
        let doc = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"},
            ec_jwk(json!({"use": "enc"})),
            ec_jwk(json!({"alg": "ES512"})),
            ec_jwk(json!({"key_ops": ["encrypt"]})),
            ec_jwk(json!({"crv": "P-521"})),
            ec_jwk(json!({"x": "AAAA"})),
            ec_jwk(json!({"kid": 7})),
            {"kty": "RSA", "n": "", "e": "AQAB"},
            {"kty": "RSA", "n": "!!!", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": URL_SAFE_NO_PAD.encode([3u8; 32])},
            "not an object",
            ec_jwk(json!({"kid": "good", "use": "sig", "key_ops": ["verify"]})),
        ]});
        let (keys, skipped) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(skipped, 11);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("good"));
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"{").is_err());
    }

    #[test]
    fn key_fit_follows_type_curve_and_alg() {
        let p256 = parse_jwk(&ec_jwk(json!({}))).unwrap();
        assert!(p256.fits(Algorithm::ES256));
        assert!(!p256.fits(Algorithm::ES384));
        assert!(!p256.fits(Algorithm::RS256));
        let rsa =
            parse_jwk(&json!({"kty": "RSA", "n": "AAEC", "e": "AAEAAQ", "alg": "PS256"})).unwrap();
        // Leading zeros stripped.
        assert_eq!(
            rsa.material,
            KeyMaterial::Rsa {
                n: vec![1, 2],
                e: vec![1, 0, 1]
            }
        );
        assert!(rsa.fits(Algorithm::PS256));
        assert!(!rsa.fits(Algorithm::RS256));
        let ed = parse_jwk(
            &json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([3u8; 32])}),
        )
        .unwrap();
        assert!(ed.fits(Algorithm::EdDSA));
        assert!(!ed.fits(Algorithm::ES256));
    }

    #[test]
    fn lookup_by_kid_and_without() {
        let a = parse_jwk(&ec_jwk(json!({"kid": "a"}))).unwrap();
        let b = parse_jwk(&ec_jwk(json!({"kid": "b", "crv": "P-384",
            "x": URL_SAFE_NO_PAD.encode([1u8; 48]), "y": URL_SAFE_NO_PAD.encode([2u8; 48])})))
        .unwrap();
        let set = KeySet {
            keys: vec![a.clone(), b.clone()],
            generation: 1,
            loaded: true,
        };
        assert!(matches!(set.lookup(Some("a"), Algorithm::ES256), Lookup::Found(k) if *k == a));
        assert!(matches!(
            set.lookup(Some("a"), Algorithm::ES384),
            Lookup::Misfit
        ));
        assert!(matches!(
            set.lookup(Some("zz"), Algorithm::ES256),
            Lookup::Unknown
        ));
        assert!(matches!(set.lookup(None, Algorithm::ES384), Lookup::Found(k) if *k == b));
        assert!(matches!(
            set.lookup(None, Algorithm::EdDSA),
            Lookup::Unknown
        ));
        let two = KeySet {
            keys: vec![a.clone(), a.clone()],
            generation: 1,
            loaded: true,
        };
        assert!(matches!(
            two.lookup(None, Algorithm::ES256),
            Lookup::Ambiguous
        ));
        assert!(set.loses_keys_in(std::slice::from_ref(&a)));
        assert!(!set.loses_keys_in(&[b, a.clone(), a]));
    }
}
