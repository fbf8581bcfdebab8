//! Authentication check: a token in the query string is refused outright; otherwise the
//! authenticator chain proves the caller, or the request gets 401 with the challenge that points
//! the client at the protected-resource metadata.

use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;

use super::Ctx;
use crate::auth::chain::{Authenticator, challenge};
use crate::auth::metadata::ResourceMetadata;
use crate::denial::{Denial, Reason};

pub struct Authenticate {
    auth: Arc<Authenticator>,
    metadata: Arc<ResourceMetadata>,
    /// The `scope` of the challenge, space-separated.
    scopes: String,
}

impl Authenticate {
    pub fn new(
        auth: Arc<Authenticator>,
        metadata: Arc<ResourceMetadata>,
        scopes: &[String],
    ) -> Self {
        Self {
            auth,
            metadata,
            scopes: scopes.join(" "),
        }
    }

    pub async fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        if let Some(q) = ctx.parts.uri.query()
            && token_in_query(q, self.auth.api_key_header().map(|h| h.as_str()))
        {
            return Err(Denial::new(Reason::TokenInQuery));
        }
        match self
            .auth
            .authenticate(&ctx.parts.headers, ctx.peer_cert.as_deref())
            .await
        {
            Ok(p) => {
                ctx.principal = Some(p);
                Ok(())
            }
            Err(rejection) => {
                let resource = self.metadata.resource(&ctx.parts.headers, ctx.tls);
                let url = ResourceMetadata::metadata_url(&resource);
                let value = challenge(&url, &self.scopes, rejection.presented());
                Err(Denial::new(Reason::Unauthenticated)
                    .with_header(WWW_AUTHENTICATE, value)
                    .with_detail(format!(
                        "{}: {}",
                        rejection.method.map_or("none", |m| m.as_str()),
                        rejection.reason
                    )))
            }
        }
    }
}

/// Parameter names that carry a credential, compared after [`squash`]: `access_token`
/// (RFC 6750 §2.3) and the spellings frameworks and clients use for the same thing.
const CREDENTIAL_NAMES: &[&str] = &[
    "accesstoken",
    "token",
    "idtoken",
    "apikey",
    "key",
    "auth",
    "authorization",
    "bearer",
];

/// Endings of parameter names that carry a credential whatever comes before them.
const CREDENTIAL_SUFFIXES: &[&str] = &["token", "secret", "password", "apikey"];

/// Rounds of percent-decoding: a parameter decoded twice (a proxy, then the framework) must
/// not smuggle a name past the check.
const DECODE_ROUNDS: usize = 3;

/// A credential in the query string, however it is spelled: a parameter named like one (any
/// case, percent-encoded, `+` for space, `-`/`_`/`.` or none between words, a `[...]` suffix or
/// nesting, `;` or `&` between parameters), the API-key header's name in any such spelling, or
/// a value that looks like a JWT under any name. A false alarm costs a client one 400 telling
/// it to move the credential to a header; a miss leaks a token into every access log.
fn token_in_query(query: &str, api_key_param: Option<&str>) -> bool {
    let api_key = api_key_param.map(|h| squash(h.as_bytes()));
    // The query as sent, and decoded whole: `access_token%3Dx` or `a=1%26access_token%3Dx` is a
    // credential to a framework that decodes before it splits.
    let decoded = String::from_utf8_lossy(&decode(query)).into_owned();
    [query, decoded.as_str()].into_iter().any(|q| {
        q.split(['&', ';'])
            .filter(|pair| !pair.is_empty())
            .any(|pair| credential_pair(pair, api_key.as_deref()))
    })
}

fn credential_pair(pair: &str, api_key: Option<&str>) -> bool {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let name = decode(name);
    let value = decode(value);
    // `a[b][c]` (PHP, Rack, qs) names `a`, and `b` and `c` within it: each counts.
    let credential_name = name
        .split(|b| *b == b'[' || *b == b']')
        .map(squash)
        .any(|part| credential_word(&part) || api_key == Some(part.as_str()));
    let bearer = value
        .get(..7)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"bearer "));
    credential_name || bearer || has_jwt(&value) || has_jwt(&name)
}

/// A squashed parameter name that carries a credential: one of [`CREDENTIAL_NAMES`], or any
/// name ending in one of [`CREDENTIAL_SUFFIXES`] (`auth_token`, `client_secret`, …).
fn credential_word(part: &str) -> bool {
    CREDENTIAL_NAMES.contains(&part) || CREDENTIAL_SUFFIXES.iter().any(|s| part.ends_with(s))
}

