//! The catalog: every upstream's tools, prompts and resources under one set
//! of names, as an immutable snapshot rebuilt whenever an upstream changes.
//!
//! Rules: a tool is exposed as `<prefix><separator><name>` after manifest
//! overrides; two entries that would share a name are both withheld (never a
//! silent overwrite); a tool whose definition differs from its pin, or whose
//! schema will not compile within bounds, is quarantined: hidden and
//! uncallable. Order is deterministic (sorted by exposed name).

pub mod hash;
pub mod schema;
mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{Manifest, ToolOverride};
use crate::sync::Locked;

/// What one upstream offered the last time it was listed.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    pub tools: Vec<Tool>,
    pub prompts: Vec<Prompt>,
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
}

/// What executes a tool's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The upstream MCP server at this index of the manifest list.
    Mcp(usize),
    /// The gateway's own LLM tool (the providers of `kind = "llm"` manifests).
    Llm,
}

impl Target {
    pub fn upstream(self) -> Option<usize> {
        match self {
            Target::Mcp(i) => Some(i),
            Target::Llm => None,
        }
    }
}

/// A tool the gateway itself offers, listed beside the upstreams' tools.
#[derive(Debug, Clone)]
pub struct Builtin {
    /// The definition, under the name agents see.
    pub tool: Tool,
    pub upstream_name: Arc<str>,
    pub settings: ToolOverride,
    pub target: Target,
}

/// A callable tool.
#[derive(Debug)]
pub struct ToolEntry {
    /// The name agents see.
    pub name: String,
    pub target: Target,
    pub upstream_name: Arc<str>,
    /// The upstream's own name for it.
    pub upstream_tool: String,
    /// The definition agents see: renamed, with overrides applied.
    pub tool: Tool,
    /// Hash of the upstream's definition (see `hash`).
    pub hash: String,
    /// Arguments must satisfy every one: the upstream's schema, then the manifest's tighter one.
    pub validators: Vec<Arc<Validator>>,
    pub settings: ToolOverride,
    /// The manifest's `[scans]` for every tool of its upstream (the tool's
    /// own are in `settings`).
    pub upstream_scans: Option<Arc<crate::scan::Layer>>,
    /// What the description scan found in a definition it let through.
    pub flags: Vec<crate::scan::describe::Finding>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineReason {
    /// The definition no longer matches the manifest's pin (a "rug pull").
    PinMismatch { pinned: String, actual: String },
    /// The input schema is not usable (too large, too deep, does not compile).
    Schema(String),
    /// Another entry would have the same exposed name.
    Collision(String),
    /// The description scan found injection or shadowing in the definition.
    Description(Vec<crate::scan::describe::Finding>),
}

impl std::fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuarantineReason::PinMismatch { pinned, actual } => {
                write!(f, "definition changed from its pin {pinned} to {actual}; an admin must accept it")
            }
            QuarantineReason::Schema(e) => write!(f, "{e}"),
            QuarantineReason::Collision(other) => write!(f, "name collides with {other}"),
            QuarantineReason::Description(found) => {
                let list: Vec<String> = found.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "its definition reads like an instruction to the agent ({}); an admin must accept it",
                    list.join("; ")
                )
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Quarantined {
    pub name: String,
    pub upstream_name: Arc<str>,
    /// The upstream's own name for it.
    pub upstream_tool: String,
    pub hash: String,
    pub reason: QuarantineReason,
}

#[derive(Debug, Clone)]
pub struct PromptEntry {
    pub name: String,
    pub upstream: usize,
    pub upstream_prompt: String,
    pub prompt: Prompt,
}

#[derive(Debug, Clone)]
pub struct ResourceEntry {
    pub upstream: usize,
    pub resource: Resource,
}

#[derive(Debug, Clone)]
pub struct TemplateEntry {
    pub upstream: usize,
    pub template: ResourceTemplate,
}

/// One immutable view of everything callable. Cheap to share: callers hold an `Arc`.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: Vec<Arc<ToolEntry>>,
    tool_index: HashMap<String, usize>,
    quarantined: Vec<Quarantined>,
    prompts: Vec<PromptEntry>,
    prompt_index: HashMap<String, usize>,
    resources: Vec<ResourceEntry>,
    resource_index: HashMap<String, usize>,
    /// URIs listed by more than one upstream.
    withheld_uris: std::collections::HashSet<String>,
    templates: Vec<TemplateEntry>,
}

impl Catalog {
    pub fn tools(&self) -> &[Arc<ToolEntry>] {
        &self.tools
    }

