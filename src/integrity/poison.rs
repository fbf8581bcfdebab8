//! Tool poisoning: text in a tool, prompt or resource definition aimed at the model rather than
//! the user (hidden characters, instructions, references to other tools, exfiltration targets,
//! padding). A pure scan of one definition as a server lists it; what a finding costs is the
//! caller's decision.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde_json::Value;

use super::fingerprint::Kind;
use rules::RULES;

mod rules;

/// What kind of poisoning a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// A character a reader does not see (or that reorders what they see).
    InvisibleUnicode,
    /// Phrasing aimed at the model: "ignore previous instructions", `<IMPORTANT>` blocks.
    Instructions,
    /// The text reaches for another tool of the server, to change how it is used.
    Shadowing,
    /// URLs, secret files and conversation data: where data would go, or what would be taken.
    Exfiltration,
    /// A description longer than the configured limit (padding pushes instructions off-screen).
    Length,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::InvisibleUnicode,
        Class::Instructions,
        Class::Shadowing,
        Class::Exfiltration,
        Class::Length,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::InvisibleUnicode => "invisible_unicode",
            Class::Instructions => "instructions",
            Class::Shadowing => "shadowing",
            Class::Exfiltration => "exfiltration",
            Class::Length => "length",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub class: Class,
    /// Where: a dotted path inside the definition, e.g. "description",
    /// "inputSchema.properties.path.description", "arguments.0.description", or "name". An object
    /// key is reported at its own path; keys are written escaped like excerpts, cut at 64 chars.
    pub field: String,
    /// What matched, at most 80 chars, invisible and control characters written as <U+200B>;
    /// safe to log. Phrases are quoted from the text with invisible characters removed and
    /// whitespace collapsed; a Length finding says how long the description is.
    pub excerpt: String,
}

/// Scans definitions; the phrase tables are compiled once per process, not per scanner.
pub struct Scanner {
    max_length: usize,
}

impl Scanner {
    /// `max_length`: longest description (in chars) that is not a finding of class Length.
    pub fn new(max_length: usize) -> Self {
        Scanner { max_length }
    }

    /// Every finding in one definition, in a stable order (by class then field), at most one per
    /// (class, field). `others`: the names of the other tools/prompts the same server lists
    /// (never including this item's own name), for shadowing.
    pub fn scan(&self, item: &Value, others: &[&str]) -> Vec<Finding> {
        let own = item.get("name").and_then(Value::as_str);
        let mut scan = Scan {
            names: Names { others, own },
            found: BTreeMap::new(),
        };
        scan.value(item, &mut Vec::new());
        if let Some(description) = item.get("description").and_then(Value::as_str) {
            // A char is at least one byte: most descriptions need no count.
            if description.len() > self.max_length {
                let chars = description.chars().count();
                if chars > self.max_length {
                    let excerpt = format!("{chars} chars, over {}", self.max_length);
                    scan.found
                        .insert((Class::Length, "description".into()), excerpt);
                }
            }
        }
        scan.found
            .into_iter()
            .map(|((class, field), excerpt)| Finding {
                class,
                field,
                excerpt,
            })
            .collect()
    }
}

/// A character that is invisible or changes text direction: tags, bidi controls, zero-width and
/// invisible formatting characters and variation selectors, plus the rest of Unicode's
/// Default_Ignorable_Code_Point set and the interlinear annotation controls. A renderer draws
/// none of them, so each can hide or split text a reviewer reads.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        // Soft hyphen: drawn only at a line break, so "ig\u{AD}nore" reads as "ignore".
        '\u{00AD}'
        // Combining grapheme joiner: no glyph; splits a word unseen.
        | '\u{034F}'
        // Arabic letter mark: a bidi control, see U+202A below.
        | '\u{061C}'
        // Hangul fillers: blank glyphs that pass for letters (invisible identifiers in code).
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
        // Khmer inherent vowels: no glyph; Unicode itself says not to use them.
        | '\u{17B4}' | '\u{17B5}'
        // Mongolian variation selectors and vowel separator: no glyph outside Mongolian shaping.
        | '\u{180B}'..='\u{180F}'
        // Zero-width space, non-joiner, joiner; left-to-right and right-to-left marks. ZWJ and ZWNJ
        // also join emoji and shape Persian or Indic text, which tool definitions rarely carry.
        | '\u{200B}'..='\u{200F}'
        // Bidi embeddings and overrides: reorder what a reader sees ("Trojan Source").
        | '\u{202A}'..='\u{202E}'
        // Word joiner, invisible math operators (U+2061–2064), U+2065 (reserved, ignorable), bidi
        // isolates (U+2066–2069) and the deprecated format controls (U+206A–206F).
        | '\u{2060}'..='\u{206F}'
        // Variation selectors: sixteen of them, with the supplement below, spell any byte
        // unseen after a visible character ("emoji smuggling"). See `hidden` for ⚠️.
        | '\u{FE00}'..='\u{FE0F}'
        // Byte order mark / zero-width no-break space.
        | '\u{FEFF}'
        // Reserved ignorables (U+FFF0–FFF8) and interlinear annotation controls (U+FFF9–FFFB),
        // whose annotation text renderers may drop.
        | '\u{FFF0}'..='\u{FFFB}'
        // Shorthand format controls.
        | '\u{1BCA0}'..='\u{1BCA3}'
        // Musical symbol format controls (beams, ties, slurs): no glyph of their own.
        | '\u{1D173}'..='\u{1D17A}'
        // Tags U+E0000–E007F spell ASCII unseen ("ASCII smuggling"), which models read; variation
        // selectors supplement U+E0100–E01EF; the rest of the block is reserved and ignorable.
        | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Is `c`, after `prev`, hidden? Every `is_invisible` character is, except one text or emoji
