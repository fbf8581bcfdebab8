//! Reads task handles out of `tools/call` answers as they stream past, so the task id is bound
//! to its creator before the client can see it (session-hijack protection for tasks). The bytes
//! pass unchanged; only a bounded prefix of each JSON body or SSE event is looked at, and
//! anything larger is skipped: a task handle is small. With audit on it also notes the
//! answer's JSON-RPC error code and a tool result's `isError` for the record.

use crate::proxy::sse::{self, EventReader};

/// Binds a task id to the caller whose answer carried it.
pub type BindTask = Box<dyn Fn(&str) + Send + Sync>;

/// Bodies and events larger than this are not inspected.
const LIMIT: usize = 64 * 1024;
/// The longest needle `interesting` looks for (`"error"`, `isError`).
const NEEDLE_MAX: usize = 7;

pub struct TaskTap {
    /// A JSON body, held.
    buf: Vec<u8>,
    /// An SSE body, cut into events.
    events: EventReader,
    sse: bool,
    /// JSON: the body was read (or is too large). SSE: inside an oversized event.
    done: bool,
    /// JSON: what is held so far holds a needle `interesting` looks for.
    hit: bool,
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
            events: EventReader::new(),
            sse,
            done: false,
            hit: false,
            bind: Some(bind),
            results: false,
            seen: Seen::default(),
        }
    }

    /// A tap that only notes results (audit), binding nothing.
    pub fn results_only(sse: bool) -> Self {
        Self {
            buf: Vec::new(),
            events: EventReader::new(),
            sse,
            done: false,
            hit: false,
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
        let has = |needle: &[u8]| memchr::memmem::find(text, needle).is_some();
        (self.bind.is_some() && has(b"taskId"))
            || (self.results && (has(b"\"error\"") || has(b"isError")))
    }

    /// Sees the next piece of the response body.
    pub fn feed(&mut self, data: &[u8]) {
        if self.sse {
            self.feed_sse(data);
        } else if !self.done {
            if self.buf.len() + data.len() > LIMIT {
                // Too large to inspect: known before copying the piece that makes it so.
                self.done = true;
                self.buf = Vec::new();
                return;
            }
            // Only the new bytes (and the few before them a needle could start in) are searched:
            // what was searched before stays searched, so a body in many pieces costs one pass.
            let from = self.buf.len().saturating_sub(NEEDLE_MAX - 1);
            self.buf.extend_from_slice(data);
            self.hit = self.hit || self.interesting(&self.buf[from..]);
            if self.hit {
                let buf = std::mem::take(&mut self.buf);
                if self.read(&buf) {
                    self.done = true;
                } else {
                    self.buf = buf;
                }
            }
        }
    }

    /// The body ended: a last event closed by a bare CR is complete only now.
    pub fn finish(&mut self) {
        if self.sse {
            self.events.finish();
            self.read_events();
        }
    }

    fn feed_sse(&mut self, data: &[u8]) {
        self.events.feed(data);
        self.read_events();
        if self.events.pending().len() > LIMIT {
            // Skip the rest of this event: only its end is looked for.
            self.done = true;
            self.events.discard(self.events.open_len());
        }
    }

    fn read_events(&mut self) {
        // Taken out for the loop, so the events can be read while `self` notes what they hold.
        let mut events = std::mem::take(&mut self.events);
        while let Some((event, _)) = events.next_event() {
            if self.done {
                // The tail of an oversized event.
                self.done = false;
                continue;
            }
            self.event(event);
        }
        self.events = events;
    }

    fn event(&mut self, event: &[u8]) {
        if !self.interesting(event) {
            return;
        }
        let mut data = Vec::new();
        sse::data(event, &mut data);
        self.read(&data);
    }

    /// Notes what one JSON-RPC message (or batch) in `text` holds; false when it is not JSON
    /// (yet). A single message is read for the few members the tap looks at, skipping the rest
    /// (a tool result's content is most of it); anything unusual (a batch, a member of another
    /// type or written twice) is read whole, with the same outcome.
    fn read(&mut self, text: &[u8]) -> bool {
        let object = text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if object
            && let Ok(peek) = serde_json::from_slice::<Peek<'_>>(text)
            && let Some((code, is_error, task)) = peek.noted()
        {
            self.note((code, is_error, task.as_deref()));
            return true;
        }
        match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(v) => {
                self.message(&v);
                true
            }
            Err(_) => false,
        }
    }

    /// Records what one message showed.
    fn note(&mut self, (error_code, is_error, task): (Option<i64>, Option<bool>, Option<&str>)) {
        if self.results {
            if let Some(code) = error_code {
                self.seen.error_code.get_or_insert(code);
            }
            if let Some(e) = is_error {
                self.seen.is_error = Some(e || self.seen.is_error == Some(true));
            }
        }
        if let (Some(bind), Some(id)) = (&self.bind, task) {
            bind(id);
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
        let code = v
            .get("error")
            .and_then(|e| e.get("code"))
            .and_then(serde_json::Value::as_i64);
        let result = v.get("result");
        let is_error = result
            .and_then(|r| r.get("isError"))
            .and_then(serde_json::Value::as_bool);
        let flat = result
            .and_then(|r| r.get("resultType"))
            .and_then(|t| t.as_str())
            == Some("task");
        let id = result
            .and_then(|r| r.get("task"))
            .and_then(|t| t.get("taskId"))
            .or_else(|| flat.then(|| result.and_then(|r| r.get("taskId"))).flatten())
            .and_then(serde_json::Value::as_str);
        self.note((code, is_error, id));
    }
}

