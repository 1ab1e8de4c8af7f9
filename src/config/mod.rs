//! Configuration: `tollgate.toml` and `tool-manifests/*.toml`, compiled into
//! immutable values. Runtime code never sees the raw files (see `raw`), and
//! every value here has already been checked.

mod duration;
pub mod error;
mod fields;
mod llm;
mod load;
mod raw;
pub mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use duration::parse as parse_duration;
pub use error::{Error, Errors};
pub use load::{load, load_manifests, load_with_env, toml_files};
pub use secret::Secret;

use crate::money::Micros;

/// The whole gateway configuration, as loaded at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from; relative folders are resolved against its directory.
    pub path: PathBuf,
    /// The store URL, `${env:..}` references resolved (a password in it
    /// must not reach a log: `Secret` has no `Debug`).
    pub store: secret::Secret,
    pub manifests_dir: PathBuf,
    pub policies_dir: PathBuf,
    /// How hard store commits are pushed to disk.
    pub durability: crate::store::Durability,
    pub server: Server,
    pub catalog: CatalogSettings,
    pub approval: ApprovalSettings,
    pub manifests: Vec<Manifest>,
    pub llm: LlmSettings,
    pub admin: AdminSettings,
    pub telemetry: TelemetrySettings,
}

/// The LLM tool and the providers behind it (`kind = "llm"` manifests).
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// The catalog name of the chat tool (`[llm] tool`, default `llm__chat`).
    pub tool: String,
    pub providers: Vec<LlmProvider>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        Self { tool: "llm__chat".into(), providers: Vec::new() }
    }
}

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmKind {
    /// `POST {base_url}/chat/completions` (base URL ends in `/v1`).
    OpenAi,
    /// `POST {base_url}/v1/messages`.
    Anthropic,
}

impl LlmKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LlmKind::OpenAi => "openai",
            LlmKind::Anthropic => "anthropic",
        }
    }
}

/// One LLM provider.
#[derive(Debug, Clone)]
pub struct LlmProvider {
    pub file: PathBuf,
    pub name: String,
    pub kind: LlmKind,
    pub base_url: Secret,
    pub api_key: Option<Secret>,
    pub headers: Vec<(String, Secret)>,
    /// Bound on waiting for the response, and between two chunks of a stream.
    pub timeout: Duration,
    /// Bound on one whole attempt, streams included.
    pub max_duration: Duration,
    /// Retries of one model on 429, 5xx and connection errors.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the attempt fails over.
    pub max_retry_wait: Duration,
    /// Whether prompts and completions go to the audit (sizes and token counts always do).
    pub record_content: bool,
    pub risk: Option<Risk>,
    pub failure_cost: Option<Micros>,
    /// Set when an `optional` provider's credentials are not in the
    /// environment: the environment variables missing. Its models stay in
    /// the catalog (so fallbacks keep their meaning) and fail over at once.
    pub unconfigured: Option<Vec<String>>,
    /// Models by the name agents use.
    pub models: BTreeMap<String, LlmModel>,
}

#[derive(Debug, Clone)]
pub struct LlmModel {
    pub name: String,
    /// The provider's own name for it.
    pub id: String,
    /// Micro-units of money per million tokens.
    pub input_per_mtok: Micros,
    pub output_per_mtok: Micros,
    /// Used when a call names no `max_tokens`.
    pub max_tokens: u32,
    /// Another model (of any provider) tried when this one fails.
    pub fallback: Option<String>,
}

/// `[admin]`: who manages what the whole deployment shares, and the key
/// that lets a fresh deployment be administered at all.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Orgs whose admin keys may manage deployment-wide things (tool pins,
    /// which every org's agents share). Empty: every admin key may (a
    /// single-tenant deployment).
    pub operator_orgs: Vec<String>,
    /// An admin key put in the store at start-up if it is not there.
    pub bootstrap: Option<Bootstrap>,
}

#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub secret: Secret,
    pub org: String,
    pub team: String,
}

/// `[telemetry]`: `/metrics` and span export.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// Serve `/metrics` (Prometheus text format).
    pub metrics: bool,
    /// Export spans over OTLP/HTTP; `None` (the default): no export.
    pub otlp: Option<OtlpSettings>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings { metrics: true, otlp: None }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The collector's OTLP/HTTP base URL (`/v1/traces` is added) or its full traces URL.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub headers: Vec<(String, Secret)>,
    pub service_name: String,
    pub timeout: Duration,
    /// Spans are sent in batches at least this often.
    pub flush_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Protobuf,
    Json,
}

impl OtlpSettings {
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
    }
}

