//! `tollgate audit verify|export`.

use clap::Subcommand;

use crate::audit::verify;
use crate::config::Config;
use crate::store::AuditFilter;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain; name the first broken record.
    Verify,
    /// Write records as JSON lines, oldest first.
    Export {
        /// RFC 3339 time, a date (2026-11-24), or an age such as 24h or 7d.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        kind: Option<String>,
    },
}

pub async fn run(config: Config, command: AuditCommand) -> Result<(), String> {
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let result = match command {
        AuditCommand::Verify => match verify::verify(&store).await.map_err(|e| e.to_string())? {
            Ok(n) => {
                println!("ok: {n} audit records, chain intact");
                Ok(())
            }
            Err(b) => Err(format!("audit chain broken at record seq={} id={}: {}", b.seq, b.id, b.reason)),
        },
        AuditCommand::Export { since, until, format, org, tool, decision, kind } => {
            if format != "jsonl" {
                return Err(format!("--format `{format}`: only jsonl is supported"));
            }
            let filter = AuditFilter {
                since_ts: since.as_deref().map(parse_time).transpose()?,
                until_ts: until.as_deref().map(parse_time).transpose()?,
                org,
                tool,
                decision,
                kind,
                ..AuditFilter::default()
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            verify::export(&store, filter, &mut out).await.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    store.close().await;
    result
}

pub use crate::audit::parse_time;
