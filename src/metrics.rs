//! Prometheus metrics. Calls and stage latencies are counted as calls
//! conclude; budget use, pending approvals, upstream health and policy
//! state are read from their owners when `/metrics` is scraped, so they
//! are never stale and cost nothing between scrapes.
//!
//! Label values are bounded: a tool label is a catalog name (calls of
//! unknown tools count under `(unknown)`), so agents cannot grow the series
//! set by inventing names.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    pub budget: String,
    pub org: String,
    pub unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrgLabels {
    pub org: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

/// The label of calls to tools not in the catalog.
pub const UNKNOWN_TOOL: &str = "(unknown)";

fn stage_histogram() -> Histogram {
    // 10 µs to ~5 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    stages: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub budget_limit: Family<BudgetLabels, Gauge>,
    pub budget_spent: Family<BudgetLabels, Gauge>,
    pub budget_held: Family<BudgetLabels, Gauge>,
    pub approvals_pending: Family<OrgLabels, Gauge>,
    pub upstream_up: Family<UpstreamLabels, Gauge>,
    pub upstream_restarts: Family<UpstreamLabels, Gauge>,
    pub policy_version: Gauge,
    pub policy_reload_failed: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Governed tool calls by tool and decision", calls.clone());
        let stages = Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(stage_histogram);
        registry.register("stage_duration_seconds", "Time spent in each stage of the governed call", stages.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let f = Family::<BudgetLabels, Gauge>::default();
            registry.register(name, help, f.clone());
            f
        };
        let budget_limit =
            gauge(&mut registry, "budget_limit", "Budget limit in its unit (micro-units of money, or tokens)");
        let budget_spent = gauge(&mut registry, "budget_spent", "Charged in the budget's current period");
        let budget_held = gauge(&mut registry, "budget_held", "Reserved by open holds in the budget's current period");
        let approvals_pending = Family::<OrgLabels, Gauge>::default();
        registry.register("approvals_pending", "Actions waiting for a decision", approvals_pending.clone());
        let upstream_up = Family::<UpstreamLabels, Gauge>::default();
        registry.register("upstream_up", "1 when the upstream is connected, else 0", upstream_up.clone());
        let upstream_restarts = Family::<UpstreamLabels, Gauge>::default();
        registry.register("upstream_restarts", "Connections made after the first", upstream_restarts.clone());
        let policy_version = Gauge::default();
        registry.register("policy_version", "Increases with every policy put in force", policy_version.clone());
        let policy_reload_failed = Gauge::default();
        registry.register(
            "policy_reload_failed",
            "1 when the last policy reload was refused (the previous policy is in force)",
            policy_reload_failed.clone(),
        );
        Metrics {
            registry,
            calls,
            stages,
            budget_limit,
            budget_spent,
            budget_held,
            approvals_pending,
            upstream_up,
            upstream_restarts,
            policy_version,
            policy_reload_failed,
        }
    }
}

impl Metrics {
    /// Counts one concluded call and its stage latencies.
    pub fn call(&self, tool: &str, decision: &'static str, stages: &[(&'static str, u64)]) {
        // Static labels: a stage observation allocates nothing on the call path.
        self.calls.get_or_create(&CallLabels { tool: tool.to_string(), decision }).inc();
        for (stage, micros) in stages {
            self.stages.get_or_create(&StageLabels { stage }).observe(*micros as f64 / 1e6);
        }
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}
