//! Reads and checks the files, reporting every error with file, line and field.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{Error, Errors, Sink};
use super::fields::{is_http_url, opt_duration, valid_tool_name_chars, valid_upstream_name};
use super::{
    AgentSessions, Backoff, CatalogSettings, Config, Limits, Manifest, Remote, Risk, Server, Stdio, ToolOverride,
    Transport, raw, secret,
};
use crate::money::Micros;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a value placed into a URL keeps as it is: RFC 3986's unreserved set.
const URL_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Whether a store URL carries a password written out rather than a
/// `${env:NAME}` reference.
fn inline_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else { return false };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    // The userinfo ends at the last `@` before the path (a reference has none).
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return false };
    match userinfo.split_once(':') {
        Some((_, password)) => !password.is_empty() && !password.contains("${env:"),
        None => false,
    }
}

/// Loads `tollgate.toml` and every manifest it points to, reading `${env:..}`
/// references from the process environment.
pub fn load(path: &Path) -> Result<Config, Errors> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

pub fn load_with_env(path: &Path, env: Lookup<'_>) -> Result<Config, Errors> {
    let mut errors = Vec::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Err(Errors(vec![Error {
                file: path.to_path_buf(),
                line: None,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }]));
        }
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let raw: raw::Gateway = {
        let mut sink = Sink::new(path, &text, &mut errors);
        match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                sink.toml(&e);
                return Err(Errors(errors));
            }
        }
    };
    let mut sink = Sink::new(path, &text, &mut errors);
    let server = compile_server(&raw.server, &mut sink);
    let separator = match &raw.catalog.separator {
        Some(s) if !valid_tool_name_chars(s.get_ref()) => {
            sink.at(Some(s.span()), "catalog.separator", "may only use letters, digits, `_`, `-` and `.`");
            "__".to_string()
        }
        Some(s) if s.get_ref().is_empty() => {
            sink.at(Some(s.span()), "catalog.separator", "must not be empty (use an empty manifest prefix instead)");
            "__".to_string()
        }
        Some(s) => s.get_ref().clone(),
        None => "__".to_string(),
    };
    let connect = opt_duration(&raw.upstreams.connect_timeout, "upstreams.connect_timeout", &mut sink)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let call =
        opt_duration(&raw.upstreams.call_timeout, "upstreams.call_timeout", &mut sink).unwrap_or(DEFAULT_CALL_TIMEOUT);
    let dir =
        |v: &Option<Spanned<String>>, default: &str| base.join(v.as_ref().map_or(default, |s| s.get_ref().as_str()));
    let manifests_dir = dir(&raw.manifests_dir, "tool-manifests");
    let policies_dir = dir(&raw.policies_dir, "policies");
    let store = raw.store.as_ref().map_or_else(|| "sqlite://tollgate.db".to_string(), |s| s.get_ref().clone());
    let store_span = raw.store.as_ref().map(Spanned::span);
    if !(store.starts_with("sqlite:") || store.starts_with("postgres://") || store.starts_with("postgresql://")) {
        sink.at(store_span.clone(), "store", "must be a `sqlite://` or `postgres://` URL");
    }
    if inline_password(&store) {
        sink.at(
            store_span.clone(),
            "store",
            "a password in the store URL must come from the environment: postgres://user:${env:NAME}@host/db",
        );
    }
    if store.contains("password=") {
        sink.at(
            store_span.clone(),
            "store",
            "a password in the store URL must come from the environment: postgres://user:${env:NAME}@host/db",
        );
    }
    // A referenced value is URL-encoded where it lands: a password with `@`
    // or `/` stays a password.
    let encoded = |name: &str| env(name).map(|v| percent_encoding::utf8_percent_encode(&v, URL_VALUE).to_string());
    let store = super::secret::resolve(&store, &encoded).unwrap_or_else(|e| {
        sink.at(store_span, "store", e);
        super::secret::Secret::plain(store)
    });
    let durability = match raw.durability.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
        None | Some(("normal", _)) => crate::store::Durability::Normal,
        Some(("full", _)) => crate::store::Durability::Full,
        Some((other, span)) => {
            sink.at(Some(span), "durability", format!("`{other}` is not one of normal, full"));
            crate::store::Durability::Normal
        }
    };
    let approval = compile_approval(&raw.approval, &mut sink);
    let llm_tool = match &raw.llm.tool {
        Some(t) if t.get_ref().is_empty() || t.get_ref().len() > 128 || !valid_tool_name_chars(t.get_ref()) => {
            sink.at(Some(t.span()), "llm.tool", "must be 1 to 128 letters, digits, `_`, `-` or `.`");
            String::new()
        }
        Some(t) => t.get_ref().clone(),
        None => super::LlmSettings::default().tool,
    };
    let admin = compile_admin(&raw.admin, env, &mut sink);
    let telemetry = compile_telemetry(raw.telemetry, env, &mut sink);
    let (manifests, providers) = load_manifests(&manifests_dir, &separator, (connect, call), env, &mut errors);
    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    Ok(Config {
        path: path.to_path_buf(),
        store,
        manifests_dir,
        policies_dir,
        durability,
        server,
        catalog: CatalogSettings { separator },
        approval,
        manifests,
        llm: super::LlmSettings { tool: llm_tool, providers },
        admin,
        telemetry,
    })
}

