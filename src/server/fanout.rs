//! Telling agents that lists changed: legacy sessions by notification on
//! their session, modern agents on their `subscriptions/listen` stream.

use std::sync::Arc;

use rmcp::service::SubscriptionContext;

use crate::catalog::Catalog;
use crate::gateway::Gateway;

/// How long one notification to one agent may take before it is dropped.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What changed between two catalogs, as agents see them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
}

impl Changes {
    pub const ALL: Changes = Changes { tools: true, prompts: true, resources: true };
}

pub fn diff(old: &Catalog, new: &Catalog) -> Changes {
    let tools = |c: &Catalog| c.tools().iter().map(|t| (t.name.clone(), t.tool.clone())).collect::<Vec<_>>();
    let prompts = |c: &Catalog| c.prompts().iter().map(|p| p.prompt.clone()).collect::<Vec<_>>();
    let resources = |c: &Catalog| {
        (
            c.resources().iter().map(|r| r.resource.clone()).collect::<Vec<_>>(),
            c.templates().iter().map(|t| t.template.clone()).collect::<Vec<_>>(),
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
    let mut grants = gw.policies.subscribe();
    let mut seen: Arc<Catalog> = rx.borrow_and_update().clone();
    loop {
        let c = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = rx.borrow_and_update().clone();
                let c = diff(&seen, &now);
                seen = now;
                c
            }
            // Grants decide what each agent sees: any change may change its lists.
            changed = grants.changed() => {
                if changed.is_err() {
                    return;
                }
                Changes::ALL
            }
        };
        if c == Changes::default() {
            continue;
        }
        // One task per session, bounded in time: an agent that stops reading
        // must not hold up everyone else's notifications.
        for peer in gw.sessions.open() {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(SEND_TIMEOUT, async {
                    if c.tools {
                        let _ = peer.notify_tool_list_changed().await;
                    }
                    if c.prompts {
                        let _ = peer.notify_prompt_list_changed().await;
                    }
                    if c.resources {
                        let _ = peer.notify_resource_list_changed().await;
                    }
                })
                .await;
            });
        }
    }
}

/// Serves one modern `subscriptions/listen` stream until the agent closes it.
/// Only resource URIs `allowed` says the agent may see are subscribed.
pub async fn listen(gw: &Gateway, sub: SubscriptionContext, allowed: impl Fn(&str) -> bool) {
    let accepted = sub.accepted().clone();
    let mut uris = accepted.resource_subscriptions.clone().unwrap_or_default();
    uris.retain(|u| allowed(u));
    // Listen for updates before subscribing upstream, so none falls in between.
    let mut updates = gw.upstreams.subscriptions().updates();
    let mut acquired = Vec::new();
    for uri in &uris {
        if let Some(index) = gw.upstreams.catalog().route_resource(uri) {
            match gw.upstreams.subscriptions().acquire(uri, gw.upstreams.get(index).clone()).await {
                Ok(()) => acquired.push(uri.clone()),
                Err(e) => tracing::warn!(%uri, error = %e, "resource subscription not established"),
            }
        }
    }
    let mut rx = gw.upstreams.watch();
    let mut grants = gw.policies.subscribe();
    let mut seen: Arc<Catalog> = rx.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = sub.cancelled() => break,
            changed = grants.changed() => {
                if changed.is_err() || !notify_changes(&sub, &accepted, Changes::ALL).await {
                    break;
                }
            }
            _ = gw.shutdown.cancelled() => break,
            u = updates.recv() => {
                match u {
                    Ok(uri) if acquired.contains(&uri) => {
                        if sub.sink().notify_resource_updated(uri).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                }
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = rx.borrow_and_update().clone();
                let c = diff(&seen, &now);
                seen = now;
                if !notify_changes(&sub, &accepted, c).await {
                    break;
                }
            }
        }
    }
    for uri in acquired {
        gw.upstreams.subscriptions().release(&uri).await;
    }
}

/// Returns false once the stream is closed.
async fn notify_changes(sub: &SubscriptionContext, accepted: &rmcp::model::SubscriptionFilter, c: Changes) -> bool {
    let sink = sub.sink();
    let mut open = true;
    if c.tools && accepted.tools_list_changed == Some(true) {
        open &= sink.notify_tool_list_changed().await.is_ok();
    }
    if c.prompts && accepted.prompts_list_changed == Some(true) {
        open &= sink.notify_prompt_list_changed().await.is_ok();
    }
    if c.resources && accepted.resources_list_changed == Some(true) {
        open &= sink.notify_resource_list_changed().await.is_ok();
    }
    open
}

/// Sends `notifications/resources/updated` to legacy sessions watching the URI.
pub async fn resource_updates(gw: Gateway) {
    let mut rx = gw.upstreams.subscriptions().updates();
    loop {
        let uri = tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            r = rx.recv() => match r {
                Ok(uri) => uri,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "resource updates dropped: agents were too slow");
                    continue;
                }
                Err(_) => return,
            },
        };
        for peer in gw.watchers.of(&uri) {
            let uri = uri.clone();
            tokio::spawn(async move {
                let note = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                let _ = tokio::time::timeout(SEND_TIMEOUT, peer.notify_resource_updated(note)).await;
            });
        }
    }
}
