//! Canonical resource URIs checked against real parsers: for every spelling the sentinel
//! accepts, Python (`urllib`) and Node (WHATWG `URL`, `fileURLToPath`) must read the same
//! resource from the spelling as from its canonical form, or refuse it: a table of spellings,
//! and random ones built from tricky pieces. The refused spellings are tabled in
//! `src/mcp/uri/tests.rs`.

use std::path::Path;
use std::process::Command;

use mcp_sentinel::mcp::uri::canonical;

/// (input, its canonical form).
const ROWS: &[(&str, &str)] = &[
    // file URIs (RFC 8089).
    ("file:///etc/passwd", "file:///etc/passwd"),
    ("FILE:///etc/passwd", "file:///etc/passwd"),
    ("file:/etc/passwd", "file:///etc/passwd"),
    ("file://localhost/etc/passwd", "file:///etc/passwd"),
    ("file://LOCALHOST/etc/passwd", "file:///etc/passwd"),
    ("file://localhost./etc/passwd", "file:///etc/passwd"),
    ("file://127.0.0.1/etc/passwd", "file:///etc/passwd"),
    ("file://0x7f.1/etc/passwd", "file:///etc/passwd"),
    ("file://2130706433/etc/passwd", "file:///etc/passwd"),
    ("file://[::1]/etc/passwd", "file:///etc/passwd"),
    ("file://localhost", "file:///"),
    ("file:///etc/ssl/", "file:///etc/ssl"),
    (
        "file:///srv/data/secret.txt/",
        "file:///srv/data/secret.txt",
    ),
    (
        "file:///srv/data/secret.txt/.",
        "file:///srv/data/secret.txt",
    ),
    ("file:///srv/data/x/..", "file:///srv/data"),
    ("file:///.", "file:///"),
    ("file:///etc/./passwd", "file:///etc/passwd"),
    ("file:///etc/%2e/passwd", "file:///etc/passwd"),
    ("file:///etc/%2E%2e/etc/passwd", "file:///etc/passwd"),
    ("file:///tmp/../etc/passwd", "file:///etc/passwd"),
    ("file:///etc/pass%77d", "file:///etc/passwd"),
    ("file:///d/a%3Bb", "file:///d/a;b"),
    ("file:///d/a%40b%3d", "file:///d/a@b="),
    ("file:///d/a%20b", "file:///d/a%20b"),
    ("file:///d/a b", "file:///d/a%20b"),
    ("file:///d/a%3fb", "file:///d/a%3Fb"),
    ("file:///d/a%23b", "file:///d/a%23b"),
    ("file:///d/100%25", "file:///d/100%25"),
    ("file:///d/{x}", "file:///d/%7Bx%7D"),
    ("file:///d/café", "file:///d/caf%C3%A9"),
    ("file:///d/caf%c3%a9", "file:///d/caf%C3%A9"),
    ("file:///d/a/b/..", "file:///d/a"),
    // DOS drives, read as Windows reads them.
    ("file:c:/x", "file:///C:/x"),
    ("file:/c:/x", "file:///C:/x"),
    ("file:///C|/x", "file:///C:/x"),
    ("file:///c:/x", "file:///C:/x"),
    ("file://localhost/c:/x", "file:///C:/x"),
    ("file:///c:/x/", "file:///C:/x"),
    ("file:///c:/x/..", "file:///C:/"),
    // Special schemes.
    ("https://example.com/a/b?q=1", "https://example.com/a/b?q=1"),
    ("HTTPS://Example.COM./a", "https://example.com/a"),
    ("https://h:443/x", "https://h/x"),
    ("http://h:0080/x", "http://h/x"),
    ("https://h:/x", "https://h/x"),
    ("https://h", "https://h/"),
    ("https://h:8443/x", "https://h:8443/x"),
    ("wss://h:443/x", "wss://h/x"),
    ("http://127.1/x", "http://localhost/x"),
    ("http://0x7f.0.0.1/x", "http://localhost/x"),
    ("http://0177.0.0.1/x", "http://localhost/x"),
    ("http://2130706433/x", "http://localhost/x"),
    ("http://0x7f000001/x", "http://localhost/x"),
    ("http://127.255.0.9/x", "http://localhost/x"),
    ("http://[::1]/x", "http://localhost/x"),
    ("http://[0:0:0:0:0:0:0:1]/x", "http://localhost/x"),
    ("http://[::ffff:127.0.0.1]/x", "http://localhost/x"),
    ("http://[::]/x", "http://localhost/x"),
    ("http://0.0.0.0/x", "http://localhost/x"),
    ("http://a.b.localhost/x", "http://localhost/x"),
    ("http://LocalHost./x", "http://localhost/x"),
    ("http://10.1/x", "http://10.0.0.1/x"),
    ("http://0xa.0.0.1/x", "http://10.0.0.1/x"),
    ("http://[::ffff:10.0.0.1]/x", "http://10.0.0.1/x"),
    ("http://[2001:DB8:0:0:0:0:0:1]/x", "http://[2001:db8::1]/x"),
    ("https://h/a/./b/../c", "https://h/a/c"),
    ("https://h/a/%2e%2E/b", "https://h/b"),
    ("https://h/%7e%41", "https://h/~A"),
    ("https://h/a b", "https://h/a%20b"),
    ("https://h/p?a=%2f&b=%7e", "https://h/p?a=%2F&b=~"),
    ("https://h.example/admin?", "https://h.example/admin"),
    ("https://h/a%3Bx", "https://h/a%3Bx"),
    // Other schemes.
    ("db://Example.COM./x", "db://example.com/x"),
    ("db://127.1/x", "db://localhost/x"),
    ("db://[::1]:5432/x", "db://localhost:5432/x"),
    ("db:///users", "db:///users"),
    ("kb:/secret", "kb:///secret"),
    ("kb:/a/%2e/b", "kb:///a/b"),
    ("db://h/a?", "db://h/a"),
    ("note:public/a.txt", "note:public/a.txt"),
    ("db://h/a/%2e%2e/b", "db://h/b"),
    ("urn:x:%41%2a", "urn:x:A%2A"),
];

