//! The one reader of `text/event-stream` bodies: cuts the stream into events as its pieces
//! arrive and reads an event's fields as the SSE specification does (lines end with CRLF, LF
//! or CR; a BOM may open the stream; `data` lines are joined with `\n`; `:` starts a comment).
//! The answer rewriter and the task tap both read events with it, so they see the same ones.

use std::ops::Range;

/// The UTF-8 byte order mark, which may open a stream.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The BOM's three bytes read as Latin-1 and encoded as UTF-8 (`ï»¿`). Node's
/// `eventsource-parser` drops these three characters from the start of the text its decoder
/// made, so a stream opening with them is read from after them.
const LATIN1_BOM: &[u8] = b"\xC3\xAF\xC2\xBB\xC2\xBF";

/// Scratch space for events a stream keeps between events; a buffer a larger event grew is
/// given back once the event is done, not kept for the life of the stream (issue 16).
pub const KEEP: usize = 8 << 10;

/// Events cut from a stream, incrementally. What is held is bounded by the caller, who knows
/// what an oversized event should become ([`EventReader::open_len`], [`EventReader::discard`]).
#[derive(Default)]
pub struct EventReader {
    buf: Vec<u8>,
    /// Start of the first event not yet returned.
    pos: usize,
    /// Where the search for the end of that event resumes: never inside a line terminator.
    scan: usize,
    /// Past the stream's start (where a BOM is dropped).
    started: bool,
    /// A BOM opened the stream.
    bom: bool,
    /// The stream ended: a CR at the very end is a line end (no LF can follow).
    ended: bool,
}

impl EventReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next piece of the stream. True when this piece ended the stream's start and a
    /// BOM opened it, which is not part of any event (a writer that forwards the stream puts
    /// one back). Whatever any client drops there is dropped: each BOM, and its Latin-1
    /// reading, however many open the stream — reading from after more of them than a client
    /// does is safe, since everything read is then edited.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.pos > 0 {
            // Events already returned; moving the rest down costs no allocation.
            self.buf.drain(..self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
        if self.started {
            return false;
        }
        loop {
            let rest = &self.buf[self.pos..];
            if rest.starts_with(BOM) {
                self.bom = true;
                self.pos += BOM.len();
            } else if rest.starts_with(LATIN1_BOM) {
                self.pos += LATIN1_BOM.len();
            } else if BOM.starts_with(rest) || LATIN1_BOM.starts_with(rest) {
                // Maybe one split across pieces: undecided.
                self.scan = self.pos;
                return false;
            } else {
                break;
            }
        }
        self.scan = self.pos;
        self.started = true;
        self.bom
    }

    /// The stream ended: what [`Self::next_event`] returns next may include a last event
    /// closed by a bare CR; what stays [`Self::pending`] after that is an unterminated event.
    pub fn finish(&mut self) {
        self.started = true;
        self.ended = true;
    }

    /// The next complete event: its lines (without the terminator of the last one), and the
    /// terminators that end it (that of its last line and that of the blank line). The two
    /// together are the event's bytes as received.
    pub fn next_event(&mut self) -> Option<(&[u8], &[u8])> {
        let (event, sep) = self.next_range()?;
        Some((&self.buf[event], &self.buf[sep]))
    }

    fn next_range(&mut self) -> Option<(Range<usize>, Range<usize>)> {
        if !self.started {
            return None;
        }
        match event_end(&self.buf, self.scan, self.ended) {
            Some((end, sep)) => {
                let start = self.pos;
                self.pos = end + sep;
                self.scan = self.pos;
                Some((start..end, end..end + sep))
            }
            None if self.pos == self.buf.len() => {
                // Every event returned: the buffer starts over.
                self.pos = 0;
                self.scan = 0;
                release(&mut self.buf);
                None
            }
            None => {
                // Never search again what was searched, except line terminators at the end:
                // they may be the first half of the blank line.
                self.scan = self
                    .pos
                    .max(self.buf.len() - trailing_terminators(&self.buf));
                None
            }
        }
    }

    /// The bytes held of the event not yet complete.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// How much of [`Self::pending`] may be discarded while its end can still be found: all but
    /// the line terminators at its end (they may begin the blank line).
    pub fn open_len(&self) -> usize {
        let pending = self.pending();
        pending.len() - trailing_terminators(pending)
    }

    /// Drops the first `n` bytes (at most [`Self::open_len`]) of the event not yet complete:
    /// it is too large to hold, and the reader goes on looking for its end.
    pub fn discard(&mut self, n: usize) {
        debug_assert!(n <= self.open_len());
        self.pos += n;
        self.scan = self.scan.max(self.pos);
    }
}

