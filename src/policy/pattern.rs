//! Name patterns of the policy: globs (`*` any run of characters, `?` one character) for
//! methods, tools, prompts, subjects, groups and claims, and for resources also RFC 6570 URI
//! templates (`{var}` one path segment, `{+var}` and `{#var}` anything, `{/var}` a `/` and a
//! segment, `{?a,b}` an optional query). Patterns are compiled once, when the policy loads.

use std::fmt;

use crate::mcp::uri;

/// A compiled pattern. Literal patterns compare as strings; the rest run a small backtracking
/// matcher over characters (names and URIs are short).
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Literal,
    /// `*`
    Any,
    /// `abc*`
    Prefix(String),
    Tokens(Vec<Token>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Token {
    Lit(String),
    /// `*`: any run of characters, empty included.
    Star,
    /// `?`: exactly one character.
    One,
    /// `{var}`: one or more characters other than `/`, `?` and `#`.
    Segment,
    /// `{?a,b}`: nothing, or `?` and the rest.
    Query,
}

impl Pattern {
    /// A glob (`*`, `?`).
    pub fn glob(source: &str) -> Self {
        Self::compile(source, false).expect("globs always compile")
    }

    /// A resource pattern: a glob that may also hold URI-template expressions, in the
    /// canonical form resources are decided in (so `FILE:///docs/./{+path}` is
    /// `file:///docs/{+path}`). A pattern no canonical URI could match is an error.
    pub fn resource(source: &str) -> Result<Self, String> {
        let canon = uri::canonical_pattern(source).map_err(|e| {
            format!(
                "{source:?} cannot be canonicalised ({}: {e}), so no resource URI could match it",
                e.as_str()
            )
        })?;
        Self::compile(&canon, true)
    }

    fn compile(source: &str, templates: bool) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut lit = String::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::One,
                '{' if templates => {
                    let mut expr = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        expr.push(c);
                    }
                    if !closed {
                        return Err(format!("{source:?} has an unclosed '{{'"));
                    }
                    template_tokens(&expr, source, &mut lit, &mut tokens)?;
                    continue;
                }
                c => {
                    lit.push(c);
                    continue;
                }
            };
            if !lit.is_empty() {
                tokens.push(Token::Lit(std::mem::take(&mut lit)));
            }
            // `**` is `*`.
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
        }
        if !lit.is_empty() {
            tokens.push(Token::Lit(lit));
        }
        let kind = match tokens.as_slice() {
            [] | [Token::Lit(_)] => Kind::Literal,
            [Token::Star] => Kind::Any,
            [Token::Lit(p), Token::Star] => Kind::Prefix(p.clone()),
            _ => Kind::Tokens(tokens),
        };
        Ok(Self {
            source: source.to_string(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The pattern names exactly one string (no wildcard, no template).
    pub fn literal(&self) -> Option<&str> {
        matches!(self.kind, Kind::Literal).then_some(self.source.as_str())
    }

    pub fn is_match(&self, s: &str) -> bool {
        match &self.kind {
            Kind::Literal => self.source == s,
            Kind::Any => true,
            Kind::Prefix(p) => s.starts_with(p.as_str()),
            Kind::Tokens(t) if is_glob(t) => match_glob(t, s),
            Kind::Tokens(t) => match_tokens(t, s),
        }
    }

    /// Every string this pattern matches is matched by `other` too (a sound, incomplete test:
    /// `false` when unsure). Used to find rules shadowed by an earlier one.
    pub fn within(&self, other: &Pattern) -> bool {
        match (&self.kind, &other.kind) {
            (_, Kind::Any) => true,
            (Kind::Literal, _) => other.is_match(&self.source),
            (Kind::Prefix(a), Kind::Prefix(b)) => a.starts_with(b.as_str()),
            _ => self.source == other.source,
        }
    }
}

/// The tokens of one `{…}` expression. Operators: none (segment), `+`/`#` (anything), `/`
/// (a slash and a segment per variable), `?`/`&` (optional query), `.` (a dot and a segment).
fn template_tokens(
    expr: &str,
    source: &str,
    lit: &mut String,
    tokens: &mut Vec<Token>,
) -> Result<(), String> {
    let (op, vars) = match expr.chars().next() {
        Some(c @ ('+' | '#' | '/' | '?' | '&' | '.')) => (Some(c), &expr[1..]),
        _ => (None, expr),
    };
    let valid = !vars.is_empty()
        && vars.split(',').all(|v| {
            let v = v.strip_suffix('*').unwrap_or(v);
            let v = v.split(':').next().unwrap_or(v);
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '%'))
        });
    if !valid {
        return Err(format!(
            "{{{expr}}} in {source:?} is not a URI template expression"
        ));
    }
    let flush = |tokens: &mut Vec<Token>, lit: &mut String| {
        if !lit.is_empty() {
            tokens.push(Token::Lit(std::mem::take(lit)));
        }
    };
    match op {
        None => {
            flush(tokens, lit);
            tokens.push(Token::Segment);
        }
        Some('+' | '#') => {
            if op == Some('#') {
                lit.push('#');
            }
            flush(tokens, lit);
            if tokens.last() != Some(&Token::Star) {
                tokens.push(Token::Star);
            }
        }
        Some('/' | '.') if vars.ends_with('*') => {
            // An exploded list: any number of segments.
            flush(tokens, lit);
            if tokens.last() != Some(&Token::Star) {
                tokens.push(Token::Star);
            }
        }
        Some(c @ ('/' | '.')) => {
            for _ in vars.split(',') {
                lit.push(c);
                flush(tokens, lit);
                tokens.push(Token::Segment);
            }
        }
        _ => {
            flush(tokens, lit);
            tokens.push(Token::Query);
        }
    }
    Ok(())
}

