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

    fn write(&self, out: &mut String) {
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("a string encodes"));
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
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

/// `raw` (an object) with the value at `path` replaced by `value` (JSON text). `None` when
/// `raw` is not an object or a key of the path is absent.
pub fn replace(raw: &str, path: &[&str], value: &str) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut entries = Entries::read(raw)?;
    let at = entries.0.iter().position(|(k, _)| k == first)?;
    let inner;
    let new: &str = if rest.is_empty() {
        value
    } else {
        inner = replace(entries.0[at].1.get(), rest, value)?;
        &inner
    };
    let boxed = RawValue::from_string(new.to_string()).ok()?;
    let mut out = String::with_capacity(raw.len() + value.len());
    // The replaced value lives as long as this function; write it in place of the old one.
    let kept = std::mem::take(&mut entries.0);
    let mut with_new: Vec<(String, &RawValue)> = Vec::with_capacity(kept.len());
    for (i, (k, v)) in kept.into_iter().enumerate() {
        with_new.push((k, if i == at { &*boxed } else { v }));
    }
    Entries(with_new).write(&mut out);
    Some(out)
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
    fn replaces_keeping_every_other_byte() {
        let line = r#"{"jsonrpc":"2.0","id":"a\u0041","method":"tools/call","params":{"name":"x","arguments":{"n":1.000000000000000000001,"big":123456789012345678901234567890},"_meta":{"progressToken":"t"}}}"#;
        let out = replace(line, &["id"], "7").unwrap();
        assert_eq!(
            out,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"n":1.000000000000000000001,"big":123456789012345678901234567890},"_meta":{"progressToken":"t"}}}"#
        );
        let out = replace(&out, &["params", "_meta", "progressToken"], "7").unwrap();
        assert!(out.ends_with(r#""_meta":{"progressToken":7}}}"#), "{out}");
        assert!(out.contains("123456789012345678901234567890"));
        assert_eq!(replace(line, &["params", "nope"], "1"), None);
        assert_eq!(replace("[1]", &["id"], "1"), None);
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
