//! `kind = "llm"` manifests: LLM providers, their models and prices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::error::{Error, Sink};
use super::fields::{is_http_url, opt_duration, valid_upstream_name};
use super::{LlmKind, LlmModel, LlmProvider, Risk, raw, secret};
use crate::money::Micros;

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(600);
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_TOKENS: u64 = 1024;
/// Above any model's output window today; a bound on what one call may hold.
const MAX_MAX_TOKENS: u64 = 1_000_000;

pub(super) fn compile(raw: raw::LlmManifest, file: &Path, env: Lookup<'_>, sink: &mut Sink<'_>) -> Option<LlmProvider> {
    let before = sink.count();
    let name = raw.name.get_ref().clone();
    if !valid_upstream_name(&name) {
        sink.at(Some(raw.name.span()), "name", "must be 1 to 64 letters, digits, `_` or `-`");
    }
    let kind = match raw.provider.get_ref().as_str() {
        "openai" => LlmKind::OpenAi,
        "anthropic" => LlmKind::Anthropic,
        other => {
            sink.at(Some(raw.provider.span()), "provider", format!("`{other}` is not one of openai, anthropic"));
            LlmKind::OpenAi
        }
    };
    let default_url = match kind {
        LlmKind::OpenAi => "https://api.openai.com/v1",
        LlmKind::Anthropic => "https://api.anthropic.com",
    };
    let base_url = match &raw.base_url {
        Some(u) => match secret::resolve(u.get_ref(), env) {
            Ok(s) => {
                let text = s.expose();
                if !is_http_url(text) {
                    sink.at(Some(u.span()), "base_url", "must be an http:// or https:// URL");
                }
                s
            }
            Err(e) => {
                sink.at(Some(u.span()), "base_url", e);
                secret::resolve(default_url, env).ok()?
            }
        },
        None => secret::resolve(default_url, env).ok()?,
    };
    // An optional provider without its credentials loads unconfigured
    // rather than failing the whole deployment over one absent key.
    let unset: Vec<String> = raw
        .api_key
        .iter()
        .chain(raw.headers.iter().flat_map(|h| h.values()))
        .flat_map(|t| secret::unset(t.get_ref(), env))
        .collect();
    let unconfigured = (raw.optional && !unset.is_empty()).then_some(unset);
    let none = |_: &str| Some(String::new());
    let cred_env: Lookup<'_> = if unconfigured.is_some() { &none } else { env };
    let api_key = raw.api_key.as_ref().filter(|_| unconfigured.is_none()).and_then(|k| {
        if !secret::has_reference(k.get_ref()) {
            sink.at(Some(k.span()), "api_key", "give the key as a `${env:NAME}` reference, never inline");
            return None;
        }
        secret::resolve(k.get_ref(), env).map_err(|e| sink.at(Some(k.span()), "api_key", e)).ok()
    });
    let headers = secret::resolve_pairs(raw.headers, "headers", cred_env, sink);
    let retries = match &raw.retries {
        Some(n) if *n.get_ref() > 10 => {
            sink.at(Some(n.span()), "retries", "must be at most 10");
            0
        }
        Some(n) => u32::try_from(*n.get_ref()).unwrap_or(0),
        None => 2,
    };
    let risk = raw.risk.as_ref().and_then(|r| match r.get_ref().as_str() {
        "low" => Some(Risk::Low),
        "medium" => Some(Risk::Medium),
        "high" => Some(Risk::High),
        other => {
            sink.at(Some(r.span()), "risk", format!("`{other}` is not one of low, medium, high"));
            None
        }
    });
    let failure_cost = raw
        .failure_cost
        .as_ref()
        .and_then(|c| Micros::parse(c.get_ref()).map_err(|e| sink.at(Some(c.span()), "failure_cost", e)).ok());
    if raw.models.is_empty() {
        sink.at(None, "models", "name at least one model, with its prices ([models.<name>])");
    }
    let mut models = BTreeMap::new();
    for (model, spanned) in raw.models {
        let span = spanned.span();
        let m = spanned.into_inner();
        let field = |f: &str| format!("models.{model}.{f}");
        if model.is_empty() || model.len() > 128 || model.chars().any(|c| c.is_control() || c.is_whitespace()) {
            sink.at(Some(span.clone()), format!("models.{model}"), "a model name must be 1 to 128 visible characters");
        }
        let mut price = |v: &Spanned<toml::Value>, f: &str| -> Micros {
            let text = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(x) => x.to_string(),
                _ => {
                    sink.at(Some(v.span()), field(f), "must be a price like \"0.15\" (per million tokens)");
                    return Micros::ZERO;
                }
            };
            Micros::parse(&text).unwrap_or_else(|e| {
                sink.at(Some(v.span()), field(f), e);
                Micros::ZERO
            })
        };
        let input_per_mtok = price(&m.input_per_mtok, "input_per_mtok");
        let output_per_mtok = price(&m.output_per_mtok, "output_per_mtok");
        let max_tokens = match &m.max_tokens {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > MAX_MAX_TOKENS => {
                sink.at(Some(n.span()), field("max_tokens"), format!("must be between 1 and {MAX_MAX_TOKENS}"));
                DEFAULT_MAX_TOKENS
            }
            Some(n) => *n.get_ref(),
            None => DEFAULT_MAX_TOKENS,
        };
        let id = m.id.as_ref().map_or_else(|| model.clone(), |i| i.get_ref().clone());
        models.insert(
            model.clone(),
            LlmModel {
                name: model.clone(),
                id,
                input_per_mtok,
                output_per_mtok,
                max_tokens: u32::try_from(max_tokens).unwrap_or(u32::MAX),
                fallback: m.fallback.map(Spanned::into_inner),
            },
        );
    }
    let provider = LlmProvider {
        file: file.to_path_buf(),
        name,
        kind,
        base_url,
        api_key,
        headers,
        timeout: opt_duration(&raw.timeout, "timeout", sink).unwrap_or(DEFAULT_TIMEOUT),
        max_duration: opt_duration(&raw.max_duration, "max_duration", sink).unwrap_or(DEFAULT_MAX_DURATION),
        retries,
        retry_backoff: opt_duration(&raw.retry_backoff, "retry_backoff", sink).unwrap_or(DEFAULT_BACKOFF),
        max_retry_wait: opt_duration(&raw.max_retry_wait, "max_retry_wait", sink).unwrap_or(DEFAULT_MAX_RETRY_WAIT),
        record_content: raw.record_content,
        risk,
        failure_cost,
        unconfigured,
        models,
    };
    (sink.count() == before).then_some(provider)
}

