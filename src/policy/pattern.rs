//! Name patterns of the policy: globs (`*` any run of characters, `?` one character; the
//! crate's one glob matcher, [`crate::glob`]) for methods, tools, prompts, subjects, groups and
//! claims, and for resources also RFC 6570 URI templates (`{var}` one path segment, `{+var}` and
//! `{#var}` anything, `{/var}` a `/` and a segment, `{?a,b}` an optional query). Patterns are
//! compiled once, when the policy loads.

use std::fmt;

use crate::glob::{self, Glob};
use crate::mcp::uri::{self, UriError};

/// Why a resource pattern is refused when the policy loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(
        "{pattern:?} cannot be canonicalised ({}: {error}), so no resource URI could match it",
        .error.as_str()
    )]
    Uncanonical { pattern: String, error: UriError },
    #[error("{pattern:?} has an unclosed '{{'")]
    Unclosed { pattern: String },
    #[error("{{{expr}}} in {pattern:?} is not a URI template expression")]
    NotTemplate { expr: String, pattern: String },
}

/// A compiled pattern: a glob ([`crate::glob`], the matcher rate-limit rules use too), or a
/// resource template whose literal stretches are globs.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    kind: Kind,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Glob(Glob),
    Template(Vec<Part>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Part {
    /// A stretch matched by the glob matcher (`{+var}` is a `*` in it).
    Glob(Glob),
    /// `{var}`: one or more characters other than `/`, `?` and `#`.
    Segment,
    /// `{?a,b}`: nothing, or `?` and the rest.
    Query,
}

impl Pattern {
    /// A glob (`*`, `?`).
    pub fn glob(source: &str) -> Self {
        Self {
            source: source.to_string(),
            kind: Kind::Glob(Glob::new(source)),
        }
    }

    /// A resource pattern: a glob that may also hold URI-template expressions, in the
    /// canonical form resources are decided in (so `FILE:///docs/./{+path}` is
    /// `file:///docs/{+path}`). A pattern no canonical URI could match is an error.
    pub fn resource(source: &str) -> Result<Self, PatternError> {
        let canon = uri::canonical_pattern(source).map_err(|error| PatternError::Uncanonical {
            pattern: source.to_string(),
            error,
        })?;
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = canon.chars();
        while let Some(c) = chars.next() {
            if c != '{' {
                lit.push(c);
                continue;
            }
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
                return Err(PatternError::Unclosed {
                    pattern: canon.into_owned(),
                });
            }
            template_parts(&expr, &canon, &mut lit, &mut parts)?;
        }
        // Without a segment or a query (`{+path}` is a `*`), the whole pattern is one glob.
        let kind = if parts.is_empty() {
            Kind::Glob(Glob::new(&lit))
        } else {
            flush(&mut parts, &mut lit);
            Kind::Template(parts)
        };
        Ok(Self {
            source: canon.into_owned(),
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The pattern names exactly one string (no wildcard, no template).
    pub fn literal(&self) -> Option<&str> {
        match &self.kind {
            Kind::Glob(g) => g.literal(),
            Kind::Template(_) => None,
        }
    }

    pub fn is_match(&self, s: &str) -> bool {
        match &self.kind {
            Kind::Glob(g) => g.is_match(s),
            Kind::Template(parts) => match_parts(parts, s),
        }
    }

    /// Every string this pattern matches is matched by `other` too (a sound, incomplete test:
    /// `false` when unsure). Used to find rules shadowed by an earlier one.
    pub fn within(&self, other: &Pattern) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Glob(a), Kind::Glob(b)) => a.within(b),
            (Kind::Glob(a), Kind::Template(_)) if a.literal().is_some() => {
                other.is_match(&self.source)
            }
            (Kind::Template(_), Kind::Glob(b)) if b.is_any() => true,
            _ => self.source == other.source,
        }
    }
}

/// The literal stretch so far, as a glob part.
fn flush(parts: &mut Vec<Part>, lit: &mut String) {
    if !lit.is_empty() {
        parts.push(Part::Glob(Glob::new(&std::mem::take(lit))));
    }
}

/// The parts of one `{…}` expression. Operators: none (segment), `+`/`#` (anything), `/`
/// (a slash and a segment per variable), `?`/`&` (optional query), `.` (a dot and a segment).
fn template_parts(
    expr: &str,
    source: &str,
    lit: &mut String,
    parts: &mut Vec<Part>,
) -> Result<(), PatternError> {
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
        return Err(PatternError::NotTemplate {
            expr: expr.to_string(),
            pattern: source.to_string(),
        });
    }
    match op {
        None => {
            flush(parts, lit);
            parts.push(Part::Segment);
        }
        Some('#') => lit.push_str("#*"),
        // `+`, or an exploded list (`{/path*}`): any number of segments.
        Some('+') => lit.push('*'),
        Some('/' | '.') if vars.ends_with('*') => lit.push('*'),
        Some(c @ ('/' | '.')) => {
            for _ in vars.split(',') {
                lit.push(c);
                flush(parts, lit);
                parts.push(Part::Segment);
            }
        }
        _ => {
            flush(parts, lit);
            parts.push(Part::Query);
        }
    }
    Ok(())
}

/// Templates: each glob part hands every end of its run to the parts after it; segments and
/// queries backtrack, fine for the bounded lengths `Policy::decide` lets through.
fn match_parts(parts: &[Part], s: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return s.is_empty();
    };
    match first {
        Part::Glob(g) => match g.literal() {
            Some(l) => s
                .strip_prefix(l)
                .is_some_and(|tail| match_parts(rest, tail)),
            None if rest.is_empty() => g.is_match(s),
            None => glob::match_then(g.as_str(), s, &mut |tail| match_parts(rest, tail)),
        },
        Part::Segment => {
            let end = s.find(['/', '?', '#']).unwrap_or(s.len());
            (1..=end)
                .filter(|&i| s.is_char_boundary(i))
                .any(|i| match_parts(rest, &s[i..]))
        }
        Part::Query => {
            match_parts(rest, s)
                || (s.starts_with('?') && {
                    let end = s.find('#').unwrap_or(s.len());
                    (1..=end)
                        .filter(|&i| s.is_char_boundary(i))
                        .any(|i| match_parts(rest, &s[i..]))
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
            let err = canon(raw).unwrap_err().to_string();
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