/// presentation selector (U+FE0E, U+FE0F) right after the character it presents, as in "⚠️" or
/// "1️⃣": that is how emoji are written, and it changes only how the character is drawn. A
/// selector after another invisible character, after an ASCII letter, or a second one in a row
/// is hidden: it carries data, not presentation.
fn hidden(prev: Option<char>, c: char) -> bool {
    is_invisible(c)
        && !(matches!(c, '\u{FE0E}' | '\u{FE0F}')
            && prev.is_some_and(|p| {
                !is_invisible(p)
                    && !p.is_whitespace()
                    && !p.is_control()
                    && (!p.is_ascii() || matches!(p, '0'..='9' | '#' | '*'))
            }))
}

/// Removes every such character from every string (object keys included) of `item`, in place;
/// returns how many were removed. "Such" is what `scan` reports as InvisibleUnicode: a
/// presentation selector that belongs to an emoji stays. A key that, cleaned, equals a key
/// already present is dropped with its value (the visible one wins).
pub fn strip_invisible(item: &mut Value) -> usize {
    match item {
        Value::String(s) => strip_str(s),
        Value::Array(items) => items.iter_mut().map(strip_invisible).sum(),
        Value::Object(map) => {
            let dirty: Vec<String> = map
                .keys()
                .filter(|k| first_hidden(k).is_some())
                .cloned()
                .collect();
            let mut removed = 0;
            for key in dirty {
                let Some(value) = map.remove(&key) else {
                    continue;
                };
                let mut clean = key;
                removed += strip_str(&mut clean);
                if !map.contains_key(&clean) {
                    map.insert(clean, value);
                }
            }
            removed + map.values_mut().map(strip_invisible).sum::<usize>()
        }
        _ => 0,
    }
}

fn strip_str(s: &mut String) -> usize {
    if first_hidden(s).is_none() {
        return 0;
    }
    let mut out = String::with_capacity(s.len());
    let mut removed = 0;
    let mut prev = None;
    for c in s.chars() {
        if hidden(prev, c) {
            removed += 1;
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
    *s = out;
    removed
}

/// The byte offset of the first hidden character.
fn first_hidden(text: &str) -> Option<usize> {
    if text.is_ascii() {
        return None;
    }
    let mut prev = None;
    for (at, c) in text.char_indices() {
        if hidden(prev, c) {
            return Some(at);
        }
        prev = Some(c);
    }
    None
}

struct Compiled {
    /// Every rule, for the one pass each text gets.
    set: RegexSet,
    /// Each rule alone, to quote what a matched rule matched (the first matched rule of a class,
    /// in table order, is the one quoted).
    each: Vec<Regex>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let patterns: Vec<String> = RULES
        .iter()
        .map(|r| r.pattern.replace(r"\b", r"(?-u:\b)"))
        .collect();
    let set = RegexSetBuilder::new(&patterns)
        .case_insensitive(true)
        .build()
        .expect("the built-in poisoning patterns compile");
    let each = patterns
        .iter()
        .map(|p| {
            RegexBuilder::new(p)
                .case_insensitive(true)
                .build()
                .expect("the built-in poisoning patterns compile")
        })
        .collect();
    Compiled { set, each }
});

/// One step of a path inside the definition.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// One scan's state: the names shadowing looks for, and what was found so far.
struct Scan<'n> {
    names: Names<'n>,
    found: BTreeMap<(Class, String), String>,
}

