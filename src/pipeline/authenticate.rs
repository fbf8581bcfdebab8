//! Authentication check: a token in the query string is refused outright; otherwise the
//! authenticator chain proves the caller, or the request gets 401 with the challenge that points
//! the client at the protected-resource metadata.

use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;

use super::{Ctx, Denial, Reason};
use crate::auth::chain::{Authenticator, challenge};
use crate::auth::metadata::ResourceMetadata;

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

/// `access_token` (RFC 6750 §2.3) or the API-key header's name as a query parameter.
fn token_in_query(query: &str, api_key_param: Option<&str>) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        name.eq_ignore_ascii_case("access_token")
            || name.eq_ignore_ascii_case("api_key")
            || api_key_param.is_some_and(|h| name.eq_ignore_ascii_case(h))
    })
}

#[cfg(test)]
mod tests {
    use super::token_in_query;

    #[test]
    fn query_tokens() {
        assert!(token_in_query("access_token=abc", None));
        assert!(token_in_query("x=1&ACCESS_TOKEN=abc", None));
        assert!(token_in_query("x-api-key=abc", Some("x-api-key")));
        assert!(token_in_query("api_key", None));
        assert!(!token_in_query("x=access_token", None));
        assert!(!token_in_query("session=1", Some("x-api-key")));
    }
}