fn compile_admin(raw: &raw::Admin, env: Lookup<'_>, sink: &mut Sink<'_>) -> super::AdminSettings {
    let mut name = |v: &Spanned<String>, field: &str| {
        if crate::identity::valid_name(v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            sink.at(Some(v.span()), field, "must be 1 to 64 letters, digits, `-`, `_` or `.`");
            None
        }
    };
    let operator_orgs =
        raw.operator_orgs.iter().flatten().filter_map(|o| name(o, "admin.operator_orgs")).collect::<Vec<_>>();
    let org = raw.bootstrap_org.as_ref().and_then(|o| name(o, "admin.bootstrap_org"));
    let team = raw.bootstrap_team.as_ref().and_then(|t| name(t, "admin.bootstrap_team"));
    let bootstrap = raw.bootstrap_key.as_ref().and_then(|k| {
        let template = k.get_ref();
        if !super::secret::has_reference(template) {
            sink.at(Some(k.span()), "admin.bootstrap_key", "must be a `${env:NAME}` reference, never the key itself");
            return None;
        }
        match super::secret::resolve(template, env) {
            Ok(s) if crate::identity::plausible_secret(s.expose()) => Some(super::Bootstrap {
                secret: s,
                org: org.clone().unwrap_or_else(|| "default".into()),
                team: team.clone().unwrap_or_else(|| "admins".into()),
            }),
            Ok(_) => {
                sink.at(
                    Some(k.span()),
                    "admin.bootstrap_key",
                    "the key must be `tg_` followed by at least 32 letters or digits (make one with `openssl rand -hex 24`)",
                );
                None
            }
            Err(m) => {
                sink.at(Some(k.span()), "admin.bootstrap_key", m);
                None
            }
        }
    });
    super::AdminSettings { operator_orgs, bootstrap }
}

/// `[telemetry]`. Span export is off unless `otlp_endpoint` is set, or, in
/// its absence, the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (and
/// `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`) environment variables.
fn compile_telemetry(raw: raw::Telemetry, env: Lookup<'_>, sink: &mut Sink<'_>) -> super::TelemetrySettings {
    let metrics = raw.metrics.unwrap_or(super::TelemetrySettings::default().metrics);
    let from_env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let endpoint = match &raw.otlp_endpoint {
        Some(e) => {
            let text = e.get_ref().trim();
            if !is_http_url(text) {
                sink.at(Some(e.span()), "telemetry.otlp_endpoint", "must be an http:// or https:// URL");
                return super::TelemetrySettings { metrics, otlp: None };
            }
            Some(text.to_string())
        }
        None => from_env("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| {
            let ok = is_http_url(e);
            if !ok {
                sink.at(
                    None,
                    "telemetry.otlp_endpoint",
                    "OTEL_EXPORTER_OTLP_ENDPOINT is not an http:// or https:// URL",
                );
            }
            ok
        }),
    };
    let protocol = match raw.otlp_protocol.as_ref().map(|p| (p.get_ref().clone(), Some(p.span()))) {
        Some(p) => Some(p),
        None => from_env("OTEL_EXPORTER_OTLP_PROTOCOL").map(|p| (p, None)),
    };
    let protocol = match protocol {
        None => super::OtlpProtocol::Protobuf,
        Some((p, _)) if p == "http/protobuf" => super::OtlpProtocol::Protobuf,
        Some((p, _)) if p == "http/json" => super::OtlpProtocol::Json,
        Some((p, span)) => {
            sink.at(span, "telemetry.otlp_protocol", format!("`{p}` is not one of http/protobuf, http/json"));
            super::OtlpProtocol::Protobuf
        }
    };
    let headers = secret::resolve_pairs(raw.otlp_headers, "telemetry.otlp_headers", env, sink);
    let service_name = match &raw.service_name {
        Some(n) if n.get_ref().trim().is_empty() => {
            sink.at(Some(n.span()), "telemetry.service_name", "must not be empty");
            String::new()
        }
        Some(n) => n.get_ref().clone(),
        None => from_env("OTEL_SERVICE_NAME").unwrap_or_else(|| "tollgate".into()),
    };
    let otlp = endpoint.map(|endpoint| super::OtlpSettings {
        endpoint,
        protocol,
        headers,
        service_name,
        timeout: std::time::Duration::from_secs(10),
        flush_every: std::time::Duration::from_secs(1),
    });
    super::TelemetrySettings { metrics, otlp }
}

