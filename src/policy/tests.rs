//! The decision table: one policy, each row a caller and a call with the decision and the rule
//! that must make it.

use serde_json::{Value, json};

use super::*;

const POLICY: &str = r#"
default: deny
rules:
  - name: banned
    effect: deny
    groups: [banned]
  - name: no-destructive-for-contractors
    effect: deny
    groups: ["contractor-*"]
    tools: ["delete_*", drop_table]
  - name: admins
    effect: allow
    groups: [admins]
  - name: search-for-staff
    effect: allow
    groups: [staff]
    tools: ["search_*", echo]
  - name: write-needs-scope
    effect: allow
    groups: [staff]
    scopes: ["tools:write"]
    tools: [write_file]
  - name: transfer-limits
    effect: allow
    subjects: ["svc-payments"]
    tools: [transfer]
    arguments:
      - {path: /amount, range: {min: 1, max: 1000}}
      - {path: /currency, one_of: [EUR, USD]}
  - name: transfer-never-to-sanctioned
    effect: deny
    tools: [transfer]
    arguments:
      - {path: /to/country, equals: XX}
  - name: paths-under-public
    effect: allow
    groups: [staff]
    tools: [read_file]
    arguments:
      - {path: /path, glob: "/public/*"}
  - name: no-system-paths
    effect: deny
    tools: [read_file]
    arguments:
      - {path: /path, glob: "/etc/*"}
  - name: no-force
    effect: deny
    tools: [read_file]
    arguments:
      - {path: /force, present: true}
  - name: docs-readers
    effect: allow
    groups: [staff]
    resources: ["file:///docs/{name}", "db://{schema}/reports"]
  - name: greeting-prompts
    effect: allow
    auth_methods: [api_key]
    prompts: ["greet*"]
  - name: tenant-acme
    effect: allow
    claims: {tenant: [acme]}
    methods: ["resources/*"]
    resources: ["acme://*"]
  - name: tasks-off-for-bots
    effect: deny
    subjects: ["bot-*"]
    methods: ["tasks/*"]
  - name: no-sampling-for-bots
    effect: deny
    subjects: ["bot-*"]
    methods: [sampling/createMessage]
  - name: numeric-claim
    effect: allow
    claims: {level: ["3"]}
    tools: [level3]
  - name: corp-alice
    effect: allow
    subjects: [alice]
    issuers: ["https://corp.example"]
    tools: [corp_only]
  - name: no-partner-deletes
    effect: deny
    issuers: ["https://partner.*"]
    tools: ["delete_*"]
"#;

struct Row {
    subject: &'static str,
    issuer: Option<&'static str>,
    groups: &'static [&'static str],
    scopes: &'static [&'static str],
    method: AuthMethod,
    claims: Value,
    op: &'static str,
    target: OpTarget<'static>,
    args: Option<Value>,
    effect: Effect,
    /// The deciding rule, `default`, or `builtin`.
    by: &'static str,
}

fn row(subject: &'static str, groups: &'static [&'static str], op: &'static str) -> Row {
    Row {
        subject,
        issuer: None,
        groups,
        scopes: &[],
        method: AuthMethod::Jwt,
        claims: json!({}),
        op,
        target: OpTarget::None,
        args: None,
        effect: Effect::Deny,
        by: "default",
    }
}

impl Row {
    fn tool(mut self, t: &'static str) -> Self {
        self.target = OpTarget::Tool(t);
        self
    }
    fn res(mut self, u: &'static str) -> Self {
        self.target = OpTarget::Resource(u);
        self
    }
    fn prompt(mut self, n: &'static str) -> Self {
        self.target = OpTarget::Prompt(n);
        self
    }
    fn task(mut self) -> Self {
        self.target = OpTarget::Task("t-1");
        self
    }
    fn args(mut self, a: Value) -> Self {
        self.args = Some(a);
        self
    }
    fn scopes(mut self, s: &'static [&'static str]) -> Self {
        self.scopes = s;
        self
    }
    fn via(mut self, m: AuthMethod) -> Self {
        self.method = m;
        self
    }
    fn from(mut self, issuer: &'static str) -> Self {
        self.issuer = Some(issuer);
        self
    }
    fn claims(mut self, c: Value) -> Self {
        self.claims = c;
        self
    }
    fn allow(mut self, by: &'static str) -> Self {
        self.effect = Effect::Allow;
        self.by = by;
        self
    }
    fn deny(mut self, by: &'static str) -> Self {
        self.effect = Effect::Deny;
        self.by = by;
        self
    }
}

