//! The one glob matcher of the crate: `*` any run of characters (empty included, `/` included),
//! `?` exactly one character, anything else itself — case-sensitive, with no escapes. Policy
//! rules and rate-limit rules both match names with it, so a pattern means the same in each.

use std::fmt;

/// A glob compiled once: the common shapes (a literal, `*`, `prefix*`) skip the matcher.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    shape: Shape,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No wildcard.
    Literal,
    /// Only `*`s.
    Any,
    /// A literal followed by `*`s; the literal is `source[..len]`.
    Prefix(usize),
    Wild,
}

impl Glob {
    pub fn new(source: &str) -> Self {
        let head = source.trim_end_matches('*');
        let shape = if has_wildcard(head) {
            Shape::Wild
        } else if head.len() == source.len() {
            Shape::Literal
        } else if head.is_empty() {
            Shape::Any
        } else {
            Shape::Prefix(head.len())
        };
        Self {
            source: source.to_string(),
            shape,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The glob names exactly one string (it has no wildcard).
    pub fn literal(&self) -> Option<&str> {
        (self.shape == Shape::Literal).then_some(self.source.as_str())
    }

    /// The glob matches every string.
    pub fn is_any(&self) -> bool {
        self.shape == Shape::Any
    }

    pub fn is_match(&self, s: &str) -> bool {
        match self.shape {
            Shape::Literal => self.source == s,
            Shape::Any => true,
            Shape::Prefix(n) => s.starts_with(&self.source[..n]),
            Shape::Wild => is_match(&self.source, s),
        }
    }

    /// Every string this glob matches is matched by `other` too (a sound, incomplete test:
    /// `false` when unsure).
    pub fn within(&self, other: &Glob) -> bool {
        match (self.shape, other.shape) {
            (_, Shape::Any) => true,
            (Shape::Literal, _) => other.is_match(&self.source),
            (Shape::Prefix(a), Shape::Prefix(b)) => {
                self.source[..a].starts_with(&other.source[..b])
            }
            _ => self.source == other.source,
        }
    }
}

fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| b == b'*' || b == b'?')
}

/// `pattern` matches the whole of `text`.
pub fn is_match(pattern: &str, text: &str) -> bool {
    match_then(pattern, text, &mut str::is_empty)
}

/// `text` starts with a run that `pattern` matches and `then` accepts what follows it (for
/// patterns that continue past the glob, such as URI templates). Every end of such a run is
/// offered to `then`, earliest first, until it accepts one.
///
/// The classic two-pointer matcher: on a mismatch only the last `*` is retried one character
/// further, so time is at most the product of the lengths (and `then` is called at most once
/// per character), whatever the input.
pub fn match_then(pattern: &str, text: &str, then: &mut dyn FnMut(&str) -> bool) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    // Where the pattern resumes after the last `*`, and where in the text that `*` ends.
    let mut star: Option<(usize, usize)> = None;
    loop {
        // `ti` is on a character boundary whenever `pi` is (patterns are `str`s too, and a
        // literal byte only matches the same byte), so the slicing below cannot panic.
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                star = Some((pi, ti));
                continue;
            }
            Some(b'?') => {
                if let Some(c) = text[ti..].chars().next() {
                    pi += 1;
                    ti += c.len_utf8();
                    continue;
                }
            }
            Some(&b) => {
                if t.get(ti) == Some(&b) {
                    pi += 1;
                    ti += 1;
                    continue;
                }
            }
            None => {
                if then(&text[ti..]) {
                    return true;
                }
            }
        }
        // Mismatch, or a run `then` refused: let the last `*` take one more character.
        let Some((sp, st)) = star else {
            return false;
        };
        let Some(c) = text[st..].chars().next() else {
            return false;
        };
        star = Some((sp, st + c.len_utf8()));
        pi = sp;
        ti = st + c.len_utf8();
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compiled glob and the bare matcher agree, and the answer is `want`.
    fn check(p: &str, s: &str, want: bool) {
        assert_eq!(is_match(p, s), want, "is_match({p:?}, {s:?})");
        assert_eq!(
            Glob::new(p).is_match(s),
            want,
            "Glob({p:?}).is_match({s:?})"
        );
    }

    #[test]
    fn stars_and_question_marks() {
        for (p, s, want) in [
            ("tools/call", "tools/call", true),
            ("tools/call", "tools/calls", false),
            ("", "", true),
            ("", "x", false),
            ("*", "", true),
            ("**", "x", true),
            // `*` crosses `/`: globs name methods and tools, not paths.
            ("resources/*", "resources/templates/list", true),
            ("resources/*", "prompts/list", false),
            ("*_admin", "db_admin", true),
            ("*_admin", "db_admins", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXbYbc", true),
            ("a*b*c", "aXXbYY", false),
            ("db_*_read", "db_users_write", false),
            // `?` is one character: not none, not two, and a whole non-ASCII one.
            ("get_?", "get_x", true),
            ("get_?", "get_ü", true),
            ("get_?", "get_", false),
            ("get_?", "get_xy", false),
            ("a?c*", "abcdef", true),
            ("a?c", "ac", false),
            ("*?", "ü", true),
            ("?*?", "ü", false),
            ("é*é", "éaé", true),
            ("*é", "aé", true),
            // Case matters, and nothing escapes.
            ("Tools/*", "tools/call", false),
            ("a\\*", "a\\b", true),
            ("a\\*", "a*", false),
        ] {
            check(p, s, want);
        }
    }

    #[test]
    fn shapes() {
        assert_eq!(Glob::new("echo").literal(), Some("echo"));
        assert_eq!(Glob::new("ec*").literal(), None);
        assert_eq!(Glob::new("e?ho").literal(), None);
        assert!(Glob::new("**").is_any());
        assert!(!Glob::new("?*").is_any());
        assert!(!Glob::new("?").is_match(""));
        assert!(Glob::new("a?*").is_match("ab"));
        assert!(!Glob::new("a?*").is_match("a"));
    }

    #[test]
    fn containment() {
        let g = Glob::new;
        assert!(g("echo").within(&g("e*")));
        assert!(g("echo").within(&g("e?ho")));
        assert!(g("search_docs*").within(&g("search_*")));
        assert!(!g("search_*").within(&g("search_docs*")));
        assert!(g("a*b").within(&g("*")));
        assert!(!g("a*b").within(&g("a*c")));
    }

    #[test]
    fn time_is_bounded() {
        let long = "a".repeat(100_000);
        let start = std::time::Instant::now();
        assert!(!is_match("*a*a*a*a*a*b", &long));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn continuations_see_every_end() {
        let ends = |p: &str, s: &str| {
            let mut seen = Vec::new();
            match_then(p, s, &mut |rest| {
                seen.push(s.len() - rest.len());
                false
            });
            seen
        };
        assert_eq!(ends("a*b", "abXb"), [2, 4]);
        assert_eq!(ends("*", "ab"), [0, 1, 2]);
        assert_eq!(ends("x", "ab"), Vec::<usize>::new());
        assert_eq!(ends("a?", "aüb"), [3]);
        assert!(match_then("a*/", "ab/c/d", &mut |rest| rest == "d"));
    }
}
