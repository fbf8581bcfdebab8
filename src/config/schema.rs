//! The config file's JSON Schema, generated from the config reader itself: [`Config::read`]
//! surveys the reference document (reference.yaml, every key with an example), so the schema
//! knows exactly the keys the reader knows. The Helm chart's schema for `sidecar.config` is
//! this one (scripts/schema-generate.sh); a test fails when the two differ.

use serde_json::{Value as Json, json};

use super::Config;
use super::audit::SINK_TYPES;
use crate::yaml::survey::Survey;

/// Every key of the config with an example value.
pub const REFERENCE: &str = include_str!("reference.yaml");
/// The reference as errors name it.
pub const REFERENCE_NAME: &str = "src/config/reference.yaml";

/// Keys the chart's sidecar sets from its spec (files/sidecar.yaml: the environment of `run`),
/// which win over the file: left out of the chart's schema, so values cannot set them in vain.
pub const SET_BY_SIDECAR: [&str; 4] =
    ["listen", "admin_listen", "upstream.url", "upstream.command"];

/// Surveys the reference; the problems when it does not read cleanly or leaves a key out.
pub fn survey() -> Result<Survey, Vec<String>> {
    let (survey, errors) =
        crate::yaml::survey_documents(REFERENCE, REFERENCE_NAME, |r, top, doc| {
            let _ = Config::read(r, top, doc);
        })
        .map_err(|e| vec![e.to_string()])?;
    let mut problems: Vec<String> = errors
        .iter()
        // The policy and pins files the second document names exist in a pod only.
        .filter(|e| e.file == REFERENCE_NAME)
        .filter(|e| !(e.key == "integrity.pins_file" && e.why.contains(": cannot read: ")))
        .map(ToString::to_string)
        .collect();
    problems.extend(
        survey
            .missing()
            .into_iter()
            .map(|k| format!("{REFERENCE_NAME}: shows no {k}")),
    );
    let sinks = sink_types_shown();
    for t in SINK_TYPES {
        if !sinks.contains(&t.to_string()) {
            problems.push(format!("{REFERENCE_NAME}: shows no audit sink of type {t}"));
        }
    }
    if problems.is_empty() {
        Ok(survey)
    } else {
        Err(problems)
    }
}

/// The `type` of every audit sink the reference shows.
fn sink_types_shown() -> Vec<String> {
    let docs = serde_yaml_ng::Deserializer::from_str(REFERENCE);
    let mut out = Vec::new();
    for doc in docs {
        let doc: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap_or_default();
        let sinks = doc["audit"]["sinks"].as_sequence().cloned();
        for sink in sinks.unwrap_or_default() {
            out.extend(sink["type"].as_str().map(str::to_string));
        }
    }
    out
}

/// The JSON Schema of a config file.
pub fn config_schema() -> Result<Json, Vec<String>> {
    let mut schema = survey()?.schema("", &[]);
    schema["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    schema["title"] = json!("mcp-sentinel config");
    Ok(schema)
}

/// The JSON Schema of the chart's `sidecar.config`: the config file's, less [`SET_BY_SIDECAR`].
pub fn sidecar_schema() -> Result<Json, Vec<String>> {
    let mut schema = survey()?.schema("", &SET_BY_SIDECAR);
    schema["description"] = json!(
        "The sentinel's config.yaml. Generated from the sentinel's config reader by \
         scripts/schema-generate.sh (make schema): do not edit. The listen addresses and the \
         upstream are set by the sidecar spec."
    );
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference reads cleanly (but for the policy and pins files it names, which exist in
    /// a pod only) and shows every key the reader asks for.
    #[test]
    fn the_reference_shows_every_key() {
        if let Err(problems) = survey() {
            panic!("{}", problems.join("\n"));
        }
        let docs: Vec<&str> = REFERENCE.split("\n---\n").collect();
        assert_eq!(docs.len(), 2);
        let first = Config::from_yaml(docs[0], "first").unwrap();
        assert_eq!(first.audit.sinks.len(), SINK_TYPES.len());
        let errs = Config::from_yaml(docs[1], "second").unwrap_err().0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].file, "/etc/mcp-sentinel/config/policy.yaml");
        assert!(errs[0].why.starts_with("cannot read"), "{}", errs[0].why);
        // … and the pins file it names.
        assert_eq!(errs[1].key, "integrity.pins_file");
        assert!(
            errs[1]
                .why
                .starts_with("/etc/mcp-sentinel/pins/pins.json: cannot read"),
            "{}",
            errs[1].why
        );
    }

    #[test]
    fn keys_the_sidecar_sets_are_known_keys() {
        let paths = survey().unwrap().paths();
        for key in SET_BY_SIDECAR {
            assert!(paths.iter().any(|p| p == key), "{key}");
        }
        let schema = sidecar_schema().unwrap();
        assert_eq!(schema["properties"]["listen"], Json::Null);
        assert_eq!(
            schema["properties"]["upstream"]["properties"]["url"],
            Json::Null
        );
        assert!(schema["properties"]["upstream"]["properties"]["timeout"].is_object());
    }

    /// The chart's schema for `sidecar.config` is the generated one: run
    /// scripts/schema-generate.sh (make schema) after changing the config reader.
    #[test]
    fn the_chart_schema_is_generated() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/helm/mcp-sentinel/values.schema.json"
        );
        let chart: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let committed = &chart["properties"]["sidecar"]["properties"]["config"];
        assert!(
            *committed == sidecar_schema().unwrap(),
            "helm/mcp-sentinel/values.schema.json: sidecar.config is not what the config \
             reader knows: run scripts/schema-generate.sh"
        );
    }

    /// Spot checks of what the survey makes of the reader's parsers.
    #[test]
    fn forms_come_from_the_parsers() {
        let s = config_schema().unwrap();
        let p = &s["properties"];
        assert_eq!(
            p["shutdown"]["properties"]["deadline"],
            json!({"type": "string", "pattern": crate::yaml::survey::DURATION_PATTERN})
        );
        assert_eq!(
            p["limits"]["properties"]["max_body_bytes"],
            json!({"type": ["integer", "string"], "pattern": crate::yaml::survey::SIZE_PATTERN})
        );
        assert_eq!(
            p["auth"]["properties"]["scopes_supported"],
            json!({"type": ["array", "string"], "items": {"type": "string"}})
        );
        assert_eq!(
            p["upstream"]["properties"]["env"],
            json!({"type": "object", "additionalProperties": {"type": ["boolean", "number", "string"]}})
        );
        assert_eq!(
            p["log"]["properties"]["format"],
            json!({"type": "string", "enum": ["json", "text"]})
        );
        let rule = &p["policy"]["properties"]["rules"]["items"];
        assert_eq!(rule["additionalProperties"], json!(false));
        assert_eq!(
            rule["properties"]["arguments"]["items"]["properties"]["equals"],
            json!({})
        );
        let tools = &p["audit"]["properties"]["redact"]["properties"]["tools"];
        assert_eq!(tools["additionalProperties"]["type"], json!("array"));
        let sink = &p["audit"]["properties"]["sinks"]["items"]["properties"];
        let keys: Vec<&String> = sink.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "max_bytes",
                "max_files",
                "max_len",
                "name",
                "path",
                "stream",
                "table",
                "timeout",
                "type",
                "url"
            ]
        );
    }
}
