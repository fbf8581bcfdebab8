//! Reads task handles out of `tools/call` answers as they stream past, so the task id is bound
//! to its creator before the client can see it (session-hijack protection for tasks). The bytes
//! pass unchanged; only a bounded prefix of each JSON body or SSE event is looked at, and
//! anything larger is skipped: a task handle is small. With audit on it also notes the
//! answer's JSON-RPC error code and a tool result's `isError` for the record.

use crate::proxy::rewrite::event_end;

/// Binds a task id to the caller whose answer carried it.
pub type BindTask = Box<dyn Fn(&str) + Send + Sync>;

/// Bodies and events larger than this are not inspected.
const LIMIT: usize = 64 * 1024;

pub struct TaskTap {
    buf: Vec<u8>,
    sse: bool,
    /// JSON: the body was read (or is too large). SSE: inside an oversized event.
    done: bool,
    /// Binds task handles to their creator.
    bind: Option<BindTask>,
    /// Notes errors for the audit record.
    results: bool,
    pub seen: Seen,
}

/// What an answer showed, for the audit record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// `result.isError` of a tool result.
    pub is_error: Option<bool>,
    /// The first `error.code` of a JSON-RPC response.
    pub error_code: Option<i64>,
}

impl TaskTap {
    pub fn new(sse: bool, bind: BindTask) -> Self {
        Self {
            buf: Vec::new(),
            sse,
            done: false,
            bind: Some(bind),
            results: false,
            seen: Seen::default(),
        }
    }

    /// A tap that only notes results (audit), binding nothing.
    pub fn results_only(sse: bool) -> Self {
        Self {
            buf: Vec::new(),
            sse,
            done: false,
            bind: None,
            results: true,
            seen: Seen::default(),
        }
    }

    /// Also notes results for the audit record.
    pub fn with_results(mut self) -> Self {
        self.results = true;
        self
    }

    /// Worth parsing: holds what one of the tap's jobs looks for.
    fn interesting(&self, text: &[u8]) -> bool {
        let has = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
        (self.bind.is_some() && has(b"taskId"))
            || (self.results && (has(b"\"error\"") || has(b"isError")))
    }

