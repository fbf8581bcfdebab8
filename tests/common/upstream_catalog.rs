//! What the test upstream offers: its tools, resources, resource templates and prompts, and
//! the text of each readable resource. Part of `upstream.rs` (included with it by the examples).

use std::sync::Arc;

use rmcp::model::{
    JsonObject, Prompt, PromptArgument, Resource, ResourceTemplate, Tool, ToolAnnotations,
};
use serde_json::{Value, json};

use super::{CAFE_URI, LOG_TEMPLATE, README_URI, SECRET_URI};

fn schema(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("schemas are objects"),
    }
}

/// Every tool the upstream offers, in list order.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "echo",
            "Returns its text argument",
            schema(json!({
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            "add",
            "Adds two integers",
            schema(json!({
                "type": "object",
                "properties": { "a": { "type": "integer" }, "b": { "type": "integer" } },
                "required": ["a", "b"]
            })),
        ),
        Tool::new(
            "slow",
            "Sends notifications/progress once per step, sleeping delay_ms after each",
            schema(json!({
                "type": "object",
                "properties": {
                    "steps": { "type": "integer", "minimum": 0 },
                    "delay_ms": { "type": "integer", "minimum": 0 }
                },
                "required": ["steps", "delay_ms"]
            })),
        ),
        Tool::new(
            "big",
            "Returns one text content of exactly `bytes` bytes",
            schema(json!({
                "type": "object",
                "properties": { "bytes": { "type": "integer", "minimum": 0 } },
                "required": ["bytes"]
            })),
        ),
        Tool::new(
            "fail",
            "Always returns a tool result with isError: true",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "jsonrpc_error",
            "Always answers with a JSON-RPC error (-32603)",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        // `x-mcp-header` makes 2026-07-28 clients send `Mcp-Param-Region`, and rmcp's
        // server rejects the call (400/-32020) if that header is missing or differs.
        Tool::new(
            "route",
            "Echoes text tagged with a region that travels as the Mcp-Param-Region header",
            schema(json!({
                "type": "object",
                "properties": {
                    "region": { "type": "string", "x-mcp-header": "Region" },
                    "text": { "type": "string" }
                },
                "required": ["region", "text"]
            })),
        ),
        Tool::new(
            "delete_file",
            "Pretends to delete a file (destructive)",
            schema(json!({
                "type": "object",
                "properties": { "path": { "type": "string" } },
                "required": ["path"]
            })),
        )
        .with_annotations(ToolAnnotations::new().destructive(true)),
        Tool::new(
            "roots",
            "Asks the client for its roots (a server-to-client roots/list request) and \
             reports how many it got, or the error",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "roots_mrtr",
            "2026-07-28 only: answers input_required with a roots/list input request, then \
             reports how many roots the retry carried",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "background",
            "Echoes text as a task (SEP-2663) when the client declares the tasks extension, \
             after delay_ms (default 0) unless cancelled; inline otherwise",
            schema(json!({
                "type": "object",
                "properties": {
                    "text": { "type": "string" },
                    "delay_ms": { "type": "integer", "minimum": 0 }
                },
                "required": ["text"]
            })),
        ),
    ]
}

pub fn resources() -> Vec<Resource> {
    vec![
        Resource::new(README_URI, "readme").with_mime_type("text/markdown"),
        Resource::new(SECRET_URI, "keys").with_mime_type("text/plain"),
        Resource::new(CAFE_URI, "cafe").with_mime_type("text/markdown"),
    ]
}

pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![ResourceTemplate::new(LOG_TEMPLATE, "daily-log").with_mime_type("text/plain")]
}

pub fn prompts() -> Vec<Prompt> {
    vec![
        Prompt::new(
            "greet",
            Some("Greets someone by name"),
            Some(vec![
                PromptArgument::new("name")
                    .with_description("Who to greet")
                    .with_required(true),
            ]),
        ),
        Prompt::new("admin_prompt", Some("Privileged instructions"), None),
    ]
}

/// `(mime type, text)` of a readable URI, static or from the log template.
pub(super) fn resource_body(uri: &str) -> Option<(&'static str, String)> {
    match uri {
        README_URI => Some((
            "text/markdown",
            "# Demo upstream\n\nServes both MCP eras.\n".to_owned(),
        )),
        SECRET_URI => Some(("text/plain", "API_KEY=not-a-real-key\n".to_owned())),
        CAFE_URI => Some(("text/markdown", "# Café\n".to_owned())),
        _ => {
            let day = uri.strip_prefix("file:///logs/")?.strip_suffix(".log")?;
            (!day.is_empty() && !day.contains('/'))
                .then(|| ("text/plain", format!("log for {day}\n")))
        }
    }
}
