//! Authorization check: every message of the body decided against the running policy (a batch
//! with one denied element is denied whole). The policy the request was decided with stays in
//! the `Ctx`, so its list answer is filtered by the same policy even across a reload.

use std::sync::Arc;

use http::StatusCode;
use http::header::WWW_AUTHENTICATE;
use prometheus::{IntCounterVec, Opts, Registry};

use super::Ctx;
use crate::auth::metadata::ResourceMetadata;
use crate::denial::{Denial, Reason};
use crate::mcp::envelope::call_arguments;
use crate::mcp::{Era, Kind, Message, Method, Target, strict};
use crate::policy::{
    AnswerStyle, Args, Decision, DecisionReason, OpTarget, Operation, Policy, PolicyStore,
};

pub struct Authorize {
    store: Arc<PolicyStore>,
    metadata: Arc<ResourceMetadata>,
    decisions: IntCounterVec,
}

impl Authorize {
    pub fn new(
        store: Arc<PolicyStore>,
        metadata: Arc<ResourceMetadata>,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_authz_decisions_total",
                "Authorization decisions, by decision, reason (rule, builtin, default, insufficient_scope) and tool (tools the policy names; others are other, non-tool requests none)",
            ),
            &["decision", "reason", "tool"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        for reason in DecisionReason::ALL {
            for decision in ["allow", "deny"] {
                decisions.with_label_values(&[decision, reason.as_str(), "none"]);
            }
        }
        Ok(Self {
            store,
            metadata,
            decisions,
        })
    }

    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    pub fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        let policy = self.store.current();
        // GET streams and DELETE carry no message: the session check made sure they are the
        // caller's own; what a stream carries is filtered as it passes.
        let (Some(env), Some(principal)) = (&ctx.envelope, &ctx.principal) else {
            ctx.policy = Some(policy);
            return Ok(());
        };
        let calls = env.messages.iter().any(|m| m.method == Method::ToolsCall);
        let args = if policy.has_conditions() && calls {
            // Conditions read the arguments the upstream will read; a body whose arguments
            // cannot be read the same way is refused rather than decided without them.
            let args = call_arguments(&ctx.body, env.batch).ok_or_else(|| {
                Denial::new(Reason::InvalidParams)
                    .with_detail("tools/call arguments could not be read for the policy")
            })?;
            // An argument spelled like one a condition names, in another case, is what a
            // case-folding upstream would read as that argument.
            for a in args.iter().flatten() {
                strict::check_names(a, policy.argument_keys())
                    .map_err(|a| Denial::new(Reason::Ambiguous).with_detail(a.as_str()))?;
            }
            args
        } else {
            Vec::new()
        };
        let mut last = None;
        for (i, msg) in env.messages.iter().enumerate() {
            if msg.kind == Kind::Response {
                // Answers to server→client requests: only inside the caller's own session
                // (the session check proved `session_id` is the caller's).
                if ctx.session_id.is_none() {
                    return Err(Denial::new(Reason::PolicyDenied)
                        .with_detail("a response outside the caller's own session"));
                }
                continue;
            }
            let args = match args.get(i) {
                Some(Some(v)) if msg.method == Method::ToolsCall => Args::Some(v),
                _ => Args::None,
            };
            let tool = match &msg.target {
                Target::Tool(t) => policy.tool_label(t),
                _ => "none",
            };
            for op in operations(msg, args) {
                let d = policy.decide(principal, &op);
                if !d.allowed() {
                    self.count(&d, tool);
                    let denial = denial(
                        &policy,
                        &d,
                        msg,
                        ctx.era,
                        env.batch || msg.kind != Kind::Request,
                    );
                    let denial = match d.reason {
                        DecisionReason::InsufficientScope => {
                            let resource = self.metadata.resource(&ctx.parts.headers, ctx.tls);
                            let url = ResourceMetadata::metadata_url(&resource);
                            denial.with_header(WWW_AUTHENTICATE, insufficient_scope(&url, &d))
                        }
                        _ => denial,
                    };
                    let denial = denial.with_detail(format!(
                        "{} {}: {} by {}",
                        principal.identity(),
                        op.method,
                        d.reason.as_str(),
                        d.rule_name()
                    ));
                    ctx.decision = Some(d);
                    return Err(denial);
                }
                last = Some((d, tool));
            }
        }
        if let Some((d, tool)) = last {
            self.count(&d, tool);
            ctx.decision = Some(d);
        }
        ctx.policy = Some(policy);
        Ok(())
    }

    fn count(&self, d: &Decision, tool: &str) {
        self.decisions
            .with_label_values(&[d.effect.as_str(), d.reason.as_str(), tool])
            .inc();
    }
}

