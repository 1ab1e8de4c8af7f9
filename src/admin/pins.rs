//! Tool pins set by admins: accepting a changed definition (a quarantined
//! "rug pull" becomes callable under its new hash) and unpinning. They
//! override the manifest's pin for that upstream tool and are shared by
//! every org, so only admins of an operator org may set them
//! (`[admin] operator_orgs`; empty: every admin).

use serde::Serialize;
use serde_json::json;

use super::error::{Actor, AdminError};
use super::live::{Admin, reload};
use crate::audit::{now_micros, record};
use crate::catalog::QuarantineReason;
use crate::store::PinRow;

/// A tool's pin as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PinView {
    pub tool: String,
    pub upstream: String,
    pub upstream_tool: String,
    /// The hash of the definition the upstream offers now.
    pub hash: String,
    /// The hash it is pinned to, if any.
    pub pinned: Option<String>,
    /// `manifest`, `admin` or `none`.
    #[schema(value_type = String)]
    pub pin_source: &'static str,
    /// `ok` or `quarantined`.
    #[schema(value_type = String)]
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every tool of the catalog (quarantined ones too) with its pin.
pub fn list(admin: &Admin) -> Vec<PinView> {
    let catalog = admin.upstreams.catalog();
    let pinned = admin.upstreams.pins();
    let manifest_pin = |upstream: &str, tool: &str| {
        admin
            .upstreams
            .all()
            .iter()
            .find(|u| &*u.name == upstream)
            .and_then(|u| u.live().tools.get(tool).and_then(|o| o.pin.clone()))
    };
    let pin_of = |upstream: &str, tool: &str| match pinned.get(&(upstream.to_string(), tool.to_string())) {
        Some(p) => (p.clone(), if p.is_some() { "admin" } else { "none" }),
        None => match manifest_pin(upstream, tool) {
            Some(p) => (Some(p), "manifest"),
            None => (None, "none"),
        },
    };
    let mut out = Vec::new();
    for t in catalog.tools() {
        let (pinned, pin_source) = pin_of(&t.upstream_name, &t.upstream_tool);
        out.push(PinView {
            tool: t.name.clone(),
            upstream: t.upstream_name.to_string(),
            upstream_tool: t.upstream_tool.clone(),
            hash: t.hash.clone(),
            pinned,
            pin_source,
            state: "ok",
            reason: None,
        });
    }
    for q in catalog.quarantined() {
        let (pinned, pin_source) = pin_of(&q.upstream_name, &q.upstream_tool);
        out.push(PinView {
            tool: q.name.clone(),
            upstream: q.upstream_name.to_string(),
            upstream_tool: q.upstream_tool.clone(),
            hash: q.hash.clone(),
            pinned,
            pin_source,
            state: "quarantined",
            reason: Some(q.reason.to_string()),
        });
    }
    out.sort_by(|a, b| a.tool.cmp(&b.tool));
    out
}

/// Whether `actor` may change what every org shares.
pub fn may_operate(operators: &[String], actor: &Actor) -> Result<(), AdminError> {
    if operators.is_empty() || operators.contains(&actor.org) {
        Ok(())
    } else {
        Err(AdminError::Forbidden(
            "tool pins are shared by every org: only admins of an operator org may change them".into(),
        ))
    }
}

fn find(admin: &Admin, tool: &str) -> Result<PinView, AdminError> {
    list(admin)
        .into_iter()
        .find(|p| p.tool == tool)
        .ok_or_else(|| AdminError::NotFound(format!("no tool `{tool}` in the catalog")))
}

/// Pins `tool` to the definition its upstream offers now. With `expected`,
/// only if that is still the definition (the admin accepts what they saw).
pub async fn accept(admin: &Admin, actor: &Actor, tool: &str, expected: Option<&str>) -> Result<PinView, AdminError> {
    may_operate(&admin.operators, actor)?;
    let view = find(admin, tool)?;
    if let Some(e) = expected
        && e != view.hash
    {
        return Err(AdminError::Conflict {
            message: format!("`{tool}`'s definition is now {}, not {e}: review it again", view.hash),
            file: None,
        });
    }
    let catalog = admin.upstreams.catalog();
    if let Some(q) = catalog.quarantined().iter().find(|q| q.name == tool)
        && !matches!(q.reason, QuarantineReason::PinMismatch { .. } | QuarantineReason::Description(_))
    {
        return Err(AdminError::Conflict {
            message: format!("`{tool}` is quarantined for another reason: {}", q.reason),
            file: None,
        });
    }
    set(admin, actor, &view, Some(view.hash.clone()), "tool.pin.accept").await?;
    find(admin, tool)
}

/// Removes `tool`'s pin (the manifest's too, until an admin pins it again).
pub async fn unpin(admin: &Admin, actor: &Actor, tool: &str) -> Result<PinView, AdminError> {
    may_operate(&admin.operators, actor)?;
    let view = find(admin, tool)?;
    set(admin, actor, &view, None, "tool.pin.remove").await?;
    find(admin, tool)
}

async fn set(admin: &Admin, actor: &Actor, view: &PinView, hash: Option<String>, kind: &str) -> Result<(), AdminError> {
    let row = PinRow {
        upstream: view.upstream.clone(),
        tool: view.upstream_tool.clone(),
        hash: hash.clone(),
        updated_at: now_micros(),
        updated_by: actor.who.clone(),
    };
    let detail = json!({
        "tool": view.tool, "upstream": view.upstream, "upstream_tool": view.upstream_tool,
        "before": view.pinned, "after": hash,
    });
    let draft = record::change(kind, Some(&actor.org), &actor.who, detail);
    admin.store.set_pin(&row, draft).await?;
    reload(admin).await?;
    Ok(())
}
