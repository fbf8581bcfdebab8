//! The usual end-to-end bed: a test upstream, a sentinel in front of it configured from YAML,
//! and a scratch directory for the files that YAML names (API keys, kubeconfigs, policies).

use serde_json::json;

use super::client::{ClientOptions, Era, connect, tool_call};
use super::sentinel::{self, TempDir, TestSentinel};
use super::upstream::{Upstream, UpstreamConfig, spawn_upstream_with};

/// `X` holds what a test file adds to the bed (identity providers, CAs); the bed dereferences
/// to it.
pub struct Bed<X = ()> {
    pub upstream: Upstream,
    pub sentinel: TestSentinel,
    pub dir: TempDir,
    pub with: X,
}

impl<X> std::ops::Deref for Bed<X> {
    type Target = X;

    fn deref(&self) -> &X {
        &self.with
    }
}

impl<X> Bed<X> {
    /// The same bed, holding `with`.
    pub fn with<Y>(self, with: Y) -> Bed<Y> {
        Bed {
            upstream: self.upstream,
            sentinel: self.sentinel,
            dir: self.dir,
            with,
        }
    }

    /// An rmcp client of every era connects with `options` and calls `echo`; after each call
    /// the upstream must have been told `identity`: subject, groups and auth method. Returns how
    /// many eras called.
    pub async fn echo_in_every_era(&self, options: &ClientOptions, identity: [&str; 3]) -> usize {
        let eras = Era::all();
        for era in &eras {
            let client = connect(&self.sentinel.url, era, options)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", era.label()));
            let result = client
                .call_tool(tool_call("echo", json!({"text": "hi"})))
                .await
                .unwrap();
            assert!(!result.is_error.unwrap_or(false), "{}", era.label());
            let seen = self.upstream.last_request("tools/call").unwrap();
            let told = [
                "x-mcp-sentinel-subject",
                "x-mcp-sentinel-groups",
                "x-mcp-sentinel-auth-method",
            ]
            .map(|h| seen.header(h));
            assert_eq!(
                told,
                identity.map(|v| Some(v.to_string())),
                "{}",
                era.label()
            );
            client.cancel().await.unwrap();
        }
        eras.len()
    }
}

impl Bed {
    /// Starts an upstream served as `upstream` and a sentinel configured by the YAML that
    /// `yaml` returns (it may write files into the scratch directory first); ready on return.
    pub async fn start(
        tag: &str,
        upstream: UpstreamConfig,
        yaml: impl FnOnce(&TempDir) -> String,
    ) -> Self {
        Self::start_with(tag, upstream, yaml, true).await
    }

    /// [`Bed::start`], waiting for readiness only when `wait_ready`.
    pub async fn start_with(
        tag: &str,
        upstream: UpstreamConfig,
        yaml: impl FnOnce(&TempDir) -> String,
        wait_ready: bool,
    ) -> Self {
        let upstream = spawn_upstream_with(upstream).await;
        let dir = TempDir::new(tag);
        let yaml = yaml(&dir);
        let cfg = sentinel::config_from_yaml(&yaml, &upstream.url());
        let sentinel = sentinel::start_with(cfg, wait_ready).await;
        Self {
            upstream,
            sentinel,
            dir,
            with: (),
        }
    }
}
