//! The gateway's MCP face (rmcp's `ServerHandler`): every request is judged on rmcp's parsed,
//! normalized form, whatever protocol revision the caller chose, so no revision bypasses the
//! policy. A tool the policy hides is absent from `tools/list` and answers `tools/call` exactly
//! as a tool that does not exist.

use std::sync::Arc;
use std::time::Instant;

use nsh_gateway_config::{Caller, Verdict};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelledNotificationParam,
    ClientRequest, ErrorCode, GetPromptRequestParams, GetPromptResponse, Implementation,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ResultType,
    ServerCapabilities, ServerConfig, ServerNotification, ServerResult, SubscriptionFilter,
    ToolListChangedNotification,
};
use rmcp::service::{NotificationContext, RequestContext, ServiceError, SubscriptionContext};
use rmcp::{ErrorData, RoleServer, ServerHandler};

use crate::audit::{Decision, Line};
use crate::gateway::Gateway;
use crate::metrics::{RequestLabels, UpstreamLabels};

/// Who called, as the HTTP front authenticated them (put in the request's extensions).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub caller: Caller,
}

/// One MCP session's handler; `fixed_caller` is the stdio front's one local caller.
#[derive(Debug, Clone)]
pub struct Front {
    gateway: Arc<Gateway>,
    fixed_caller: Option<Caller>,
}

const INSTRUCTIONS: &str = "nsh MCP gateway: the tools, prompts and resources of several MCP servers, named <server>__<name>, filtered by the gateway's policy for your team and agent.";

impl Front {
    pub fn new(gateway: Arc<Gateway>, fixed_caller: Option<Caller>) -> Self {
        Self {
            gateway,
            fixed_caller,
        }
    }

    fn caller(&self, context: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        if let Some(caller) = &self.fixed_caller {
            return Ok(caller.clone());
        }
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Authenticated>())
            .map(|a| a.caller.clone())
            .ok_or_else(|| ErrorData::invalid_request("unauthenticated", None))
    }

    fn session(context: &RequestContext<RoleServer>) -> Option<String> {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    fn record(&self, caller: &Caller, session: Option<&str>, line: Line<'_>) {
        let gateway = &self.gateway;
        gateway
            .metrics
            .requests
            .get_or_create(&RequestLabels {
                method: line.method.to_owned(),
                upstream: line.upstream.unwrap_or_default().to_owned(),
                tool: match line.decision {
                    // Unknown names are the caller's to choose: keep them out of label values.
                    Decision::Unknown | Decision::Denied => String::new(),
                    _ => line.tool.unwrap_or_default().to_owned(),
                },
                decision: line.decision.as_str().to_owned(),
            })
            .inc();
        gateway.audit.load().write(&Line {
            team: &caller.team,
            agent: &caller.agent,
            session,
            ..line
        });
    }

    /// Sends `list_changed` to this session whenever the catalog or policy changes.
    fn follow_changes(&self, peer: rmcp::service::Peer<RoleServer>) {
        let mut changes = self.gateway.changes.subscribe();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
                if peer.is_transport_closed() {
                    return;
                }
                let sent = tokio::join!(
                    peer.notify_tool_list_changed(),
                    peer.notify_prompt_list_changed(),
                    peer.notify_resource_list_changed(),
                );
                if sent.0.is_err() {
                    return;
                }
            }
        });
    }
}

/// What a caller gets for a tool that does not exist, or that it may not see: the same words.
fn unknown_tool(name: &str) -> ErrorData {
    ErrorData::invalid_params(format!("tool `{name}` not found"), None)
}

fn upstream_error(upstream: &str, err: ServiceError) -> ErrorData {
    match err {
        // The upstream's own JSON-RPC error reaches the caller as it was.
        ServiceError::McpError(error) => error,
        ServiceError::Timeout { timeout } => ErrorData::internal_error(
            format!("upstream `{upstream}` did not answer within {timeout:?}"),
            None,
        ),
        other => ErrorData::internal_error(
            format!("upstream `{upstream}` is unavailable: {other}"),
            None,
        ),
    }
}

