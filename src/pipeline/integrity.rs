//! Integrity check: a call to a tool, prompt or resource that tool integrity blocks (its
//! definition drifted from its pin, is not pinned, or carries instructions for the model) is
//! refused with an error that names why; the finding goes into the audit record.

use std::sync::Arc;

use http::StatusCode;

use super::Ctx;
use crate::denial::{Denial, Reason};
use crate::integrity::fingerprint::Kind;
use crate::integrity::{Integrity, Note};
use crate::mcp::{Era, Kind as MsgKind, Method, Target};

pub struct IntegrityCheck {
    integrity: Arc<Integrity>,
}

impl IntegrityCheck {
    pub fn new(integrity: Arc<Integrity>) -> Self {
        Self { integrity }
    }

    pub fn run(&self, ctx: &mut Ctx) -> Result<(), Denial> {
        let Some(env) = &ctx.envelope else {
            return Ok(());
        };
        for msg in &env.messages {
            let (kind, name) = match (&msg.method, &msg.target) {
                (Method::ToolsCall, Target::Tool(n)) => (Kind::Tool, n),
                (Method::PromptsGet, Target::Prompt(n)) => (Kind::Prompt, n),
                (Method::ResourcesRead, Target::Resource(u)) => (Kind::Resource, u),
                _ => continue,
            };
            let Some(block) = self.integrity.blocked(kind, name) else {
                continue;
            };
            let message = block.describe();
            ctx.integrity.push(Note {
                kind: block.kind.as_str(),
                name: Some(block.name.clone()),
                finding: block.finding,
                action: "block",
                detail: block.detail.clone(),
            });
            let denial = Denial::new(Reason::IntegrityBlocked).with_detail(message.clone());
            if env.batch || msg.kind != MsgKind::Request {
                return Err(denial);
            }
            // What a client reads for something it cannot use: the "not found" error of its
            // kind (an error a model knows how to handle), with the reason in words and data.
            let code = match (kind, ctx.era) {
                (Kind::Resource, Era::Legacy) => -32002,
                _ => -32602,
            };
            let data = serde_json::json!({
                "integrity": {
                    "kind": block.kind.as_str(),
                    "name": block.name,
                    "finding": block.finding,
                    "detail": block.detail,
                }
            });
            return Err(denial
                .with_status(StatusCode::OK)
                .with_error(code, message)
                .with_data(data.to_string()));
        }
        Ok(())
    }
}
