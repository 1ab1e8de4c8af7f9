//! `tollgate grants list|show|create|update|delete|revisions`, against a
//! running gateway's admin API (`--url`, key in `TOLLGATE_ADMIN_KEY`):
//! grants made through the API live in that gateway's store and take effect
//! there at once.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum GrantsCommand {
    /// The grants that concern the key's org (the policy files' too, read-only).
    List {
        #[arg(long)]
        json: bool,
    },
    /// One grant with its ETag.
    Show { id: String },
    /// Create a grant from a JSON file (`-` for standard input) with the
    /// fields of a policy file's `[[grant]]`.
    Create { file: PathBuf },
    /// Replace a grant from a JSON file; with `--if-match`, only if unchanged since.
    Update {
        id: String,
        file: PathBuf,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Delete an API grant; with `--if-match`, only if unchanged since.
    Delete {
        id: String,
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Every change of a grant: who, when, the diff.
    Revisions {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

/// The JSON body in `file` (`-`: standard input).
pub fn read_body(file: &PathBuf) -> Result<serde_json::Value, String> {
    let text = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| format!("standard input: {e}"))?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", file.display()))
}
