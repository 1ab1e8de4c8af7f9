//! What the scans do, as configured. One shape, written as a `scans` table
//! in four places; each [`Layer`] sets only what it names, and the most
//! specific layer that names a field wins:
//!
//! built-in defaults < policy files' `[scans]` < manifest `[scans]` <
//! manifest `[tools.<name>.scans]` < the deciding grant's `scans`.
//!
//! ```toml
//! [scans.secrets]            # also pii, injection: any detector by name
//! arguments = "block"        # block | mask | log | off  (injection: block | log | off)
//! results = "mask"           # injection: block | flag | log | off
//! kinds = ["aws_access_key_id", "private_key"]   # only these kinds act
//! [scans.output]
//! max_bytes = 65536          # 0: no limit
//! oversize = "truncate"      # truncate | refuse
//! content_types = ["text", "image/png"]          # block types or MIME patterns
//! other_content = "drop"     # drop | block
//! allowed_urls = ["https://docs.acme.example/*", "*.acme.example"]
//! other_urls = "strip"       # strip | block | log
//! [scans.descriptions]       # manifests only: applied when the catalog is built
//! injection = "quarantine"   # quarantine | flag | off
//! shadowing = "flag"
//! ```

use serde::Serialize;
use serde_json::Value;

use super::detector::{Action, Direction};
use super::registry::{DETECTORS, detector};

/// What a finding in a tool's description does to the tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DescriptionAction {
    Off,
    /// Listed with the tool (catalog, `tollgate tools`) and audited; still callable.
    Flag,
    /// Hidden and uncallable until an admin accepts the definition (as a rug pull).
    Quarantine,
}

impl DescriptionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DescriptionAction::Off => "off",
            DescriptionAction::Flag => "flag",
            DescriptionAction::Quarantine => "quarantine",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    Truncate,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherContent {
    Drop,
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherUrls {
    Strip,
    Block,
    Log,
}

/// Where a `scans` table is written: decides which parts it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Policy,
    Grant,
    Manifest,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorLayer {
    pub arguments: Option<Action>,
    pub results: Option<Action>,
    pub kinds: Option<Vec<&'static str>>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputLayer {
    pub max_bytes: Option<usize>,
    pub oversize: Option<Oversize>,
    pub content_types: Option<Vec<String>>,
    pub other_content: Option<OtherContent>,
    pub allowed_urls: Option<Vec<String>>,
    pub other_urls: Option<OtherUrls>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescriptionLayer {
    pub injection: Option<DescriptionAction>,
    pub shadowing: Option<DescriptionAction>,
}

/// One `scans` table, compiled: only what it names is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// By detector, in the order of [`DETECTORS`].
    pub detectors: Vec<Option<DetectorLayer>>,
    pub output: OutputLayer,
    pub descriptions: DescriptionLayer,
    /// The table as written (rendered back by the admin API).
    pub source: Value,
}

const BLOCK_TYPES: &[&str] = &["text", "image", "audio", "resource", "resource_link"];
const MAX_LIST: usize = 256;

/// Compiles a `scans` table written at `place`; errors are `(field, message)`
/// with fields relative to the table (`secrets.results`).
pub fn compile(v: &Value, place: Place) -> Result<Layer, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut layer = Layer { detectors: vec![None; DETECTORS.len()], source: v.clone(), ..Layer::default() };
    let Some(table) = v.as_object() else {
        return Err(vec![(String::new(), "must be a table".into())]);
    };
    for (name, body) in table {
        let Some(body) = body.as_object() else {
            errors.push((name.clone(), "must be a table".into()));
            continue;
        };
        match name.as_str() {
            "output" => layer.output = output(body, &mut errors),
            "descriptions" if place == Place::Manifest => layer.descriptions = descriptions(body, &mut errors),
            "descriptions" => errors.push((
                name.clone(),
                "tool descriptions are scanned when the catalog is built: configure them in a manifest".into(),
            )),
            other => match detector(other) {
                Some((i, d)) => {
                    let mut dl = DetectorLayer::default();
                    for (field, value) in body {
                        let path = format!("{other}.{field}");
                        match field.as_str() {
                            "arguments" | "results" => {
                                let dir = if field == "arguments" { Direction::Arguments } else { Direction::Results };
                                let allowed: Vec<&str> = ["off", "log"]
                                    .into_iter()
                                    .chain(d.actions(dir).iter().map(|a| a.as_str()))
                                    .collect();
                                match value.as_str().and_then(Action::parse) {
                                    Some(a) if allowed.contains(&a.as_str()) => {
                                        if dir == Direction::Arguments {
                                            dl.arguments = Some(a);
                                        } else {
                                            dl.results = Some(a);
                                        }
                                    }
                                    _ => errors.push((path, format!("must be one of {}", allowed.join(", ")))),
                                }
                            }
                            "kinds" => match value.as_array() {
                                Some(list) if !list.is_empty() && list.len() <= MAX_LIST => {
                                    let mut kinds = Vec::new();
                                    for k in list {
                                        match d.kinds().iter().find(|x| Some(**x) == k.as_str()) {
                                            Some(k) => kinds.push(*k),
                                            None => errors.push((
                                                path.clone(),
                                                format!("{k} is not one of {}", d.kinds().join(", ")),
                                            )),
                                        }
                                    }
                                    dl.kinds = Some(kinds);
                                }
                                _ => errors.push((path, "must be a non-empty list of kinds".into())),
                            },
                            _ => errors.push((path, "unknown field (expected arguments, results or kinds)".into())),
                        }
                    }
                    layer.detectors[i] = Some(dl);
                }
                None => {
                    let mut known: Vec<&str> = DETECTORS.iter().map(|d| d.name()).collect();
                    known.push("output");
                    if place == Place::Manifest {
                        known.push("descriptions");
                    }
                    errors.push((other.to_string(), format!("unknown scan (expected one of {})", known.join(", "))));
                }
            },
        }
    }
    if errors.is_empty() { Ok(layer) } else { Err(errors) }
}

