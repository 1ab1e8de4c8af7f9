//! How a governed call reached the gateway, and so what the pipeline can do
//! with its caller while the call runs: relay progress, ask questions, hand
//! out a task, stream text.

use rmcp::RoleServer;
use rmcp::model::ProgressToken;
use rmcp::service::RequestContext;
use tokio_util::sync::CancellationToken;

use crate::trace::Carrier;

pub enum Via {
    /// A `tools/call` from an MCP agent.
    Mcp(RequestContext<RoleServer>),
    /// An HTTP request outside MCP (`POST /v1/chat/completions`).
    Http(Http),
    /// No caller is connected: an approved task run in the background.
    Detached,
}

/// An HTTP caller: its connection's cancellation and where streamed text goes.
#[derive(Clone, Default)]
pub struct Http {
    pub ct: CancellationToken,
    pub sink: Option<crate::llm::Sink>,
    /// The request's trace context (`traceparent` header).
    pub trace: Carrier,
}

impl Via {
    pub fn mcp(&self) -> Option<&RequestContext<RoleServer>> {
        match self {
            Via::Mcp(ctx) => Some(ctx),
            _ => None,
        }
    }

    /// Cancelled when the caller gives up on the call.
    pub fn ct(&self) -> CancellationToken {
        match self {
            Via::Mcp(ctx) => ctx.ct.clone(),
            Via::Http(h) => h.ct.clone(),
            Via::Detached => CancellationToken::new(),
        }
    }

    /// A client that declares the tasks extension gets a task for a call that waits.
    pub fn supports_tasks(&self) -> bool {
        self.mcp().and_then(|c| c.client_capabilities()).is_some_and(|c| c.supports_tasks())
    }

    pub fn can_elicit(&self) -> bool {
        self.mcp().and_then(|c| c.client_capabilities()).is_some_and(|c| c.elicitation.is_some())
    }

    /// Whether the caller speaks the 2026-07-28 revision.
    pub fn is_modern(&self) -> bool {
        self.mcp().and_then(|c| c.protocol_version()).is_some_and(|v| crate::protocol::is_modern(&v))
    }

    /// The caller's W3C trace context: the request's `_meta`, else its HTTP headers.
    pub fn trace_context(&self) -> Carrier {
        match self {
            Via::Mcp(ctx) => {
                let headers = ctx.extensions.get::<http::request::Parts>().map(|p| &p.headers);
                Carrier::incoming(&ctx.meta.0, headers)
            }
            Via::Http(h) => h.trace.clone(),
            Via::Detached => Carrier::default(),
        }
    }

    pub fn progress_token(&self) -> Option<ProgressToken> {
        self.mcp().and_then(|c| c.meta.get_progress_token())
    }
}
