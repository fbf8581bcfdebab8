//! MCP methods as a closed set, so metric labels stay bounded.

/// A client→server method the sentinel knows, or one of the catch-alls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Initialize,
    Ping,
    ServerDiscover,
    ToolsList,
    ToolsCall,
    PromptsList,
    PromptsGet,
    ResourcesList,
    ResourcesTemplatesList,
    ResourcesRead,
    ResourcesSubscribe,
    ResourcesUnsubscribe,
    CompletionComplete,
    LoggingSetLevel,
    SubscriptionsListen,
    TasksGet,
    TasksResult,
    TasksList,
    TasksCancel,
    /// `tasks/update` of the 2026 tasks extension (SEP-2663).
    TasksUpdate,
    /// `tasks/delete`: not in a released revision, but servers ship it; it names a task.
    TasksDelete,
    /// Any `notifications/*` message.
    Notification,
    /// A client's response to a server→client request.
    Response,
    /// A method the sentinel does not know; forwarded, labelled `other`.
    Other,
}

impl Method {
    pub const ALL: [Method; 24] = [
        Method::Initialize,
        Method::Ping,
        Method::ServerDiscover,
        Method::ToolsList,
        Method::ToolsCall,
        Method::PromptsList,
        Method::PromptsGet,
        Method::ResourcesList,
        Method::ResourcesTemplatesList,
        Method::ResourcesRead,
        Method::ResourcesSubscribe,
        Method::ResourcesUnsubscribe,
        Method::CompletionComplete,
        Method::LoggingSetLevel,
        Method::SubscriptionsListen,
        Method::TasksGet,
        Method::TasksResult,
        Method::TasksList,
        Method::TasksCancel,
        Method::TasksUpdate,
        Method::TasksDelete,
        Method::Notification,
        Method::Response,
        Method::Other,
    ];

    pub fn from_name(name: &str) -> Method {
        match name {
            "initialize" => Method::Initialize,
            "ping" => Method::Ping,
            "server/discover" => Method::ServerDiscover,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "prompts/list" => Method::PromptsList,
            "prompts/get" => Method::PromptsGet,
            "resources/list" => Method::ResourcesList,
            "resources/templates/list" => Method::ResourcesTemplatesList,
            "resources/read" => Method::ResourcesRead,
            "resources/subscribe" => Method::ResourcesSubscribe,
            "resources/unsubscribe" => Method::ResourcesUnsubscribe,
            "completion/complete" => Method::CompletionComplete,
            "logging/setLevel" => Method::LoggingSetLevel,
            "subscriptions/listen" => Method::SubscriptionsListen,
            "tasks/get" => Method::TasksGet,
            "tasks/result" => Method::TasksResult,
            "tasks/list" => Method::TasksList,
            "tasks/cancel" => Method::TasksCancel,
            "tasks/update" => Method::TasksUpdate,
            "tasks/delete" => Method::TasksDelete,
            n if n.starts_with("notifications/") => Method::Notification,
            _ => Method::Other,
        }
    }

    /// The metric label: the method name, or a catch-all.
    /// `tools/list`, `prompts/list`, `resources/list` or `resources/templates/list`: answers
    /// the policy filters.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Method::ToolsList
                | Method::PromptsList
                | Method::ResourcesList
                | Method::ResourcesTemplatesList
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Initialize => "initialize",
            Method::Ping => "ping",
            Method::ServerDiscover => "server/discover",
            Method::ToolsList => "tools/list",
            Method::ToolsCall => "tools/call",
            Method::PromptsList => "prompts/list",
            Method::PromptsGet => "prompts/get",
            Method::ResourcesList => "resources/list",
            Method::ResourcesTemplatesList => "resources/templates/list",
            Method::ResourcesRead => "resources/read",
            Method::ResourcesSubscribe => "resources/subscribe",
            Method::ResourcesUnsubscribe => "resources/unsubscribe",
            Method::CompletionComplete => "completion/complete",
            Method::LoggingSetLevel => "logging/setLevel",
            Method::SubscriptionsListen => "subscriptions/listen",
            Method::TasksGet => "tasks/get",
            Method::TasksResult => "tasks/result",
            Method::TasksList => "tasks/list",
            Method::TasksCancel => "tasks/cancel",
            Method::TasksUpdate => "tasks/update",
            Method::TasksDelete => "tasks/delete",
            Method::Notification => "notification",
            Method::Response => "response",
            Method::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            if !matches!(m, Method::Notification | Method::Response | Method::Other) {
                assert_eq!(Method::from_name(m.as_str()), *m);
            }
        }
        assert_eq!(
            Method::from_name("notifications/initialized"),
            Method::Notification
        );
        assert_eq!(Method::from_name("tools/delete"), Method::Other);
    }
}
