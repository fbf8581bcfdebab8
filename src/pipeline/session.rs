//! Session check: a legacy `Mcp-Session-Id`, and a 2025-11-25 task id, belong to the principal
//! that created them. Another principal presenting one gets 404 (counted and logged as a
//! hijack attempt); an id the sentinel does not know gets 404 too, so the client starts over.
//! Bindings are recorded from the upstream's answers (`Session::observe`).

use std::sync::Arc;

use http::{Method as HttpMethod, StatusCode};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::Ctx;
use crate::bindings::{Binding, Bindings, Kind, Owner};
use crate::denial::{Denial, Reason};
use crate::mcp::headers::MCP_SESSION_ID;
use crate::mcp::{Era, Method, Target};

pub struct Session {
    bindings: Arc<Bindings>,
    hijack_session: IntCounter,
    hijack_task: IntCounter,
    sessions: IntGauge,
}

impl Session {
    pub fn new(bindings: Arc<Bindings>, registry: &Registry) -> Result<Self, prometheus::Error> {
        let hijacks = IntCounterVec::new(
            Opts::new(
                "mcp_sentinel_hijack_attempts_total",
                "Requests presenting a session or task id created by another principal",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(hijacks.clone()))?;
        let sessions = IntGauge::new(
            "mcp_sentinel_bindings",
            "Session and task ids bound to their principal",
        )?;
        registry.register(Box::new(sessions.clone()))?;
        Ok(Self {
            bindings,
            hijack_session: hijacks.with_label_values(&["session"]),
            hijack_task: hijacks.with_label_values(&["task"]),
            sessions,
        })
    }

    pub fn bindings(&self) -> &Arc<Bindings> {
        &self.bindings
    }

    pub fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        let Some(principal) = ctx.principal.as_deref() else {
            return Ok(());
        };
        let owner = Owner::of(principal);
        if ctx.era == Era::Legacy
            && let Some(sid) = ctx
                .parts
                .headers
                .get(MCP_SESSION_ID)
                .and_then(|v| v.to_str().ok())
        {
            match self.bindings.check(Kind::Session, sid, &owner) {
                Binding::Own => ctx.session_id = Some(sid.into()),
                Binding::Foreign => {
                    self.hijack_session.inc();
                    tracing::warn!(
                        request = ctx.id,
                        caller = %principal.identity(),
                        method = %principal.method,
                        "session id of another principal presented: hijack attempt"
                    );
                    return Err(Denial::new(Reason::SessionNotFound).with_detail("hijack"));
                }
                Binding::Unknown => {
                    return Err(Denial::new(Reason::SessionNotFound).with_detail("unknown"));
                }
            }
        }
        if let Some(env) = &ctx.envelope {
            for m in &env.messages {
                let Target::Task(task) = &m.target else {
                    continue;
                };
                match self.bindings.check(Kind::Task, task, &owner) {
                    Binding::Own => {}
                    Binding::Foreign => {
                        self.hijack_task.inc();
                        tracing::warn!(
                            request = ctx.id,
                            caller = %principal.identity(),
                            method = %principal.method,
                            "task id of another principal presented: hijack attempt"
                        );
                        return Err(Denial::new(Reason::TaskNotFound).with_detail("hijack"));
                    }
                    Binding::Unknown => {
                        return Err(Denial::new(Reason::TaskNotFound).with_detail("unknown"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Learns from the upstream's answer: a new session from `initialize`, a session that ended
    /// (DELETE accepted, or the upstream no longer knows it).
    pub fn observe(&self, ctx: &Ctx, status: StatusCode, headers: &http::HeaderMap) {
        if let Some(sid) = &ctx.session_id {
            let ended = status == StatusCode::NOT_FOUND
                || (ctx.parts.method == HttpMethod::DELETE && status.is_success());
            if ended {
                self.bindings.remove(Kind::Session, sid);
                self.sessions.set(self.bindings.len() as i64);
            }
            return;
        }
        let initialize = ctx
            .envelope
            .as_ref()
            .and_then(|e| e.single())
            .is_some_and(|m| m.method == Method::Initialize);
        if !initialize || !status.is_success() {
            return;
        }
        if let (Some(p), Some(sid)) = (
            ctx.principal.as_deref(),
            headers.get(MCP_SESSION_ID).and_then(|v| v.to_str().ok()),
        ) {
            self.bindings.bind(Kind::Session, sid, Owner::of(p));
            self.sessions.set(self.bindings.len() as i64);
        }
    }

    /// Forgets idle bindings (run periodically).
    pub fn sweep(&self) {
        self.sessions.set(self.bindings.sweep() as i64);
    }

    /// Records that the caller of `ctx` created `task`.
    pub fn bind_task(&self, principal: &crate::identity::Principal, task: &str) {
        self.bindings.bind(Kind::Task, task, Owner::of(principal));
        self.sessions.set(self.bindings.len() as i64);
    }
}
