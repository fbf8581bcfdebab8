//! What a reader knows, learnt by watching it read. Readers ask for every key they know whether
//! or not it is written, so a [`Reader`](super::Reader) in survey mode that reads a reference
//! document holding every section and one item of each kind records every key, the lists and the
//! data-keyed maps; trying each field's parser on other forms of the reference value tells the
//! forms it takes. From that, a JSON Schema that rejects every key the reader would reject.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value as Json, json};
use serde_yaml_ng::{Mapping, Value};

use super::parse::{parse_byte_size, parse_duration};

/// How a reader asked for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Reader::field`: a value its parser converts.
    Field,
    /// `Reader::child`: a nested section.
    Child,
    /// `Reader::list`: a list whose items are read as sections.
    List,
}

/// What a survey knows of one section (by normalised path: `audit.sinks[]`, `audit.redact.tools.*`).
#[derive(Debug, Default)]
struct Node {
    keys: BTreeMap<&'static str, Key>,
    /// Its keys are data (names), read with `Reader::entries`.
    data_keyed: bool,
    /// Those names, as written.
    names: BTreeSet<String>,
}

#[derive(Debug)]
struct Key {
    kind: Kind,
    /// A value was written in the surveyed document(s).
    seen: bool,
    /// The forms the field's parser took (fields only).
    shape: Shape,
}

/// The forms a value takes, as JSON Schema keywords.
#[derive(Debug, Default, Clone, PartialEq)]
struct Shape {
    types: BTreeSet<&'static str>,
    /// The words of a `Reader::choice`.
    choices: BTreeSet<&'static str>,
    pattern: Option<&'static str>,
    items: Option<Box<Shape>>,
    values: Option<Box<Shape>>,
}

/// `parse_duration`'s forms (it trims the text).
pub const DURATION_PATTERN: &str = r"^\s*[0-9]+(ms|s|m|h)\s*$";
/// `parse_byte_size`'s forms as a string.
pub const SIZE_PATTERN: &str = r"^\s*[0-9]+\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\s*$";

/// How deep [`shape`] looks into lists and mappings: a value taken as written (such as
/// `equals`) would take lists of lists for ever.
const MAX_DEPTH: u8 = 2;

/// A string no duration, size, URL or address parser takes, but a free-text field does.
const NOT_A_QUANTITY: &str = "parsec";

/// Every key a reader asked for while surveying, with the forms its values take.
#[derive(Debug, Default)]
pub struct Survey {
    nodes: BTreeMap<String, Node>,
}

impl Survey {
    /// `path` with list indexes as `[]` and the names under a data-keyed section as `*`.
    fn normal(&self, path: &str) -> String {
        let mut out = String::with_capacity(path.len());
        let mut chars = path.chars().peekable();
        while let Some(c) = chars.next() {
            out.push(c);
            if c == '[' {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
        }
        // Names may hold dots: matched against the names the section was read with.
        for (p, node) in &self.nodes {
            for name in &node.names {
                let entry = join(p, name);
                if let Some(rest) = out.strip_prefix(&entry)
                    && (rest.is_empty() || rest.starts_with(['.', '[']))
                {
                    return format!("{}{rest}", join(p, "*"));
                }
            }
        }
        out
    }

    fn node(&mut self, path: &str) -> &mut Node {
        let path = self.normal(path);
        self.nodes.entry(path).or_default()
    }

    /// A section was opened at `path`.
    pub fn section(&mut self, path: &str) {
        self.node(path);
    }

    /// The section at `path` is read as data: its keys are names.
    pub fn data_keyed(&mut self, path: &str, entries: Option<&Mapping>) {
        let node = self.node(path);
        node.data_keyed = true;
        let names = entries
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.as_str());
        node.names.extend(names.map(str::to_string));
    }

    /// `key` of the section at `path` was asked for; `value` as written (`None`: absent),
    /// `accepts` tells whether the reader takes a value.
    pub fn key(
        &mut self,
        path: &str,
        key: &'static str,
        kind: Kind,
        value: Option<&Value>,
        accepts: impl Fn(&Value) -> bool,
    ) {
        let shape = match (kind, value) {
            (Kind::Field, Some(v)) => shape(v, &accepts, 0),
            _ => Shape::default(),
        };
        let node = self.node(path);
        let k = node.keys.entry(key).or_insert(Key {
            kind,
            seen: false,
            shape: Shape::default(),
        });
        k.seen |= value.is_some();
        k.shape.merge(shape);
    }

