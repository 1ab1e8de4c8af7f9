//! Grants through the admin API: list, read, create, replace, delete,
//! revisions. Grants from policy files are listed (read-only); a change to
//! one answers a conflict naming its file.

use serde::Serialize;
use serde_json::{Value, json};

use super::error::{Actor, AdminError};
use super::live::{Admin, reload};
use crate::audit::{now_micros, record, rfc3339};
use crate::policy::spec::{self, GrantSpec};
use crate::policy::{Grant, PAGE_ROUTE, PrincipalRef, Source};
use crate::store::{GrantEdit, GrantRevisionRow, GrantRow, StoreError};

/// A grant as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    // Inlined so the document can open it (see `server::admin::open_views`).
    #[serde(flatten)]
    #[schema(inline)]
    pub spec: GrantSpec,
    /// `file` or `api`.
    #[schema(value_type = String)]
    pub source: &'static str,
    /// The policy file (file grants only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// API grants: increases with every change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The value for `If-Match`.
    pub etag: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// One change of an API grant.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RevisionView {
    pub grant: String,
    pub revision: i64,
    pub action: String,
    pub at: String,
    pub actor: String,
    /// `{path, before, after}` per changed field.
    #[schema(value_type = Vec<Object>)]
    pub diff: Value,
    /// The grant after the change; absent after a delete.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub grant_after: Option<Value>,
}

pub fn etag_of(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// The ETag of a file grant: its content, so an edit of the file changes it.
fn file_etag(g: &Grant) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::to_string(&spec::render(g)).unwrap_or_default();
    format!("\"f-{}\"", &hex::encode(Sha256::digest(text.as_bytes()))[..16])
}

fn file_view(g: &Grant) -> GrantView {
    let (file, line) = match &g.source {
        Source::File { path, line } => (Some(path.display().to_string()), Some(*line)),
        Source::Api { .. } => (None, None),
    };
    GrantView {
        spec: spec::render(g),
        source: "file",
        file,
        line,
        revision: None,
        etag: file_etag(g),
        created_at: None,
        created_by: None,
        updated_at: None,
        updated_by: None,
    }
}

fn api_view(row: &GrantRow) -> Result<GrantView, StoreError> {
    let spec: GrantSpec = serde_json::from_str(&row.spec)
        .map_err(|e| StoreError::Invalid(format!("stored grant `{}` is unreadable: {e}", row.id)))?;
    Ok(GrantView {
        spec,
        source: "api",
        file: None,
        line: None,
        revision: Some(row.revision),
        etag: etag_of(row.revision),
        created_at: Some(rfc3339(row.created_at)),
        created_by: Some(row.created_by.clone()),
        updated_at: Some(rfc3339(row.updated_at)),
        updated_by: Some(row.updated_by.clone()),
    })
}

/// Whether a file grant concerns `org`'s keys.
fn concerns(g: &Grant, org: &str) -> bool {
    g.org.as_deref().is_none_or(|o| o == org)
}

/// The file grants that concern `org`, then its API grants.
pub async fn list(admin: &Admin, org: &str) -> Result<Vec<GrantView>, AdminError> {
    let files = admin.policies.files();
    let mut out: Vec<GrantView> = files.grants.iter().filter(|g| concerns(g, org)).map(|g| file_view(g)).collect();
    for row in admin.store.grants(Some(org)).await? {
        out.push(api_view(&row)?);
    }
    Ok(out)
}

pub async fn get(admin: &Admin, org: &str, id: &str) -> Result<GrantView, AdminError> {
    if let Some(g) = admin.policies.files().grant(id).filter(|g| concerns(g, org)) {
        return Ok(file_view(g));
    }
    match admin.store.grant(id).await? {
        Some(row) if row.org == org => Ok(api_view(&row)?),
        _ => Err(not_found(id)),
    }
}

fn not_found(id: &str) -> AdminError {
    AdminError::NotFound(format!("no grant `{id}`"))
}

