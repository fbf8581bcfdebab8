//! Credentials and small request pieces the authentication tests share.

use std::path::Path;

use serde_json::{Value, json};

/// Hex SHA-256, as API-key files store keys.
pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an API-key file of `(key, subject, groups)`, atomically (write, then rename), as a
/// Secret update swaps files.
pub fn write_keys(path: &Path, keys: &[(&str, &str, &[&str])]) {
    let mut text = String::from("keys:\n");
    for (key, subject, groups) in keys {
        text.push_str(&format!(
            "  - sha256: {}\n    subject: {subject}\n    groups: [{}]\n",
            sha256_hex(key),
            groups.join(", ")
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Header pairs as the raw request helpers take them.
pub fn pairs(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A 2025-06-18 `initialize` with id 1.
pub fn init_body() -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "raw", "version": "1" }
        }
    })
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> Vec<(String, String)> {
    pairs(&[("Authorization", &format!("Bearer {token}"))])
}

/// `X-API-Key: <key>`.
pub fn api_key(key: &str) -> Vec<(String, String)> {
    pairs(&[("X-API-Key", key)])
}
