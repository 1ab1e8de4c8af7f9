//! tollgate as an MCP server to agents: an rmcp `ServerHandler` that serves
//! the catalog and routes each request to the upstream that owns it.
//!
//! One `Session` value is made per legacy session and per stateless request
//! (rmcp's factory), so it holds only a cheap clone of the shared [`Gateway`].

// Logging is deprecated by SEP-2577 but still part of both protocol eras we serve.
#![allow(deprecated)]

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CancelTaskParams, CompleteRequestParams, CompleteResult,
    CustomRequest, CustomResult, DiscoverResult, GetPromptRequestParams, GetPromptResponse, GetTaskParams,
    GetTaskResult, Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, Reference, ResultType, ServerCapabilities, ServerConfig,
    SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
    UpdateTaskParams,
};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::approval::{Execution, Mode, Status};
use crate::gateway::Gateway;
use crate::identity::{self, AuthError, Principal};
use crate::ids::ApprovalId;
use crate::pipeline::{self, Caller};
use crate::upstream::Upstream;
use crate::upstream::own::AgentUpstreams;

#[derive(Clone)]
pub struct Session {
    pub gw: Gateway,
    /// The principal of a transport that authenticates once (stdio,
    /// WebSocket); re-checked on every request. HTTP requests carry their
    /// own, checked by the edge on each request.
    fixed: Option<Principal>,
    /// This session's id, for transports without MCP session ids.
    id: Option<String>,
    /// A legacy HTTP session's place under the session caps, taken by the
    /// edge and kept here from `initialize` until the session ends.
    slot: std::sync::Arc<std::sync::OnceLock<super::session_cap::Slot>>,
    /// This session's own upstream sessions (`upstream::own`), closed when
    /// the last clone of this value is dropped: when the session ends.
    own: AgentUpstreams,
}

impl Session {
    /// A session whose requests carry their principal (Streamable HTTP).
    pub fn new(gw: Gateway) -> Self {
        Self { gw, fixed: None, id: None, slot: Default::default(), own: AgentUpstreams::default() }
    }

    /// A session authenticated once, for its whole life (stdio, WebSocket).
    pub fn authenticated(gw: Gateway, principal: Principal, transport: &str) -> Self {
        Self {
            gw,
            fixed: Some(principal),
            id: Some(format!("{transport}:{}", uuid::Uuid::new_v4())),
            slot: Default::default(),
            own: AgentUpstreams::default(),
        }
    }

    /// Who sent this request. A revoked key fails here at once.
    async fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Caller, AuthError> {
        if let Some(parts) = ctx.extensions.get::<http::request::Parts>()
            && let Some(p) = parts.extensions.get::<Principal>()
        {
            let session = parts.headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
            let auth_micros = parts.extensions.get::<identity::AuthMicros>().map_or(0, |m| m.0);
            return Ok(Caller { principal: p.clone(), session, auth_micros });
        }
        match &self.fixed {
            Some(p) => {
                let principal = self.gw.reverify(p).await?;
                Ok(Caller { principal, session: self.id.clone(), auth_micros: 0 })
            }
            None => Err(AuthError::Missing),
        }
    }