fn file_conflict(g: &Grant) -> AdminError {
    let file = g.source.file().map(|p| p.display().to_string()).unwrap_or_default();
    AdminError::Conflict {
        message: format!("grant `{}` is defined in {file}: it is read-only here; edit that file instead", g.id),
        file: Some(file),
    }
}

/// Checks a spec for `actor`'s org and compiles it.
fn admit(admin: &Admin, actor: &Actor, mut spec: GrantSpec) -> Result<GrantSpec, AdminError> {
    match &spec.org {
        Some(o) if *o != actor.org => {
            return Err(AdminError::invalid(
                "org",
                format!("grants made through the API belong to the caller's org `{}`", actor.org),
            ));
        }
        _ => spec.org = Some(actor.org.clone()),
    }
    let compiled = spec::compile(&spec, Source::Api { revision: 0 }).map_err(AdminError::fields)?;
    for (i, p) in compiled.principals.iter().enumerate() {
        if let PrincipalRef::Org(o) = p
            && *o != actor.org
        {
            return Err(AdminError::invalid(&format!("principals[{i}]"), "a grant may name only its own org"));
        }
    }
    if let Some(route) = compiled.approval.as_ref().and_then(|a| a.route.as_deref())
        && route != PAGE_ROUTE
        && admin.policies.files().route(route).is_none_or(|r| r.org.as_deref().is_some_and(|o| o != actor.org))
    {
        return Err(AdminError::invalid("approval.route", format!("no approval route `{route}` in the policy files")));
    }
    Ok(spec)
}