    pub fn tool(&self, name: &str) -> Option<&Arc<ToolEntry>> {
        self.tool_index.get(name).map(|i| &self.tools[*i])
    }

    pub fn quarantined(&self) -> &[Quarantined] {
        &self.quarantined
    }

    pub fn quarantine_of(&self, name: &str) -> Option<&Quarantined> {
        self.quarantined.iter().find(|q| q.name == name)
    }

    pub fn prompts(&self) -> &[PromptEntry] {
        &self.prompts
    }

    pub fn prompt(&self, name: &str) -> Option<&PromptEntry> {
        self.prompt_index.get(name).map(|i| &self.prompts[*i])
    }

    pub fn resources(&self) -> &[ResourceEntry] {
        &self.resources
    }

    pub fn templates(&self) -> &[TemplateEntry] {
        &self.templates
    }

    /// Which upstream serves `uri`: a listed resource first, then the templates
    /// of exactly one upstream. A URI listed by several upstreams, or matched by
    /// the templates of several, is routed nowhere (never a silent pick).
    pub fn route_resource(&self, uri: &str) -> Option<usize> {
        if let Some(i) = self.resource_index.get(uri) {
            return Some(self.resources[*i].upstream);
        }
        if self.withheld_uris.contains(uri) {
            return None;
        }
        let mut owners =
            self.templates.iter().filter(|t| template::matches(&t.template.uri_template, uri)).map(|t| t.upstream);
        let first = owners.next()?;
        owners.all(|o| o == first).then_some(first)
    }

    /// Which upstream a resource-template URI (a completion reference) belongs to.
    pub fn route_template(&self, uri_template: &str) -> Option<usize> {
        self.templates.iter().find(|t| t.template.uri_template == uri_template).map(|t| t.upstream)
    }
}

/// Compiled validators by schema digest, so an unchanged schema is compiled once
/// however often its upstream is re-listed.
type Compiled = Result<Arc<Validator>, String>;

const MAX_CACHED_SCHEMAS: usize = 20_000;

#[derive(Default)]
pub struct SchemaCache {
    inner: Mutex<HashMap<[u8; 32], Compiled>>,
    bounds: schema::Bounds,
}

impl SchemaCache {
    pub fn get_or_compile(&self, schema: &Value) -> Result<Arc<Validator>, String> {
        let mut canonical = String::new();
        hash::write_canonical(schema, &mut canonical);
        let key: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
        if let Some(hit) = self.inner.locked().get(&key) {
            return hit.clone();
        }
        // Compiled outside the lock: compilation may take up to the time bound.
        let result = schema::compile(schema, self.bounds);
        if !matches!(&result, Err(e) if e.starts_with(schema::TIMED_OUT)) {
            let mut cache = self.inner.locked();
            // A bound on memory: upstreams that churn schemas cannot grow it forever.
            if cache.len() >= MAX_CACHED_SCHEMAS {
                cache.clear();
            }
            cache.insert(key, result.clone());
        }
        result
    }

    /// Compiles every schema of `listing` (and the manifest's tighter ones), so a
    /// catalog build that follows finds them cached.
    pub fn warm(&self, manifest: &Manifest, listing: &Listing) {
        for t in &listing.tools {
            let _ = self.get_or_compile(&Value::Object((*t.input_schema).clone()));
            if let Some(tighter) = manifest.tools.get(t.name.as_ref()).and_then(|o| o.input_schema.as_ref()) {
                let _ = self.get_or_compile(&Value::Object(tighter.clone()));
            }
        }
    }
}

/// Builds a catalog from the manifests and the latest listing of each upstream
/// (`None` for one that is not connected).
/// Pins set by admins, by (upstream, upstream tool name): the accepted
/// definition hash, or `None` for explicitly unpinned. They override the
/// manifest's pin.
pub type Pins = HashMap<(String, String), Option<String>>;