    /// Sees the next piece of the response body.
    pub fn feed(&mut self, data: &[u8]) {
        if self.sse {
            self.feed_sse(data);
        } else if !self.done {
            self.buf.extend_from_slice(data);
            if self.buf.len() > LIMIT {
                self.done = true;
                self.buf = Vec::new();
            } else if self.interesting(&self.buf)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.buf)
            {
                self.done = true;
                self.buf = Vec::new();
                self.message(&v);
            }
        }
    }

    fn feed_sse(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some((end, sep)) = event_end(&self.buf, 0) {
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            if self.done {
                // The tail of an oversized event.
                self.done = false;
                continue;
            }
            self.event(&event[..end]);
        }
        if self.buf.len() > LIMIT {
            // Keep only what could start a separator split across frames.
            self.done = true;
            let keep = self.buf.len() - 3;
            self.buf.drain(..keep);
        }
    }

    fn event(&mut self, event: &[u8]) {
        if !self.interesting(event) {
            return;
        }
        let Ok(text) = std::str::from_utf8(event) else {
            return;
        };
        let mut data = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) {
            self.message(&v);
        }
    }

    /// A JSON-RPC result carrying a task handle: `result.task.taskId` (2025-11-25
    /// `CreateTaskResult`), or `result.taskId` beside `resultType: "task"` (the tasks extension,
    /// SEP-2663, as rmcp sends it in every revision).
    fn message(&mut self, v: &serde_json::Value) {
        if let serde_json::Value::Array(items) = v {
            for item in items {
                self.message(item);
            }
            return;
        }
        if self.results {
            if let Some(code) = v.pointer("/error/code").and_then(serde_json::Value::as_i64) {
                self.seen.error_code.get_or_insert(code);
            }
            if let Some(e) = v
                .pointer("/result/isError")
                .and_then(serde_json::Value::as_bool)
            {
                self.seen.is_error = Some(e || self.seen.is_error == Some(true));
            }
        }
        let Some(bind) = &self.bind else {
            return;
        };
        let flat = v.pointer("/result/resultType").and_then(|t| t.as_str()) == Some("task");
        let id = v
            .pointer("/result/task/taskId")
            .or_else(|| flat.then(|| v.pointer("/result/taskId")).flatten())
            .and_then(serde_json::Value::as_str);
        if let Some(id) = id {
            bind(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::bindings::{Binding, Bindings, Kind, Owner};
    use crate::identity::{AuthMethod, Principal};

    fn tap(sse: bool) -> (TaskTap, Arc<Bindings>, Owner) {
        let bindings = Arc::new(Bindings::new(std::time::Duration::from_secs(60), 100));
        let owner = Owner::of(&Principal::new("alice", AuthMethod::Jwt));
        let bind = {
            let (bindings, owner) = (bindings.clone(), owner.clone());
            Box::new(move |id: &str| bindings.bind(Kind::Task, id, owner.clone()))
        };
        (TaskTap::new(sse, bind), bindings, owner)
    }

    /// 2025-11-25 `CreateTaskResult`.
    const HANDLE: &str =
        r#"{"jsonrpc":"2.0","id":3,"result":{"task":{"taskId":"t-42","status":"working"}}}"#;
    /// The tasks extension (SEP-2663), as rmcp sends it.
    const FLAT: &str = r#"{"jsonrpc":"2.0","id":4,"result":{"resultType":"task","taskId":"t-43","status":"working"}}"#;

    #[test]
    fn json_bodies_in_pieces() {
        let (mut t, b, owner) = tap(false);
        let (a, c) = HANDLE.split_at(30);
        t.feed(a.as_bytes());
        assert_eq!(b.check(Kind::Task, "t-42", &owner), Binding::Unknown);
        t.feed(c.as_bytes());
        assert_eq!(b.check(Kind::Task, "t-42", &owner), Binding::Own);
    }

    #[test]
    fn sse_events_split_across_frames() {
        let (mut t, b, owner) = tap(true);
        let stream = format!(
            ": priming\n\nid: 1\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{}}}}\n\nid: 2\ndata: {HANDLE}\n\n"
        );
        for chunk in stream.as_bytes().chunks(7) {
            t.feed(chunk);
        }
        assert_eq!(b.check(Kind::Task, "t-42", &owner), Binding::Own);
        let (mut t, b, owner) = tap(true);
        t.feed(format!("data: {HANDLE}\r\n\r\n").as_bytes());
        assert_eq!(b.check(Kind::Task, "t-42", &owner), Binding::Own);
    }

    #[test]
    fn oversized_events_are_skipped_and_what_follows_is_read() {
        let (mut t, b, owner) = tap(true);
        let big = format!("data: \"{}\"\n\n", "x".repeat(LIMIT * 2));
        for chunk in big.as_bytes().chunks(4096) {
            t.feed(chunk);
        }
        t.feed(format!("data: {HANDLE}\n\n").as_bytes());
        assert_eq!(b.check(Kind::Task, "t-42", &owner), Binding::Own);
        assert!(t.buf.is_empty());
    }

    #[test]
    fn flat_task_handles() {
        let (mut t, b, owner) = tap(true);
        t.feed(format!("id: 1\ndata: {FLAT}\n\n").as_bytes());
        assert_eq!(b.check(Kind::Task, "t-43", &owner), Binding::Own);
        // A taskId in a result that is not a task handle binds nothing.
        let (mut t, b, _) = tap(false);
        t.feed(br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete","taskId":"x"}}"#);
        assert!(b.is_empty());
    }

    #[test]
    fn results_are_noted_for_the_audit() {
        let mut t = TaskTap::results_only(false);
        t.feed(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#);
        assert_eq!(
            t.seen,
            Seen {
                is_error: Some(true),
                error_code: None
            }
        );
        let mut t = TaskTap::results_only(true);
        t.feed(
            b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n",
        );
        t.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32603,\"message\":\"x\"}}\n\n");
        assert_eq!(
            t.seen,
            Seen {
                is_error: None,
                error_code: Some(-32603)
            }
        );
        // Nothing of interest: never parsed, nothing noted.
        let mut t = TaskTap::results_only(false);
        t.feed(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(t.seen, Seen::default());
    }

    #[test]
    fn results_without_a_task_bind_nothing() {
        let (mut t, b, _) = tap(false);
        t.feed(
            br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"taskId"}]}}"#,
        );
        assert!(b.is_empty());
    }
}