/// Whether an `If-Match` header value admits `etag`. `None`: no header.
fn matches(if_match: Option<&str>, etag: &str) -> bool {
    let Some(h) = if_match else { return true };
    h.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn as_json(spec: &GrantSpec) -> Value {
    serde_json::to_value(spec).unwrap_or(Value::Null)
}

pub async fn create(admin: &Admin, actor: &Actor, spec: GrantSpec) -> Result<GrantView, AdminError> {
    let spec = admit(admin, actor, spec)?;
    let id = spec.id.clone();
    if let Some(g) = admin.policies.files().grant(&id) {
        return Err(file_conflict(g));
    }
    let body = serde_json::to_string(&spec).map_err(|e| AdminError::invalid("", e.to_string()))?;
    let after = as_json(&spec);
    let now = now_micros();
    admin
        .store
        .change_grant(&id, |current, next| {
            if current.is_some() {
                return Err(AdminError::Conflict { message: format!("grant id `{id}` is already in use"), file: None });
            }
            let diff = Value::Array(spec::diff(&Value::Object(Default::default()), &after));
            Ok(edit_put(actor, &id, None, body, next, now, "create", diff, &after))
        })
        .await??;
    done(admin).await?;
    get(admin, &actor.org, &id).await
}

pub async fn replace(
    admin: &Admin,
    actor: &Actor,
    id: &str,
    mut spec: GrantSpec,
    if_match: Option<&str>,
) -> Result<GrantView, AdminError> {
    if spec.id.is_empty() {
        spec.id = id.to_string();
    } else if spec.id != id {
        return Err(AdminError::invalid("id", format!("the body names grant `{}`, the path `{id}`", spec.id)));
    }
    if let Some(g) = admin.policies.files().grant(id).filter(|g| concerns(g, &actor.org)) {
        return Err(file_conflict(g));
    }
    let spec = admit(admin, actor, spec)?;
    let body = serde_json::to_string(&spec).map_err(|e| AdminError::invalid("", e.to_string()))?;
    let after = as_json(&spec);
    let now = now_micros();
    admin
        .store
        .change_grant(id, |current, next| {
            let current = current.filter(|c| c.org == actor.org).ok_or_else(|| not_found(id))?;
            check_etag(current, if_match)?;
            let before: Value = serde_json::from_str(&current.spec).unwrap_or(Value::Null);
            let diff = Value::Array(spec::diff(&before, &after));
            Ok::<_, AdminError>(edit_put(actor, id, Some(current), body, next, now, "update", diff, &after))
        })
        .await??;
    done(admin).await?;
    get(admin, &actor.org, id).await
}

pub async fn delete(admin: &Admin, actor: &Actor, id: &str, if_match: Option<&str>) -> Result<(), AdminError> {
    if let Some(g) = admin.policies.files().grant(id).filter(|g| concerns(g, &actor.org)) {
        return Err(file_conflict(g));
    }
    let now = now_micros();
    admin
        .store
        .change_grant(id, |current, next| {
            let current = current.filter(|c| c.org == actor.org).ok_or_else(|| not_found(id))?;
            check_etag(current, if_match)?;
            let before: Value = serde_json::from_str(&current.spec).unwrap_or(Value::Null);
            let diff = Value::Array(spec::diff(&before, &Value::Object(Default::default())));
            let revision = GrantRevisionRow {
                grant_id: id.to_string(),
                revision: next,
                org: actor.org.clone(),
                at: now,
                actor: actor.who.clone(),
                action: "delete".into(),
                spec: None,
                diff: diff.to_string(),
            };
            let record = audit_record(actor, id, "delete", next, &diff);
            Ok::<_, AdminError>(GrantEdit::Delete { revision, record })
        })
        .await??;
    done(admin).await
}

fn check_etag(current: &GrantRow, if_match: Option<&str>) -> Result<(), AdminError> {
    let etag = etag_of(current.revision);
    if matches(if_match, &etag) {
        Ok(())
    } else {
        Err(AdminError::Stale {
            message: format!(
                "grant `{}` changed since it was read: it is now at revision {}",
                current.id, current.revision
            ),
            etag,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn edit_put(
    actor: &Actor,
    id: &str,
    current: Option<&GrantRow>,
    spec: String,
    next: i64,
    now: i64,
    action: &str,
    diff: Value,
    after: &Value,
) -> GrantEdit {
    let row = GrantRow {
        id: id.to_string(),
        org: actor.org.clone(),
        spec: spec.clone(),
        revision: next,
        created_at: current.map_or(now, |c| c.created_at),
        created_by: current.map_or_else(|| actor.who.clone(), |c| c.created_by.clone()),
        updated_at: now,
        updated_by: actor.who.clone(),
    };
    let revision = GrantRevisionRow {
        grant_id: id.to_string(),
        revision: next,
        org: actor.org.clone(),
        at: now,
        actor: actor.who.clone(),
        action: action.to_string(),
        spec: Some(spec),
        diff: diff.to_string(),
    };
    let mut record = audit_record(actor, id, action, next, &diff);
    record.fields.insert("grant_after".into(), after.clone());
    GrantEdit::Put { row, revision, record }
}

fn audit_record(actor: &Actor, id: &str, action: &str, revision: i64, diff: &Value) -> crate::store::AuditDraft {
    record::change(
        &format!("grant.{action}"),
        Some(&actor.org),
        &actor.who,
        json!({"grant": id, "revision": revision, "diff": diff}),
    )
}

/// After a committed change: put it in force before answering, so the
/// caller's next call already meets it.
async fn done(admin: &Admin) -> Result<(), AdminError> {
    reload(admin).await?;
    Ok(())
}

pub async fn revisions(admin: &Admin, org: &str, id: &str) -> Result<Vec<RevisionView>, AdminError> {
    let rows: Vec<GrantRevisionRow> =
        admin.store.grant_revisions(id).await?.into_iter().filter(|r| r.org == org).collect();
    if rows.is_empty() {
        // File grants have no revisions here: their history is the files'
        // (and the `policy.change` audit records).
        return match admin.policies.files().grant(id).filter(|g| concerns(g, org)) {
            Some(_) => Ok(Vec::new()),
            None => Err(not_found(id)),
        };
    }
    Ok(rows
        .into_iter()
        .map(|r| RevisionView {
            grant: r.grant_id,
            revision: r.revision,
            action: r.action,
            at: rfc3339(r.at),
            actor: r.actor,
            diff: serde_json::from_str(&r.diff).unwrap_or(Value::Null),
            grant_after: r.spec.and_then(|s| serde_json::from_str(&s).ok()),
        })
        .collect())
}
