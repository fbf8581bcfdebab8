use std::borrow::Cow;

use super::UriError::{self, *};
use super::{canonical, canonical_pattern};

/// Each spelling and what it is decided as: its canonical form, or why it is refused. (The
/// rows whose canonical form real parsers must agree with are in `tests/uri_parsers.rs`.)
const TABLE: &[(&str, Result<&str, UriError>)] = &[
    // Already canonical.
    ("file:///etc/passwd", Ok("file:///etc/passwd")),
    (
        "https://example.com/a/b?q=1",
        Ok("https://example.com/a/b?q=1"),
    ),
    ("urn:isbn:0451450523", Ok("urn:isbn:0451450523")),
    ("db:///users", Ok("db:///users")),
    // Scheme, escapes, dot segments.
    ("FILE:///etc/passwd", Ok("file:///etc/passwd")),
    ("db://h/%7e%41", Ok("db://h/~A")),
    ("db://h/a%3bb", Ok("db://h/a%3Bb")),
    ("db://h/a/./b/../c", Ok("db://h/a/c")),
    ("db://h/a/%2e%2E/b", Ok("db://h/b")),
    ("db://h/a/.%2e", Ok("db://h/")),
    ("db://h/a/../b/..", Ok("db://h/")),
    ("db://h/a b", Ok("db://h/a%20b")),
    ("db://h/{x}", Ok("db://h/%7Bx%7D")),
    ("db://h/café", Ok("db://h/caf%C3%A9")),
    ("db://h/caf%c3%a9", Ok("db://h/caf%C3%A9")),
    ("urn:x:%41%2a", Ok("urn:x:A%2A")),
    ("db://h/p?a=%2f&b=%7e", Ok("db://h/p?a=%2F&b=~")),
    // Refused everywhere.
    ("db://h/a%2fb", Err(EncodedSlash)),
    ("db://h/a%5Cb", Err(EncodedBackslash)),
    ("urn:a%2Fb", Err(EncodedSlash)),
    ("db://h/a\\b", Err(Backslash)),
    ("db://h/a%00", Err(Nul)),
    ("db://h/a\0", Err(Nul)),
    ("db://h/a\tb", Err(Control)),
    ("db://h/a\nb", Err(Control)),
    (" db://h/a", Err(Whitespace)),
    ("db://h/a%252F", Err(DoubleEncoding)),
    ("db://h/a%25%32%46", Err(DoubleEncoding)),
    ("db://h/a%zz", Err(BadPercent)),
    ("db://h/a%4", Err(BadPercent)),
    ("db://h/a%ff", Err(BadUtf8)),
    ("db://h/a%c3", Err(BadUtf8)),
    ("db://h/a%c3x", Err(BadUtf8)),
    ("db://h/a%ed%a0%80", Err(BadUtf8)),
    ("db://h/secret#a", Err(Fragment)),
    ("urn:x#y", Err(Fragment)),
    ("db://h//x", Err(RepeatedSlash)),
    ("db:////x", Err(RepeatedSlash)),
    // `..` above the root: WHATWG drops it, Python keeps it (`/../x`), and a server joining
    // host and path reads a sibling of the host's directory.
    ("db://h/../../x", Err(DotAboveRoot)),
    ("db://h/..", Err(DotAboveRoot)),
    ("db://h/a/../../x", Err(DotAboveRoot)),
    ("note://public/../private/a.txt", Err(DotAboveRoot)),
    ("note://public/%2e%2E/private/a.txt", Err(DotAboveRoot)),
    ("https://h/../x", Err(DotAboveRoot)),
    ("db:/../x", Err(DotAboveRoot)),
    ("db:///../x", Err(DotAboveRoot)),
    // Opaque paths: servers that join the path to a directory resolve `.`/`..` in it.
    ("note:public/a.txt", Ok("note:public/a.txt")),
    ("note:public/", Ok("note:public/")),
    ("note:public/.hidden", Ok("note:public/.hidden")),
    ("note:public/%61.txt", Ok("note:public/a.txt")),
    ("urn:x:..", Ok("urn:x:..")),
    ("note:public/../secret", Err(DotSegment)),
    ("note:public/%2e%2e/secret", Err(DotSegment)),
    ("note:public/.%2E/secret", Err(DotSegment)),
    ("note:public/./secret", Err(DotSegment)),
    ("note:public/..", Err(DotSegment)),
    ("note:public/.", Err(DotSegment)),
    ("note:../secret", Err(DotSegment)),
    ("note:%2E", Err(DotSegment)),
    ("note:public/...", Err(DotSegment)),
    ("note:public/..;x/secret", Err(DotSegment)),
    ("note:public//etc/passwd", Err(RepeatedSlash)),
    ("note:public/a/", Ok("note:public/a/")),
    // `scheme:/path` has an empty host, as `scheme:///path` (Python, Node, Go).
    ("kb:/secret", Ok("kb:///secret")),
    ("KB:/a/./b", Ok("kb:///a/b")),
    ("kb:/", Ok("kb:///")),
    ("kb:/a?q", Ok("kb:///a?q")),
    ("kb:/%2e%2e/secret", Err(DotAboveRoot)),
    ("kb:/a//b", Err(RepeatedSlash)),
    // An empty query is no query.
    ("https://h.example/admin?", Ok("https://h.example/admin")),
    ("https://h.example?", Ok("https://h.example/")),
    ("urn:x?", Ok("urn:x")),
    ("db://h/a??", Ok("db://h/a??")),
    // `;` starts parameters Python's `urlparse` drops from the path of these schemes.
    ("https://h.example/admin;x", Err(PathParams)),
    ("HTTP://h/a;b/c", Err(PathParams)),
    ("ftp://h/f;type=i", Err(PathParams)),
    ("wss://h/a;x", Err(PathParams)),
    ("sftp://h/a;x", Err(PathParams)),
    ("tel:+1;ext=2", Err(PathParams)),
    ("https://h/a%3Bx", Ok("https://h/a%3Bx")),
    ("https://h/a%3bx", Ok("https://h/a%3Bx")),
    ("https://h/a?x=1;2", Ok("https://h/a?x=1;2")),
    ("db://h/a;b", Ok("db://h/a;b")),
    ("db://h/a/.../b", Err(DotSegment)),
    ("db://h/a/..;x/b", Err(DotSegment)),
    ("db://h/a/..%20/b", Err(DotSegment)),
    ("docs/readme", Err(BadScheme)),
    ("1x:/y", Err(BadScheme)),
    // Hosts.
    ("db://Example.COM./x", Ok("db://example.com/x")),
    ("db://ex%61mple.com/x", Err(BadHost)),
    ("db://ex%2Fample.com/x", Err(BadHost)),
    ("db://exämple.com/x", Err(NonAsciiHost)),
    ("db://ｌｏｃａｌｈｏｓｔ/x", Err(NonAsciiHost)),
    ("db://LocalHost/x", Ok("db://localhost/x")),
    ("db://a.b.localhost./x", Ok("db://localhost/x")),
    ("db://127.0.0.1/x", Ok("db://localhost/x")),
    ("db://127.1/x", Ok("db://localhost/x")),
    ("db://0x7f.0.0.1/x", Ok("db://localhost/x")),
    ("db://0177.0.0.1/x", Ok("db://localhost/x")),
    ("db://2130706433/x", Ok("db://localhost/x")),
    ("db://0x7f000001/x", Ok("db://localhost/x")),
    ("db://127.255.0.9/x", Ok("db://localhost/x")),
    ("db://0.0.0.0/x", Ok("db://localhost/x")),
    ("db://0/x", Ok("db://localhost/x")),
    ("db://[::1]/x", Ok("db://localhost/x")),
    ("db://[0:0:0:0:0:0:0:1]/x", Ok("db://localhost/x")),
    ("db://[::ffff:127.0.0.1]/x", Ok("db://localhost/x")),
    ("db://[::ffff:7f00:1]/x", Ok("db://localhost/x")),
    ("db://[::]/x", Ok("db://localhost/x")),
    ("db://10.1/x", Ok("db://10.0.0.1/x")),
    ("db://0xa.0.0.1/x", Ok("db://10.0.0.1/x")),
    ("db://[::ffff:10.0.0.1]/x", Ok("db://10.0.0.1/x")),
    ("db://[2001:DB8:0:0:0:0:0:1]/x", Ok("db://[2001:db8::1]/x")),
    ("db://[fe80::1%25eth0]/x", Err(BadHost)),
    ("db://1.2.3.256/x", Err(BadHost)),
    ("db://1.2.3.4.5/x", Err(BadHost)),
    ("db://08.0.0.1/x", Err(BadHost)),
    ("db://a..b/x", Err(BadHost)),
    ("db://a../x", Err(BadHost)),
    ("db://a b/x", Err(BadHost)),
    ("db://u@h/x", Err(Userinfo)),
    ("db://a@b@c/x", Err(Userinfo)),
    ("db://:80/x", Err(BadHost)),
    // Ports.
    ("https://h:443/x", Ok("https://h/x")),
    ("http://h:80/x", Ok("http://h/x")),
    ("http://h:0080/x", Ok("http://h/x")),
    ("wss://h:443/x", Ok("wss://h/x")),
    ("https://h:/x", Ok("https://h/x")),
    ("https://h:8443/x", Ok("https://h:8443/x")),
    ("db://h:80/x", Ok("db://h:80/x")),
    ("db://h:007/x", Ok("db://h:7/x")),
    ("db://h:65536/x", Err(BadPort)),
    ("db://h:8a/x", Err(BadPort)),
    ("https://h", Ok("https://h/")),
    // WHATWG reads any number of slashes after a special scheme as `//`.
    ("https:///h/x", Err(MissingHost)),
    ("https:/h/x", Err(MissingHost)),
    ("http:h/x", Err(MissingHost)),
    // File URIs (RFC 8089).
    ("file:/etc/passwd", Ok("file:///etc/passwd")),
    ("file://localhost/etc/passwd", Ok("file:///etc/passwd")),
    ("file://LOCALHOST/etc/passwd", Ok("file:///etc/passwd")),
    ("file://localhost./etc/passwd", Ok("file:///etc/passwd")),
    ("file://127.0.0.1/etc/passwd", Ok("file:///etc/passwd")),
    ("file://0x7f.1/etc/passwd", Ok("file:///etc/passwd")),
    ("file://[::1]/etc/passwd", Ok("file:///etc/passwd")),
    ("file://localhost", Ok("file:///")),
    // Empty segments are refused, not collapsed: `file:///srv/public/{+path}` would give
    // `/etc/passwd` to a handler from `file:///srv/public//etc/passwd`.
    ("file:///etc//passwd", Err(RepeatedSlash)),
    ("file:///srv/public//etc/passwd", Err(RepeatedSlash)),
    ("file:///etc///ssl//", Err(RepeatedSlash)),
    ("file:///etc/ssl//", Err(RepeatedSlash)),
    (
        "file:///C:/srv/public///attacker.example/share/x",
        Err(RepeatedSlash),
    ),
    ("file:///c://x", Err(RepeatedSlash)),
    ("file://localhost/etc//passwd", Err(RepeatedSlash)),
    ("file:////etc/passwd", Err(Unc)),
    ("file://localhost//etc/passwd", Err(Unc)),
    // No trailing slash (but at the root): `normpath`, `pathlib` and Go's `filepath.Clean`
    // read `/srv/data/secret.txt/` and `/srv/data/secret.txt/.` as the file.
    ("file:///etc/ssl/", Ok("file:///etc/ssl")),
    (
        "file:///srv/data/secret.txt/",
        Ok("file:///srv/data/secret.txt"),
    ),
    (
        "file:///srv/data/secret.txt/.",
        Ok("file:///srv/data/secret.txt"),
    ),
    (
        "file:///srv/data/secret.txt/%2E",
        Ok("file:///srv/data/secret.txt"),
    ),
    ("file:///srv/data/x/..", Ok("file:///srv/data")),
    ("file:///srv/data/x/../", Ok("file:///srv/data")),
    ("file:///", Ok("file:///")),
    ("file:/", Ok("file:///")),
    ("file:///.", Ok("file:///")),
    ("file:///a/..", Ok("file:///")),
    ("file:///c:/", Ok("file:///C:/")),
    ("file:///c:/x/", Ok("file:///C:/x")),
    ("file:///c:/x/..", Ok("file:///C:/")),
    ("file:///etc/./passwd", Ok("file:///etc/passwd")),
    ("file:///etc/pass%77d", Ok("file:///etc/passwd")),
    ("file:///d/a%3Bb", Ok("file:///d/a;b")),
    ("file:///d/a%20b", Ok("file:///d/a%20b")),
    ("file:///d/a%3fb", Ok("file:///d/a%3Fb")),
    ("file:///d/café", Ok("file:///d/caf%C3%A9")),
    ("file:///d/a//b/../c", Err(RepeatedSlash)),
    ("file:///../etc/passwd", Err(DotAboveRoot)),
    ("file:///..", Err(DotAboveRoot)),
    ("file:///a/../../etc/passwd", Err(DotAboveRoot)),
    ("file:///d/a//../b", Err(RepeatedSlash)),
    ("file:///d/a//b/../../c", Err(RepeatedSlash)),
    ("file:///d/a//./../b", Err(RepeatedSlash)),
    ("file:////server/share/x", Err(Unc)),
    ("file://///server/share/x", Err(Unc)),
    ("file:////c:/x", Err(Unc)),
    ("file:c:/x", Ok("file:///C:/x")),
    ("file:/c:/x", Ok("file:///C:/x")),
    ("file:///C|/x", Ok("file:///C:/x")),
    ("file:///c:/x", Ok("file:///C:/x")),
    ("file:///c%3a/x", Err(Drive)),
    ("file:///c%7C/x", Err(Drive)),
    ("file:///c:", Ok("file:///C:")),
    ("file:///c:x", Err(Drive)),
    ("file:///c:~/..", Err(Drive)),
    ("file:/./C|/", Err(Drive)),
    ("file:///x/../c:/y", Err(Drive)),
    ("file:///c:/./d:/y", Err(Drive)),
    ("file:///x/c:/y", Ok("file:///x/c:/y")),
    ("file:///c:/../x", Err(DotAboveRoot)),
    ("file:///c:/secret.txt::$DATA", Err(WindowsStream)),
    ("file:///c:/ab%3Ac", Err(WindowsStream)),
    ("file://server/share", Err(FileHost)),
    ("file://c:/x", Err(FileHost)),
    ("file://127.0.0.1/c:/x", Err(FileHost)),
    ("file://LocalHost/c:/x", Ok("file:///C:/x")),
    ("file://localhost:80/x", Err(FileHost)),
    ("file://u@localhost/x", Err(FileHost)),
    ("file://ｌｏｃａｌｈｏｓｔ/etc/passwd", Err(FileHost)),
    ("file:///etc/passwd?x", Err(FileQuery)),
    ("file:///etc/passwd?", Err(FileQuery)),
    ("file:///etc/passwd#x", Err(Fragment)),
    ("file:etc/passwd", Err(FileRelative)),
    ("file:", Err(FileRelative)),
    ("file:///docs/..%2fsecret", Err(EncodedSlash)),
    ("file:///docs/..%5csecret", Err(EncodedBackslash)),
    ("file:///docs\\..\\secret", Err(Backslash)),
    ("file:///docs/%252e%252e/secret", Err(DoubleEncoding)),
];