fn choice<T: Copy>(
    body: &serde_json::Map<String, Value>,
    field: &str,
    path: &str,
    options: &[(&str, T)],
    errors: &mut Vec<(String, String)>,
) -> Option<T> {
    let v = body.get(field)?;
    let found = v.as_str().and_then(|s| options.iter().find(|(n, _)| *n == s)).map(|(_, t)| *t);
    if found.is_none() {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        errors.push((format!("{path}.{field}"), format!("must be one of {}", names.join(", "))));
    }
    found
}

fn strings(v: &Value, path: &str, errors: &mut Vec<(String, String)>) -> Option<Vec<String>> {
    let list = v.as_array().filter(|l| l.len() <= MAX_LIST);
    let out: Option<Vec<String>> =
        list.and_then(|l| l.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>());
    if out.is_none() {
        errors.push((path.to_string(), format!("must be a list of at most {MAX_LIST} strings")));
    }
    out
}

fn output(body: &serde_json::Map<String, Value>, errors: &mut Vec<(String, String)>) -> OutputLayer {
    let mut o = OutputLayer::default();
    for field in body.keys() {
        if !["max_bytes", "oversize", "content_types", "other_content", "allowed_urls", "other_urls"]
            .contains(&field.as_str())
        {
            errors.push((format!("output.{field}"), "unknown field".into()));
        }
    }
    if let Some(v) = body.get("max_bytes") {
        match v.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n == 0 || n >= 256 => o.max_bytes = Some(n),
            _ => errors.push(("output.max_bytes".into(), "must be 0 (no limit) or at least 256".into())),
        }
    }
    o.oversize =
        choice(body, "oversize", "output", &[("truncate", Oversize::Truncate), ("refuse", Oversize::Refuse)], errors);
    o.other_content = choice(
        body,
        "other_content",
        "output",
        &[("drop", OtherContent::Drop), ("block", OtherContent::Block)],
        errors,
    );
    o.other_urls = choice(
        body,
        "other_urls",
        "output",
        &[("strip", OtherUrls::Strip), ("block", OtherUrls::Block), ("log", OtherUrls::Log)],
        errors,
    );
    if let Some(v) = body.get("content_types")
        && let Some(list) = strings(v, "output.content_types", errors)
    {
        for t in &list {
            let mime = t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !t.contains(' '));
            if !BLOCK_TYPES.contains(&t.as_str()) && !mime {
                errors.push((
                    "output.content_types".into(),
                    format!("`{t}` is neither a content block type ({}) nor a MIME type", BLOCK_TYPES.join(", ")),
                ));
            }
        }
        o.content_types = Some(list);
    }
    if let Some(v) = body.get("allowed_urls")
        && let Some(list) = strings(v, "output.allowed_urls", errors)
    {
        for u in &list {
            let ok = !u.is_empty()
                && !u.chars().any(char::is_whitespace)
                && (!u.contains("://") || u.starts_with("http://") || u.starts_with("https://"));
            if !ok {
                errors.push((
                    "output.allowed_urls".into(),
                    format!("`{u}` is neither a host (`*.acme.example`) nor an http(s) URL pattern"),
                ));
            }
        }
        o.allowed_urls = Some(list);
    }
    o
}

