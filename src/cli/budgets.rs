//! `tollgate budgets set|topup|list|spend`, against the configured store.

use clap::Subcommand;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{now_micros, record};
use crate::budget::{PERIODS, Unit, valid_scope};
use crate::config::Config;
use crate::store::{Applied, BudgetRow, Idempotency, Store};

#[derive(Subcommand, Debug)]
pub enum BudgetsCommand {
    /// Create a budget or change its limit (budgets from policy files are read-only here).
    Set {
        #[arg(long)]
        id: String,
        /// key:<id>, team:<name> or org:<name>.
        #[arg(long)]
        scope: String,
        /// Only keys of this org count against it.
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value = "money")]
        unit: String,
        /// A decimal amount for money ("25.00"), a whole number for tokens.
        #[arg(long)]
        limit: String,
        #[arg(long, default_value = "none")]
        period: String,
        /// A retried request with the same key applies once.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Raise a budget's limit by an amount.
    Topup {
        #[arg(long)]
        id: String,
        #[arg(long)]
        amount: String,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The budgets and their definitions.
    List {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Limit, spent, held and remaining per budget, in the current period.
    Spend {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: Config, command: BudgetsCommand) -> Result<(), String> {
    let store = crate::gateway::open_store(&config).await?;
    let result = match command {
        BudgetsCommand::Set { id, scope, org, unit, limit, period, idempotency_key } => {
            set(&store, id, scope, org, &unit, &limit, period, idempotency_key).await
        }
        BudgetsCommand::Topup { id, amount, idempotency_key } => topup(&store, id, &amount, idempotency_key).await,
        BudgetsCommand::List { org, json } => spend(&store, org.as_deref(), json, false).await,
        BudgetsCommand::Spend { org, json } => spend(&store, org.as_deref(), json, true).await,
    };
    store.close().await;
    result
}

fn idem(key: Option<String>, request: &serde_json::Value) -> Option<Idempotency> {
    key.map(|key| Idempotency { key, request_hash: hex::encode(Sha256::digest(request.to_string().as_bytes())) })
}

fn file_refusal(row: &BudgetRow) -> Option<String> {
    row.source.strip_prefix("file:").map(|f| format!("budget `{}` is defined in {f}; edit that file instead", row.id))
}

#[allow(clippy::too_many_arguments)]
async fn set(
    store: &Store,
    id: String,
    scope: String,
    org: Option<String>,
    unit: &str,
    limit: &str,
    period: String,
    key: Option<String>,
) -> Result<(), String> {
    let unit = Unit::parse(unit).ok_or_else(|| format!("--unit `{unit}`: use money or tokens"))?;
    let limit = unit.amount(limit).map_err(|e| format!("--limit: {e}"))?;
    if !valid_scope(&scope) {
        return Err(format!("--scope `{scope}`: use key:<id>, team:<name> or org:<name>"));
    }
    if !PERIODS.contains(&period.as_str()) {
        return Err(format!("--period `{period}`: use one of {}", PERIODS.join(", ")));
    }
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("--id: 1 to 128 characters without spaces".into());
    }
    // A budget belongs to an org where its scope says which.
    let org = match (org, scope.split_once(':')) {
        (Some(o), _) => Some(o),
        (None, Some(("org", name))) => Some(name.to_string()),
        (None, Some(("key", id))) => store.key_by_id(id).await.map_err(|e| e.to_string())?.map(|k| k.org),
        (None, _) => None,
    };
    let request = json!({"op": "set", "id": id, "scope": scope, "org": org, "unit": unit.as_str(), "limit": limit, "period": period});
    let row = BudgetRow {
        id: id.clone(),
        scope,
        org: org.clone(),
        unit: unit.as_str().into(),
        limit_amount: limit,
        period,
        source: "api".into(),
        updated_at: now_micros(),
    };
    let applied = store
        .change_budget(&id, idem(key, &request), move |current| match current.as_ref().and_then(file_refusal) {
            Some(refused) => Err(refused),
            None => Ok(row),
        })
        .await
        .map_err(|e| e.to_string())??;
    report(store, applied, org.as_deref(), "budget.set", request).await
}

async fn topup(store: &Store, id: String, amount: &str, key: Option<String>) -> Result<(), String> {
    let request = json!({"op": "topup", "id": id, "amount": amount});
    let amount_text = amount.to_string();
    let mut org = None;
    let applied = store
        .change_budget(&id, idem(key, &request), |current| {
            let Some(mut row) = current else { return Err(format!("no budget `{id}`")) };
            if let Some(refused) = file_refusal(&row) {
                return Err(refused);
            }
            let unit = Unit::parse(&row.unit).unwrap_or(Unit::Money);
            let add = unit.amount(&amount_text)?;
            row.limit_amount = row.limit_amount.checked_add(add).ok_or("the limit would overflow")?;
            row.updated_at = now_micros();
            org = row.org.clone();
            Ok(row)
        })
        .await
        .map_err(|e| e.to_string())??;
    report(store, applied, org.as_deref(), "budget.topup", request).await
}

async fn report(
    store: &Store,
    applied: Applied,
    org: Option<&str>,
    kind: &str,
    request: serde_json::Value,
) -> Result<(), String> {
    match applied {
        Applied::Now(text) => {
            let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            store
                .append_audit(&[record::change(kind, org, &actor, request)])
                .await
                .map_err(|e| format!("budget changed but its audit record failed: {e}"))?;
            println!("{text}");
        }
        Applied::Replayed(text) => println!("{text} (already applied under this idempotency key)"),
    }
    Ok(())
}

async fn spend(store: &Store, org: Option<&str>, json_out: bool, usage: bool) -> Result<(), String> {
    let rows = store.budget_usage(org, now_micros(), crate::calendar::period_start).await.map_err(|e| e.to_string())?;
    if json_out {
        let out: Vec<_> = rows
            .iter()
            .map(|u| {
                let unit = Unit::parse(&u.budget.unit).unwrap_or(Unit::Money);
                let remaining = u.budget.limit_amount - u.spent - u.held;
                json!({
                    "id": u.budget.id, "scope": u.budget.scope, "org": u.budget.org, "unit": unit.as_str(),
                    "period": u.budget.period, "period_start": crate::audit::rfc3339(u.period_start),
                    "limit": u.budget.limit_amount, "spent": u.spent, "held": u.held, "remaining": remaining,
                    "limit_text": unit.show(u.budget.limit_amount), "remaining_text": unit.show(remaining),
                    "source": u.budget.source,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    if usage {
        println!(
            "{:<24} {:<20} {:<8} {:>16} {:>16} {:>16} {:>16}",
            "ID", "SCOPE", "PERIOD", "LIMIT", "SPENT", "HELD", "REMAINING"
        );
    } else {
        println!("{:<24} {:<20} {:<8} {:>16} SOURCE", "ID", "SCOPE", "PERIOD", "LIMIT");
    }
    for u in rows {
        let unit = Unit::parse(&u.budget.unit).unwrap_or(Unit::Money);
        if usage {
            println!(
                "{:<24} {:<20} {:<8} {:>16} {:>16} {:>16} {:>16}",
                u.budget.id,
                u.budget.scope,
                u.budget.period,
                unit.show(u.budget.limit_amount),
                unit.show(u.spent),
                unit.show(u.held),
                unit.show(u.budget.limit_amount - u.spent - u.held)
            );
        } else {
            println!(
                "{:<24} {:<20} {:<8} {:>16} {}",
                u.budget.id,
                u.budget.scope,
                u.budget.period,
                unit.show(u.budget.limit_amount),
                u.budget.source
            );
        }
    }
    Ok(())
}