/// Spellings built at random from tricky pieces; those the library accepts join the rows.
fn random_rows(n: usize) -> Vec<(String, String)> {
    const START: &[&str] = &[
        "file:",
        "file://",
        "file:///",
        "FILE://localhost",
        "file://127.1",
        "file://[::1]",
        "https://",
        "http://",
        "HTTP://",
    ];
    const HOSTS: &[&str] = &[
        "h",
        "H.",
        "localhost",
        "127.0.0.1",
        "0x7f.1",
        "0177.0.0.1",
        "2130706433",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "10.1",
        "0xa.0.0.1",
        "a.localhost",
        "h:443",
        "h:80",
        "h:0080",
        "h:",
        "[2001:DB8::1]",
        "",
    ];
    const PATH: &[&str] = &[
        "/", "/", "/", "a", "B", ".", "..", "%2e", "%2E%2e", "%41", "%7e", "%3b", ";", "%20", " ",
        "é", "%C3%A9", "%3F", "%23", "%25", "~", "c:", "C|", "{x}", "@", "%40", "=",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut pick = move |set: &[&'static str]| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        set[(state % set.len() as u64) as usize]
    };
    let mut rows = Vec::new();
    while rows.len() < n {
        let start = pick(START);
        let mut uri = start.to_string();
        if start.ends_with("//") && start.starts_with(['h', 'H']) {
            uri.push_str(pick(HOSTS));
        }
        for _ in 0..(pick(&["1", "2", "3", "4", "5", "6"])
            .parse::<usize>()
            .unwrap())
        {
            uri.push_str(pick(PATH));
        }
        if let Ok(c) = canonical(&uri) {
            let c = c.into_owned();
            rows.push((uri, c));
        }
    }
    rows
}

#[test]
fn real_parsers_read_the_canonical_resource() {
    // The rows are what the library decides.
    for &(input, canon) in ROWS {
        assert_eq!(canonical(input).as_deref(), Ok(canon), "{input:?}");
    }
    let random = random_rows(2000);
    let rows: Vec<_> = ROWS
        .iter()
        .map(|&(i, c)| (i, c))
        .chain(random.iter().map(|(i, c)| (i.as_str(), c.as_str())))
        .map(|(i, c)| serde_json::json!({"input": i, "canonical": c}))
        .collect();
    let file = std::env::temp_dir().join(format!("uri-parsers-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&rows).unwrap()).unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uri_parsers");
    let mut failures = Vec::new();
    // (interpreter, script, how many rows it must have compared rather than refused).
    for (program, script, least) in [("python3", "check.py", 1500), ("node", "check.mjs", 1500)] {
        // A missing interpreter fails the test: a check that is skipped proves nothing.
        let out = Command::new(program)
            .arg(dir.join(script))
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{program} must be installed to run this test: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}{stderr}");
        let compared: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("compared="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if !out.status.success() || compared < least {
            failures.push(format!(
                "{program} {script}: {}, {compared} rows compared\n{stdout}{stderr}",
                out.status
            ));
        }
    }
    let _ = std::fs::remove_file(&file);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
