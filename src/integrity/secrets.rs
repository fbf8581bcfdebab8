//! Secrets in tool results: built-in and configured detectors over every string a client reads,
//! with redaction in place, and a pre-check on raw bytes that says when no scan is needed. Pure:
//! what a match costs (redact, deny, log) is the caller's decision.

use regex::{Regex, RegexSet};
use regex_syntax::hir::Hir;
use serde_json::Value;

/// One detector: a name (the redaction label) and a pattern. When the pattern has a group named
/// `secret`, only that group is redacted ("aws_secret_access_key = [REDACTED:…]").
struct Detector {
    name: String,
    regex: Regex,
    /// Whether the pattern has a `secret` group.
    group: bool,
    /// A second look at a whole match the pattern cannot express (Rust regexes have no
    /// look-around); `maybe` does without it, which only makes it say yes more often.
    check: fn(&str) -> bool,
}

struct Builtin {
    name: &'static str,
    pattern: &'static str,
    check: fn(&str) -> bool,
}

const fn builtin(name: &'static str, pattern: &'static str) -> Builtin {
    Builtin {
        name,
        pattern,
        check: |_| true,
    }
}

/// The built-in detectors, in order. `\b` is ASCII's throughout: secrets are ASCII, and the lazy
/// DFA would give up on a Unicode word boundary in non-ASCII text.
const BUILTINS: [Builtin; 13] = [
    builtin(
        "aws_access_key_id",
        r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?-u:\b)",
    ),
    builtin(
        "aws_secret_access_key",
        r#"(?i:aws[_.-]?secret[_.-]?(?:access[_.-]?)?key|secret[_.-]?access[_.-]?key)["']?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
    ),
    builtin(
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?s:.*?-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|.*)",
    ),
    builtin(
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+",
    ),
    builtin(
        "github_token",
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})(?-u:\b)",
    ),
    builtin(
        "gitlab_token",
        r"(?-u:\b)gl(?:pat|dt|rt|ptt)-[A-Za-z0-9_.-]{20,}",
    ),
    builtin(
        "slack_token",
        r"(?-u:\b)xox[baprs]-[A-Za-z0-9-]{10,}|(?:https?://)?hooks\.slack\.com/services/[A-Za-z0-9_/-]{20,}",
    ),
    builtin("stripe_key", r"(?-u:\b)[rs]k_live_[A-Za-z0-9]{20,}"),
    builtin("google_api_key", r"(?-u:\b)AIza[A-Za-z0-9_-]{35}"),
    Builtin {
        name: "openai_key",
        pattern: r"(?-u:\b)sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        check: openai_key,
    },
    builtin("anthropic_key", r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}"),
    builtin("npm_token", r"(?-u:\b)npm_[A-Za-z0-9]{36}(?-u:\b)"),
    builtin(
        "azure_storage_key",
        r"AccountKey=(?P<secret>[A-Za-z0-9+/]{86,}={0,2})",
    ),
];

/// Not an Anthropic key, and random enough to be a key rather than a kebab-case word such as
/// "sk-learn-tutorial-2024": a digit, an upper- and a lowercase letter after the prefix.
fn openai_key(m: &str) -> bool {
    let body = &m[3..];
    !m.starts_with("sk-ant-")
        && body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
}

/// Secret detectors, compiled together: built once from the config, shared by every request.
pub struct SecretScanner {
    detectors: Vec<Detector>,
    /// Every detector, so a string that holds something gets one pass to tell which.
    set: RegexSet,
    /// Every detector as one alternation: whether a text holds anything at all, found with
    /// the patterns' literal prefixes (`AKIA`, `-----BEGIN`, `ghp_`, …) rather than by running
    /// every automaton over every byte (which a set's overlapping search does).
    any: Regex,
    /// The same over raw JSON bytes, for `maybe`.
    raw: regex::bytes::Regex,
}