/// JSON-RPC error for a refused request, with when to retry.
fn retry_later(why: &str, retry_after: std::time::Duration) -> ErrorData {
    let millis = retry_after.as_millis().max(1) as u64;
    ErrorData::new(
        ErrorCode(-32000),
        format!("{why}; retry in {millis} ms"),
        Some(serde_json::json!({ "retryAfterMs": millis })),
    )
}

impl ServerHandler for Front {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_resources()
                .enable_resources_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new(
            "nsh-gateway",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.follow_changes(context.peer);
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    /// The stateless revision's `subscriptions/listen`: `list_changed` on this stream.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.gateway.changes.subscribe();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                change = changes.recv() => {
                    if matches!(change, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return Ok(());
                    }
                    let notification = ServerNotification::ToolListChangedNotification(
                        ToolListChangedNotification::default(),
                    );
                    if context.sink().send(notification).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let started = Instant::now();
        let caller = self.caller(&context)?;
        let index = self.gateway.index.load();
        let policy = self.gateway.policy.load();
        let tools = index
            .tools
            .iter()
            .filter(|e| {
                policy
                    .spec
                    .tool_policy
                    .verdict(&caller, &e.item.name)
                    .allowed()
            })
            .map(|e| e.item.clone())
            .collect::<Vec<_>>();
        self.record(
            &caller,
            Self::session(&context).as_deref(),
            Line {
                team: "",
                agent: "",
                session: None,
                method: "tools/list",
                upstream: None,
                tool: None,
                decision: Decision::Allowed,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                result_bytes: None,
                result_items: Some(tools.len()),
                error: None,
                arguments: None,
            },
        );
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let caller = self.caller(&context)?;
        let session = Self::session(&context);
        let gateway = &self.gateway;
        let policy = gateway.policy.load();
        let name = request.name.to_string();
        let audit = gateway.audit.load();
        let arguments = audit
            .logs_arguments()
            .then(|| request.arguments.as_ref().map(|a| audit.redacted(a)))
            .flatten();
        fn call_line<'a>(
            name: &'a str,
            started: Instant,
            arguments: &Option<serde_json::Value>,
            decision: Decision,
            upstream: Option<&'a str>,
            error: Option<&'a str>,
            result_bytes: Option<usize>,
        ) -> Line<'a> {
            Line {
                team: "",
                agent: "",
                session: None,
                method: "tools/call",
                upstream,
                tool: Some(name),
                decision,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                result_bytes,
                result_items: None,
                error,
                arguments: arguments.clone(),
            }
        }
        let line = |decision, upstream, error, bytes| {
            call_line(&name, started, &arguments, decision, upstream, error, bytes)
        };
        let index = gateway.index.load();
        let Some(entry) = index.tool_by_name.get(&name).map(|&i| &index.tools[i]) else {
            let decision = if index.changed.contains_key(&name) {
                Decision::Changed
            } else {
                Decision::Unknown
            };
            self.record(
                &caller,
                session.as_deref(),
                line(decision, None, None, None),
            );
            return Err(unknown_tool(&name));
        };
        let upstream = entry.upstream.clone();
        let up = upstream.name();
        if let verdict @ (Verdict::Denied | Verdict::NotAllowed) =
            policy.spec.tool_policy.verdict(&caller, &name)
        {
            let why = if verdict == Verdict::Denied {
                "denied by policy"
            } else {
                "not on an allow list"
            };
            self.record(
                &caller,
                session.as_deref(),
                line(Decision::Denied, Some(up), Some(why), None),
            );
            return Err(unknown_tool(&name));
        }
        if let Err(not_until) = policy.limiter.check_key(&caller) {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            self.record(
                &caller,
                session.as_deref(),
                line(Decision::RateLimited, Some(up), None, None),
            );
            return Err(retry_later(
                &format!(
                    "rate limit of {} exceeded for agent `{}`",
                    policy.spec.rate_limit.rate, caller.agent
                ),
                wait,
            ));
        }
        let Ok(_slot) = upstream.slots.clone().try_acquire_owned() else {
            self.record(
                &caller,
                session.as_deref(),
                line(Decision::Busy, Some(up), None, None),
            );
            return Err(retry_later(
                &format!(
                    "upstream `{up}` has {} calls in flight",
                    policy.spec.rate_limit.upstream_concurrency
                ),
                std::time::Duration::from_millis(100),
            ));
        };
        let Some(live) = upstream.live() else {
            self.record(
                &caller,
                session.as_deref(),
                line(
                    Decision::UpstreamError,
                    Some(up),
                    Some("upstream down"),
                    None,
                ),
            );
            return Err(ErrorData::internal_error(
                format!("upstream `{up}` is down; its tools return when it recovers"),
                None,
            ));
        };
        let mut forwarded = request;
        forwarded.name = entry.original.clone().into();
        let outcome = self
            .forward(
                &live.peer,
                up,
                forwarded,
                &context,
                upstream.spec.call_timeout(),
            )
            .await;
        let elapsed = started.elapsed();
        gateway
            .metrics
            .latency
            .get_or_create(&UpstreamLabels {
                upstream: up.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        match outcome {
            Ok(result) => {
                let bytes = match &result {
                    ServerResult::CallToolResult(r) => {
                        serde_json::to_vec(&r.content).map(|v| v.len()).ok()
                    }
                    _ => None,
                };
                self.record(
                    &caller,
                    session.as_deref(),
                    line(Decision::Allowed, Some(up), None, bytes),
                );
                match result {
                    // A 2025-era upstream omits `resultType`; the 2026-07-28 revision needs
                    // it (rmcp strips it again for callers on an older revision).
                    ServerResult::CallToolResult(mut r) => {
                        r.result_type.get_or_insert(ResultType::COMPLETE);
                        Ok(CallToolResponse::Complete(r))
                    }
                    ServerResult::InputRequiredResult(r) => Ok(CallToolResponse::InputRequired(r)),
                    ServerResult::CreateTaskResult(r) => Ok(CallToolResponse::Task(r)),
                    _ => Ok(CallToolResponse::Complete(CallToolResult::default())),
                }
            }
            Err(err) => {
                let shown = err.message.to_string();
                self.record(
                    &caller,
                    session.as_deref(),
                    line(Decision::UpstreamError, Some(up), Some(&shown), None),
                );
                Err(err)
            }
        }
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.caller(&context)?;
        let index = self.gateway.index.load();
        Ok(ListPromptsResult::with_all_items(
            index.prompts.iter().map(|e| e.item.clone()).collect(),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let started = Instant::now();
        let caller = self.caller(&context)?;
        let name = request.name.clone();
        let outcome = self.prompt(request).await;
        self.record_other(&caller, &context, "prompts/get", &name, started, &outcome);
        outcome.map(|(_, response)| response)
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.caller(&context)?;
        let index = self.gateway.index.load();
        Ok(ListResourcesResult::with_all_items(
            index.resources.iter().map(|e| e.item.clone()).collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.caller(&context)?;
        let index = self.gateway.index.load();
        Ok(ListResourceTemplatesResult::with_all_items(
            index.templates.iter().map(|e| e.item.clone()).collect(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let started = Instant::now();
        let caller = self.caller(&context)?;
        let uri = request.uri.clone();
        let outcome = self.resource(request).await;
        self.record_other(&caller, &context, "resources/read", &uri, started, &outcome);
        outcome.map(|(_, response)| response)
    }
}

impl Front {
    /// The audit line and metric of a prompt or resource request.
    fn record_other<T>(
        &self,
        caller: &Caller,
        context: &RequestContext<RoleServer>,
        method: &str,
        name: &str,
        started: Instant,
        outcome: &Result<(String, T), ErrorData>,
    ) {
        let (upstream, decision, error) = match outcome {
            Ok((upstream, _)) => (Some(upstream.as_str()), Decision::Allowed, None),
            Err(err)
                if err.code == ErrorCode::INVALID_PARAMS
                    || err.code == ErrorCode::RESOURCE_NOT_FOUND =>
            {
                (None, Decision::Unknown, None)
            }
            Err(err) => (None, Decision::UpstreamError, Some(err.message.to_string())),
        };
        self.record(
            caller,
            Self::session(context).as_deref(),
            Line {
                team: "",
                agent: "",
                session: None,
                method,
                upstream,
                tool: Some(name),
                decision,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                result_bytes: None,
                result_items: None,
                error: error.as_deref(),
                arguments: None,
            },
        );
    }

    /// `prompts/get` at the upstream that offers the prompt; with that upstream's name.
    async fn prompt(
        &self,
        mut request: GetPromptRequestParams,
    ) -> Result<(String, GetPromptResponse), ErrorData> {
        let index = self.gateway.index.load();
        let Some(entry) = index
            .prompt_by_name
            .get(&request.name)
            .map(|&i| &index.prompts[i])
        else {
            return Err(ErrorData::invalid_params(
                format!("prompt `{}` not found", request.name),
                None,
            ));
        };
        let up = entry.upstream.name().to_owned();
        let live = entry
            .upstream
            .live()
            .ok_or_else(|| ErrorData::internal_error(format!("upstream `{up}` is down"), None))?;
        request.name = entry.original.clone();
        let mut response = live
            .peer
            .get_prompt_once(request)
            .await
            .map_err(|e| upstream_error(&up, e))?;
        if let GetPromptResponse::Complete(result) = &mut response {
            result.result_type.get_or_insert(ResultType::COMPLETE);
        }
        Ok((up, response))
    }

    /// `resources/read` at the upstream that serves the URI; with that upstream's name.
    async fn resource(
        &self,
        request: ReadResourceRequestParams,
    ) -> Result<(String, ReadResourceResponse), ErrorData> {
        let index = self.gateway.index.load();
        // A listed URI, else the upstream whose template's fixed prefix it starts with.
        let upstream = index
            .resource_by_uri
            .get(&request.uri)
            .cloned()
            .or_else(|| {
                index
                    .templates
                    .iter()
                    .filter(|t| {
                        let prefix = t.original.split('{').next().unwrap_or_default();
                        !prefix.is_empty() && request.uri.starts_with(prefix)
                    })
                    .max_by_key(|t| t.original.split('{').next().unwrap_or_default().len())
                    .map(|t| t.upstream.clone())
            });
        let Some(upstream) = upstream else {
            return Err(ErrorData::resource_not_found(
                format!("resource `{}` not found", request.uri),
                None,
            ));
        };
        let up = upstream.name().to_owned();
        let live = upstream
            .live()
            .ok_or_else(|| ErrorData::internal_error(format!("upstream `{up}` is down"), None))?;
        let mut response = live
            .peer
            .read_resource_once(request)
            .await
            .map_err(|e| upstream_error(&up, e))?;
        if let ReadResourceResponse::Complete(result) = &mut response {
            result.result_type.get_or_insert(ResultType::COMPLETE);
        }
        Ok((up, response))
    }

    /// Sends the call upstream under rmcp's own request id and progress token, routes the
    /// upstream's progress back to this caller, and cancels upstream when the caller cancels.
    async fn forward(
        &self,
        peer: &rmcp::service::Peer<rmcp::RoleClient>,
        upstream: &str,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        timeout: std::time::Duration,
    ) -> Result<ServerResult, ErrorData> {
        let request = ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(params));
        let options = rmcp::service::PeerRequestOptions::with_timeout(timeout);
        let handle = peer
            .send_cancellable_request(request, options)
            .await
            .map_err(|e| upstream_error(upstream, e))?;
        let upstream_id = handle.id.clone();
        let route = context.meta.get_progress_token().map(|caller_token| {
            self.gateway.progress.open(
                upstream,
                handle.progress_token.clone(),
                context.peer.clone(),
                caller_token,
            )
        });
        tokio::select! {
            result = handle.await_response() => {
                if let Some(route) = &route {
                    route.settle().await;
                }
                result.map_err(|e| upstream_error(upstream, e))
            }
            () = context.ct.cancelled() => {
                let _ = peer
                    .notify_cancelled(CancelledNotificationParam::new(
                        Some(upstream_id),
                        Some("cancelled by the caller".into()),
                    ))
                    .await;
                Err(ErrorData::internal_error("cancelled", None))
            }
        }
    }
}