/// Percent-decodes (and `+` → space) until nothing changes, at most [`DECODE_ROUNDS`] times.
fn decode(s: &str) -> Vec<u8> {
    let mut cur: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    for _ in 0..DECODE_ROUNDS {
        if !cur.contains(&b'%') {
            break;
        }
        let mut out = Vec::with_capacity(cur.len());
        let mut i = 0;
        while i < cur.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                cur[i],
                cur.get(i + 1).and_then(|b| hex(*b)),
                cur.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (b'%', Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                (b, _, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        if out == cur {
            break;
        }
        cur = out;
    }
    cur
}

/// A name reduced to its ASCII letters and digits, lower-cased: `Access-Token`, `access_token`,
/// `accessToken` and `access.token` are all `accesstoken`.
fn squash(name: &[u8]) -> String {
    name.iter()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

/// Some word of `v` is a compact JWS or JWE: three (or five) base64url segments, the first a
/// JSON object header (`eyJ` is the base64url of `{"`).
fn has_jwt(v: &[u8]) -> bool {
    let b64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    v.split(|b| !(b64url(b) || *b == b'.')).any(|word| {
        let segments: Vec<&[u8]> = word.split(|b| *b == b'.').collect();
        matches!(segments.len(), 3 | 5) && segments[0].starts_with(b"eyJ") && segments[1].len() >= 2
    })
}

#[cfg(test)]
mod tests {
    use super::token_in_query;

    const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

    #[test]
    fn query_tokens() {
        // (query, API-key header, refused?)
        let table: &[(&str, Option<&str>, bool)] = &[
            ("access_token=abc", None, true),
            ("x=1&ACCESS_TOKEN=abc", None, true),
            ("Access_Token=abc", None, true),
            ("access-token=abc", None, true),
            ("accessToken=abc", None, true),
            ("access.token=abc", None, true),
            ("access%5Ftoken=abc", None, true),
            ("access%5ftoken=abc", None, true),
            ("%61ccess_token=abc", None, true),
            ("%2561ccess_token=abc", None, true),
            ("access%255Ftoken=abc", None, true),
            ("access+token=abc", None, true),
            ("access%20token=abc", None, true),
            ("access_token[]=abc", None, true),
            ("access_token%5B%5D=abc", None, true),
            ("access_token[0]=abc", None, true),
            ("creds[access_token]=abc", None, true),
            ("x=1;access_token=abc", None, true),
            ("x=1;;access_token=abc&y=2", None, true),
            ("access_token", None, true),
            ("access_token=", None, true),
            ("token=abc", None, true),
            ("TOKEN=abc", None, true),
            ("id_token=abc", None, true),
            ("idToken=abc", None, true),
            ("api_key=abc", None, true),
            ("apikey=abc", None, true),
            ("api-key=abc", None, true),
            ("apiKey=abc", None, true),
            ("key=abc", None, true),
            ("auth=abc", None, true),
            ("authorization=Bearer+abc", None, true),
            ("Authorization=abc", None, true),
            ("bearer=abc", None, true),
            ("api_key", None, true),
            ("x-api-key=abc", Some("x-api-key"), true),
            ("X-API-Key=abc", Some("x-api-key"), true),
            ("x_api_key=abc", Some("x-api-key"), true),
            ("xApiKey=abc", Some("x-api-key"), true),
            ("x%2Dapi%2Dkey=abc", Some("x-api-key"), true),
            ("x-my-secret=abc", Some("x-my-secret"), true),
            // A JWT under any name, in any spelling.
            (&format!("state={JWT}"), None, true),
            (&format!("q=Bearer+{JWT}"), None, true),
            (&format!("q=Bearer%20{JWT}"), None, true),
            (
                "q=eyJhbGciOiJSUzI1NiJ9%2EeyJzdWIiOiJhIn0%2Ec2ln",
                None,
                true,
            ),
            ("q=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", None, true),
            (JWT, None, true),
            ("q=eyJhbGciOiJSUzI1NiJ9.eyJ6IjoxfQ.a.b.c", None, true),
            // Not credentials.
            ("x=access_token", None, false),
            ("session=1", Some("x-api-key"), false),
            // Any name ending in token/secret/password/apikey is a credential.
            ("x-my-secret=abc", Some("x-api-key"), true),
            ("auth_token=abc", None, true),
            ("api_token=abc", None, true),
            ("refresh_token=abc", None, true),
            ("client_secret=abc", None, true),
            ("private-token=abc", None, true),
            ("db_password=abc", None, true),
            // Decoded before it is split (red-team finding), and a bearer value under any name.
            ("access_token%3Dsk-live-123", None, true),
            ("a=1%26access_token%3Dsk-live-123", None, true),
            ("a=1%3Baccess_token%3Dx", None, true),
            ("q=Bearer%20sk-live-123", None, true),
            ("q=bearer+sk-live-123", None, true),
            ("tokens=5", None, false),
            ("secrets_count=5", None, false),
            ("q=bear", None, false),
            ("keyword=rust", None, false),
            ("author=me", None, false),
            ("page=2&sort=asc", None, false),
            ("q=eyJhbGciOiJSUzI1NiJ9", None, false),
            ("q=a.b.c", None, false),
            ("v=1.2.3", None, false),
            ("", None, false),
            ("&&;", None, false),
            ("%zz=1&%=2", None, false),
        ];
        for (q, header, refused) in table {
            assert_eq!(
                token_in_query(q, *header),
                *refused,
                "{q:?} with {header:?}"
            );
        }
    }
}
