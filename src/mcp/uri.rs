//! Canonical resource URIs: every spelling that names one resource becomes one string, and what
//! cannot be canonicalised safely (an upstream might read it as another resource) is refused.
//! Policy decides on this form; rule patterns are canonicalised with the same rules.
//!
//! The canonical form: scheme lower-cased; percent-escapes with upper-case hex, unreserved
//! characters decoded, characters a URI cannot hold (non-ASCII, space, `"`, `{`, …) encoded as
//! UTF-8; `.`/`..` segments removed after decoding (a `..` above the root, and any `.`/`..` in
//! an opaque path like `note:a/../b`, refused); `scheme:/path` as `scheme:///path`; an empty
//! query dropped; hosts lower-cased, without a trailing dot or a default port, numeric IPv4
//! spellings in dotted decimal, IPv6 compressed, and every spelling of this machine as
//! `localhost`; `file` URIs (RFC 8089) as `file:///path`, with every `%XX` of the path decoded
//! unless the character must stay encoded, no trailing slash (but at the root), and a DOS drive
//! as `/C:`. Empty segments (`a//b`) are refused everywhere: a template variable that starts
//! with `/` is an absolute path to the handler that joins it.

mod host;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

/// Why a URI cannot be decided on. The reason strings are a fixed set (metric labels, audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("the URI has no scheme")]
    BadScheme,
    #[error("a '%' is not followed by two hex digits")]
    BadPercent,
    #[error("percent-encoded bytes are not UTF-8")]
    BadUtf8,
    #[error("the URI holds a NUL character")]
    Nul,
    #[error("the URI holds a control character")]
    Control,
    #[error("the URI starts or ends with a space")]
    Whitespace,
    #[error("a backslash is read as a slash by WHATWG parsers")]
    Backslash,
    #[error("the path holds an encoded slash")]
    EncodedSlash,
    #[error("the path holds an encoded backslash")]
    EncodedBackslash,
    #[error("the path is percent-encoded twice")]
    DoubleEncoding,
    #[error("a path segment is read as a dot segment by some servers")]
    DotSegment,
    #[error("a `..` segment climbs above the root")]
    DotAboveRoot,
    #[error("a `;` in the path starts parameters parsers split off")]
    PathParams,
    #[error("the path has an empty segment")]
    RepeatedSlash,
    #[error("servers drop the fragment")]
    Fragment,
    #[error("the authority holds user information")]
    Userinfo,
    #[error("the host is malformed")]
    BadHost,
    #[error("the host is not ASCII")]
    NonAsciiHost,
    #[error("the port is malformed")]
    BadPort,
    #[error("the scheme requires a host")]
    MissingHost,
    #[error("a file URI names a host other than this machine")]
    FileHost,
    #[error("servers ignore the query of a file URI")]
    FileQuery,
    #[error("a file URI has a relative path")]
    FileRelative,
    #[error("a DOS drive letter is spelled in a way parsers read differently")]
    Drive,
    #[error("a file path starting with `//` is a UNC network path on Windows")]
    Unc,
    #[error("a `:` after a DOS drive names an alternate data stream")]
    WindowsStream,
}

impl UriError {
    pub fn as_str(self) -> &'static str {
        match self {
            UriError::BadScheme => "bad_scheme",
            UriError::BadPercent => "bad_percent",
            UriError::BadUtf8 => "bad_utf8",
            UriError::Nul => "nul",
            UriError::Control => "control",
            UriError::Whitespace => "whitespace",
            UriError::Backslash => "backslash",
            UriError::EncodedSlash => "encoded_slash",
            UriError::EncodedBackslash => "encoded_backslash",
            UriError::DoubleEncoding => "double_encoding",
            UriError::DotSegment => "dot_segment",
            UriError::DotAboveRoot => "dot_above_root",
            UriError::PathParams => "path_params",
            UriError::RepeatedSlash => "repeated_slash",
            UriError::Fragment => "fragment",
            UriError::Userinfo => "userinfo",
            UriError::BadHost => "bad_host",
            UriError::NonAsciiHost => "non_ascii_host",
            UriError::BadPort => "bad_port",
            UriError::MissingHost => "missing_host",
            UriError::FileHost => "file_host",
            UriError::FileQuery => "file_query",
            UriError::FileRelative => "file_relative",
            UriError::Drive => "drive_letter",
            UriError::Unc => "unc",
            UriError::WindowsStream => "windows_stream",
        }
    }
}

