//! Authorization policy: rules over principal × method × target (× `tools/call` arguments),
//! deny overriding allow, a required default. Compiled once per load into a form that finds
//! the rules naming a target by hash lookup, so a decision does not scan a large policy.
//!
//! Reading the YAML is `load`, lint warnings for `check` are `lint`, list filtering is
//! `filter`; the pipeline check that enforces decisions is `pipeline::authorize`.

pub mod filter;
mod lint;
mod load;
pub mod pattern;
pub mod store;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::identity::{AuthMethod, Principal};
use crate::mcp::uri;
pub use load::{PolicyConfig, PolicySource};
use pattern::Pattern;
pub use store::PolicyStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// How a denied call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerStyle {
    /// The JSON-RPC error an MCP server gives for something that does not exist (default):
    /// a hidden tool and a missing one look the same.
    Unknown,
    /// HTTP 403.
    Forbidden,
}

/// The methods the built-in rule allows when `builtin_rules` is on (the default): lifecycle,
/// notifications, lists (filtered per caller), task follow-ups (task ids are bound to their
/// creator by the session check), `subscriptions/listen` without resource subscriptions, and
/// the server→client requests a client opts into by capability. Explicit deny rules override
/// them; `builtin_rules: false` leaves every method to the rules and the default.
pub const BUILTIN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "notifications/*",
    "logging/setLevel",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "subscriptions/listen",
    "tasks/*",
    "roots/list",
    "sampling/createMessage",
    "elicitation/create",
];

/// The name decisions of the built-in rule carry.
pub const BUILTIN_RULE: &str = "builtin";

/// Server→client request methods the policy can block.
pub const SERVER_REQUESTS: &[&str] = &[
    "sampling/createMessage",
    "elicitation/create",
    "roots/list",
    "ping",
];

/// One rule, compiled.
#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    pub effect: Effect,
    builtin: bool,
    subjects: Vec<Pattern>,
    /// Globs on a JWT principal's issuer; a principal without one never matches. `subjects`
    /// alone match that subject from every issuer and authenticator.
    issuers: Vec<Pattern>,
    groups: Vec<Pattern>,
    auth_methods: Vec<AuthMethod>,
    claims: Vec<(String, Vec<Pattern>)>,
    /// Every one of these scopes is needed; on an allow rule they are what would grant it.
    pub scopes: Arc<[String]>,
    methods: Vec<Pattern>,
    tools: Option<Vec<Pattern>>,
    resources: Option<Vec<Pattern>>,
    prompts: Option<Vec<Pattern>>,
    arguments: Vec<Condition>,
}

/// A test on one `tools/call` argument, addressed by a JSON pointer into `arguments`.
#[derive(Debug)]
pub struct Condition {
    pointer: String,
    test: Test,
}