/// The members of one JSON-RPC message the tap looks at; every other member is skipped unread.
/// Objects only (serde would also read a struct from an array, which the tree does not), and
/// each leaf taken as a JSON value of any type, so a member of an unexpected type reads as it
/// does in the tree (not there); a member written twice fails the read (the tree decides).
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    result: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct PeekError {
    code: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeekResult<'a> {
    is_error: Option<serde_json::Value>,
    result_type: Option<serde_json::Value>,
    task_id: Option<serde_json::Value>,
    #[serde(borrow)]
    task: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeekTask {
    task_id: Option<serde_json::Value>,
}

/// `raw` read as `T` when it is an object; `Ok(None)` when it is anything else (the tree finds
/// no member in it either); `Err` when it is an object `T` cannot read (a key written twice).
fn object<'a, T: serde::Deserialize<'a>>(
    raw: Option<&'a serde_json::value::RawValue>,
) -> Result<Option<T>, ()> {
    match raw {
        Some(r) if r.get().starts_with('{') => {
            serde_json::from_str(r.get()).map(Some).map_err(|_| ())
        }
        _ => Ok(None),
    }
}

impl Peek<'_> {
    /// (error code, isError, task id) as the tree path reads them; `None`: read the tree.
    fn noted(&self) -> Option<(Option<i64>, Option<bool>, Option<String>)> {
        let error: Option<PeekError> = object(self.error).ok()?;
        let result: Option<PeekResult<'_>> = object(self.result).ok()?;
        let task: Option<PeekTask> = object(result.as_ref().and_then(|r| r.task)).ok()?;
        let code = error.and_then(|e| e.code).and_then(|c| c.as_i64());
        let is_error = result
            .as_ref()
            .and_then(|r| r.is_error.as_ref())
            .and_then(serde_json::Value::as_bool);
        let flat = result
            .as_ref()
            .and_then(|r| r.result_type.as_ref())
            .and_then(|t| t.as_str())
            == Some("task");
        let id = task
            .and_then(|t| t.task_id)
            .or_else(|| flat.then(|| result.and_then(|r| r.task_id)).flatten())
            .and_then(|v| v.as_str().map(str::to_string));
        Some((code, is_error, id))
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

    /// A tap noting results and recording the task ids it binds.
    fn recording() -> (TaskTap, Arc<std::sync::Mutex<Vec<String>>>) {
        let bound = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = bound.clone();
        let bind: BindTask = Box::new(move |id: &str| log.lock().unwrap().push(id.to_string()));
        (TaskTap::new(false, bind).with_results(), bound)
    }

    /// The members-only read notes exactly what the whole tree shows, whatever the members'
    /// types, and leaves what it cannot read alone (a batch, a member written twice) to the
    /// tree.
    #[test]
    fn the_peek_reads_what_the_tree_reads() {
        for text in [
            HANDLE,
            FLAT,
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":true,"content":[{"type":"text","text":"no"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":"yes"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"isError":false,"isError":true}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":"-32602"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":"broken"}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"task":"t-1"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":7}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"taskId":"t-2"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":[1,2]}"#,
            r#"[{"jsonrpc":"2.0","id":1,"error":{"code":-1}},{"jsonrpc":"2.0","id":2,"result":{"task":{"taskId":"t-3"}}}]"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let (mut tree, by_tree) = recording();
            tree.message(&v);
            let (mut peek, by_peek) = recording();
            assert!(peek.read(text.as_bytes()), "{text}");
            assert_eq!(peek.seen, tree.seen, "{text}");
            assert_eq!(*by_peek.lock().unwrap(), *by_tree.lock().unwrap(), "{text}");
        }
    }

    /// A body fed a byte at a time (every needle split across pieces) is read as one piece is:
    /// only the new bytes are searched, with the few before them a needle may start in.
    #[test]
    fn needles_split_across_pieces_are_found() {
        for text in [
            HANDLE,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
        ] {
            let (mut whole, by_whole) = recording();
            whole.feed(text.as_bytes());
            let (mut split, by_split) = recording();
            for b in text.as_bytes() {
                split.feed(std::slice::from_ref(b));
            }
            assert_eq!(split.seen, whole.seen, "{text}");
            assert!(
                whole.seen != Seen::default() || !by_whole.lock().unwrap().is_empty(),
                "{text}: something to note"
            );
            assert_eq!(
                *by_split.lock().unwrap(),
                *by_whole.lock().unwrap(),
                "{text}"
            );
        }
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
        assert!(t.events.pending().is_empty());
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

    /// What the answer rewriter hands its edit, message by message.
    fn rewriter_sees(stream: &[u8], chunk: usize) -> Vec<String> {
        use crate::policy::filter::{Edit, MessageEdit, Oversized};
        use crate::proxy::rewrite::Rewriter;
        use std::sync::Mutex;

        struct Record(Arc<Mutex<Vec<String>>>);
        impl MessageEdit for Record {
            fn edit(&mut self, m: &[u8]) -> Edit {
                self.0
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(m).into());
                Edit::Keep
            }
            fn oversized(&mut self, _: &[u8]) -> Oversized {
                Oversized::Pass
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut rw = Rewriter::new(true, Box::new(Record(seen.clone())));
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            out.extend_from_slice(&rw.feed(piece));
        }
        out.extend_from_slice(&rw.finish());
        let bare_cr = stream
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\r' && stream.get(i + 1) != Some(&b'\n'));
        if bare_cr {
            // Events ended by bare CRs are written again with LF (rewrite.rs).
            assert!(!out.contains(&b'\r'), "{out:?}");
        } else {
            assert_eq!(out, stream, "the edit kept everything");
        }
        seen.lock().unwrap().clone()
    }

    /// One SSE reader: lines ended by bare CRs (as the SSE specification allows) are read by
    /// the tap as the rewriter reads them. The tap once split lines only at LF, so it took
    /// `id: 7\rdata: …` for one line that is not `data` and let the task handle pass unbound.
    #[test]
    fn bare_cr_events_are_read_by_the_tap_as_by_the_rewriter() {
        const ERROR: &str = r#"{"jsonrpc":"2.0","id":5,"error":{"code":-32603,"message":"x"}}"#;
        let stream = format!(
            "\u{FEFF}: priming\r\rid: 7\revent: message\rdata: {HANDLE}\r\rid: 8\rdata: {ERROR}\r\r"
        );
        for chunk in [1, 2, 5, 64, stream.len()] {
            assert_eq!(
                rewriter_sees(stream.as_bytes(), chunk),
                [HANDLE, ERROR],
                "chunk {chunk}"
            );
            let (mut t, b, owner) = tap(true);
            let mut audit = TaskTap::results_only(true);
            for piece in stream.as_bytes().chunks(chunk) {
                t.feed(piece);
                audit.feed(piece);
            }
            // The task was bound as soon as its event ended, before the stream did.
            assert_eq!(
                b.check(Kind::Task, "t-42", &owner),
                Binding::Own,
                "chunk {chunk}"
            );
            assert_eq!(
                audit.seen.error_code, None,
                "undecided until the stream ends"
            );
            audit.finish();
            assert_eq!(audit.seen.error_code, Some(-32603), "chunk {chunk}");
        }
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