pub fn build(
    manifests: &[Manifest],
    separator: &str,
    listings: &[Option<Arc<Listing>>],
    builtins: &[Builtin],
    cache: &SchemaCache,
    pins: &Pins,
) -> Catalog {
    let mut cat = Catalog::default();
    // Candidates by exposed name; more than one candidate is a collision.
    let mut tools: BTreeMap<String, Vec<ToolEntry>> = BTreeMap::new();
    let mut prompts: BTreeMap<String, Vec<PromptEntry>> = BTreeMap::new();
    let mut resources: BTreeMap<String, Vec<ResourceEntry>> = BTreeMap::new();
    // Every tool by upstream, for the shadowing check of descriptions.
    let named: Vec<(&str, String, &str)> = manifests
        .iter()
        .zip(listings)
        .filter_map(|(m, l)| l.as_ref().map(|l| (m, l)))
        .flat_map(|(m, l)| {
            l.tools.iter().filter(|t| !m.tools.get(t.name.as_ref()).is_some_and(|o| o.hide)).map(move |t| {
                let shown = m.tools.get(t.name.as_ref()).and_then(|o| o.rename.as_deref()).unwrap_or(t.name.as_ref());
                (m.name.as_str(), exposed(&m.prefix, separator, shown), t.name.as_ref())
            })
        })
        .collect();
    let others: Vec<crate::scan::describe::Other<'_>> =
        named.iter().map(|(upstream, exposed, own)| crate::scan::describe::Other { upstream, exposed, own }).collect();
    for (i, (m, listing)) in manifests.iter().zip(listings).enumerate() {
        let Some(listing) = listing else { continue };
        let upstream_name: Arc<str> = Arc::from(m.name.as_str());
        for t in &listing.tools {
            let settings = m.tools.get(t.name.as_ref()).cloned().unwrap_or_default();
            if settings.hide {
                continue;
            }
            let shown = settings.rename.clone().unwrap_or_else(|| t.name.to_string());
            let name = exposed(&m.prefix, separator, &shown);
            let definition_hash = hash::of(t);
            let mut settings = settings;
            if let Some(admin_pin) = pins.get(&(m.name.clone(), t.name.to_string())) {
                settings.pin = admin_pin.clone();
            }
            if let Some(pin) = &settings.pin
                && *pin != definition_hash
            {
                tracing::warn!(tool = %name, upstream = %m.name, pinned = %pin, actual = %definition_hash, "tool definition changed from its pin: quarantined");
                cat.quarantined.push(Quarantined {
                    name,
                    upstream_name: upstream_name.clone(),
                    upstream_tool: t.name.to_string(),
                    hash: definition_hash.clone(),
                    reason: QuarantineReason::PinMismatch { pinned: pin.clone(), actual: definition_hash },
                });
                continue;
            }
            let mut validators = Vec::new();
            let mut schemas = vec![Value::Object((*t.input_schema).clone())];
            if let Some(tighter) = &settings.input_schema {
                schemas.push(Value::Object(tighter.clone()));
            }
            let mut broken = None;
            for s in &schemas {
                match cache.get_or_compile(s) {
                    Ok(v) => validators.push(v),
                    Err(e) => broken = Some(e),
                }
            }
            if let Some(e) = broken {
                tracing::warn!(tool = %name, upstream = %m.name, error = %e, "tool schema unusable: quarantined");
                cat.quarantined.push(Quarantined {
                    name,
                    upstream_name: upstream_name.clone(),
                    upstream_tool: t.name.to_string(),
                    hash: definition_hash,
                    reason: QuarantineReason::Schema(e),
                });
                continue;
            }
            let mut tool = t.clone();
            tool.name = name.clone().into();
            if let Some(d) = &settings.description {
                tool.description = Some(d.clone().into());
            }
            if let Some(tighter) = &settings.input_schema {
                tool.input_schema = Arc::new(tighter.clone());
            }
            // The definition agents will read, scanned; one an admin accepted
            // (pinned to this very hash) is listed with its findings instead.
            let (quarantine, flags) = describe(&tool, m, &settings, &others);
            if !quarantine.is_empty() && settings.pin.as_deref() != Some(definition_hash.as_str()) {
                tracing::warn!(tool = %name, upstream = %m.name, "tool definition reads like an injection: quarantined");
                cat.quarantined.push(Quarantined {
                    name,
                    upstream_name: upstream_name.clone(),
                    upstream_tool: t.name.to_string(),
                    hash: definition_hash,
                    reason: QuarantineReason::Description(quarantine),
                });
                continue;
            }
            let flags = quarantine.into_iter().chain(flags).collect();
            tools.entry(name.clone()).or_default().push(ToolEntry {
                name,
                target: Target::Mcp(i),
                upstream_name: upstream_name.clone(),
                upstream_tool: t.name.to_string(),
                tool,
                hash: definition_hash,
                validators,
                settings,
                upstream_scans: m.scans.clone(),
                flags,
            });
        }
        for p in &listing.prompts {
            let name = exposed(&m.prefix, separator, &p.name);
            let mut prompt = p.clone();
            prompt.name = name.clone();
            prompts.entry(name.clone()).or_default().push(PromptEntry {
                name,
                upstream: i,
                upstream_prompt: p.name.clone(),
                prompt,
            });
        }
        for r in &listing.resources {
            resources.entry(r.uri.clone()).or_default().push(ResourceEntry { upstream: i, resource: r.clone() });
        }
        for t in &listing.templates {
            cat.templates.push(TemplateEntry { upstream: i, template: t.clone() });
        }
    }
    for b in builtins {
        let name = b.tool.name.to_string();
        let hash = hash::of(&b.tool);
        match cache.get_or_compile(&Value::Object((*b.tool.input_schema).clone())) {
            Ok(v) => tools.entry(name.clone()).or_default().push(ToolEntry {
                name,
                target: b.target,
                upstream_name: b.upstream_name.clone(),
                upstream_tool: b.tool.name.to_string(),
                tool: b.tool.clone(),
                hash,
                validators: vec![v],
                settings: b.settings.clone(),
                upstream_scans: None,
                flags: Vec::new(),
            }),
            Err(e) => cat.quarantined.push(Quarantined {
                name,
                upstream_name: b.upstream_name.clone(),
                upstream_tool: b.tool.name.to_string(),
                hash,
                reason: QuarantineReason::Schema(e),
            }),
        }
    }
    for (name, mut candidates) in tools {
        if candidates.len() == 1 {
            let entry = candidates.pop().expect("one candidate");
            cat.tool_index.insert(name, cat.tools.len());
            cat.tools.push(Arc::new(entry));
        } else {
            let owners: Vec<String> =
                candidates.iter().map(|c| format!("{}:{}", c.upstream_name, c.upstream_tool)).collect();
            tracing::error!(tool = %name, owners = ?owners, "tool name collision: withheld");
            for c in candidates {
                let others = owners
                    .iter()
                    .filter(|o| **o != format!("{}:{}", c.upstream_name, c.upstream_tool))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                cat.quarantined.push(Quarantined {
                    name: name.clone(),
                    upstream_name: c.upstream_name,
                    upstream_tool: c.upstream_tool,
                    hash: c.hash,
                    reason: QuarantineReason::Collision(others),
                });
            }
        }
    }
    for (name, mut candidates) in prompts {
        if candidates.len() == 1 {
            cat.prompt_index.insert(name, cat.prompts.len());
            cat.prompts.push(candidates.pop().expect("one candidate"));
        } else {
            tracing::error!(prompt = %name, "prompt name collision: withheld");
        }
    }
    for (uri, mut candidates) in resources {
        if candidates.len() == 1 {
            cat.resource_index.insert(uri, cat.resources.len());
            cat.resources.push(candidates.pop().expect("one candidate"));
        } else {
            tracing::error!(uri = %uri, "resource URI offered by several upstreams: withheld");
            cat.withheld_uris.insert(uri);
        }
    }
    cat.templates.sort_by(|a, b| a.template.uri_template.cmp(&b.template.uri_template));
    cat.quarantined.sort_by(|a, b| a.name.cmp(&b.name));
    cat
}