fn table() -> Vec<Row> {
    use AuthMethod::*;
    vec![
        // Default and built-in methods.
        row("nobody", &[], "tools/call")
            .tool("echo")
            .deny("default"),
        row("nobody", &[], "initialize").allow("builtin"),
        row("nobody", &[], "ping").allow("builtin"),
        row("nobody", &[], "server/discover").allow("builtin"),
        row("nobody", &[], "notifications/initialized").allow("builtin"),
        row("nobody", &[], "tools/list").allow("builtin"),
        row("nobody", &[], "resources/templates/list").allow("builtin"),
        row("nobody", &[], "logging/setLevel").allow("builtin"),
        row("nobody", &[], "tasks/get").task().allow("builtin"),
        row("nobody", &[], "completion/complete")
            .prompt("x")
            .deny("default"),
        row("nobody", &[], "resources/read")
            .res("file:///etc/passwd")
            .deny("default"),
        row("nobody", &[], "made/up").deny("default"),
        // Deny overrides allow; globs on groups and tools.
        row("eve", &["admins", "banned"], "tools/call")
            .tool("echo")
            .deny("banned"),
        row("eve", &["banned"], "ping").deny("banned"),
        row("root", &["admins"], "tools/call")
            .tool("anything")
            .allow("admins"),
        row("root", &["admins"], "resources/read")
            .res("file:///etc/passwd")
            .allow("admins"),
        row("c1", &["admins", "contractor-acme"], "tools/call")
            .tool("delete_user")
            .deny("no-destructive-for-contractors"),
        row("c1", &["admins", "contractor-acme"], "tools/call")
            .tool("drop_table")
            .deny("no-destructive-for-contractors"),
        row("c1", &["admins", "contractor-acme"], "tools/call")
            .tool("echo")
            .allow("admins"),
        row("alice", &["staff"], "tools/call")
            .tool("search_docs")
            .allow("search-for-staff"),
        row("alice", &["staff"], "tools/call")
            .tool("echo")
            .allow("search-for-staff"),
        row("alice", &["staff"], "tools/call")
            .tool("searchdocs")
            .deny("default"),
        row("alice", &["staff"], "prompts/get")
            .prompt("search_docs")
            .deny("default"),
        // Scopes: the allow rule's scopes, else insufficient_scope.
        row("alice", &["staff"], "tools/call")
            .tool("write_file")
            .deny("write-needs-scope"),
        row("alice", &["staff"], "tools/call")
            .tool("write_file")
            .scopes(&["tools:write"])
            .allow("write-needs-scope"),
        row("bob", &["guests"], "tools/call")
            .tool("write_file")
            .scopes(&["tools:write"])
            .deny("default"),
        // Argument conditions: range, one_of, nested pointer, missing arguments.
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 10, "currency": "EUR", "to": {"country": "DE"}}))
            .allow("transfer-limits"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 1000.0, "currency": "USD"}))
            .allow("transfer-limits"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 1001, "currency": "EUR"}))
            .deny("default"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 0, "currency": "EUR"}))
            .deny("default"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 5, "currency": "GBP"}))
            .deny("default"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": "5", "currency": "EUR"}))
            .allow("transfer-limits"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": "lots", "currency": "EUR"}))
            .deny("default"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"currency": "EUR"}))
            .deny("default"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .deny("default"),
        row("svc-payments", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 10, "currency": "EUR", "to": {"country": "XX"}}))
            .deny("transfer-never-to-sanctioned"),
        row("svc-other", &[], "tools/call")
            .tool("transfer")
            .args(json!({"amount": 10, "currency": "EUR"}))
            .deny("default"),
        row("alice", &["staff"], "tools/call")
            .tool("read_file")
            .args(json!({"path": "/public/a.txt"}))
            .allow("paths-under-public"),
        row("alice", &["staff"], "tools/call")
            .tool("read_file")
            .args(json!({"path": "/etc/shadow"}))
            .deny("no-system-paths"),
        row("alice", &["staff"], "tools/call")
            .tool("read_file")
            .args(json!({"path": {"$ref": "/etc/shadow"}}))
            .deny("no-system-paths"),
        row("alice", &["staff"], "tools/call")
            .tool("read_file")
            .args(json!({"path": 7}))
            .deny("default"),
        row("alice", &["staff"], "tools/call")
            .tool("read_file")
            .args(json!({"path": "/public/a", "force": false}))
            .deny("no-force"),
        // Resources: URI templates.
        row("alice", &["staff"], "resources/read")
            .res("file:///docs/readme.md")
            .allow("docs-readers"),
        row("alice", &["staff"], "resources/read")
            .res("file:///docs/a/b.md")
            .deny("default"),
        row("alice", &["staff"], "resources/read")
            .res("file:///docs/../secret.md")
            .deny("default"),
        row("alice", &["staff"], "resources/read")
            .res("FILE:///docs/%72eadme.md")
            .allow("docs-readers"),
        row("alice", &["staff"], "resources/subscribe")
            .res("db://sales/reports")
            .allow("docs-readers"),
        row("alice", &["staff"], "completion/complete")
            .res("file:///docs/x")
            .allow("docs-readers"),
        row("alice", &["staff"], "tools/call")
            .tool("file:///docs/readme.md")
            .deny("default"),
        // Auth methods and prompts.
        row("k1", &[], "prompts/get")
            .prompt("greeting")
            .via(ApiKey)
            .allow("greeting-prompts"),
        row("k1", &[], "completion/complete")
            .prompt("greet")
            .via(ApiKey)
            .allow("greeting-prompts"),
        row("k1", &[], "prompts/get")
            .prompt("greeting")
            .via(Mtls)
            .deny("default"),
        // Claims (string, array and numeric).
        row("u", &[], "resources/read")
            .res("acme://x/y")
            .claims(json!({"tenant": "acme"}))
            .allow("tenant-acme"),
        row("u", &[], "resources/read")
            .res("acme://x/y")
            .claims(json!({"tenant": ["beta", "acme"]}))
            .allow("tenant-acme"),
        row("u", &[], "resources/read")
            .res("acme://x/y")
            .claims(json!({"tenant": "beta"}))
            .deny("default"),
        row("u", &[], "resources/read")
            .res("acme://x/y")
            .deny("default"),
        row("u", &[], "tools/call")
            .tool("level3")
            .claims(json!({"level": 3}))
            .allow("numeric-claim"),
        // Method rules over built-ins.
        row("bot-1", &[], "tasks/get")
            .task()
            .deny("tasks-off-for-bots"),
        row("bot-1", &[], "sampling/createMessage").deny("no-sampling-for-bots"),
        row("human", &[], "sampling/createMessage").allow("builtin"),
        row("bot-1", &[], "elicitation/create").allow("builtin"),
        // Issuers: a subject is only someone within its issuer.
        row("alice", &[], "tools/call")
            .tool("corp_only")
            .from("https://corp.example")
            .allow("corp-alice"),
        row("alice", &[], "tools/call")
            .tool("corp_only")
            .from("https://evil.example")
            .deny("default"),
        row("alice", &[], "tools/call")
            .tool("corp_only")
            .from("https://corp.example/")
            .deny("default"),
        row("alice", &[], "tools/call")
            .tool("corp_only")
            .deny("default"),
        row("alice", &[], "tools/call")
            .tool("corp_only")
            .via(ApiKey)
            .deny("default"),
        row("root", &["admins"], "tools/call")
            .tool("delete_user")
            .from("https://partner.io")
            .deny("no-partner-deletes"),
        row("root", &["admins"], "tools/call")
            .tool("delete_user")
            .from("https://corp.example")
            .allow("admins"),
        row("root", &["admins"], "tools/call")
            .tool("delete_user")
            .via(Kubernetes)
            .allow("admins"),
    ]
}