#[derive(Debug)]
enum Test {
    Equals(Value),
    OneOf(Vec<Value>),
    Glob(Pattern),
    Range { min: Option<f64>, max: Option<f64> },
    Present(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TargetKind {
    Tool = 0,
    Resource = 1,
    Prompt = 2,
}

/// What one message asks to do, as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    pub method: &'a str,
    pub target: OpTarget<'a>,
    pub args: Args<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpTarget<'a> {
    None,
    Tool(&'a str),
    Resource(&'a str),
    Prompt(&'a str),
    Task(&'a str),
}

impl OpTarget<'_> {
    fn keyed(&self) -> Option<(TargetKind, &str)> {
        match *self {
            OpTarget::Tool(n) => Some((TargetKind::Tool, n)),
            OpTarget::Resource(n) => Some((TargetKind::Resource, n)),
            OpTarget::Prompt(n) => Some((TargetKind::Prompt, n)),
            OpTarget::None | OpTarget::Task(_) => None,
        }
    }
}

/// The `tools/call` arguments a decision may test.
#[derive(Debug, Clone, Copy)]
pub enum Args<'a> {
    /// Not a call, or a call without arguments.
    None,
    Some(&'a Value),
    /// Deciding whether to show an item in a list: an allow rule's conditions count as
    /// satisfiable, a deny rule with conditions does not hide the item.
    Listing,
}

/// Why a decision came out the way it did: a metric label, so a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionReason {
    Rule,
    Builtin,
    Default,
    InsufficientScope,
}

impl DecisionReason {
    pub const ALL: [DecisionReason; 4] = [
        DecisionReason::Rule,
        DecisionReason::Builtin,
        DecisionReason::Default,
        DecisionReason::InsufficientScope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::Rule => "rule",
            DecisionReason::Builtin => "builtin",
            DecisionReason::Default => "default",
            DecisionReason::InsufficientScope => "insufficient_scope",
        }
    }
}

/// The outcome of one decision; owned and cheap to clone (names and scopes are shared).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub effect: Effect,
    pub reason: DecisionReason,
    /// The deciding rule; `None` when the default decided.
    pub rule: Option<Arc<str>>,
    /// Insufficient scope: the scopes an allow rule needs that the caller lacks.
    pub scopes: Option<Arc<[String]>>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// The rule's name, or `default`.
    pub fn rule_name(&self) -> &str {
        self.rule.as_deref().unwrap_or("default")
    }
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    pub default: Effect,
    pub answer: AnswerStyle,
    rules: Vec<Rule>,
    /// Rules whose target lists are all literal, by each name they list (one map per
    /// target kind, so a lookup borrows the name).
    by_target: [HashMap<String, Vec<u32>>; 3],
    /// Every other rule, in order.
    scan: Vec<u32>,
    /// Tool names the policy lists literally: the only tool label values of the metrics.
    named_tools: HashSet<String>,
    /// Some rule tests `tools/call` arguments.
    has_conditions: bool,
    /// Every object key the argument conditions' pointers name: an argument spelled like one
    /// of these in another case is refused, since an upstream that folds case reads it as this.
    argument_keys: HashSet<String>,
    /// The default allows and no rule denies: every caller may see and use every target.
    denies_nothing: bool,
    /// SHA-256 (hex) of the policy's source text.
    pub hash: String,
}

enum Match {
    No,
    Yes,
    /// Everything but the scopes matched.
    NeedsScopes,
}

impl Rule {
    fn check(&self, p: &Principal, op: &Operation<'_>) -> Match {
        if self.builtin && !matches!(op.target, OpTarget::None | OpTarget::Task(_)) {
            return Match::No;
        }
        let principal = (self.auth_methods.is_empty() || self.auth_methods.contains(&p.method))
            && (self.groups.is_empty()
                || p.groups
                    .iter()
                    .any(|g| self.groups.iter().any(|pat| pat.is_match(g))))
            && (self.subjects.is_empty() || self.subjects.iter().any(|s| s.is_match(&p.subject)))
            && (self.issuers.is_empty()
                || p.issuer
                    .as_deref()
                    .is_some_and(|i| self.issuers.iter().any(|pat| pat.is_match(i))))
            && self
                .claims
                .iter()
                .all(|(name, pats)| claim_matches(p.claims.get(name), pats));
        if !principal {
            return Match::No;
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.is_match(op.method)) {
            return Match::No;
        }
        if !self.target_matches(&op.target) || !self.arguments_hold(op) {
            return Match::No;
        }
        if self.scopes.iter().all(|s| p.scopes.contains(s)) {
            Match::Yes
        } else {
            Match::NeedsScopes
        }
    }

    fn has_targets(&self) -> bool {
        self.tools.is_some() || self.resources.is_some() || self.prompts.is_some()
    }