impl Scan<'_> {
    fn value<'v>(&mut self, v: &'v Value, path: &mut Vec<Step<'v>>) {
        match v {
            Value::String(s) => self.text(s, path, url_is_the_point(path), false),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    self.value(item, path);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    path.push(Step::Key(key));
                    if !unread_keys().any(|k| k == key) {
                        self.text(key, path, false, true);
                    }
                    self.value(item, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// Scans one string; `key`: an object key, whose `_` reads as a space ("ssh_private_key").
    fn text(&mut self, text: &str, path: &[Step<'_>], url_ok: bool, key: bool) {
        let mut field = None;
        if let Some(at) = first_hidden(text) {
            let start = text[..at]
                .char_indices()
                .rev()
                .nth(15)
                .map_or(0, |(i, _)| i);
            self.add(Class::InvisibleUnicode, &mut field, path, || {
                excerpt(&text[start..])
            });
        }
        let clean = clean(text);
        if key && clean.contains('_') {
            self.phrases(&clean.replace('_', " "), &mut field, path, url_ok);
        } else {
            self.phrases(&clean, &mut field, path, url_ok);
        }
        if let Some(smuggled) = smuggled(text) {
            self.phrases(&clean_ws(&smuggled), &mut field, path, url_ok);
        }
        if !self.names.others.is_empty()
            && let Some(name) = mentioned(&clean, &self.names)
        {
            self.add(Class::Shadowing, &mut field, path, || excerpt(name));
        }
    }

    fn phrases(
        &mut self,
        clean: &str,
        field: &mut Option<String>,
        path: &[Step<'_>],
        url_ok: bool,
    ) {
        let compiled = &*COMPILED;
        for i in compiled.set.matches(clean).iter() {
            let rule = &RULES[i];
            if rule.url && url_ok {
                continue;
            }
            self.add(rule.class, field, path, || {
                compiled.each[i]
                    .find(clean)
                    .map_or_else(String::new, |m| excerpt(m.as_str().trim_start()))
            });
        }
    }

    /// Records a finding unless this (class, field) has one; the field is written once per text,
    /// and only when something is found.
    fn add(
        &mut self,
        class: Class,
        field: &mut Option<String>,
        path: &[Step<'_>],
        quote: impl FnOnce() -> String,
    ) {
        let field = field.get_or_insert_with(|| render(path));
        self.found
            .entry((class, field.clone()))
            .or_insert_with(quote);
    }
}

/// Keys no rule can match (a test checks), so they are not read, which halves the texts of a
/// typical definition: the members of MCP's definitions (as `fingerprint` lists them), and these
/// of JSON Schema and of MCP's nested objects.
const KEYWORDS: &[&str] = &[
    "required",
    "type",
    "properties",
    "items",
    "enum",
    "default",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "additionalProperties",
    "$schema",
    "$id",
    "$ref",
    "$defs",
    "anyOf",
    "oneOf",
    "allOf",
    "const",
    "examples",
    "pattern",
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "nullable",
    "icons",
    "src",
    "_meta",
    "audience",
    "priority",
];

fn unread_keys() -> impl Iterator<Item = &'static str> {
    Kind::ALL
        .into_iter()
        .flat_map(|kind| kind.fields().iter().copied())
        .chain(KEYWORDS.iter().copied())
}

/// Values where a URL is what the field is for, not a message: JSON Schema's `$schema`, `$id`,
/// `$ref` and `$dynamicRef` (schema tooling writes them), a resource's own `uri` or
/// `uriTemplate`, and an icon's `src`. The other rules still read them.
fn url_is_the_point(path: &[Step<'_>]) -> bool {
    match path {
        [Step::Key("uri" | "uriTemplate")]
        | [Step::Key("icons"), Step::Index(_), Step::Key("src")] => true,
        [.., Step::Key(key)] => matches!(*key, "$schema" | "$id" | "$ref" | "$dynamicRef"),
        _ => false,
    }
}

fn render(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for (i, step) in path.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match step {
            Step::Key(key) => {
                let cut: String = key.chars().take(65).collect();
                if cut.chars().count() > 64 {
                    let short: String = cut.chars().take(63).collect();
                    escape_into(&mut out, &short);
                    out.push('…');
                } else {
                    escape_into(&mut out, &cut);
                }
            }
            Step::Index(n) => {
                let _ = write!(out, "{n}");
            }
        }
    }
    out
}

/// The text the phrase rules read: invisible characters removed, each run of whitespace one
/// space, no space at either end. Most texts need none of it.
fn clean(text: &str) -> Cow<'_, str> {
    let plain = text
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_whitespace() || b == b' ')
        && !text.contains("  ")
        && !text.starts_with(' ')
        && !text.ends_with(' ');
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(clean_ws(text))
    }
}

