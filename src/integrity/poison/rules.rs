//! The phrase table of the poisoning scanner. To extend it, add a row here and its hit and miss
//! to tests/fixtures/integrity/rules.json.

use super::Class;

/// One phrase rule. Patterns are written lowercase and matched case-insensitively against text
/// with invisible characters removed and each run of whitespace one space; `\b` is ASCII's (the
/// lazy DFA gives up on Unicode word boundaries in non-ASCII text).
pub(super) struct Rule {
    /// Names the rule in tests (rules.json), and nowhere else.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) id: &'static str,
    pub(super) class: Class,
    /// A URL rule: not applied where a URL is the value's job (see `url_is_the_point`).
    pub(super) url: bool,
    pub(super) pattern: &'static str,
}

const fn rule(id: &'static str, class: Class, pattern: &'static str) -> Rule {
    Rule {
        id,
        class,
        url: false,
        pattern,
    }
}

pub(super) const RULES: &[Rule] = &[
    // Instructions: words for the model.
    rule(
        "ignore_previous",
        Class::Instructions,
        r"\bignore (?:all |any )?(?:of )?(?:the |your |my )?(?:previous|prior|above|earlier|preceding|former|other|system) (?:instructions?|directions?|rules|guidelines|prompts?|commands?)\b",
    ),
    rule(
        "disregard",
        Class::Instructions,
        r"\bdisregard (?:\S+ ){0,4}?(?:instructions?|directions?|rules|guidelines|prompts?|polic(?:y|ies)|safety)\b",
    ),
    rule(
        "forget_instructions",
        Class::Instructions,
        r"\bforget (?:\S+ ){0,4}?(?:instructions?|directions?|rules|guidelines|prompts?|context)\b",
    ),
    rule(
        "do_not_tell_user",
        Class::Instructions,
        r"\b(?:do not|don['’]?t|never|must not|mustn['’]?t|should not|shouldn['’]?t) (?:ever )?(?:tell|inform|notify|alert|warn|let) (?:the |your )?users?\b",
    ),
    rule(
        "do_not_reveal_to_user",
        Class::Instructions,
        r"\b(?:do not|don['’]?t|never|must not|mustn['’]?t|should not|shouldn['’]?t) (?:ever )?(?:mention|reveal|disclose|show|say|explain|display)\b[^.!?]{0,60}? to (?:the |your )?users?\b",
    ),
    rule(
        "without_telling_user",
        Class::Instructions,
        r"\bwithout (?:telling|informing|notifying|alerting|warning|letting) (?:the |your )?users?\b",
    ),
    rule(
        "user_must_not_know",
        Class::Instructions,
        r"\busers? (?:must|should|shall|may|can|will|need) ?(?:not|never|n['’]?t) (?:\S+ ){0,2}?(?:know|see|notice|find out|learn|be (?:told|informed|aware|notified|shown))\b",
    ),
    rule(
        "you_must_always",
        Class::Instructions,
        r"\byou (?:must|have to|are required to|need to) (?:always|never|first)\b",
    ),
    rule(
        "before_using_tool",
        Class::Instructions,
        r"\bbefore (?:using|calling|invoking|running|executing) (?:this|any|any other|another|other|every|each) tools?\b",
    ),
    rule(
        "very_important",
        Class::Instructions,
        r"\bthis is (?:very |extremely |really |critically |super |vitally |absolutely )+(?:important|critical|crucial)\b",
    ),
    rule(
        "otherwise_fails",
        Class::Instructions,
        r"\botherwise,? (?:the |this )?(?:tool|server|system|app|application|function|call) (?:will|would|may|might) (?:not work|fail|crash|break|stop working|error)\b",
    ),
    rule(
        "system_prompt",
        Class::Instructions,
        r"\bsystem[ _-]?prompts?\b",
    ),
    rule(
        "override_instructions",
        Class::Instructions,
        r"\boverride (?:all |any |the |your )?(?:previous |prior |existing |other |system )?(?:instructions|rules|guidelines)\b",
    ),
    rule(
        "note_to_model",
        Class::Instructions,
        r"\b(?:note|instructions?|attention|reminder) (?:to|for) (?:the |any |all )?(?:ai|assistant|model|llm|agent|ai assistant|language model)s?\b",
    ),
    rule(
        "markup_tag",
        Class::Instructions,
        r"</? ?(?:important|system|instructions?|secret|hidden|sys|admin|critical)\b[^<>]{0,40}>",
    ),
    rule("inst_tag", Class::Instructions, r"\[/?inst\]|<</?sys>>"),
    rule("chat_token", Class::Instructions, r"<\|[a-z_]{2,24}\|>"),
    rule(
        "instruction_header",
        Class::Instructions,
        r"#{3,} ?(?:instructions?|system|response)\b",
    ),
    // Shadowing: reaching for the other tools.
    rule(
        "instead_of_tool",
        Class::Shadowing,
        r"\binstead of (?:using |calling |invoking )?(?:the |any )?(?:\S+ ){0,3}?tools?\b",
    ),
    rule(
        "when_other_tool",
        Class::Shadowing,
        r"\bwhen(?:ever)? (?:you )?(?:use|using|call|calling|invoke|invoking|run|running) (?:any|another|other|any other|the other|a different) (?:\S+ )?tools?\b",
    ),
    rule(
        "all_other_tools",
        Class::Shadowing,
        r"\b(?:all|every|each|any) other tools?\b",
    ),
    rule(
        "precedence",
        Class::Shadowing,
        r"\b(?:takes? precedence over|overrides? the (?:behaviou?r|instructions|rules) of)\b",
    ),
    // Exfiltration: where data would go.
    Rule {
        id: "url",
        class: Class::Exfiltration,
        url: true,
        pattern: r#"\b(?:https?|s?ftp|file|wss?)://[^\s"'<>]*"#,
    },
    Rule {
        id: "data_uri",
        class: Class::Exfiltration,
        url: true,
        pattern: r"\bdata:(?:[a-z]+/[a-z0-9.+-]+[;,]|,)",
    },
    // Exfiltration: what would be taken.
    rule("ssh_dir", Class::Exfiltration, r"/\.ssh\b"),
    rule(
        "ssh_key_file",
        Class::Exfiltration,
        r"\bid[_ ](?:rsa|dsa|ecdsa|ed25519)\b",
    ),
    rule(
        "aws_credentials",
        Class::Exfiltration,
        r"\.aws/(?:credentials|config)\b",
    ),
    rule(
        "etc_secrets",
        Class::Exfiltration,
        r"/etc/(?:passwd|shadow|gshadow|sudoers)\b",
    ),
    rule(
        "dotenv",
        Class::Exfiltration,
        r#"(?:^|[\s/~"'`(=:])\.env\b"#,
    ),
    rule(
        "credential_files",
        Class::Exfiltration,
        r#"(?:^|[\s/~"'`(])\.(?:netrc|npmrc|pypirc|pgpass|git-credentials|kube/config|docker/config\.json)\b"#,
    ),
    rule(
        "mcp_config",
        Class::Exfiltration,
        r"\b(?:mcp|claude_desktop_config)\.json\b",
    ),
    rule(
        "private_key",
        Class::Exfiltration,
        r"\bprivate[ _-]?keys?\b",
    ),
    rule("api_key", Class::Exfiltration, r"\bapi[ _-]?keys?\b"),
    rule(
        "password",
        Class::Exfiltration,
        r"\bpass(?:words?|phrases?|wd)\b",
    ),
    rule(
        "conversation_history",
        Class::Exfiltration,
        r"\b(?:conversation|chat) (?:history|transcripts?|logs?)\b",
    ),
    rule(
        "previous_messages",
        Class::Exfiltration,
        r"\b(?:previous|prior|earlier) (?:chat |user )?messages\b",
    ),
];
