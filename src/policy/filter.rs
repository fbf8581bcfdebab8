//! What the policy changes in answers, message by message (`proxy::rewrite` does the JSON and
//! SSE framing around it):
//! - list results (`tools`, `prompts`, `resources`, `resourceTemplates` arrays) cut down to
//!   what the caller may use — recognised by their shape, not by matching ids, so a batch, a
//!   resumed stream or an id the upstream re-encoded cannot carry a list past the filter;
//! - `tasks/list` results (`tasks` arrays) cut down to the caller's own tasks, by the same
//!   shape rule;
//! - legacy server→client requests the caller may not receive taken out of the stream (and
//!   answered to the upstream by the caller of `AnswerEdit`);
//! - modern `input_required` results asking for such a request turned into the error a client
//!   without that capability causes.

use std::sync::Arc;

use prometheus::IntCounterVec;
use serde_json::{Map, Value};

use super::{OpTarget, Policy, PolicyStore};
use crate::bindings::{Binding, Bindings, Kind, Owner};
use crate::identity::Principal;

/// What to do with one message of an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    Keep,
    Replace(Vec<u8>),
    Drop,
}

/// What to do with a message too large to hold, decided from its first bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Oversized {
    /// Stream it through unchanged.
    Pass,
    /// Send this message instead.
    Replace(Vec<u8>),
    Drop,
}

/// An edit applied to every JSON-RPC message of an answer.
pub trait MessageEdit: Send + 'static {
    fn edit(&mut self, message: &[u8]) -> Edit;
    fn oversized(&mut self, head: &[u8]) -> Oversized;
    /// An unterminated last SSE event may go out as it is (nothing in it needs editing).
    fn keeps_partial(&self) -> bool {
        true
    }
}

/// The four list results and the item field that names each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::Templates,
    ];

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

/// The policy an answer is edited with: the one its request was decided with, or — for a
/// long-lived GET stream — whichever is running when each message passes.
pub enum PolicyRef {
    Fixed(Arc<Policy>),
    Live(Arc<PolicyStore>),
}

impl PolicyRef {
    fn get(&self) -> Arc<Policy> {
        match self {
            PolicyRef::Fixed(p) => p.clone(),
            PolicyRef::Live(s) => s.current(),
        }
    }
}

/// Whose tasks a `tasks/list` answer may show: the ids bound to the caller (bound as their
/// handles pass, `proxy::tap`). Upstreams list every task they hold, whoever created it.
pub struct OwnTasks {
    pub bindings: Arc<Bindings>,
    pub owner: Owner,
}

impl OwnTasks {
    fn owns(&self, task: &str) -> bool {
        self.bindings.check(Kind::Task, task, &self.owner) == Binding::Own
    }
}

/// Called with the method and id of each blocked legacy server→client request.
pub type OnBlocked = Box<dyn FnMut(&str, Value) + Send>;

/// The policy's edit of one answer.
pub struct AnswerEdit {
    pub policy: PolicyRef,
    pub principal: Arc<Principal>,
    /// 2026-07-28: filtered lists are marked `cacheScope: "private"`; `input_required`
    /// results are checked.
    pub modern: bool,
    /// The answer may carry list results (a list request, a batch, a GET stream).
    pub lists: bool,
    /// The answer may carry a `tasks/list` result, shown only with the caller's own tasks.
    pub tasks: Option<OwnTasks>,
    /// The request's id, for the error that replaces a list too large to filter.
    pub request_id: Option<Value>,
    /// Legacy streams: blocked server→client requests are dropped and handed to this.
    pub on_blocked: Option<OnBlocked>,
    /// `list_items_hidden_total{list}`
    pub hidden: IntCounterVec,
    /// `server_requests_blocked_total{method}`
    pub blocked: IntCounterVec,
}

