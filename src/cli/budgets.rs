//! `tollgate budgets set|topup|list|spend`, against the configured store.

use clap::Subcommand;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::audit::{now_micros, record};
use crate::budget::{PERIODS, Period, Unit, valid_scope};
use crate::config::Config;
use crate::store::{Applied, BudgetRow, Idempotency, Store};

#[derive(Subcommand, Debug)]
pub enum BudgetsCommand {
    /// Create a budget, or change what is given of an existing one (budgets
    /// from policy files are read-only here). Options left out keep their
    /// value; a new budget needs --scope and --limit.
    Set {
        #[arg(long)]
        id: String,
        /// key:<id>, team:<name> or org:<name>.
        #[arg(long)]
        scope: Option<String>,
        /// Only keys of this org count against it.
        #[arg(long)]
        org: Option<String>,
        /// money or tokens (a new budget: money).
        #[arg(long)]
        unit: Option<String>,
        /// A decimal amount for money ("25.00"), a whole number for tokens.
        #[arg(long)]
        limit: Option<String>,
        /// none, daily, weekly or monthly (a new budget: none).
        #[arg(long)]
        period: Option<String>,
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
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let result = match command {
        BudgetsCommand::Set { id, scope, org, unit, limit, period, idempotency_key } => {
            set(&store, id, scope, org, unit, limit, period, idempotency_key).await
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
    scope: Option<String>,
    org: Option<String>,
    unit: Option<String>,
    limit: Option<String>,
    period: Option<String>,
    key: Option<String>,
) -> Result<(), String> {
    let unit = unit.map(|u| Unit::parse(&u).ok_or_else(|| format!("--unit `{u}`: use money or tokens"))).transpose()?;
    if let Some(scope) = scope.as_deref().filter(|s| !valid_scope(s)) {
        return Err(format!("--scope `{scope}`: use key:<id>, team:<name> or org:<name>"));
    }
    let period = period
        .map(|p| Period::parse(&p).ok_or_else(|| format!("--period `{p}`: use one of {}", PERIODS.join(", "))))
        .transpose()?;
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("--id: 1 to 128 characters without spaces".into());
    }
    // A budget belongs to an org where its scope says which.
    let org = match (org, scope.as_deref().and_then(|s| s.split_once(':'))) {
        (Some(o), _) => Some(o),
        (None, Some(("org", name))) => Some(name.to_string()),
        (None, Some(("key", id))) => store.key_by_id(id).await.map_err(|e| e.to_string())?.map(|k| k.org),
        (None, _) => None,
    };
    let request = json!({"op": "set", "id": id, "scope": scope, "org": org, "unit": unit.map(Unit::as_str), "limit": limit, "period": period.map(Period::as_str)});
    let mut summary = String::new();
    let applied = store
        .change_budget(&id, idem(key, &request), |current| {
            if let Some(refused) = current.as_ref().and_then(file_refusal) {
                return Err(refused);
            }
            let was = current.as_ref();
            let was_unit = was.map(|b| b.unit);
            let unit = unit.or(was_unit).unwrap_or(Unit::Money);
            let scope =
                scope.clone().or_else(|| was.map(|b| b.scope.clone())).ok_or("--scope: a new budget needs one")?;
            let limit = match (&limit, was) {
                (Some(l), _) => unit.amount(l).map_err(|e| format!("--limit: {e}"))?,
                (None, Some(b)) if Some(unit) == was_unit => b.limit_amount,
                (None, Some(_)) => return Err("--limit: give the limit in the new --unit".into()),
                (None, None) => return Err("--limit: a new budget needs one".into()),
            };
            let period = period.or_else(|| was.map(|b| b.period)).unwrap_or(Period::None);
            let org = org.clone().or_else(|| was.and_then(|b| b.org.clone()));
            summary = describe(&id, &scope, org.as_deref(), unit, limit, period);
            Ok(BudgetRow {
                id: id.clone(),
                scope,
                org,
                unit,
                limit_amount: limit,
                period,
                source: "api".into(),
                updated_at: now_micros(),
            })
        })
        .await
        .map_err(|e| e.to_string())??;
    report(store, applied, org.as_deref(), "budget.set", request, &summary).await
}

/// A budget as a person reads it: money in decimal units.
fn describe(id: &str, scope: &str, org: Option<&str>, unit: Unit, limit: i64, period: Period) -> String {
    let mut text = format!("budget {id} ({scope}");
    if let Some(org) = org {
        text.push_str(&format!(" in org {org}"));
    }
    text.push_str(&format!(") limit {} per {period}", unit.show(limit)));
    if org.is_none() && scope.starts_with("team:") {
        // Team names are per org: without one, the team of that name in every org counts.
        text.push_str("\nnote: no --org: this counts the team of that name in every org");
    }
    text
}

async fn topup(store: &Store, id: String, amount: &str, key: Option<String>) -> Result<(), String> {
    let request = json!({"op": "topup", "id": id, "amount": amount});
    let amount_text = amount.to_string();
    let mut org = None;
    let mut summary = String::new();
    let applied = store
        .change_budget(&id, idem(key, &request), |current| {
            let Some(mut row) = current else { return Err(format!("no budget `{id}`")) };
            if let Some(refused) = file_refusal(&row) {
                return Err(refused);
            }
            let unit = row.unit;
            let add = unit.amount(&amount_text)?;
            row.limit_amount = row.limit_amount.checked_add(add).ok_or("the limit would overflow")?;
            row.updated_at = now_micros();
            org = row.org.clone();
            summary = describe(&row.id, &row.scope, row.org.as_deref(), unit, row.limit_amount, row.period);
            Ok(row)
        })
        .await
        .map_err(|e| e.to_string())??;
    report(store, applied, org.as_deref(), "budget.topup", request, &summary).await
}

async fn report(
    store: &Store,
    applied: Applied,
    org: Option<&str>,
    kind: &str,
    request: serde_json::Value,
    summary: &str,
) -> Result<(), String> {
    match applied {
        Applied::Now(_) => {
            let actor = format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()));
            store
                .append_audit(&[record::change(kind, org, &actor, request)])
                .await
                .map_err(|e| format!("budget changed but its audit record failed: {e}"))?;
            println!("{summary}");
        }
        // The change was made by the first request with this key; what the
        // store kept of it is shown (its amounts in micro-units).
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
                let unit = u.budget.unit;
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
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|u| {
            let unit = u.budget.unit;
            let mut row = vec![
                u.budget.id.clone(),
                u.budget.scope.clone(),
                u.budget.period.to_string(),
                unit.show(u.budget.limit_amount),
            ];
            if usage {
                row.extend([
                    unit.show(u.spent),
                    unit.show(u.held),
                    unit.show(u.budget.limit_amount - u.spent - u.held),
                ]);
            } else {
                row.push(u.budget.source.clone());
            }
            row
        })
        .collect();
    if usage {
        super::table::print(&["ID", "SCOPE", "PERIOD", "LIMIT", "SPENT", "HELD", "REMAINING"], &rows, &[3, 4, 5, 6]);
    } else {
        super::table::print(&["ID", "SCOPE", "PERIOD", "LIMIT", "SOURCE"], &rows, &[3]);
    }
    Ok(())
}