fn principal(r: &Row) -> Principal {
    let mut p = Principal::new(r.subject, r.method);
    p.issuer = r.issuer.map(str::to_string);
    p.groups = r.groups.iter().map(|g| g.to_string()).collect();
    p.scopes = r.scopes.iter().map(|s| s.to_string()).collect();
    if let Value::Object(m) = &r.claims {
        p.claims = m.clone();
    }
    p
}

#[test]
fn decision_table() {
    let policy = Policy::from_yaml(POLICY, "table.yaml").unwrap_or_else(|e| panic!("{e}"));
    let rows = table();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    for (i, r) in rows.iter().enumerate() {
        let op = Operation {
            method: r.op,
            target: r.target,
            args: r.args.as_ref().map_or(Args::None, Args::Some),
        };
        let d = policy.decide(&principal(r), &op);
        let by = match d.reason {
            DecisionReason::Default => "default",
            _ => d.rule_name(),
        };
        assert_eq!(
            (d.effect, by),
            (r.effect, r.by),
            "row {i}: {} {:?} {} {:?} {:?}",
            r.subject,
            r.groups,
            r.op,
            r.target,
            r.args
        );
    }
}

#[test]
fn insufficient_scope_names_the_scopes_of_the_allow_rule() {
    let policy = Policy::from_yaml(POLICY, "t").unwrap();
    let mut p = Principal::new("alice", AuthMethod::Jwt);
    p.groups = vec!["staff".into()];
    let op = Operation {
        method: "tools/call",
        target: OpTarget::Tool("write_file"),
        args: Args::None,
    };
    let d = policy.decide(&p, &op);
    assert_eq!(d.reason, DecisionReason::InsufficientScope);
    assert_eq!(d.scopes.as_deref(), Some(&["tools:write".to_string()][..]));
}