/// `[approval]`: how calls wait for decisions and how approvers are notified.
#[derive(Debug, Clone)]
pub struct ApprovalSettings {
    /// How long a call whose client takes no task waits open for a decision
    /// before it is answered "pending" (the same call repeated resumes it).
    pub wait: Duration,
    /// Expiry of a pending action when its grant names none.
    pub timeout: Duration,
    /// Base of the links in webhook payloads; `None`: the listen address.
    pub public_url: Option<String>,
    pub webhook_timeout: Duration,
    /// Delay before the first retry; doubled after each failure.
    pub webhook_backoff: Duration,
    pub webhook_attempts: u32,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(30),
            timeout: Duration::from_secs(3600),
            public_url: None,
            webhook_timeout: Duration::from_secs(10),
            webhook_backoff: Duration::from_secs(1),
            webhook_attempts: 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Browser origins allowed on `/mcp` and `/ws`; a request with any other
    /// `Origin` is refused with 403. Requests without `Origin` pass.
    pub allowed_origins: Vec<String>,
    /// `Host` values accepted (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    pub limits: Limits,
    /// Threads of the async runtime; `None`: one per core.
    pub worker_threads: Option<usize>,
}

/// Bounds on what an agent may send and hold open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub max_arguments_bytes: usize,
    /// Open agent sessions (legacy Streamable HTTP sessions and WebSocket
    /// connections) in this process, all keys together.
    pub max_sessions: usize,
    /// Open agent sessions of any one key.
    pub max_sessions_per_key: usize,
    /// A legacy Streamable HTTP session that sees no message for this long is closed.
    pub session_idle: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            max_arguments_bytes: 1024 * 1024,
            max_sessions: 2_000,
            max_sessions_per_key: 100,
            session_idle: std::time::Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CatalogSettings {
    /// Between the upstream prefix and the tool name: `github__create_issue`.
    pub separator: String,
}

/// One upstream MCP server.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub name: String,
    /// Namespace of its tools; empty exposes them under their own names.
    pub prefix: String,
    pub description: Option<String>,
    pub transport: Transport,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub restart: Backoff,
    /// Upstream sessions of agents' own (see `upstream::own`).
    pub agent_sessions: AgentSessions,
    /// Scan settings for every tool of this upstream (`[scans]`).
    pub scans: Option<std::sync::Arc<crate::scan::Layer>>,
    /// Overrides by the upstream's own tool name.
    pub tools: BTreeMap<String, ToolOverride>,
}

/// `[agent_sessions]` of a manifest: how many upstream sessions of agents'
/// own may be open at once, and how long an unused one stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSessions {
    /// 0: never; every agent is served by the shared connection.
    pub max: usize,
    pub idle: Duration,
}

impl AgentSessions {
    /// Remote upstreams: a session is a few requests and some memory. Stdio
    /// upstreams: a session is a process of its own, so only when asked.
    pub fn default_for(transport: &Transport) -> AgentSessions {
        let max = match transport {
            Transport::Stdio(_) => 0,
            _ => 64,
        };
        AgentSessions { max, idle: Self::IDLE }
    }

    pub const IDLE: Duration = Duration::from_secs(300);
}

#[derive(Debug, Clone)]
pub enum Transport {
    Stdio(Stdio),
    /// Streamable HTTP (both protocol eras).
    Http(Remote),
    /// The deprecated HTTP+SSE transport of 2024-11-05.
    Sse(Remote),
    /// A WebSocket carrying one JSON-RPC message per text frame.
    Ws(Remote),
}

impl Transport {
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio(_) => "stdio",
            Transport::Http(_) => "http",
            Transport::Sse(_) => "sse",
            Transport::Ws(_) => "ws",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Stdio {
    pub command: String,
    pub args: Vec<String>,
    /// The child's whole environment: nothing of tollgate's own is inherited.
    pub env: Vec<(String, Secret)>,
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Remote {
    /// May carry a token (some servers take one in the query), so it is a
    /// `Secret` resolved from `${env:..}` references and kept out of logs.
    pub url: Secret,
    pub headers: Vec<(String, Secret)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Risk {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Default)]
pub struct ToolOverride {
    pub hide: bool,
    pub rename: Option<String>,
    pub description: Option<String>,
    /// A tighter schema: arguments must satisfy it as well as the upstream's.
    pub input_schema: Option<serde_json::Map<String, serde_json::Value>>,
    pub risk: Option<Risk>,
    pub cost: Option<Micros>,
    pub failure_cost: Option<Micros>,
    pub timeout: Option<Duration>,
    pub redact: Vec<String>,
    /// `sha256:<hex>` of the definition the admin accepted.
    pub pin: Option<String>,
    /// Scan settings for this tool (`[tools.<name>.scans]`).
    pub scans: Option<std::sync::Arc<crate::scan::Layer>>,
}