/// `json` with every string escape decoded (`\\n`, `\\"`, `\\u00e9`, surrogate pairs); `None`
/// when an escape is malformed or the result is not UTF-8.
fn unescape(json: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(json.len());
    let mut i = 0;
    let hex = |at: usize| -> Option<u32> {
        let h = json.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    while let Some(off) = json[i..].iter().position(|b| *b == b'\\') {
        out.extend_from_slice(&json[i..i + off]);
        i += off;
        let c = *json.get(i + 1)?;
        let decoded = match c {
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'"' | b'\\' | b'/' => char::from(c),
            b'u' => {
                let hi = hex(i + 2)?;
                if (0xD800..0xDC00).contains(&hi) && json.get(i + 6..i + 8) == Some(b"\\u") {
                    let lo = hex(i + 8)?;
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo.checked_sub(0xDC00)?))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        };
        i += if c == b'u' { 6 } else { 2 };
        let mut buf = [0; 4];
        out.extend_from_slice(decoded.encode_utf8(&mut buf).as_bytes());
    }
    out.extend_from_slice(&json[i..]);
    String::from_utf8(out).ok()
}

/// The patterns as one alternation, their capture groups unnamed (names may repeat across
/// patterns; only `any` and `raw` use this, never to capture).
fn alternation(patterns: &[&str]) -> String {
    static NAMED: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"\(\?P?<[A-Za-z_][A-Za-z0-9_]*>").expect("a valid regex")
    });
    if patterns.is_empty() {
        // No detector: a class nothing is in, which never matches (an empty pattern would
        // match everywhere).
        return r"[^\s\S]".to_string();
    }
    patterns
        .iter()
        .map(|p| format!("(?:{})", NAMED.replace_all(p, "(?:")))
        .collect::<Vec<_>>()
        .join("|")
}

