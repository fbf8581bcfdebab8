//! "Decide on what you forward", tested against real parsers of other languages. Three
//! upstreams — Python (`json`, WSGI-style header folding), Node (`JSON.parse`) and Go
//! (`encoding/json` into typed structs, case-insensitive field matching) — each log what they
//! read from every request that reaches them. A corpus of hostile bodies and headers goes
//! through a sentinel in front of each; every message that is forwarded must be read by each
//! upstream exactly as the sentinel decided on it (method, target, `_meta` version, arguments,
//! and the arguments a typed Go handler would decode), and every ambiguous one must be refused
//! with 400 and never reach an upstream. A second test feeds thousands of mutated envelopes to
//! the same parsers directly (their batch mode) for the same invariant.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine;
use common::sentinel::{self, TempDir};
use mcp_sentinel::mcp::envelope::call_arguments;
use mcp_sentinel::mcp::{Envelope, Message, Target, strict};
use serde_json::{Value, json};

const POLICY: &str = r#"
auth: {anonymous: allow}
policy:
  default: deny
  rules:
    - {name: tools, effect: allow, tools: [echo, transfer, deploy]}
    - name: cap
      effect: deny
      tools: [transfer]
      arguments: [{path: /amount, range: {min: 1000}}]
    - name: no-foreign-iban
      effect: deny
      tools: [transfer]
      arguments: [{path: /to/iban, glob: "XX*"}]
    - name: no-dangerous-mode
      effect: deny
      tools: [deploy]
      arguments: [{path: /mode, equals: force}]
    - {name: docs, effect: allow, resources: ["file:///docs/*"]}
    - {name: greet, effect: allow, prompts: [greet]}
"#;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parsers")
}

/// The three upstream programs. A missing toolchain fails the test: it never skips.
fn commands(dir: &TempDir) -> Vec<(&'static str, Vec<String>)> {
    for tool in ["python3", "node", "go"] {
        let ok = Command::new(tool)
            .arg(if tool == "go" { "version" } else { "--version" })
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} is needed by this test (make test installs it)");
    }
    let go_bin = dir.path("upstream-go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&go_bin)
        .arg(fixtures().join("upstream.go"))
        .env("GOFLAGS", "-mod=mod")
        .env("GO111MODULE", "off")
        .status()
        .expect("go build runs");
    assert!(built.success(), "go build of the Go upstream failed");
    let f = |name: &str| fixtures().join(name).display().to_string();
    vec![
        ("python", vec!["python3".into(), f("upstream.py")]),
        ("node", vec!["node".into(), f("upstream.mjs")]),
        ("go", vec![go_bin.display().to_string()]),
    ]
}

struct Fixture {
    name: &'static str,
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fixture {
    fn serve(name: &'static str, cmd: &[String], dir: &TempDir) -> Fixture {
        let log = dir.path(&format!("{name}.log"));
        std::fs::write(&log, "").unwrap();
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .arg("serve")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} upstream: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} port: {line:?}"));
        Fixture {
            name,
            child,
            log,
            port,
        }
    }

    /// Every reading logged so far.
    fn readings(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Runs a parser over many bodies at once (its batch mode).
fn batch(cmd: &[String], bodies: &[Vec<u8>]) -> Vec<Value> {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("parser starts");
    let mut stdin = child.stdin.take().unwrap();
    let input: String = bodies
        .iter()
        .map(|b| base64::engine::general_purpose::STANDARD.encode(b) + "\n")
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "parser failed: {:?}", cmd);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), bodies.len(), "{cmd:?} answered every body");
    lines
}

