//! Wiring at the top: opens the store, builds the [`Gateway`]'s handles
//! and starts every background task (audit writer, policy and manifest
//! watchers, admin follower, sweepers, list-change fan-out, the approved
//! actions' executor). Everything below is handed what it needs; nothing
//! below reaches back up here.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::audit::record;
use crate::config::Config;
use crate::gateway::{Gateway, Sessions, Watchers};
use crate::journal::Journal;
use crate::policy::watch::{Policies, Reload};
use crate::store::{Store, StoreError};
use crate::upstream::Upstreams;

/// Why the gateway could not open. Each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("{0}")]
    Policy(String),
    #[error("cannot store the bootstrap admin key: {0}")]
    Bootstrap(StoreError),
    #[error("cannot release abandoned budget holds: {0}")]
    Holds(StoreError),
    #[error("cannot store the policy files' budgets: {0}")]
    Budgets(StoreError),
    #[error("cannot load the admin API's grants: {0}")]
    AdminGrants(StoreError),
    /// Reading the admins' tool pins (the message says so).
    #[error("{0}")]
    Pins(String),
    /// Span export settings (the message says which).
    #[error("{0}")]
    Telemetry(String),
}

/// How often the policy folder is checked for changes.
const POLICY_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Opens the gateway on `store`: the bootstrap key, the policy (an invalid
/// policy stops the start), the audit writer, budgets, admin changes in
/// force, then every background task. Upstreams connect in the background.
pub async fn open(config: &Config, store: Store, shutdown: CancellationToken) -> Result<Gateway, OpenError> {
    bootstrap_key(config, &store).await?;
    // Other replicas' changes are heard from here on (PostgreSQL).
    store.listen(shutdown.clone());
    let journal = Journal::start(store.clone());
    let policies = load_policy(config, &store, &journal).await?;
    let ledger =
        crate::budget::Ledger::new(journal.clone(), store.clone(), crate::budget::Owner::register(&store).await);
    // Holds left by processes that died (kill -9) are released before serving.
    match ledger.sweep().await {
        Ok(0) => {}
        Ok(n) => tracing::info!("released {n} budget holds left by stopped processes"),
        Err(e) => return Err(OpenError::Holds(e)),
    }
    let llm = Arc::new(crate::llm::Llm::new(&config.llm));
    // A bad exporter setting stops the start before any upstream is spawned.
    let tracing = match &config.telemetry.otlp {
        Some(o) => crate::trace::Tracing::start(o).map_err(OpenError::Telemetry)?,
        None => crate::trace::Tracing::default(),
    };
    // Admins' pins are in force before the first listing arrives.
    let pins = crate::admin::pins_of(&store).await.map_err(OpenError::Pins)?;
    let upstreams = Upstreams::start(
        config.manifests.clone(),
        config.catalog.separator.clone(),
        llm.builtin().into_iter().collect(),
        pins,
        shutdown.clone(),
    );
    let admin = crate::admin::Admin::new(
        store.clone(),
        policies.clone(),
        upstreams.clone(),
        config.admin.operator_orgs.clone(),
    );
    // The API's grants are in force before the first call is served.
    crate::admin::reload(&admin).await.map_err(OpenError::AdminGrants)?;
    let gw = Gateway {
        upstreams,
        limits: config.server.limits,
        sessions: Sessions::default(),
        watchers: Watchers::default(),
        parked: Arc::default(),
        approvals: crate::approval::Approvals::new(
            store.clone(),
            config.approval.clone(),
            format!("http://{}", config.server.listen),
        ),
        store,
        journal,
        ledger,
        policies,
        llm,
        admin,
        freshness: Arc::default(),
        metrics: Arc::default(),
        serve_metrics: config.telemetry.metrics,
        tracing,
        shutdown,
    };
    start_tasks(&gw, config);
    Ok(gw)
}

/// Stores `[admin] bootstrap_key` (once) and audits that it did.
async fn bootstrap_key(config: &Config, store: &Store) -> Result<(), OpenError> {
    let Some(b) = &config.admin.bootstrap else { return Ok(()) };
    let key = crate::identity::Bootstrap { secret: b.secret.expose(), org: &b.org, team: &b.team };
    match crate::identity::ensure_bootstrap(store, key, crate::audit::now_micros()).await {
        Ok(true) => {
            let detail = serde_json::json!({"team": b.team, "role": "admin", "from": "admin.bootstrap_key"});
            store.append_audit(&[record::change("key.bootstrap", Some(&b.org), "tollgate", detail)]).await?;
            tracing::info!(org = %b.org, "bootstrap admin key stored");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(OpenError::Bootstrap(e)),
    }
}

/// Loads the policy folder, audits what was loaded and stores its budgets.
async fn load_policy(config: &Config, store: &Store, journal: &Journal) -> Result<Policies, OpenError> {
    let digest = crate::policy::watch::folder_digest(&config.policies_dir);
    let policy = crate::policy::load::load_dir(&config.policies_dir).map_err(|e| OpenError::Policy(e.to_string()))?;
    let files: Vec<_> = policy.files.iter().map(|(f, h)| serde_json::json!({"file": f, "sha256": h})).collect();
    let grants: Vec<_> = policy.grants.iter().map(|g| g.id.clone()).collect();
    let detail = serde_json::json!({"files": files, "grants": grants});
    journal.audit(record::change("policy.load", None, "tollgate", detail)).await?;
    sync_budgets(store, &policy).await?;
    Ok(Policies::new(&config.policies_dir, policy, digest))
}

/// Every background task, each until `gw.shutdown`.
fn start_tasks(gw: &Gateway, config: &Config) {
    tokio::spawn(crate::admin::follow(gw.admin.clone(), gw.shutdown.clone()));
    tokio::spawn(watch_policy(gw.clone()));
    tokio::spawn(gw.ledger.clone().sweeper(HOLD_SWEEP, gw.shutdown.clone()));
    if gw.store.is_shared() {
        let store = gw.store.clone();
        tokio::spawn(crate::periodic::every(RATE_PRUNE, gw.shutdown.clone(), move || {
            let store = store.clone();
            async move {
                if let Err(e) = store.prune_rates().await {
                    tracing::warn!("cannot prune rate buckets: {e}");
                }
            }
        }));
    }
    tokio::spawn(crate::server::fanout::run(gw.clone()));
    tokio::spawn(audit_catalog(gw.clone()));
    tokio::spawn(watch_manifests(gw.clone(), config.path.clone(), config.manifests_dir.clone()));
    tokio::spawn(crate::server::fanout::resource_updates(gw.clone()));
    tokio::spawn(gw.approvals.clone().expirer(APPROVAL_SWEEP, gw.shutdown.clone()));
    tokio::spawn(gw.approvals.events().clone().follow(gw.store.clone(), APPROVAL_FEED, gw.shutdown.clone()));
    tokio::spawn(crate::approval::webhook::deliver(gw.approvals.clone(), gw.policies.clone(), gw.shutdown.clone()));
    tokio::spawn(crate::pipeline::approve::executor(gw.clone()));
    tokio::spawn(gw.parked.clone().sweeper(PARKED_SWEEP, gw.shutdown.clone()));
}

/// Hot reload of the policy folder: a valid change is put in force (its
/// budgets stored) and audited; a refused one is audited, the old policy
/// staying in force.
async fn watch_policy(gw: Gateway) {
    let (audit, store, policies) = (gw.journal.clone(), gw.store.clone(), gw.policies.clone());
    gw.policies
        .clone()
        .watch(POLICY_POLL, gw.shutdown.clone(), move |outcome| {
            let audit = audit.clone();
            let (store, policies) = (store.clone(), policies.clone());
            async move {
                if matches!(outcome, Reload::Applied(_))
                    && let Err(e) = sync_budgets(&store, &policies.current()).await
                {
                    tracing::error!("{e}");
                }
                let draft = match outcome {
                    Reload::Applied(d) if d.is_empty() => return,
                    Reload::Applied(d) => {
                        let files: Vec<_> =
                            d.files.iter().map(|(f, h)| serde_json::json!({"file": f, "sha256": h})).collect();
                        let detail = serde_json::json!({"added": d.added, "removed": d.removed, "changed": d.changed, "files": files});
                        record::change("policy.change", None, "policy files", detail)
                    }
                    Reload::Refused(e) => {
                        let detail = serde_json::json!({"error": e, "in_force": "the previous policy"});
                        record::change("policy.refused", None, "policy files", detail)
                    }
                };
                if let Err(e) = audit.audit(draft).await {
                    tracing::error!("policy change not audited: {e}");
                }
            }
        })
        .await;
}

/// Hot reload of the tool manifests: when a file in the folder changes, the
/// whole configuration is read again; a valid one puts the manifests'
/// catalog settings (tool overrides, prefix, scans) in force, an invalid one
/// leaves everything as it was. Both are logged and audited.
async fn watch_manifests(gw: Gateway, config: std::path::PathBuf, dir: std::path::PathBuf) {
    let mut seen = crate::policy::watch::folder_digest(&dir);
    let mut tick = tokio::time::interval(POLICY_POLL);
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let digest = crate::policy::watch::folder_digest(&dir);
        if digest == seen {
            continue;
        }
        seen = digest;
        let draft = match crate::config::load(&config) {
            Ok(cfg) => {
                let notes = gw.upstreams.reload_manifests(&cfg.manifests).await;
                for n in &notes {
                    tracing::warn!("{n}");
                }
                tracing::info!("tool manifests reloaded");
                let files: Vec<String> = cfg.manifests.iter().map(|m| m.file.display().to_string()).collect();
                record::change(
                    "manifests.change",
                    None,
                    "tool manifests",
                    serde_json::json!({"files": files, "notes": notes}),
                )
            }
            Err(e) => {
                tracing::error!("tool manifests not reloaded, the previous ones stay in force: {e}");
                record::change(
                    "manifests.refused",
                    None,
                    "tool manifests",
                    serde_json::json!({"error": e.to_string(), "in_force": "the previous manifests"}),
                )
            }
        };
        if let Err(e) = gw.journal.audit(draft).await {
            tracing::error!("manifest reload not audited: {e}");
        }
    }
}

/// Audits what the catalog's checks decide about a tool definition, once
/// per definition and process: `tool.quarantined` (rug pull, description
/// scan, unusable schema, name collision) and `tool.flagged` (the
/// description scan's findings on a tool it let through).
async fn audit_catalog(gw: Gateway) {
    let mut rx = gw.upstreams.watch();
    let mut seen: std::collections::HashSet<(String, String, &'static str)> = Default::default();
    loop {
        let catalog = rx.borrow_and_update().clone();
        // Bounded: an upstream that churns definitions cannot grow it forever
        // (after a clear, standing quarantines are audited once more).
        if seen.len() > 10_000 {
            seen.clear();
        }
        let mut drafts = Vec::new();
        for q in catalog.quarantined() {
            if seen.insert((q.name.clone(), q.hash.clone(), "quarantined")) {
                let detail = serde_json::json!({
                    "tool": q.name, "upstream": &*q.upstream_name, "upstream_tool": q.upstream_tool,
                    "hash": q.hash, "reason": q.reason.to_string(),
                });
                drafts.push(record::change("tool.quarantined", None, "tollgate", detail));
            }
        }
        for t in catalog.tools().iter().filter(|t| !t.flags.is_empty()) {
            if seen.insert((t.name.clone(), t.hash.clone(), "flagged")) {
                let findings: Vec<String> = t.flags.iter().map(ToString::to_string).collect();
                let detail = serde_json::json!({
                    "tool": t.name, "upstream": &*t.upstream_name, "hash": t.hash, "findings": findings,
                });
                drafts.push(record::change("tool.flagged", None, "tollgate", detail));
            }
        }
        for d in drafts {
            if let Err(e) = gw.journal.audit(d).await {
                tracing::error!("catalog change not audited: {e}");
            }
        }
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// How often pending actions past their expiry are expired.
const APPROVAL_SWEEP: std::time::Duration = std::time::Duration::from_secs(1);
/// How often approval changes by other processes are looked for.
const APPROVAL_FEED: std::time::Duration = std::time::Duration::from_millis(500);

/// How often the shared rate buckets that are full again are forgotten.
const RATE_PRUNE: std::time::Duration = std::time::Duration::from_secs(60);

/// How often parked calls past their time are dropped.
const PARKED_SWEEP: std::time::Duration = std::time::Duration::from_secs(15);

/// How often expired holds and holds of stopped processes are released
/// (a dead process's holds block budget until then).
const HOLD_SWEEP: std::time::Duration = std::time::Duration::from_secs(3);

/// Puts the policy files' budgets in the store, where holds read their limits.
async fn sync_budgets(store: &Store, policy: &crate::policy::Policy) -> Result<(), OpenError> {
    let now = crate::audit::now_micros();
    let rows: Vec<_> = policy.budgets.iter().map(|b| b.row(now)).collect();
    store.sync_file_budgets(&rows).await.map_err(OpenError::Budgets)
}

/// Opens the store the configuration names.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let base = config.path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    Store::open(config.store.expose(), &base, config.durability).await
}