impl SecretScanner {
    /// The built-in detector names, in order.
    pub const BUILTIN: &'static [&'static str] = &builtin_names();

    /// `builtin`: use the built-in detectors (all of them, minus any named in `disabled`);
    /// `custom`: (name, regex) pairs; an invalid regex or a name that is not [a-z0-9_]+ or clashes
    /// is an Err naming it. So is a name in `disabled` that is not a built-in one (a typo would
    /// leave a detector on), and a custom pattern that can match the empty string or uses `^`,
    /// `$`, `\A` or `\z`: a detector is searched for anywhere in a string, and `maybe` reads raw
    /// JSON where a string's ends are quotes.
    pub fn new(
        builtin: bool,
        disabled: &[String],
        custom: &[(String, String)],
    ) -> Result<Self, String> {
        if let Some(unknown) = disabled
            .iter()
            .find(|d| !Self::BUILTIN.contains(&d.as_str()))
        {
            return Err(format!(
                "secret detector {unknown:?} to disable is not a built-in one"
            ));
        }
        let mut detectors = Vec::new();
        if builtin {
            for b in BUILTINS
                .iter()
                .filter(|b| !disabled.iter().any(|d| d == b.name))
            {
                let regex = Regex::new(b.pattern).expect("the built-in secret patterns compile");
                detectors.push(Detector::new(b.name.to_string(), regex, b.check));
            }
        }
        for (name, pattern) in custom {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(format!("secret detector {name:?}: a name is [a-z0-9_]+"));
            }
            if Self::BUILTIN.contains(&name.as_str())
                || custom.iter().filter(|(n, _)| n == name).count() > 1
            {
                return Err(format!("secret detector {name:?}: the name is taken"));
            }
            let regex = Regex::new(pattern)
                .map_err(|e| format!("secret detector {name:?}: invalid regex: {e}"))?;
            let hir = regex_syntax::parse(pattern)
                .map_err(|e| format!("secret detector {name:?}: invalid regex: {e}"))?;
            refuse_unsearchable(&hir).map_err(|why| format!("secret detector {name:?}: {why}"))?;
            detectors.push(Detector::new(name.clone(), regex, |_| true));
        }
        let patterns: Vec<&str> = detectors.iter().map(|d| d.regex.as_str()).collect();
        let set = RegexSet::new(&patterns).map_err(|e| format!("secret detectors: {e}"))?;
        let one = alternation(&patterns);
        let any = Regex::new(&one).map_err(|e| format!("secret detectors: {e}"))?;
        let raw = regex::bytes::Regex::new(&one).map_err(|e| format!("secret detectors: {e}"))?;
        Ok(SecretScanner {
            detectors,
            set,
            any,
            raw,
        })
    }

    /// Names of the detectors in use.
    pub fn names(&self) -> Vec<&str> {
        self.detectors.iter().map(|d| d.name.as_str()).collect()
    }

    /// Could this JSON text, which holds no backslash at all (so every string reads as written),
    /// hold a secret? A fast pre-check on raw bytes (regex::bytes::RegexSet); false means
    /// certainly none. A match inside a string is a match in the raw text: a string's ends are
    /// quotes, which no pattern reads as part of a word, and no pattern is anchored to them.
    pub fn maybe(&self, raw: &[u8]) -> bool {
        self.raw.is_match(raw)
    }

    /// Could this JSON text hold a secret in one of its strings, as a client reads them? Its
    /// escapes decoded in place (escapes live only inside strings, so each string reads as a
    /// client reads it, between the text's own punctuation), then the same pre-check: false
    /// means certainly none. Text that does not decode is answered true (the caller's parse
    /// decides).
    pub fn maybe_escaped(&self, json: &[u8]) -> bool {
        if !json.contains(&b'\\') {
            return self.maybe(json);
        }
        match unescape(json) {
            Some(text) => self.any.is_match(&text),
            None => true,
        }
    }

    /// Scans every string value of a JSON value (object keys are not scanned) as a client reads
    /// it; with `redact`, replaces each match in place with "[REDACTED:<detector>]". Returns the
    /// detectors that matched, each once, in detector order.
    pub fn scan_value(&self, v: &mut Value, redact: bool) -> Vec<String> {
        let mut hit = vec![false; self.detectors.len()];
        self.walk(v, redact, &mut hit);
        self.named(&hit)
    }

    /// Same on one text; (new text, detectors) when something matched.
    pub fn redact_text(&self, text: &str) -> Option<(String, Vec<String>)> {
        let mut hit = vec![false; self.detectors.len()];
        let spans = self.spans(text);
        if spans.is_empty() {
            return None;
        }
        for span in &spans {
            hit[span.detector] = true;
        }
        Some((self.redacted(text, &spans), self.named(&hit)))
    }

    fn walk(&self, v: &mut Value, redact: bool, hit: &mut [bool]) {
        match v {
            Value::String(s) => {
                let spans = self.spans(s);
                for span in &spans {
                    hit[span.detector] = true;
                }
                if redact && !spans.is_empty() {
                    *s = self.redacted(s, &spans);
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|item| self.walk(item, redact, hit)),
            Value::Object(map) => map
                .values_mut()
                .for_each(|item| self.walk(item, redact, hit)),
            _ => {}
        }
    }

    fn named(&self, hit: &[bool]) -> Vec<String> {
        self.detectors
            .iter()
            .zip(hit)
            .filter(|(_, hit)| **hit)
            .map(|(d, _)| d.name.clone())
            .collect()
    }

    /// What to redact in `text`: every detector's matches, then the earliest of any that overlap
    /// (on a tie the longer, then the first detector).
    fn spans(&self, text: &str) -> Vec<Span> {
        if !self.any.is_match(text) {
            return Vec::new();
        }
        let matched = self.set.matches(text);
        if !matched.matched_any() {
            return Vec::new();
        }
        let mut all = Vec::new();
        for i in matched.iter() {
            let d = &self.detectors[i];
            if d.group {
                for caps in d.regex.captures_iter(text) {
                    if let (Some(whole), Some(secret)) = (caps.get(0), caps.name("secret"))
                        && (d.check)(whole.as_str())
                        && !secret.is_empty()
                    {
                        all.push(Span {
                            start: secret.start(),
                            end: secret.end(),
                            detector: i,
                        });
                    }
                }
            } else {
                for m in d.regex.find_iter(text) {
                    if (d.check)(m.as_str()) && !m.is_empty() {
                        all.push(Span {
                            start: m.start(),
                            end: m.end(),
                            detector: i,
                        });
                    }
                }
            }
        }
        all.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end), s.detector));
        let mut kept: Vec<Span> = Vec::with_capacity(all.len());
        for span in all {
            if kept.last().is_none_or(|last| span.start >= last.end) {
                kept.push(span);
            }
        }
        kept
    }

    fn redacted(&self, text: &str, spans: &[Span]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for span in spans {
            out.push_str(&text[at..span.start]);
            out.push_str("[REDACTED:");
            out.push_str(&self.detectors[span.detector].name);
            out.push(']');
            at = span.end;
        }
        out.push_str(&text[at..]);
        out
    }
}

impl Detector {
    fn new(name: String, regex: Regex, check: fn(&str) -> bool) -> Self {
        let group = regex.capture_names().any(|n| n == Some("secret"));
        Detector {
            name,
            regex,
            group,
            check,
        }
    }
}

#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    detector: usize,
}

const fn builtin_names() -> [&'static str; BUILTINS.len()] {
    let mut names = [""; BUILTINS.len()];
    let mut i = 0;
    while i < BUILTINS.len() {
        names[i] = BUILTINS[i].name;
        i += 1;
    }
    names
}