/// What the sentinel decided on for a single-message body, in the fixtures' vocabulary; `None`
/// when the sentinel refuses the body at parse time.
fn sentinel_reading(body: &[u8]) -> Option<Value> {
    let env = Envelope::parse(body).ok()?;
    let msg: &Message = env.single()?;
    let mut r = json!({ "method": msg.method_name, "protocolVersion": msg.meta_version });
    match &msg.target {
        Target::Tool(n) | Target::Prompt(n) => r["name"] = json!(n),
        Target::Resource(u) => r["uri"] = json!(u),
        Target::Task(t) => r["taskId"] = json!(t),
        Target::CompletionPrompt(n) => r["ref"] = json!({"type": "ref/prompt", "name": n}),
        Target::CompletionResource(u) => r["ref"] = json!({"type": "ref/resource", "uri": u}),
        Target::None | Target::Subscriptions(_) => {}
    }
    if matches!(msg.target, Target::Tool(_)) {
        let args = call_arguments(body, false)?.pop().flatten();
        // The policy's argument names, as the authorize check refuses their case variants.
        let names = ["amount", "to", "iban", "mode"].map(String::from).into();
        if let Some(a) = &args {
            strict::check_names(a, &names).ok()?;
        }
        r["arguments"] = args.clone().unwrap_or(Value::Null);
        // What a typed handler decodes: the arguments the policy's conditions name.
        let mut typed = serde_json::Map::new();
        if let Some(a) = &args {
            for (key, ptr) in [("amount", "/amount"), ("to", "/to/iban"), ("mode", "/mode")] {
                if let Some(v) = a.pointer(ptr) {
                    typed.insert(
                        key.into(),
                        if key == "to" {
                            json!({"iban": v})
                        } else {
                            v.clone()
                        },
                    );
                }
            }
        }
        r["typed"] = Value::Object(typed);
    }
    Some(r)
}

/// JSON equality with numbers by value, as every parser here reads them as doubles or exact.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            // Go's json.Number reports the literal as a string.
            s.parse::<f64>().ok() == n.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Each field the sentinel decided on equals what `parser` read. A parser that could not read
/// the message at all executes nothing, which is safe.
fn agrees(parser: &str, sentinel: &Value, read: &Value, what: &str) {
    if read["ok"] == json!(false) {
        return;
    }
    for (field, want) in sentinel.as_object().unwrap() {
        let got = if field == "typed" {
            // Only keys the handler decoded (Go) or the whole object (Python, Node).
            let mut got = read.get(field).cloned().unwrap_or(Value::Null);
            if let (Value::Object(g), Value::Object(w)) = (&mut got, want) {
                g.retain(|k, _| ["amount", "to", "mode"].contains(&k.as_str()));
                if parser != "go" {
                    for (k, v) in g.iter_mut() {
                        if k == "to" {
                            *v = json!({"iban": v.get("iban").cloned().unwrap_or(Value::Null)});
                        }
                    }
                    g.retain(|k, v| w.contains_key(k) || !v.is_null());
                }
            }
            got
        } else if field == "ref" {
            // The reference's fields the sentinel read; the parsers report all three.
            let mut got = read.get(field).cloned().unwrap_or(Value::Null);
            if let Value::Object(g) = &mut got {
                g.retain(|k, _| want.get(k).is_some());
            }
            got
        } else {
            read.get(field).cloned().unwrap_or(Value::Null)
        };
        assert!(
            same(want, &got),
            "{parser} read {field} = {got} but the sentinel decided on {want}: {what}"
        );
    }
}

/// A corpus row: a body, extra headers, and whether it must be refused with 400.
struct Case {
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    refused: bool,
}

fn case(body: &str, refused: bool) -> Case {
    Case {
        body: body.as_bytes().to_vec(),
        headers: Vec::new(),
        refused,
    }
}