/// An absolute `http://` or `https://` URL.
fn compile_approval(raw: &raw::Approval, sink: &mut Sink<'_>) -> super::ApprovalSettings {
    let d = super::ApprovalSettings::default();
    let public_url = raw.public_url.as_ref().and_then(|u| {
        let text = u.get_ref().trim_end_matches('/');
        if is_http_url(text) {
            Some(text.to_string())
        } else {
            sink.at(Some(u.span()), "approval.public_url", "must be an http:// or https:// URL");
            None
        }
    });
    let attempts = match &raw.webhook_attempts {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 100 => {
            sink.at(Some(n.span()), "approval.webhook_attempts", "must be between 1 and 100");
            d.webhook_attempts
        }
        Some(n) => u32::try_from(*n.get_ref()).unwrap_or(d.webhook_attempts),
        None => d.webhook_attempts,
    };
    super::ApprovalSettings {
        wait: opt_duration(&raw.wait, "approval.wait", sink).unwrap_or(d.wait),
        timeout: opt_duration(&raw.timeout, "approval.timeout", sink).unwrap_or(d.timeout),
        public_url,
        webhook_timeout: opt_duration(&raw.webhook_timeout, "approval.webhook_timeout", sink)
            .unwrap_or(d.webhook_timeout),
        webhook_backoff: opt_duration(&raw.webhook_backoff, "approval.webhook_backoff", sink)
            .unwrap_or(d.webhook_backoff),
        webhook_attempts: attempts,
    }
}

fn compile_server(raw: &raw::Server, sink: &mut Sink<'_>) -> Server {
    let listen = match &raw.listen {
        Some(l) => l.get_ref().parse::<SocketAddr>().unwrap_or_else(|e| {
            sink.at(
                Some(l.span()),
                "server.listen",
                format!("`{}` is not an address like 127.0.0.1:7400: {e}", l.get_ref()),
            );
            DEFAULT_LISTEN.parse().expect("default listen address parses")
        }),
        None => DEFAULT_LISTEN.parse().expect("default listen address parses"),
    };
    let defaults = Limits::default();
    let session_idle = opt_duration(&raw.session_idle, "server.session_idle", sink).unwrap_or(defaults.session_idle);
    let mut limit = |v: &Option<Spanned<u64>>, field: &str, default: usize, min: u64| match v {
        Some(n) if *n.get_ref() < min => {
            sink.at(Some(n.span()), field, format!("must be at least {min}"));
            default
        }
        Some(n) => usize::try_from(*n.get_ref()).unwrap_or(usize::MAX),
        None => default,
    };
    let limits = Limits {
        max_body_bytes: limit(&raw.max_body_bytes, "server.max_body_bytes", defaults.max_body_bytes, 1024),
        max_json_depth: limit(&raw.max_json_depth, "server.max_json_depth", defaults.max_json_depth, 8),
        max_arguments_bytes: limit(
            &raw.max_arguments_bytes,
            "server.max_arguments_bytes",
            defaults.max_arguments_bytes,
            64,
        ),
        max_sessions: limit(&raw.max_sessions, "server.max_sessions", defaults.max_sessions, 1),
        max_sessions_per_key: limit(
            &raw.max_sessions_per_key,
            "server.max_sessions_per_key",
            defaults.max_sessions_per_key,
            1,
        ),
        session_idle,
    };
    let worker_threads = match &raw.worker_threads {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 1024 => {
            sink.at(Some(n.span()), "server.worker_threads", "must be between 1 and 1024");
            None
        }
        Some(n) => usize::try_from(*n.get_ref()).ok(),
        None => None,
    };
    let default_hosts = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    Server {
        listen,
        allowed_origins: raw.allowed_origins.clone().unwrap_or_default(),
        allowed_hosts: raw.allowed_hosts.clone().unwrap_or(default_hosts),
        limits,
        worker_threads,
    }
}