/// The description scan of one tool's definition under its manifest's
/// settings: (findings that quarantine, findings that flag).
type Found = Vec<crate::scan::describe::Finding>;

fn describe(
    tool: &Tool,
    m: &Manifest,
    settings: &ToolOverride,
    others: &[crate::scan::describe::Other<'_>],
) -> (Found, Found) {
    use crate::scan::DescriptionAction as A;
    let d = crate::scan::Settings::resolve(&[m.scans.as_deref(), settings.scans.as_deref()]).descriptions;
    if d.injection == A::Off && d.shadowing == A::Off {
        return (Vec::new(), Vec::new());
    }
    let Ok(json) = serde_json::to_value(tool) else { return (Vec::new(), Vec::new()) };
    let (mut quarantine, mut flag) = (Vec::new(), Vec::new());
    let mut sort = |action: A, found: Found| match action {
        A::Quarantine => quarantine.extend(found),
        A::Flag => flag.extend(found),
        A::Off => {}
    };
    if d.injection != A::Off {
        sort(d.injection, crate::scan::describe::injection(&json));
    }
    if d.shadowing != A::Off {
        sort(d.shadowing, crate::scan::describe::shadowing(&json, &m.name, others));
    }
    (quarantine, flag)
}

pub fn exposed(prefix: &str, separator: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}{separator}{name}") }
}
