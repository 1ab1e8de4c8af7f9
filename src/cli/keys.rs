//! `tollgate keys create|list|revoke`, against the configured store.

use clap::Subcommand;
use serde_json::json;

use crate::audit::{now_micros, record, rfc3339};
use crate::config::Config;
use crate::identity::{self, Role};
use crate::store::Store;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once and never stored.
    Create {
        #[arg(long)]
        team: String,
        #[arg(long)]
        org: String,
        /// admin, approver or auditor; omit for an agent key.
        #[arg(long)]
        role: Option<String>,
        /// A note for people, e.g. who holds the key.
        #[arg(long)]
        label: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it stops working at once, on open sessions too.
    Revoke { id: String },
}

pub async fn run(config: Config, command: KeysCommand) -> Result<(), String> {
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let result = match command {
        KeysCommand::Create { team, org, role, label, json } => create(&store, &team, &org, role, label, json).await,
        KeysCommand::List { org, json } => list(&store, org.as_deref(), json).await,
        KeysCommand::Revoke { id } => revoke(&store, &id).await,
    };
    store.close().await;
    result
}

/// Who made a change from this command line.
fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

async fn create(
    store: &Store,
    team: &str,
    org: &str,
    role: Option<String>,
    label: Option<String>,
    json: bool,
) -> Result<(), String> {
    let role = match role.as_deref() {
        None | Some("" | "agent") => None,
        Some(r) => Some(Role::parse(r).ok_or_else(|| format!("--role `{r}`: use admin, approver or auditor"))?),
    };
    let key = identity::create_key(store, org, team, role, label.as_deref(), now_micros())
        .await
        .map_err(|e| e.to_string())?;
    let detail = json!({"key": key.row.id, "team": team, "role": role.map(Role::as_str), "label": label});
    store
        .append_audit(&[record::change("key.create", Some(org), &actor(), detail)])
        .await
        .map_err(|e| format!("key created but its audit record failed: {e}"))?;
    if json {
        let out =
            json!({"id": key.row.id, "secret": key.secret, "org": org, "team": team, "role": role.map(Role::as_str)});
        println!("{out}");
    } else {
        println!("{}", key.secret);
        eprintln!("key {} for team {team} in org {org}: the secret above is shown once; store it now", key.row.id);
    }
    Ok(())
}

async fn list(store: &Store, org: Option<&str>, json: bool) -> Result<(), String> {
    let keys = store.list_keys(org).await.map_err(|e| e.to_string())?;
    if json {
        let rows: Vec<_> = keys
            .iter()
            .map(|k| {
                json!({
                    "id": k.id, "org": k.org, "team": k.team, "role": k.role, "label": k.label,
                    "created_at": rfc3339(k.created_at), "revoked_at": k.revoked_at.map(rfc3339),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
            vec![
                k.id.clone(),
                k.org.clone(),
                k.team.clone(),
                k.role.clone().unwrap_or_else(|| "-".into()),
                state.into(),
                k.label.clone().unwrap_or_default(),
            ]
        })
        .collect();
    super::table::print(&["ID", "ORG", "TEAM", "ROLE", "STATE", "LABEL"], &rows, &[]);
    Ok(())
}

async fn revoke(store: &Store, id: &str) -> Result<(), String> {
    let key = store.key_by_id(id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no key `{id}`"))?;
    if !store.revoke_key(id, now_micros()).await.map_err(|e| e.to_string())? {
        return Err(format!("key `{id}` is already revoked"));
    }
    store
        .append_audit(&[record::change("key.revoke", Some(&key.org), &actor(), json!({"key": id}))])
        .await
        .map_err(|e| format!("key revoked but its audit record failed: {e}"))?;
    println!("revoked {id}");
    Ok(())
}
