//! Who is calling: API keys and the principal they stand for.
//!
//! A key's secret is `tg_` followed by 192 random bits; only its SHA-256 is
//! stored (the secret is high-entropy, so a slow hash adds nothing). Every
//! request is checked against the store, so a revoked key stops working at
//! once, on sessions already open too.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::store::{KeyRow, Store, StoreError};

/// A key's role beyond calling tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Approver,
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "approver" => Some(Role::Approver),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
        }
    }
}

/// The caller of a governed request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub key_id: String,
    pub org: String,
    pub team: String,
    pub role: Option<Role>,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key:{}", self.key_id)
    }
}

/// How long the edge took to authenticate a request, in microseconds
/// (a request extension beside the [`Principal`], for the audit record).
#[derive(Debug, Clone, Copy)]
pub struct AuthMicros(pub u64);

/// Why a request has no principal.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key given")]
    Missing,
    #[error("unknown API key")]
    Unknown,
    #[error("API key {0} is revoked")]
    Revoked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A freshly made key: the secret is shown once and never stored.
pub struct NewKey {
    pub row: KeyRow,
    pub secret: String,
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `text` has the shape of a tollgate key secret.
pub fn looks_like_secret(text: &str) -> bool {
    text.strip_prefix("tg_").is_some_and(|rest| rest.len() == 48 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether an operator-chosen secret (the bootstrap key) is strong enough:
/// `tg_` and at least 32 letters or digits.
pub fn plausible_secret(text: &str) -> bool {
    text.strip_prefix("tg_").is_some_and(|rest| rest.len() >= 32 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// The admin key `tollgate.toml` names (`[admin] bootstrap_key`).
pub struct Bootstrap<'a> {
    pub secret: &'a str,
    pub org: &'a str,
    pub team: &'a str,
}

/// Puts the configured bootstrap admin key in the store unless it is there
/// (revoked included: a revoked bootstrap key stays revoked). `true` when
/// it was added now.
pub async fn ensure_bootstrap(store: &Store, b: Bootstrap<'_>, now_micros: i64) -> Result<bool, StoreError> {
    let hash = hash_secret(b.secret);
    if store.key_by_hash(&hash).await?.is_some() {
        return Ok(false);
    }
    let row = KeyRow {
        id: format!("k_boot_{}", &hash[..12]),
        secret_hash: hash,
        org: b.org.to_string(),
        team: b.team.to_string(),
        role: Some(Role::Admin.as_str().to_string()),
        label: Some("bootstrap key from tollgate.toml".into()),
        created_at: now_micros,
        revoked_at: None,
    };
    store.insert_key(&row).await?;
    Ok(true)
}

fn random_hex(bytes: usize) -> Result<String, StoreError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| StoreError::Unavailable(format!("no randomness: {e}")))?;
    Ok(hex::encode(buf))
}

/// Checks the names a key is made with: they appear in grants and paths.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Creates and stores a key.
pub async fn create_key(
    store: &Store,
    org: &str,
    team: &str,
    role: Option<Role>,
    label: Option<&str>,
    now_micros: i64,
) -> Result<NewKey, StoreError> {
    for (what, v) in [("org", org), ("team", team)] {
        if !valid_name(v) {
            return Err(StoreError::Invalid(format!("{what} `{v}`: use 1 to 64 letters, digits, `-`, `_` or `.`")));
        }
    }
    let secret = format!("tg_{}", random_hex(24)?);
    let row = KeyRow {
        id: format!("k_{}", random_hex(8)?),
        secret_hash: hash_secret(&secret),
        org: org.to_string(),
        team: team.to_string(),
        role: role.map(|r| r.as_str().to_string()),
        label: label.map(str::to_string),
        created_at: now_micros,
        revoked_at: None,
    };
    store.insert_key(&row).await?;
    Ok(NewKey { row, secret })
}

impl Principal {
    /// The principal of a stored key (whether live or not: callers check).
    pub fn from_row(row: &KeyRow) -> Principal {
        Principal {
            role: row.role.as_deref().and_then(Role::parse),
            key_id: row.id.clone(),
            org: row.org.clone(),
            team: row.team.clone(),
        }
    }
}

fn principal_of(row: KeyRow) -> Result<Principal, AuthError> {
    if row.revoked_at.is_some() {
        return Err(AuthError::Revoked(row.id));
    }
    Ok(Principal { role: row.role.as_deref().and_then(Role::parse), key_id: row.id, org: row.org, team: row.team })
}

/// The principal of a secret, if the key exists and is live.
pub async fn authenticate(store: &Store, secret: &str) -> Result<Principal, AuthError> {
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(AuthError::Missing);
    }
    match store.key_by_hash(&hash_secret(secret)).await? {
        Some(row) => principal_of(row),
        None => Err(AuthError::Unknown),
    }
}

/// Re-checks a principal established earlier (stdio and WebSocket sessions
/// authenticate once, then per call through this).
pub async fn reverify(store: &Store, principal: &Principal) -> Result<Principal, AuthError> {
    match store.key_by_id(&principal.key_id).await? {
        Some(row) => principal_of(row),
        None => Err(AuthError::Unknown),
    }
}

/// The key in an `Authorization: Bearer` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer("Bearer tg_x"), Some("tg_x"));
        assert_eq!(bearer("bearer   tg_x "), Some("tg_x"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn secrets_hash_to_hex_sha256() {
        assert_eq!(hash_secret("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
