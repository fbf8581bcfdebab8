//! Applies a per-message edit to an answer as it streams. A JSON body is one message, so it is
//! held until complete (bounded); an SSE stream is cut into events, each passed on as soon as
//! it is complete: kept byte for byte, its data replaced (its `id:`, `event:` and `retry:`
//! lines kept, nothing else), or dropped (only its `id:` line kept, so `Last-Event-ID` stays right). A
//! message larger than `LIMIT` is not held: the edit decides from its first bytes whether it
//! streams through unchanged, is replaced, or is dropped.

use bytes::Bytes;
use serde::de::IgnoredAny;

use super::sse::{self, EventReader};
use crate::policy::filter::{Edit, MessageEdit, Oversized};

/// Bodies and events larger than this are not held for editing (see `Oversized`).
pub const LIMIT: usize = 16 << 20;

/// What the rewriter does with the message it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Collecting a message to edit.
    Hold,
    /// Inside an oversized message that is streamed through.
    Pass,
    /// Inside an oversized message that is discarded (its replacement already sent).
    Skip,
}

pub struct Rewriter {
    sse: bool,
    /// A JSON body, held.
    buf: Vec<u8>,
    /// An SSE body, cut into events.
    events: EventReader,
    /// The data of the event being edited (reused from event to event).
    data: Vec<u8>,
    mode: Mode,
    edit: Box<dyn MessageEdit>,
}

impl Rewriter {
    pub fn new(sse: bool, edit: Box<dyn MessageEdit>) -> Self {
        Self {
            sse,
            buf: Vec::new(),
            events: EventReader::new(),
            data: Vec::new(),
            mode: Mode::Hold,
            edit,
        }
    }

    /// The next piece of the body; returns what can be sent now (maybe nothing).
    pub fn feed(&mut self, data: &[u8]) -> Bytes {
        if !self.sse {
            return self.feed_json(data);
        }
        let mut out = Vec::new();
        if self.events.feed(data) {
            out.extend_from_slice(sse::BOM);
        }
        self.edit_events(&mut out);
        let held = self.events.pending().len();
        if held > LIMIT || (self.mode != Mode::Hold && held > 4096) {
            self.overflow(&mut out);
        }
        Bytes::from(out)
    }

    /// Every event complete so far, edited.
    fn edit_events(&mut self, out: &mut Vec<u8>) {
        while let Some((event, sep)) = self.events.next_event() {
            match std::mem::replace(&mut self.mode, Mode::Hold) {
                Mode::Pass => {
                    out.extend_from_slice(event);
                    out.extend_from_slice(sep);
                }
                Mode::Skip => {}
                // Complete, but too large to edit: the same decision as for one streaming in.
                Mode::Hold if event.len() > LIMIT => match self.edit.oversized(&event[..4096]) {
                    Oversized::Pass => {
                        out.extend_from_slice(event);
                        out.extend_from_slice(sep);
                    }
                    Oversized::Replace(msg) => push_data(out, &msg),
                    Oversized::Drop => {}
                },
                Mode::Hold => edit_event(&mut *self.edit, &mut self.data, event, sep, out),
            }
        }
    }

    /// The current event outgrew the limit: decide once, from its first bytes, then stream or
    /// discard it; only line terminators at the end stay held (they may begin the blank line).
    fn overflow(&mut self, out: &mut Vec<u8>) {
        let keep = self.events.open_len();
        let head = &self.events.pending()[..keep];
        if self.mode == Mode::Hold {
            self.mode = match self.edit.oversized(&head[..keep.min(4096)]) {
                Oversized::Pass => Mode::Pass,
                Oversized::Replace(msg) => {
                    push_data(out, &msg);
                    Mode::Skip
                }
                Oversized::Drop => Mode::Skip,
            };
        }
        if self.mode == Mode::Pass {
            out.extend_from_slice(head);
        }
        self.events.discard(keep);
    }

