//! Applies a per-message edit to an answer as it streams. A JSON body is one message, so it is
//! held until complete (bounded); an SSE stream is cut into events, each passed on as soon as
//! it is complete: kept byte for byte, its data replaced (its `id:`, `event:` and `retry:`
//! lines kept), or dropped (only its `id:` line kept, so `Last-Event-ID` stays right).

use bytes::Bytes;

use crate::policy::filter::{Edit, MessageEdit};

/// Bodies and events larger than this are not edited but replaced (see `oversized`).
pub const LIMIT: usize = 16 << 20;

pub struct Rewriter {
    sse: bool,
    buf: Vec<u8>,
    /// Inside a message larger than `LIMIT`: skipping to its end.
    skipping: bool,
    edit: Box<dyn MessageEdit>,
}

impl Rewriter {
    pub fn new(sse: bool, edit: Box<dyn MessageEdit>) -> Self {
        Self {
            sse,
            buf: Vec::new(),
            skipping: false,
            edit,
        }
    }

    /// The next piece of the body; returns what can be sent now (maybe nothing).
    pub fn feed(&mut self, data: &[u8]) -> Bytes {
        if !self.sse {
            if !self.skipping {
                self.buf.extend_from_slice(data);
                if self.buf.len() > LIMIT {
                    self.skipping = true;
                    self.buf = Vec::new();
                }
            }
            return Bytes::new();
        }
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).collect();
            if self.skipping || end > LIMIT {
                self.skipping = false;
                if let Some(msg) = self.edit.oversized() {
                    push_data(&mut out, &msg);
                }
                continue;
            }
            self.event(&event[..end], &event[end..], &mut out);
        }
        if self.buf.len() > LIMIT {
            self.skipping = true;
            let keep = self.buf.len() - 3;
            self.buf.drain(..keep);
        }
        Bytes::from(out)
    }

    /// The body ended: whatever is left.
    pub fn finish(&mut self) -> Bytes {
        let rest = std::mem::take(&mut self.buf);
        if self.sse {
            // An unterminated last event is never dispatched by a client: pass it as it is.
            return Bytes::from(rest);
        }
        if self.skipping {
            return self.edit.oversized().map(Bytes::from).unwrap_or_default();
        }
        match self.edit.edit(&rest) {
            Edit::Keep => Bytes::from(rest),
            Edit::Replace(new) => Bytes::from(new),
            Edit::Drop => Bytes::new(),
        }
    }

    fn event(&mut self, event: &[u8], sep: &[u8], out: &mut Vec<u8>) {
        let Ok(text) = std::str::from_utf8(event) else {
            out.extend_from_slice(event);
            out.extend_from_slice(sep);
            return;
        };
        let mut data = String::new();
        let mut has_data = false;
        for line in text.lines() {
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
                for line in text.lines().filter(|l| !l.starts_with("data:")) {
                    out.extend_from_slice(line.as_bytes());
                    out.push(b'\n');
                }
                push_data(out, &new);
            }
            Edit::Drop => {
                let id: Vec<&str> = text.lines().filter(|l| l.starts_with("id:")).collect();
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

/// One `data:` line (JSON has no raw newlines) ending the event.
fn push_data(out: &mut Vec<u8>, msg: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(msg);
    out.extend_from_slice(b"\n\n");
}

/// The end of the first complete SSE event in `buf` and the separator's length.
pub fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < buf.len() {
        match (buf[i], buf[i + 1]) {
            (b'\n', b'\n') => return Some((i, 2)),
            (b'\r', b'\n') if buf[i + 2..].starts_with(b"\r\n") => return Some((i, 4)),
            (b'\r', b'\r') => return Some((i, 2)),
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper-cases `"secret"` messages, drops `"drop"` ones.
    struct Shout;

    impl MessageEdit for Shout {
        fn edit(&mut self, m: &[u8]) -> Edit {
            match m {
                b"\"secret\"" => Edit::Replace(b"\"SECRET\"".to_vec()),
                b"\"drop\"" => Edit::Drop,
                _ => Edit::Keep,
            }
        }
        fn oversized(&mut self) -> Option<Vec<u8>> {
            Some(b"\"too big\"".to_vec())
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
    fn oversized_messages_are_replaced() {
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
    }
}
