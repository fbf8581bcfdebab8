//! The answer stages: what happens to the upstream's answer on its way to the client, in the
//! order of [`ANSWER_STAGES`].

use std::sync::Arc;

use http::{Method as HttpMethod, Response};

use super::{Ctx, Pipeline};
use crate::bindings::Owner;
use crate::denial::{Denial, Reason};
use crate::mcp::{Era, Method};
use crate::policy::filter::{
    AnswerEdit, IntegrityEdit, OnBlocked, OwnTasks, PolicyRef, blocked_answer,
};
use crate::proxy::body::ProxyBody;
use crate::proxy::rewrite::Rewriter;
use crate::proxy::tap::TaskTap;

/// One stage over the upstream's answer. An enum, like the checks: the order is data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerStage {
    /// A session the upstream created is bound to its caller; one it ended is forgotten.
    ObserveSession,
    /// Lists cut to what the caller may use, task lists to the caller's own tasks, server
    /// requests the caller may not receive blocked. Refuses an answer it must read but cannot
    /// (compressed, or in a charset other than UTF-8).
    Filter,
    /// Task handles bound to their creator as they pass; the answer's error code and a tool
    /// result's `isError` noted (audit record, `answers_total`, the request's span).
    Tap,
    /// Concurrency-limit slots held until the answer ends.
    Permits,
}

/// The order of the answer stages. Filtering comes before the tap, so the tap sees what the
/// client sees.
pub const ANSWER_STAGES: [AnswerStage; 4] = [
    AnswerStage::ObserveSession,
    AnswerStage::Filter,
    AnswerStage::Tap,
    AnswerStage::Permits,
];

impl AnswerStage {
    pub fn name(self) -> &'static str {
        match self {
            AnswerStage::ObserveSession => "observe_session",
            AnswerStage::Filter => "filter",
            AnswerStage::Tap => "tap",
            AnswerStage::Permits => "permits",
        }
    }
}

pub(super) fn is_sse(resp: &Response<ProxyBody>) -> bool {
    crate::proxy::headers::is_event_stream(resp.headers())
}

