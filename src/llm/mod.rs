//! LLM provider calls as one governed tool (`llm__chat` by default).
//!
//! The providers and their models come from `kind = "llm"` manifests. The
//! pipeline treats the tool like any other; what differs is here: what a
//! call holds (a high estimate of its input tokens plus `max_tokens`, at the
//! dearest price of the model and its fallbacks), what it is charged (the
//! usage the provider reports, else an estimate, said so in the audit), and
//! how it executes (`client`).

pub mod chat;
pub mod client;
pub mod price;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Builtin, Target};
use crate::config::{LlmModel, LlmProvider, LlmSettings, ToolOverride};
use crate::money::Micros;
pub use chat::Chat;
pub use client::{Attempt, Outcome, Reply, Sink};
pub use price::Usage;

/// The upstream name LLM calls are recorded under before a provider is chosen.
pub const UPSTREAM: &str = "llm";

/// What a call reserves before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub input_tokens: i64,
    /// Input estimate plus `max_tokens`.
    pub tokens: i64,
    /// Micro-units: the dearest model of the chain at that many tokens.
    pub money: i64,
}

/// What a finished (or broken) call is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub usage: Usage,
    pub money: i64,
    /// False when the provider reported no usage and it was estimated.
    pub reported: bool,
}

/// The providers, their models, and one HTTP client for all of them.
pub struct Llm {
    pub tool: String,
    providers: Vec<LlmProvider>,
    /// Model name → index of its provider.
    models: HashMap<String, usize>,
    http: reqwest::Client,
}

