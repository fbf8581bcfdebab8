//! Reads the JSON-RPC envelope of a POST body once: each message's kind, id, method, target and
//! `_meta` protocol version. Arguments are skipped, not materialised.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::strict::{self, Ambiguity};
use super::{META_PROTOCOL_VERSION, Method};

/// A parsed POST body: one message, or a 2025-03-26 batch.
#[derive(Debug)]
pub struct Envelope {
    pub batch: bool,
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Notification,
    /// A client's answer to a server→client request.
    Response,
}

#[derive(Debug)]
pub struct Message {
    pub kind: Kind,
    /// The id exactly as sent (string or number), for echoing in errors.
    pub id: Option<Box<RawValue>>,
    /// The method name as sent; `None` for responses.
    pub method_name: Option<String>,
    pub method: Method,
    pub target: Target,
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]`, when present.
    pub meta_version: Option<String>,
}

/// What a message acts on, for authorization and audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    None,
    Tool(String),
    Prompt(String),
    Resource(String),
    /// `completion/complete` on a prompt (`ref/prompt`).
    CompletionPrompt(String),
    /// `completion/complete` on a resource or template (`ref/resource`).
    CompletionResource(String),
    Task(String),
    /// `subscriptions/listen`: the resource URIs it asks to hear about.
    Subscriptions(Vec<String>),
}

impl Message {
    /// What an `Mcp-Name` header mirrors when sent: the name or URI the message acts on.
    pub fn mirrored_name(&self) -> Option<&str> {
        match &self.target {
            Target::Tool(n)
            | Target::Prompt(n)
            | Target::Resource(n)
            | Target::CompletionPrompt(n)
            | Target::CompletionResource(n)
            | Target::Task(n) => Some(n),
            Target::None | Target::Subscriptions(_) => None,
        }
    }

    /// The value `Mcp-Name` must carry: 2026-07-28 requires it on `tools/call`,
    /// `resources/read` and `prompts/get` only.
    pub fn mcp_name(&self) -> Option<&str> {
        match (&self.method, &self.target) {
            (Method::ToolsCall, Target::Tool(n))
            | (Method::PromptsGet, Target::Prompt(n))
            | (Method::ResourcesRead, Target::Resource(n)) => Some(n),
            _ => None,
        }
    }
}

/// Why a body is not an acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all (-32700).
    Json,
    /// JSON, but not a JSON-RPC message (-32600). Carries the id when one could be read.
    InvalidRequest {
        id: Option<String>,
        why: &'static str,
    },
    /// A known method whose target parameter is missing or mistyped (-32602).
    InvalidParams {
        id: Option<String>,
        why: &'static str,
    },
    /// JSON that parsers of other languages would read differently (-32600).
    Ambiguous(Ambiguity),
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    /// Present-but-null must stay visible (it is refused), so null is not mapped to `None`.
    #[serde(borrow, default, deserialize_with = "raw_keep_null")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

fn raw_keep_null<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

/// Only the parameters the sentinel reads; everything else is skipped.
#[derive(Deserialize, Default)]
struct WireParams<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uri: Option<&'a RawValue>,
    #[serde(rename = "ref", borrow, default)]
    reference: Option<&'a RawValue>,
    /// A null id is kept visible (and refused): it is not the absence of one.
    #[serde(rename = "taskId", borrow, default, deserialize_with = "raw_keep_null")]
    task_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    notifications: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow, default)]
    meta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireRef<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct WireListen<'a> {
    #[serde(rename = "resourceSubscriptions", borrow, default)]
    resource_subscriptions: Option<Vec<Cow<'a, str>>>,
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, ParseError> {
        // Decide only on what every upstream parser reads the same way.
        match strict::check(body) {
            Ok(()) => {}
            // Malformed JSON gets its own answer below; JSON the walk could not read through
            // (its limits are stricter than skipping a value) had no key checked past that
            // point, so it is refused as well.
            Err(Ambiguity::Json) => {
                return Err(
                    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                        Ok(_) => ParseError::Ambiguous(Ambiguity::Unreadable),
                        Err(_) => ParseError::Json,
                    },
                );
            }
            Err(a) => return Err(ParseError::Ambiguous(a)),
        }
        let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
        match first {
            Some(b'{') => {
                let raw: &RawValue = serde_json::from_slice(body).map_err(classify)?;
                Ok(Envelope {
                    batch: false,
                    messages: vec![parse_message(raw)?],
                })
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_slice(body).map_err(classify)?;
                if items.is_empty() {
                    return Err(invalid(None, "empty batch"));
                }
                let messages = items
                    .into_iter()
                    .map(parse_message)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Envelope {
                    batch: true,
                    messages,
                })
            }
            _ => match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => Err(invalid(None, "not a JSON-RPC object")),
                Err(_) => Err(ParseError::Json),
            },
        }
    }

    /// The single message of a non-batch body.
    pub fn single(&self) -> Option<&Message> {
        if self.batch {
            None
        } else {
            self.messages.first()
        }
    }

    /// True when any message expects a JSON-RPC response.
    pub fn has_requests(&self) -> bool {
        self.messages.iter().any(|m| m.kind == Kind::Request)
    }
}

fn classify(e: serde_json::Error) -> ParseError {
    match e.classify() {
        serde_json::error::Category::Data => invalid(None, "not a JSON-RPC object"),
        _ => ParseError::Json,
    }
}

fn invalid(id: Option<&RawValue>, why: &'static str) -> ParseError {
    ParseError::InvalidRequest {
        id: id.map(|r| r.get().to_string()),
        why,
    }
}

fn invalid_params(id: Option<&RawValue>, why: &'static str) -> ParseError {
    ParseError::InvalidParams {
        id: id.map(|r| r.get().to_string()),
        why,
    }
}

fn as_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw.get()).ok()
}

fn parse_message(raw: &RawValue) -> Result<Message, ParseError> {
    let text = raw.get();
    if !text.starts_with('{') {
        return Err(invalid(None, "not a JSON-RPC object"));
    }
    let wire: WireMessage<'_> =
        serde_json::from_str(text).map_err(|_| invalid(None, "not a JSON-RPC object"))?;
    // An id is a string or a number; null and anything else is not usable as one.
    let id = match wire.id {
        Some(id) if matches!(id.get().as_bytes().first(), Some(b'"' | b'-' | b'0'..=b'9')) => {
            Some(id)
        }
        // MCP forbids a null id; letting it through as a "notification" would skip target checks.
        Some(_) => return Err(invalid(None, "id must be a string or a number")),
        None => None,
    };
    if wire.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(invalid(id, "jsonrpc must be \"2.0\""));
    }
    let Some(method_raw) = wire.method else {
        if id.is_some() && (wire.result.is_some() || wire.error.is_some()) {
            return Ok(Message {
                kind: Kind::Response,
                id: id.map(RawValue::to_owned),
                method_name: None,
                method: Method::Response,
                target: Target::None,
                meta_version: None,
            });
        }
        return Err(invalid(
            id,
            "neither a request, a notification nor a response",
        ));
    };
    let Some(name) = as_str(method_raw) else {
        return Err(invalid(id, "method must be a string"));
    };
    let kind = if id.is_some() {
        Kind::Request
    } else {
        Kind::Notification
    };
    let method = if kind == Kind::Notification {
        Method::Notification
    } else {
        Method::from_name(&name)
    };
    let params: WireParams<'_> = match wire.params {
        Some(p) if p.get().starts_with('{') => serde_json::from_str(p.get())
            .map_err(|_| invalid_params(id, "params must be an object"))?,
        Some(p)
            if p.get() != "null"
                && ((kind == Kind::Request && needs_target(method)) || names_task(&name)) =>
        {
            return Err(invalid_params(id, "params must be an object"));
        }
        _ => WireParams::default(),
    };
    let target = target_of(method, &name, &params).map_err(|why| invalid_params(id, why))?;
    let meta_version = params.meta.and_then(meta_version);
    Ok(Message {
        kind,
        id: id.map(RawValue::to_owned),
        method_name: Some(name.into_owned()),
        method,
        target,
        meta_version,
    })
}

/// The `params.arguments` of each message, when it has any (index-aligned with the batch);
/// `None` when the body cannot be read that way (a duplicated key, nesting too deep, params
/// that are not an object).
pub fn call_arguments(body: &[u8], batch: bool) -> Option<Vec<Option<serde_json::Value>>> {
    #[derive(serde::Deserialize)]
    struct Msg {
        #[serde(default)]
        params: Option<Params>,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        #[serde(default)]
        arguments: Option<serde_json::Value>,
    }
    let args = |m: Msg| m.params.and_then(|p| p.arguments);
    if batch {
        serde_json::from_slice::<Vec<Msg>>(body)
            .ok()
            .map(|v| v.into_iter().map(args).collect())
    } else {
        serde_json::from_slice::<Msg>(body)
            .ok()
            .map(|m| vec![args(m)])
    }
}

fn needs_target(method: Method) -> bool {
    matches!(
        method,
        Method::ToolsCall
            | Method::PromptsGet
            | Method::ResourcesRead
            | Method::ResourcesSubscribe
            | Method::ResourcesUnsubscribe
            | Method::CompletionComplete
            | Method::TasksGet
            | Method::TasksResult
            | Method::TasksCancel
            | Method::TasksUpdate
            | Method::TasksDelete
    )
}

/// A message about tasks: a `tasks/*` request or notification, or a `notifications/tasks/*`.
/// Whatever its method, a task it names is the target, so the owner check cannot be walked
/// around with a method the sentinel does not know or by leaving the id out.
fn names_task(name: &str) -> bool {
    name.starts_with("tasks/") || name.starts_with("notifications/tasks/")
}

fn target_of(method: Method, name: &str, p: &WireParams<'_>) -> Result<Target, &'static str> {
    let string = |raw: Option<&RawValue>, why: &'static str| {
        raw.and_then(as_str).map(Cow::into_owned).ok_or(why)
    };
    if names_task(name) && !needs_target(method) {
        // `taskId` is optional here (`tasks/list`, a notification about no task), but when
        // present it must be a string: anything else another parser might read as an id.
        return match p.task_id {
            None => Ok(Target::None),
            Some(raw) => string(Some(raw), "params.taskId must be a string").map(Target::Task),
        };
    }
    Ok(match method {
        Method::ToolsCall => Target::Tool(string(p.name, "params.name must be a string")?),
        Method::PromptsGet => Target::Prompt(string(p.name, "params.name must be a string")?),
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => {
            Target::Resource(string(p.uri, "params.uri must be a string")?)
        }
        Method::CompletionComplete => {
            let r: WireRef<'_> = p
                .reference
                .and_then(|r| serde_json::from_str(r.get()).ok())
                .ok_or("params.ref must be a prompt or resource reference")?;
            match (r.kind.as_ref(), r.name, r.uri) {
                ("ref/prompt", Some(name), _) => Target::CompletionPrompt(name.into_owned()),
                ("ref/resource", _, Some(uri)) => Target::CompletionResource(uri.into_owned()),
                _ => return Err("params.ref must be a prompt or resource reference"),
            }
        }
        Method::TasksGet
        | Method::TasksResult
        | Method::TasksCancel
        | Method::TasksUpdate
        | Method::TasksDelete => Target::Task(string(p.task_id, "params.taskId must be a string")?),
        Method::SubscriptionsListen => {
            let uris = match p.notifications {
                Some(n) => serde_json::from_str::<WireListen<'_>>(n.get())
                    .map_err(|_| "params.notifications must be a subscription filter")?
                    .resource_subscriptions
                    .unwrap_or_default()
                    .into_iter()
                    .map(Cow::into_owned)
                    .collect(),
                None => Vec::new(),
            };
            Target::Subscriptions(uris)
        }
        _ => Target::None,
    })
}

fn meta_version(meta: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow, default)]
        version: Option<Cow<'a, str>>,
    }
    debug_assert_eq!(
        META_PROTOCOL_VERSION,
        "io.modelcontextprotocol/protocolVersion"
    );
    serde_json::from_str::<Meta<'_>>(meta.get())
        .ok()?
        .version
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Message {
        let mut e = Envelope::parse(body.as_bytes()).unwrap();
        assert!(!e.batch);
        e.messages.remove(0)
    }

    #[test]
    fn requests_and_targets() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}"#,
        );
        assert_eq!(m.kind, Kind::Request);
        assert_eq!(m.id.as_ref().unwrap().get(), "7");
        assert_eq!(m.method, Method::ToolsCall);
        assert_eq!(m.target, Target::Tool("echo".into()));

        let m = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(m.target, Target::Resource("file:///x".into()));
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"gr\u00e9et"}}"#,
        );
        assert_eq!(m.target, Target::Prompt("gréet".into()));
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"greet"},"argument":{"name":"n","value":"a"}}}"#,
        );
        assert_eq!(m.target, Target::CompletionPrompt("greet".into()));
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///logs/{day}"}}}"#,
        );
        assert_eq!(
            m.target,
            Target::CompletionResource("file:///logs/{day}".into())
        );
        let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t-1"}}"#);
        assert_eq!(m.target, Target::Task("t-1".into()));
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a","file:///b"]}}}"#,
        );
        assert_eq!(
            m.target,
            Target::Subscriptions(vec!["file:///a".into(), "file:///b".into()])
        );
    }

    #[test]
    fn meta_version_is_read() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","other":{"x":[1,2]}}}}"#,
        );
        assert_eq!(m.meta_version.as_deref(), Some("2026-07-28"));
        assert_eq!(m.target, Target::None);
    }

    /// Every message about tasks names its task, requests and notifications, known methods or
    /// not; a `taskId` that is not a string is refused.
    #[test]
    fn task_targets_whatever_the_method() {
        let task = |body: &str| {
            let m = one(body);
            (m.kind, m.target)
        };
        let t = || Target::Task("t-1".into());
        for (body, kind, target) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/delete","params":{"taskId":"t-1"}}"#,
                Kind::Request,
                t(),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/frobnicate","params":{"taskId":"t-1"}}"#,
                Kind::Request,
                t(),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"tasks/cancel","params":{"taskId":"t-1"}}"#,
                Kind::Notification,
                t(),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":{"taskId":"t-1","status":"cancelled"}}"#,
                Kind::Notification,
                t(),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"cursor":"c"}}"#,
                Kind::Request,
                Target::None,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/tasks/list_changed"}"#,
                Kind::Notification,
                Target::None,
            ),
        ] {
            assert_eq!(task(body), (kind, target), "{body}");
        }
        assert_eq!(
            one(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/delete","params":{"taskId":"t"}}"#)
                .method,
            Method::TasksDelete
        );
        for (body, id) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/delete","params":{}}"#,
                Some("1"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/frobnicate","params":{"taskId":7}}"#,
                Some("1"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list","params":{"taskId":null}}"#,
                Some("1"),
            ),
            (
                r#"{"jsonrpc":"2.0","method":"tasks/cancel","params":{"taskId":["t-1"]}}"#,
                None,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"notifications/tasks/status","params":["t-1"]}"#,
                None,
            ),
        ] {
            match Envelope::parse(body.as_bytes()) {
                Err(ParseError::InvalidParams { id: got, .. }) => {
                    assert_eq!(got.as_deref(), id, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn notifications_and_responses() {
        let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(m.kind, Kind::Notification);
        assert_eq!(m.method, Method::Notification);
        let m = one(r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#);
        assert_eq!(m.kind, Kind::Response);
        let m = one(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#);
        assert_eq!(m.kind, Kind::Response);
    }

    #[test]
    fn batches() {
        let e = Envelope::parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
        )
        .unwrap();
        assert!(e.batch);
        assert_eq!(e.messages.len(), 2);
        assert!(e.has_requests());
        assert!(e.single().is_none());
        assert!(matches!(
            Envelope::parse(b"[]"),
            Err(ParseError::InvalidRequest { .. })
        ));
        assert!(matches!(
            Envelope::parse(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}, 3]"#),
            Err(ParseError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn malformed_json() {
        for body in ["", "{", "{\"jsonrpc\":", "nonsense", "[1,", "{\"a\":1}}"] {
            assert_eq!(
                Envelope::parse(body.as_bytes()).unwrap_err(),
                ParseError::Json,
                "{body}"
            );
        }
    }

    #[test]
    fn not_json_rpc() {
        let cases = [
            ("42", None),
            ("\"x\"", None),
            ("null", None),
            (r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#, Some("1")),
            (r#"{"id":5,"method":"x"}"#, Some("5")),
            (r#"{"jsonrpc":"2.0","id":1,"method":3}"#, Some("1")),
            (r#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#, None),
            (r#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#, None),
            (r#"{"jsonrpc":"2.0","id":1}"#, Some("1")),
            (
                r#"{"jsonrpc":"2.0","method":"x","params":{"name":1},"id":"q"}"#,
                None,
            ),
        ];
        for (body, want_id) in cases.iter().take(9) {
            match Envelope::parse(body.as_bytes()) {
                Err(ParseError::InvalidRequest { id, .. }) => {
                    assert_eq!(id.as_deref(), *want_id, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        // An unknown method with odd params is forwarded: only targets are read.
        assert!(Envelope::parse(cases[9].0.as_bytes()).is_ok());
    }

    #[test]
    fn bad_target_params() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/other","name":"x"}}}"#,
        ] {
            match Envelope::parse(body.as_bytes()) {
                Err(ParseError::InvalidParams { id, .. }) => assert_eq!(id.as_deref(), Some("1")),
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
