//! Applies a per-message edit to an answer as it streams. A JSON body is one message, so it is
//! held until complete (bounded); an SSE stream is cut into events, each passed on as soon as
//! it is complete: kept byte for byte, its data replaced (its `id:`, `event:` and `retry:`
//! lines kept), or dropped (only its `id:` line kept, so `Last-Event-ID` stays right). A
//! message larger than `LIMIT` is not held: the edit decides from its first bytes whether it
//! streams through unchanged, is replaced, or is dropped.

use bytes::Bytes;

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
    buf: Vec<u8>,
    /// Where the search for the end of the current event resumes.
    scan: usize,
    mode: Mode,
    edit: Box<dyn MessageEdit>,
}

impl Rewriter {
    pub fn new(sse: bool, edit: Box<dyn MessageEdit>) -> Self {
        Self {
            sse,
            buf: Vec::new(),
            scan: 0,
            mode: Mode::Hold,
            edit,
        }
    }

    /// The next piece of the body; returns what can be sent now (maybe nothing).
    pub fn feed(&mut self, data: &[u8]) -> Bytes {
        if !self.sse {
            return self.feed_json(data);
        }
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        loop {
            let Some((end, sep)) = event_end(&self.buf, self.scan) else {
                // Never rescan what was searched; keep a few bytes for a split terminator.
                self.scan = self.buf.len().saturating_sub(3);
                break;
            };
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            self.scan = 0;
            match std::mem::replace(&mut self.mode, Mode::Hold) {
                Mode::Pass => out.extend_from_slice(&event),
                Mode::Skip => {}
                // Complete, but too large to edit: the same decision as for one streaming in.
                Mode::Hold if end > LIMIT => match self.edit.oversized(&event[..4096]) {
                    Oversized::Pass => out.extend_from_slice(&event),
                    Oversized::Replace(msg) => push_data(&mut out, &msg),
                    Oversized::Drop => {}
                },
                Mode::Hold => self.event(&event[..end], &event[end..], &mut out),
            }
        }
        if self.buf.len() > LIMIT || (self.mode != Mode::Hold && self.buf.len() > 4096) {
            self.overflow(&mut out);
        }
        Bytes::from(out)
    }

    /// The current event outgrew the limit: decide once, from its first bytes, then stream or
    /// discard it; only the last bytes stay held, to find where it ends.
    fn overflow(&mut self, out: &mut Vec<u8>) {
        // Line terminators at the end stay held whole: they may begin the blank line.
        let trailing = self
            .buf
            .iter()
            .rev()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        let keep = self.buf.len() - trailing;
        if self.mode == Mode::Hold {
            self.mode = match self.edit.oversized(&self.buf[..keep.min(4096)]) {
                Oversized::Pass => Mode::Pass,
                Oversized::Replace(msg) => {
                    push_data(out, &msg);
                    Mode::Skip
                }
                Oversized::Drop => Mode::Skip,
            };
        }
        let head: Vec<u8> = self.buf.drain(..keep).collect();
        if self.mode == Mode::Pass {
            out.extend_from_slice(&head);
        }
        self.scan = 0;
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

    /// The body ended: whatever is left.
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.buf);
        if self.sse {
            // An unterminated last event is never dispatched by a client.
            return match self.mode {
                Mode::Pass => Bytes::from(rest),
                Mode::Skip => Bytes::new(),
                Mode::Hold if self.edit.keeps_partial() => Bytes::from(rest),
                Mode::Hold => Bytes::new(),
            };
        }
        if self.mode != Mode::Hold {
            return Bytes::new();
        }
        match self.edit.edit(&rest) {
            Edit::Keep => Bytes::from(rest),
            Edit::Replace(new) => Bytes::from(new),
            Edit::Drop => Bytes::new(),
        }
    }

    fn event(&mut self, event: &[u8], sep: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(event);
        let mut data = String::new();
        let mut has_data = false;
        for line in lines(&text) {
            if let Some(rest) = line.strip_prefix("data:") {
                if has_data {
                    data.push('\n');
                }
                has_data = true;
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        let edit = if has_data && !data.is_empty() {
            self.edit.edit(data.as_bytes())
        } else {
            Edit::Keep
        };
        match edit {
            Edit::Keep => {
                out.extend_from_slice(event);
                out.extend_from_slice(sep);
            }
            Edit::Replace(new) => {
                for line in lines(&text).filter(|l| !l.starts_with("data:")) {
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                push_data(out, &new);
            }
            Edit::Drop => {
                let id: Vec<&str> = lines(&text).filter(|l| l.starts_with("id:")).collect();
                if !id.is_empty() {
                    for line in id {
                        out.extend_from_slice(line.as_bytes());
                        out.push(b'\n');
                    }
                    out.push(b'\n');
                }
            }
        }
    }
}

/// The lines of an event: split on CRLF, LF or CR, as SSE does.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .flat_map(|l| l.split('\r'))
        .filter(|l| !l.is_empty())
}

/// One `data:` line (JSON has no raw newlines) ending the event.
fn push_data(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(msg);
    out.extend_from_slice(b"\n\n");
}

/// The end of the first complete SSE event in `buf` at or after `from` (which must not be
/// inside a line terminator) and the length of the blank line that ends it. Lines end with
/// CRLF, LF or CR; an event ends at an empty line. A CR at the very end is undecided (an LF
/// may follow), so it is not taken as a terminator yet.
pub fn event_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let terminator = |i: usize| -> Option<usize> {
        match buf.get(i)? {
            b'\n' => Some(1),
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => Some(2),
                Some(_) => Some(1),
                None => None,
            },
            _ => Some(0),
        }
    };
    let mut i = from;
    while i < buf.len() {
        match terminator(i)? {
            0 => i += 1,
            first => match terminator(i + first)? {
                0 => i += first,
                second => return Some((i, first + second)),
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(event_end(b"a\r", 0), None, "a CR at the end is undecided");
        assert_eq!(event_end(b"a\r\rx", 0), Some((1, 2)));
        assert_eq!(event_end(b"a\r\r\n", 0), Some((1, 3)));
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