#[test]
fn listing_treats_conditions_as_satisfiable_and_ignores_conditional_denies() {
    let policy = Policy::from_yaml(POLICY, "t").unwrap();
    let mut staff = Principal::new("alice", AuthMethod::Jwt);
    staff.groups = vec!["staff".into()];
    assert!(policy.visible(&staff, "tools/call", OpTarget::Tool("read_file")));
    assert!(policy.visible(&staff, "tools/call", OpTarget::Tool("search_x")));
    assert!(!policy.visible(&staff, "tools/call", OpTarget::Tool("transfer")));
    assert!(!policy.visible(&staff, "tools/call", OpTarget::Tool("write_file")));
    let payments = Principal::new("svc-payments", AuthMethod::Jwt);
    assert!(policy.visible(&payments, "tools/call", OpTarget::Tool("transfer")));
    // A template is shown when its text lies within an allowed pattern.
    assert!(policy.visible(
        &staff,
        "resources/read",
        OpTarget::Resource("file:///docs/{name}")
    ));
    assert!(!policy.visible(
        &staff,
        "resources/read",
        OpTarget::Resource("file:///etc/{name}")
    ));
}

#[test]
fn default_allow_and_no_builtins() {
    let p = Principal::new("x", AuthMethod::Anonymous);
    let open = Policy::from_yaml(
        "default: allow\nrules:\n  - {name: no-rm, effect: deny, tools: [rm]}\n",
        "t",
    )
    .unwrap();
    let call = |t| Operation {
        method: "tools/call",
        target: OpTarget::Tool(t),
        args: Args::None,
    };
    assert!(open.decide(&p, &call("ls")).allowed());
    assert_eq!(open.decide(&p, &call("rm")).rule_name(), "no-rm");
    let strict = Policy::from_yaml("default: deny\nbuiltin_rules: false\n", "t").unwrap();
    let ping = Operation {
        method: "ping",
        target: OpTarget::None,
        args: Args::None,
    };
    assert!(!strict.decide(&p, &ping).allowed());
    assert!(
        SERVER_REQUESTS
            .iter()
            .all(|m| !strict.allows_server_request(&p, m))
    );
    assert!(strict.blocks_server_requests(&p));
    assert!(!open.blocks_server_requests(&p));
}

#[test]
fn a_query_does_not_escape_a_deny_rule() {
    let p = Principal::new("x", AuthMethod::Anonymous);
    let policy = Policy::from_yaml(
        "default: deny\nrules:\n  - {name: kb, effect: allow, resources: [\"kb://h/*\"]}\n  - {name: no-secret, effect: deny, resources: [\"kb://h/secret\"]}\n",
        "t",
    )
    .unwrap();
    let read = |u| Operation {
        method: "resources/read",
        target: OpTarget::Resource(u),
        args: Args::None,
    };
    for (uri, allowed) in [
        ("kb://h/secret", false),
        ("kb://h/secret?x=1", false),
        ("kb://h/secret?", false),
        ("kb://h/public?x=1", true),
        ("kb://h/public", true),
    ] {
        assert_eq!(policy.decide(&p, &read(uri)).allowed(), allowed, "{uri}");
    }
}

#[test]
fn large_policies_decide_through_the_index() {
    let mut text = String::from("default: deny\nrules:\n");
    for i in 0..1000 {
        text.push_str(&format!(
            "  - {{name: r{i}, effect: allow, groups: [g{}], tools: [tool_{i}]}}\n",
            i % 10
        ));
    }
    let policy = Policy::from_yaml(&text, "big").unwrap();
    assert_eq!(policy.scan.len(), 1, "only the built-in rule is scanned");
    let mut p = Principal::new("x", AuthMethod::Jwt);
    p.groups = vec!["g7".into()];
    let call = |t| Operation {
        method: "tools/call",
        target: OpTarget::Tool(t),
        args: Args::None,
    };
    assert_eq!(policy.decide(&p, &call("tool_997")).rule_name(), "r997");
    assert!(!policy.decide(&p, &call("tool_998")).allowed());
    assert_eq!(policy.tool_label("tool_5"), "tool_5");
    assert_eq!(policy.tool_label("unlisted"), "other");
}

