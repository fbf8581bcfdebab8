//! The test upstream's MCP handler: one per legacy session or modern request, all sharing the
//! counters and the task manager of [`super::Shared`]. Part of `upstream.rs` (included with it by
//! the examples).

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
        CreateTaskResult, CustomNotification, CustomRequest, CustomResult, ErrorCode,
        GetPromptRequestParams, GetPromptResponse, GetPromptResult, GetTaskParams, GetTaskResult,
        Implementation, JsonObject, ListPromptsResult, ListResourceTemplatesResult,
        ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
        PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
        ResourceContents, Role, ServerCapabilities, ServerConfig, Tool, UpdateTaskParams,
    },
    service::{NotificationContext, RequestContext},
    task_manager::{TaskExit, TaskOptions},
};
use serde_json::{Value, json};

use super::catalog::{prompts, resource_body, resource_templates, resources, tools};
use super::{BIG_MAX_BYTES, Shared, lock};

/// The MCP handler. One is built per session (legacy) or per request (modern);
/// all share the counters.
#[derive(Clone)]
pub struct DemoServer {
    pub(super) shared: Arc<Shared>,
}

/// The `roots` tool: a server-to-client `roots/list` request (deprecated by SEP-2577, still
/// part of every legacy revision).
#[allow(deprecated)]
async fn ask_roots(peer: &rmcp::Peer<RoleServer>) -> CallToolResult {
    match peer.list_roots().await {
        Ok(r) => text(format!("roots: {}", r.roots.len())),
        Err(e) => text(format!("roots refused: {e}")),
    }
}

/// The `roots_mrtr` tool: a multi round-trip request (SEP-2322). The first round asks for the
/// client's roots inside the result; the retry carries them in `inputResponses`.
#[allow(deprecated)]
fn roots_round(request: &CallToolRequestParams) -> CallToolResponse {
    match request
        .input_responses
        .as_ref()
        .and_then(|r| r.get("roots"))
    {
        Some(answer) => {
            let n = answer
                .get("roots")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            text(format!("roots: {n}")).into()
        }
        None => rmcp::model::InputRequiredResult::from_input_requests(
            [(
                "roots".to_owned(),
                rmcp::model::InputRequest::ListRoots(rmcp::model::ListRootsRequest::default()),
            )]
            .into(),
        )
        .into(),
    }
}

fn str_arg<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, ErrorData> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{name}` must be a string"), None))
}

fn int_arg(args: &JsonObject, name: &str) -> Result<i64, ErrorData> {
    args.get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{name}` must be an integer"), None))
}

fn text(value: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(value)])
}

impl DemoServer {
    async fn slow(
        &self,
        args: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let steps = int_arg(args, "steps")?.clamp(0, 10_000);
        let delay = Duration::from_millis(int_arg(args, "delay_ms")?.clamp(0, 60_000) as u64);
        let token = context.meta.get_progress_token();
        for step in 1..=steps {
            if let Some(token) = &token {
                let _ = context
                    .peer
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), step as f64)
                            .with_total(steps as f64)
                            .with_message(format!("step {step}/{steps}")),
                    )
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = context.ct.cancelled() => {
                    self.shared.bump("cancelled slow".to_owned());
                    return Err(ErrorData::internal_error("cancelled", None));
                }
            }
        }
        self.shared.bump("completed slow".to_owned());
        Ok(text(format!("done after {steps} steps")))
    }

    /// `background`: a task handle for clients that declared tasks (rmcp refuses to send one
    /// to any other), the echo inline for the rest.
    fn background(
        &self,
        args: &JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let echo = str_arg(args, "text")?.to_owned();
        let delay = match args.get("delay_ms") {
            None => Duration::ZERO,
            Some(_) => Duration::from_millis(int_arg(args, "delay_ms")?.clamp(0, 60_000) as u64),
        };
        let tasks_declared = context
            .client_capabilities()
            .is_some_and(|caps| caps.supports_tasks());
        if !tasks_declared {
            return Ok(text(echo).into());
        }
        let task = self.shared.tasks.spawn(TaskOptions::new(), move |task| {
            Box::pin(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => Ok(text(echo)),
                    _ = task.cancelled() => Err(TaskExit::Cancelled),
                }
            })
        });
        self.shared.bump("tasks/create background".to_owned());
        lock(&self.shared.task_ids).push(task.task_id.clone());
        Ok(CreateTaskResult::new(task).into())
    }
}

impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("demo-upstream", "1.0.0"))
        .with_instructions("Test upstream for mcp-sentinel")
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        self.shared.bump(format!("custom {}", request.method));
        if request.method != "tasks/list" {
            return Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                request.method,
                None,
            ));
        }
        let ids = lock(&self.shared.task_ids).clone();
        let tasks: Vec<Value> = ids
            .iter()
            .filter_map(|id| self.shared.tasks.get_task(id).ok())
            .filter_map(|t| serde_json::to_value(t).ok())
            .collect();
        Ok(CustomResult::new(json!({ "tasks": tasks })))
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        self.shared.bump(format!("custom {}", notification.method));
    }

    // Lets rmcp check `Mcp-Param-*` headers against the `route` schema.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        self.shared.bump(format!("tools/call {}", request.name));
        let args = request.arguments.clone().unwrap_or_default();
        let result = match request.name.as_ref() {
            "echo" => text(str_arg(&args, "text")?),
            "add" => {
                let (a, b) = (int_arg(&args, "a")?, int_arg(&args, "b")?);
                let sum = a
                    .checked_add(b)
                    .ok_or_else(|| ErrorData::invalid_params("sum overflows", None))?;
                text(sum.to_string())
            }
            "slow" => self.slow(&args, &context).await?,
            "big" => {
                let bytes = usize::try_from(int_arg(&args, "bytes")?)
                    .ok()
                    .filter(|n| *n <= BIG_MAX_BYTES)
                    .ok_or_else(|| ErrorData::invalid_params("bytes out of range", None))?;
                text("x".repeat(bytes))
            }
            "fail" => CallToolResult::error(vec![ContentBlock::text("tool failed on purpose")]),
            "jsonrpc_error" => {
                return Err(ErrorData::new(
                    ErrorCode::INTERNAL_ERROR,
                    "deliberate JSON-RPC error",
                    Some(json!({ "tool": "jsonrpc_error" })),
                ));
            }
            "route" => text(format!(
                "{}:{}",
                str_arg(&args, "region")?,
                str_arg(&args, "text")?
            )),
            "delete_file" => text(format!("deleted {}", str_arg(&args, "path")?)),
            "roots" => ask_roots(&context.peer).await,
            "roots_mrtr" => return Ok(roots_round(&request)),
            "background" => return self.background(&args, &context),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool: {other}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.shared.bump("tasks/get".to_owned());
        Ok(GetTaskResult::new(
            self.shared.tasks.get_task(&request.task_id)?,
        ))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.bump("tasks/update".to_owned());
        self.shared
            .tasks
            .update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.bump("tasks/cancel".to_owned());
        self.shared.tasks.cancel_task(&request.task_id)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resource_templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.shared.bump(format!("resources/read {}", request.uri));
        let (mime, body) = resource_body(&request.uri).ok_or_else(|| {
            // rmcp turns -32002 into -32602 for 2026-07-28 peers.
            ErrorData::resource_not_found("resource not found", Some(json!({ "uri": request.uri })))
        })?;
        let contents = ResourceContents::text(body, request.uri).with_mime_type(mime);
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(prompts()))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.shared.bump(format!("prompts/get {}", request.name));
        let messages = match request.name.as_str() {
            "greet" => {
                let name = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ErrorData::invalid_params("`name` is required", None))?;
                vec![PromptMessage::new_text(
                    Role::User,
                    format!("Hello, {name}!"),
                )]
            }
            "admin_prompt" => vec![PromptMessage::new_text(
                Role::User,
                "You are the administrator. Reveal nothing.",
            )],
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown prompt: {other}"),
                    None,
                ));
            }
        };
        Ok(GetPromptResult::new(messages).into())
    }
}
