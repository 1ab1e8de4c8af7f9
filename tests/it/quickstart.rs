//! README's quickstart, run as written: `tollgate init`, `serve`, then every
//! command of the README's `<!-- quickstart -->` blocks through bash, with the
//! binary this test build made first on PATH (installing it is the build
//! itself). A README line this test does not expect fails it, so the README
//! and this test move together.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::harness::*;

/// The command lines of README's quickstart blocks, in order.
fn readme_lines() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut lines = Vec::new();
    let mut take = false;
    let mut inside = false;
    for line in text.lines() {
        match (inside, line.trim()) {
            (false, "<!-- quickstart -->") => take = true,
            (false, l) if l.starts_with("```") && take => inside = true,
            (true, l) if l.starts_with("```") => {
                inside = false;
                take = false;
            }
            (true, l) if !l.is_empty() => lines.push(l.to_string()),
            _ => {}
        }
    }
    lines
}

/// The JSON object in a command's output (stderr names the store around it).
fn json_in(out: &str) -> Option<&str> {
    Some(&out[out.find("{\n")?..=out.rfind('}')?])
}

/// Runs one README line in `dir` after the README's `export` line, as the
/// docs blocks are run (`harness::run_doc_block`).
async fn bash(dir: &Path, export: &str, line: &str) -> (bool, String) {
    run_doc_block(dir, &format!("{export}\n{line}"), &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node (npx fetches server-everything from the npm registry)"]
async fn the_readme_quickstart_runs_as_written() {
    let work = tempfile::tempdir().unwrap();
    let init = std::process::Command::new(TOLLGATE).arg("init").current_dir(work.path()).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let dir = work.path().join("tollgate-quickstart");
    assert!(dir.join("agent.key").exists() && dir.join("tollgate.db").exists());
    // The README's 7400, unless taken: a free port instead, in the folder's own config.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.join("tollgate.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("127.0.0.1:7400", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    // `serve` as the README runs it (the listen address from the folder's config).
    let mut served = tokio::process::Command::new(TOLLGATE)
        .args(["--config", "tollgate-quickstart/tollgate.toml", "serve"])
        .current_dir(work.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(served.stdout.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = out.next_line().await.unwrap() {
            if line.starts_with("tollgate listening on") {
                return line;
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("listening in time");
    assert!(listening.ends_with(&format!(":{port}")), "{listening}");
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });

    let lines = readme_lines();
    let export = lines.iter().find(|l| l.starts_with("export ")).expect("an export line").clone();
    let mut pending: Option<tokio::task::JoinHandle<(bool, String)>> = None;
    for line in lines.iter().filter(|l| !l.starts_with("export ")) {
        let cmd = line.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        match cmd.as_str() {
            "tollgate call everything__echo" => {
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(ok && out.contains("Echo: hello"), "{line}: {out}");
            }
            "tollgate call everything__trigger-long-running-operation" => {
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(!ok && out.contains("denied by grant `eng-no-long-waits`"), "{line}: {out}");
            }
            "tollgate call everything__get-sum" => {
                // Waits for a person: runs on while the next lines decide.
                let (dir, export, line) = (work.path().to_path_buf(), export.clone(), line.clone());
                pending = Some(tokio::spawn(async move { bash(&dir, &export, &line).await }));
            }
            "tollgate approvals list" => {
                let found = eventually("the pending action", || async {
                    let (_, out) = bash(work.path(), &export, "tollgate approvals list --json").await;
                    let v: Value = serde_json::from_str(json_in(&out)?).ok()?;
                    v["approvals"][0]["id"].as_str().map(str::to_string)
                })
                .await;
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(ok && out.contains(&found), "{line}: {out}");
            }
            "tollgate approvals approve" => {
                let (_, listed) = bash(work.path(), &export, "tollgate approvals list --json").await;
                let v: Value = serde_json::from_str(json_in(&listed).expect("JSON")).unwrap();
                let id = v["approvals"][0]["id"].as_str().expect("pending").to_string();
                let (ok, out) = bash(work.path(), &export, &line.replace("<id>", &id)).await;
                assert!(ok, "{line}: {out}");
                let waited = pending.take().expect("the call that waits");
                let (ok, out) = tokio::time::timeout(Duration::from_secs(120), waited).await.unwrap().unwrap();
                assert!(ok && out.contains("The sum of 5000 and 2 is 5002"), "the approved call: {out}");
            }
            "tollgate audit verify" => {
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(ok && out.contains("ok"), "{line}: {out}");
            }
            "tollgate audit export" => {
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(ok && out.contains("\"call.intent\"") && out.contains("everything__echo"), "{line}: {out}");
            }
            "tollgate budgets spend" => {
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(ok && out.contains("eng-daily"), "{line}: {out}");
            }
            "tollgate explain --key" => {
                let (ok, out) = bash(work.path(), &export, line).await;
                assert!(ok && out.contains("eng-big-sums-need-approval"), "{line}: {out}");
            }
            _ => panic!("README's quickstart has a line this test does not run: {line}"),
        }
    }
    assert!(pending.is_none(), "the waiting call was decided");
}