fn corpus() -> Vec<Case> {
    let call = |args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"transfer","arguments":{args}}}}}"#
        )
    };
    let mut c = vec![
        // Legitimate messages: forwarded, read the same everywhere.
        case(&call(r#"{"amount":5,"to":{"iban":"DE1"}}"#), false),
        case(
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"Name":"x","text":"hi"}}}"#,
            false,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///docs/a.md"}}"#,
            false,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"greet"}}"#,
            false,
        ),
        case(r#"{"jsonrpc":"2.0","id":"s","method":"ping"}"#, false),
        case(
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            false,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ech\u006f","arguments":{}}}"#,
            false,
        ),
        case(&call(r#"{"amount":5.0e0,"to":{"iban":"DE1"}}"#), false),
        // Duplicate keys at every depth.
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"transfer","arguments":{"amount":5000}}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"transfer","arguments":{"amount":5000}}}"#,
            true,
        ),
        case(&call(r#"{"amount":5,"amount":5000}"#), true),
        case(
            &call(r#"{"amount":5,"to":{"iban":"DE1","iban":"XX1"}}"#),
            true,
        ),
        case(&call(r#"{"amount":5,"list":[{"a":1,"a":2}]}"#), true),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}},"params":{"name":"transfer","arguments":{"amount":5000}}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\u0061me":"transfer"}}"#,
            true,
        ),
        // Case-folded spellings of protocol fields: Go's structs read them.
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"transfer"}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","params":{"name":"transfer"}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"transfer"}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","Params":{"name":"transfer","arguments":{"amount":5000}},"params":{"name":"echo"}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///docs/a","URI":"file:///etc/passwd"}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///docs/a","Uri":"file:///etc/passwd"}}"#,
            true,
        ),
        case(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tasks/get\",\"params\":{\"taskId\":\"t1\",\"ta\u{17F}kId\":\"t2\"}}",
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-06-18","IO.MODELCONTEXTPROTOCOL/PROTOCOLVERSION":"2026-07-28"}}}"#,
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet","NAME":"secret"},"argument":{"name":"a","value":"b"}}}"#,
            true,
        ),
        // Arguments a policy names, spelled in another case (Go's typed handler reads them).
        case(&call(r#"{"AMOUNT":5000,"to":{"iban":"DE1"}}"#), true),
        case(&call(r#"{"amount":5,"Amount":5000}"#), true),
        case(&call(r#"{"amount":5,"to":{"IBAN":"XX1"}}"#), true),
        case(&call(r#"{"amount":5,"TO":{"iban":"XX1"}}"#), true),
        case(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"deploy\",\"arguments\":{\"mode\":\"safe\",\"MODE\":\"force\"}}}",
            true,
        ),
        // Unicode simple folding: the Kelvin sign, the long s.
        case(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"k\":1,\"\u{212A}\":2}}}",
            true,
        ),
        case(
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"deploy\",\"arguments\":{\"mode\":\"safe\"}},\"param\u{17F}\":{\"name\":\"transfer\"}}",
            true,
        ),
        // Bodies some parsers read and others do not.
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","arguments":{"amount":NaN}}}"#,
            true,
        ),
        case(
            "\u{FEFF}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
            true,
        ),
        case(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo\ud800"}}"#,
            true,
        ),
        case(r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {"x":1}"#, true),
        // A value the key walk cannot read through must not switch the walk off for the keys
        // after it (red-team finding): an out-of-range number, a lone surrogate, deep nesting.
        case(
            r#"{"x":1e400,"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","arguments":{"amount":5},"Arguments":{"amount":5000}}}"#,
            true,
        ),
        case(
            r#"{"x":"\udead","jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"transfer"}}"#,
            true,
        ),
        case(
            &format!(
                r#"{{"x":{}{},"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","Name":"transfer"}}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            true,
        ),
        // A long mantissa next to a policy bound: every parser (and the sentinel, float_roundtrip)
        // reads the same double.
        case(
            &call(r#"{"amount":999999999999999910e-15,"to":{"iban":"DE1"}}"#),
            false,
        ),
        // Integers past 2^53: JavaScript rounds, Python does not; the range rule fails closed.
        case(
            &call(r#"{"amount":9007199254740993,"to":{"iban":"DE1"}}"#),
            false,
        ),
    ];
    let mut bad_utf8 =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ech"#.to_vec();
    bad_utf8.extend_from_slice(b"\xff\"}}");
    c.push(Case {
        body: bad_utf8,
        headers: Vec::new(),
        refused: true,
    });
    // Mirrored headers that disagree with the body, and spellings a WSGI server folds.
    let hdr = |h: &'static str, v: &str, refused: bool| {
        Case {
        body: br#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#
            .to_vec(),
        headers: vec![(h, v.to_string())],
        refused,
    }
    };
    c.push(hdr("mcp-method", "tools/call", false));
    c.push(hdr("mcp-method", "tools/list", true));
    c.push(hdr("mcp-name", "transfer", true));
    c.push(hdr("mcp_method", "tools/call", true));
    c.push(hdr("mcp-protocol-version", "2025-06-18, 2026-07-28", true));
    c.push(hdr("mcp-param-region", "eu", true));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forwarded_message_is_read_as_decided() {
    let dir = TempDir::new("differential");
    let cmds = commands(&dir);
    let fixtures: Vec<Fixture> = cmds
        .iter()
        .map(|(name, cmd)| Fixture::serve(name, cmd, &dir))
        .collect();
    let mut sentinels = Vec::new();
    for f in &fixtures {
        let cfg = sentinel::config_from_yaml(POLICY, &format!("http://127.0.0.1:{}/mcp", f.port));
        sentinels.push(sentinel::start_with(cfg, true).await);
    }
    let http = reqwest::Client::new();
    let corpus = corpus();
    let (mut forwarded, mut refused) = (0, 0);
    for (i, c) in corpus.iter().enumerate() {
        let what = format!("case {i}: {}", String::from_utf8_lossy(&c.body));
        let decided = sentinel_reading(&c.body);
        for (f, s) in fixtures.iter().zip(&sentinels) {
            let before = f.readings().len();
            let mut req = http
                .post(&s.url)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("x-mcp-sentinel-subject", "spoofed-admin")
                // WSGI folds this onto HTTP_X_MCP_SENTINEL_GROUPS (red-team finding).
                .header("X_Mcp_Sentinel_Groups", "admins")
                .body(c.body.clone());
            for (k, v) in &c.headers {
                req = req.header(*k, v.as_str());
            }
            let resp = req.send().await.expect("the sentinel answers");
            let status = resp.status().as_u16();
            let answer: Value = resp.json().await.unwrap_or(Value::Null);
            let after = f.readings();
            if c.refused {
                assert_eq!(status, 400, "{}: {what}: {answer}", f.name);
                assert!(
                    matches!(
                        answer["error"]["code"].as_i64(),
                        Some(-32600 | -32700 | -32602 | -32020)
                    ),
                    "{}: {what}: {answer}",
                    f.name
                );
                assert_eq!(
                    after.len(),
                    before,
                    "{} received a refused body: {what}",
                    f.name
                );
                refused += 1;
                continue;
            }
            assert!(status < 500, "{}: {what}: {status} {answer}", f.name);
            if after.len() == before {
                // Denied by the policy: nothing was executed.
                continue;
            }
            forwarded += 1;
            let read = &after[before];
            let decided = decided.as_ref().expect("forwarded bodies parse");
            agrees(f.name, decided, read, &what);
            // Whatever a server folds header names to, it sees the sentinel's identity only.
            let headers = &read["headers"];
            let subject = match f.name {
                "python" => headers["HTTP_X_MCP_SENTINEL_SUBJECT"].clone(),
                "node" => headers["x-mcp-sentinel-subject"].clone(),
                _ => headers["X-Mcp-Sentinel-Subject"][0].clone(),
            };
            assert_eq!(subject, json!("anonymous"), "{}: {what}", f.name);
            if f.name == "python" {
                assert_eq!(
                    headers.get("HTTP_X_MCP_SENTINEL_GROUPS"),
                    None,
                    "a folded spelling of an identity header reached the upstream: {what}"
                );
            }
            if f.name == "python"
                && let Some(m) = headers.get("HTTP_MCP_METHOD")
            {
                assert_eq!(m, &decided["method"], "{what}");
            }
        }
    }
    let expected_forwarded = corpus.iter().filter(|c| !c.refused).count();
    println!(
        "differential: {} cases x {} parsers: {forwarded} forwarded readings compared, {refused} refusals",
        corpus.len(),
        fixtures.len()
    );
    assert!(
        corpus.len() >= 40,
        "the corpus covers the classes of the issue"
    );
    assert!(
        forwarded >= 3 * (expected_forwarded - 3),
        "most legitimate cases reached every upstream"
    );
}

/// A small deterministic generator (xorshift), so failures reproduce from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","arguments":{"amount":5,"to":{"iban":"DE1"},"mode":"safe"}}}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///docs/a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"a","value":"b"}}}"#,
    r#"{"jsonrpc":"2.0","id":4,"method":"tasks/get","params":{"taskId":"t-1"}}"#,
    r#"{"jsonrpc":"2.0","id":5,"method":"prompts/get","params":{"name":"greet","arguments":{"who":"x"}}}"#,
];

/// One mutation of a body: case flips, duplicated or folded keys, escapes, odd literals.
fn mutate(rng: &mut Rng, body: &str) -> Vec<u8> {
    // The keys of the body, as (start, end) byte ranges of their text between quotes.
    let keys: Vec<(usize, usize)> = {
        let b = body.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'"' {
                let start = i + 1;
                let mut j = start;
                while b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let after = b[j + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if after == Some(&b':') {
                    out.push((start, j));
                }
                i = j + 1;
            } else {
                i += 1;
            }
        }
        out
    };
    let (s, e) = keys[rng.below(keys.len())];
    let key = &body[s..e];
    let mut out = body.to_string();
    match rng.below(8) {
        0 => {
            // Flip the case of one letter of a key.
            let chars: Vec<char> = key.chars().collect();
            let i = rng.below(chars.len());
            let flipped: String = chars
                .iter()
                .enumerate()
                .map(|(j, c)| {
                    if j == i {
                        if c.is_ascii_lowercase() {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    } else {
                        *c
                    }
                })
                .collect();
            out.replace_range(s..e, &flipped);
        }
        1 => {
            // Repeat a key (same spelling) with another value, before or after it.
            let dup = format!("\"{key}\":\"dup\",");
            out.insert_str(s - 1, &dup);
        }
        2 => {
            // Repeat it folded (upper case) after the original.
            let dup = format!("\"{}\":\"dup\",", key.to_uppercase());
            out.insert_str(s - 1, &dup);
        }
        3 => {
            // Unicode folding: long s for s, Kelvin sign for k.
            let folded = key.replacen('s', "\u{17F}", 1).replacen('k', "\u{212A}", 1);
            out.replace_range(s..e, &folded);
        }
        4 => {
            // Escape one character of the key.
            if let Some(c) = key.chars().next() {
                let esc = format!("\\u{:04x}{}", c as u32, &key[c.len_utf8()..]);
                out.replace_range(s..e, &esc);
            }
        }
        5 => {
            // A sibling key that folds onto this one, with the value the attacker wants.
            let dup = format!("\"{}\":\"transfer\",", key.to_uppercase());
            out.insert_str(e + 2, &dup);
            // (may produce invalid JSON when the value is not first; refusals are fine)
        }
        6 => {
            // A literal some parsers accept.
            out = out.replacen(
                "5",
                ["NaN", "Infinity", "1e400", "9007199254740993", "-0"][rng.below(5)],
                1,
            );
        }
        _ => {
            // Two mutations.
            let once = mutate(rng, body);
            return mutate(rng, std::str::from_utf8(&once).unwrap_or(body));
        }
    }
    out.into_bytes()
}

#[test]
fn mutated_envelopes_are_refused_or_read_alike() {
    let dir = TempDir::new("differential-fuzz");
    let cmds = commands(&dir);
    let seed = std::env::var("DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let rounds: usize = std::env::var("DIFF_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut rng = Rng(seed);
    let bodies: Vec<Vec<u8>> = (0..rounds)
        .map(|_| {
            let seed_body = SEEDS[rng.below(SEEDS.len())];
            mutate(&mut rng, seed_body)
        })
        .collect();
    let decided: Vec<Option<Value>> = bodies.iter().map(|b| sentinel_reading(b)).collect();
    let accepted: Vec<usize> = (0..bodies.len())
        .filter(|&i| decided[i].is_some())
        .collect();
    let sent: Vec<Vec<u8>> = accepted.iter().map(|&i| bodies[i].clone()).collect();
    for (name, cmd) in &cmds {
        let readings = batch(cmd, &sent);
        for (k, &i) in accepted.iter().enumerate() {
            let what = format!(
                "seed {seed:#x} body {i}: {}",
                String::from_utf8_lossy(&bodies[i])
            );
            agrees(name, decided[i].as_ref().unwrap(), &readings[k], &what);
        }
    }
    println!(
        "differential fuzz: {rounds} mutated envelopes (seed {seed:#x}), {} accepted and read alike by {} parsers, {} refused",
        accepted.len(),
        cmds.len(),
        rounds - accepted.len()
    );
    assert!(
        accepted.len() > rounds / 10,
        "the generator also makes acceptable bodies"
    );
    assert!(
        accepted.len() < rounds,
        "the generator makes ambiguous bodies"
    );
}
