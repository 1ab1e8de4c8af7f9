//! Telling agents that lists changed: legacy sessions by notification on
//! their session, modern agents on their `subscriptions/listen` stream.

use std::sync::Arc;

use rmcp::service::SubscriptionContext;

use crate::catalog::Catalog;
use crate::gateway::Gateway;

/// What changed between two catalogs, as agents see them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
}

pub fn diff(old: &Catalog, new: &Catalog) -> Changes {
    let tools = |c: &Catalog| {
        c.tools()
            .iter()
            .map(|t| (t.name.clone(), t.tool.clone()))
            .collect::<Vec<_>>()
    };
    let prompts = |c: &Catalog| {
        c.prompts()
            .iter()
            .map(|p| p.prompt.clone())
            .collect::<Vec<_>>()
    };
    let resources = |c: &Catalog| {
        (
            c.resources()
                .iter()
                .map(|r| r.resource.clone())
                .collect::<Vec<_>>(),
            c.templates()
                .iter()
                .map(|t| t.template.clone())
                .collect::<Vec<_>>(),
        )
    };
    Changes {
        tools: tools(old) != tools(new),
        prompts: prompts(old) != prompts(new),
        resources: resources(old) != resources(new),
    }
}

/// Sends list-changed notifications to legacy sessions whenever the catalog changes.
pub async fn run(gw: Gateway) {
    let mut rx = gw.upstreams.watch();
    let mut seen: Arc<Catalog> = rx.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_and_update().clone();
        let c = diff(&seen, &now);
        seen = now;
        if c == Changes::default() {
            continue;
        }
        for peer in gw.sessions.open() {
            if c.tools {
                let _ = peer.notify_tool_list_changed().await;
            }
            if c.prompts {
                let _ = peer.notify_prompt_list_changed().await;
            }
            if c.resources {
                let _ = peer.notify_resource_list_changed().await;
            }
        }
    }
}

/// Serves one modern `subscriptions/listen` stream until the agent closes it.
pub async fn listen(gw: &Gateway, sub: SubscriptionContext) {
    let mut rx = gw.upstreams.watch();
    let mut seen: Arc<Catalog> = rx.borrow_and_update().clone();
    let accepted = sub.accepted().clone();
    loop {
        tokio::select! {
            _ = sub.cancelled() => return,
            _ = gw.shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_and_update().clone();
        let c = diff(&seen, &now);
        seen = now;
        let sink = sub.sink();
        let mut closed = false;
        if c.tools && accepted.tools_list_changed == Some(true) {
            closed |= sink.notify_tool_list_changed().await.is_err();
        }
        if c.prompts && accepted.prompts_list_changed == Some(true) {
            closed |= sink.notify_prompt_list_changed().await.is_err();
        }
        if c.resources && accepted.resources_list_changed == Some(true) {
            closed |= sink.notify_resource_list_changed().await.is_err();
        }
        if closed {
            return;
        }
    }
}