fn clean_ws(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// What tag characters spell: each of U+E0020–E007E is an ASCII character a model reads and a
/// reviewer does not see, so the phrase rules read the message too.
fn smuggled(text: &str) -> Option<String> {
    if text.is_ascii() {
        return None;
    }
    let message: String = text
        .chars()
        .filter_map(|c| match c as u32 {
            tag @ 0xE0020..=0xE007E => char::from_u32(tag - 0xE0000),
            _ => None,
        })
        .collect();
    (!message.is_empty()).then_some(message)
}

/// Characters a tool name may hold, as far as mentions go: MCP's name alphabet, plus `/` so
/// "tools/send_email" splits into words.
fn name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

/// The other names of the server. Held as given: a set built per scan cost more than the few
/// lookups, which only words that could be a name (see `could_name`) get.
struct Names<'n> {
    others: &'n [&'n str],
    own: Option<&'n str>,
}

impl Names<'_> {
    fn contains(&self, word: &str) -> bool {
        could_name(word)
            && Some(word) != self.own
            && self.others.contains(&word)
            && names_a_tool(word)
    }
}

/// A cheap superset of `names_a_tool` on bytes: most words of prose fail it.
fn could_name(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 8
        || (b.len() >= 4
            && (b
                .iter()
                .any(|c| matches!(c, b'_' | b'-' | b'.' | b'0'..=b'9') || !c.is_ascii())
                || b.windows(2)
                    .any(|w| w[0].is_ascii_lowercase() && w[1].is_ascii_uppercase())))
}

/// Is a mention of this name a reference to the tool, not an English word? At least 4 chars
/// and either marked as an identifier (`_`, `-`, `.`, a digit, camelCase) or at least 8 chars.
fn names_a_tool(name: &str) -> bool {
    let chars = name.chars().count();
    let marked = name.contains(['_', '-', '.'])
        || name.chars().any(|c| c.is_ascii_digit())
        || is_camel(name);
    chars >= 4 && name.chars().all(name_char) && (marked || chars >= 8)
}

fn is_camel(name: &str) -> bool {
    name.chars()
        .zip(name.chars().skip(1))
        .any(|(a, b)| a.is_lowercase() && b.is_uppercase())
}

/// The first whole-word, case-sensitive mention of one of `names`. Words are runs of name
/// characters without `.`, `-` or `/` at either end (a sentence's full stop); a word holding `.`
/// or `/` is also tried part by part ("github.create_issue" mentions "create_issue"). A lookup
/// per word, not a regex: the names change with every call.
fn mentioned<'t>(text: &'t str, names: &Names<'_>) -> Option<&'t str> {
    // Split on ASCII first (bytes, cheap); a run holding non-ASCII is split again by chars.
    for run in text.split(|c: char| c.is_ascii() && !name_char(c)) {
        let found = if run.is_ascii() {
            mentioned_in(run, names)
        } else {
            run.split(|c: char| !name_char(c))
                .find_map(|word| mentioned_in(word, names))
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn mentioned_in<'t>(word: &'t str, names: &Names<'_>) -> Option<&'t str> {
    let word = word.trim_matches(['.', '-', '/']);
    if word.is_empty() {
        return None;
    }
    if names.contains(word) {
        return Some(word);
    }
    if word.contains(['.', '/']) {
        return word.split(['.', '/']).find(|part| names.contains(part));
    }
    None
}

const EXCERPT: usize = 80;

/// At most 80 chars of `text`, invisible characters, controls and whitespace other than a space
/// written as <U+XXXX> (never cut in half), "…" where it was cut.
fn excerpt(text: &str) -> String {
    let mut out = String::new();
    // Char count of `out`, and the byte length of `out` at the last point where "…" still fits.
    let mut chars = 0;
    let mut fits = 0;
    let mut piece = String::new();
    for c in text.chars() {
        piece.clear();
        escape_char(&mut piece, c);
        let n = piece.chars().count();
        if chars + n > EXCERPT {
            out.truncate(fits);
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        chars += n;
        if chars < EXCERPT {
            fits = out.len();
        }
    }
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        escape_char(out, c);
    }
}

fn escape_char(out: &mut String, c: char) {
    if is_invisible(c) || c.is_control() || (c.is_whitespace() && c != ' ') {
        let _ = write!(out, "<U+{:04X}>", c as u32);
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests;