    fn target_matches(&self, target: &OpTarget<'_>) -> bool {
        if !self.has_targets() {
            return true;
        }
        let (list, name) = match *target {
            OpTarget::Tool(n) => (&self.tools, n),
            OpTarget::Resource(n) => (&self.resources, n),
            OpTarget::Prompt(n) => (&self.prompts, n),
            OpTarget::None | OpTarget::Task(_) => return false,
        };
        list.as_ref()
            .is_some_and(|pats| pats.iter().any(|p| p.is_match(name)))
    }

    fn arguments_hold(&self, op: &Operation<'_>) -> bool {
        if self.arguments.is_empty() {
            return true;
        }
        let deny = self.effect == Effect::Deny;
        match op.args {
            Args::Listing => !deny,
            Args::None => self.arguments.iter().all(|c| c.holds(None, deny)),
            Args::Some(v) => self.arguments.iter().all(|c| c.holds(Some(v), deny)),
        }
    }
}

fn claim_matches(claim: Option<&Value>, pats: &[Pattern]) -> bool {
    let one = |v: &Value| match v {
        Value::String(s) => pats.iter().any(|p| p.is_match(s)),
        Value::Number(_) | Value::Bool(_) => {
            let s = v.to_string();
            pats.iter().any(|p| p.is_match(&s))
        }
        _ => false,
    };
    match claim {
        Some(Value::Array(items)) => items.iter().any(one),
        Some(v) => one(v),
        None => false,
    }
}

impl Condition {
    /// An argument the call does not carry fails every test but `present: false`: the rule
    /// does not apply. Numbers written as strings (`"5000"`) are compared as numbers, as lax
    /// upstreams would read them. A value of a type the test cannot read (an object for a
    /// glob, a word for a range) makes an allow rule not allow and a deny rule deny.
    fn holds(&self, args: Option<&Value>, deny: bool) -> bool {
        let v = args.and_then(|a| a.pointer(&self.pointer));
        match (&self.test, v) {
            (Test::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Test::Equals(want), Some(v)) => json_eq(want, v),
            (Test::OneOf(list), Some(v)) => list.iter().any(|w| json_eq(w, v)),
            (Test::Glob(p), Some(Value::String(s))) => p.is_match(s),
            (Test::Glob(p), Some(v @ (Value::Number(_) | Value::Bool(_)))) => {
                p.is_match(&v.to_string())
            }
            (Test::Glob(_), Some(_)) => deny,
            (Test::Range { min, max }, Some(v)) => match number(v) {
                Some(n) => min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
                None => deny,
            },
        }
    }
}

/// Integers beyond this are read differently by upstreams: JavaScript and most decoders into
/// `float64` round them, Python keeps them exact.
const EXACT_INTEGER: u64 = 1 << 53;

/// A number, or a string holding one; `None` for an integer that parsers read differently.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => {
            let exact = n.as_u64().map(|u| u <= EXACT_INTEGER).unwrap_or(true)
                && n.as_i64()
                    .map(|i| i.unsigned_abs() <= EXACT_INTEGER)
                    .unwrap_or(true);
            n.as_f64().filter(|_| exact)
        }
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// JSON equality with numbers compared by value (`5` equals `5.0` and `"5"`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            number(a).is_some() && number(a) == number(b)
        }
        (Value::Number(_), Value::Number(_)) => match (number(a), number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        _ => a == b,
    }
}

/// Targets longer than this are never allowed (no tool, prompt or resource has such a name;
/// matching patterns against megabytes would only cost time).
pub const MAX_TARGET: usize = 64 * 1024;

