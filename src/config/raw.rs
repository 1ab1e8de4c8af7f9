//! The files as written: serde structs that refuse unknown fields.
//! Nothing outside `config` sees these; `load` compiles them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    pub store: Option<Spanned<String>>,
    pub manifests_dir: Option<Spanned<String>>,
    pub policies_dir: Option<Spanned<String>>,
    pub durability: Option<Spanned<String>>,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub catalog: Catalog,
    #[serde(default)]
    pub upstreams: UpstreamDefaults,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default)]
    pub llm: Llm,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub telemetry: Telemetry,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub operator_orgs: Option<Vec<Spanned<String>>>,
    pub bootstrap_key: Option<Spanned<String>>,
    pub bootstrap_org: Option<Spanned<String>>,
    pub bootstrap_team: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    pub metrics: Option<bool>,
    pub otlp_endpoint: Option<Spanned<String>>,
    pub otlp_protocol: Option<Spanned<String>>,
    pub otlp_headers: Option<BTreeMap<String, Spanned<String>>>,
    pub service_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Llm {
    pub tool: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub wait: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub public_url: Option<Spanned<String>>,
    pub webhook_timeout: Option<Spanned<String>>,
    pub webhook_backoff: Option<Spanned<String>>,
    pub webhook_attempts: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<Spanned<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    pub max_json_depth: Option<Spanned<u64>>,
    pub max_arguments_bytes: Option<Spanned<u64>>,
    pub max_sessions: Option<Spanned<u64>>,
    pub max_sessions_per_key: Option<Spanned<u64>>,
    pub session_idle: Option<Spanned<String>>,
    pub worker_threads: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub separator: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDefaults {
    pub connect_timeout: Option<Spanned<String>>,
    pub call_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: Spanned<String>,
    pub kind: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub description: Option<String>,
    pub transport: Spanned<Transport>,
    pub connect_timeout: Option<Spanned<String>>,
    pub call_timeout: Option<Spanned<String>>,
    pub restart: Option<Restart>,
    pub agent_sessions: Option<AgentSessions>,
    /// Scan settings for every tool of this upstream (see `scan::settings`).
    pub scans: Option<Spanned<serde_json::Value>>,
    #[serde(default)]
    pub tools: BTreeMap<String, Spanned<ToolOverride>>,
}

/// One table for every transport kind; `load` checks which fields each kind takes,
/// which gives better messages than an internally tagged enum.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    pub command: Option<Spanned<String>>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, Spanned<String>>>,
    pub cwd: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSessions {
    pub max: Option<Spanned<i64>>,
    pub idle: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    pub initial_backoff: Option<Spanned<String>>,
    pub max_backoff: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    #[serde(default)]
    pub hide: bool,
    pub rename: Option<Spanned<String>>,
    pub description: Option<String>,
    pub input_schema: Option<serde_json::Value>,
    pub risk: Option<Spanned<String>>,
    pub cost: Option<Spanned<String>>,
    pub failure_cost: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub redact: Vec<String>,
    pub pin: Option<Spanned<String>>,
    pub scans: Option<Spanned<serde_json::Value>>,
}

/// A manifest whose `kind = "llm"`: an LLM provider and its models.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmManifest {
    pub name: Spanned<String>,
    /// `"llm"`: `load` read it already to pick this struct.
    #[allow(dead_code)]
    pub kind: Spanned<String>,
    /// For the people who read the file.
    #[allow(dead_code)]
    pub description: Option<String>,
    pub provider: Spanned<String>,
    pub base_url: Option<Spanned<String>>,
    pub api_key: Option<Spanned<String>>,
    pub headers: Option<BTreeMap<String, Spanned<String>>>,
    pub timeout: Option<Spanned<String>>,
    pub max_duration: Option<Spanned<String>>,
    pub retries: Option<Spanned<u64>>,
    pub retry_backoff: Option<Spanned<String>>,
    pub max_retry_wait: Option<Spanned<String>>,
    #[serde(default)]
    pub record_content: bool,
    pub risk: Option<Spanned<String>>,
    pub failure_cost: Option<Spanned<String>>,
    /// Whether the gateway may start without this provider's credentials.
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub models: BTreeMap<String, Spanned<LlmModel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmModel {
    /// The provider's own name for the model, if it differs.
    pub id: Option<Spanned<String>>,
    /// Price per million tokens: a decimal string or a number.
    pub input_per_mtok: Spanned<toml::Value>,
    pub output_per_mtok: Spanned<toml::Value>,
    pub max_tokens: Option<Spanned<u64>>,
    pub fallback: Option<Spanned<String>>,
}
