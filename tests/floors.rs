//! The crate's modules stand on floors (docs/architecture.md, "Floors"): a module may name
//! modules on lower floors only, so there is no import cycle between modules. This reads every
//! `crate::…` path in src/ (code, not comments) and fails on any edge that does not go down,
//! naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module of the library and its floor. A new module goes here, on the floor
/// above the highest one it names.
const FLOORS: &[(&str, u32)] = &[
    // Floor 0: name nothing of the crate.
    ("mcp", 0),
    ("identity", 0),
    ("denial", 0),
    ("readiness", 0),
    ("yaml", 0),
    ("glob", 0),
    ("reload", 0),
    // Floor 1 (tls rotates its certificates with reload).
    ("bindings", 1),
    ("metrics", 1),
    ("tls", 1),
    // Tool integrity: pins, scanners (read while the config is, used by the policy's edit).
    ("integrity", 1),
    // Floor 2: the accept loop (TLS included), and the compiled policy.
    ("server", 2),
    ("policy", 2),
    // Floor 3: every config type (policies compile while the config is read).
    ("config", 3),
    // Floor 4: what runs on the config.
    ("auth", 4),
    ("stdio", 4),
    ("ratelimit", 4),
    ("telemetry", 4),
    ("otel", 4),
    ("admin", 4),
    // Floor 5.
    ("audit", 5),
    // Floor 6: forwarding, answer rewriting, the request guard.
    ("proxy", 6),
    // Floor 7: the request lifecycle.
    ("pipeline", 7),
    // Floor 8: wiring, and the injector.
    ("app", 8),
    ("k8s", 8),
];

fn floor(module: &str) -> Option<u32> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("file under src/");
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules a line of code names with `crate::name`, comments left out.
fn named(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !after.starts_with('{'),
            "`crate::{{…}}` groups are not read by this check; write one `use` per module: {line}"
        );
        if !preceded_by_ident && !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    out
}

/// Every `(from, to, where)` edge between two top-level modules.
fn edges() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges = Vec::new();
    for file in files {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source is readable");
        for (n, line) in text.lines().enumerate() {
            for to in named(line) {
                if to != from {
                    let at = format!("{}:{}", file.display(), n + 1);
                    edges.push((from.clone(), to, at));
                }
            }
        }
    }
    edges
}

#[test]
fn modules_name_only_lower_floors() {
    let edges = edges();
    assert!(
        edges.len() > 50,
        "the scan found {} edges: it is not reading src/",
        edges.len()
    );
    let mut wrong = Vec::new();
    for (from, to, at) in &edges {
        match (floor(from), floor(to)) {
            (None, _) => wrong.push(format!("{at}: module `{from}` has no floor in FLOORS")),
            (_, None) => wrong.push(format!("{at}: module `{to}` has no floor in FLOORS")),
            (Some(f), Some(t)) if t >= f => wrong.push(format!(
                "{at}: `{from}` (floor {f}) names `{to}` (floor {t})"
            )),
            _ => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that do not go down:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_has_a_floor() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs is readable");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 10, "read {modules:?} from lib.rs");
    for m in modules {
        assert!(floor(m).is_some(), "module `{m}` has no floor in FLOORS");
    }
}

/// The check itself: it sees an upward edge, a cycle's back edge, and skips comments.
#[test]
fn the_reader_sees_what_it_must() {
    assert_eq!(named("use crate::config::Config;"), ["config"]);
    assert_eq!(
        named("let x = crate::proxy::headers::folded(a, crate::mcp::X);"),
        ["proxy", "mcp"]
    );
    assert_eq!(named("// see crate::server"), Vec::<String>::new());
    assert_eq!(
        named("use mcp_sentinel::crate_like::x;"),
        Vec::<String>::new()
    );
    // A cycle has at least one edge that does not go down.
    let mut seen = BTreeMap::new();
    for (from, to) in [("config", "policy"), ("policy", "config")] {
        let (f, t) = (floor(from).unwrap(), floor(to).unwrap());
        seen.insert((from, to), t < f);
    }
    assert!(seen.values().any(|down| !down), "{seen:?}");
}
