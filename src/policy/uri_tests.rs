//! Resource URIs against rules: every spelling of a denied resource is denied by its rule,
//! templates are not escaped by encoded traversal, and what cannot be canonicalised is denied.

use super::*;

const POLICY: &str = r#"
default: deny
rules:
  - name: no-passwd
    effect: deny
    resources: ["file:///etc/passwd", "FILE://localhost/etc/shadow"]
  - name: no-secret-db
    effect: deny
    resources: ["db://LOCALHOST/secret"]
  - name: root-files
    effect: allow
    groups: [root]
    resources: ["file:///*"]
  - name: docs
    effect: allow
    resources: ["file:///docs/{+path}"]
  - name: db
    effect: allow
    resources: ["db://127.0.0.1/*", "https://api.example.com/v1/{id}"]
  - name: no-secrets
    effect: deny
    resources: ["file:///srv/data/secret.txt", "https://h.example/admin", "kb:///secret"]
  - name: web
    effect: allow
    groups: [root]
    resources: ["https://h.example/*", "kb:*"]
  - name: public
    effect: allow
    resources:
      - "note:public/*"
      - "note://public/{+path}"
      - "file:///srv/public/{+path}"
      - "file:///C:/srv/public/{+path}"
"#;

#[test]
fn spellings_against_rules() {
    let policy = Policy::from_yaml(POLICY, "uri.yaml").unwrap_or_else(|e| panic!("{e}"));
    let mut root = Principal::new("root", AuthMethod::Jwt);
    root.groups = vec!["root".into()];
    let user = Principal::new("user", AuthMethod::Jwt);
    // (caller, URI, the deciding rule or `default`); only the `allow` rules allow.
    let rows: &[(&Principal, &str, &str)] = &[
        // A denied file under every spelling (root may read any other file).
        (&root, "file:///etc/passwd", "no-passwd"),
        (&root, "FILE://LOCALHOST/etc/passwd", "no-passwd"),
        (&root, "file:/etc/passwd", "no-passwd"),
        (&root, "file:///etc/./passwd", "no-passwd"),
        (&root, "file:///etc/%2e/passwd", "no-passwd"),
        (&root, "file:///tmp/../etc/passwd", "no-passwd"),
        (&root, "file:///etc/pass%77d", "no-passwd"),
        (&root, "file://127.0.0.1/etc/passwd", "no-passwd"),
        (&root, "file://localhost./etc/passwd", "no-passwd"),
        (&root, "file://[::1]/etc/shadow", "no-passwd"),
        (&root, "file:///etc/x", "root-files"),
        // Spellings a server reads as the denied file, but that cannot be decided on.
        (&root, "file:///etc/passwd?x", "default"),
        (&root, "file:///etc/passwd#x", "default"),
        (&root, "file://evil/etc/passwd", "default"),
        (&root, "file:////etc/passwd", "default"),
        (&root, "file:///etc//passwd", "default"),
        (&root, "file:///etc/passwd%00", "default"),
        (&root, "file:///etc/passwd ", "default"),
        (&root, "file:///etc/pass\twd", "default"),
        // A `{+path}` template is not escaped by traversal, encoded or not.
        (&user, "file:///docs/a/b.md", "docs"),
        (&user, "file://localhost/docs/./a.md", "docs"),
        (&user, "file:///docs/café.md", "docs"),
        (&user, "file:///docs/caf%C3%A9.md", "docs"),
        (&user, "file:///docs/../secret", "default"),
        (&user, "file:///docs/%2e%2e/secret", "default"),
        (&user, "file:///docs/.%2E/secret", "default"),
        (&user, "file:///docs/a/../../secret", "default"),
        (&user, "file:///docs/..%2fsecret", "default"),
        (&user, "file:///docs/..%2Fsecret", "default"),
        (&user, "file:///docs/%252e%252e/secret", "default"),
        (&user, "file:///docs\\..\\secret", "default"),
        (&user, "file:///docs/..;/secret", "default"),
        (&user, "file:///docs/...", "default"),
        (&user, "file:///docs/%2e%2e%5csecret", "default"),
        // Hosts that name this machine.
        (&user, "db://localhost/public", "db"),
        (&user, "db://127.1/secret", "no-secret-db"),
        (&user, "DB://LocalHost./secret", "no-secret-db"),
        (&user, "db://0x7f000001/secret", "no-secret-db"),
        (&user, "db://[::ffff:127.0.0.1]/secret", "no-secret-db"),
        (&user, "db://a.localhost/%73ecret", "no-secret-db"),
        (&user, "db://localhost/secret#x", "default"),
        (&user, "db://u@localhost/secret", "default"),
        (&user, "db://localhost//secret", "default"),
        // Opaque paths: `.`/`..` are refused, not kept (a server joining the path to a
        // directory resolves them).
        (&user, "note:public/a.txt", "public"),
        (&user, "note:public/../secret", "default"),
        (&user, "note:public/%2e%2e/secret", "default"),
        (&user, "note:public/./../secret", "default"),
        (&user, "note:public//etc/passwd", "default"),
        // A `{+path}` template is not escaped by an empty segment (the handler would join an
        // absolute path) nor by a `..` above the root.
        (&user, "file:///srv/public/a/b.txt", "public"),
        (&user, "file:///srv/public//etc/passwd", "default"),
        (&user, "file:///srv/public/a//etc/passwd", "default"),
        (&user, "file:///C:/srv/public/x.txt", "public"),
        (
            &user,
            "file:///C:/srv/public///attacker.example/share/x",
            "default",
        ),
        (&user, "note://public/a.txt", "public"),
        (&user, "note://public/../private/a.txt", "default"),
        (&user, "note://public/%2E%2E/private/a.txt", "default"),
        (&user, "note://public/a/../../private/a.txt", "default"),
        // Spellings the upstream reads as a denied resource are decided as it.
        (&root, "file:///srv/data/secret.txt", "no-secrets"),
        (&root, "file:///srv/data/secret.txt/", "no-secrets"),
        (&root, "file:///srv/data/secret.txt/.", "no-secrets"),
        (&root, "file:///srv/data/x/../secret.txt/", "no-secrets"),
        (&root, "file:///srv/data/other.txt", "root-files"),
        (&root, "https://h.example/admin", "no-secrets"),
        (&root, "https://h.example/admin?", "no-secrets"),
        (&root, "https://h.example/admin;x", "default"),
        (&root, "https://h.example/admin/..;x", "default"),
        (&root, "https://h.example/../admin", "default"),
        (&root, "https://h.example/other", "web"),
        (&root, "kb:///secret", "no-secrets"),
        (&root, "kb:/secret", "no-secrets"),
        (&root, "KB:/./secret", "no-secrets"),
        (&root, "kb:/other", "web"),
        // Default ports and case.
        (&user, "HTTPS://API.example.com:443/v1/7", "db"),
        (&user, "https://api.example.com/v1/7/../8", "db"),
        (&user, "https://api.example.com/v1/a%2fb", "default"),
    ];
    assert!(rows.len() >= 15);
    for &(p, uri, by) in rows {
        let op = Operation {
            method: "resources/read",
            target: OpTarget::Resource(uri),
            args: Args::None,
        };
        let d = policy.decide(p, &op);
        let got = match d.reason {
            DecisionReason::Default => "default",
            _ => d.rule_name(),
        };
        let allowing = ["root-files", "docs", "db", "web", "public"].contains(&by);
        assert_eq!(
            (got, d.effect == Effect::Allow),
            (by, allowing),
            "{} {uri:?}",
            p.subject
        );
    }
}

#[test]
fn a_pattern_no_uri_can_match_is_a_load_error() {
    for (pattern, reason) in [
        ("file://fileserver/share/{+path}", "file_host"),
        ("file:///docs/..%2f{x}", "encoded_slash"),
        ("db://h/x#top", "fragment"),
        ("file:///srv/public//{+path}", "repeated_slash"),
        ("note:public/../{+path}", "dot_segment"),
        ("https://h.example/admin;{x}", "path_params"),
    ] {
        let text = format!(
            "default: deny\nrules:\n  - {{name: r, effect: allow, resources: [\"{pattern}\"]}}\n"
        );
        let errs = Policy::from_yaml(&text, "p.yaml").unwrap_err().0;
        assert_eq!(errs.len(), 1, "{pattern}: {errs:?}");
        let msg = errs[0].to_string();
        assert!(msg.contains(reason) && msg.contains(pattern), "{msg}");
    }
}