#[test]
fn errors_name_every_bad_key() {
    let text = r#"
answer: maybe
rules:
  - name: a
    effect: allow
    tools: []
  - name: a
    effect: allow
  - effect: perhaps
    bogus: 1
  - name: builtin-x
    effect: deny
  - name: c
    effect: allow
    resources: ["file:///{"]
    auth_methods: [password]
    arguments:
      - {path: amount, range: {min: 5, max: 1}}
      - {path: /x, equals: 1, glob: "a*"}
      - {equals: 1}
"#;
    let errs = Policy::from_yaml(text, "p.yaml").unwrap_err().0;
    let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "default",
            "answer",
            "rules[0]",
            "rules[1].name",
            "rules[2].effect",
            "rules[2].name",
            "rules[2].bogus",
            "rules[3].name",
            "rules[4].auth_methods",
            "rules[4].resources",
            "rules[4].arguments[0].path",
            "rules[4].arguments[0].range",
            "rules[4].arguments[1]",
            "rules[4].arguments[2].path",
        ],
        "{errs:#?}"
    );
}

#[test]
fn lint_warnings() {
    let text = r#"
default: deny
rules:
  - {name: no-admin-tools, effect: deny, tools: ["admin_*"]}
  - {name: shadowed, effect: allow, groups: [ops], tools: [admin_reset]}
  - {name: fine, effect: allow, groups: [ops], tools: [status]}
  - name: args-on-resources
    effect: allow
    resources: ["file:///*"]
    arguments: [{path: /x, equals: 1}]
  - {name: odd-scope, effect: allow, scopes: [tools:nuke], tools: [nuke]}
  - {name: typo, effect: allow, methods: ["tool/call"]}
  - {name: no-partner, effect: deny, issuers: ["https://partner.*"], tools: [x]}
  - {name: partner-x, effect: allow, issuers: ["https://partner.io"], tools: [x]}
  - {name: corp-x, effect: allow, issuers: ["https://corp.example"], tools: [x]}
  - {name: keys-by-issuer, effect: allow, auth_methods: [api_key], issuers: ["*"], tools: [y]}
"#;
    let policy = Policy::from_yaml(text, "t").unwrap();
    let w = policy.warnings(
        &["tools:read".to_string()],
        &["https://partner.io".to_string()],
    );
    assert_eq!(w.len(), 7, "{w:#?}");
    assert!(
        w[0].starts_with("rules[1] (shadowed): can never match") && w[0].contains("no-admin-tools")
    );
    assert!(w[1].starts_with("rules[3] (args-on-resources): has argument conditions"));
    assert!(w[2].contains("\"tools:nuke\" is not in auth.scopes_supported"));
    assert!(w[3].contains("method tool/call matches no MCP method"));
    assert!(
        w[4].starts_with("rules[7] (partner-x): can never match") && w[4].contains("no-partner")
    );
    assert!(w[5].starts_with(
        "rules[8] (corp-x): issuer \"https://corp.example\" matches no issuer in auth.jwt"
    ));
    assert!(w[6].starts_with("rules[9] (keys-by-issuer): names issuers"));
    assert!(w[6].contains("only JWT callers have an issuer"));
    let issuers = [
        "https://corp.example".to_string(),
        "https://partner.io".to_string(),
    ];
    assert!(
        Policy::from_yaml(POLICY, "t")
            .unwrap()
            .warnings(&[], &issuers)
            .is_empty()
    );
}

#[test]
fn only_an_allowing_default_without_deny_rules_denies_nothing() {
    let open = Policy::from_yaml("default: allow\n", "t").unwrap();
    assert!(open.denies_nothing());
    let allow_rules = "default: allow\nrules:\n  - name: a\n    effect: allow\n    tools: [echo]\n";
    assert!(
        Policy::from_yaml(allow_rules, "t")
            .unwrap()
            .denies_nothing()
    );
    let deny_rule = "default: allow\nrules:\n  - name: d\n    effect: deny\n    tools: [echo]\n";
    assert!(!Policy::from_yaml(deny_rule, "t").unwrap().denies_nothing());
    assert!(
        !Policy::from_yaml("default: deny\n", "t")
            .unwrap()
            .denies_nothing()
    );
    assert!(!Policy::from_yaml(POLICY, "t").unwrap().denies_nothing());
    // What it promises: every item of every kind is visible to anyone.
    let p = Principal::new("anyone", AuthMethod::Anonymous);
    for target in [
        OpTarget::Tool("x"),
        OpTarget::Prompt("y"),
        OpTarget::Resource("file:///z"),
    ] {
        assert!(open.visible(&p, "tools/call", target));
    }
    assert!(!open.blocks_server_requests(&p));
}
