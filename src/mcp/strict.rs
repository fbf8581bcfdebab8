//! The strict reading of a POST body: what every mainstream JSON parser reads the same way, or a
//! refusal. Upstreams disagree on objects whose keys repeat: Python and JavaScript keep the last
//! duplicate, Go's `encoding/json` matches struct fields case-insensitively under Unicode simple
//! case folding (so `"METHOD"` or `"ſ"`-for-`s` spellings reach its fields), others keep the
//! first. So a body is refused when, in any object at any depth, two keys are equal under case
//! folding (byte-equal duplicates included), or when a key that the sentinel reads as a
//! protocol field is spelled in any other case than the protocol's own.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a body has more than one reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("a key is repeated in one object")]
    DuplicateKey,
    #[error("two keys of one object differ only in case")]
    CaseFoldedKeys,
    #[error("a protocol field is spelled in another case")]
    MisspelledField,
    #[error("a value other parsers read differently")]
    Unreadable,
    #[error("a message is both a request and a response")]
    RequestAndResponse,
    #[error("not JSON")]
    Json,
}

impl Ambiguity {
    /// A fixed string for logs and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ambiguity::NotUtf8 => "not_utf8",
            Ambiguity::DuplicateKey => "duplicate_key",
            Ambiguity::CaseFoldedKeys => "case_folded_keys",
            Ambiguity::MisspelledField => "misspelled_field",
            Ambiguity::Unreadable => "unreadable_value",
            Ambiguity::RequestAndResponse => "request_and_response",
            Ambiguity::Json => "json",
        }
    }
}

/// Where in a JSON-RPC message an object sits: the fields the sentinel reads at that place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The body: one message or a batch of them.
    Body,
    Message,
    Params,
    Ref,
    Notifications,
    Meta,
    /// An answer's body: one message or a batch of them.
    AnswerBody,
    /// A message of an answer (a response, or a server notification or request).
    Answer,
    /// A response's `result`.
    Result,
    /// A response's `error`.
    Error,
    /// A list of definitions (`result.tools`, …): its items are definitions.
    Items,
    /// One listed tool, prompt, resource or resource template.
    Item,
    /// Anything else (arguments, results, values): only the per-object key rules apply.
    Other,
}

impl Level {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Level::Message => &["jsonrpc", "id", "method", "params", "result", "error"],
            Level::Params => &[
                "name",
                "uri",
                "ref",
                "taskId",
                "notifications",
                "_meta",
                "arguments",
                "cursor",
                "task",
            ],
            Level::Ref => &["type", "name", "uri"],
            Level::Notifications => &["resourceSubscriptions", "toolsListChanged"],
            Level::Meta => &[super::META_PROTOCOL_VERSION, "progressToken", "traceparent"],
            Level::Answer => &["jsonrpc", "id", "method", "params", "result", "error"],
            Level::Result => &[
                "tools",
                "prompts",
                "resources",
                "resourceTemplates",
                "nextCursor",
                "content",
                "structuredContent",
                "isError",
                "contents",
                "messages",
                "tasks",
                "resultType",
                "inputRequests",
                "cacheScope",
                "_meta",
            ],
            Level::Error => &["code", "message", "data"],
            Level::Item => &ITEM_MEMBERS,
            Level::Body | Level::AnswerBody | Level::Items | Level::Other => &[],
        }
    }

    /// The level of the value under `key` of an object at this level.
    fn child(self, key: &str) -> Level {
        match (self, key) {
            (Level::Message, "params") => Level::Params,
            (Level::Params, "ref") => Level::Ref,
            (Level::Params, "notifications") => Level::Notifications,
            (Level::Params, "_meta") => Level::Meta,
            (Level::Answer, "result") => Level::Result,
            (Level::Answer, "error") => Level::Error,
            (Level::Result, "tools" | "prompts" | "resources" | "resourceTemplates") => {
                Level::Items
            }
            _ => Level::Other,
        }
    }
}

/// Every member of a listed definition, whatever its kind (each once).
static ITEM_MEMBERS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    let mut all: Vec<&'static str> = [
        super::TOOL_MEMBERS,
        super::PROMPT_MEMBERS,
        super::RESOURCE_MEMBERS,
        super::TEMPLATE_MEMBERS,
    ]
    .concat();
    all.sort_unstable();
    all.dedup();
    all
});