#[test]
fn spellings() {
    assert!(TABLE.len() >= 40);
    for &(input, expected) in TABLE {
        let got = canonical(input);
        assert_eq!(got.as_deref().map_err(|e| *e), expected, "{input:?}");
        // The canonical form is a fixed point.
        if let Ok(c) = got {
            assert_eq!(canonical(&c).as_deref(), Ok(&*c), "{input:?} → {c:?}");
        }
    }
}

#[test]
fn canonical_input_is_borrowed() {
    for (input, expected) in TABLE {
        if *expected == Ok(*input) {
            assert!(
                matches!(canonical(input), Ok(Cow::Borrowed(_))),
                "{input:?}"
            );
        }
    }
    assert!(matches!(canonical("FILE:///x"), Ok(Cow::Owned(_))));
}

#[test]
fn reasons_are_fixed_strings() {
    assert_eq!(EncodedSlash.as_str(), "encoded_slash");
    assert_eq!(FileHost.as_str(), "file_host");
    assert_eq!(EncodedSlash.to_string(), "the path holds an encoded slash");
    assert_eq!(DotAboveRoot.as_str(), "dot_above_root");
    assert_eq!(PathParams.as_str(), "path_params");
}

#[test]
fn patterns_keep_templates_and_globs() {
    for (input, expected) in [
        ("file:///docs/{+path}", Ok("file:///docs/{+path}")),
        ("FILE:///Docs/./{name}.md", Ok("file:///Docs/{name}.md")),
        ("file:///docs/a?.txt", Ok("file:///docs/a?.txt")),
        ("file:///docs/*", Ok("file:///docs/*")),
        ("file:*", Ok("file:*")),
        ("*", Ok("*")),
        ("{+uri}", Ok("{+uri}")),
        ("docs/*", Err(BadScheme)),
        ("%41urn:x", Err(BadScheme)),
        ("db://{schema}/reports", Ok("db://{schema}/reports")),
        ("DB://{Schema}.X/r", Ok("db://{Schema}.x/r")),
        ("acme://*", Ok("acme://*")),
        ("repo://x{/owner,name}", Ok("repo://x{/owner,name}")),
        ("search://q{?term,limit}", Ok("search://q{?term,limit}")),
        ("https://x/s?q=%7e{&page}", Ok("https://x/s?q=~{&page}")),
        (
            "file:///docs/caf%c3%a9/{x}",
            Ok("file:///docs/caf%C3%A9/{x}"),
        ),
        ("file:///{", Ok("file:///{")),
        ("file://host/{+path}", Err(FileHost)),
        ("file:///docs/..%2f{x}", Err(EncodedSlash)),
        ("db://h/x#frag", Err(Fragment)),
        ("db://h//{x}", Err(RepeatedSlash)),
        ("file:///srv/public//{+path}", Err(RepeatedSlash)),
        ("file:///docs/", Ok("file:///docs")),
        ("file:///docs/{x}/", Ok("file:///docs/{x}")),
        ("note:public/*", Ok("note:public/*")),
        ("note:public/{+path}", Ok("note:public/{+path}")),
        ("note:public/../{x}", Err(DotSegment)),
        ("note://public/../{+path}", Ok("note://public/{+path}")),
        ("file:///a/../../{+path}", Ok("file:///{+path}")),
        ("kb:/{+path}", Ok("kb:///{+path}")),
        ("https://h/a;{x}", Err(PathParams)),
        ("https://h/a{;x}", Ok("https://h/a{;x}")),
        ("https://h/a?", Ok("https://h/a")),
    ] {
        assert_eq!(
            canonical_pattern(input).as_deref().map_err(|e| *e),
            expected,
            "{input:?}"
        );
    }
}