    /// `key` of the section at `path` is one of `words` (`Reader::choice`).
    pub fn choices(&mut self, path: &str, key: &'static str, words: &[&'static str]) {
        if let Some(k) = self.node(path).keys.get_mut(key) {
            k.shape.choices.extend(words);
        }
    }

    /// Keys the reader knows that no surveyed document wrote, lists none of which had an item,
    /// and data-keyed sections with no entry: what a reference document is missing.
    pub fn missing(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, node) in &self.nodes {
            if node.data_keyed && self.value_at(&join(path, "*")).is_none() {
                out.push(join(path, "*"));
            }
            for (key, k) in &node.keys {
                let at = join(path, key);
                if !k.seen {
                    out.push(at);
                } else if k.kind == Kind::List && !self.nodes.contains_key(&format!("{at}[]")) {
                    out.push(format!("{at}[]"));
                }
            }
        }
        out
    }

    /// Every key path the survey recorded (`upstream.timeout`, `audit.sinks[].type`).
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, node) in &self.nodes {
            out.extend(node.keys.keys().map(|k| join(path, k)));
        }
        out
    }

    /// The JSON Schema of the section at `path` ("" for the document), every object closed to
    /// the keys the reader knows, minus `omit` (key paths such as `upstream.url`).
    pub fn schema(&self, path: &str, omit: &[&str]) -> Json {
        let Some(node) = self.nodes.get(path) else {
            return json!({});
        };
        if node.data_keyed {
            let values = self.value_at(&join(path, "*")).unwrap_or(json!({}));
            return json!({"type": "object", "additionalProperties": values});
        }
        let mut properties = Map::new();
        for (key, k) in &node.keys {
            let at = join(path, key);
            if omit.contains(&at.as_str()) {
                continue;
            }
            let schema = match k.kind {
                Kind::Child => self.schema(&at, omit),
                Kind::List => self.list(&at, omit).unwrap_or(json!({"type": "array"})),
                Kind::Field => self.list(&at, omit).unwrap_or_else(|| k.shape.to_schema()),
            };
            properties.insert(key.to_string(), schema);
        }
        json!({"type": "object", "additionalProperties": false, "properties": properties})
    }

    /// A list of sections at `at[]`, when the reader read one.
    fn list(&self, at: &str, omit: &[&str]) -> Option<Json> {
        let items = format!("{at}[]");
        self.nodes
            .contains_key(&items)
            .then(|| json!({"type": "array", "items": self.schema(&items, omit)}))
    }

    /// The schema of a value at `at`: a section, or a list of sections.
    fn value_at(&self, at: &str) -> Option<Json> {
        if self.nodes.contains_key(at) {
            return Some(self.schema(at, &[]));
        }
        self.list(at, &[])
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Shape {
    fn merge(&mut self, other: Shape) {
        self.choices.extend(other.choices.iter());
        if self.types.is_empty() {
            let choices = std::mem::take(&mut self.choices);
            *self = other;
            self.choices = choices;
            return;
        }
        if other.types.is_empty() {
            return;
        }
        self.types.extend(other.types);
        if self.pattern != other.pattern {
            self.pattern = None;
        }
        for (mine, theirs) in [
            (&mut self.items, other.items),
            (&mut self.values, other.values),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(m), Some(t)) => m.merge(*t),
                (None, Some(t)) => *mine = Some(t),
                _ => {}
            }
        }
    }

    fn to_schema(&self) -> Json {
        let mut out = Map::new();
        // Every type: no constraint (a value taken as written, such as `equals`).
        if self.types.len() == 5 {
            return Json::Object(out);
        }
        {
            let types: Vec<&str> = self.types.iter().copied().collect();
            out.insert(
                "type".into(),
                match types.as_slice() {
                    [one] => json!(one),
                    _ => json!(types),
                },
            );
        }
        if !self.choices.is_empty() {
            out.insert("enum".into(), json!(self.choices));
        }
        if let Some(p) = self.pattern {
            out.insert("pattern".into(), json!(p));
        }
        if let Some(items) = &self.items {
            out.insert("items".into(), items.to_schema());
        }
        if let Some(values) = &self.values {
            out.insert("additionalProperties".into(), values.to_schema());
        }
        Json::Object(out)
    }
}

