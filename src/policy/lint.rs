//! Warnings for `mcp-sentinel check`: rules that can never take effect. Each test is sound
//! (a warning is always true) but not complete (some dead rules go unnoticed).

use super::pattern::Pattern;
use super::{Effect, Policy, Rule, SERVER_REQUESTS};
use crate::identity::AuthMethod;
use crate::mcp::Method;

/// Client notifications a method glob may name (all fall under `notifications/*`).
const NOTIFICATIONS: &[&str] = &[
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

impl Policy {
    /// Why some rules can never take effect, one line each. `issuers` are the configured JWT
    /// issuers (`iss` values).
    pub fn warnings(&self, scopes_supported: &[String], issuers: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let user: Vec<&Rule> = self.rules.iter().filter(|r| !r.builtin).collect();
        for (j, rule) in user.iter().enumerate() {
            let at = format!("rules[{j}] ({})", rule.name);
            if let Some(earlier) = user[..j]
                .iter()
                .find(|e| e.effect == Effect::Deny && covers(e, rule))
            {
                out.push(format!(
                    "{at}: can never match: the earlier deny rule {:?} matches every call it matches",
                    &*earlier.name
                ));
            }
            if !rule.arguments.is_empty() && !can_call_tools(rule) {
                out.push(format!(
                    "{at}: has argument conditions but applies to no tools/call (only tools/call carries arguments), so it never matches"
                ));
            }
            if !scopes_supported.is_empty() {
                for s in rule.scopes.iter() {
                    if !scopes_supported.contains(s) {
                        out.push(format!(
                            "{at}: scope {s:?} is not in auth.scopes_supported, so no token is issued with it"
                        ));
                    }
                }
            }
            for m in &rule.methods {
                if !known_methods().any(|k| m.is_match(k)) {
                    out.push(format!("{at}: method {m} matches no MCP method"));
                }
            }
            if !rule.issuers.is_empty()
                && !rule.auth_methods.is_empty()
                && !rule.auth_methods.contains(&AuthMethod::Jwt)
            {
                out.push(format!(
                    "{at}: names issuers but not the jwt auth method: only JWT callers have an issuer, so it never matches"
                ));
            }
            for i in &rule.issuers {
                if !issuers.iter().any(|c| i.is_match(c)) {
                    out.push(format!(
                        "{at}: issuer {:?} matches no issuer in auth.jwt, so no caller has it",
                        i.to_string()
                    ));
                }
            }
        }
        out
    }
}

fn known_methods() -> impl Iterator<Item = &'static str> {
    Method::ALL
        .iter()
        .map(|m| m.as_str())
        .chain(NOTIFICATIONS.iter().copied())
        .chain(SERVER_REQUESTS.iter().copied())
}

fn can_call_tools(rule: &Rule) -> bool {
    (rule.methods.is_empty() || rule.methods.iter().any(|m| m.is_match("tools/call")))
        && (!rule.has_targets() || rule.tools.is_some())
}

/// Every call `later` matches, `earlier` matches too (ignoring `later`'s own conditions, which
/// only narrow it). `earlier` must have no argument conditions.
fn covers(earlier: &Rule, later: &Rule) -> bool {
    earlier.arguments.is_empty()
        && list_covers(&earlier.subjects, &later.subjects)
        && list_covers(&earlier.issuers, &later.issuers)
        && list_covers(&earlier.groups, &later.groups)
        && list_covers(&earlier.methods, &later.methods)
        && (earlier.auth_methods.is_empty()
            || (!later.auth_methods.is_empty()
                && later
                    .auth_methods
                    .iter()
                    .all(|m| earlier.auth_methods.contains(m))))
        && earlier.scopes.iter().all(|s| later.scopes.contains(s))
        && earlier.claims.iter().all(|(name, pats)| {
            later
                .claims
                .iter()
                .any(|(n, lp)| n == name && list_covers(pats, lp))
        })
        && (!earlier.has_targets()
            || (later.has_targets()
                && target_covers(&earlier.tools, &later.tools)
                && target_covers(&earlier.resources, &later.resources)
                && target_covers(&earlier.prompts, &later.prompts)))
}

/// An empty list matches anything; otherwise each of `later`'s patterns must lie within one
/// of `earlier`'s.
fn list_covers(earlier: &[Pattern], later: &[Pattern]) -> bool {
    earlier.is_empty()
        || (!later.is_empty() && later.iter().all(|l| earlier.iter().any(|e| l.within(e))))
}

fn target_covers(earlier: &Option<Vec<Pattern>>, later: &Option<Vec<Pattern>>) -> bool {
    match (earlier, later) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(e), Some(l)) => list_covers(e, l),
    }
}