fn descriptions(body: &serde_json::Map<String, Value>, errors: &mut Vec<(String, String)>) -> DescriptionLayer {
    for field in body.keys() {
        if !["injection", "shadowing"].contains(&field.as_str()) {
            errors.push((format!("descriptions.{field}"), "unknown field (expected injection or shadowing)".into()));
        }
    }
    let opts = [
        ("off", DescriptionAction::Off),
        ("flag", DescriptionAction::Flag),
        ("quarantine", DescriptionAction::Quarantine),
    ];
    DescriptionLayer {
        injection: choice(body, "injection", "descriptions", &opts, errors),
        shadowing: choice(body, "shadowing", "descriptions", &opts, errors),
    }
}

/// A detector's settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub arguments: Action,
    pub results: Action,
    /// `None`: every kind.
    pub kinds: Option<Vec<&'static str>>,
}

impl Resolved {
    pub fn action(&self, direction: Direction) -> Action {
        match direction {
            Direction::Arguments => self.arguments,
            Direction::Results => self.results,
        }
    }

    pub fn acts_on(&self, kind: &str) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub max_bytes: Option<usize>,
    pub oversize: Oversize,
    pub content_types: Option<Vec<String>>,
    pub other_content: OtherContent,
    pub allowed_urls: Option<Vec<String>>,
    pub other_urls: OtherUrls,
}

impl Output {
    pub fn active(&self) -> bool {
        self.max_bytes.is_some() || self.content_types.is_some() || self.allowed_urls.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Descriptions {
    pub injection: DescriptionAction,
    pub shadowing: DescriptionAction,
}

/// The settings in force for one call (or one tool, for descriptions).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub detectors: Vec<Resolved>,
    pub output: Output,
    pub descriptions: Descriptions,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::resolve(&[])
    }
}

impl Settings {
    /// Settings from `layers`, least specific first; built-in defaults below them all.
    pub fn resolve(layers: &[Option<&Layer>]) -> Settings {
        let mut s = Settings {
            detectors: DETECTORS
                .iter()
                .map(|d| Resolved {
                    arguments: d.default_action(Direction::Arguments),
                    results: d.default_action(Direction::Results),
                    kinds: None,
                })
                .collect(),
            output: Output {
                max_bytes: None,
                oversize: Oversize::Truncate,
                content_types: None,
                other_content: OtherContent::Drop,
                allowed_urls: None,
                other_urls: OtherUrls::Strip,
            },
            descriptions: Descriptions { injection: DescriptionAction::Quarantine, shadowing: DescriptionAction::Flag },
        };
        for layer in layers.iter().flatten() {
            for (r, l) in s.detectors.iter_mut().zip(&layer.detectors) {
                let Some(l) = l else { continue };
                r.arguments = l.arguments.unwrap_or(r.arguments);
                r.results = l.results.unwrap_or(r.results);
                if l.kinds.is_some() {
                    r.kinds.clone_from(&l.kinds);
                }
            }
            let (o, l) = (&mut s.output, &layer.output);
            if let Some(n) = l.max_bytes {
                o.max_bytes = (n > 0).then_some(n);
            }
            o.oversize = l.oversize.unwrap_or(o.oversize);
            if l.content_types.is_some() {
                o.content_types.clone_from(&l.content_types);
            }
            o.other_content = l.other_content.unwrap_or(o.other_content);
            if l.allowed_urls.is_some() {
                o.allowed_urls.clone_from(&l.allowed_urls);
            }
            o.other_urls = l.other_urls.unwrap_or(o.other_urls);
            let d = &mut s.descriptions;
            d.injection = layer.descriptions.injection.unwrap_or(d.injection);
            d.shadowing = layer.descriptions.shadowing.unwrap_or(d.shadowing);
        }
        s
    }