/// Checks across providers: model names are unique, and fallbacks name
/// known models without a cycle.
pub(super) fn check_models(providers: &[LlmProvider], errors: &mut Vec<Error>) {
    let mut owner: HashMap<&str, &LlmProvider> = HashMap::new();
    for p in providers {
        for m in p.models.keys() {
            if let Some(other) = owner.insert(m, p) {
                errors.push(Error {
                    file: p.file.clone(),
                    line: None,
                    field: format!("models.{m}"),
                    message: format!(
                        "model `{m}` is also offered by provider `{}` ({})",
                        other.name,
                        other.file.display()
                    ),
                });
            }
        }
    }
    for p in providers {
        for m in p.models.values() {
            let mut seen = HashSet::from([m.name.as_str()]);
            let mut next = m.fallback.as_deref();
            while let Some(f) = next {
                let Some(target) = owner.get(f).and_then(|q| q.models.get(f)) else {
                    errors.push(Error {
                        file: p.file.clone(),
                        line: None,
                        field: format!("models.{}.fallback", m.name),
                        message: format!("`{f}` is not a model of any llm manifest"),
                    });
                    break;
                };
                if !seen.insert(f) {
                    errors.push(Error {
                        file: p.file.clone(),
                        line: None,
                        field: format!("models.{}.fallback", m.name),
                        message: format!("fallbacks loop back to `{f}`"),
                    });
                    break;
                }
                next = target.fallback.as_deref();
            }
        }
    }
}