/// Checks `body` (one JSON value) against the rules above. `Json` when the walk could not
/// read the body: malformed JSON, or a value that a lenient reader skips but other parsers read
/// their own way (a number out of `f64` range, a lone surrogate, nesting deeper than 128) —
/// the caller refuses both, since no key check ran past that point.
pub fn check(body: &[u8]) -> Result<(), Ambiguity> {
    walk(body, Level::Body)
}

/// Checks an answer (one message or a batch, as a JSON body or an SSE event's data) by the same
/// rules, with the fields the sentinel reads in answers: a message's, a result's and an error's
/// members, and the members of each listed definition (a `"Name"` or `"DESCRIPTION"` that Go's
/// decoder would read as the definition's own is refused); and a message that names a method
/// while carrying a result or an error is refused.
pub fn check_answer(body: &[u8]) -> Result<(), Ambiguity> {
    walk(body, Level::AnswerBody)
}

fn walk(body: &[u8], top: Level) -> Result<(), Ambiguity> {
    let text = std::str::from_utf8(body).map_err(|_| Ambiguity::NotUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let mut state = State {
        found: None,
        keys: Vec::new(),
    };
    let walked = Walk {
        level: top,
        state: &mut state,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (state.found, walked) {
        (Some(a), _) => Err(a),
        (None, Ok(())) => Ok(()),
        (None, Err(_)) => Err(Ambiguity::Json),
    }
}

/// Checks the keys of every object in `value` (already parsed, so duplicates are gone) for
/// spellings that fold to one of `names` without being it: a policy names an argument by its
/// exact key, and an upstream that folds case would read the other spelling as that argument.
pub fn check_names(value: &serde_json::Value, names: &HashSet<String>) -> Result<(), Ambiguity> {
    if names.is_empty() {
        return Ok(());
    }
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if !names.contains(k) && names.iter().any(|n| folds_equal(n, k)) {
                    return Err(Ambiguity::MisspelledField);
                }
                check_names(v, names)?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| check_names(v, names)),
        _ => Ok(()),
    }
}

/// `a` and `b` are equal under case folding: ASCII letters compared without case, other
/// characters by their upper case of their lower case (the mapping Go's `encoding/json` uses,
/// which also folds `ſ` to `S` and the Kelvin sign to `K`).
pub fn folds_equal(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    fold(a) == fold(b)
}

fn fold(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Owned(s.to_ascii_uppercase());
    }
    Cow::Owned(s.chars().map(fold_char).collect())
}

/// Simple (one-character) case folding: the upper case of the lower case, each taken only when
/// it is one character, as Go's `unicode.SimpleFold` orbits are (`ß` stays `ß`, not `SS`).
fn fold_char(c: char) -> char {
    fn one(mut it: impl Iterator<Item = char>, or: char) -> char {
        match (it.next(), it.next()) {
            (Some(x), None) => x,
            _ => or,
        }
    }
    let lower = one(c.to_lowercase(), c);
    one(lower.to_uppercase(), lower)
}

/// Above this many keys an object's keys are compared through a set of folded keys rather than
/// pairwise.
const PAIRWISE: usize = 16;

/// What the walk shares: the first ambiguity found, and one stack of keys for every object
/// being read (each object's keys above where the stack stood when it began), so no object
/// allocates a list of its own.
struct State<'de> {
    found: Option<Ambiguity>,
    keys: Vec<Cow<'de, str>>,
}

