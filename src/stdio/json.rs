//! What the bridge reads of a JSON-RPC line, and the one edit it makes: a value replaced at a
//! key path, every other value kept byte for byte (no re-encoding of numbers or strings).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The parts of one message that route it, borrowed from its line.
#[derive(Deserialize)]
pub struct Peek<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    Response,
}

impl<'a> Peek<'a> {
    pub fn read(line: &'a str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }

    pub fn kind(&self) -> Kind {
        match (&self.method, &self.id) {
            (Some(_), Some(_)) => Kind::Request,
            (Some(_), None) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }

    pub fn method(&self) -> &str {
        self.method.as_deref().unwrap_or("")
    }

    /// `params._meta.progressToken` of a request.
    pub fn progress_token(&self) -> Option<&'a RawValue> {
        #[derive(Deserialize)]
        struct P<'a> {
            #[serde(borrow, rename = "_meta", default)]
            meta: Option<M<'a>>,
        }
        #[derive(Deserialize)]
        struct M<'a> {
            #[serde(borrow, rename = "progressToken", default)]
            token: Option<&'a RawValue>,
        }
        let p: P<'a> = serde_json::from_str(self.params?.get()).ok()?;
        p.meta?.token
    }

    /// `params.<key>` (`requestId` of a cancellation, `progressToken` of a progress
    /// notification).
    pub fn param(&self, key: &str) -> Option<&'a RawValue> {
        let entries = Entries::read(self.params?.get())?;
        entries
            .0
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// The members of one object, in order, each value raw.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Entries<'a> {
    fn read(raw: &'a str) -> Option<Self> {
        let mut de = serde_json::Deserializer::from_str(raw);
        let e = Entries::deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(e)
    }
}

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `text` with each raw value — a slice of `text` itself, as [`Peek`] borrows them — replaced
/// by new JSON text. Every other byte stays: ids and tokens are swapped in place, with no
/// second parse and no re-encoding. `None` when a value is not a slice of `text`, or two
/// overlap.
pub fn splice(text: &str, edits: &[(&RawValue, &str)]) -> Option<String> {
    let base = text.as_ptr() as usize;
    let mut spans = Vec::with_capacity(edits.len());
    for (raw, new) in edits {
        let old = raw.get();
        let start = (old.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(old.len())?;
        if end > text.len() {
            return None;
        }
        spans.push((start, end, *new));
    }
    spans.sort_unstable_by_key(|s| s.0);
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for (start, end, new) in spans {
        if start < at {
            return None;
        }
        out.push_str(&text[at..start]);
        out.push_str(new);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// The `result` of an answer (raw JSON); `None` for an error answer or a line that is not one.
pub fn result_of(line: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct A<'a> {
        #[serde(borrow, default)]
        result: Option<&'a RawValue>,
    }
    let a: A<'_> = serde_json::from_str(std::str::from_utf8(line).ok()?).ok()?;
    Some(a.result?.get().to_string())
}

/// `result.requestState` of an answer (raw JSON), when it has one.
pub fn request_state(line: &str) -> Option<String> {
    // Most answers have none: look before reading.
    if !line.contains("\"requestState\"") {
        return None;
    }
    #[derive(Deserialize)]
    struct A<'a> {
        #[serde(borrow, default)]
        result: Option<R<'a>>,
    }
    #[derive(Deserialize)]
    struct R<'a> {
        #[serde(borrow, rename = "requestState", default)]
        state: Option<&'a RawValue>,
    }
    let a: A<'_> = serde_json::from_str(line).ok()?;
    Some(a.result?.state?.get().to_string())
}

/// A JSON-RPC error answer to `id` (raw JSON), as one line.
pub fn error_line(id: &str, code: i64, message: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{}}}}}"#,
        serde_json::to_string(message).expect("a string encodes")
    )
}

/// A JSON text as one line that no line reader splits: raw CR and LF (whitespace between
/// tokens: JSON strings cannot hold them raw) are dropped, and the characters some readers
/// also break lines at — NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR, legal raw only inside
/// strings — are written as the `\uXXXX` escapes that mean the same string.
pub fn one_line(text: &[u8]) -> Cow<'_, [u8]> {
    const SPLITTERS: [(&[u8], &[u8]); 3] = [
        (b"\xC2\x85", b"\\u0085"),
        (b"\xE2\x80\xA8", b"\\u2028"),
        (b"\xE2\x80\xA9", b"\\u2029"),
    ];
    let needs = text
        .iter()
        .any(|b| matches!(b, b'\n' | b'\r' | 0xC2 | 0xE2));
    if !needs {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 8);
    let mut i = 0;
    'bytes: while i < text.len() {
        let b = text[i];
        if b == b'\n' || b == b'\r' {
            i += 1;
            continue;
        }
        for (raw, escaped) in SPLITTERS {
            if text[i..].starts_with(raw) {
                out.extend_from_slice(escaped);
                i += raw.len();
                continue 'bytes;
            }
        }
        out.push(b);
        i += 1;
    }
    if out.len() == text.len() && out == text {
        return Cow::Borrowed(text);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_keeping_every_other_byte() {
        let line = r#"{"jsonrpc":"2.0","id":"a\u0041","method":"tools/call","params":{"name":"x","arguments":{"n":1.000000000000000000001,"big":123456789012345678901234567890},"_meta":{"progressToken":"t"}}}"#;
        let p = Peek::read(line).unwrap();
        let out = splice(
            line,
            &[(p.progress_token().unwrap(), "7"), (p.id.unwrap(), "7")],
        )
        .unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"n":1.000000000000000000001,"big":123456789012345678901234567890},"_meta":{"progressToken":7}}}"#
        );
        // A value from another text is refused, and so are overlapping edits.
        let other = Peek::read(r#"{"id":1}"#).unwrap();
        assert_eq!(splice(line, &[(other.id.unwrap(), "2")]), None);
        let params = p.params.unwrap();
        assert_eq!(
            splice(line, &[(params, "{}"), (p.progress_token().unwrap(), "1")]),
            None
        );
    }

    #[test]
    fn peeks() {
        let p = Peek::read(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"abc"}}}"#).unwrap();
        assert_eq!(p.kind(), Kind::Request);
        assert_eq!(p.progress_token().unwrap().get(), r#""abc""#);
        let p = Peek::read(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x","reason":"r"}}"#).unwrap();
        assert_eq!(p.kind(), Kind::Notification);
        assert_eq!(p.param("requestId").unwrap().get(), r#""x""#);
        let p = Peek::read(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap();
        assert_eq!(p.kind(), Kind::Response);
        assert!(Peek::read("not json").is_none());
        assert_eq!(
            &*one_line(b"{\n  \"a\": \"b\\n\"\r\n}"),
            b"{  \"a\": \"b\\n\"}"
        );
    }
}

#[cfg(test)]
mod one_line_tests {
    use super::one_line;

    #[test]
    fn what_readers_split_at_is_escaped() {
        let odd = "{\"t\":\"a\u{2028}b\u{85}c\u{2029}\u{e9}\"}";
        let fixed = one_line(odd.as_bytes());
        let want = "{\"t\":\"a\\u2028b\\u0085c\\u2029\u{e9}\"}";
        assert_eq!(std::str::from_utf8(&fixed).unwrap(), want);
        let back: serde_json::Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(back["t"], "a\u{2028}b\u{85}c\u{2029}\u{e9}");
        // A pretty-printed body (newlines between tokens) becomes one line, same value.
        let pretty = b"{\n \"a\":\r\n {\"b\": 1}\n}";
        assert_eq!(&*one_line(pretty), b"{ \"a\": {\"b\": 1}}");
    }
}
