//! tollgate as an MCP server to agents: an rmcp `ServerHandler` that serves
//! the catalog and routes each request to the upstream that owns it.
//!
//! One `Session` value is made per legacy session and per stateless request
//! (rmcp's factory), so it holds only a cheap clone of the shared [`Gateway`].

// Logging is deprecated by SEP-2577 but still part of both protocol eras we serve.
#![allow(deprecated)]

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, ClientRequest, CompleteRequest, CompleteRequestParams,
    CompleteResult, GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, Reference, ResultType, ServerCapabilities, ServerConfig,
    ServerResult, SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, ServiceError, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::gateway::Gateway;
use crate::pipeline;
use crate::upstream::Upstream;

#[derive(Clone)]
pub struct Session {
    pub gw: Gateway,
}

impl Session {
    pub fn new(gw: Gateway) -> Self {
        Self { gw }
    }

    fn upstream(&self, index: usize) -> &Upstream {
        self.gw.upstreams.get(index)
    }

    /// The catalog, once start-up has had its chance to fill it.
    async fn catalog(&self) -> std::sync::Arc<crate::catalog::Catalog> {
        if !self.gw.upstreams.settled() {
            self.gw.upstreams.wait_settled(STARTUP_WAIT).await;
        }
        self.gw.upstreams.catalog()
    }
}

/// How long a request right after start-up waits for upstreams' first connections.
const STARTUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Awaits an upstream request within the upstream's call timeout.
async fn bounded<T>(up: &Upstream, request: impl Future<Output = Result<T, ServiceError>>) -> Result<T, McpError> {
    match tokio::time::timeout(up.manifest.call_timeout, request).await {
        Ok(r) => r.map_err(|e| relay(up, e)),
        Err(_) => Err(McpError::internal_error(
            format!("upstream `{}` did not answer within {:?}", up.name, up.manifest.call_timeout),
            None,
        )),
    }
}

/// Maps a failure talking to an upstream onto the error the agent receives.
fn relay(up: &Upstream, e: ServiceError) -> McpError {
    match e {
        ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("upstream `{}` failed: {other}", up.name), None),
    }
}

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
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions("tollgate: every tool call is governed (grants, validation, approvals, budgets, audit).")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let catalog = self.catalog().await;
        let tools: Vec<Tool> = catalog.tools().iter().map(|e| e.tool.clone()).collect();
        // Lists are per principal and change with grants: never cacheable by others.
        Ok(ListToolsResult::with_all_items(tools).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.gw.upstreams.catalog().tool(name).map(|e| e.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        pipeline::call(&self.gw, request, ctx).await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let catalog = self.catalog().await;
        let prompts = catalog.prompts().iter().map(|p| p.prompt.clone()).collect();
        Ok(ListPromptsResult::with_all_items(prompts).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let catalog = self.catalog().await;
        let entry = catalog
            .prompt(&request.name)
            .ok_or_else(|| McpError::invalid_params(format!("unknown prompt: {}", request.name), None))?;
        let up = self.upstream(entry.upstream);
        let conn = up.conn().map_err(|e| McpError::internal_error(e, None))?;
        let _counted = conn.inflight.other();
        let mut out = GetPromptRequestParams::new(entry.upstream_prompt.clone());
        out.arguments = request.arguments;
        out.input_responses = request.input_responses;
        out.request_state = request.request_state;
        match bounded(up, conn.peer.get_prompt_once(out)).await? {
            GetPromptResponse::Complete(mut r) => {
                r.result_type = Some(ResultType::COMPLETE);
                Ok(GetPromptResponse::Complete(r))
            }
            other => Ok(other),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let catalog = self.catalog().await;
        let resources = catalog.resources().iter().map(|r| r.resource.clone()).collect();
        Ok(ListResourcesResult::with_all_items(resources).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let catalog = self.catalog().await;
        let templates = catalog.templates().iter().map(|t| t.template.clone()).collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates).with_ttl_ms(0).with_cache_scope(CacheScope::Private))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let catalog = self.catalog().await;
        let index = catalog
            .route_resource(&request.uri)
            .ok_or_else(|| McpError::resource_not_found(format!("unknown resource: {}", request.uri), None))?;
        let up = self.upstream(index);
        let conn = up.conn().map_err(|e| McpError::internal_error(e, None))?;
        let _counted = conn.inflight.other();
        let mut out = ReadResourceRequestParams::new(request.uri);
        out.input_responses = request.input_responses;
        out.request_state = request.request_state;
        match bounded(up, conn.peer.read_resource_once(out)).await? {
            ReadResourceResponse::Complete(mut r) => {
                r.result_type = Some(ResultType::COMPLETE);
                Ok(ReadResourceResponse::Complete(r))
            }
            other => Ok(other),
        }
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let catalog = self.catalog().await;
        let (index, reference) = match &request.r#ref {
            Reference::Prompt(p) => {
                let entry = catalog
                    .prompt(&p.name)
                    .ok_or_else(|| McpError::invalid_params(format!("unknown prompt: {}", p.name), None))?;
                let mut upstream_ref = p.clone();
                upstream_ref.name = entry.upstream_prompt.clone();
                (entry.upstream, Reference::Prompt(upstream_ref))
            }
            Reference::Resource(r) => {
                let index = catalog
                    .route_template(&r.uri)
                    .or_else(|| catalog.route_resource(&r.uri))
                    .ok_or_else(|| McpError::invalid_params(format!("unknown resource template: {}", r.uri), None))?;
                (index, Reference::Resource(r.clone()))
            }
            _ => {
                return Err(McpError::invalid_params("unsupported completion reference", None));
            }
        };
        let up = self.upstream(index);
        let conn = up.conn().map_err(|e| McpError::internal_error(e, None))?;
        let _counted = conn.inflight.other();
        let mut out = CompleteRequestParams::new(reference, request.argument);
        out.context = request.context;
        let request = ClientRequest::CompleteRequest(CompleteRequest::new(out));
        match bounded(up, conn.peer.send_request(request)).await? {
            ServerResult::CompleteResult(mut r) => {
                r.result_type = Some(ResultType::COMPLETE);
                Ok(r)
            }
            _ => Err(McpError::internal_error(
                format!("upstream `{}` answered completion with another result", up.name),
                None,
            )),
        }
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // Upstream sessions are shared by every agent, so one agent's level is
        // not forwarded: it would silence or flood everyone else's logs.
        let _ = request;
        Ok(())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let catalog = self.catalog().await;
        let index = catalog
            .route_resource(&request.uri)
            .ok_or_else(|| McpError::resource_not_found(format!("unknown resource: {}", request.uri), None))?;
        if !self.gw.watchers.add(&request.uri, ctx.peer.clone()) {
            return Ok(());
        }
        let up = self.gw.upstreams.get(index).clone();
        if let Err(e) = self.gw.upstreams.subscriptions().acquire(&request.uri, up).await {
            self.gw.watchers.remove(&request.uri, &ctx.peer);
            return Err(McpError::internal_error(e, None));
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
        crate::server::fanout::listen(&self.gw, sub).await;
        Ok(())
    }
}
