//! `tollgate init [DIR]`: a deployment folder to start from, in one step.
//!
//! It writes the quickstart that ships in `examples/quickstart` (the same
//! files, compiled in: one upstream, the MCP reference server over `npx`;
//! grants that allow, deny and ask for approval; a daily budget; content
//! scans), creates the store with one agent key, and prints what to run next.

use std::path::{Path, PathBuf};

use crate::config;

/// The quickstart's files, as shipped in `examples/quickstart`.
const FILES: &[(&str, &str)] = &[
    ("tollgate.toml", include_str!("../../examples/quickstart/tollgate.toml")),
    ("tool-manifests/everything.toml", include_str!("../../examples/quickstart/tool-manifests/everything.toml")),
    ("policies/agents.toml", include_str!("../../examples/quickstart/policies/agents.toml")),
    ("policies/scans.toml", include_str!("../../examples/quickstart/policies/scans.toml")),
    ("policies/README.md", include_str!("../../examples/quickstart/policies/README.md")),
];

/// The key's holder, as the quickstart's grants name them.
const ORG: &str = "acme";
const TEAM: &str = "eng";

pub async fn run(dir: &Path) -> Result<(), String> {
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.next().is_some() {
        return Err(format!("{} exists and is not empty: give a new folder", dir.display()));
    }
    for (name, text) in FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let config_path = std::path::absolute(dir.join("tollgate.toml")).map_err(|e| e.to_string())?;
    let config = config::load(&config_path).map_err(|e| e.to_string())?;
    let store = crate::app::open_store(&config).await.map_err(|e| e.to_string())?;
    let key = crate::identity::create_key(&store, ORG, TEAM, None, Some("tollgate init"), crate::audit::now_micros())
        .await
        .map_err(|e| e.to_string())?;
    let detail = serde_json::json!({"key": key.row.id, "team": TEAM, "role": null, "label": "tollgate init"});
    store
        .append_audit(&[crate::audit::record::change("key.create", Some(ORG), "cli:init", detail)])
        .await
        .map_err(|e| format!("key created but its audit record failed: {e}"))?;
    store.close().await;
    let key_file = dir.join("agent.key");
    write_private(&key_file, &format!("{}\n", key.secret))?;
    let shown = config_path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    println!("wrote {}: tollgate.toml, tool-manifests/, policies/, tollgate.db", shown.display());
    println!("agent key {} (team {TEAM}, org {ORG}) in {} (only you can read it)", key.row.id, key_file.display());
    println!();
    println!("next, in one terminal:");
    println!("  tollgate --config {} serve", config_path.display());
    println!("and in another:");
    println!("  export TOLLGATE_CONFIG={} TOLLGATE_KEY=$(cat {})", config_path.display(), key_file.display());
    println!("  tollgate call everything__echo '{{\"message\": \"hello\"}}'");
    Ok(())
}

/// A file only its owner can read: it holds a key.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}