/// The `*.toml` files in `dir`, in name order.
pub fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every `*.toml` in `dir`, in name order, checking names and collisions
/// across files: the upstream MCP servers, and the LLM providers (`kind = "llm"`).
pub fn load_manifests(
    dir: &Path,
    separator: &str,
    (connect, call): (Duration, Duration),
    env: Lookup<'_>,
    errors: &mut Vec<Error>,
) -> (Vec<Manifest>, Vec<super::LlmProvider>) {
    let files = match toml_files(dir) {
        Ok(files) => files,
        Err(e) => {
            errors.push(Error {
                file: dir.to_path_buf(),
                line: None,
                field: String::new(),
                message: format!("cannot read manifest folder: {e}"),
            });
            return (Vec::new(), Vec::new());
        }
    };
    let mut out = Vec::new();
    let mut providers = Vec::new();
    let mut by_name: HashMap<String, PathBuf> = HashMap::new();
    let mut by_prefix: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Error {
                    file: file.clone(),
                    line: None,
                    field: String::new(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        let mut sink = Sink::new(&file, &text, errors);
        if is_llm(&text) {
            let raw: raw::LlmManifest = match toml::from_str(&text) {
                Ok(r) => r,
                Err(e) => {
                    sink.toml(&e);
                    continue;
                }
            };
            let Some(p) = super::llm::compile(raw, &file, env, &mut sink) else { continue };
            if let Some(other) = by_name.insert(p.name.clone(), file.clone()) {
                sink.at(
                    None,
                    "name",
                    format!("`{}` is already the name of the upstream in {}", p.name, other.display()),
                );
                continue;
            }
            providers.push(p);
            continue;
        }
        let raw: raw::Manifest = match toml::from_str(&text) {
            Ok(r) => r,
            Err(e) => {
                sink.toml(&e);
                continue;
            }
        };
        let Some(m) = compile_manifest(raw, &file, separator, (connect, call), env, &mut sink) else {
            continue;
        };
        if let Some(other) = by_name.insert(m.name.clone(), file.clone()) {
            sink.at(None, "name", format!("`{}` is already the name of the upstream in {}", m.name, other.display()));
            continue;
        }
        if !m.prefix.is_empty()
            && let Some(other) = by_prefix.insert(m.prefix.clone(), file.clone())
        {
            sink.at(
                None,
                "prefix",
                format!("`{}` is already the prefix of the upstream in {}", m.prefix, other.display()),
            );
            continue;
        }
        out.push(m);
    }
    super::llm::check_models(&providers, errors);
    (out, providers)
}

/// Whether a manifest's top-level `kind` is `"llm"` (a file that does not
/// parse is left to the MCP manifest parser to report).
fn is_llm(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Peek {
        kind: Option<String>,
    }
    toml::from_str::<Peek>(text).is_ok_and(|p| p.kind.as_deref() == Some("llm"))
}

fn compile_manifest(
    raw: raw::Manifest,
    file: &Path,
    separator: &str,
    (connect, call): (Duration, Duration),
    env: Lookup<'_>,
    sink: &mut Sink<'_>,
) -> Option<Manifest> {
    let before = error_count(sink);
    let name = raw.name.get_ref().clone();
    if !valid_upstream_name(&name) {
        sink.at(Some(raw.name.span()), "name", "must be 1 to 64 letters, digits, `_` or `-`");
    }
    if let Some(kind) = &raw.kind
        && kind.get_ref() != "mcp"
    {
        sink.at(Some(kind.span()), "kind", format!("`{}` is not one of mcp, llm", kind.get_ref()));
    }
    let prefix = match &raw.prefix {
        Some(p) if !p.get_ref().is_empty() && !valid_upstream_name(p.get_ref()) => {
            sink.at(Some(p.span()), "prefix", "must be empty or 1 to 64 letters, digits, `_` or `-`");
            String::new()
        }
        Some(p) => p.get_ref().clone(),
        None => name.clone(),
    };
    if !prefix.is_empty() && prefix.contains(separator) {
        sink.at(
            raw.prefix.as_ref().map(Spanned::span).or(Some(raw.name.span())),
            "prefix",
            format!("must not contain the separator `{separator}`"),
        );
    }
    let transport_span = raw.transport.span();
    let transport = compile_transport(raw.transport.into_inner(), transport_span, file, env, sink);
    let connect_timeout = opt_duration(&raw.connect_timeout, "connect_timeout", sink).unwrap_or(connect);
    let call_timeout = opt_duration(&raw.call_timeout, "call_timeout", sink).unwrap_or(call);
    let restart = Backoff {
        initial: raw
            .restart
            .as_ref()
            .and_then(|r| opt_duration(&r.initial_backoff, "restart.initial_backoff", sink))
            .unwrap_or(Duration::from_millis(250)),
        max: raw
            .restart
            .as_ref()
            .and_then(|r| opt_duration(&r.max_backoff, "restart.max_backoff", sink))
            .unwrap_or(Duration::from_secs(30)),
    };
    let agent_sessions = compile_agent_sessions(raw.agent_sessions.as_ref(), transport.as_ref(), sink);
    let scans = raw.scans.and_then(|v| scans(v, "scans", sink));
    let mut tools = BTreeMap::new();
    let mut exposed: HashMap<String, String> = HashMap::new();
    for (tool, spanned) in raw.tools {
        let span = spanned.span();
        let o = compile_override(&tool, spanned.into_inner(), span.clone(), sink);
        let shown = o.rename.clone().unwrap_or_else(|| tool.clone());
        if !o.hide
            && let Some(other) = exposed.insert(shown.clone(), tool.clone())
        {
            sink.at(
                Some(span),
                format!("tools.{tool}.rename"),
                format!("`{shown}` is also the name of tool `{other}`"),
            );
        }
        tools.insert(tool, o);
    }
    if error_count(sink) > before {
        return None;
    }
    Some(Manifest {
        file: file.to_path_buf(),
        name,
        prefix,
        description: raw.description,
        transport: transport?,
        connect_timeout,
        call_timeout,
        restart,
        agent_sessions,
        scans,
        tools,
    })
}

fn compile_agent_sessions(
    raw: Option<&raw::AgentSessions>,
    transport: Option<&Transport>,
    sink: &mut Sink<'_>,
) -> AgentSessions {
    // (No transport: the manifest is refused anyway.)
    let mut out = transport.map_or(AgentSessions { max: 0, idle: AgentSessions::IDLE }, AgentSessions::default_for);
    let Some(raw) = raw else { return out };
    if let Some(max) = &raw.max {
        match usize::try_from(*max.get_ref()) {
            Ok(n) if n <= 10_000 => out.max = n,
            _ => sink.at(Some(max.span()), "agent_sessions.max", "must be 0 to 10000"),
        }
    }
    if let Some(idle) = opt_duration(&raw.idle, "agent_sessions.idle", sink) {
        if idle.is_zero() {
            sink.at(raw.idle.as_ref().map(Spanned::span), "agent_sessions.idle", "must be longer than 0s");
        } else {
            out.idle = idle;
        }
    }
    out
}

fn compile_transport(
    t: raw::Transport,
    span: std::ops::Range<usize>,
    file: &Path,
    env: Lookup<'_>,
    sink: &mut Sink<'_>,
) -> Option<Transport> {
    let kind = t.kind.get_ref().as_str();
    let allowed: &[&str] = match kind {
        "stdio" => &["command", "args", "env", "cwd"],
        "http" | "sse" | "ws" => &["url", "headers"],
        other => {
            sink.at(Some(t.kind.span()), "transport.type", format!("`{other}` is not one of stdio, http, sse, ws"));
            return None;
        }
    };
    let present = [
        ("command", t.command.is_some()),
        ("args", t.args.is_some()),
        ("env", t.env.is_some()),
        ("cwd", t.cwd.is_some()),
        ("url", t.url.is_some()),
        ("headers", t.headers.is_some()),
    ];
    for (field, is_set) in present {
        if is_set && !allowed.contains(&field) {
            sink.at(
                Some(span.clone()),
                format!("transport.{field}"),
                format!("is not a field of the {kind} transport"),
            );
        }
    }
    match kind {
        "stdio" => {
            let Some(command) = t.command else {
                sink.at(Some(span), "transport.command", "is required for the stdio transport");
                return None;
            };
            if command.get_ref().trim().is_empty() {
                sink.at(Some(command.span()), "transport.command", "must not be empty");
            }
            let env = secret::resolve_pairs(t.env, "transport.env", env, sink);
            let cwd = t.cwd.map(|c| {
                let p = PathBuf::from(c.get_ref());
                if p.is_absolute() { p } else { file.parent().unwrap_or(Path::new(".")).join(p) }
            });
            Some(Transport::Stdio(Stdio { command: command.into_inner(), args: t.args.unwrap_or_default(), env, cwd }))
        }
        _ => {
            let Some(url) = t.url else {
                sink.at(Some(span), "transport.url", format!("is required for the {kind} transport"));
                return None;
            };
            let resolved = match secret::resolve(url.get_ref(), env) {
                Ok(r) => r,
                Err(e) => {
                    sink.at(Some(url.span()), "transport.url", e);
                    return None;
                }
            };
            let schemes: &[&str] = if kind == "ws" { &["ws://", "wss://"] } else { &["http://", "https://"] };
            if !schemes.iter().any(|s| resolved.expose().starts_with(s)) {
                sink.at(Some(url.span()), "transport.url", format!("must start with {}", schemes.join(" or ")));
            }
            let headers = secret::resolve_pairs(t.headers, "transport.headers", env, sink);
            let remote = Remote { url: resolved, headers };
            Some(match kind {
                "http" => Transport::Http(remote),
                "sse" => Transport::Sse(remote),
                _ => Transport::Ws(remote),
            })
        }
    }
}

fn compile_override(
    tool: &str,
    o: raw::ToolOverride,
    span: std::ops::Range<usize>,
    sink: &mut Sink<'_>,
) -> ToolOverride {
    let field = |f: &str| format!("tools.{tool}.{f}");
    let rename = o.rename.map(|r| {
        if !valid_tool_name_chars(r.get_ref()) || r.get_ref().is_empty() || r.get_ref().len() > 128 {
            sink.at(Some(r.span()), field("rename"), "must be 1 to 128 letters, digits, `_`, `-` or `.`");
        }
        r.into_inner()
    });
    let input_schema = match o.input_schema {
        Some(serde_json::Value::Object(map)) => {
            if let Err(e) = jsonschema::meta::validate(&serde_json::Value::Object(map.clone())) {
                sink.at(Some(span.clone()), field("input_schema"), format!("is not a valid JSON Schema: {e}"));
            }
            Some(map)
        }
        Some(_) => {
            sink.at(Some(span.clone()), field("input_schema"), "must be a table (a JSON Schema object)");
            None
        }
        None => None,
    };
    let risk = o.risk.and_then(|r| match r.get_ref().as_str() {
        "low" => Some(Risk::Low),
        "medium" => Some(Risk::Medium),
        "high" => Some(Risk::High),
        other => {
            sink.at(Some(r.span()), field("risk"), format!("`{other}` is not one of low, medium, high"));
            None
        }
    });
    let mut money = |v: Option<Spanned<String>>, f: &str| {
        v.and_then(|c| Micros::parse(c.get_ref()).map_err(|e| sink.at(Some(c.span()), field(f), e)).ok())
    };
    let cost = money(o.cost, "cost");
    let failure_cost = money(o.failure_cost, "failure_cost");
    let timeout = opt_duration(&o.timeout, &field("timeout"), sink);
    let pin = o.pin.map(|p| {
        let ok = p
            .get_ref()
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            sink.at(Some(p.span()), field("pin"), "must be `sha256:` followed by 64 hex digits (see `tollgate tools`)");
        }
        p.into_inner().to_ascii_lowercase()
    });
    ToolOverride {
        hide: o.hide,
        rename,
        description: o.description,
        input_schema,
        risk,
        cost,
        failure_cost,
        timeout,
        redact: o.redact,
        pin,
        scans: o.scans.and_then(|v| scans(v, &field("scans"), sink)),
    }
}

/// Compiles a manifest's `scans` table; each error names its field.
fn scans(
    v: Spanned<serde_json::Value>,
    field: &str,
    sink: &mut Sink<'_>,
) -> Option<std::sync::Arc<crate::scan::Layer>> {
    match crate::scan::settings::compile(v.get_ref(), crate::scan::Place::Manifest) {
        Ok(l) => Some(std::sync::Arc::new(l)),
        Err(errors) => {
            for (f, m) in errors {
                let at = if f.is_empty() { field.to_string() } else { format!("{field}.{f}") };
                sink.at(Some(v.span()), at, m);
            }
            None
        }
    }
}

fn error_count(sink: &Sink<'_>) -> usize {
    sink.count()
}
