//! The request's spans (tracing on): what the checks learned becomes the server span and its
//! children, named and attributed per the OpenTelemetry MCP and GenAI conventions; the
//! upstream call gets a client span whose context travels in `traceparent` (and in the body's
//! `_meta.traceparent`, only when the client put one there). Attributes are built only for a
//! span the sampler keeps; never a token or a header value.

use std::borrow::Cow;
use std::time::{Instant, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;

use super::Ctx;
use crate::denial::Denial;
use crate::mcp::{Envelope, Target};
use crate::otel::{Otel, RequestTrace};

/// When a check ran, noted only with tracing on.
pub struct CheckTime {
    pub name: &'static str,
    pub start: Instant,
    pub end: Instant,
}

/// The checks that get a span of their own, and its name.
fn child_name(check: &str) -> Option<&'static str> {
    match check {
        "authenticate" => Some("authenticate"),
        "authorize" => Some("authorize"),
        "ratelimit" => Some("rate_limit"),
        _ => None,
    }
}

/// The server span of a checked (or refused) request, started when the request arrived, with
/// a child per timed check. `refused` is the check that refused it.
pub fn start(
    otel: &Otel,
    ctx: &mut Ctx,
    wall: SystemTime,
    checks: &[CheckTime],
    refused: Option<(&'static str, &Denial)>,
) -> RequestTrace {
    ctx.trace_meta = single(ctx).and_then(|_| crate::otel::meta::read(&ctx.body));
    let parent = otel.parent(&ctx.parts.headers, ctx.trace_meta.as_ref());
    let at = |t: Instant| wall + t.saturating_duration_since(ctx.started);
    // Named once the sampler kept it: a dropped span costs no name.
    let mut server = otel.span(parent, SpanKind::Server, wall);
    if server.recording() {
        server.rename(span_name(ctx));
        server.set(server_attributes(ctx));
        for c in checks {
            let Some(name) = child_name(c.name) else {
                continue;
            };
            let mut child = otel.child(
                &server,
                Cow::Borrowed(name),
                SpanKind::Internal,
                at(c.start),
            );
            child.set(check_attributes(ctx, c.name));
            if let Some((stage, denial)) = refused
                && stage == c.name
            {
                child.fail(denial.reason.as_str(), describe(denial));
            }
            child.end_at(at(c.end));
        }
    }
    RequestTrace {
        server,
        upstream: None,
    }
}

/// Marks a request's spans refused (the upstream call's too when `upstream`): `error.type` is
/// the denial's reason.
pub fn fail(trace: &mut RequestTrace, denial: &Denial, upstream: bool) {
    let why = describe(denial);
    if upstream && let Some(up) = &mut trace.upstream {
        up.fail(denial.reason.as_str(), why.clone());
    }
    trace.server.fail(denial.reason.as_str(), why);
}

fn describe(denial: &Denial) -> String {
    denial.reason.answer().2.to_string()
}

/// Before forwarding: the upstream call's span, and its context written into the request.
pub fn upstream(otel: &Otel, trace: &mut RequestTrace, ctx: &mut Ctx) {
    let server = &trace.server;
    let span = server.recording().then(|| {
        let mut span = otel.child(server, span_name(ctx), SpanKind::Client, SystemTime::now());
        span.set(call_attributes(ctx));
        span.set([KeyValue::new("network.transport", "tcp")]);
        span
    });
    otel.inject(server, span.as_ref(), &mut ctx.parts.headers);
    // The body's `_meta.traceparent` gets the same context (left as the caller's when there is
    // none to give: tracing shut down).
    if let Some(m) = &ctx.trace_meta
        && let Some(tp) = server.upstream_traceparent(span.as_ref())
        && let Some(body) = crate::otel::meta::rewrite(&ctx.body, &m.traceparent, &tp)
    {
        ctx.body = body;
    }
    trace.upstream = span;
}

fn single(ctx: &Ctx) -> Option<&crate::mcp::Message> {
    ctx.envelope.as_ref().and_then(Envelope::single)
}

/// `{mcp.method.name} {target}`, the target a tool or prompt name (a resource URI is left
/// out: unbounded); the operation alone for anything else.
fn span_name(ctx: &Ctx) -> Cow<'static, str> {
    let Some(msg) = single(ctx) else {
        return Cow::Borrowed(match (&ctx.envelope, &ctx.parts.method) {
            (Some(_), _) => "batch",
            (None, &http::Method::GET) => "GET",
            (None, &http::Method::DELETE) => "DELETE",
            (None, _) => "invalid",
        });
    };
    let method = msg.method_name.as_deref().unwrap_or("response");
    match &msg.target {
        Target::Tool(n) | Target::Prompt(n) => Cow::Owned(format!("{method} {n}")),
        _ => Cow::Owned(method.to_string()),
    }
}

