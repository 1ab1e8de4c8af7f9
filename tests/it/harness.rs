//! The test harness: a real gateway on 127.0.0.1:0 with real upstreams, and
//! real MCP clients as agents. Nothing is mocked; waits are on conditions
//! (catalog changes, output lines), never on sleeps.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tollgate::config;
use tollgate::gateway::Gateway;
use tollgate::identity;
use tollgate::upstream::Health;

pub const FIXTURE: &str = env!("CARGO_BIN_EXE_tollgate-fixture");
pub const TOLLGATE: &str = env!("CARGO_BIN_EXE_tollgate");
pub const WAIT: Duration = Duration::from_secs(30);

pub fn stdio_fixture(name: &str) -> String {
    format!(
        "name = \"{name}\"\n[transport]\ntype = \"stdio\"\ncommand = \"{FIXTURE}\"\nargs = [\"--name\", \"{name}\"]\n"
    )
}

pub fn remote_manifest(name: &str, kind: &str, url: &str) -> String {
    format!("name = \"{name}\"\n[transport]\ntype = \"{kind}\"\nurl = \"{url}\"\n")
}

pub struct Builder {
    server: String,
    manifests: Vec<(String, String)>,
    policies: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

/// The policy tests run under unless they bring their own: everyone may call everything.
pub const ALLOW_ALL: &str = "[[grant]]\nid = \"test-all\"\nprincipals = [\"*\"]\ntools = [\"*\"]\neffect = \"allow\"\n";

impl Builder {
    pub fn server(mut self, toml: &str) -> Self {
        self.server = toml.to_string();
        self
    }

    pub fn manifest(mut self, name: &str, toml: impl Into<String>) -> Self {
        self.manifests.push((name.to_string(), toml.into()));
        self
    }

    /// Use `dir` (which may hold a store already) instead of a new folder.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// A file in `policies/`; without any, [`ALLOW_ALL`] is written.
    pub fn policy(mut self, name: &str, toml: impl Into<String>) -> Self {
        self.policies.push((name.to_string(), toml.into()));
        self
    }

    pub fn stdio_fixture(self, name: &str) -> Self {
        let m = stdio_fixture(name);
        self.manifest(name, m)
    }