    fn feed_json(&mut self, data: &[u8]) -> Bytes {
        match self.mode {
            Mode::Pass => return Bytes::copy_from_slice(data),
            Mode::Skip => return Bytes::new(),
            Mode::Hold => {}
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() <= LIMIT {
            return Bytes::new();
        }
        let held = std::mem::take(&mut self.buf);
        match self.edit.oversized(&held[..4096]) {
            Oversized::Pass => {
                self.mode = Mode::Pass;
                Bytes::from(held)
            }
            Oversized::Replace(msg) => {
                self.mode = Mode::Skip;
                Bytes::from(msg)
            }
            Oversized::Drop => {
                self.mode = Mode::Skip;
                Bytes::new()
            }
        }
    }

    /// What the edit found so far for the audit record, taken.
    pub fn take_notes(&mut self) -> Vec<crate::integrity::Note> {
        self.edit.take_notes()
    }

    /// The body ended: whatever is left.
    pub fn finish(&mut self) -> Bytes {
        if self.sse {
            // A last event closed by a bare CR is complete only now.
            let mut out = Vec::new();
            self.events.finish();
            self.edit_events(&mut out);
            // An unterminated last event is never dispatched by a client.
            let rest = self.events.pending();
            match self.mode {
                Mode::Pass => out.extend_from_slice(rest),
                Mode::Skip => {}
                Mode::Hold if self.edit.keeps_partial() => out.extend_from_slice(rest),
                Mode::Hold => {}
            }
            return Bytes::from(out);
        }
        let rest = std::mem::take(&mut self.buf);
        if self.mode != Mode::Hold {
            return Bytes::new();
        }
        match self.edit.edit(&rest) {
            Edit::Keep => Bytes::from(rest),
            Edit::Replace(new) => Bytes::from(new),
            Edit::Drop => Bytes::new(),
        }
    }
}

/// One event: kept byte for byte, its data replaced (its other lines kept), or dropped (only
/// its `id` lines kept, so `Last-Event-ID` stays right). `data` is scratch space.
fn edit_event(
    edit: &mut dyn MessageEdit,
    data: &mut Vec<u8>,
    event: &[u8],
    sep: &[u8],
    out: &mut Vec<u8>,
) {
    data.clear();
    let has_data = sse::data(event, data);
    let edit =
        if has_data && breaks_for_some(data) && serde_json::from_slice::<IgnoredAny>(data).is_err()
        {
            // Read as JSON, such a character can only be inside a string, where cutting the line
            // leaves the client's JSON unfinished; data that is not JSON could be cut into a
            // message of its own. Not passed on.
            Edit::Drop
        } else if has_data && !data.is_empty() {
            let text = String::from_utf8_lossy(data);
            // A newline in the data: it came in several `data:` lines (a JSON message needs one).
            if data.contains(&b'\n') {
                edit.multi_line(text.as_bytes())
            } else {
                edit.edit(text.as_bytes())
            }
        } else {
            Edit::Keep
        };
    sse::release(data);
    let name_is = |line: &[u8], name: &[u8]| sse::field(line).0 == name;
    // Not written again: a line other than `data` that a client may cut in two, whose second
    // part it would read as a line of its own — a `data:` line the edit never saw.
    let whole = |l: &&[u8]| name_is(l, b"data") || !breaks_for_some(l);
    let spec_field = |l: &&[u8]| {
        [&b"data"[..], b"id", b"event", b"retry"]
            .iter()
            .any(|n| name_is(l, n))
    };
    let spec_only = matches!(edit, Edit::Keep) && bare_cr(event, sep);
    match edit {
        // Written again line by line, each ended with LF:
        // - lines some client cuts in two are left out (`whole`);
        // - a bare CR ends a line here, as the SSE spec says, but not for a reader that cuts
        //   lines at LF only (Go's `bufio.Scanner`, which the Go SDK reads events with): to it
        //   the rest of the line is more data, and an event ending in CRs runs on into the
        //   next. Such an event keeps only the fields the spec names, so every reader gets the
        //   event the edit saw.
        Edit::Keep if spec_only || !sse::lines(event).all(|l| whole(&l)) => {
            let start = out.len();
            for line in sse::lines(event)
                .filter(|l| !spec_only || spec_field(l))
                .filter(whole)
            {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            if out.len() > start {
                out.push(b'\n');
            }
        }
        Edit::Keep => {
            out.extend_from_slice(event);
            out.extend_from_slice(sep);
        }
        Edit::Replace(new) => {
            // The event's `id`, `event` and `retry` lines, then the new data: lines no field
            // of the spec names (comments, stray text a client splitting lines otherwise may
            // read as data) are not written again.
            let kept = |l: &&[u8]| {
                [&b"id"[..], b"event", b"retry"]
                    .iter()
                    .any(|n| name_is(l, n))
            };
            for line in sse::lines(event).filter(kept).filter(whole) {
                out.extend_from_slice(String::from_utf8_lossy(line).as_bytes());
                out.push(b'\n');
            }
            push_data(out, &new);
        }
        Edit::Drop => {
            let mut ids = sse::lines(event)
                .filter(|l| name_is(l, b"id"))
                .filter(whole)
                .peekable();
            if ids.peek().is_some() {
                for line in ids {
                    out.extend_from_slice(String::from_utf8_lossy(line).as_bytes());
                    out.push(b'\n');
                }
                out.push(b'\n');
            }
        }
    }
}

/// Whether a CR not followed by LF ends a line of `event` or its terminating blank line `sep`.
fn bare_cr(event: &[u8], sep: &[u8]) -> bool {
    memchr::memchr_iter(b'\r', event).any(|i| event.get(i + 1).or(sep.first()) != Some(&b'\n'))
        || memchr::memchr_iter(b'\r', sep).any(|i| sep.get(i + 1) != Some(&b'\n'))
}

/// Whether some client's line reader ends a line inside `line`: Python's `str.splitlines`, with
/// which httpx-sse before 0.4.2 read SSE lines, also ends lines at VT, FF, FS, GS, RS, NEL, LS
/// and PS.
fn breaks_for_some(line: &[u8]) -> bool {
    let has = |c: char| memchr::memmem::find(line, c.encode_utf8(&mut [0; 3]).as_bytes()).is_some();
    line.iter().any(|b| matches!(b, 0x0b | 0x0c | 0x1c..=0x1e))
        || has('\u{85}')
        || has('\u{2028}')
        || has('\u{2029}')
}

/// The message as `data:` lines ending the event: one line, unless the message holds raw line
/// breaks — JSON whitespace, kept by an edit that copies what the upstream wrote in several
/// `data:` lines — which would end an SSE line early: then a `data:` line for each of its lines,
/// which clients join back with newlines.
fn push_data(out: &mut Vec<u8>, msg: &[u8]) {
    for line in msg.split(|b| *b == b'\n' || *b == b'\r') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replacement holding raw line breaks stays one event whose data reads as the message
    /// (with newlines for line breaks: JSON whitespace either way).
    #[test]
    fn replaced_data_with_line_breaks_stays_one_event() {
        let mut out = Vec::new();
        push_data(&mut out, b"{\"a\":\n1,\r\n\"b\":2}");
        assert_eq!(
            out,
            b"data: {\"a\":\ndata: 1,\ndata: \ndata: \"b\":2}\n\n".to_vec()
        );
        let mut plain = Vec::new();
        push_data(&mut plain, b"{\"a\":1}");
        assert_eq!(plain, b"data: {\"a\":1}\n\n".to_vec());
    }

    /// Upper-cases `"secret"` messages, drops `"drop"` ones; oversized messages starting with
    /// `"p` pass, the rest are replaced.
    struct Shout;

    impl MessageEdit for Shout {
        fn edit(&mut self, m: &[u8]) -> Edit {
            match m {
                b"\"secret\"" => Edit::Replace(b"\"SECRET\"".to_vec()),
                b"\"drop\"" => Edit::Drop,
                _ => Edit::Keep,
            }
        }
        fn oversized(&mut self, head: &[u8]) -> Oversized {
            if head.starts_with(b"\"p") || head.starts_with(b"data: \"p") {
                Oversized::Pass
            } else {
                Oversized::Replace(b"\"too big\"".to_vec())
            }
        }
    }

    fn run(sse: bool, input: &str, chunk: usize) -> String {
        let mut rw = Rewriter::new(sse, Box::new(Shout));
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            out.extend_from_slice(&rw.feed(piece));
        }
        out.extend_from_slice(&rw.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sse_events_are_kept_replaced_or_dropped_across_frame_splits() {
        let input = ": priming\n\nid: 1\nretry: 500\ndata: \"keep\"\n\nid: 2\nevent: message\ndata: \"secret\"\n\nid: 3\ndata: \"drop\"\n\ndata: \"drop\"\r\n\r\n";
        let want = ": priming\n\nid: 1\nretry: 500\ndata: \"keep\"\n\nid: 2\nevent: message\ndata: \"SECRET\"\n\nid: 3\n\n";
        for chunk in [1, 3, 7, 1000] {
            assert_eq!(run(true, input, chunk), want, "chunk {chunk}");
        }
    }

    /// A line other than `data` holding a character Python's `splitlines` ends lines at (as
    /// httpx-sse before 0.4.2 read them) is not written: its second part would be a line of its
    /// own to such a client. Data holding one is passed on only where it is JSON (inside a
    /// string, as U+2028 may be).
    #[test]
    fn lines_some_client_would_cut_in_two_are_not_written() {
        let cases = [
            (
                ": ok\n:\u{2028}data: \"secret\"\nid: 4\u{2029}\ndata: \"keep\"\n\n",
                ": ok\ndata: \"keep\"\n\n",
            ),
            (
                "id: 5\u{85}data: \"x\"\nevent: m\ndata: \"secret\"\n\n",
                "event: m\ndata: \"SECRET\"\n\n",
            ),
            ("id: 6\x0bdata: \"x\"\ndata: \"drop\"\n\n", ""),
            (":\x0cdata: \"x\"\r\n\r\n", ""),
            ("retry: 1\x1e\n: ok\n\n", ": ok\n\n"),
            (
                "data: \"a\u{2028}b\"\r\n\r\n",
                "data: \"a\u{2028}b\"\r\n\r\n",
            ),
            // Outside a JSON string it is no JSON, and could be cut into a message: dropped.
            ("id: 7\ndata: \u{2028}data: \"secret\"\n\n", "id: 7\n\n"),
        ];
        for (input, want) in cases {
            for chunk in [1, 5, 1000] {
                assert_eq!(run(true, input, chunk), want, "{input:?} chunk {chunk}");
            }
        }
    }

    /// A bare CR ends a line for the sentinel and for spec readers, not for Go's
    /// `bufio.Scanner` (LF only): what follows it on the line, or the next event after an event
    /// ending in CRs, would be more data to that reader. Such an event is written again with LF
    /// line ends and only the fields the spec names; CRLF passes as it came.
    #[test]
    fn an_event_a_bare_cr_ends_differently_for_some_readers_is_written_with_lf() {
        let cases = [
            (
                "data: {\"id\":2,\r\"result\":{\"tools\":[]}}\n\n",
                "data: {\"id\":2,\n\n",
            ),
            (
                "id: 1\revent: m\rdata: \"a\"\r\r",
                "id: 1\nevent: m\ndata: \"a\"\n\n",
            ),
            ("data: \"a\"\r\n\r", "data: \"a\"\n\n"),
            (": c\rdata: \"a\"\n\n", "data: \"a\"\n\n"),
            ("data: \"a\"\r\n\r\n", "data: \"a\"\r\n\r\n"),
        ];
        for (input, want) in cases {
            for chunk in [1, 3, 1000] {
                assert_eq!(
                    run(true, &format!("{input}data: \"x\"\n\n"), chunk),
                    format!("{want}data: \"x\"\n\n"),
                    "{input:?} chunk {chunk}"
                );
            }
        }
        assert!(!bare_cr(b"data: a\r", b"\n\n"));
        assert!(bare_cr(b"data: a", b"\r\r"));
        assert!(!bare_cr(b"data: a\r\nid: 1", b"\r\n\r\n"));
    }

    #[test]
    fn every_line_ending_frames_events() {
        for input in [
            "data: \"secret\"\r\r",
            "data: \"secret\"\n\r\n",
            "data: \"secret\"\r\n\n",
            "data: \"secret\"\n\r",
        ] {
            for chunk in [1, 2, 100] {
                assert_eq!(
                    run(true, &format!("{input}data: \"x\"\n\n"), chunk),
                    "data: \"SECRET\"\n\ndata: \"x\"\n\n",
                    "{input:?} chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn multi_line_data_is_joined_before_the_edit() {
        assert_eq!(
            run(true, "data: \"sec\ndata: ret\"\n\n", 4),
            "data: \"sec\ndata: ret\"\n\n",
            "a data value with a newline is not the message \"secret\", so it is kept"
        );
        assert_eq!(run(true, "data:\"secret\"\n\n", 2), "data: \"SECRET\"\n\n");
    }

    #[test]
    fn json_bodies_are_edited_whole() {
        assert_eq!(run(false, "\"secret\"", 3), "\"SECRET\"");
        assert_eq!(run(false, "\"other\"", 3), "\"other\"");
        assert_eq!(run(false, "\"drop\"", 3), "");
    }

    #[test]
    fn oversized_messages_are_replaced_or_streamed_through() {
        let big = format!("\"{}\"", "x".repeat(LIMIT + 10));
        let out = run(false, &big, 1 << 16);
        assert!(out.len() < 100, "{} bytes", out.len());
        assert_eq!(out, "\"too big\"");
        let stream = format!("id: 9\ndata: {big}\n\ndata: \"secret\"\n\n");
        for chunk in [1 << 16, 1 << 25] {
            let out = run(true, &stream, chunk);
            assert!(out.len() < 100, "{} bytes", out.len());
            assert_eq!(out, "data: \"too big\"\n\ndata: \"SECRET\"\n\n");
        }
        // A large message the edit lets through arrives whole, byte for byte.
        let passing = format!("\"p{}\"", "y".repeat(LIMIT + 10));
        assert_eq!(run(false, &passing, 1 << 16), passing);
        let stream = format!("data: {passing}\n\ndata: \"secret\"\n\n");
        let out = run(true, &stream, 1 << 16);
        assert_eq!(out.len(), stream.len() + "SECRET".len() - "secret".len());
        assert!(out.ends_with("data: \"SECRET\"\n\n") && out.starts_with("data: \"pyyy"));
    }
}