/// What one message asks the policy: usually one operation; `subscriptions/listen` one per
/// resource it subscribes to.
pub fn operations<'a>(msg: &'a Message, args: Args<'a>) -> Vec<Operation<'a>> {
    let method = msg.method_name.as_deref().unwrap_or("");
    let one = |target| {
        vec![Operation {
            method,
            target,
            args,
        }]
    };
    match &msg.target {
        Target::None => one(OpTarget::None),
        Target::Tool(n) => one(OpTarget::Tool(n)),
        Target::Prompt(n) | Target::CompletionPrompt(n) => one(OpTarget::Prompt(n)),
        Target::Resource(u) | Target::CompletionResource(u) => one(OpTarget::Resource(u)),
        Target::Task(t) => one(OpTarget::Task(t)),
        Target::Subscriptions(uris) if uris.is_empty() => one(OpTarget::None),
        Target::Subscriptions(uris) => uris
            .iter()
            .map(|u| Operation {
                method,
                target: OpTarget::Resource(u),
                args,
            })
            .collect(),
    }
}

/// The answer to a denied message. `status_only`: a batch or a notification, answered with an
/// HTTP status (403) alone or with an id-less error, never a fake per-element result.
fn denial(policy: &Policy, d: &Decision, msg: &Message, era: Era, batch_or_note: bool) -> Denial {
    if d.reason == DecisionReason::InsufficientScope {
        return Denial::new(Reason::InsufficientScope);
    }
    if policy.answer == AnswerStyle::Forbidden || batch_or_note {
        return Denial::new(Reason::PolicyDenied);
    }
    let modern = era == Era::Modern;
    let (status, code, message) = match (&msg.method, &msg.target) {
        (Method::ToolsCall, _) => (StatusCode::OK, -32602, "tool not found".to_string()),
        (Method::PromptsGet, Target::Prompt(name)) => {
            (StatusCode::OK, -32602, format!("prompt '{name}' not found"))
        }
        (_, Target::Resource(_)) | (_, Target::Subscriptions(_)) => (
            StatusCode::OK,
            if modern { -32602 } else { -32002 },
            "Resource not found".to_string(),
        ),
        (_, Target::CompletionPrompt(_) | Target::CompletionResource(_)) => {
            (StatusCode::OK, -32602, "Invalid params".to_string())
        }
        _ => (
            if modern {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::OK
            },
            -32601,
            "Method not found".to_string(),
        ),
    };
    Denial::new(Reason::PolicyDenied)
        .with_status(status)
        .with_error(code, message)
}

/// `Bearer error="insufficient_scope", scope="…", resource_metadata="…"` (RFC 6750 §3.1).
fn insufficient_scope(metadata_url: &str, d: &Decision) -> http::HeaderValue {
    let scopes = d.scopes.as_deref().unwrap_or_default().join(" ");
    http::HeaderValue::from_str(&format!(
        "Bearer error=\"insufficient_scope\", scope=\"{scopes}\", resource_metadata=\"{metadata_url}\""
    ))
    .unwrap_or(http::HeaderValue::from_static(
        "Bearer error=\"insufficient_scope\"",
    ))
}