impl AnswerEdit {
    /// Edits one message in place; `None` drops it.
    fn message(&mut self, policy: &Policy, msg: &mut Value) -> Option<bool> {
        let Value::Object(obj) = msg else {
            return Some(false);
        };
        if let (Some(Value::String(method)), Some(id)) = (obj.get("method"), obj.get("id")) {
            // A server→client request.
            if let Some(on_blocked) = &mut self.on_blocked
                && super::SERVER_REQUESTS.contains(&method.as_str())
                && !policy.allows_server_request(&self.principal, method)
            {
                self.blocked.with_label_values(&[method]).inc();
                on_blocked(method, id.clone());
                return None;
            }
            return Some(false);
        }
        let id = obj.get("id").cloned().unwrap_or(Value::Null);
        let Some(Value::Object(result)) = obj.get_mut("result") else {
            return Some(false);
        };
        if self.modern && self.input_request_blocked(policy, result) {
            *msg = serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32021, "message": "Missing required client capability"}
            });
            return Some(true);
        }
        let mut changed = false;
        if let Some(own) = &self.tasks
            && let Some(Value::Array(items)) = result.get_mut("tasks")
        {
            let before = items.len();
            items.retain(|item| {
                item.get("taskId")
                    .and_then(Value::as_str)
                    .is_some_and(|t| own.owns(t))
            });
            let hidden = (before - items.len()) as u64;
            self.hidden.with_label_values(&["tasks"]).inc_by(hidden);
            changed = true;
        }
        let kinds: &[ListKind] = if self.lists { &ListKind::ALL } else { &[] };
        for &kind in kinds {
            let (array, field) = kind.fields();
            if let Some(Value::Array(items)) = result.get_mut(array) {
                let before = items.len();
                items.retain(|item| {
                    item.get(field).and_then(Value::as_str).is_some_and(|name| {
                        let (method, target) = kind.op(name);
                        policy.visible(&self.principal, method, target)
                    })
                });
                let hidden = (before - items.len()) as u64;
                self.hidden
                    .with_label_values(&[kind.as_str()])
                    .inc_by(hidden);
                changed = true;
            }
        }
        if changed && self.modern {
            result.insert("cacheScope".into(), Value::String("private".into()));
        }
        Some(changed)
    }

    /// An `input_required` result asking for a request the caller may not receive.
    fn input_request_blocked(&self, policy: &Policy, result: &Map<String, Value>) -> bool {
        if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
            return false;
        }
        let Some(Value::Object(requests)) = result.get("inputRequests") else {
            return false;
        };
        let mut blocked = false;
        for m in requests
            .values()
            .filter_map(|r| r.get("method").and_then(Value::as_str))
        {
            if !policy.allows_server_request(&self.principal, m) {
                self.blocked.with_label_values(&[m]).inc();
                blocked = true;
            }
        }
        blocked
    }

    /// Some list in the answer is cut down to what the caller may see.
    fn filters(&self) -> bool {
        self.lists || self.tasks.is_some()
    }

    fn list_error(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.request_id.clone().unwrap_or(Value::Null),
            "error": {"code": -32603, "message": "Answer could not be filtered"}
        }))
        .expect("a JSON value serializes")
    }
}

/// Could these bytes hold a list result? (Used when they cannot be parsed.)
fn may_hold_list(bytes: &[u8]) -> bool {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    has(b"\"result\"")
        && (has(b"\"tools\"")
            || has(b"\"tasks\"")
            || has(b"\"prompts\"")
            || has(b"\"resources\"")
            || has(b"\"resourceTemplates\""))
}

impl MessageEdit for AnswerEdit {
    fn edit(&mut self, message: &[u8]) -> Edit {
        let Ok(mut v) = serde_json::from_slice::<Value>(message) else {
            // What cannot be read cannot be shown to be safe when it may be a list.
            return if self.filters() && may_hold_list(message) {
                Edit::Replace(self.list_error())
            } else {
                Edit::Keep
            };
        };
        let policy = self.policy.get();
        let changed = match &mut v {
            Value::Array(items) => {
                let mut changed = false;
                let mut kept = Vec::with_capacity(items.len());
                for mut item in std::mem::take(items) {
                    match self.message(&policy, &mut item) {
                        Some(c) => {
                            changed |= c;
                            kept.push(item);
                        }
                        None => changed = true,
                    }
                }
                if kept.is_empty() {
                    return Edit::Drop;
                }
                *items = kept;
                changed
            }
            msg => match self.message(&policy, msg) {
                None => return Edit::Drop,
                Some(c) => c,
            },
        };
        if changed {
            Edit::Replace(serde_json::to_vec(&v).expect("a JSON value serializes"))
        } else {
            Edit::Keep
        }
    }

    /// A list too large to filter is not passed on: the caller gets an error. A server request
    /// that large is dropped when the caller may not receive some server requests. Everything
    /// else streams through.
    fn oversized(&mut self, head: &[u8]) -> Oversized {
        let needle = b"\"method\"";
        let looks_like_request = head.windows(needle.len()).any(|w| w == needle);
        if self.filters() && !looks_like_request {
            return Oversized::Replace(self.list_error());
        }
        if looks_like_request && self.on_blocked.is_some() {
            return Oversized::Drop;
        }
        Oversized::Pass
    }

    fn keeps_partial(&self) -> bool {
        !self.filters()
    }
}