struct Walk<'s, 'de> {
    level: Level,
    state: &'s mut State<'de>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Only the body's own array holds messages, and a list's its definitions; arrays
        // elsewhere hold plain values.
        let level = match self.level {
            Level::Body => Level::Message,
            Level::AnswerBody => Level::Answer,
            Level::Items => Level::Item,
            _ => Level::Other,
        };
        while seq
            .next_element_seed(Walk {
                level,
                state: &mut *self.state,
            })?
            .is_some()
        {
            if self.state.found.is_some() {
                return Err(de::Error::custom("ambiguous"));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let level = match self.level {
            Level::Body => Level::Message,
            Level::AnswerBody => Level::Answer,
            Level::Items => Level::Other,
            other => other,
        };
        let fields = level.fields();
        let base = self.state.keys.len();
        let mut folded: Option<HashSet<String>> = None;
        while let Some(key) = map.next_key_seed(Key)? {
            let mut problem = key_problem(&key, fields, &self.state.keys[base..], &mut folded);
            // An answer's message that names a method and carries a result or an error is a
            // request to some readers and a response to others.
            if level == Level::Answer && problem.is_none() {
                let seen = &self.state.keys[base..];
                let has = |k: &str| seen.iter().any(|s| s == k);
                let hybrid = match &*key {
                    "method" => has("result") || has("error"),
                    "result" | "error" => has("method"),
                    _ => false,
                };
                if hybrid {
                    problem = Some(Ambiguity::RequestAndResponse);
                }
            }
            if let Some(a) = problem {
                self.state.found = Some(a);
                return Err(de::Error::custom("ambiguous"));
            }
            map.next_value_seed(Walk {
                level: level.child(&key),
                state: &mut *self.state,
            })?;
            if self.state.found.is_some() {
                return Err(de::Error::custom("ambiguous"));
            }
            // Nested objects pushed and popped above `base + seen` while the value was read.
            self.state.keys.push(key);
        }
        self.state.keys.truncate(base);
        Ok(())
    }
}

/// A key, borrowed from the body unless it holds escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

/// What is wrong with `key` given the keys already seen in its object (`folded` holds their
/// folded forms once the object is large).
fn key_problem(
    key: &str,
    fields: &[&str],
    seen: &[Cow<'_, str>],
    folded: &mut Option<HashSet<String>>,
) -> Option<Ambiguity> {
    if !fields.contains(&key) && fields.iter().any(|f| folds_equal(f, key)) {
        return Some(Ambiguity::MisspelledField);
    }
    if seen.len() < PAIRWISE {
        for k in seen {
            if k == key {
                return Some(Ambiguity::DuplicateKey);
            }
            if folds_equal(k, key) {
                return Some(Ambiguity::CaseFoldedKeys);
            }
        }
        return None;
    }
    let set = folded.get_or_insert_with(|| seen.iter().map(|k| fold(k).into_owned()).collect());
    if !set.insert(fold(key).into_owned()) {
        return Some(if seen.iter().any(|k| k == key) {
            Ambiguity::DuplicateKey
        } else {
            Ambiguity::CaseFoldedKeys
        });
    }
    None
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn answers_are_read_one_way_or_refused() {
        for (body, want) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}"#,
                Ok(()),
            ),
            (r#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#, Ok(())),
            // Go reads `TOOLS` as the result's tools, `Name` and `DESCRIPTION` as the tool's.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"TOOLS":[]}}"#,
                Err(Ambiguity::MisspelledField),
            ),
            (
                r#"{"id":1,"result":{"tools":[{"Name":"a"}]}}"#,
                Err(Ambiguity::MisspelledField),
            ),
            (
                r#"{"id":1,"result":{"tools":[{"name":"a","DESCRIPTION":"x"}]}}"#,
                Err(Ambiguity::MisspelledField),
            ),
            (
                r#"{"id":1,"result":{"tools":[]},"result":{}}"#,
                Err(Ambiguity::DuplicateKey),
            ),
            (
                r#"{"id":1,"method":"x","result":{}}"#,
                Err(Ambiguity::RequestAndResponse),
            ),
            (
                r#"{"id":1,"error":{"code":1,"message":"m"},"method":"x"}"#,
                Err(Ambiguity::RequestAndResponse),
            ),
            (
                r#"{"id":1,"result":{"content":[{"text":"\ud800"}]}}"#,
                Err(Ambiguity::Json),
            ),
            // Keys inside values (a schema's properties, arguments) are data.
            (
                r#"{"id":1,"result":{"tools":[{"name":"a","inputSchema":{"properties":{"Name":{}}}}]}}"#,
                Ok(()),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}"#,
                Ok(()),
            ),
        ] {
            assert_eq!(check_answer(body.as_bytes()), want, "{body}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(body: &str) -> Result<(), Ambiguity> {
        check(body.as_bytes())
    }

    #[test]
    fn ambiguity_table() {
        use Ambiguity::*;
        let rows: &[(&str, Result<(), Ambiguity>)] = &[
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}}"#,
                Ok(()),
            ),
            // Duplicates at every depth.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
                Err(DuplicateKey),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
                Err(DuplicateKey),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":{"y":1,"y":2}}}}"#,
                Err(DuplicateKey),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"l":[{"k":1,"k":1}]}}}"#,
                Err(DuplicateKey),
            ),
            // Escaped spellings are the same key.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","na\u006de":"b"}}"#,
                Err(DuplicateKey),
            ),
            // Case folding: ASCII and Unicode simple folding (long s, Kelvin sign).
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
                Err(MisspelledField),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"METHOD":"tools/call"}"#,
                Err(MisspelledField),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","NAME":"b"}}"#,
                Err(MisspelledField),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taſkId":"t"}}"#,
                Err(MisspelledField),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","Name":"p"}}}"#,
                Err(MisspelledField),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"IO.modelcontextprotocol/protocolVersion":"x"}}}"#,
                Err(MisspelledField),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"amount":1,"Amount":2}}}"#,
                Err(CaseFoldedKeys),
            ),
            (
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":{\"kind\":1,\"\u{212A}ind\":2}}}",
                Err(CaseFoldedKeys),
            ),
            // A batch: each element is a message.
            (
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"Params":{},"method":"ping"}]"#,
                Err(MisspelledField),
            ),
            // Keys that only look alike, or case variants of non-protocol keys, are fine.
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"Name":"x","uri":"y"}}}"#,
                Ok(()),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"a":{"b":1},"c":{"b":2}}}}"#,
                Ok(()),
            ),
            ("{\"a\":1} trailing", Err(Json)),
        ];
        for (body, want) in rows {
            assert_eq!(&verdict(body), want, "{body}");
        }
        assert_eq!(check(b"{\"a\":\"\xff\"}"), Err(NotUtf8));
    }

    #[test]
    fn large_objects_use_a_set() {
        let mut keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{{}}}}}"#,
            keys.join(",")
        );
        assert_eq!(verdict(&ok), Ok(()));
        keys.push("\"K3\":0".into());
        let bad = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{{}}}}}"#,
            keys.join(",")
        );
        assert_eq!(verdict(&bad), Err(Ambiguity::CaseFoldedKeys));
        keys.pop();
        keys.push("\"k3\":0".into());
        let dup = format!(
            r#"{{"jsonrpc":"2.0","method":"x","params":{{{}}}}}"#,
            keys.join(",")
        );
        assert_eq!(verdict(&dup), Err(Ambiguity::DuplicateKey));
    }

    #[test]
    fn policy_names() {
        let names: HashSet<String> = ["amount".to_string(), "to".to_string()].into();
        let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(check_names(&v(r#"{"amount":1,"to":{"iban":"x"}}"#), &names).is_ok());
        assert_eq!(
            check_names(&v(r#"{"AMOUNT":1}"#), &names),
            Err(Ambiguity::MisspelledField)
        );
        assert_eq!(
            check_names(&v(r#"{"x":[{"To":1}]}"#), &names),
            Err(Ambiguity::MisspelledField)
        );
        assert!(check_names(&v(r#"{"AMOUNT":1}"#), &HashSet::new()).is_ok());
    }

    #[test]
    fn folding() {
        assert!(folds_equal("taskId", "TASKID"));
        assert!(folds_equal("s", "ſ"));
        assert!(folds_equal("k", "\u{212A}"));
        assert!(folds_equal("σ", "ς"));
        assert!(!folds_equal("name", "names"));
        // Simple folding only, as Go's: full mappings would conflate these. (Dotless `ı`
        // still folds onto `I` here though Go keeps it apart: a refusal, never a bypass.)
        assert!(!folds_equal("strasse", "straße"));
        assert!(!folds_equal("file", "\u{FB01}le"));
        assert!(folds_equal("straße", "STRAẞE"));
    }
}