/// The forms `accepts` takes, tried on `v` (taken) and on `v` written as each other JSON type;
/// the items of lists and values of mappings the same way, `depth` levels down at the most.
fn shape(v: &Value, accepts: &dyn Fn(&Value) -> bool, depth: u8) -> Shape {
    let mut s = Shape::default();
    let as_string = match v {
        Value::String(t) => Some(t.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Sequence(items) => items.first().and_then(|i| i.as_str()).map(str::to_string),
        _ => None,
    };
    let as_integer = match v {
        Value::Number(n) if n.is_u64() || n.is_i64() => v.clone(),
        Value::String(t) => parse_byte_size(t).ok().map_or(Value::from(1), Value::from),
        _ => Value::from(1),
    };
    let as_array = match v {
        Value::Sequence(_) => v.clone(),
        other => Value::Sequence(vec![other.clone()]),
    };
    let as_object = match v {
        Value::Mapping(_) => v.clone(),
        _ => Value::Mapping(Mapping::new()),
    };
    if let Some(t) = &as_string
        && accepts(&Value::String(t.clone()))
    {
        s.types.insert("string");
        let free_text = accepts(&Value::String(NOT_A_QUANTITY.into()));
        if !free_text && parse_duration(t).is_ok() {
            s.pattern = Some(DURATION_PATTERN);
        } else if !free_text && parse_byte_size(t).is_ok() {
            s.pattern = Some(SIZE_PATTERN);
        }
    }
    if accepts(&as_integer) {
        let fraction = accepts(&Value::from(0.5));
        s.types.insert(if fraction { "number" } else { "integer" });
    }
    if accepts(&Value::Bool(true)) {
        s.types.insert("boolean");
    }
    if accepts(&as_array) {
        s.types.insert("array");
        if let Value::Sequence(items) = &as_array
            && let Some(first) = items.first()
            && depth < MAX_DEPTH
        {
            let one = |i: &Value| accepts(&Value::Sequence(vec![i.clone()]));
            let item = shape(first, &one, depth + 1);
            s.items = Some(Box::new(item));
        }
    }
    if accepts(&as_object) {
        s.types.insert("object");
        if let Value::Mapping(m) = &as_object
            && let Some((k, first)) = m.iter().next()
            && depth < MAX_DEPTH
        {
            let one = |x: &Value| {
                let mut one = Mapping::new();
                one.insert(k.clone(), x.clone());
                accepts(&Value::Mapping(one))
            };
            let value = shape(first, &one, depth + 1);
            s.values = Some(Box::new(value));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Reader, Section, parse};

    /// Reads `text` as a tiny config of `a` (a duration), `b` (strings) and `c.d` (a size).
    fn survey(text: &str, read: fn(&mut Reader, &mut Section<'_>)) -> Survey {
        let doc: Value = serde_yaml_ng::from_str(text).unwrap();
        let mut r = Reader::surveying("t", Survey::default());
        let mut top = r.section("", Some(&doc));
        read(&mut r, &mut top);
        r.close(top);
        let (survey, errors) = r.into_survey();
        assert_eq!(errors, []);
        survey.unwrap()
    }

    fn tiny(r: &mut Reader, top: &mut Section<'_>) {
        r.field(top, "a", parse::duration);
        r.field(top, "b", parse::strings);
        r.choice(top, "g", &[("on", true), ("off", false)]);
        let mut c = r.child(top, "c");
        r.field(&mut c, "d", parse::byte_size);
        r.close(c);
        for (i, item) in r.list(top, "e", "items").iter().enumerate() {
            let mut s = r.section(&format!("e[{i}]"), Some(item));
            r.field(&mut s, "f", parse::boolean);
            r.close(s);
        }
    }

    #[test]
    fn schema_from_what_the_reader_took() {
        let s = survey(
            "a: 30s\nb: [x]\nc: {d: 4MiB}\ne: [{f: true}]\ng: off\n",
            tiny,
        );
        assert_eq!(s.missing(), Vec::<String>::new());
        assert_eq!(s.paths(), ["a", "b", "c", "e", "g", "c.d", "e[].f"]);
        assert_eq!(
            s.schema("", &[]),
            json!({
                "type": "object", "additionalProperties": false, "properties": {
                    "a": {"type": "string", "pattern": DURATION_PATTERN},
                    "b": {"type": ["array", "string"], "items": {"type": "string"}},
                    "c": {"type": "object", "additionalProperties": false, "properties": {
                        "d": {"type": ["integer", "string"], "pattern": SIZE_PATTERN}
                    }},
                    "e": {"type": "array", "items": {
                        "type": "object", "additionalProperties": false, "properties": {
                            "f": {"type": "boolean"}
                        }
                    }},
                    "g": {"type": "string", "enum": ["off", "on"]}
                }
            })
        );
        assert_eq!(
            s.schema("", &["c.d", "a"])["properties"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["b", "c", "e", "g"]
        );
    }

    /// A key the reader asks for that the reference leaves out, or a list left empty, is what
    /// the coverage check reports: a reader key added without a reference value fails it.
    #[test]
    fn a_key_without_a_reference_value_is_missing() {
        let s = survey("a: 30s\nc: {}\ne: []\ng: on\n", tiny);
        assert_eq!(s.missing(), ["b", "e[]", "c.d"]);
    }

    #[test]
    fn data_keyed_sections_take_any_name() {
        fn read(r: &mut Reader, top: &mut Section<'_>) {
            let tools = r.child(top, "tools");
            for (name, value) in r.entries(&tools).into_iter().flatten() {
                let path = format!("tools.{}", name.as_str().unwrap());
                let mut s = r.section(&path, Some(value));
                r.field(&mut s, "n", |v| {
                    v.as_u64().ok_or_else(|| "a whole number".to_string())
                });
                r.close(s);
            }
        }
        let s = survey("tools: {x.y: {n: 1}}\n", read);
        assert_eq!(s.missing(), Vec::<String>::new());
        assert_eq!(
            s.schema("tools", &[]),
            json!({"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": false, "properties": {
                    "n": {"type": "integer"}
                }
            }})
        );
        let empty = survey("tools: {}\n", read);
        assert_eq!(empty.missing(), ["tools.*"]);
    }
}