/// A method's name as an attribute value: the MCP methods' own (static) names, a copy of
/// anything else.
fn method_value(m: &str) -> opentelemetry::Value {
    use crate::mcp::Method;
    match Method::from_name(m) {
        Method::Notification | Method::Response | Method::Other => m.to_string().into(),
        known => known.as_str().into(),
    }
}

/// The MCP attributes a call's spans share.
fn call_attributes(ctx: &Ctx) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(12);
    let Some(msg) = single(ctx) else {
        if ctx.envelope.is_some() {
            a.push(KeyValue::new("mcp.method.name", "batch"));
        }
        return a;
    };
    if let Some(m) = &msg.method_name {
        a.push(KeyValue::new("mcp.method.name", method_value(m)));
    }
    if let Some(id) = &msg.id {
        // A string id without its quotes; a number as written.
        let raw = id.get();
        let id = serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string());
        a.push(KeyValue::new("jsonrpc.request.id", id));
    }
    // `jsonrpc.protocol.version` is left out: the conventions ask for it only when it is
    // not "2.0", and nothing else passes the parse.
    if let Some(v) = ctx.version.as_ref().or(msg.meta_version.as_ref()) {
        a.push(KeyValue::new("mcp.protocol.version", v.clone()));
    }
    match &msg.target {
        Target::Tool(n) => {
            a.push(KeyValue::new("gen_ai.tool.name", n.clone()));
            a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        Target::Prompt(n) | Target::CompletionPrompt(n) => {
            a.push(KeyValue::new("gen_ai.prompt.name", n.clone()));
        }
        Target::Resource(u) | Target::CompletionResource(u) => {
            a.push(KeyValue::new("mcp.resource.uri", u.clone()));
        }
        // A task id is a handle the caller holds, like a session id: not put in a span.
        Target::Task(_) | Target::None | Target::Subscriptions(_) => {}
    }
    a
}

fn server_attributes(ctx: &Ctx) -> Vec<KeyValue> {
    let mut a = call_attributes(ctx);
    if let Some(s) = super::audit::session_hash(ctx) {
        a.push(KeyValue::new("mcp.session.id", s));
    }
    a.push(KeyValue::new("client.address", ctx.peer.ip().to_string()));
    a.push(KeyValue::new("client.port", i64::from(ctx.peer.port())));
    a.push(KeyValue::new("network.transport", "tcp"));
    a.push(KeyValue::new("network.protocol.name", "http"));
    a
}

fn check_attributes(ctx: &Ctx, check: &str) -> Vec<KeyValue> {
    match check {
        "authenticate" => ctx
            .principal
            .iter()
            .map(|p| KeyValue::new("mcp_sentinel.auth.method", p.method.as_str()))
            .collect(),
        "authorize" => ctx
            .decision
            .iter()
            .flat_map(|d| {
                [
                    KeyValue::new(
                        "mcp_sentinel.authz.decision",
                        if d.allowed() { "allow" } else { "deny" },
                    ),
                    KeyValue::new("mcp_sentinel.authz.rule", d.rule_name().to_string()),
                ]
            })
            .collect(),
        "ratelimit" => ctx
            .ratelimit
            .iter()
            .flat_map(|r| {
                let mut v = vec![KeyValue::new("mcp_sentinel.ratelimit.result", r.result)];
                v.extend(
                    r.policy
                        .clone()
                        .map(|p| KeyValue::new("mcp_sentinel.ratelimit.policy", p)),
                );
                v
            })
            .collect(),
        _ => Vec::new(),
    }
}
