//! Resource subscriptions: agents' interest in URIs, and the one upstream
//! subscription that backs each URI however many agents want it.
//!
//! A legacy upstream is asked with `resources/subscribe` and sends
//! `notifications/resources/updated` on its session (see `handler`); a
//! 2026-07-28 upstream is asked on a `subscriptions/listen` stream. Either
//! way each update is published once on [`Subscriptions::updates`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{ServerNotification, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams};
use tokio::sync::broadcast;

use super::{Upstream, UpstreamError};
use crate::sync::Locked;

enum Backing {
    /// Subscribed with `resources/subscribe` on a legacy session.
    Session,
    /// A task reading a `subscriptions/listen` stream.
    Listen(tokio::task::JoinHandle<()>),
}

struct Entry {
    refs: usize,
    upstream: Arc<Upstream>,
    backing: Backing,
}

#[derive(Clone)]
pub struct Subscriptions {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    updates: broadcast::Sender<String>,
    /// Bumped whenever a URI gains or loses its upstream subscription.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Self {
            entries: Default::default(),
            updates: broadcast::channel(1024).0,
            changed: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Subscriptions {
    /// URIs of updated resources, as upstreams report them.
    pub fn updates(&self) -> broadcast::Receiver<String> {
        self.updates.subscribe()
    }

    /// Whether `uri` is currently subscribed upstream.
    pub fn is_active(&self, uri: &str) -> bool {
        self.entries.locked().contains_key(uri)
    }

    /// Waits until `uri` is subscribed upstream. (A 2026-07-28 agent is
    /// acknowledged by rmcp before tollgate subscribes upstream, so updates in
    /// that short window are not delivered.)
    pub async fn wait_active(&self, uri: &str) {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|_| self.is_active(uri)).await;
    }

    /// The sender of [`Subscriptions::updates`], for a session's handler.
    pub(super) fn publisher(&self) -> broadcast::Sender<String> {
        self.updates.clone()
    }

    pub(super) fn publish(&self, uri: String) {
        let _ = self.updates.send(uri);
    }

    /// Registers one agent's interest in `uri`, subscribing upstream on the first.
    pub async fn acquire(&self, uri: &str, upstream: Arc<Upstream>) -> Result<(), UpstreamError> {
        {
            let mut entries = self.entries.locked();
            if let Some(e) = entries.get_mut(uri) {
                e.refs += 1;
                return Ok(());
            }
        }
        let bound = upstream.manifest.call_timeout;
        let backing = tokio::time::timeout(bound, self.subscribe_upstream(uri, &upstream)).await.map_err(|_| {
            UpstreamError::TimedOut { upstream: upstream.name.clone(), what: "subscription", after: bound }
        })??;
        let mut entries = self.entries.locked();
        match entries.get_mut(uri) {
            // Another agent subscribed while we were asking the upstream: keep theirs.
            Some(e) => {
                e.refs += 1;
                if let Backing::Listen(task) = backing {
                    task.abort();
                }
            }
            None => {
                entries.insert(uri.to_string(), Entry { refs: 1, upstream, backing });
                drop(entries);
                self.changed.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }

    /// Drops one agent's interest; the last one unsubscribes upstream.
    pub async fn release(&self, uri: &str) {
        let last = {
            let mut entries = self.entries.locked();
            match entries.get_mut(uri) {
                Some(e) if e.refs > 1 => {
                    e.refs -= 1;
                    None
                }
                Some(_) => entries.remove(uri),
                None => None,
            }
        };
        if let Some(entry) = last {
            self.changed.send_modify(|n| *n += 1);
            match entry.backing {
                Backing::Listen(task) => task.abort(),
                Backing::Session => {
                    if let Ok(peer) = entry.upstream.peer() {
                        #[allow(deprecated)]
                        let _ = peer.unsubscribe(UnsubscribeRequestParams::new(uri)).await;
                    }
                }
            }
        }
    }

    async fn subscribe_upstream(&self, uri: &str, up: &Upstream) -> Result<Backing, UpstreamError> {
        let peer = up.peer()?;
        let info = peer.peer_info().ok_or_else(|| UpstreamError::NotConnected(up.name.clone()))?;
        if info.capabilities.resources.as_ref().and_then(|r| r.subscribe) != Some(true) {
            let what = "resource subscriptions";
            return Err(UpstreamError::Unsupported { upstream: up.name.clone(), what });
        }
        let refused = |e: rmcp::service::ServiceError| UpstreamError::Failed {
            upstream: up.name.clone(),
            how: "refused the subscription",
            why: e.to_string(),
        };
        if !crate::protocol::is_modern(&info.protocol_version) {
            #[allow(deprecated)]
            peer.subscribe(SubscribeRequestParams::new(uri)).await.map_err(refused)?;
            return Ok(Backing::Session);
        }
        let mut filter = SubscriptionFilter::new();
        filter.resource_subscriptions = Some(vec![uri.to_string()]);
        let mut sub = peer.listen(filter).await.map_err(refused)?;
        let this = self.clone();
        Ok(Backing::Listen(tokio::spawn(async move {
            while let Ok(Some(n)) = sub.next().await {
                if let ServerNotification::ResourceUpdatedNotification(u) = n {
                    this.publish(u.params.uri);
                }
            }
        })))
    }
}