    /// The settings as data (`explain --json`).
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (d, r) in DETECTORS.iter().zip(&self.detectors) {
            out.insert(
                d.name().to_string(),
                serde_json::json!({"arguments": r.arguments, "results": r.results, "kinds": r.kinds}),
            );
        }
        let o = &self.output;
        out.insert(
            "output".into(),
            serde_json::json!({
                "max_bytes": o.max_bytes, "oversize": o.oversize, "content_types": o.content_types,
                "other_content": o.other_content, "allowed_urls": o.allowed_urls, "other_urls": o.other_urls,
            }),
        );
        out.insert(
            "descriptions".into(),
            serde_json::json!({"injection": self.descriptions.injection, "shadowing": self.descriptions.shadowing}),
        );
        Value::Object(out)
    }

    /// Whether anything scans in `direction`.
    pub fn active(&self, direction: Direction) -> bool {
        self.detectors.iter().any(|d| d.action(direction) != Action::Off)
            || direction == Direction::Results && self.output.active()
    }

    /// Each setting in force and the layer it comes from, for `explain`.
    /// `layers` are named, least specific first.
    pub fn explain(layers: &[(String, Option<&Layer>)]) -> Vec<String> {
        let only: Vec<Option<&Layer>> = layers.iter().map(|(_, l)| *l).collect();
        let s = Settings::resolve(&only);
        let origin = |pick: &dyn Fn(&Layer) -> bool| {
            layers
                .iter()
                .rev()
                .find(|(_, l)| l.is_some_and(pick))
                .map_or_else(|| "built-in".to_string(), |(n, _)| n.clone())
        };
        let mut out = Vec::new();
        for (i, (d, r)) in DETECTORS.iter().zip(&s.detectors).enumerate() {
            let pick = |f: fn(&DetectorLayer) -> bool| {
                move |l: &Layer| l.detectors.get(i).and_then(Option::as_ref).is_some_and(f)
            };
            let kinds = r.kinds.as_ref().map_or("all kinds".to_string(), |k| k.join(", "));
            out.push(format!(
                "{}: arguments {} ({}), results {} ({}), {} ({})",
                d.name(),
                r.arguments.as_str(),
                origin(&pick(|l| l.arguments.is_some())),
                r.results.as_str(),
                origin(&pick(|l| l.results.is_some())),
                kinds,
                origin(&pick(|l| l.kinds.is_some())),
            ));
        }
        let o = &s.output;
        let limit = o.max_bytes.map_or("no size limit".to_string(), |n| format!("max {n} bytes"));
        let types = o.content_types.as_ref().map_or("any content type".to_string(), |t| t.join(", "));
        let urls = o.allowed_urls.as_ref().map_or("any URL".to_string(), |u| u.join(", "));
        out.push(format!(
            "output: {limit} ({}, {}), {types} (other content: {:?}, {}), {urls} (other URLs: {:?}, {})",
            format!("{:?}", o.oversize).to_lowercase(),
            origin(&|l: &Layer| l.output.max_bytes.is_some() || l.output.oversize.is_some()),
            o.other_content,
            origin(&|l: &Layer| l.output.content_types.is_some() || l.output.other_content.is_some()),
            o.other_urls,
            origin(&|l: &Layer| l.output.allowed_urls.is_some() || l.output.other_urls.is_some()),
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_specific_layer_wins_field_by_field() {
        let policy = compile(&json!({"secrets": {"arguments": "block"}, "output": {"max_bytes": 1000}}), Place::Policy)
            .expect("policy layer");
        let grant = compile(&json!({"secrets": {"results": "log"}, "pii": {"kinds": ["email"]}}), Place::Grant)
            .expect("grant layer");
        let s = Settings::resolve(&[Some(&policy), None, Some(&grant)]);
        assert_eq!(s.detectors[0].arguments, Action::Block);
        assert_eq!(s.detectors[0].results, Action::Log);
        assert_eq!(s.detectors[1].kinds, Some(vec!["email"]));
        assert_eq!(s.detectors[1].results, Action::Mask, "built-in default");
        assert_eq!(s.output.max_bytes, Some(1000));
        let lines = Settings::explain(&[
            ("policy".into(), Some(&policy)),
            ("manifest".into(), None),
            ("grant `g`".into(), Some(&grant)),
        ]);
        assert!(
            lines[0].contains("arguments block (policy)") && lines[0].contains("results log (grant `g`)"),
            "{lines:?}"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = compile(
            &json!({
                "secrets": {"results": "flag", "kinds": ["nope"], "extra": 1},
                "injection": {"arguments": "flag"},
                "output": {"max_bytes": 3, "oversize": "explode", "content_types": ["nope"], "allowed_urls": ["ftp://x"]},
                "descriptions": {"injection": "quarantine"},
                "virus": {}
            }),
            Place::Grant,
        )
        .expect_err("refused");
        let fields: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
        for f in [
            "secrets.results",
            "secrets.kinds",
            "secrets.extra",
            "injection.arguments",
            "output.max_bytes",
            "output.oversize",
            "output.content_types",
            "output.allowed_urls",
            "descriptions",
            "virus",
        ] {
            assert!(fields.contains(&f), "{f} not in {fields:?}");
        }
        assert!(compile(&json!({"descriptions": {"shadowing": "quarantine"}}), Place::Manifest).is_ok());
    }
}
