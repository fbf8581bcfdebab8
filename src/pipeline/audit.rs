//! The audit stages: the record a request starts ([`begin`]), what the checks learned
//! ([`describe`]), and fail-closed audit (`audit.fail_closed: true`): while any sink could not
//! store a record — down with no spool (or a full or broken one), or its queue full — new
//! requests are refused with 503 rather than run unrecorded.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::Value;

use super::Ctx;
use crate::audit::record::{Draft, ElementNote, TargetNote, sha256_hex};
use crate::audit::{Auditor, has_arguments};
use crate::denial::{Denial, Reason};
use crate::mcp::Target;

/// Call bodies up to this size are copied into the draft rather than shared (see `describe`).
const COPIED_BODY_MAX: usize = 16 * 1024;

pub struct AuditGate {
    auditor: Arc<Auditor>,
}

impl AuditGate {
    pub fn new(auditor: Arc<Auditor>) -> Self {
        Self { auditor }
    }

    pub fn run(&self) -> Result<(), Denial> {
        if self.auditor.can_record() {
            return Ok(());
        }
        Err(Denial::new(Reason::AuditUnavailable)
            .with_detail("an audit sink cannot store records")
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")))
    }
}

/// The start of a request's record: what is known before any check runs.
pub fn begin(ctx: &Ctx) -> Draft {
    let header = |name: &str| {
        ctx.parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Draft {
        at: Some(SystemTime::now()),
        request_id: ctx.id,
        trace_id: header("traceparent").and_then(|t| trace_id(&t)),
        client: Some(ctx.peer.ip()),
        user_agent: header("user-agent").map(|mut u| {
            u.truncate(256);
            u
        }),
        ..Draft::default()
    }
}

/// What the checks learned: caller, call, decisions and (redacted) arguments.
pub fn describe(ctx: &Ctx, d: &mut Draft) {
    d.principal = ctx.principal.clone();
    d.session = session_hash(ctx);
    d.decision = ctx.decision.clone();
    d.rate_limit = ctx.ratelimit.clone();
    d.integrity.extend(ctx.integrity.iter().cloned());
    d.bytes_in = ctx.body.len() as u64;
    let Some(env) = &ctx.envelope else {
        d.method = Some(
            match ctx.parts.method {
                http::Method::GET => "GET",
                http::Method::DELETE => "DELETE",
                _ => "invalid",
            }
            .to_string(),
        );
        return;
    };
    d.era = Some(ctx.era.as_str());
    if env.messages.iter().any(|m| has_arguments(m.method)) {
        // Read (and redacted) by the sealer, off the traffic thread. A body read in one frame
        // is a slice of the connection's read buffer (8 KiB or more): holding it until the
        // sealer runs would make the connection allocate a new buffer for its next request.
        // A small body is copied out instead; a large one is most of its buffer anyway.
        d.call_body = Some(if ctx.body.len() <= COPIED_BODY_MAX {
            Bytes::copy_from_slice(&ctx.body)
        } else {
            ctx.body.clone()
        });
    }
    let Some(msg) = env.single() else {
        d.method = Some("batch".into());
        d.elements = Some(
            env.messages
                .iter()
                .map(|m| ElementNote {
                    method: m.method_name.clone(),
                    jsonrpc_id: jsonrpc_id(m),
                    target: target(&m.target),
                    arguments: None,
                })
                .collect(),
        );
        return;
    };
    d.method = msg.method_name.clone();
    d.jsonrpc_id = jsonrpc_id(msg);
    d.target = target(&msg.target);
}

/// The request's legacy session as records and spans name it: `sha256:` + 16 hex, never the
/// id itself.
pub fn session_hash(ctx: &Ctx) -> Option<String> {
    let session = ctx.session_id.as_deref().or_else(|| {
        ctx.parts
            .headers
            .get(crate::mcp::headers::MCP_SESSION_ID)
            .and_then(|v| v.to_str().ok())
    });
    session.map(|s| format!("sha256:{}", &sha256_hex(s.as_bytes())[..16]))
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(tp: &str) -> Option<String> {
    let mut parts = tp.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id != "0".repeat(32))
        .then(|| id.to_ascii_lowercase())
}

fn target(t: &Target) -> Option<TargetNote> {
    let (kind, name) = match t {
        Target::None => return None,
        Target::Tool(n) => ("tool", n.clone()),
        Target::Prompt(n) => ("prompt", n.clone()),
        Target::Resource(n) => ("resource", n.clone()),
        Target::CompletionPrompt(n) => ("completion_prompt", n.clone()),
        Target::CompletionResource(n) => ("completion_resource", n.clone()),
        Target::Task(n) => ("task", n.clone()),
        Target::Subscriptions(uris) => ("subscriptions", uris.join(" ")),
    };
    Some(TargetNote { kind, name })
}

fn jsonrpc_id(m: &crate::mcp::Message) -> Option<Value> {
    m.id.as_ref()
        .and_then(|i| serde_json::from_str(i.get()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids() {
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
