//! What admins change while the gateway runs: grants made through the API
//! ([`grants`]) and tool pins ([`pins`]), kept in the store and put in force
//! at once in this process and, through the store's change counter
//! ([`follow`]), in every other process on the same store.
//!
//! Every change commits with its revision and its audit record (who, the
//! diff) in one transaction. Everything here is confined to the acting
//! key's org; a resource of another org is "not found", never "forbidden",
//! so its existence does not leak.

pub mod grants;
pub mod pins;

use std::time::Duration;

use crate::gateway::Gateway;
use crate::policy::spec::FieldError;
use crate::store::StoreError;
use crate::store::changes::Topic;

pub use pins::pins_of;

/// Who makes a change: the org it is confined to and how the audit names it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub org: String,
    /// `key:<id>` for API callers, `cli:<user>` for the local command line.
    pub who: String,
}

impl Actor {
    pub fn of(p: &crate::identity::Principal) -> Actor {
        Actor { org: p.org.clone(), who: p.to_string() }
    }
}

/// Why an admin change or read did not happen. Each maps to one HTTP status
/// and a stable `code` (see `server::admin`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String, errors: Vec<FieldError> },
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { message: String, file: Option<String> },
    #[error("{message}")]
    Stale { message: String, etag: String },
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::store::ReusedKey> for AdminError {
    fn from(k: crate::store::ReusedKey) -> AdminError {
        AdminError::Conflict { message: String::from(k), file: None }
    }
}

impl AdminError {
    pub fn invalid(field: &str, message: impl Into<String>) -> AdminError {
        let message = message.into();
        AdminError::Invalid {
            field: field.to_string(),
            message: message.clone(),
            errors: vec![FieldError { field: field.to_string(), message }],
        }
    }

    pub fn fields(errors: Vec<FieldError>) -> AdminError {
        let first = errors.first().cloned().unwrap_or(FieldError { field: String::new(), message: "invalid".into() });
        AdminError::Invalid { field: first.field, message: first.message, errors }
    }
}

/// Serialises reloads in this process and remembers the last change applied.
#[derive(Default)]
pub struct Reloads {
    seen: tokio::sync::Mutex<Option<i64>>,
}

impl Reloads {
    /// The admin change counter last put in force.
    pub async fn applied(&self) -> Option<i64> {
        *self.seen.lock().await
    }
}

/// Reads the store's API grants and admin pins and puts them in force when
/// they differ from what is. A stored grant that no longer compiles keeps
/// every stored grant as it was (a policy never fails open); the error is
/// logged and shown in `/readyz`.
pub async fn reload(gw: &Gateway) -> Result<(), StoreError> {
    let mut seen = gw.admin.seen.lock().await;
    let counter = gw.store.admin_changes().await?;
    grants::load(gw).await?;
    let pins = pins_of(&gw.store).await.map_err(StoreError::Unavailable)?;
    if *gw.upstreams.pins() != pins {
        gw.upstreams.set_pins(pins).await;
    }
    *seen = Some(counter);
    Ok(())
}

/// How often the store's change counter is read for changes made by other
/// processes (a CLI, another gateway) where the store cannot notify (SQLite).
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Follows changes made by other processes on the same store: on a
/// notification (PostgreSQL), else by reading the change counter.
pub async fn follow(gw: Gateway) {
    // Subscribed before the first look: a change committed after it is heard.
    let mut changes = gw.store.changes(Topic::Admin, FOLLOW_EVERY);
    loop {
        let last = *gw.admin.seen.lock().await;
        match gw.store.admin_changes().await {
            Ok(now) if Some(now) == last => {}
            Ok(_) => {
                if let Err(e) = reload(&gw).await {
                    tracing::error!("cannot reload admin changes: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot read the admin change counter: {e}"),
        }
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = changes.next() => {}
        }
    }
}
