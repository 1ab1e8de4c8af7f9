//! What an audit record says. A [`CallRecord`] is filled in stage by stage
//! as a call passes the pipeline and turned into drafts for the chain: an
//! intent before dispatch, an outcome at the end.

use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::identity::Principal;
use crate::ids::{ApprovalId, CallId, HoldId};
use crate::store::AuditDraft;

/// Outcomes of the governed call, as recorded.
pub mod decision {
    pub const ALLOWED: &str = "allowed";
    pub const DENIED: &str = "denied";
    pub const INVALID: &str = "invalid";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const NEEDS_APPROVAL: &str = "needs_approval";
    pub const OVER_BUDGET: &str = "over_budget";
    /// Refused by a content scan of its arguments (a secret, say).
    pub const BLOCKED: &str = "blocked";
}

/// One governed call's record, filled in as it goes.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub call_id: CallId,
    pub ts: i64,
    started: Instant,
    last: Instant,
    pub principal: Option<Principal>,
    pub session: Option<String>,
    pub tool: String,
    pub upstream: Option<String>,
    pub decision: &'static str,
    pub reason: Option<String>,
    pub grants: Vec<String>,
    /// Already redacted.
    pub arguments: Option<Value>,
    pub status: Option<&'static str>,
    pub result_size: Option<usize>,
    pub error: Option<String>,
    pub cost_held: i64,
    pub cost_charged: i64,
    pub hold_id: Option<HoldId>,
    /// Budgets the hold touched.
    pub budgets: Vec<String>,
    pub approval_id: Option<ApprovalId>,
    pub approver: Option<String>,
    /// Microseconds spent in each stage, in order.
    pub stages: Vec<(&'static str, u64)>,
    /// Argument values that are secrets: scrubbed from reasons and errors.
    pub secrets: Vec<String>,
    /// Tokens reserved and charged on token budgets (LLM calls).
    pub tokens_held: i64,
    pub tokens_charged: i64,
    /// An LLM call's model, attempts, usage and sizes.
    pub llm: Option<Value>,
    /// The call's trace context and, when spans are exported, its spans.
    pub trace: crate::trace::CallTrace,
    /// What the content scans found and did (masks stay stable for the call).
    pub scan: crate::scan::CallScan,
    /// Microseconds the edge spent before the call began (see `add_to_stage`).
    before: u64,
}

impl CallRecord {
    /// The requested tool is not in the catalog: keep only its fingerprint.
    /// Texts that quote it (the error an agent is answered with) are scrubbed too.
    pub fn unlisted_tool(&mut self, name: &str) {
        self.tool = unlisted_tool_label(name);
        if !name.is_empty() {
            self.secrets.push(name.to_string());
        }
    }

    pub fn start(tool: &str, session: Option<String>) -> CallRecord {
        let now = Instant::now();
        CallRecord {
            call_id: CallId::random(),
            ts: super::now_micros(),
            started: now,
            last: now,
            principal: None,
            session,
            // The name comes from the agent: an unknown one is recorded, bounded.
            tool: bounded(tool, 256),
            upstream: None,
            decision: decision::DENIED,
            reason: None,
            grants: Vec::new(),
            arguments: None,
            status: None,
            result_size: None,
            error: None,
            cost_held: 0,
            cost_charged: 0,
            hold_id: None,
            budgets: Vec::new(),
            approval_id: None,
            approver: None,
            stages: Vec::with_capacity(10),
            secrets: Vec::new(),
            tokens_held: 0,
            tokens_charged: 0,
            llm: None,
            trace: crate::trace::CallTrace::default(),
            scan: crate::scan::CallScan::new(tool),
            before: 0,
        }
    }

    /// Marks the end of `stage`: the time since the previous mark is its latency.
    pub fn stage(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.stages.push((stage, u64::try_from(now.duration_since(self.last).as_micros()).unwrap_or(u64::MAX)));
        self.last = now;
    }

    /// Adds time spent on `stage` before the call began (at the edge).
    pub fn add_to_stage(&mut self, stage: &'static str, micros: u64) {
        if let Some(s) = self.stages.iter_mut().find(|s| s.0 == stage) {
            s.1 = s.1.saturating_add(micros);
            self.before = self.before.saturating_add(micros);
        }
    }