/// The canonical form of a resource URI, borrowed when `uri` already is canonical. Linear in
/// the length of `uri`.
pub fn canonical(uri: &str) -> Result<Cow<'_, str>, UriError> {
    Canon::new(uri, false).run()
}

/// The canonical form of a policy rule's resource pattern: the rules of [`canonical`] applied to
/// the literal text, with RFC 6570 expressions (`{+path}`, `{?q}`, …) and glob `*` kept as they
/// are. A `?` splits off the query as in a URI, except in `file` patterns (a file URI has no
/// query), where it stays the one-character glob. A pattern without a scheme must start with a
/// glob or an expression (`*`, `{+uri}`) and only gets the generic rules (percent-escapes,
/// refused characters).
pub fn canonical_pattern(pattern: &str) -> Result<Cow<'_, str>, UriError> {
    // An unclosed or nested `{` is left as written for the pattern compiler to report.
    let mut open = false;
    for b in pattern.bytes() {
        match b {
            b'{' if open => return Ok(Cow::Borrowed(pattern)),
            b'{' => open = true,
            b'}' => open = false,
            _ => {}
        }
    }
    if open {
        return Ok(Cow::Borrowed(pattern));
    }
    Canon::new(pattern, true).run()
}

/// Schemes whose WHATWG parsers read any number of slashes as `//` and need a host.
const SPECIAL: [(&str, Option<u16>); 5] = [
    ("http", Some(80)),
    ("https", Some(443)),
    ("ws", Some(80)),
    ("wss", Some(443)),
    ("ftp", Some(21)),
];

/// Schemes whose path Python's `urlparse` splits at a `;` (`urllib.parse.uses_params`: the
/// parameters are dropped from the path), and WebSocket, whose servers are HTTP servers.
const PARAMS: [&str; 17] = [
    "ftp", "hdl", "prospero", "http", "imap", "https", "shttp", "rtsp", "rtsps", "rtspu", "sip",
    "sips", "mms", "sftp", "tel", "ws", "wss",
];

/// What a run of text is, for which characters may stay raw and which escapes are refused.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// A path segment of a hierarchical URI.
    Segment,
    /// A path segment of a `file` URI: every escape decoded unless the character must stay so.
    FileSegment,
    /// The path of a URI without `//` or a leading `/` (`urn:x:y`).
    Opaque,
    Query,
}

struct Canon<'a> {
    src: &'a str,
    out: Out<'a>,
    /// Rule-pattern mode: `{…}` expressions are kept, and `?` in file paths is a glob.
    pattern: bool,
    /// Pending bytes of a percent-encoded UTF-8 sequence: (bytes, how many, how many needed).
    utf8: ([u8; 4], usize, usize),
    /// The scheme is one of [`PARAMS`]: a raw `;` in the path is refused.
    params: bool,
}

impl<'a> Canon<'a> {
    fn new(src: &'a str, pattern: bool) -> Self {
        Self {
            src,
            out: Out::new(src),
            pattern,
            utf8: ([0; 4], 0, 0),
            params: false,
        }
    }