    /// Writes the files, starts the gateway in-process and waits until every
    /// upstream has finished its first connection attempt.
    pub async fn spawn(self) -> TestGateway {
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("tollgate.toml"), &self.server).unwrap();
        for (name, toml) in &self.manifests {
            std::fs::write(dir.path().join("tool-manifests").join(format!("{name}.toml")), toml).unwrap();
        }
        let policies = if self.policies.is_empty() {
            vec![("all".to_string(), ALLOW_ALL.to_string())]
        } else {
            self.policies.clone()
        };
        for (name, toml) in &policies {
            std::fs::write(dir.path().join("policies").join(format!("{name}.toml")), toml).unwrap();
        }
        let cfg = config::load(&dir.path().join("tollgate.toml")).unwrap_or_else(|e| panic!("config: {e}"));
        let store = tollgate::app::open_store(&cfg).await.expect("store opens");
        let key = identity::create_key(&store, "acme", "eng", None, Some("test agent"), 0).await.expect("key");
        let shutdown = CancellationToken::new();
        let gw = tollgate::app::open(&cfg, store, shutdown.clone()).await.expect("gateway opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        gw.approvals.bound_to(addr);
        let router = tollgate::server::http::router(gw.clone(), &cfg.server);
        tokio::spawn(tollgate::server::http::serve(listener, router, shutdown.clone()));
        let tg = TestGateway {
            base: format!("http://{addr}"),
            gw,
            key: key.secret,
            key_id: key.row.id,
            shutdown,
            _dir: dir,
        };
        tg.wait_until(|g| g.upstreams.settled()).await;
        tg
    }
}

pub struct TestGateway {
    pub base: String,
    pub gw: Gateway,
    /// An agent key (team eng, org acme) and its id.
    pub key: String,
    pub key_id: String,
    pub shutdown: CancellationToken,
    /// Holds the config files for the gateway's lifetime.
    pub _dir: tempfile::TempDir,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestGateway {
    pub fn builder() -> Builder {
        Builder {
            server: "[server]\nlisten = \"127.0.0.1:0\"\n".into(),
            manifests: Vec::new(),
            policies: Vec::new(),
            dir: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Stops this gateway and starts `builder`'s on the same folder and store.
    pub async fn restart(mut self, builder: Builder) -> TestGateway {
        self.shutdown.cancel();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tempdir"));
        drop(self);
        builder.in_dir(dir).spawn().await
    }

    /// An rmcp agent with this gateway's test key.
    pub async fn agent(&self, era: Era) -> (AgentService, mpsc::UnboundedReceiver<Heard>) {
        http_agent_with(&self.mcp_url(), era, None, Some(&self.key)).await
    }

    /// An agent whose user answers elicitations with `elicit`.
    pub async fn agent_answering(
        &self,
        era: Era,
        elicit: Option<&'static str>,
    ) -> (AgentService, mpsc::UnboundedReceiver<Heard>) {
        http_agent_with(&self.mcp_url(), era, elicit, Some(&self.key)).await
    }

    /// Creates another key in this gateway's store.
    pub async fn new_key(&self, team: &str, org: &str) -> (String, String) {
        let k = identity::create_key(&self.gw.store, org, team, None, None, 0).await.expect("key");
        (k.secret, k.row.id)
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Waits (bounded) until `cond` holds, re-checking on every catalog change.
    pub async fn wait_until(&self, cond: impl Fn(&Gateway) -> bool) {
        let mut rx = self.gw.upstreams.watch();
        let gw = self.gw.clone();
        tokio::time::timeout(WAIT, async move {
            loop {
                if cond(&gw) {
                    return;
                }
                // Health changes come with a catalog rebuild, except a failed
                // first attempt of an upstream that never listed anything.
                let _ = tokio::time::timeout(Duration::from_millis(200), rx.changed()).await;
            }
        })
        .await
        .expect("condition not reached in time");
    }

    pub fn health(&self, upstream: &str) -> Health {
        self.gw.upstreams.all().iter().find(|u| &*u.name == upstream).expect("upstream").status().health
    }
}

/// What an agent heard besides responses.
#[derive(Debug, Clone)]
pub enum Heard {
    Progress(ProgressNotificationParam),
    ToolsChanged,
    ResourceUpdated(String),
    Elicited,
    Sampled,
    Log(serde_json::Value),
}

/// An rmcp client acting as the agent; records notifications.
#[derive(Clone)]
pub struct Agent {
    pub tx: mpsc::UnboundedSender<Heard>,
    /// How the agent's user answers elicitations ("decline", or an answer to
    /// accept); `None`: the client does not support elicitation.
    pub elicit: Option<&'static str>,
    /// Whether the client declares the tasks extension (SEP-2663).
    pub tasks: bool,
    /// Whether the client declares sampling (it answers with a fixed text).
    pub sampling: bool,
}

impl ClientHandler for Agent {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::default();
        if self.elicit.is_some() {
            caps.elicitation = Some(Default::default());
            caps.roots = Some(Default::default());
        }
        if self.sampling {
            caps.sampling = Some(Default::default());
        }
        if self.tasks {
            let elicitation = caps.elicitation.take();
            caps = ClientCapabilities::builder().enable_tasks().build();
            caps.elicitation = elicitation;
        }
        ClientConfig::new(caps, Implementation::new("test-agent", "1.0.0"))
    }
    /// An answering agent's one root names its answer, so a test can tell
    /// whose roots an upstream was given.
    #[allow(deprecated)]
    async fn list_roots(
        &self,
        _c: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ListRootsResult, rmcp::ErrorData> {
        let root = serde_json::json!({"uri": format!("file:///agent/{}", self.elicit.unwrap_or("none"))});
        Ok(rmcp::model::ListRootsResult::new(vec![serde_json::from_value(root).expect("root")]))
    }

    #[allow(deprecated)]
    async fn create_message(
        &self,
        _request: rmcp::model::CreateMessageRequestParams,
        _c: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, rmcp::ErrorData> {
        if !self.sampling {
            return Err(rmcp::ErrorData::new(rmcp::model::ErrorCode::METHOD_NOT_FOUND, "no sampling", None));
        }
        let _ = self.tx.send(Heard::Sampled);
        let answer = serde_json::json!({"role": "assistant", "content": {"type": "text", "text": "sampled by the test agent"}, "model": "test-model", "stopReason": "endTurn"});
        Ok(serde_json::from_value(answer).expect("sampling result"))
    }

    async fn create_elicitation(
        &self,
        _request: rmcp::model::ElicitRequestParams,
        _c: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        let _ = self.tx.send(Heard::Elicited);
        let answer = match self.elicit {
            Some("decline") => serde_json::json!({"action": "decline"}),
            Some(a) => serde_json::json!({"action": "accept", "content": {"answer": a}}),
            None => serde_json::json!({"action": "cancel"}),
        };
        Ok(serde_json::from_value(answer).expect("elicit result"))
    }
    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        p: rmcp::model::LoggingMessageNotificationParam,
        _c: NotificationContext<RoleClient>,
    ) {
        let _ = self.tx.send(Heard::Log(p.data));
    }
    async fn on_progress(&self, p: ProgressNotificationParam, _c: NotificationContext<RoleClient>) {
        let _ = self.tx.send(Heard::Progress(p));
    }
    async fn on_tool_list_changed(&self, _c: NotificationContext<RoleClient>) {
        let _ = self.tx.send(Heard::ToolsChanged);
    }
    async fn on_resource_updated(
        &self,
        p: rmcp::model::ResourceUpdatedNotificationParam,
        _c: NotificationContext<RoleClient>,
    ) {
        let _ = self.tx.send(Heard::ResourceUpdated(p.uri));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    Legacy,
    Modern,
}

pub fn lifecycle(era: Era) -> ClientLifecycleMode {
    match era {
        Era::Legacy => ClientLifecycleMode::Initialize,
        Era::Modern => ClientLifecycleMode::Discover { preferred_versions: vec![ProtocolVersion::V_2026_07_28] },
    }
}

pub type AgentService = RunningService<RoleClient, Agent>;

/// An rmcp agent over Streamable HTTP with `key` as its bearer token.
pub async fn http_agent_with(
    url: &str,
    era: Era,
    elicit: Option<&'static str>,
    key: Option<&str>,
) -> (AgentService, mpsc::UnboundedReceiver<Heard>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_string());
    if let Some(k) = key {
        config = config.auth_header(k.to_string());
    }
    let t = StreamableHttpClientTransport::from_config(config);
    let svc = Agent { tx, elicit, tasks: false, sampling: false }
        .serve_with_lifecycle(t, lifecycle(era))
        .await
        .expect("agent connects");
    (svc, rx)
}

/// An agent over Streamable HTTP that declares sampling, elicitation
/// (declining) and roots.
pub async fn sampling_agent(url: &str, era: Era, key: &str) -> (AgentService, mpsc::UnboundedReceiver<Heard>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    let t = StreamableHttpClientTransport::from_config(config);
    let svc = Agent { tx, elicit: Some("decline"), tasks: false, sampling: true }
        .serve_with_lifecycle(t, lifecycle(era))
        .await
        .expect("agent connects");
    (svc, rx)
}

/// A 2026-07-28 agent that declares the tasks extension.
pub async fn tasks_agent(url: &str, key: &str) -> AgentService {
    let (tx, _rx) = mpsc::unbounded_channel();
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    let t = StreamableHttpClientTransport::from_config(config);
    Agent { tx, elicit: None, tasks: true, sampling: false }
        .serve_with_lifecycle(t, lifecycle(Era::Modern))
        .await
        .expect("agent connects")
}

/// A child process that prints `LISTENING <url>` when ready.
pub struct Listening {
    pub url: String,
    /// Killed when dropped.
    pub _child: tokio::process::Child,
}

pub async fn spawn_listening(program: &str, args: &[&str]) -> Listening {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("LISTENING ") {
                return url.trim().to_string();
            }
        }
        panic!("{program} exited before listening");
    })
    .await
    .expect("listening in time");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Listening { url, _child: child }
}

pub async fn fixture_http(name: &str) -> Listening {
    spawn_listening(FIXTURE, &["--name", name, "--http", "127.0.0.1:0"]).await
}

/// The HTTP fixture with extra flags (`--session-input-only`, ...).
pub async fn fixture_http_with(name: &str, flags: &[&str]) -> Listening {
    let mut args = vec!["--name", name, "--http", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    spawn_listening(FIXTURE, &args).await
}

pub fn text_of(r: &rmcp::model::CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn _arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// The first `n` progress notifications the agent hears, sorted by progress.
/// rmcp's client runs each notification handler on its own task, so a call
/// can return before its last progress is recorded: wait (bounded) for them.
pub async fn progress_heard(heard: &mut mpsc::UnboundedReceiver<Heard>, n: usize) -> Vec<(f64, Option<f64>)> {
    let mut seen = Vec::new();
    let collected = tokio::time::timeout(WAIT, async {
        while seen.len() < n {
            match heard.recv().await {
                Some(Heard::Progress(p)) => seen.push((p.progress, p.total)),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(collected.is_ok(), "only {} of {n} progress notifications arrived: {seen:?}", seen.len());
    seen.sort_by(|a, b| a.0.total_cmp(&b.0));
    seen
}

/// A WebSocket handshake request carrying `key` as its bearer token.
pub fn ws_request(url: &str, key: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("ws url");
    req.headers_mut().insert("authorization", format!("Bearer {key}").parse().expect("header"));
    req
}

/// A gateway folder for the `tollgate` binary: an empty `tollgate.toml`,
/// the given manifests, and the allow-all policy.
pub fn config_dir(manifests: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("tollgate.toml"), "").unwrap();
    std::fs::write(dir.path().join("policies/all.toml"), ALLOW_ALL).unwrap();
    for (name, m) in manifests {
        std::fs::write(dir.path().join(format!("tool-manifests/{name}.toml")), m).unwrap();
    }
    dir
}

/// Runs the `tollgate` binary against the config in `dir`: (exit code, stdout, stderr).
pub fn tollgate_run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(TOLLGATE)
        .arg("--config")
        .arg(dir.join("tollgate.toml"))
        .args(args)
        .output()
        .expect("run tollgate");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// Runs the `tollgate` binary against the config in `dir`; panics on failure.
pub fn tollgate_cli(dir: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = tollgate_run(dir, args);
    assert_eq!(code, Some(0), "tollgate {args:?}: {stderr}");
    stdout
}

/// Creates a key with `tollgate keys create`; returns (secret, id).
pub fn cli_key(dir: &Path, team: &str, org: &str) -> (String, String) {
    let out = tollgate_cli(dir, &["keys", "create", "--team", team, "--org", org, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("keys create --json");
    (v["secret"].as_str().expect("secret").to_string(), v["id"].as_str().expect("id").to_string())
}

/// `tollgate serve` as its own process on 127.0.0.1:0.
pub struct Served {
    pub base: String,
    pub child: tokio::process::Child,
}

impl Served {
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }
}

pub async fn serve_binary(dir: &Path, stderr: Stdio) -> Served {
    serve_binary_env(dir, stderr, &[]).await
}

/// [`serve_binary`] with extra environment variables (e.g. `TOLLGATE_LOG`).
pub async fn serve_binary_env(dir: &Path, stderr: Stdio, env: &[(&str, &str)]) -> Served {
    let mut child = tokio::process::Command::new(TOLLGATE)
        .envs(env.iter().copied())
        .arg("--config")
        .arg(dir.join("tollgate.toml"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("tollgate serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("tollgate listening on ") {
                return url.trim().to_string();
            }
        }
        panic!("tollgate serve exited before listening");
    })
    .await
    .expect("listening in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Served { base, child }
}

/// How many times an HTTP fixture ran each tool, asked of the fixture directly.
pub async fn upstream_stats(url: &str) -> std::collections::BTreeMap<String, u64> {
    use rmcp::ServiceExt;
    let direct = ().serve(StreamableHttpClientTransport::from_uri(url.to_string())).await.unwrap();
    let r = direct.peer().call_tool(rmcp::model::CallToolRequestParams::new("stats")).await.unwrap();
    let _ = direct.cancel().await;
    serde_json::from_value(r.structured_content.unwrap()["calls"].clone()).unwrap()
}

/// How many times an HTTP fixture ran `tool`.
pub async fn upstream_calls(url: &str, tool: &str) -> u64 {
    upstream_stats(url).await.get(tool).copied().unwrap_or(0)
}

/// Waits (bounded by [`WAIT`]) until `f` returns `Some`, re-checking every
/// 20 ms: a wait on a condition, not a sleep standing in for one.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The command block of `doc` (a path under the repository) marked
/// `<!-- run: NAME ... -->` on the line before it.
pub fn doc_block(doc: &str, name: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(doc)).expect("the doc");
    let lines: Vec<&str> = text.lines().collect();
    let marker = format!("<!-- run: {name} ");
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&marker))
        .unwrap_or_else(|| panic!("{doc}: no block `{name}`"));
    assert!(lines[at + 1].trim_start().starts_with("```"), "{doc}: the marker of `{name}` is not before a block");
    let end = (at + 2..lines.len()).find(|&j| lines[j].trim_start().starts_with("```")).expect("closed block");
    lines[at + 2..end].join("\n")
}

/// Runs a docs command block as written with bash (`set -e`) in `dir`, the
/// binary this test build made first on PATH and `env` set; returns (success,
/// stdout + stderr). The block's process group is killed afterwards, so
/// servers it starts in the background do not outlive it.
pub async fn run_doc_block(dir: &Path, block: &str, env: &[(&str, &str)]) -> (bool, String) {
    let bin = Path::new(TOLLGATE).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    // Output to a file, not a pipe: a server the block leaves in the
    // background would hold a pipe open after bash exits.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -e\n{block}"))
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_KEY")
        .env_remove("TOLLGATE_URL")
        .env_remove("TOLLGATE_ADMIN_KEY")
        .envs(env.iter().copied())
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.as_file().try_clone().unwrap())
        .stderr(log.as_file().try_clone().unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("bash");
    let group = child.id().expect("pid");
    let status = tokio::time::timeout(Duration::from_secs(300), child.wait()).await;
    // Whatever the block left running in the background goes with it.
    let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
    let status = status.expect("the block finished within 5 minutes").expect("bash ran");
    (status.success(), std::fs::read_to_string(log.path()).unwrap_or_default())
}