    /// Wall-clock time the first stage began (at the edge, before the call).
    pub fn wall_start(&self) -> std::time::SystemTime {
        let micros = u64::try_from(self.ts).unwrap_or(0).saturating_sub(self.before);
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros)
    }

    pub fn elapsed_micros(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The intent record: committed before the call is dispatched.
    pub fn intent(&self) -> AuditDraft {
        self.draft("call.intent", Some("dispatched"))
    }

    /// The outcome record: committed before the agent gets the answer.
    pub fn outcome(&self) -> AuditDraft {
        self.draft("call", self.status)
    }

    fn draft(&self, kind: &str, status: Option<&str>) -> AuditDraft {
        let mut f = Map::new();
        f.insert("time".into(), Value::from(super::rfc3339(self.ts)));
        f.insert("call_id".into(), Value::from(self.call_id.to_string()));
        if let Some(p) = &self.principal {
            f.insert("org".into(), Value::from(p.org.clone()));
            f.insert("principal".into(), Value::from(p.to_string()));
            f.insert("team".into(), Value::from(p.team.clone()));
        }
        f.insert("session".into(), self.session.clone().map_or(Value::Null, Value::from));
        f.insert("tool".into(), Value::from(self.tool.clone()));
        f.insert("upstream".into(), self.upstream.clone().map_or(Value::Null, Value::from));
        f.insert("decision".into(), Value::from(self.decision));
        let scrub =
            |t: &Option<String>| t.as_deref().map_or(Value::Null, |t| super::redact::scrub(t, &self.secrets).into());
        f.insert("reason".into(), scrub(&self.reason));
        f.insert("grants".into(), json!(self.grants));
        f.insert("arguments".into(), self.arguments.clone().unwrap_or(Value::Null));
        f.insert("status".into(), status.map_or(Value::Null, Value::from));
        f.insert("result_size".into(), self.result_size.map_or(Value::Null, Value::from));
        f.insert("error".into(), scrub(&self.error));
        f.insert(
            "cost".into(),
            json!({
                "held": crate::money::Micros(self.cost_held).to_string(),
                "charged": crate::money::Micros(self.cost_charged).to_string(),
                "held_micros": self.cost_held,
                "charged_micros": self.cost_charged,
                "tokens_held": self.tokens_held,
                "tokens_charged": self.tokens_charged,
            }),
        );
        if let Some(llm) = &self.llm {
            f.insert("llm".into(), llm.clone());
        }
        if !self.scan.findings.is_empty() {
            f.insert("scans".into(), self.scan.audit());
        }
        f.insert("hold".into(), json!({"id": self.hold_id, "budgets": self.budgets}));
        f.insert("approval".into(), json!({"id": self.approval_id, "approver": self.approver}));
        let stages: Map<String, Value> = self.stages.iter().map(|(s, us)| (s.to_string(), Value::from(*us))).collect();
        f.insert("stages_us".into(), Value::Object(stages));
        f.insert("latency_us".into(), Value::from(self.elapsed_micros()));
        AuditDraft {
            id: uuid::Uuid::new_v4().to_string(),
            ts: super::now_micros(),
            kind: kind.to_string(),
            call_id: Some(self.call_id.to_string()),
            org: self.principal.as_ref().map(|p| p.org.clone()),
            principal: self.principal.as_ref().map(ToString::to_string),
            tool: Some(self.tool.clone()),
            decision: Some(self.decision.to_string()),
            fields: f,
        }
    }
}

/// How the audit names a tool the catalog does not have: the requested name is
/// the caller's free text (it could carry anything, a secret included), so the
/// record keeps only its fingerprint, which an investigator can match against
/// a name they suspect.
pub fn unlisted_tool_label(name: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    format!("(unknown tool sha256:{})", &hex::encode(digest)[..16])
}

/// `text` cut to at most `max` bytes on a character boundary, marked if cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A record of an administrative change (keys, policies): who did what.
pub fn change(kind: &str, org: Option<&str>, actor: &str, detail: Value) -> AuditDraft {
    let ts = super::now_micros();
    let mut f = Map::new();
    f.insert("time".into(), Value::from(super::rfc3339(ts)));
    f.insert("org".into(), org.map_or(Value::Null, Value::from));
    f.insert("actor".into(), Value::from(actor));
    f.insert("detail".into(), super::redact::value(&detail, &[]));
    AuditDraft {
        id: uuid::Uuid::new_v4().to_string(),
        ts,
        kind: kind.to_string(),
        call_id: None,
        org: org.map(str::to_string),
        principal: None,
        tool: None,
        decision: None,
        fields: f,
    }
}
