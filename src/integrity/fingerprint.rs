//! What a server says a tool, prompt or resource template is, reduced to the fields that carry
//! meaning, written in one canonical form and hashed: the same definition always gives the same
//! fingerprint, whatever the key order or whitespace; any change of meaning gives another.

use serde_json::{Map, Value};

/// The kinds of definition a server lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Tool,
    Prompt,
    /// A concrete resource: scanned, never pinned (resource lists change with the data).
    Resource,
    Template,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tool, Kind::Prompt, Kind::Resource, Kind::Template];
    /// The kinds a pin holds.
    pub const PINNED: [Kind; 3] = [Kind::Tool, Kind::Prompt, Kind::Template];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
            Kind::Template => "resource_template",
        }
    }

    /// The section of a pins file that holds this kind.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Tool => "tools",
            Kind::Prompt => "prompts",
            Kind::Resource => "resources",
            Kind::Template => "resource_templates",
        }
    }

    /// The member that names an item.
    pub fn name_field(self) -> &'static str {
        match self {
            Kind::Tool | Kind::Prompt => "name",
            Kind::Resource => "uri",
            Kind::Template => "uriTemplate",
        }
    }

    /// The members whose change changes what the definition means to a model or a user.
    /// Anything else (icons, `_meta`, fields a later revision adds) is left out, so a server
    /// upgrade that only adds presentation does not read as a rug pull.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Tool => crate::mcp::TOOL_MEMBERS,
            Kind::Prompt => crate::mcp::PROMPT_MEMBERS,
            Kind::Resource => crate::mcp::RESOURCE_MEMBERS,
            Kind::Template => crate::mcp::TEMPLATE_MEMBERS,
        }
    }
}

/// One definition as fingerprinted.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub kind: Kind,
    pub name: String,
    /// The meaningful members (a `null` one counts as absent).
    pub fields: Map<String, Value>,
    /// `sha256:` and the hex SHA-256 of the canonical form of `fields`.
    pub fingerprint: String,
}

impl Definition {
    /// The definition of a listed item; `None` when it has no name (it cannot be pinned, and
    /// the policy filter hides it anyway).
    pub fn of(kind: Kind, item: &Value) -> Option<Self> {
        let obj = item.as_object()?;
        let name = obj.get(kind.name_field())?.as_str()?.to_string();
        let fields: Map<String, Value> = kind
            .fields()
            .iter()
            .filter_map(|f| match obj.get(*f) {
                None | Some(Value::Null) => None,
                Some(v) => Some((f.to_string(), v.clone())),
            })
            .collect();
        let fingerprint = fingerprint(&fields);
        Some(Self {
            kind,
            name,
            fields,
            fingerprint,
        })
    }

    /// `item` lists this very definition: its meaningful members are equal (a cheap test,
    /// without copying or hashing, for a definition listed again unchanged).
    pub fn same(&self, item: &Value) -> bool {
        let Some(obj) = item.as_object() else {
            return false;
        };
        self.kind.fields().iter().all(|f| {
            let theirs = obj.get(*f).filter(|v| !v.is_null());
            theirs == self.fields.get(*f)
        })
    }

    /// The members of `self` and `other` that differ, in the kind's order.
    pub fn changed(&self, other: &Map<String, Value>) -> Vec<&'static str> {
        self.kind
            .fields()
            .iter()
            .copied()
            .filter(|f| {
                let canon = |m: &Map<String, Value>| m.get(*f).map(canonical);
                canon(&self.fields) != canon(other)
            })
            .collect()
    }
}

