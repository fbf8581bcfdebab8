//! mTLS: rustls has already verified the client certificate against the configured CA bundle;
//! this reads the caller's identity out of it, once per connection.

use std::sync::Arc;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::auth::{CertIdentity, MtlsConfig};
use crate::identity::{AuthFailure, AuthMethod, Principal};

/// The principal of a verified leaf certificate (DER): its first `URI` SAN (a SPIFFE ID) that
/// has the configured prefix, or its subject CN, as `cfg.identity` says.
pub fn principal(cfg: &MtlsConfig, leaf_der: &[u8]) -> Result<Arc<Principal>, AuthFailure> {
    let (_, cert) = X509Certificate::from_der(leaf_der).map_err(|_| AuthFailure::Certificate)?;
    let san_uri = || -> Option<String> {
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::URI(u) if u.starts_with(cfg.trust_domain_prefix.as_str()) => {
                Some((*u).to_string())
            }
            _ => None,
        })
    };
    let cn = || -> Option<String> {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    // In `auto`, SAN URIs and CNs share one namespace of subjects: a CN spelled like a URI
    // SAN (`spiffe://cluster.local/ns/prod/sa/admin`) would be that workload to every rule and
    // binding, so such a CN is no identity there.
    let plain_cn = || {
        cn().filter(|c| {
            !c.contains("://")
                && (cfg.trust_domain_prefix.is_empty()
                    || !c.starts_with(cfg.trust_domain_prefix.as_str()))
        })
    };
    let subject = match cfg.identity {
        CertIdentity::SanUri => san_uri(),
        CertIdentity::CommonName => cn(),
        CertIdentity::Auto => san_uri().or_else(plain_cn),
    }
    .ok_or(AuthFailure::Certificate)?;
    let mut p = Principal::new(subject, AuthMethod::Mtls);
    // The organizational units name groups, as Kubernetes does for client certificates (O).
    p.groups = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok(Arc::new(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    fn cert(cn: Option<&str>, uri: Option<&str>, org: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        if let Some(o) = org {
            dn.push(DnType::OrganizationName, o);
        }
        params.distinguished_name = dn;
        if let Some(u) = uri {
            params.subject_alt_names = vec![SanType::URI(u.try_into().unwrap())];
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn cfg(identity: CertIdentity, prefix: &str) -> MtlsConfig {
        MtlsConfig {
            identity,
            trust_domain_prefix: prefix.into(),
        }
    }

    #[test]
    fn identity_from_san_uri_or_cn() {
        let both = cert(
            Some("agent-1"),
            Some("spiffe://cluster.local/ns/tools/sa/agent"),
            Some("agents"),
        );
        let p = principal(&cfg(CertIdentity::Auto, ""), &both).unwrap();
        assert_eq!(p.subject, "spiffe://cluster.local/ns/tools/sa/agent");
        assert_eq!(p.groups, ["agents"]);
        assert_eq!(p.method, AuthMethod::Mtls);
        let p = principal(&cfg(CertIdentity::CommonName, ""), &both).unwrap();
        assert_eq!(p.subject, "agent-1");

        // A SAN outside the trust domain is not an identity; auto falls back to the CN.
        let p = principal(&cfg(CertIdentity::Auto, "spiffe://other/"), &both).unwrap();
        assert_eq!(p.subject, "agent-1");
        assert_eq!(
            principal(&cfg(CertIdentity::SanUri, "spiffe://other/"), &both).unwrap_err(),
            AuthFailure::Certificate
        );

        // In auto, a CN spelled like a SAN URI is not taken for that workload.
        for (cn, prefix) in [
            ("spiffe://cluster.local/ns/prod/sa/admin", ""),
            (
                "spiffe://cluster.local/ns/prod/sa/admin",
                "spiffe://cluster.local/",
            ),
            ("urn:x:admin", "urn:x:"),
        ] {
            let forged = cert(Some(cn), None, None);
            assert_eq!(
                principal(&cfg(CertIdentity::Auto, prefix), &forged).unwrap_err(),
                AuthFailure::Certificate,
                "{cn}"
            );
            let p = principal(&cfg(CertIdentity::CommonName, prefix), &forged).unwrap();
            assert_eq!(p.subject, cn, "common_name mode takes the CN as it is");
        }
        let node = cert(Some("system:node:worker-1"), None, None);
        let p = principal(&cfg(CertIdentity::Auto, "spiffe://cluster.local/"), &node).unwrap();
        assert_eq!(p.subject, "system:node:worker-1");

        let none = cert(None, None, None);
        assert_eq!(
            principal(&cfg(CertIdentity::Auto, ""), &none).unwrap_err(),
            AuthFailure::Certificate
        );
        assert_eq!(
            principal(&cfg(CertIdentity::Auto, ""), b"not a certificate").unwrap_err(),
            AuthFailure::Certificate
        );
    }
}