/// Empties `buf`, and frees it when an event grew it past [`KEEP`].
pub fn release(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP {
        *buf = Vec::new();
    } else {
        buf.clear();
    }
}

/// How many bytes at the end of `buf` are CRs and LFs.
fn trailing_terminators(buf: &[u8]) -> usize {
    buf.iter()
        .rev()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()
}

/// The end of the first complete SSE event in `buf` at or after `from` (which must not be
/// inside a line terminator) and the length of the blank line that ends it. Lines end with
/// CRLF, LF or CR; an event ends at an empty line. A CR at the very end is undecided (an LF
/// may follow) until the stream has ended.
fn event_end(buf: &[u8], from: usize, ended: bool) -> Option<(usize, usize)> {
    let terminator = |i: usize| -> Option<usize> {
        match buf.get(i)? {
            b'\n' => Some(1),
            b'\r' => match buf.get(i + 1) {
                Some(b'\n') => Some(2),
                Some(_) => Some(1),
                None if ended => Some(1),
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

/// The lines of an event (split at CRLF, LF or CR; an event holds no empty line).
pub fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|&b| b == b'\n' || b == b'\r')
        .filter(|l| !l.is_empty())
}

/// A line's field name and value: split at the first `:`, one space after it dropped; a line
/// without `:` is a field with an empty value; a comment's name is empty.
pub fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, b""),
    }
}

