//! The `tollgate` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod approvals;
mod audit;
mod budgets;
mod call;
mod explain;
mod grants;
mod init;
mod keys;
pub mod logging;
mod remote;
mod table;

use crate::config::{self, Config};
use crate::server;
use crate::upstream::Health;

#[derive(Parser, Debug)]
#[command(name = "tollgate", version, about = "An MCP gateway: one governed MCP server in front of all of them")]
pub struct Cli {
    /// The gateway configuration file.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
    config: PathBuf,
    /// A running gateway (e.g. http://127.0.0.1:7400): `grants`, `keys`,
    /// `budgets`, `approvals`, `audit export` and `tools` then go through its
    /// admin API with the key in TOLLGATE_ADMIN_KEY, instead of the store the
    /// configuration names.
    #[arg(long, global = true, env = "TOLLGATE_URL")]
    url: Option<String>,
    /// How log lines (on stderr) are written; the level is set by TOLLGATE_LOG
    /// (or RUST_LOG), e.g. `info`, `debug`, `tollgate=debug`.
    #[arg(long, global = true, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a deployment folder to start from (the quickstart: configuration,
    /// one upstream, grants, a budget) with its store and an agent key.
    Init {
        /// The folder to create (must not exist, or be empty).
        #[arg(default_value = "tollgate-quickstart")]
        dir: PathBuf,
    },
    /// Call one tool through a running gateway, as an agent would.
    Call {
        /// The tool's name in tollgate's catalog, e.g. everything__echo.
        tool: String,
        /// The arguments, a JSON object.
        arguments: Option<String>,
        /// The agent's API key.
        #[arg(long, env = "TOLLGATE_KEY", hide_env_values = true)]
        key: Option<String>,
        /// Print the whole result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the gateway: Streamable HTTP at /mcp, WebSocket at /ws.
    Serve {
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Serve one agent over standard input/output, with the gateway in-process.
    Stdio {
        /// The agent's API key.
        #[arg(long, env = "TOLLGATE_KEY", hide_env_values = true)]
        key: Option<String>,
    },
    /// Validate the configuration, manifests and policies without starting anything.
    Check,
    /// Connect to the upstreams and print the catalog with each tool's upstream and health.
    Tools {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage grants made through the admin API (needs --url).
    Grants {
        #[command(subcommand)]
        command: grants::GrantsCommand,
    },
    /// Manage API keys (in the store the configuration names, or through --url).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Manage budgets and read their spend (in the store the configuration names).
    Budgets {
        #[command(subcommand)]
        command: budgets::BudgetsCommand,
    },
    /// List and decide pending actions; read their webhook deliveries.
    Approvals {
        #[command(subcommand)]
        command: approvals::ApprovalsCommand,
    },
    /// Print the decision for a call and every grant considered.
    Explain(explain::ExplainArgs),
    /// Read and check the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(matches!(cli.command, Command::Stdio { .. }), cli.log_format);
    if let Command::Check = cli.command {
        return check(&cli.config);
    }
    if let Command::Init { dir } = &cli.command {
        return block_on(init::run(dir)).map_or_else(failed, |()| ExitCode::SUCCESS);
    }
    if let Command::Call { tool, arguments, key, json } = &cli.command {
        let Some(key) = key.as_deref().filter(|k| !k.trim().is_empty()) else {
            eprintln!("tollgate: call needs the agent's key: --key tg_... or TOLLGATE_KEY");
            return ExitCode::from(2);
        };
        let url = match mcp_url(cli.url.as_deref(), &cli.config) {
            Ok(u) => u,
            Err(e) => return failed(e),
        };
        return match block_on(call::run(&url, key, tool, arguments.as_deref(), *json)) {
            Ok(call::Outcome::Answered) => ExitCode::SUCCESS,
            Ok(call::Outcome::Refused) => ExitCode::FAILURE,
            Err(e) => failed(e),
        };
    }
    let verb = match cli.command {
        Command::Grants { command } => remote::Verb::Grants(command),
        Command::Keys { command } if cli.url.is_some() => remote::Verb::Keys(command),
        Command::Budgets { command } if cli.url.is_some() => remote::Verb::Budgets(command),
        Command::Approvals { command } if cli.url.is_some() => remote::Verb::Approvals(command),
        Command::Audit { command } if cli.url.is_some() => remote::Verb::Audit(command),
        Command::Tools { json } if cli.url.is_some() => remote::Verb::Tools { json },
        other => return local(cli.config, other),
    };
    let Some(url) = cli.url else {
        eprintln!(
            "tollgate: `grants` works against a running gateway: give --url (or TOLLGATE_URL) and TOLLGATE_ADMIN_KEY"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(remote::run(&url, verb)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn failed(e: String) -> ExitCode {
    eprintln!("tollgate: {e}");
    ExitCode::FAILURE
}

/// Runs `f` on a small runtime of its own (the verbs that are clients).
fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?
        .block_on(f)
}

/// The `/mcp` endpoint of the gateway: `--url` (its base, or its `/mcp`), else
/// the listen address of the configuration.
fn mcp_url(url: Option<&str>, config_path: &Path) -> Result<String, String> {
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let config = config::load(config_path).map_err(|e| format!("{e}\n(or give the gateway with --url)"))?;
            format!("http://{}", config.server.listen)
        }
    };
    Ok(if base.ends_with("/mcp") { base } else { format!("{base}/mcp") })
}

/// The verbs that run on this machine: the gateway itself, or the store the
/// configuration names.
fn local(config_path: PathBuf, command: Command) -> ExitCode {
    let config = match config::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = say_where(&config, &command) {
        eprintln!("tollgate: {e}");
        return ExitCode::from(2);
    }
    let runtime = match runtime(&config.server) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve { listen } => serve(config, listen).await,
            Command::Stdio { key } => stdio(config, key).await,
            Command::Tools { json } => tools(config, json).await,
            Command::Keys { command } => keys::run(config, command).await,
            Command::Explain(args) => explain::run(config, args).await,
            Command::Budgets { command } => budgets::run(config, command).await,
            Command::Audit { command } => audit::run(config, command).await,
            Command::Approvals { command } => approvals::run(config, command).await,
            Command::Check | Command::Grants { .. } | Command::Init { .. } | Command::Call { .. } => {
                unreachable!("handled in main")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The async runtime `tollgate serve` and `stdio` run on, as `[server]` sets it.
pub fn runtime(server: &config::Server) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = server.worker_threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build()
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => match crate::policy::load::load_dir(&c.policies_dir) {
            Ok(p) => {
                let missing = missing_programs(&c);
                if !missing.is_empty() {
                    for m in missing {
                        eprintln!("{m}");
                    }
                    return ExitCode::from(2);
                }
                println!(
                    "ok: {} ({} upstream manifests, {} LLM providers, {} grants in {} policy files)",
                    path.display(),
                    c.manifests.len(),
                    c.llm.providers.len(),
                    p.grants.len(),
                    p.files.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Stdio manifests whose command is not on PATH (the gateway would start, and
/// the upstream would stay down): one line each, as the loader's errors read.
fn missing_programs(c: &Config) -> Vec<String> {
    c.manifests
        .iter()
        .filter_map(|m| match &m.transport {
            config::Transport::Stdio(s) if crate::upstream::resolve_program(&s.command).is_none_or(|p| !p.exists()) => {
                Some(format!("{}: transport.command: `{}` is not found on PATH", m.file.display(), s.command))
            }
            _ => None,
        })
        .collect()
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    t.cancel();
                    return;
                }
            };
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        t.cancel();
    });
    token
}

/// Tells on stderr which configuration and store a local verb works on (run
/// from the wrong folder, it would otherwise read another deployment's without
/// a word), and refuses to create a store for a verb that only reads one.
fn say_where(config: &Config, command: &Command) -> Result<(), String> {
    let base = config.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let at = crate::store::Store::location(config.store.expose(), &base);
    let config_path = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
    // Verbs that may be the first to touch a new deployment create its store;
    // verbs that only read one (explain, audit, approvals) refuse an empty one.
    let creates = matches!(
        command,
        Command::Serve { .. }
            | Command::Stdio { .. }
            | Command::Tools { .. }
            | Command::Keys { .. }
            | Command::Budgets { .. }
    );
    if !at.exists && !creates {
        return Err(format!(
            "no store at {} (named by {}): start the gateway once or create a key to make it, or pass --config",
            at.text,
            config_path.display()
        ));
    }
    // stdio's stderr is often shown to the agent's user: keep it to warnings.
    if !matches!(command, Command::Stdio { .. }) {
        eprintln!("tollgate: config {}; store {}", config_path.display(), at.text);
    }
    Ok(())
}

async fn serve(config: Config, listen: Option<String>) -> Result<(), String> {
    let addr = match listen {
        Some(l) => l.parse().map_err(|e| format!("--listen `{l}`: {e}"))?,
        None => config.server.listen,
    };
    let listener = server::http::listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let shutdown = shutdown_on_signal();
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let gw = crate::app::open(&config, store, shutdown.clone()).await.map_err(|e| e.to_string())?;
    gw.approvals.bound_to(local);
    let tracing = gw.tracing.clone();
    let upstreams = gw.upstreams.clone();
    let router = server::http::router(gw, &config.server);
    tracing::info!(%local, "tollgate listening: MCP at http://{local}/mcp");
    // Tests and scripts wait for this line rather than sleeping.
    println!("tollgate listening on http://{local}");
    let served = server::http::serve(listener, router, shutdown).await.map_err(|e| e.to_string());
    upstreams.stopped(UPSTREAMS_CLOSE).await;
    flush_spans(tracing).await;
    served
}

/// How long shutdown waits for upstream connections to close (rmcp gives a
/// stdio upstream 3 s to exit after its stdin closes, 3 s more after SIGTERM).
const UPSTREAMS_CLOSE: std::time::Duration = std::time::Duration::from_secs(10);

/// Sends the spans still queued before the process exits.
async fn flush_spans(tracing: crate::trace::Tracing) {
    if tracing.exporting() {
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
}

async fn stdio(config: Config, key: Option<String>) -> Result<(), String> {
    let Some(key) = key.filter(|k| !k.trim().is_empty()) else {
        return Err("stdio needs an API key: --key tg_... or TOLLGATE_KEY".into());
    };
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let principal = match crate::identity::authenticate(&store, &key).await {
        Ok(p) => p,
        Err(e) => {
            return server::stdio::refuse(format!(
                "unauthorized: the key tollgate was started with (--key or TOLLGATE_KEY): {e}"
            ))
            .await;
        }
    };
    let shutdown = shutdown_on_signal();
    let gw = crate::app::open(&config, store, shutdown.clone()).await.map_err(|e| e.to_string())?;
    let tracing = gw.tracing.clone();
    let upstreams = gw.upstreams.clone();
    let served = server::stdio::serve(gw, principal).await;
    // The agent closed its end (or a signal came): close the upstreams too.
    shutdown.cancel();
    upstreams.stopped(UPSTREAMS_CLOSE).await;
    flush_spans(tracing).await;
    served
}

async fn tools(config: Config, json: bool) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    let upstreams = crate::upstream::Upstreams::start(
        config.manifests.clone(),
        config.catalog.separator.clone(),
        crate::llm::Llm::new(&config.llm).builtin().into_iter().collect(),
        crate::admin::pins_of(&crate::app::open_store(&config).await.map_err(|e| e.to_string())?).await?,
        shutdown.clone(),
    );
    let deadline = config
        .manifests
        .iter()
        .map(|m| m.connect_timeout)
        .max()
        .unwrap_or(Duration::ZERO)
        .saturating_add(Duration::from_secs(1));
    upstreams.wait_settled(deadline).await;
    let catalog = upstreams.catalog();
    let health: Vec<_> = upstreams.all().iter().map(|u| u.status()).collect();
    let health_of =
        |name: &str| health.iter().find(|s| s.name == name).map_or("unknown".to_string(), |s| s.health.to_string());
    if json {
        let tools: Vec<_> = catalog
            .tools()
            .iter()
            .map(|t| serde_json::json!({"name": t.name, "upstream": &*t.upstream_name, "upstream_tool": t.upstream_tool, "hash": t.hash, "health": health_of(&t.upstream_name), "description": t.tool.description, "flags": t.flags.iter().map(ToString::to_string).collect::<Vec<_>>()}))
            .collect();
        let quarantined: Vec<_> = catalog
            .quarantined()
            .iter()
            .map(|q| serde_json::json!({"name": q.name, "upstream": &*q.upstream_name, "hash": q.hash, "reason": q.reason.to_string()}))
            .collect();
        let out = serde_json::json!({"tools": tools, "quarantined": quarantined, "upstreams": health});
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    } else {
        let mut rows: Vec<Vec<String>> = catalog
            .tools()
            .iter()
            .map(|t| {
                let flags = t.flags.iter().map(|f| format!("flagged: {f}")).collect::<Vec<_>>().join("; ");
                vec![
                    t.name.to_string(),
                    t.upstream_name.to_string(),
                    health_of(&t.upstream_name),
                    t.hash.clone(),
                    flags,
                ]
            })
            .collect();
        rows.extend(catalog.quarantined().iter().map(|q| {
            vec![
                q.name.to_string(),
                q.upstream_name.to_string(),
                "blocked".into(),
                q.hash.clone(),
                format!("quarantined: {}", q.reason),
            ]
        }));
        table::print(&["TOOL", "UPSTREAM", "HEALTH", "HASH", "NOTE"], &rows, &[]);
        for s in &health {
            if !matches!(s.health, Health::Up) {
                println!("upstream {}: {}", s.name, health_of(&s.name));
            }
        }
    }
    shutdown.cancel();
    Ok(())
}
