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

/// The checks that get a span of their own, and its name.
const CHILDREN: [(&str, &str); 3] = [
    ("authenticate", "authenticate"),
    ("authorize", "authorize"),
    ("ratelimit", "rate_limit"),
];

/// When the checks that get a span of their own ran, noted only with tracing on (no
/// allocation: one slot per such check).
#[derive(Default)]
pub struct CheckTimes([Option<(Instant, Instant)>; CHILDREN.len()]);

impl CheckTimes {
    pub fn note(&mut self, check: &str, start: Instant, end: Instant) {
        if let Some(i) = CHILDREN.iter().position(|(c, _)| *c == check) {
            self.0[i] = Some((start, end));
        }
    }

    /// Each timed check: its name, its span's name, when it ran.
    fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, Instant, Instant)> + '_ {
        CHILDREN
            .iter()
            .zip(&self.0)
            .filter_map(|((check, span), t)| t.map(|(s, e)| (*check, *span, s, e)))
    }
}

/// The server span of a checked (or refused) request, started when the request arrived, with
/// a child per timed check. `refused` is the check that refused it.
pub fn start(
    otel: &Otel,
    ctx: &mut Ctx,
    checks: &CheckTimes,
    refused: Option<(&'static str, &Denial)>,
) -> RequestTrace {
    ctx.trace_meta = single(ctx).and_then(|_| crate::otel::meta::read(&ctx.body));
    let parent = otel.parent(&mut ctx.parts.headers, ctx.trace_meta.as_ref());
    // Named once the sampler kept it: a dropped span costs no name (nor a clock read).
    let mut server = otel.span(parent, SpanKind::Server, ctx.started);
    let mut call = Vec::new();
    let mut name = Cow::Borrowed("");
    if let Some(wall) = server.start_time() {
        let at = |t: Instant| wall + t.saturating_duration_since(ctx.started);
        name = span_name(ctx);
        call = call_attributes(ctx);
        server.rename(name.clone());
        server.set(call.iter().cloned());
        server.set(server_attributes(ctx));
        for (check, span, start, end) in checks.iter() {
            let mut child = otel.child(&server, Cow::Borrowed(span), SpanKind::Internal, at(start));
            child.set(check_attributes(ctx, check));
            if let Some((stage, denial)) = refused
                && stage == check
            {
                child.fail(denial.reason.as_str(), describe(denial));
            }
            child.end_at(at(end));
        }
    }
    RequestTrace {
        server,
        upstream: None,
        call_name: name,
        call_attributes: call,
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
        let name = std::mem::take(&mut trace.call_name);
        let mut span = otel.child(server, name, SpanKind::Client, SystemTime::now());
        span.set(std::mem::take(&mut trace.call_attributes));
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
        a.push(KeyValue::new(
            "jsonrpc.request.id",
            shared(request_id(id.get())),
        ));
    }
    // `jsonrpc.protocol.version` is left out: the conventions ask for it only when it is
    // not "2.0", and nothing else passes the parse.
    if let Some(v) = ctx.version.as_ref().or(msg.meta_version.as_ref()) {
        a.push(KeyValue::new("mcp.protocol.version", shared(v)));
    }
    match &msg.target {
        Target::Tool(n) => {
            a.push(KeyValue::new("gen_ai.tool.name", shared(n)));
            a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
        }
        Target::Prompt(n) | Target::CompletionPrompt(n) => {
            a.push(KeyValue::new("gen_ai.prompt.name", shared(n)));
        }
        Target::Resource(u) | Target::CompletionResource(u) => {
            a.push(KeyValue::new("mcp.resource.uri", shared(u)));
        }
        // A task id is a handle the caller holds, like a session id: not put in a span.
        Target::Task(_) | Target::None | Target::Subscriptions(_) => {}
    }
    a
}

/// A string attribute value the server span and the upstream call's span share: cloned by a
/// reference count, not a copy.
fn shared(s: impl AsRef<str>) -> opentelemetry::Value {
    opentelemetry::StringValue::from(std::sync::Arc::<str>::from(s.as_ref())).into()
}

/// A JSON-RPC id as the attribute holds it: a string without its quotes (escapes read), a
/// number as written. No parse for the usual plain string or number.
fn request_id(raw: &str) -> String {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(plain) if !plain.contains('\\') => plain.to_owned(),
        Some(_) => serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_owned()),
        None => raw.to_owned(),
    }
}

/// The server span's own attributes (beside the call's).
fn server_attributes(ctx: &Ctx) -> Vec<KeyValue> {
    let mut a = Vec::with_capacity(5);
    if let Some(s) = super::audit::session_hash(ctx) {
        a.push(KeyValue::new("mcp.session.id", s));
    }
    // The peer's address as the proxy headers carry it (an IP's text form).
    let address = ctx
        .peer_ip
        .to_str()
        .map_or_else(|_| ctx.peer.ip().to_string(), str::to_owned);
    a.push(KeyValue::new("client.address", address));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_the_string_read_or_the_number_as_written() {
        for (raw, id) in [
            ("7", "7"),
            ("-1.5e3", "-1.5e3"),
            (r#""req-1""#, "req-1"),
            (r#""""#, ""),
            (r#""a\"b""#, "a\"b"),
            (r#""\u00e9t\u00e9""#, "été"),
        ] {
            assert_eq!(request_id(raw), id, "{raw}");
        }
    }
}