/// Appends the event's data (its `data` fields joined with `\n`) to `out`; false when the
/// event has no `data` field.
pub fn data(event: &[u8], out: &mut Vec<u8>) -> bool {
    let mut any = false;
    for (name, value) in lines(event).map(field) {
        if name == b"data" {
            if any {
                out.push(b'\n');
            }
            any = true;
            out.extend_from_slice(value);
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of `stream` fed in pieces of `chunk` bytes: (data, raw bytes).
    fn events(stream: &[u8], chunk: usize) -> Vec<(String, Vec<u8>)> {
        let mut r = EventReader::new();
        let mut out = Vec::new();
        let mut raw = Vec::new();
        let mut pieces = stream.chunks(chunk);
        loop {
            match pieces.next() {
                Some(piece) => {
                    if r.feed(piece) {
                        raw.extend_from_slice(BOM);
                    }
                }
                None => r.finish(),
            }
            while let Some((event, sep)) = r.next_event() {
                let mut d = Vec::new();
                data(event, &mut d);
                out.push((String::from_utf8(d).unwrap(), [event, sep].concat()));
                raw.extend_from_slice(event);
                raw.extend_from_slice(sep);
            }
            if r.ended {
                break;
            }
        }
        raw.extend_from_slice(r.pending());
        assert_eq!(raw, stream, "the events are the stream, byte for byte");
        out
    }

    fn datas(stream: &[u8], chunk: usize) -> Vec<String> {
        events(stream, chunk).into_iter().map(|(d, _)| d).collect()
    }

    #[test]
    fn a_large_event_does_not_keep_its_buffer() {
        let mut r = EventReader::new();
        let mut big = b"data: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', 1 << 20));
        big.extend_from_slice(b"\n\n");
        r.feed(&big);
        assert_eq!(r.next_event().map(|(e, _)| e.len()), Some(big.len() - 2));
        assert!(r.next_event().is_none());
        assert!(r.buf.capacity() <= KEEP, "{}", r.buf.capacity());
        r.feed(b"data: 1\n\n");
        let (event, sep) = r.next_event().unwrap();
        assert_eq!((event, sep), (&b"data: 1"[..], &b"\n\n"[..]));
    }

    #[test]
    fn every_line_ending_in_every_split() {
        for stream in [
            "data: a\n\ndata: b\n\n",
            "data: a\r\n\r\ndata: b\r\n\r\n",
            "data: a\r\rdata: b\r\r",
            "data: a\r\n\rdata: b\n\r\n",
            "id: 1\rdata: a\r\rid: 2\r\ndata: b\n\n",
        ] {
            for chunk in 1..=stream.len() {
                assert_eq!(
                    datas(stream.as_bytes(), chunk),
                    ["a", "b"],
                    "{stream:?} {chunk}"
                );
            }
        }
    }

    #[test]
    fn event_ends() {
        assert_eq!(
            event_end(b"a\r", 0, false),
            None,
            "a CR at the end is undecided"
        );
        assert_eq!(
            event_end(b"a\r", 0, true),
            None,
            "one line end is not a blank line"
        );
        assert_eq!(event_end(b"a\r\r", 0, true), Some((1, 2)));
        assert_eq!(event_end(b"a\r\rx", 0, false), Some((1, 2)));
        assert_eq!(event_end(b"a\r\r\n", 0, false), Some((1, 3)));
    }

    #[test]
    fn a_crlf_split_across_pieces_is_one_line_end() {
        let mut r = EventReader::new();
        r.feed(b"data: a\r");
        assert!(r.next_event().is_none());
        r.feed(b"\n\r");
        assert!(
            r.next_event().is_none(),
            "the CR may still be half of a CRLF"
        );
        r.feed(b"\nx");
        let (event, sep) = r.next_event().unwrap();
        assert_eq!((event, sep), (&b"data: a"[..], &b"\r\n\r\n"[..]));
        assert_eq!(r.pending(), b"x");
    }

    #[test]
    fn a_bare_cr_at_the_end_of_the_stream_ends_the_event() {
        let mut r = EventReader::new();
        r.feed(b"data: a\r\r");
        assert!(r.next_event().is_none());
        r.finish();
        let (event, sep) = r.next_event().unwrap();
        assert_eq!((event, sep), (&b"data: a"[..], &b"\r\r"[..]));
        let mut r = EventReader::new();
        r.feed(b"data: a\r");
        r.finish();
        assert!(r.next_event().is_none(), "one line end is not a blank line");
        assert_eq!(r.pending(), b"data: a\r");
    }

    #[test]
    fn fields_as_the_specification_reads_them() {
        let stream = b"\xEF\xBB\xBF: comment\ndata:no space\ndata:  two spaces\ndata\nevent: m\n\n";
        for chunk in 1..=stream.len() {
            assert_eq!(
                datas(stream, chunk),
                ["no space\n two spaces\n"],
                "chunk {chunk}"
            );
        }
        // A BOM only at the start of the stream; a partial one is held until decided.
        assert_eq!(datas(b"\xEF\xBB\xBFdata: x\n\n", 1), ["x"]);
        assert_eq!(datas(b"data: x\n\n\xEF\xBB\xBFdata: y\n\n", 4), ["x", ""]);
        assert_eq!(datas(b"\xEFdata: x\n\n", 1), [""]);
        let mut d = Vec::new();
        assert!(!data(b": only a comment\rid: 3", &mut d));
        assert_eq!(field(b"retry:1000"), (&b"retry"[..], &b"1000"[..]));
    }

    /// Node's `eventsource-parser` drops `ï»¿` (the BOM read as Latin-1) from the start of a
    /// stream, and a second BOM after the one its decoder drops (4.x): the events are read from
    /// after every one of them, in any pieces, and only a real BOM is put back.
    #[test]
    fn what_clients_drop_at_the_start_is_dropped_here_too() {
        let latin1 = "\u{EF}\u{BB}\u{BF}".as_bytes();
        let cases: [(&[&[u8]], bool); 5] = [
            (&[latin1], false),
            (&[BOM, BOM], true),
            (&[BOM, latin1], true),
            (&[latin1, BOM, latin1], true),
            (&[&latin1[..4]], false),
        ];
        for (prefix, bom) in cases {
            let stream = [&prefix.concat()[..], b"data: x\n\n"].concat();
            for chunk in 1..=stream.len() {
                let mut r = EventReader::new();
                let mut put_back = false;
                let mut got = Vec::new();
                for piece in stream.chunks(chunk) {
                    put_back |= r.feed(piece);
                    while let Some((event, _)) = r.next_event() {
                        let mut d = Vec::new();
                        data(event, &mut d);
                        got.push(d);
                    }
                }
                // Half of `ï»¿` is no BOM: the line it opens is a field of another name.
                let want: &[u8] = if prefix[0].len() == 4 { b"" } else { b"x" };
                assert_eq!(got, [want], "{prefix:?} chunk {chunk}");
                assert_eq!(put_back, bom, "{prefix:?} chunk {chunk}");
            }
        }
    }

    #[test]
    fn oversized_events_are_discarded_and_their_end_still_found() {
        let mut r = EventReader::new();
        r.feed(b"data: big big big\r");
        assert!(r.next_event().is_none());
        assert_eq!(r.open_len(), "data: big big big".len());
        r.discard(r.open_len());
        assert_eq!(r.pending(), b"\r");
        r.feed(b"\n\ndata: next\n\n");
        let (event, sep) = r.next_event().unwrap();
        assert_eq!((event, sep), (&b""[..], &b"\r\n\n"[..]));
        let (event, _) = r.next_event().unwrap();
        assert_eq!(event, b"data: next");
    }
}
