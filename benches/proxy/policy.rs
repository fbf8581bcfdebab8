//! The 1,000-rule policy of the `sentinel-policy` target, and the cost of one decision against
//! it, measured in process with the sentinel's own policy engine.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use mcp_sentinel::identity::{AuthMethod, Principal};
use mcp_sentinel::policy::{Args, OpTarget, Operation, Policy};

pub const RULES: usize = 1000;

/// 1,000 rules shaped like a large deployment's: 970 per-service allows naming tools literally
/// (indexed), 20 glob denies and 9 resource-template rules (scanned on every decision), and a
/// last rule that lets the benchmark's caller (`subject`: `anonymous`, or the JWT's `sub`) use
/// the bench upstream's tools.
pub fn text(subject: &str) -> String {
    let mut t = String::from("default: deny\nrules:\n");
    for i in 0..970 {
        t.push_str(&format!(
            "  - {{name: svc-{i}, effect: allow, subjects: [svc-{i}], groups: [team-{}], tools: [tool_{:02}, extra_{i}]}}\n",
            i % 30,
            i % 40
        ));
    }
    for i in 0..20 {
        t.push_str(&format!(
            "  - {{name: deny-{i}, effect: deny, groups: [blocked-{i}], tools: [\"danger_{i}_*\"]}}\n"
        ));
    }
    for i in 0..9 {
        t.push_str(&format!(
            "  - {{name: docs-{i}, effect: allow, groups: [team-{i}], resources: [\"file:///docs/{i}/{{+path}}\"]}}\n"
        ));
    }
    t.push_str(&format!(
        "  - {{name: bench-callers, effect: allow, subjects: [{subject}], tools: [echo, progress, \"tool_*\"]}}\n"
    ));
    t
}

/// `base` with its `policy` replaced by the 1,000-rule policy file, both written to `workdir`.
pub fn sentinel_config(base: &Path, workdir: &Path) -> Result<PathBuf> {
    let policy = section(workdir, "anonymous")?;
    crate::procs::config_with(base, workdir, "sentinel-policy", "policy", policy)
}

/// The `policy` section naming the 1,000-rule file for `subject`, which it writes to `workdir`.
pub fn section(workdir: &Path, subject: &str) -> Result<serde_json::Value> {
    let policy = workdir.join(format!("policy-1000-{subject}.yaml"));
    std::fs::write(&policy, text(subject))
        .with_context(|| format!("writing {}", policy.display()))?;
    Ok(serde_json::json!({ "file": policy }))
}

/// Nanoseconds per decision for each kind of call, best of 5 runs of 200,000.
pub fn decision_costs() -> Result<Vec<(&'static str, f64)>> {
    let policy = Policy::from_yaml(&text("anonymous"), "policy-1000.yaml")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut caller = Principal::new("anonymous", AuthMethod::Anonymous);
    caller.groups = vec!["team-3".into(), "staff".into()];
    let args = serde_json::json!({"text": "hello"});
    let call = |tool| Operation {
        method: "tools/call",
        target: OpTarget::Tool(tool),
        args: Args::Some(&args),
    };
    let cases: [(&'static str, Operation<'_>); 4] = [
        ("tools/call allowed by the last rule", call("echo")),
        ("tools/call of a tool 25 rules name", call("tool_05")),
        ("tools/call denied by default", call("nonexistent")),
        (
            "resources/read through templates",
            Operation {
                method: "resources/read",
                target: OpTarget::Resource("file:///docs/3/a/b.md"),
                args: Args::None,
            },
        ),
    ];
    const N: u32 = 200_000;
    Ok(cases
        .iter()
        .map(|(name, op)| {
            let best = (0..5)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..N {
                        black_box(policy.decide(black_box(&caller), black_box(op)));
                    }
                    start.elapsed().as_nanos() as f64 / f64::from(N)
                })
                .fold(f64::INFINITY, f64::min);
            (*name, best)
        })
        .collect())
}