fn is_glob(tokens: &[Token]) -> bool {
    tokens
        .iter()
        .all(|t| matches!(t, Token::Lit(_) | Token::Star | Token::One))
}

/// `*`/`?` globs in linear time: on a mismatch, only the last `*` is retried one character
/// further (the classic two-pointer matcher), so no input can make matching explode.
fn match_glob(tokens: &[Token], s: &str) -> bool {
    let (mut t, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(tok) = tokens.get(t) {
            let step = match tok {
                Token::Star => {
                    star = Some((t, i));
                    t += 1;
                    continue;
                }
                Token::Lit(l) => s[i..].starts_with(l.as_str()).then_some(l.len()),
                Token::One => s[i..].chars().next().map(char::len_utf8),
                Token::Segment | Token::Query => None,
            };
            if let Some(n) = step {
                t += 1;
                i += n;
                continue;
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch (or input left over): let the last `*` take one more character.
        let Some((st, si)) = star else {
            return false;
        };
        let Some(c) = s[si..].chars().next() else {
            return false;
        };
        star = Some((st, si + c.len_utf8()));
        t = st + 1;
        i = si + c.len_utf8();
    }
}

/// Templates: backtracking, fine for the bounded lengths `Policy::decide` lets through.
fn match_tokens(tokens: &[Token], s: &str) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match first {
        Token::Lit(l) => s
            .strip_prefix(l.as_str())
            .is_some_and(|tail| match_tokens(rest, tail)),
        Token::One => {
            let mut chars = s.chars();
            chars.next().is_some() && match_tokens(rest, chars.as_str())
        }
        Token::Star => {
            if rest.is_empty() {
                return true;
            }
            s.char_indices()
                .map(|(i, _)| i)
                .chain([s.len()])
                .any(|i| match_tokens(rest, &s[i..]))
        }
        Token::Segment => {
            let end = s.find(['/', '?', '#']).unwrap_or(s.len());
            (1..=end)
                .filter(|&i| s.is_char_boundary(i))
                .any(|i| match_tokens(rest, &s[i..]))
        }
        Token::Query => {
            match_tokens(rest, s)
                || (s.starts_with('?') && {
                    let end = s.find('#').unwrap_or(s.len());
                    (1..=end)
                        .filter(|&i| s.is_char_boundary(i))
                        .any(|i| match_tokens(rest, &s[i..]))
                })
        }
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str, s: &str) -> bool {
        Pattern::glob(p).is_match(s)
    }

    fn r(p: &str, s: &str) -> bool {
        Pattern::resource(p).unwrap().is_match(s)
    }

    #[test]
    fn globs() {
        assert!(g("tools/call", "tools/call"));
        assert!(!g("tools/call", "tools/calls"));
        assert!(g("resources/*", "resources/templates/list"));
        assert!(!g("resources/*", "prompts/list"));
        assert!(g("*", ""));
        assert!(g("search_*", "search_docs"));
        assert!(g("*_admin", "db_admin"));
        assert!(!g("*_admin", "db_admins"));
        assert!(g("a*b*c", "aXXbYYc"));
        assert!(!g("a*b*c", "aXXbYY"));
        assert!(g("get_?", "get_ü"));
        assert!(!g("get_?", "get_"));
        assert!(g("**", "x"));
    }

    #[test]
    fn templates() {
        assert!(r("file:///docs/{name}", "file:///docs/readme.md"));
        assert!(!r("file:///docs/{name}", "file:///docs/a/b.md"));
        assert!(!r("file:///docs/{name}", "file:///docs/"));
        assert!(r("file:///docs/{+path}", "file:///docs/a/b.md"));
        assert!(r("db://{schema}/{table}", "db://public/users"));
        assert!(!r("db://{schema}/{table}", "db://public"));
        assert!(r("repo://x{/owner,name}", "repo://x/alice/proj"));
        assert!(r("search://q{?term,limit}", "search://q"));
        assert!(r("search://q{?term,limit}", "search://q?term=a&limit=3"));
        assert!(!r("search://q{?term}", "search://qx"));
        assert!(r("https://x/{id}.json", "https://x/7.json"));
        assert!(r("file:///*", "file:///etc/passwd"));
        assert!(Pattern::resource("file:///{").is_err());
        assert!(Pattern::resource("file:///{a b}").is_err());
        assert!(Pattern::resource("file:///{}").is_err());
    }

    #[test]
    fn resource_patterns_are_canonical() {
        let canon = |p: &str| Pattern::resource(p).map(|p| p.as_str().to_string());
        for (raw, norm) in [
            ("file:///docs/readme.md", "file:///docs/readme.md"),
            ("FILE:///docs/../secret/x", "file:///secret/x"),
            ("file:///docs/./a/%73ecret", "file:///docs/a/secret"),
            ("file:///a/b/../../../etc", "file:///etc"),
            (
                "HTTPS://Example.COM/A/%3a/b?q=%7e",
                "https://example.com/A/%3A/b?q=~",
            ),
            ("db://{schema}/reports", "db://{schema}/reports"),
            ("urn:x:%41", "urn:x:A"),
            ("file:///d/é", "file:///d/%C3%A9"),
            ("file://localhost/docs/{+path}", "file:///docs/{+path}"),
        ] {
            assert_eq!(canon(raw).as_deref(), Ok(norm), "{raw}");
        }
        // What no canonical URI can be is a load error that says why.
        for (raw, reason) in [
            ("https://example.com/A/%2f/b", "encoded_slash"),
            ("db://h/x#f", "fragment"),
            ("file://server/share/{+path}", "file_host"),
        ] {
            let err = canon(raw).unwrap_err();
            assert!(err.contains(reason) && err.contains(raw), "{raw}: {err}");
        }
    }

    #[test]
    fn globs_are_linear() {
        let long = "a".repeat(100_000);
        let p = Pattern::glob("*a*a*a*a*a*b");
        let start = std::time::Instant::now();
        assert!(!p.is_match(&long));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(Pattern::glob("*a*b").is_match("xxaxxbxxab"));
        assert!(Pattern::glob("a?c*").is_match("abcdef"));
        assert!(!Pattern::glob("a?c").is_match("ac"));
        assert!(
            Pattern::resource("repo://x{/path*}")
                .unwrap()
                .is_match("repo://x/a/b/c")
        );
        assert!(
            Pattern::resource("s://q{?a}{&b}")
                .unwrap()
                .is_match("s://q?a=1&b=2")
        );
    }

    #[test]
    fn literals_and_containment() {
        assert_eq!(Pattern::glob("echo").literal(), Some("echo"));
        assert_eq!(Pattern::glob("ec*").literal(), None);
        assert_eq!(Pattern::resource("a://{x}").unwrap().literal(), None);
        let p = |s| Pattern::glob(s);
        assert!(p("echo").within(&p("e*")));
        assert!(p("search_docs*").within(&p("search_*")));
        assert!(!p("search_*").within(&p("search_docs*")));
        assert!(p("a*b").within(&p("*")));
        assert!(!p("a*b").within(&p("a*c")));
    }
}