impl Policy {
    fn compile(
        default: Effect,
        answer: AnswerStyle,
        builtin: bool,
        mut rules: Vec<Rule>,
        hash: String,
    ) -> Self {
        if builtin {
            rules.push(Rule::builtin());
        }
        let mut by_target: [HashMap<String, Vec<u32>>; 3] = Default::default();
        let mut scan = Vec::new();
        let mut named_tools = HashSet::new();
        for (i, rule) in rules.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 rules");
            let lists = [
                (TargetKind::Tool, &rule.tools),
                (TargetKind::Resource, &rule.resources),
                (TargetKind::Prompt, &rule.prompts),
            ];
            for (_, list) in &lists[..1] {
                for p in list.iter().flat_map(|l| l.iter()) {
                    if let Some(name) = p.literal() {
                        named_tools.insert(name.to_string());
                    }
                }
            }
            let all_literal = lists
                .iter()
                .flat_map(|(_, l)| l.iter().flat_map(|l| l.iter()))
                .all(|p| p.literal().is_some());
            if rule.has_targets() && all_literal {
                for (kind, list) in lists {
                    for p in list.iter().flat_map(|l| l.iter()) {
                        let name = p.literal().expect("checked literal").to_string();
                        let slot = by_target[kind as usize].entry(name).or_default();
                        if slot.last() != Some(&i) {
                            slot.push(i);
                        }
                    }
                }
            } else {
                scan.push(i);
            }
        }
        let has_conditions = rules.iter().any(|r| !r.arguments.is_empty());
        let argument_keys = rules
            .iter()
            .flat_map(|r| &r.arguments)
            .flat_map(|c| c.pointer.split('/').skip(1))
            .map(|seg| seg.replace("~1", "/").replace("~0", "~"))
            .collect();
        let denies_nothing =
            default == Effect::Allow && rules.iter().all(|r| r.effect == Effect::Allow);
        Self {
            default,
            answer,
            rules,
            by_target,
            scan,
            named_tools,
            has_conditions,
            argument_keys,
            denies_nothing,
            hash,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The default allows and no rule denies: no list item is hidden from anyone and no
    /// server→client request blocked, so answers need no editing. (Only a target name over
    /// [`MAX_TARGET`] is still refused, when it is used.)
    pub fn denies_nothing(&self) -> bool {
        self.denies_nothing
    }

    /// Some rule tests `tools/call` arguments, so calls need theirs parsed.
    pub fn has_conditions(&self) -> bool {
        self.has_conditions
    }

    /// The object keys that argument conditions name (see the field).
    pub fn argument_keys(&self) -> &HashSet<String> {
        &self.argument_keys
    }

    /// The tool label of metrics: the name when the policy lists it, else `other`.
    pub fn tool_label<'a>(&self, tool: &'a str) -> &'a str {
        if self.named_tools.contains(tool) {
            tool
        } else {
            "other"
        }
    }

    /// Decides one operation: the first matching deny rule denies; else the first matching
    /// allow rule allows; else the default, reported as insufficient scope when an allow rule
    /// matched all but its scopes.
    pub fn decide(&self, p: &Principal, op: &Operation<'_>) -> Decision {
        let name = match op.target {
            OpTarget::Tool(n) | OpTarget::Resource(n) | OpTarget::Prompt(n) | OpTarget::Task(n) => {
                n
            }
            OpTarget::None => "",
        };
        let refused = Decision {
            effect: Effect::Deny,
            reason: DecisionReason::Default,
            rule: None,
            scopes: None,
        };
        if name.len() > MAX_TARGET {
            return refused;
        }
        // Resources are decided in canonical form, so no spelling of a URI escapes a rule; one
        // that cannot be canonicalised (an upstream might read another resource) is denied
        // here even when the parse stage let it through.
        if let OpTarget::Resource(uri) = op.target {
            match uri::canonical(uri) {
                Ok(Cow::Borrowed(_)) => {}
                Ok(Cow::Owned(canon)) => {
                    let op = Operation {
                        target: OpTarget::Resource(&canon),
                        ..*op
                    };
                    return self.decide(p, &op);
                }
                Err(_) => return refused,
            }
            // Servers that read only the path (`urlparse(u).path`) ignore the query, so a deny
            // rule on the URI without it denies the URI with it too.
            if let Some((path, _)) = uri.split_once('?') {
                let bare = Operation {
                    target: OpTarget::Resource(path),
                    ..*op
                };
                if let Some(rule) = self.denying_rule(p, &bare) {
                    return Decision::by(rule);
                }
            }
        }
        let indexed: &[u32] = op
            .target
            .keyed()
            .and_then(|(kind, name)| self.by_target[kind as usize].get(name))
            .map_or(&[], Vec::as_slice);
        let mut allow: Option<&Rule> = None;
        let mut scoped: Option<&Rule> = None;
        for i in merged(indexed, &self.scan) {
            let rule = &self.rules[i as usize];
            match rule.check(p, op) {
                Match::Yes if rule.effect == Effect::Deny => return Decision::by(rule),
                Match::Yes => {
                    allow.get_or_insert(rule);
                }
                Match::NeedsScopes if rule.effect == Effect::Allow => {
                    scoped.get_or_insert(rule);
                }
                Match::NeedsScopes | Match::No => {}
            }
        }
        if let Some(rule) = allow {
            return Decision::by(rule);
        }
        match (self.default, scoped) {
            (Effect::Deny, Some(rule)) => Decision {
                effect: Effect::Deny,
                reason: DecisionReason::InsufficientScope,
                rule: Some(rule.name.clone()),
                scopes: Some(rule.scopes.clone()),
            },
            (effect, _) => Decision {
                effect,
                reason: DecisionReason::Default,
                rule: None,
                scopes: None,
            },
        }
    }

    /// The first deny rule that matches `op`, if any.
    fn denying_rule(&self, p: &Principal, op: &Operation<'_>) -> Option<&Rule> {
        let indexed: &[u32] = op
            .target
            .keyed()
            .and_then(|(kind, name)| self.by_target[kind as usize].get(name))
            .map_or(&[], Vec::as_slice);
        merged(indexed, &self.scan)
            .map(|i| &self.rules[i as usize])
            .find(|r| r.effect == Effect::Deny && matches!(r.check(p, op), Match::Yes))
    }

    /// Whether `p` may see a list item: the operation it names, decided with argument
    /// conditions taken as satisfiable.
    pub fn visible(&self, p: &Principal, method: &str, target: OpTarget<'_>) -> bool {
        let op = Operation {
            method,
            target,
            args: Args::Listing,
        };
        self.decide(p, &op).allowed()
    }

    /// Whether `p` may receive the server→client request `method`.
    pub fn allows_server_request(&self, p: &Principal, method: &str) -> bool {
        let op = Operation {
            method,
            target: OpTarget::None,
            args: Args::None,
        };
        self.decide(p, &op).allowed()
    }

    /// Whether some server→client request is kept from `p`.
    pub fn blocks_server_requests(&self, p: &Principal) -> bool {
        SERVER_REQUESTS
            .iter()
            .any(|m| !self.allows_server_request(p, m))
    }
}

impl Decision {
    fn by(rule: &Rule) -> Self {
        Self {
            effect: rule.effect,
            reason: if rule.builtin {
                DecisionReason::Builtin
            } else {
                DecisionReason::Rule
            },
            rule: Some(rule.name.clone()),
            scopes: None,
        }
    }
}

impl Rule {
    fn builtin() -> Self {
        Self {
            name: BUILTIN_RULE.into(),
            effect: Effect::Allow,
            builtin: true,
            subjects: Vec::new(),
            issuers: Vec::new(),
            groups: Vec::new(),
            auth_methods: Vec::new(),
            claims: Vec::new(),
            scopes: Arc::from(Vec::new()),
            methods: BUILTIN_METHODS.iter().map(|m| Pattern::glob(m)).collect(),
            tools: None,
            resources: None,
            prompts: None,
            arguments: Vec::new(),
        }
    }
}

/// Two ascending index lists, merged in order without duplicates.
fn merged<'a>(a: &'a [u32], b: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x == y => {
                i += 1;
                j += 1;
                x
            }
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => return None,
        };
        Some(next)
    })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod uri_tests;