    async fn principal(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, McpError> {
        self.caller(ctx).await.map(|c| c.principal).map_err(|e| pipeline::unauthorized(&e))
    }

    /// The task `id`, if it is one of the caller's: tasks are bound to the
    /// key that created them; anyone else's is unknown.
    async fn own_task(
        &self,
        id: &str,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<crate::store::ApprovalRow, McpError> {
        let principal = self.principal(ctx).await?;
        let row = self
            .gw
            .approvals
            .get(&ApprovalId::from(id))
            .await
            .map_err(|e| McpError::internal_error(format!("the task store is unavailable: {e}"), None))?;
        row.filter(|r| r.principal == principal.key_id && r.mode == Mode::Task).ok_or_else(|| {
            McpError::invalid_params(format!("unknown task: {}", crate::audit::record::bounded(id, 64)), None)
        })
    }

    /// Which upstreams' resources the principal may see: those where it may
    /// see at least one tool or prompt.
    fn visible_upstreams(&self, principal: &Principal, catalog: &crate::catalog::Catalog) -> Vec<bool> {
        let policy = self.gw.policies.current();
        let mut seen = vec![false; self.gw.upstreams.all().len()];
        for t in catalog.tools() {
            if let Some(i) = t.target.upstream()
                && !seen[i]
                && policy.visible(principal, &t.name)
            {
                seen[i] = true;
            }
        }
        for p in catalog.prompts() {
            if !seen[p.upstream] && policy.visible(principal, &p.name) {
                seen[p.upstream] = true;
            }
        }
        seen
    }

    /// The capabilities this agent is offered: tollgate's own (tools,
    /// prompts, resources and their list changes, tasks for approvals) and
    /// those only upstreams can give (resource subscriptions, completions,
    /// log messages) when at least one upstream the agent may see has them.
    /// `get_info` keeps them all, so rmcp lets every method through to the
    /// handler, which answers for the upstream it routes to.
    async fn offered(&self, ctx: &RequestContext<RoleServer>) -> ServerCapabilities {
        let mut caps = self.get_info().capabilities;
        let (mut subscribe, mut completions, mut logging) = (false, false, false);
        if let Ok(principal) = self.principal(ctx).await {
            let catalog = self.catalog().await;
            let open = self.visible_upstreams(&principal, &catalog);
            for (i, _) in open.iter().enumerate().filter(|(_, open)| **open) {
                let theirs = self.upstream(i).peer().ok().and_then(|peer| peer.peer_info());
                if let Some(info) = theirs {
                    let c = &info.capabilities;
                    subscribe |= c.resources.as_ref().and_then(|r| r.subscribe) == Some(true);
                    completions |= c.completions.is_some();
                    logging |= c.logging.is_some();
                }
            }
        }
        if let Some(r) = caps.resources.as_mut()
            && !subscribe
        {
            r.subscribe = None;
        }
        if !completions {
            caps.completions = None;
        }
        if !logging {
            caps.logging = None;
        }
        caps
    }

    /// The upstream serving `uri`, if the principal may see it; else the
    /// unknown-resource error (an invisible one is not told apart).
    async fn resource_upstream(&self, principal: &Principal, uri: &str) -> Result<usize, McpError> {
        let catalog = self.catalog().await;
        let open = self.visible_upstreams(principal, &catalog);
        catalog.route_resource(uri).filter(|i| open[*i]).ok_or_else(|| unknown_resource(uri))
    }

    fn upstream(&self, index: usize) -> &Upstream {
        self.gw.upstreams.get(index)
    }

    /// The catalog, once start-up has had its chance to fill it.
    async fn catalog(&self) -> std::sync::Arc<crate::catalog::Catalog> {
        if !self.gw.upstreams.settled() {
            self.gw.upstreams.wait_settled(self.gw.upstreams.startup_bound()).await;
        }
        self.gw.upstreams.catalog()
    }
}

/// Awaits an upstream request within the upstream's call timeout.
impl ServerHandler for Session {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_completions()
            .enable_logging()
            .enable_tasks()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions("tollgate: every tool call is governed (grants, validation, approvals, budgets, audit).")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let principal = self.principal(&ctx).await?;
        let catalog = self.catalog().await;
        let policy = self.gw.policies.current();
        let tools: Vec<Tool> =
            catalog.tools().iter().filter(|e| policy.visible(&principal, &e.name)).map(|e| e.tool.clone()).collect();
        // Lists are per principal and change with grants: never cacheable by others.
        Ok(ListToolsResult::with_all_items(tools).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.gw.upstreams.catalog().tool(name).map(|e| e.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let caller = self.caller(&ctx).await;
        // Only a legacy agent can need an upstream session of its own.
        if !ctx.protocol_version().is_some_and(|v| crate::protocol::is_modern(&v)) {
            ctx.extensions.insert(self.own.clone());
        }
        pipeline::call(&self.gw, caller, request, pipeline::Via::Mcp(ctx)).await.into_mcp()
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let row = self.own_task(&request.task_id, &ctx).await?;
        if row.status == Status::Approved && row.execution == Execution::None {
            // Approved while no process ran it (or its event was missed): run it now.
            tokio::spawn(pipeline::approve::run_task(self.gw.clone(), row.id.clone()));
        }
        let detailed = crate::approval::task::detailed(&row);
        if detailed.status().is_terminal() && !row.reported {
            // The agent has its outcome: the same call made again is a new action.
            let _ = self.gw.approvals.mark_reported(&row.id).await;
        }
        Ok(GetTaskResult::new(detailed))
    }

    async fn update_task(&self, request: UpdateTaskParams, ctx: RequestContext<RoleServer>) -> Result<(), McpError> {
        // Approval tasks never ask the agent for input: answers are ignored,
        // as the extension says of unknown keys.
        self.own_task(&request.task_id, &ctx).await.map(|_| ())
    }

    async fn cancel_task(&self, request: CancelTaskParams, ctx: RequestContext<RoleServer>) -> Result<(), McpError> {
        let row = self.own_task(&request.task_id, &ctx).await?;
        let by = format!("key:{}", row.principal);
        // Cancelling a task already finished (or running) changes nothing; still acknowledged.
        self.gw
            .approvals
            .cancel(&row.id, &by)
            .await
            .map(|_| ())
            .map_err(|e| McpError::internal_error(format!("the task store is unavailable: {e}"), None))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let principal = self.principal(&ctx).await?;
        let catalog = self.catalog().await;
        let policy = self.gw.policies.current();
        let prompts = catalog
            .prompts()
            .iter()
            .filter(|p| policy.visible(&principal, &p.name))
            .map(|p| p.prompt.clone())
            .collect();
        Ok(ListPromptsResult::with_all_items(prompts).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let principal = self.principal(&ctx).await?;
        let catalog = self.catalog().await;
        let policy = self.gw.policies.current();
        let entry = catalog
            .prompt(&request.name)
            .filter(|p| policy.visible(&principal, &p.name))
            .ok_or_else(|| McpError::invalid_params(format!("unknown prompt: {}", request.name), None))?;
        let up = self.upstream(entry.upstream);
        let mut out = GetPromptRequestParams::new(entry.upstream_prompt.clone());
        out.arguments = request.arguments;
        out.input_responses = request.input_responses;
        out.request_state = request.request_state;
        match up.get_prompt(out).await? {
            GetPromptResponse::Complete(r) => {
                // A prompt's messages go to the agent's model: scanned like results.
                let mut r = pipeline::scan_prompt(&self.gw, &principal, entry.upstream, &entry.name, r).await?;
                r.result_type = Some(ResultType::COMPLETE);
                Ok(GetPromptResponse::Complete(r))
            }
            other => Ok(other),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let principal = self.principal(&ctx).await?;
        let catalog = self.catalog().await;
        let open = self.visible_upstreams(&principal, &catalog);
        let resources = catalog.resources().iter().filter(|r| open[r.upstream]).map(|r| r.resource.clone()).collect();
        Ok(ListResourcesResult::with_all_items(resources).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let principal = self.principal(&ctx).await?;
        let catalog = self.catalog().await;
        let open = self.visible_upstreams(&principal, &catalog);
        let templates = catalog.templates().iter().filter(|t| open[t.upstream]).map(|t| t.template.clone()).collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let principal = self.principal(&ctx).await?;
        let index = self.resource_upstream(&principal, &request.uri).await?;
        let up = self.upstream(index);
        let mut out = ReadResourceRequestParams::new(request.uri);
        out.input_responses = request.input_responses;
        out.request_state = request.request_state;
        match up.read_resource(out).await? {
            ReadResourceResponse::Complete(r) => {
                // What the agent reads passes the same scans as tool results.
                let mut r = pipeline::scan_resource(&self.gw, &principal, index, r).await?;
                r.result_type = Some(ResultType::COMPLETE);
                Ok(ReadResourceResponse::Complete(r))
            }
            other => Ok(other),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let principal = self.principal(&ctx).await?;
        let catalog = self.catalog().await;
        let policy = self.gw.policies.current();
        let open = self.visible_upstreams(&principal, &catalog);
        let (index, reference) = match &request.r#ref {
            Reference::Prompt(p) => {
                let entry = catalog
                    .prompt(&p.name)
                    .filter(|e| policy.visible(&principal, &e.name))
                    .ok_or_else(|| McpError::invalid_params(format!("unknown prompt: {}", p.name), None))?;
                let mut upstream_ref = p.clone();
                upstream_ref.name = entry.upstream_prompt.clone();
                (entry.upstream, Reference::Prompt(upstream_ref))
            }
            Reference::Resource(r) => {
                let index = catalog
                    .route_template(&r.uri)
                    .or_else(|| catalog.route_resource(&r.uri))
                    .filter(|i| open[*i])
                    .ok_or_else(|| McpError::invalid_params(format!("unknown resource template: {}", r.uri), None))?;
                (index, Reference::Resource(r.clone()))
            }
            _ => {
                return Err(McpError::invalid_params("unsupported completion reference", None));
            }
        };
        let mut out = CompleteRequestParams::new(reference, request.argument);
        out.context = request.context;
        let mut r = self.upstream(index).complete(out).await?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r)
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // A shared upstream connection serves every agent, so one agent's
        // level is not forwarded there: it would silence or flood everyone
        // else's logs. The agent's own upstream sessions are told.
        self.own.set_level(request.level).await;
        Ok(())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let principal = self.principal(&ctx).await?;
        let index = self.resource_upstream(&principal, &request.uri).await?;
        if !self.gw.watchers.add(&request.uri, ctx.peer.clone()) {
            return Ok(());
        }
        let up = self.gw.upstreams.get(index).clone();
        if let Err(e) = self.gw.upstreams.subscriptions().acquire(&request.uri, up).await {
            self.gw.watchers.remove(&request.uri, &ctx.peer);
            return Err(McpError::internal_error(e.to_string(), None));
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if self.gw.watchers.remove(&request.uri, &ctx.peer) {
            self.gw.upstreams.subscriptions().release(&request.uri).await;
        }
        Ok(())
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        if let Some(slot) = ctx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<super::session_cap::Slot>())
        {
            let _ = self.slot.set(slot.clone());
        }
        ctx.peer.set_peer_info(request.clone());
        let mut info = self.negotiate_initialize(&request)?;
        info.capabilities = self.offered(&ctx).await;
        Ok(info)
    }

    async fn discover(&self, ctx: RequestContext<RoleServer>) -> Result<DiscoverResult, McpError> {
        let mut info = self.get_info();
        info.capabilities = self.offered(&ctx).await;
        Ok(DiscoverResult::from_server_info(self.supported_protocol_versions().into_owned(), info))
    }

    /// rmcp hands a request whose params do not fit the method's shape here, as
    /// if the method were unknown: answer "invalid params", naming the field.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        Err(super::malformed::explain(&request.method, request.params.as_ref()))
    }

    async fn on_initialized(&self, ctx: NotificationContext<RoleServer>) {
        self.gw.sessions.add(ctx.peer);
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        let mut accepted = SubscriptionFilter::new();
        accepted.tools_list_changed = requested.tools_list_changed;
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.clone();
        Some(accepted)
    }

    async fn listen(&self, sub: SubscriptionContext) -> Result<(), McpError> {
        let principal = self.principal(sub.request_context()).await?;
        let catalog = self.catalog().await;
        let open = self.visible_upstreams(&principal, &catalog);
        let allowed = move |uri: &str| catalog.route_resource(uri).is_some_and(|i| open[i]);
        crate::server::fanout::listen(&self.gw, sub, allowed).await;
        Ok(())
    }
}

/// A resource no visible upstream serves: -32002 with the URI in `data`, as
/// the specification asks (SEP-2164), so a client can tell which one.
fn unknown_resource(uri: &str) -> McpError {
    McpError::resource_not_found(format!("unknown resource: {uri}"), Some(serde_json::json!({ "uri": uri })))
}