impl Pipeline {
    pub(super) fn answer(
        &self,
        stage: AnswerStage,
        ctx: &mut Ctx,
        resp: Response<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Denial> {
        match stage {
            AnswerStage::ObserveSession => {
                self.session.observe(ctx, resp.status(), resp.headers());
                Ok(resp)
            }
            AnswerStage::Filter => self.filter(ctx, resp),
            AnswerStage::Tap => Ok(self.tap(ctx, resp)),
            // Concurrency slots are held until the response ends or is dropped.
            AnswerStage::Permits => Ok(match ctx.permits.take() {
                Some(p) => resp.map(|b| b.with_permits(p)),
                None => resp,
            }),
        }
    }

    /// A `tools/call` answer may carry a task handle: bind its id to the caller as it passes.
    fn tap(&self, ctx: &Ctx, resp: Response<ProxyBody>) -> Response<ProxyBody> {
        let call = ctx
            .envelope
            .as_ref()
            .and_then(|e| e.single())
            .is_some_and(|m| m.method == Method::ToolsCall);
        // Every answer to a request is read for its error code and `isError`: the audit record
        // notes them, `answers_total` counts them and the request's span reports them.
        let audit = ctx.envelope.as_ref().is_some_and(|e| e.has_requests());
        let sse = is_sse(&resp);
        let tap = match &ctx.principal {
            Some(p) if call && resp.status().is_success() => {
                let (session, principal) = (self.session.clone(), p.clone());
                let tap = TaskTap::new(
                    sse,
                    Box::new(move |task: &str| session.bind_task(&principal, task)),
                );
                if audit { tap.with_results() } else { tap }
            }
            _ if audit => TaskTap::results_only(sse),
            _ => return resp,
        };
        resp.map(|b| b.with_tap(tap))
    }

    /// What the policy changes in an answer: a list result is cut down to what the caller may
    /// use, a `tasks/list` result to the caller's own tasks; a legacy SSE stream loses the
    /// server→client requests the caller may not receive.
    fn filter(&self, ctx: &Ctx, resp: Response<ProxyBody>) -> Result<Response<ProxyBody>, Denial> {
        let (Some(policy), Some(principal)) = (&ctx.policy, &ctx.principal) else {
            return Ok(resp);
        };
        // What tool integrity reads: every answer, by its shape, whatever was asked (an
        // upstream may answer any pending request on any stream, a task's result comes from
        // `tasks/result`); a non-2xx answer's body as text, since clients show it.
        let raw_text = !resp.status().is_success();
        let integrity = self.integrity.as_ref().and_then(|i| {
            let (lists, results) = if raw_text {
                (false, i.scans_results())
            } else {
                (i.checks_lists(), i.scans_results())
            };
            (lists || results).then(|| IntegrityEdit {
                integrity: i.clone(),
                lists,
                results,
                raw_text,
                notes: Vec::new(),
            })
        });
        if raw_text && integrity.is_none() {
            return Ok(resp);
        }
        if let Some(ie) = &integrity
            && !ie.raw_text
            && !crate::proxy::headers::is_json_or_event_stream(resp.headers())
            && !http_body::Body::is_end_stream(resp.body())
        {
            // A type that is neither (or both, `application/json, text/event-stream`): clients
            // differ on how to read it, so it is not passed on.
            return Err(Denial::new(Reason::UpstreamUnavailable)
                .with_detail("answer of a content type integrity cannot read one way"));
        }
        let stream = ctx.parts.method == HttpMethod::GET;
        let messages = ctx.envelope.as_ref().map_or(&[][..], |e| &e.messages[..]);
        // Task lists are cut to the caller's own whatever the policy: ownership is not a rule.
        let tasks = stream || messages.iter().any(|m| m.method == Method::TasksList);
        // Nothing to hide from anyone under the policy this answer is decided with. A GET
        // stream is edited with the live policy, which a reload may change while it runs.
        let policy_edits = !raw_text && (stream || tasks || !policy.denies_nothing());
        if !policy_edits && integrity.is_none() {
            return Ok(resp);
        }
        let sse = is_sse(&resp);
        let modern = ctx.era == Era::Modern;
        // Lists are read by their shape in every answer while the policy hides something: an
        // upstream may answer a pending list request on any stream (clients match responses by
        // id), and a GET stream may replay any earlier answer (resumption).
        let lists = policy_edits
            && (stream || !policy.denies_nothing() || messages.iter().any(|m| m.method.is_list()));
        // So are task lists, then: an answer read anyway costs nothing more to read for them.
        // (Under a policy that hides nothing, only answers to `tasks/list` and GET streams are;
        // reading every answer there would hold every JSON answer whole.)
        let tasks = tasks || lists;
        let asks_input = modern
            && messages.iter().any(|m| {
                matches!(
                    m.method,
                    Method::ToolsCall | Method::PromptsGet | Method::ResourcesRead
                )
            });
        let legacy_stream = sse && !modern;
        let blocks = policy_edits
            && (stream
                || ((legacy_stream || asks_input) && policy.blocks_server_requests(principal)));
        let policy_edits = lists || blocks || tasks;
        if !policy_edits && integrity.is_none() {
            return Ok(resp);
        }
        if let Some(enc) = resp.headers().get(http::header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            // The upstream is asked for identity; an answer it compressed anyway cannot be
            // inspected, so it is not passed on.
            return Err(Denial::new(Reason::UpstreamUnavailable)
                .with_detail("compressed answer that the policy must inspect"));
        }
        if crate::proxy::headers::foreign_charset(resp.headers()) {
            // What the policy reads as UTF-8, a client would decode with that charset.
            return Err(Denial::new(Reason::UpstreamUnavailable)
                .with_detail("answer in a charset other than UTF-8 that the policy must inspect"));
        }
        let on_blocked: Option<OnBlocked> = (legacy_stream && blocks).then(|| {
            let send = self.proxy.answer_upstream(
                ctx.session_id.as_deref(),
                ctx.version.as_deref(),
                Some(principal),
            );
            let subject = principal.identity();
            Box::new(move |method: &str, id: serde_json::Value| {
                tracing::info!(subject = %subject, method, "server-to-client request blocked by policy");
                send(bytes::Bytes::from(blocked_answer(&id)));
            }) as OnBlocked
        });
        let edit = AnswerEdit {
            policy: if stream {
                PolicyRef::Live(self.policy.clone())
            } else {
                PolicyRef::Fixed(Arc::clone(policy))
            },
            principal: principal.clone(),
            modern,
            lists,
            tasks: tasks.then(|| OwnTasks {
                bindings: self.session.bindings().clone(),
                owner: Owner::of(principal),
            }),
            request_id: ctx.reply_id().and_then(|id| serde_json::from_str(&id).ok()),
            on_blocked,
            hidden: self.metrics.list_items_hidden.clone(),
            blocked: self.metrics.server_requests_blocked.clone(),
            integrity,
            policy_edits,
        };
        let (mut parts, body) = resp.into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Ok(Response::from_parts(
            parts,
            body.with_rewriter(Rewriter::new(sse, Box::new(edit))),
        ))
    }
}
