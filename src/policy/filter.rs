//! What the policy changes in answers: list results cut down to what the caller may use, and
//! server→client requests the caller may not receive taken out of SSE streams. Each edit sees
//! one JSON-RPC message; `proxy::rewrite` does the JSON and SSE framing around it.

use std::sync::Arc;

use serde_json::Value;

use super::{OpTarget, Policy};
use crate::auth::Principal;
use crate::mcp::Method;

/// What to do with one message of an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    Keep,
    Replace(Vec<u8>),
    Drop,
}

/// An edit applied to every JSON-RPC message of an answer.
pub trait MessageEdit: Send + 'static {
    fn edit(&mut self, message: &[u8]) -> Edit;
    /// The message to send instead of one too large to inspect (`None`: drop it).
    fn oversized(&mut self) -> Option<Vec<u8>>;
}

/// The four list methods and the item field each is filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub fn of(method: Method) -> Option<Self> {
        match method {
            Method::ToolsList => Some(Self::Tools),
            Method::PromptsList => Some(Self::Prompts),
            Method::ResourcesList => Some(Self::Resources),
            Method::ResourcesTemplatesList => Some(Self::Templates),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::Templates => "resource_templates",
        }
    }

    /// The result array and the item field that names each entry.
    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name"),
            Self::Prompts => ("prompts", "name"),
            Self::Resources => ("resources", "uri"),
            Self::Templates => ("resourceTemplates", "uriTemplate"),
        }
    }

    /// The call whose permission makes an item visible.
    fn op(self, name: &str) -> (&'static str, OpTarget<'_>) {
        match self {
            Self::Tools => ("tools/call", OpTarget::Tool(name)),
            Self::Prompts => ("prompts/get", OpTarget::Prompt(name)),
            Self::Resources | Self::Templates => ("resources/read", OpTarget::Resource(name)),
        }
    }
}

/// Filters the result of one list request to what the caller may use. Items are decided the
/// way calls are, with argument conditions taken as satisfiable; an item without a name is
/// hidden. Modern-era results are marked `cacheScope: "private"`.
pub struct ListFilter {
    pub policy: Arc<Policy>,
    pub principal: Arc<Principal>,
    pub kind: ListKind,
    /// The request's id, to find its answer among the messages of a stream.
    pub id: Value,
    pub modern: bool,
    /// Counts the items hidden.
    pub hidden: prometheus::IntCounter,
}

impl ListFilter {
    /// Filters one JSON-RPC response value in place; false when it is not this list's result.
    pub fn apply(&mut self, msg: &mut Value) -> bool {
        if msg.get("id") != Some(&self.id) {
            return false;
        }
        let Some(result) = msg.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let (array, field) = self.kind.fields();
        if let Some(Value::Array(items)) = result.get_mut(array) {
            let before = items.len();
            items.retain(|item| {
                item.get(field).and_then(Value::as_str).is_some_and(|name| {
                    let (method, target) = self.kind.op(name);
                    self.policy.visible(&self.principal, method, target)
                })
            });
            self.hidden.inc_by((before - items.len()) as u64);
        }
        if self.modern {
            result.insert("cacheScope".into(), Value::String("private".into()));
        }
        true
    }
}

impl MessageEdit for ListFilter {
    fn edit(&mut self, message: &[u8]) -> Edit {
        let Ok(mut v) = serde_json::from_slice::<Value>(message) else {
            return Edit::Keep;
        };
        if self.apply(&mut v) {
            Edit::Replace(serde_json::to_vec(&v).expect("a JSON value serializes"))
        } else {
            Edit::Keep
        }
    }

    /// A list too large to filter is not passed on unfiltered: the caller gets an error.
    fn oversized(&mut self) -> Option<Vec<u8>> {
        Some(
            serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0",
                "id": self.id,
                "error": {"code": -32603, "message": "List too large to filter"}
            }))
            .expect("a JSON value serializes"),
        )
    }
}

/// Called with the method and id of each blocked server→client request.
pub type OnBlocked = Box<dyn FnMut(&str, Value) + Send>;

/// Takes server→client requests of blocked methods out of a stream and hands their id to
/// `answer`, which tells the upstream (so it does not wait for a reply that never comes).
pub struct ServerRequestBlocker {
    pub blocked: Vec<&'static str>,
    pub answer: OnBlocked,
}

impl MessageEdit for ServerRequestBlocker {
    fn edit(&mut self, message: &[u8]) -> Edit {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow, default)]
            method: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            id: Option<Value>,
        }
        let Ok(head) = serde_json::from_slice::<Head<'_>>(message) else {
            return Edit::Keep;
        };
        match (head.method, head.id) {
            (Some(m), Some(id)) if self.blocked.contains(&m.as_ref()) => {
                (self.answer)(&m, id);
                Edit::Drop
            }
            _ => Edit::Keep,
        }
    }

    fn oversized(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// The modern era's server→client requests travel inside results (SEP-2322 multi round-trip
/// requests): a `tools/call`, `prompts/get` or `resources/read` answered `resultType:
/// "input_required"` with `inputRequests`. When one of them is a method the caller may not
/// receive, the result becomes the error a client without that capability would cause, so the
/// client neither sees the request nor retries; the upstream is stateless and waits for nothing.
pub struct InputRequestBlocker {
    /// The request's id, to find its answer.
    pub id: Value,
    pub blocked: Vec<&'static str>,
    pub counter: prometheus::IntCounterVec,
}

impl MessageEdit for InputRequestBlocker {
    fn edit(&mut self, message: &[u8]) -> Edit {
        let Ok(v) = serde_json::from_slice::<Value>(message) else {
            return Edit::Keep;
        };
        if v.get("id") != Some(&self.id) {
            return Edit::Keep;
        }
        let Some(result) = v.get("result") else {
            return Edit::Keep;
        };
        if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
            return Edit::Keep;
        }
        let Some(Value::Object(requests)) = result.get("inputRequests") else {
            return Edit::Keep;
        };
        let blocked: Vec<&'static str> = requests
            .values()
            .filter_map(|r| r.get("method").and_then(Value::as_str))
            .filter_map(|m| self.blocked.iter().copied().find(|b| *b == m))
            .collect();
        if blocked.is_empty() {
            return Edit::Keep;
        }
        for m in &blocked {
            self.counter.with_label_values(&[m]).inc();
        }
        Edit::Replace(
            serde_json::to_vec(&serde_json::json!({
                "jsonrpc": "2.0",
                "id": self.id,
                "error": {"code": -32021, "message": "Missing required client capability"}
            }))
            .expect("a JSON value serializes"),
        )
    }

    fn oversized(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// The JSON-RPC error the upstream gets for a blocked server→client request.
pub fn blocked_answer(id: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32601, "message": "Method not found"}
    }))
    .expect("a JSON value serializes")
}
