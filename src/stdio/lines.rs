//! Lines from a child's stdout, each at most a configured size. A longer line is never held:
//! its bytes are skipped as they come, and only its top-level `id` is kept (scanned on the
//! way), so the call it answered can be told it failed. Memory stays flat whatever the child
//! writes.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

pub enum Line {
    /// A whole line, without its line break.
    Text(Vec<u8>),
    /// A line over the limit: its length, and its top-level `id` when it had one.
    TooLong { bytes: usize, id: Option<String> },
}

pub struct LineReader<R> {
    inner: R,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self { inner, max }
    }

    /// The next line; `None` at end of stream (a last line without a break counts).
    pub async fn next(&mut self) -> std::io::Result<Option<Line>> {
        let mut line = Vec::new();
        let mut skipped: Option<IdScanner> = None;
        let mut total = 0usize;
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(match skipped {
                    Some(s) => Some(Line::TooLong {
                        bytes: total,
                        id: s.id(),
                    }),
                    None if line.is_empty() => None,
                    None => Some(Line::Text(line)),
                });
            }
            let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            total += chunk.len();
            match &mut skipped {
                Some(s) => s.feed(chunk),
                None if total > self.max => {
                    let mut s = IdScanner::default();
                    s.feed(&line);
                    s.feed(chunk);
                    line = Vec::new();
                    skipped = Some(s);
                }
                None => line.extend_from_slice(chunk),
            }
            let used = done.unwrap_or(buf.len());
            self.inner.consume(used);
            if done.is_some() {
                return Ok(Some(match skipped {
                    Some(s) => Line::TooLong {
                        bytes: total,
                        id: s.id(),
                    },
                    None => {
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        Line::Text(line)
                    }
                }));
            }
        }
    }
}

/// Finds the value of the top-level `"id"` member of a JSON object fed in pieces, keeping
/// only a few bytes: the depth, the string state and the last key.
#[derive(Default)]
struct IdScanner {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The string being read at depth 1 (a key, when a colon follows), capped.
    text: Vec<u8>,
    last_key_is_id: bool,
    /// Collecting the id's value (a scalar at depth 1).
    collecting: Option<Vec<u8>>,
    found: Option<String>,
}

const ID_MAX: usize = 256;

impl IdScanner {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.found.is_some() {
                return;
            }
            if let Some(value) = &mut self.collecting {
                let ends = !self.in_string && self.depth == 1 && (b == b',' || b == b'}');
                if ends {
                    let v = String::from_utf8_lossy(value).trim().to_string();
                    self.found = Some(v);
                    self.collecting = None;
                    continue;
                }
                if value.len() < ID_MAX {
                    value.push(b);
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    continue;
                }
                if self.depth == 1 && self.collecting.is_none() && self.text.len() < 8 {
                    self.text.push(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.text.clear();
                }
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b':' if self.depth == 1 && self.collecting.is_none() => {
                    self.last_key_is_id = self.text == b"id";
                    if self.last_key_is_id {
                        self.collecting = Some(Vec::new());
                    }
                }
                _ => {}
            }
        }
    }

    fn id(&self) -> Option<String> {
        self.found.clone().filter(|v| !v.is_empty() && v != "null")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next().await.unwrap() {
            out.push(match l {
                Line::Text(t) => String::from_utf8(t).unwrap(),
                Line::TooLong { bytes, id } => format!("too long {bytes} id={id:?}"),
            });
        }
        out
    }

    #[tokio::test]
    async fn splits_and_skips() {
        let big = format!(
            r#"{{"jsonrpc":"2.0","result":{{"text":"{}","id":9}},"id":"a\"b"}}"#,
            "x".repeat(100)
        );
        let third = format!("{{\"id\" : 42 , \"result\": \"{}\"}}", "y".repeat(60));
        let input = format!("{{\"a\":1}}\r\n{big}\n{third}\nlast");
        let out = lines(input.as_bytes(), 64).await;
        assert_eq!(out[0], r#"{"a":1}"#);
        assert_eq!(
            out[1],
            format!("too long {} id=Some(\"\\\"a\\\\\\\"b\\\"\")", big.len())
        );
        assert_eq!(out[2], format!("too long {} id=Some(\"42\")", third.len()));
        assert_eq!(out[3], "last");
        assert_eq!(out.len(), 4);
    }

    #[tokio::test]
    async fn small_reads_keep_memory_flat() {
        // Fed through a tiny buffer, the oversized line is still skipped whole.
        let big = format!(
            "{{\"id\":5,\"result\":\"{}\"}}\n{{\"ok\":1}}\n",
            "z".repeat(10_000)
        );
        let reader = tokio::io::BufReader::with_capacity(7, big.as_bytes());
        let mut r = LineReader::new(reader, 1024);
        match r.next().await.unwrap().unwrap() {
            Line::TooLong { bytes, id } => {
                assert_eq!(bytes, big.find('\n').unwrap());
                assert_eq!(id.as_deref(), Some("5"));
            }
            Line::Text(_) => panic!("not skipped"),
        }
        match r.next().await.unwrap().unwrap() {
            Line::Text(t) => assert_eq!(t, br#"{"ok":1}"#),
            Line::TooLong { .. } => panic!("skipped"),
        }
    }
}