/// A custom pattern must be searchable anywhere: not match the empty string (it would redact
/// between every two characters) and not be anchored (`maybe` would miss what it finds).
fn refuse_unsearchable(hir: &Hir) -> Result<(), &'static str> {
    let props = hir.properties();
    if props.minimum_len() == Some(0) {
        return Err("the pattern matches the empty string");
    }
    if props.look_set().contains_anchor() {
        return Err(
            "anchors (^ $ \\A \\z) are not supported: a detector is searched for anywhere in a string",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{BUILTINS, SecretScanner};

    fn all() -> SecretScanner {
        SecretScanner::new(true, &[], &[]).unwrap()
    }

    fn corpus() -> Value {
        serde_json::from_str(include_str!("../../tests/fixtures/integrity/secrets.json")).unwrap()
    }

    #[test]
    fn builtin_names_are_the_table() {
        let names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        assert_eq!(SecretScanner::BUILTIN, names.as_slice());
        assert_eq!(all().names(), names);
        assert!(
            SecretScanner::BUILTIN
                .iter()
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        );
    }

    #[test]
    fn every_positive_is_found_and_only_its_secret_redacted() {
        let scanner = all();
        let corpus = corpus();
        let positives = corpus["positives"].as_array().unwrap();
        for name in SecretScanner::BUILTIN {
            assert!(
                positives.iter().any(|p| p["detector"] == *name),
                "no positive sample for {name}"
            );
        }
        for p in positives {
            let (detector, secret, text) = (
                p["detector"].as_str().unwrap(),
                p["secret"].as_str().unwrap(),
                p["text"].as_str().unwrap(),
            );
            let expected = text.replace(secret, &format!("[REDACTED:{detector}]"));
            assert_eq!(
                scanner.redact_text(text),
                Some((expected, vec![detector.to_string()])),
                "{}",
                p["why"]
            );
        }
    }

    #[test]
    fn no_negative_matches() {
        let scanner = all();
        for n in corpus()["negatives"].as_array().unwrap() {
            assert_eq!(
                scanner.redact_text(n["text"].as_str().unwrap()),
                None,
                "{}",
                n["why"]
            );
        }
    }

    #[test]
    fn maybe_is_never_false_where_a_scan_finds() {
        let scanner = all();
        let mut checked = 0;
        for p in corpus()["positives"].as_array().unwrap() {
            let text = p["text"].as_str().unwrap();
            let mut result = json!({
                "content": [{ "type": "text", "text": text }],
                "structuredContent": { "value": text, "n": 1 },
                "isError": false
            });
            let raw = serde_json::to_vec(&result).unwrap();
            if raw.contains(&b'\\') {
                continue;
            }
            assert!(
                !scanner.scan_value(&mut result, false).is_empty(),
                "{}",
                p["why"]
            );
            assert!(scanner.maybe(&raw), "maybe says no to {}", p["why"]);
            checked += 1;
        }
        assert!(
            checked >= 15,
            "only {checked} positives checked without a backslash"
        );
        assert!(!scanner.maybe(br#"{"content":[{"type":"text","text":"nothing to see"}]}"#));
    }

    /// The pre-check over escaped JSON says yes wherever a scan of the strings finds a secret,
    /// however the JSON writer escaped them (every positive, in text between escaped newlines
    /// and quotes, and with each of its characters written as a `\u` escape in turn).
    #[test]
    fn maybe_escaped_is_never_false_where_a_scan_finds() {
        let scanner = all();
        for p in corpus()["positives"].as_array().unwrap() {
            let text = format!("line one\n\"{}\"\tafter", p["text"].as_str().unwrap());
            let result = json!({"content": [{"type": "text", "text": text}]});
            assert!(!scanner.scan_value(&mut result.clone(), false).is_empty());
            let raw = serde_json::to_string(&result).unwrap();
            assert!(scanner.maybe_escaped(raw.as_bytes()), "{}", p["why"]);
            // Every character of the secret spelled as a \u escape, one at a time.
            let secret = p["text"].as_str().unwrap();
            for (i, c) in secret
                .char_indices()
                .filter(|(_, c)| c.is_ascii_alphanumeric())
            {
                let spelled = format!(
                    "{}\\u{:04x}{}",
                    &secret[..i],
                    c as u32,
                    &secret[i + c.len_utf8()..]
                );
                let body = format!(
                    r#"{{"content":[{{"type":"text","text":{}}}]}}"#,
                    serde_json::to_string(&spelled)
                        .unwrap()
                        .replace("\\\\u", "\\u")
                );
                assert!(
                    scanner.maybe_escaped(body.as_bytes()),
                    "{}: {body}",
                    p["why"]
                );
            }
        }
        assert!(!scanner.maybe_escaped(br#"{"text":"nothing\nto \"see\" \u00e9"}"#));
        assert!(
            super::unescape(br#""\ud83d\ude00 \u00e9\n""#).unwrap() == "\"\u{1f600} \u{e9}\n\""
        );
    }

    #[test]
    fn scan_value_reads_strings_not_keys_and_redacts_in_place() {
        let scanner = all();
        let mut v = json!({
            "AKIAIOSFODNN7EXAMPLE": "a key is not scanned",
            "content": [
                { "type": "text", "text": "id AKIAIOSFODNN7EXAMPLE and npm_FAKE0123456789abcdefghijklmnopqrstuv" },
                { "type": "text", "text": "again AKIAIOSFODNN7EXAMPLE" }
            ],
            "n": 7
        });
        let found = scanner.scan_value(&mut v.clone(), false);
        assert_eq!(found, ["aws_access_key_id", "npm_token"]);
        assert_eq!(scanner.scan_value(&mut v, true), found);
        assert_eq!(
            v,
            json!({
                "AKIAIOSFODNN7EXAMPLE": "a key is not scanned",
                "content": [
                    { "type": "text", "text": "id [REDACTED:aws_access_key_id] and [REDACTED:npm_token]" },
                    { "type": "text", "text": "again [REDACTED:aws_access_key_id]" }
                ],
                "n": 7
            })
        );
        let mut clean = json!({ "content": [{ "type": "text", "text": "fine" }] });
        assert_eq!(scanner.scan_value(&mut clean, true), Vec::<String>::new());
        assert_eq!(scanner.redact_text("fine"), None);
    }

    #[test]
    fn detectors_can_be_disabled_and_added() {
        let disabled = ["jwt".to_string(), "openai_key".to_string()];
        let custom = [(
            "internal_token".to_string(),
            r"itk_[a-f0-9]{16}".to_string(),
        )];
        let scanner = SecretScanner::new(true, &disabled, &custom).unwrap();
        assert!(!scanner.names().contains(&"jwt"));
        assert_eq!(scanner.names().last(), Some(&"internal_token"));
        assert_eq!(
            scanner.redact_text("t=itk_0123456789abcdef."),
            Some((
                "t=[REDACTED:internal_token].".to_string(),
                vec!["internal_token".to_string()]
            ))
        );
        assert!(scanner.maybe(br#"{"t":"itk_0123456789abcdef"}"#));
        let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.c2ln";
        assert_eq!(scanner.redact_text(jwt), None);
        let only_custom = SecretScanner::new(false, &[], &custom).unwrap();
        assert_eq!(only_custom.names(), ["internal_token"]);
        assert_eq!(only_custom.redact_text("AKIAIOSFODNN7EXAMPLE"), None);
        let none = SecretScanner::new(false, &[], &[]).unwrap();
        assert!(none.names().is_empty() && !none.maybe(b"AKIAIOSFODNN7EXAMPLE"));
        // A custom `secret` group narrows the redaction, as the AWS secret detector does.
        let grouped = [(
            "pin".to_string(),
            r"pin: (?P<secret>[0-9]{6})\b".to_string(),
        )];
        let scanner = SecretScanner::new(false, &[], &grouped).unwrap();
        assert_eq!(
            scanner.redact_text("pin: 123456").unwrap().0,
            "pin: [REDACTED:pin]"
        );
    }

    #[test]
    fn bad_detectors_are_refused_by_name() {
        let err = |disabled: &[&str], custom: &[(&str, &str)]| {
            let disabled: Vec<String> = disabled.iter().map(|s| s.to_string()).collect();
            let custom: Vec<(String, String)> = custom
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect();
            SecretScanner::new(true, &disabled, &custom).err().unwrap()
        };
        assert!(err(&["jwtt"], &[]).contains("\"jwtt\""));
        assert!(err(&[], &[("Bad-Name", "x")]).contains("\"Bad-Name\""));
        assert!(err(&[], &[("", "x")]).contains("\"\""));
        assert!(err(&[], &[("jwt", "x")]).contains("taken"));
        assert!(err(&[], &[("a", "x"), ("a", "y")]).contains("taken"));
        assert!(err(&[], &[("broken", "(")]).contains("\"broken\": invalid regex"));
        assert!(err(&[], &[("empty", "x*")]).contains("empty string"));
        for anchored in ["^secret", "secret$", r"\Asecret", r"(?m)^s", r"secret\z"] {
            assert!(
                err(&[], &[("anchored", anchored)]).contains("anchors"),
                "{anchored}"
            );
        }
    }
}
