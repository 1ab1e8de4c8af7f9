//! Putting what the store holds in force: the API's grants in the policy,
//! admins' pins in the catalog, in this process at once after a change
//! made here ([`reload`]) and within moments of one made by another
//! process on the same store ([`follow`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::catalog::Pins;
use crate::policy::Source;
use crate::policy::spec::{self, GrantSpec};
use crate::policy::watch::Policies;
use crate::store::changes::Topic;
use crate::store::{Store, StoreError};
use crate::upstream::Upstreams;

/// What admin changes act on: the handles they read and put in force.
#[derive(Clone)]
pub struct Admin {
    pub store: Store,
    pub policies: Policies,
    pub upstreams: Upstreams,
    /// Orgs whose admins manage what every org shares (`[admin] operator_orgs`).
    pub operators: Arc<Vec<String>>,
    pub(super) reloads: Arc<Reloads>,
}

impl Admin {
    pub fn new(store: Store, policies: Policies, upstreams: Upstreams, operators: Vec<String>) -> Admin {
        Admin { store, policies, upstreams, operators: Arc::new(operators), reloads: Arc::default() }
    }

    /// The admin change counter last put in force.
    pub async fn applied(&self) -> Option<i64> {
        *self.reloads.seen.lock().await
    }
}

/// The admins' pins in the store, as the catalog takes them.
pub async fn pins_of(store: &Store) -> Result<Pins, String> {
    let rows = store.pins().await.map_err(|e| format!("cannot read tool pins: {e}"))?;
    Ok(rows.into_iter().map(|r| ((r.upstream, r.tool), r.hash)).collect())
}

/// Serialises reloads in this process and remembers the last change applied.
#[derive(Default)]
pub(super) struct Reloads {
    seen: tokio::sync::Mutex<Option<i64>>,
}

/// Reads the store's API grants and admin pins and puts them in force when
/// they differ from what is. A stored grant that no longer compiles keeps
/// every stored grant as it was (a policy never fails open); the error is
/// logged and shown in `/readyz`.
pub async fn reload(a: &Admin) -> Result<(), StoreError> {
    let mut seen = a.reloads.seen.lock().await;
    let counter = a.store.admin_changes().await?;
    load_grants(a).await?;
    let pins = pins_of(&a.store).await.map_err(StoreError::Unavailable)?;
    if *a.upstreams.pins() != pins {
        a.upstreams.set_pins(pins).await;
    }
    *seen = Some(counter);
    Ok(())
}

/// How often the store's change counter is read for changes made by other
/// processes (a CLI, another gateway) where the store cannot notify (SQLite).
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Follows changes made by other processes on the same store: on a
/// notification (PostgreSQL), else by reading the change counter.
pub async fn follow(a: Admin, shutdown: CancellationToken) {
    // Subscribed before the first look: a change committed after it is heard.
    let mut changes = a.store.changes(Topic::Admin, FOLLOW_EVERY);
    loop {
        let last = *a.reloads.seen.lock().await;
        match a.store.admin_changes().await {
            Ok(now) if Some(now) == last => {}
            Ok(_) => {
                if let Err(e) = reload(&a).await {
                    tracing::error!("cannot reload admin changes: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot read the admin change counter: {e}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changes.next() => {}
        }
    }
}

/// Compiles every stored grant and puts them in force if they differ from
/// those in force. Any that fails to compile leaves all as they were.
async fn load_grants(a: &Admin) -> Result<(), StoreError> {
    let rows = a.store.grants(None).await?;
    let in_force = a.policies.stored();
    let same = rows.len() == in_force.len()
        && rows
            .iter()
            .zip(in_force.iter())
            .all(|(r, g)| r.id == g.id && matches!(g.source, Source::Api { revision } if revision == r.revision));
    if same {
        return Ok(());
    }
    let mut grants = Vec::with_capacity(rows.len());
    for row in &rows {
        let compiled = serde_json::from_str::<GrantSpec>(&row.spec)
            .map_err(|e| e.to_string())
            .and_then(|s| {
                spec::compile(&s, Source::Api { revision: row.revision }).map_err(|errors| {
                    errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ")
                })
            })
            .map(|mut g| {
                // The org is the row's, whatever the spec says.
                g.org = Some(row.org.clone());
                g
            });
        match compiled {
            Ok(g) => grants.push(Arc::new(g)),
            Err(e) => {
                tracing::error!(grant = %row.id, "a stored grant does not compile; the stored grants in force stay as they were: {e}");
                a.policies.note_stored_error(Some(format!("grant `{}`: {e}", row.id)));
                return Ok(());
            }
        }
    }
    a.policies.note_stored_error(None);
    a.policies.set_stored(grants);
    Ok(())
}