/// The JSON-RPC error the upstream gets for a blocked server→client request: what a client
/// without that capability answers.
pub fn blocked_answer(id: &Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32601, "message": "Method not found"}
    }))
    .expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::identity::AuthMethod;

    fn counter(name: &str, label: &str) -> IntCounterVec {
        IntCounterVec::new(prometheus::Opts::new(name, "test"), &[label]).unwrap()
    }

    /// Echo allowed, sampling denied for everyone.
    fn edit(lists: bool, legacy: bool) -> (AnswerEdit, Arc<Mutex<Vec<String>>>) {
        let policy = Policy::from_yaml(
            "default: deny\nrules:\n  - {name: echo, effect: allow, tools: [echo]}\n  - {name: no-sampling, effect: deny, methods: [sampling/createMessage]}\n",
            "t",
        )
        .unwrap();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let log = answered.clone();
        let on_blocked: Option<OnBlocked> = legacy.then(|| {
            Box::new(move |m: &str, id: Value| log.lock().unwrap().push(format!("{m} {id}")))
                as OnBlocked
        });
        let e = AnswerEdit {
            policy: PolicyRef::Fixed(Arc::new(policy)),
            principal: Arc::new(Principal::new("p", AuthMethod::Jwt)),
            modern: false,
            lists,
            tasks: None,
            request_id: Some(json!(7)),
            on_blocked,
            hidden: counter("hidden", "list"),
            blocked: counter("blocked", "method"),
        };
        (e, answered)
    }

    use serde_json::json;

    fn replaced(e: Edit) -> Value {
        match e {
            Edit::Replace(b) => serde_json::from_slice(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lists_are_filtered_in_batches_whatever_their_id() {
        let (mut e, _) = edit(true, false);
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "echo"}, {"name": "rm"}]}},
            {"jsonrpc": "2.0", "id": "x", "result": {"content": []}}
        ]);
        let v = replaced(e.edit(batch.to_string().as_bytes()));
        assert_eq!(v[0]["result"]["tools"], json!([{"name": "echo"}]));
        assert_eq!(v[1], batch[1]);
        assert_eq!(e.hidden.with_label_values(&["tools"]).get(), 1);
    }

    #[test]
    fn task_lists_show_only_the_callers_own_tasks() {
        let (mut e, _) = edit(false, false);
        let bindings = Arc::new(Bindings::new(std::time::Duration::from_secs(60), 10));
        let me = Owner::of(&e.principal);
        let other = Owner::of(&Principal::new("q", AuthMethod::Jwt));
        bindings.bind(Kind::Task, "mine", me.clone());
        bindings.bind(Kind::Task, "theirs", other);
        e.tasks = Some(OwnTasks {
            bindings,
            owner: me,
        });
        let list = json!({"jsonrpc": "2.0", "id": 3, "result": {"tasks": [
            {"taskId": "mine", "status": "working"},
            {"taskId": "theirs", "status": "working"},
            {"taskId": "nobody's", "status": "completed"},
            {"status": "completed"}
        ], "nextCursor": "c"}});
        let v = replaced(e.edit(list.to_string().as_bytes()));
        assert_eq!(
            v["result"],
            json!({"tasks": [{"taskId": "mine", "status": "working"}], "nextCursor": "c"})
        );
        assert_eq!(e.hidden.with_label_values(&["tasks"]).get(), 3);
        // Tool lists are left alone when only tasks are filtered.
        let tools = json!({"jsonrpc": "2.0", "id": 4, "result": {"tools": [{"name": "rm"}]}});
        assert_eq!(e.edit(tools.to_string().as_bytes()), Edit::Keep);
        // What cannot be read or held is not shown.
        assert!(!e.keeps_partial());
        assert!(matches!(
            e.oversized(b"{\"result\":{\"tasks\":["),
            Oversized::Replace(_)
        ));
        let broken = br#"{"jsonrpc":"2.0","id":7,"result":{"tasks":[{"taskId":"theirs"}"#;
        assert_eq!(
            replaced(e.edit(broken))["error"]["message"],
            "Answer could not be filtered"
        );
    }

    #[test]
    fn blocked_server_requests_leave_arrays_and_streams() {
        let (mut e, answered) = edit(false, true);
        let req =
            json!({"jsonrpc": "2.0", "id": 5, "method": "sampling/createMessage", "params": {}});
        assert_eq!(e.edit(req.to_string().as_bytes()), Edit::Drop);
        let roots = json!({"jsonrpc": "2.0", "id": 6, "method": "roots/list"});
        assert_eq!(e.edit(roots.to_string().as_bytes()), Edit::Keep);
        let both = json!([req, roots]);
        assert_eq!(
            replaced(e.edit(both.to_string().as_bytes())),
            json!([roots])
        );
        assert_eq!(
            *answered.lock().unwrap(),
            ["sampling/createMessage 5", "sampling/createMessage 5"]
        );
    }

    #[test]
    fn what_cannot_be_read_fails_closed_for_lists_only() {
        let (mut e, _) = edit(true, false);
        let broken = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"rm"}"#;
        assert_eq!(
            replaced(e.edit(broken))["error"]["message"],
            "Answer could not be filtered"
        );
        assert_eq!(e.edit(b"not json at all"), Edit::Keep);
        assert!(!e.keeps_partial());
        assert!(matches!(
            e.oversized(b"{\"result\":{\"tools\":["),
            Oversized::Replace(_)
        ));
        let (mut e, _) = edit(false, true);
        assert_eq!(
            e.oversized(b"{\"jsonrpc\":\"2.0\",\"result\":"),
            Oversized::Pass
        );
        assert_eq!(
            e.oversized(b"{\"method\":\"sampling/create"),
            Oversized::Drop
        );
        assert!(e.keeps_partial());
    }
}
