//! `tollgate approvals list|show|approve|deny|deliveries`, against the
//! configured store. A running gateway on the same store sees a decision
//! made here within a second and releases the waiting call.

use clap::Subcommand;
use serde_json::json;

use crate::approval::Status;
use crate::approval::{Approvals, Verdict};
use crate::config::Config;
use crate::ids::ApprovalId;
use crate::store::Transitioned;

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// Pending actions (or those in another status), newest first.
    List {
        /// pending, approved, denied, expired, cancelled; all when omitted.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One action in full.
    Show { id: String },
    /// Approve a pending action: the waiting call runs, once.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Deny a pending action: its hold is released and the agent is told.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// The webhook deliveries of an action, with every attempt.
    Deliveries {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: Config, command: ApprovalsCommand) -> Result<(), String> {
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let base = config.approval.public_url.clone().unwrap_or_else(|| format!("http://{}", config.server.listen));
    let approvals = Approvals::new(store.clone(), config.approval.clone(), base);
    let result = match command {
        ApprovalsCommand::List { status, org, limit, json } => {
            let status = match status.as_str() {
                "all" => None,
                s => Some(Status::parse(s).ok_or_else(|| {
                    format!("--status `{s}`: use one of pending, approved, denied, expired, cancelled, all")
                })?),
            };
            list(&approvals, status, org.as_deref(), limit, json).await
        }
        ApprovalsCommand::Show { id } => {
            match approvals.get(&ApprovalId::from(id.as_str())).await.map_err(|e| e.to_string())? {
                Some(row) => {
                    println!("{}", serde_json::to_string_pretty(&approvals.view(&row)).unwrap_or_default());
                    Ok(())
                }
                None => Err(format!("no approval `{id}`")),
            }
        }
        ApprovalsCommand::Approve { id, reason } => decide(&approvals, &id, Verdict::Approve, reason).await,
        ApprovalsCommand::Deny { id, reason } => decide(&approvals, &id, Verdict::Deny, reason).await,
        ApprovalsCommand::Deliveries { id, json } => deliveries(&approvals, &id, json).await,
    };
    store.close().await;
    result
}

async fn list(a: &Approvals, status: Option<Status>, org: Option<&str>, limit: i64, json: bool) -> Result<(), String> {
    let rows = a.store().approvals(org, status, limit.clamp(1, 10_000)).await.map_err(|e| e.to_string())?;
    if json {
        let items: Vec<_> = rows.iter().map(|r| a.view(r)).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"approvals": items})).unwrap_or_default());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.status.to_string(),
                r.org.clone(),
                r.tool.clone(),
                crate::money::Micros(r.cost).to_string(),
                r.principal_label.clone(),
                crate::audit::rfc3339(r.expires_at),
            ]
        })
        .collect();
    super::table::print(&["ID", "STATUS", "ORG", "TOOL", "COST", "PRINCIPAL", "EXPIRES"], &rows, &[4]);
    Ok(())
}

async fn decide(a: &Approvals, id: &str, verdict: Verdict, reason: Option<String>) -> Result<(), String> {
    let by = match std::env::var("USER") {
        Ok(u) if !u.is_empty() => format!("cli ({u})"),
        _ => "cli".to_string(),
    };
    match a.decide(&ApprovalId::from(id), verdict, &by, reason).await.map_err(|e| e.to_string())? {
        Transitioned::Done(row) => {
            println!("approval {} {}", row.id, row.status);
            Ok(())
        }
        Transitioned::Standing(row) if row.status == Status::Pending => Err(format!("approval {id} has expired")),
        Transitioned::Standing(row) => Err(format!(
            "approval {id} was already {} by {}",
            row.status,
            row.decided_by.as_deref().unwrap_or("tollgate")
        )),
        Transitioned::Missing => Err(format!("no approval `{id}`")),
    }
}

async fn deliveries(a: &Approvals, id: &str, json: bool) -> Result<(), String> {
    if a.get(&ApprovalId::from(id)).await.map_err(|e| e.to_string())?.is_none() {
        return Err(format!("no approval `{id}`"));
    }
    let ds = a.store().deliveries(id).await.map_err(|e| e.to_string())?;
    if json {
        let body = json!({"deliveries": crate::approval::webhook::deliveries_json(&ds)});
        println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
        return Ok(());
    }
    if ds.is_empty() {
        println!("approval {id} has no webhook deliveries (its route has no webhooks)");
    }
    for (d, attempts) in ds {
        println!("delivery {} to {} (route {}): {} after {} attempt(s)", d.id, d.url, d.route, d.state, d.attempts);
        for t in attempts {
            let outcome = match (&t.status, &t.error) {
                (Some(s), None) => format!("HTTP {s}"),
                (_, Some(e)) => e.clone(),
                (None, None) => "?".into(),
            };
            println!(
                "  #{:<2} {}  {:>8.1} ms  {}",
                t.attempt,
                crate::audit::rfc3339(t.at),
                t.micros as f64 / 1000.0,
                outcome
            );
        }
    }
    Ok(())
}
