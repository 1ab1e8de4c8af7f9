//! Who changes something through the admin API, and why a change or read
//! did not happen.

use crate::policy::spec::FieldError;
use crate::store::StoreError;

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
