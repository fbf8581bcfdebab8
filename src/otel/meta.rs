//! Trace context carried in the request body, `params._meta.traceparent` (and `tracestate`),
//! as MCP clients instrumented per the OpenTelemetry MCP conventions send it. Read only when
//! the body holds the word; rewritten in place, leaving every other byte as it was.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// The context a request body carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaTrace {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow, default)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tracestate: Option<Cow<'a, str>>,
}

const KEY: &[u8] = b"\"traceparent\"";

/// `params._meta.traceparent` of a single JSON-RPC message; `None` for anything else (a batch,
/// no such member, not a string).
pub fn read(body: &[u8]) -> Option<MetaTrace> {
    // The usual body has no such key: one (vectorised) scan, no parse.
    find_key(body)?;
    let wire: Wire<'_> = serde_json::from_slice(body).ok()?;
    let meta = wire.params?.meta?;
    Some(MetaTrace {
        traceparent: meta.traceparent?.into_owned(),
        tracestate: meta.tracestate.map(Cow::into_owned),
    })
}

/// The body with the value of `"traceparent": "<old>"` replaced by `new`, every other byte
/// unchanged; `None` (forward as is) unless that pair appears exactly once, written plainly.
pub fn rewrite(body: &[u8], old: &str, new: &str) -> Option<Bytes> {
    let mut at = None;
    let mut from = 0;
    while let Some(i) = find_key(&body[from..]) {
        let key_end = from + i + KEY.len();
        if let Some(value) = value_at(body, key_end, old) {
            if at.is_some() {
                return None;
            }
            at = Some(value);
        }
        from = key_end;
    }
    let start = at?;
    let mut out = BytesMut::with_capacity(body.len() - old.len() + new.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&body[start + old.len()..]);
    Some(out.freeze())
}

/// Where `old` starts when the bytes after a key are `: "old"` (JSON whitespace allowed).
fn value_at(body: &[u8], mut i: usize, old: &str) -> Option<usize> {
    let skip = |i: &mut usize| {
        while body.get(*i).is_some_and(|b| b" \t\r\n".contains(b)) {
            *i += 1;
        }
    };
    skip(&mut i);
    (body.get(i) == Some(&b':')).then_some(())?;
    i += 1;
    skip(&mut i);
    (body.get(i) == Some(&b'"')).then_some(())?;
    let start = i + 1;
    let end = start + old.len();
    (body.get(start..end) == Some(old.as_bytes()) && body.get(end) == Some(&b'"')).then_some(start)
}

/// Where `"traceparent"` first occurs in `hay`, by a searcher built once (building one per
/// body costs more than the scan).
fn find_key(hay: &[u8]) -> Option<usize> {
    static KEY_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    KEY_FINDER.find(hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const NEW: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";

    #[test]
    fn reads_the_meta_context_only() {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","_meta":{{"traceparent":"{TP}","tracestate":"a=b"}}}}}}"#
        );
        let m = read(body.as_bytes()).unwrap();
        assert_eq!(m.traceparent, TP);
        assert_eq!(m.tracestate.as_deref(), Some("a=b"));
        // In the arguments, not in _meta: not a context.
        let args = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{{"traceparent":"{TP}"}}}}}}"#
        );
        assert_eq!(read(args.as_bytes()), None);
        assert_eq!(read(b"[{\"traceparent\":1}]"), None);
    }

    #[test]
    fn rewrites_one_value_and_nothing_else() {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x", "arguments":{{"a":"traceparent"}},"_meta":{{"traceparent" : "{TP}"}}}}}}"#
        );
        let out = rewrite(body.as_bytes(), TP, NEW).unwrap();
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            body.replace(TP, NEW)
        );
        // The same pair twice (once in the arguments): not edited.
        let twice = format!(
            r#"{{"params":{{"arguments":{{"traceparent":"{TP}"}},"_meta":{{"traceparent":"{TP}"}}}}}}"#
        );
        assert_eq!(rewrite(twice.as_bytes(), TP, NEW), None);
        // Escaped spelling: not found, not edited.
        assert_eq!(
            rewrite(
                br#"{"params":{"_meta":{"traceparent":"00-\u0034bf"}}}"#,
                TP,
                NEW
            ),
            None
        );
    }
}
