//! `mcp-sentinel explain --definition FILE | --result FILE`: what the config's `integrity`
//! section makes of definitions as a server lists them, or of a result, line by line.

use std::path::Path;

use serde_json::Value;

use crate::config::Config;
use crate::integrity::Integrity;
use crate::integrity::fingerprint::Kind;

/// The list arrays of a result, and the kind of their items.
const LISTS: [(&str, Kind); 4] = [
    ("tools", Kind::Tool),
    ("prompts", Kind::Prompt),
    ("resourceTemplates", Kind::Template),
    ("resources", Kind::Resource),
];

/// The lines `explain` prints; `Err` when the file cannot be read or integrity is off.
pub fn explain_integrity(cfg: &Config, path: &Path, result: bool) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let registry = prometheus::Registry::new();
    let integrity = Integrity::new(&cfg.integrity, &registry)?
        .ok_or_else(|| format!("{}: no integrity section", cfg.source))?;
    if result {
        return Ok(explain_result(&integrity, &value, &text));
    }
    // A whole answer, its result, or one tool.
    let list = value.get("result").unwrap_or(&value);
    let mut items: Vec<(Kind, &Value)> = LISTS
        .iter()
        .filter_map(|(key, kind)| list.get(*key).and_then(Value::as_array).map(|a| (*kind, a)))
        .flat_map(|(kind, a)| a.iter().map(move |i| (kind, i)))
        .collect();
    if items.is_empty() {
        items.push((Kind::Tool, &value));
    }
    let mut lines = Vec::new();
    for (kind, item) in &items {
        let name_field = kind.name_field();
        let names: Vec<&str> = items
            .iter()
            .filter(|(k, _)| k == kind)
            .filter_map(|(_, i)| i.get(name_field).and_then(Value::as_str))
            .collect();
        let key = crate::integrity::state::names_key(&names);
        let Some(j) = integrity.judge(*kind, item, &names, key, false) else {
            lines.push(format!(
                "{}: (no {name_field}: hidden from every list)",
                kind.as_str()
            ));
            continue;
        };
        lines.push(format!("{}: {}", kind.as_str(), j.def.name));
        lines.push(format!("  fingerprint: {}", j.def.fingerprint));
        match &j.pin {
            None => lines.push("  pin: (not checked)".to_string()),
            Some(p) => match &p.finding {
                Some((finding, action, detail)) if !detail.is_empty() => lines.push(format!(
                    "  pin: {finding} in {detail} -> {}",
                    action.as_str()
                )),
                Some((finding, action, _)) => {
                    lines.push(format!("  pin: {finding} -> {}", action.as_str()))
                }
                None if p.label == "learned" => {
                    lines.push("  pin: none yet (learned on first sight)".to_string())
                }
                None => lines.push(format!("  pin: {}", p.label)),
            },
        }
        for (f, action) in &j.findings {
            lines.push(format!(
                "  finding: {} at {}: {} -> {}",
                f.class.as_str(),
                f.field,
                f.excerpt,
                action.as_str()
            ));
        }
        let decision = match (&j.block, j.strip) {
            (Some(b), _) => format!("block ({})", b.finding),
            (None, true) => "pass, invisible characters stripped".to_string(),
            (None, false) if j.findings.is_empty() => "pass".to_string(),
            (None, false) => "pass, flagged".to_string(),
        };
        lines.push(format!("  decision: {decision}"));
    }
    Ok(lines)
}

fn explain_result(integrity: &Integrity, value: &Value, text: &str) -> Vec<String> {
    // A bare result is scanned as the answer that would carry it.
    let message = if value.get("result").is_some() || value.get("error").is_some() {
        text.to_string()
    } else {
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": value}).to_string()
    };
    let mut notes = Vec::new();
    let replaced = integrity.scan_result(message.as_bytes(), &mut notes);
    let mut lines: Vec<String> = notes
        .iter()
        .map(|n| format!("{}: {} -> {}", n.finding, n.detail, n.action))
        .collect();
    if lines.is_empty() {
        lines.push("secrets: none found".to_string());
    }
    match replaced {
        None => lines.push("decision: pass unchanged".to_string()),
        Some(new) => {
            lines.push("decision: the client receives".to_string());
            lines.push(format!("  {}", String::from_utf8_lossy(&new)));
        }
    }
    lines
}