impl Llm {
    pub fn new(settings: &LlmSettings) -> Llm {
        let mut models = HashMap::new();
        for (i, p) in settings.providers.iter().enumerate() {
            if let Some(unset) = &p.unconfigured {
                tracing::warn!(
                    provider = %p.name,
                    "optional LLM provider left unconfigured ({} not set): its models fail over to their fallbacks",
                    unset.join(", ")
                );
            }
            for m in p.models.keys() {
                models.insert(m.clone(), i);
            }
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A provider's redirect is not followed with the key attached.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Llm { tool: settings.tool.clone(), providers: settings.providers.clone(), models, http }
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Every model by the name agents use, with its provider's name, sorted.
    pub fn models(&self) -> Vec<(&str, &str)> {
        let mut out: Vec<(&str, &str)> =
            self.models.iter().map(|(m, i)| (m.as_str(), self.providers[*i].name.as_str())).collect();
        out.sort_unstable();
        out
    }

    fn model(&self, name: &str) -> Option<(&LlmProvider, &LlmModel)> {
        let p = &self.providers[*self.models.get(name)?];
        Some((p, p.models.get(name)?))
    }

    /// The model asked for, then its fallbacks in order (load checked there is no cycle).
    fn chain(&self, name: &str) -> Vec<client::Target<'_>> {
        let mut out: Vec<client::Target<'_>> = Vec::new();
        let mut next = Some(name);
        while let Some(n) = next {
            let Some((provider, model)) = self.model(n) else { break };
            if out.iter().any(|t| t.model.name == model.name) {
                break;
            }
            out.push(client::Target { provider, model });
            next = model.fallback.as_deref();
        }
        out
    }

    /// The chat tool for the catalog; `None` when no provider is configured.
    pub fn builtin(&self) -> Option<Builtin> {
        if self.providers.is_empty() {
            return None;
        }
        let mut names: Vec<String> = self.models.keys().cloned().collect();
        names.sort();
        let risk = self.providers.iter().filter_map(|p| p.risk).max();
        Some(Builtin {
            tool: chat::tool(&self.tool, &names, None),
            upstream_name: Arc::from(UPSTREAM),
            settings: ToolOverride { risk, ..ToolOverride::default() },
            target: Target::Llm,
        })
    }

    /// Fills in `max_tokens` from the model's default when the call names
    /// none, before the grants see the arguments: a grant's bound on
    /// `max_tokens` cannot be stepped around by leaving it out.
    pub fn with_defaults(&self, args: &mut Value) {
        let Some(model) = args.get("model").and_then(Value::as_str).and_then(|m| self.model(m)).map(|(_, m)| m) else {
            return;
        };
        if let Value::Object(map) = args
            && !map.contains_key("max_tokens")
        {
            map.insert("max_tokens".into(), json!(model.max_tokens));
        }
    }

    pub fn estimate(&self, chat: &Chat) -> Result<Estimate, String> {
        let chain = self.chain(&chat.model);
        if chain.is_empty() {
            return Err(format!("`{}` is not a configured model", chat.model));
        }
        let input_tokens = price::input_tokens(chat);
        let worst = Usage { input: input_tokens, output: i64::from(chat.max_tokens) };
        let money =
            chain.iter().map(|t| worst.cost(t.model.input_per_mtok, t.model.output_per_mtok)).max().unwrap_or(0);
        Ok(Estimate { input_tokens, tokens: worst.total(), money })
    }

    /// The longest a call on `model` (retries and fallbacks included) may take.
    pub fn time_bound(&self, model: &str) -> Duration {
        self.chain(model)
            .iter()
            .map(|t| {
                let p = t.provider;
                p.max_duration.saturating_add(p.max_retry_wait).saturating_mul(p.retries.saturating_add(1))
            })
            .fold(Duration::ZERO, Duration::saturating_add)
    }

    /// Whether the prompt and completion of a call on `model` may be audited.
    pub fn records_content(&self, model: Option<&str>) -> bool {
        model.and_then(|m| self.model(m)).is_some_and(|(p, _)| p.record_content)
    }

    pub fn failure_cost(&self, model: &str) -> Option<Micros> {
        self.model(model).and_then(|(p, _)| p.failure_cost)
    }

    /// Runs the call; text goes to `sink` as it arrives when there is one.
    /// `trace` is the W3C trace context sent to the provider.
    pub async fn chat(
        &self,
        chat: &Chat,
        sink: Option<&Sink>,
        trace: &crate::trace::Carrier,
        ct: &CancellationToken,
    ) -> Outcome {
        let chain = self.chain(&chat.model);
        client::run(&self.http, &chain, (chat, trace), sink, ct).await
    }

    /// The charge for what `reply` produced: the provider's usage at the
    /// answering model's prices, or, when it reported none, the estimate
    /// (input as held, output from the text received).
    pub fn meter(&self, chat: &Chat, reply: &Reply) -> Metered {
        let (usage, reported) = match reply.usage {
            Some(u) => (u, true),
            None => {
                let output = price::tokens_of(&reply.text).min(i64::from(chat.max_tokens));
                (Usage { input: price::input_tokens(chat), output }, false)
            }
        };
        let money = self.model(&reply.model).map_or(0, |(_, m)| usage.cost(m.input_per_mtok, m.output_per_mtok));
        Metered { usage, money, reported }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{LlmKind, LlmModel};

    fn provider(name: &str, models: &[(&str, i64, i64, Option<&str>)]) -> LlmProvider {
        let lookup = |_: &str| None;
        LlmProvider {
            file: "x.toml".into(),
            name: name.into(),
            kind: LlmKind::OpenAi,
            base_url: crate::config::secret::resolve("http://127.0.0.1:1", &lookup).unwrap(),
            api_key: None,
            headers: vec![],
            timeout: Duration::from_secs(1),
            max_duration: Duration::from_secs(10),
            retries: 1,
            retry_backoff: Duration::from_millis(1),
            max_retry_wait: Duration::from_secs(1),
            record_content: false,
            risk: None,
            failure_cost: None,
            unconfigured: None,
            models: models
                .iter()
                .map(|(n, i, o, f)| {
                    let m = LlmModel {
                        name: (*n).into(),
                        id: (*n).into(),
                        input_per_mtok: Micros(*i),
                        output_per_mtok: Micros(*o),
                        max_tokens: 100,
                        fallback: f.map(str::to_string),
                    };
                    ((*n).to_string(), m)
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn llm() -> Llm {
        Llm::new(&LlmSettings {
            tool: "llm__chat".into(),
            providers: vec![
                provider("a", &[("cheap", 1_000_000, 2_000_000, Some("dear"))]),
                provider("b", &[("dear", 10_000_000, 20_000_000, None)]),
            ],
        })
    }

    #[test]
    fn the_hold_covers_the_dearest_fallback() {
        let l = llm();
        let chat = Chat::from_arguments(
            &json!({"model": "cheap", "max_tokens": 50, "messages": [{"role": "user", "content": "hello there"}]}),
        )
        .unwrap();
        let e = l.estimate(&chat).unwrap();
        assert_eq!(e.tokens, e.input_tokens + 50);
        let dear = Usage { input: e.input_tokens, output: 50 }.cost(Micros(10_000_000), Micros(20_000_000));
        assert_eq!(e.money, dear);
    }

    #[test]
    fn max_tokens_is_filled_in_before_grants_see_it() {
        let l = llm();
        let mut args = json!({"model": "cheap", "messages": []});
        l.with_defaults(&mut args);
        assert_eq!(args["max_tokens"], 100);
        let mut given = json!({"model": "cheap", "max_tokens": 5});
        l.with_defaults(&mut given);
        assert_eq!(given["max_tokens"], 5);
    }

    #[test]
    fn metering_uses_reported_usage_else_estimates() {
        let l = llm();
        let chat = Chat::from_arguments(
            &json!({"model": "cheap", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .unwrap();
        let reply = |usage| Reply {
            provider: "a".into(),
            model: "cheap".into(),
            text: "abcdef".into(),
            finish_reason: None,
            usage,
        };
        let m = l.meter(&chat, &reply(Some(Usage { input: 3, output: 2 })));
        assert!(m.reported);
        assert_eq!(m.money, 3 + 4);
        let e = l.meter(&chat, &reply(None));
        assert!(!e.reported);
        assert_eq!(e.usage.output, 2);
        assert_eq!(e.usage.input, price::input_tokens(&chat));
    }
}