    fn run(mut self) -> Result<Cow<'a, str>, UriError> {
        let src = self.src;
        for b in src.bytes() {
            match b {
                0 => return Err(UriError::Nul),
                0x01..=0x1f | 0x7f => return Err(UriError::Control),
                b'\\' => return Err(UriError::Backslash),
                // Servers drop the fragment, so `x#a` would escape a rule on `x`. (Patterns
                // may hold `{#var}`; `text` refuses a `#` outside an expression.)
                b'#' if !self.pattern => return Err(UriError::Fragment),
                _ => {}
            }
        }
        // WHATWG parsers strip leading and trailing spaces; others keep them.
        if src.starts_with(' ') || src.ends_with(' ') {
            return Err(UriError::Whitespace);
        }
        let Some((scheme, rest)) = split_scheme(src) else {
            // Every canonical URI has a scheme: a pattern without one can only be a glob or
            // template over whole URIs (`*`, `{+uri}`).
            if self.pattern && src.starts_with(['*', '?', '{']) {
                self.text(src, Part::Opaque)?;
                return self.finish();
            }
            return Err(UriError::BadScheme);
        };
        let scheme_lower = scheme.to_ascii_lowercase();
        self.out.push_str(&scheme_lower);
        self.out.push_str(":");
        if scheme_lower == "file" {
            self.file(rest)?;
            return self.finish();
        }
        let special = SPECIAL.iter().find(|(s, _)| *s == scheme_lower);
        self.params = PARAMS.contains(&scheme_lower.as_str());
        let (path, query) = match self.find(rest, b"?") {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if let Some(after) = path.strip_prefix("//") {
            let end = self.find(after, b"/").unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            self.out.push_str("//");
            if authority.is_empty() && special.is_some() {
                // `http:///x` is `http://x/` to WHATWG parsers and a path to others.
                return Err(UriError::MissingHost);
            }
            host::authority(&mut self, authority, special.and_then(|s| s.1))?;
            if path.is_empty() && special.is_some() {
                // `https://h` is `https://h/` (RFC 3986 §6.2.3).
                self.out.push_str("/");
            }
            self.path(path, false)?;
        } else if special.is_some() {
            return Err(UriError::MissingHost);
        } else if path.starts_with('/') {
            // `kb:/x` is `kb:///x`: Python, Node and Go read an empty host in both.
            self.out.push_str("//");
            self.path(path, false)?;
        } else {
            self.opaque(path)?;
        }
        // `x?` is `x`: parsers read an empty query as none.
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            self.out.push_str("?");
            self.text(query, Part::Query)?;
        }
        self.finish()
    }

    fn finish(mut self) -> Result<Cow<'a, str>, UriError> {
        self.utf8_end()?;
        Ok(self.out.finish())
    }

    /// RFC 8089: `file:/p`, `file:///p` and `file://<this machine>/p` are `file:///p`; a DOS
    /// drive (`c:`, `C|`, at the root or without one) is `/C:`. Another host, a relative path,
    /// a query or a fragment cannot be decided on.
    fn file(&mut self, rest: &str) -> Result<(), UriError> {
        if !self.pattern && rest.contains('?') {
            return Err(UriError::FileQuery);
        }
        let (authority, path) = if let Some(after) = rest.strip_prefix("//") {
            let end = self.find(after, b"/").unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            if !authority.is_empty() && !host::is_this_machine(authority) {
                return Err(UriError::FileHost);
            }
            (authority, path)
        } else if rest.starts_with('/') || drive(rest).is_some() {
            ("", rest)
        } else if self.pattern && rest.starts_with(['*', '{']) {
            // `file:*`: a glob over every file URI.
            return self.text(rest, Part::Opaque);
        } else {
            return Err(UriError::FileRelative);
        };
        // `file:////server/share` is `/server/share` to POSIX and the share `\\server\share`
        // to Windows parsers (Node's fileURLToPath, nturl2path): no one reading.
        if path.starts_with("//") {
            return Err(UriError::Unc);
        }
        self.out.push_str("//");
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        if let Some(letter) = drive(trimmed) {
            // With a drive, Windows parsers read any host but `localhost` as a UNC share
            // (`file://127.0.0.1/c:/x` is `\\127.0.0.1\c:\x`).
            if !(authority.is_empty() || authority.eq_ignore_ascii_case("localhost")) {
                return Err(UriError::FileHost);
            }
            self.out.push_str("/");
            self.out.push(letter.to_ascii_uppercase());
            self.out.push_str(":");
            // The drive is the root: `..` does not climb above it (as WHATWG parsers read it).
            let start = self.out.len();
            self.path(&trimmed[2..], true)?;
            // `C:/secret.txt::$DATA` is `C:/secret.txt` to Windows. (A pattern's `{var:3}`
            // is a template prefix, not a stream.)
            if !self.pattern && self.out.as_str()[start..].contains(':') {
                return Err(UriError::WindowsStream);
            }
            return Ok(());
        }
        if path.is_empty() {
            self.out.push_str("/");
            return Ok(());
        }
        self.path(path, true)
    }

    /// A path that is empty or starts with `/`: segments decoded, dot segments removed. Empty
    /// segments are refused (their meaning is the server's, and a template variable starting
    /// with `/` is an absolute path to a handler that joins it), and so is a `..` above the
    /// root (`/../x` is `/x` to WHATWG parsers, `/../x` to Python, and `/srv/root/../x` to a
    /// handler that joins the path under its own root). A trailing slash is kept, but not in a
    /// file path (but the root): `/a/` and `/a/.` are `/a` to `normpath` and `filepath.Clean`.
    fn path(&mut self, path: &str, file: bool) -> Result<(), UriError> {
        let Some(mut rest) = path.strip_prefix('/') else {
            return Ok(());
        };
        let start = self.out.len();
        // Where each kept segment's `/` starts, so `..` can drop the last one.
        let mut kept: Vec<usize> = Vec::new();
        let part = if file {
            Part::FileSegment
        } else {
            Part::Segment
        };
        // Whether a `.` or `..` segment came before (see `drive_like`).
        let mut dots = false;
        let mut first = true;
        loop {
            let end = self.find(rest, b"/");
            let seg = &rest[..end.unwrap_or(rest.len())];
            let last = end.is_none();
            if file && (first || dots) && drive_like(seg) {
                return Err(UriError::Drive);
            }
            first = false;
            let mark = self.out.len();
            self.out.push_str("/");
            self.text(seg, part)?;
            self.utf8_end()?;
            match dot_segment(&self.out.as_str()[mark + 1..]) {
                Dot::No if seg.is_empty() && !last => return Err(UriError::RepeatedSlash),
                Dot::No => kept.push(mark),
                Dot::One => {
                    dots = true;
                    self.out.truncate(if last { mark + 1 } else { mark });
                }
                Dot::Two => {
                    dots = true;
                    // A rule pattern is matched against canonical URIs, which never climb: in
                    // one, `..` at the root stays there, as the kernel reads it.
                    let to = match kept.pop() {
                        Some(to) => to,
                        None if self.pattern => mark,
                        None => return Err(UriError::DotAboveRoot),
                    };
                    self.out.truncate(to);
                    if last {
                        self.out.push_str("/");
                    }
                }
                Dot::Ambiguous => return Err(UriError::DotSegment),
            }
            match end {
                Some(e) => rest = &rest[e + 1..],
                None => break,
            }
        }
        let len = self.out.len();
        if file && len > start + 1 && self.out.as_str().ends_with('/') {
            self.out.truncate(len - 1);
        }
        self.no_double_encoding(start)
    }

    /// The path of a URI without `//` or a leading `/` (`note:a/b`): as written, but a `.`/`..`
    /// segment (decoded) is refused, since servers that join the path to a directory resolve
    /// it, and so is an empty segment (`note:a//b`).
    fn opaque(&mut self, path: &str) -> Result<(), UriError> {
        let start = self.out.len();
        let mut rest = path;
        loop {
            let end = self.find(rest, b"/");
            let seg = &rest[..end.unwrap_or(rest.len())];
            if seg.is_empty() && end.is_some() {
                return Err(UriError::RepeatedSlash);
            }
            let mark = self.out.len();
            self.text(seg, Part::Opaque)?;
            self.utf8_end()?;
            if !matches!(dot_segment(&self.out.as_str()[mark..]), Dot::No) {
                return Err(UriError::DotSegment);
            }
            match end {
                Some(e) => {
                    self.out.push_str("/");
                    rest = &rest[e + 1..];
                }
                None => break,
            }
        }
        self.no_double_encoding(start)
    }

    /// A server that decodes twice would read `%252F` as `/`: refuse `%25` followed by two hex
    /// digits in what was written since `start`.
    fn no_double_encoding(&self, start: usize) -> Result<(), UriError> {
        let written = &self.out.as_str().as_bytes()[start..];
        let doubled = written.windows(5).any(|w| {
            w[..3].eq_ignore_ascii_case(b"%25")
                && w[3].is_ascii_hexdigit()
                && w[4].is_ascii_hexdigit()
        });
        if doubled {
            Err(UriError::DoubleEncoding)
        } else {
            Ok(())
        }
    }

    /// Writes one run of text in canonical spelling.
    fn text(&mut self, s: &str, part: Part) -> Result<(), UriError> {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c == b'%' {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) else {
                    return Err(UriError::BadPercent);
                };
                self.escaped(h << 4 | l, part)?;
                i += 3;
                continue;
            }
            self.utf8_end()?;
            if c == b'{' && self.pattern {
                // An RFC 6570 expression stays as written (`canonical_pattern` saw it closed).
                let end = s[i..].find('}').map_or(s.len(), |e| i + e + 1);
                self.out.push_str(&s[i..end]);
                i = end;
                continue;
            }
            if c == b'#' {
                return Err(UriError::Fragment);
            }
            if c == b';' && self.params && matches!(part, Part::Segment | Part::Opaque) {
                // `https://h/admin;x` is `/admin` to Python's `urlparse`.
                return Err(UriError::PathParams);
            }
            if c.is_ascii() {
                if raw_ok(c, part, self.pattern) {
                    self.out.push_byte(c);
                } else {
                    self.out.push_escape(c);
                }
                i += 1;
                continue;
            }
            let ch = s[i..].chars().next().expect("i is on a char boundary");
            let mut buf = [0; 4];
            for &byte in ch.encode_utf8(&mut buf).as_bytes() {
                self.out.push_escape(byte);
            }
            i += ch.len_utf8();
        }
        Ok(())
    }

    /// One decoded `%XX`.
    fn escaped(&mut self, v: u8, part: Part) -> Result<(), UriError> {
        if v >= 0x80 {
            self.utf8_byte(v)?;
            self.out.push_escape(v);
            return Ok(());
        }
        self.utf8_end()?;
        match v {
            0 => return Err(UriError::Nul),
            b'/' if part != Part::Query => return Err(UriError::EncodedSlash),
            b'\\' if part != Part::Query => return Err(UriError::EncodedBackslash),
            _ => {}
        }
        let decode = is_unreserved(v) || (part == Part::FileSegment && raw_ok(v, part, false));
        if decode {
            self.out.push_byte(v);
        } else {
            self.out.push_escape(v);
        }
        Ok(())
    }

    /// Checks percent-encoded non-ASCII bytes form UTF-8: servers decode invalid sequences
    /// differently (replacement characters, raw bytes, an error).
    fn utf8_byte(&mut self, v: u8) -> Result<(), UriError> {
        let (buf, n, need) = &mut self.utf8;
        if *n == 0 {
            *need = match v {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => return Err(UriError::BadUtf8),
            };
        } else if v & 0xc0 != 0x80 {
            return Err(UriError::BadUtf8);
        }
        buf[*n] = v;
        *n += 1;
        if *n == *need {
            let ok = std::str::from_utf8(&buf[..*n]).is_ok();
            *n = 0;
            if !ok {
                return Err(UriError::BadUtf8);
            }
        }
        Ok(())
    }

    fn utf8_end(&mut self) -> Result<(), UriError> {
        if self.utf8.1 == 0 {
            Ok(())
        } else {
            Err(UriError::BadUtf8)
        }
    }

    /// The first of `delims` in `s` outside `{…}` expressions (in pattern mode).
    fn find(&self, s: &str, delims: &[u8]) -> Option<usize> {
        let mut depth = false;
        for (i, &c) in s.as_bytes().iter().enumerate() {
            match c {
                b'{' if self.pattern => depth = true,
                b'}' if self.pattern => depth = false,
                c if !depth && delims.contains(&c) => return Some(i),
                _ => {}
            }
        }
        None
    }
}

fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// A DOS drive at the start of a path: `c:` or `c|`, alone or before a `/`.
fn drive(s: &str) -> Option<char> {
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && matches!(b[1], b':' | b'|')
        && matches!(b.get(2), None | Some(b'/'));
    ok.then(|| b[0] as char)
}

/// A segment that starts like a drive (`c:x`, `c|`, `c%3A`). WHATWG parsers treat such a
/// segment specially when it comes first or after `.`/`..` emptied the path (`file:/./C|/` is
/// `file:///C:/`, `file:///c:x/..` keeps `c:x`), and Node's `fileURLToPath` decodes `c%3A` to a
/// drive where Python's `nturl2path` does not: anything but a plain leading drive is refused.
fn drive_like(seg: &str) -> bool {
    let b = seg.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && (matches!(b[1], b':' | b'|')
            || b.get(1..4)
                .is_some_and(|e| e.eq_ignore_ascii_case(b"%3A") || e.eq_ignore_ascii_case(b"%7C")))
}

enum Dot {
    No,
    One,
    Two,
    /// `...`, `. `, `..;x`: read as `.`/`..` by Windows (trailing dots and spaces dropped) or
    /// by servlet containers (`;` parameters dropped).
    Ambiguous,
}

/// Classifies a written (canonical) segment.
fn dot_segment(seg: &str) -> Dot {
    match seg {
        "." => return Dot::One,
        ".." => return Dot::Two,
        _ => {}
    }
    let core = seg.split(';').next().unwrap_or(seg);
    let mut rest = core.as_bytes();
    if rest.is_empty() || !(rest[0] == b'.' || core.starts_with("%20")) {
        return Dot::No;
    }
    while !rest.is_empty() {
        rest = match rest {
            [b'.', r @ ..] => r,
            [b'%', b'2', b'0', r @ ..] => r,
            _ => return Dot::No,
        };
    }
    Dot::Ambiguous
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Whether an ASCII character may appear raw in a `part` (RFC 3986 `pchar`, plus `/` and `?`
/// in opaque paths and queries). `{`/`}` are template characters, handled before this.
fn raw_ok(c: u8, part: Part, pattern: bool) -> bool {
    let pchar = is_unreserved(c) || b"!$&'()*+,;=:@".contains(&c);
    match part {
        Part::Segment => pchar,
        Part::FileSegment => pchar || (pattern && c == b'?'),
        Part::Opaque => pchar || c == b'/' || (pattern && c == b'?'),
        Part::Query => pchar || c == b'/' || c == b'?',
    }
}

/// The output, written as a copy of the input for as long as it is one: an input that already
/// is canonical is returned borrowed, never copied.
struct Out<'a> {
    src: &'a str,
    /// How much of `src` the output equals, while `buf` is `None`.
    pos: usize,
    buf: Option<String>,
}

impl<'a> Out<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            pos: 0,
            buf: None,
        }
    }

    fn push_str(&mut self, s: &str) {
        match &mut self.buf {
            Some(b) => b.push_str(s),
            None if self.src[self.pos..].starts_with(s) => self.pos += s.len(),
            None => {
                let b = self.own();
                b.push_str(s);
            }
        }
    }

    fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    fn push_byte(&mut self, c: u8) {
        debug_assert!(c.is_ascii());
        self.push(c as char);
    }

    fn push_escape(&mut self, v: u8) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let e = [b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]];
        self.push_str(std::str::from_utf8(&e).expect("ASCII"));
    }

    fn own(&mut self) -> &mut String {
        let (src, pos) = (self.src, self.pos);
        self.buf.get_or_insert_with(|| {
            let mut b = String::with_capacity(src.len() + 16);
            b.push_str(&src[..pos]);
            b
        })
    }

    fn len(&self) -> usize {
        self.buf.as_ref().map_or(self.pos, String::len)
    }

    fn as_str(&self) -> &str {
        self.buf.as_deref().unwrap_or(&self.src[..self.pos])
    }

    fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.own().truncate(len);
        }
    }

    fn finish(self) -> Cow<'a, str> {
        match self.buf {
            None if self.pos == self.src.len() => Cow::Borrowed(self.src),
            None => Cow::Owned(self.src[..self.pos].to_string()),
            Some(b) => Cow::Owned(b),
        }
    }
}