#[test]
fn linear_time() {
    let long = format!("file:///{}", "a/../".repeat(20_000));
    let start = std::time::Instant::now();
    assert_eq!(canonical(&long).as_deref(), Ok("file:///"));
    let dots = format!("db://h/{}", "%2e/".repeat(20_000));
    assert_eq!(canonical(&dots).as_deref(), Ok("db://h/"));
    let host = format!("db://{}/x", "1.".repeat(30_000));
    assert_eq!(canonical(&host), Err(BadHost));
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
}

/// Random spellings from tricky pieces: never a panic, and the canonical form is a fixed point
/// (deciding twice cannot change the answer), in both modes.
#[test]
fn random_spellings_are_stable() {
    const PIECES: &[&str] = &[
        "file:",
        "db:",
        "note:",
        "kb:/",
        "./",
        "../",
        "https:",
        "urn:",
        "//",
        "/",
        "/",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2f",
        "%5c",
        "%25",
        "%",
        "%41",
        "%7e",
        "%3a",
        "%3B",
        "%c3",
        "%a9",
        "%ff",
        "a",
        "B",
        ":",
        "|",
        "@",
        "[",
        "]",
        "[::1]",
        "?",
        "#",
        "{",
        "}",
        "{+p}",
        "*",
        "é",
        "ｌ",
        "localhost",
        "LOCALHOST.",
        "127.1",
        "0x7f",
        "0",
        ";",
        " ",
        "\\",
        "c:",
        "C|",
        ":80",
        ":443",
        "~",
        "\t",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..50_000 {
        let len = next() % 10;
        let s: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        for f in [canonical, canonical_pattern] {
            if let Ok(c) = f(&s) {
                assert_eq!(f(&c).as_deref(), Ok(&*c), "{s:?} → {c:?}");
            }
        }
        if let Ok(c) = canonical(&s) {
            assert!(
                c.is_ascii() && !c.contains(['\\', '#', ' ']),
                "{s:?} → {c:?}"
            );
        }
    }
}