/// `sha256:<hex>` of the canonical form of a definition's meaningful members.
pub fn fingerprint(fields: &Map<String, Value>) -> String {
    let mut text = String::new();
    write_object(fields, &mut text);
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The canonical form of a JSON value: object members sorted by key (by UTF-16 code units,
/// as RFC 8785 does, though bytewise and UTF-16 order differ only beyond the BMP), no
/// whitespace, strings and numbers as serde_json writes them.
pub fn canonical(v: &Value) -> String {
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => write_object(m, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_object(m: &Map<String, Value>, out: &mut String) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write(&m[k], out);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn print(v: Value) -> String {
        Definition::of(Kind::Tool, &v).unwrap().fingerprint
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{"name":"echo","description":"Echoes","inputSchema":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            "{ \"inputSchema\" : { \"properties\" : { \"b\" : {\"type\":\"integer\"}, \"a\":{\"type\":\"string\"} },\n \"type\":\"object\" },\n \"description\":\"Echoes\", \"name\":\"echo\" }",
        )
        .unwrap();
        assert_eq!(print(a.clone()), print(b));
        // Escapes are read, not compared as written.
        let c: Value = serde_json::from_str(
            r#"{"name":"echo","description":"Ech\u006fes","inputSchema":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"integer"}}}}"#,
        )
        .unwrap();
        assert_eq!(print(a), print(c));
    }

    #[test]
    fn every_change_of_meaning_changes_the_fingerprint() {
        let base = json!({"name": "echo", "title": "Echo", "description": "Echoes",
            "inputSchema": {"type": "object", "required": ["a", "b"]},
            "outputSchema": {"type": "object"},
            "annotations": {"readOnlyHint": true}});
        let p = print(base.clone());
        for (field, value) in [
            ("name", json!("echo2")),
            ("title", json!("Echo!")),
            ("description", json!("Echoes ")),
            (
                "inputSchema",
                json!({"type": "object", "required": ["b", "a"]}),
            ),
            ("outputSchema", json!({"type": "string"})),
            ("annotations", json!({"readOnlyHint": false})),
        ] {
            let mut changed = base.clone();
            changed[field] = value;
            assert_ne!(print(changed.clone()), p, "{field}");
            let def = Definition::of(Kind::Tool, &changed).unwrap();
            let orig = Definition::of(Kind::Tool, &base).unwrap();
            assert_eq!(def.changed(&orig.fields), vec![field]);
        }
        // Leaving a member out changes it too; null is the same as absent.
        let mut without = base.clone();
        without.as_object_mut().unwrap().remove("annotations");
        assert_ne!(print(without.clone()), p);
        let mut null = base.clone();
        null["annotations"] = Value::Null;
        assert_eq!(print(null), print(without.clone()));
        // A definition listed again unchanged is recognised without hashing; any change is not.
        let orig = Definition::of(Kind::Tool, &base).unwrap();
        assert!(orig.same(&base));
        let mut reordered = serde_json::Map::new();
        for (k, v) in base.as_object().unwrap().iter().rev() {
            reordered.insert(k.clone(), v.clone());
        }
        assert!(orig.same(&Value::Object(reordered)));
        assert!(!orig.same(&without));
        // Members without meaning are left out.
        let mut icons = base.clone();
        icons["icons"] = json!([{"src": "https://x/icon.png"}]);
        icons["_meta"] = json!({"x": 1});
        assert_eq!(print(icons), p);
    }

    #[test]
    fn the_canonical_form_is_stable() {
        let v = json!({"b": [1, 2.5, "x\"y", null, true], "a": {"d": {}, "c": []}, "é": 1, "z": 1});
        assert_eq!(
            canonical(&v),
            r#"{"a":{"c":[],"d":{}},"b":[1,2.5,"x\"y",null,true],"z":1,"é":1}"#
        );
        // Pinned: a change here changes every pin ever written.
        assert_eq!(
            print(json!({"name": "echo", "description": "Echoes"})),
            format!(
                "sha256:{}",
                ring::digest::digest(
                    &ring::digest::SHA256,
                    br#"{"description":"Echoes","name":"echo"}"#
                )
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
            )
        );
        assert!(Definition::of(Kind::Tool, &json!({"description": "no name"})).is_none());
        assert_eq!(
            Definition::of(Kind::Template, &json!({"uriTemplate": "file:///{p}"}))
                .unwrap()
                .name,
            "file:///{p}"
        );
    }
}
