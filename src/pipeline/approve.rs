//! The approve stage: a call whose grant says `approve` (or whose cost is
//! above the grant's `approve_above`) becomes a pending action and waits for
//! a decision, the way its client can wait:
//!
//! - a client that declares the tasks extension gets a task at once, and an
//!   approved task runs in the background ([`run_task`]);
//! - any other call waits open for up to `approval.wait`, with progress
//!   notifications, and is then answered "pending"; the same call (same
//!   principal, tool, argument digest and tool definition) repeated later
//!   resumes the action: it waits again, runs once approved, or says why not.
//!
//! An approved action runs exactly once: its execution is claimed in the
//! store by one caller; every other caller gets the stored result.

use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, InputRequest, InputRequests,
    InputRequiredResult, ProgressNotificationParam,
};
use serde_json::{Value, json};

use super::admit::Admitted;
use super::execute;
use super::hold::over_budget;
use super::outcome::{Outcome, Refusal, Waiting};
use super::permit::{Dispatch, Permit};
use super::via::Via;
use crate::approval::{Execution, Mode, Status};
use crate::approval::{Verdict, task};
use crate::audit::CallRecord;
use crate::audit::record::decision;
use crate::budget::{Ask, Held, Hold};
use crate::gateway::Gateway;
use crate::identity::Principal;
use crate::ids::ApprovalId;
use crate::policy::{Effect, PAGE_ROUTE};
use crate::store::{ApprovalRow, StoreError};

/// How long after an approved action ran a repeat of its call gets the same
/// result back (an agent retrying a call whose answer it lost) rather than
/// asking for a new approval.
const REPLAY_WINDOW: Duration = Duration::from_secs(60);

fn replay_since() -> i64 {
    crate::audit::now_micros() - micros(REPLAY_WINDOW)
}

/// How often a waiting call tells its agent it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where the approve stage leaves a call.
pub(super) enum Next {
    /// An approved action this process claimed: run it, then store its
    /// result on the action.
    Run { permit: Permit, action: ApprovalId },
    /// The action already ran: its stored result, answered again.
    Replayed(Outcome),
    /// The call ends here: refused, or waiting for a person.
    End(Outcome),
}

pub(super) async fn stage(gw: &Gateway, rec: &mut CallRecord, a: Admitted, via: &Via) -> Next {
    let digest = digest_of(&a.arguments);
    let tasks = via.supports_tasks();
    rec.decision = decision::NEEDS_APPROVAL;

    // The retry of a 2026-07-28 agent whose user answered our question.
    if let Some(id) = a.params.request_state.as_deref().and_then(|s| s.strip_prefix(USER_STATE_PREFIX)) {
        let id = id.to_string();
        return answered(gw, rec, &id, &digest, a, via).await;
    }

    // The same call again: resume its action.
    match action_for_call(gw, &a, &digest).await {
        Ok(Some(row)) => return resume(gw, rec, row, tasks, a, via).await,
        Ok(None) => {}
        Err(e) => return unavailable(rec, "approval", &e),
    }
    let row = match open_action(gw, rec, &a, &digest, tasks).await {
        Ok(Opened::New(row)) => row,
        Ok(Opened::Joined(row)) => return resume(gw, rec, row, tasks, a, via).await,
        Err(end) => return end,
    };
    if tasks {
        return Next::End(Outcome::Waiting(Waiting::Task(task::created(&row))));
    }
    let policy = gw.policies.current();
    let ask_user = policy.route(&row.route).is_some_and(|r| r.user) && via.can_elicit();
    let Some(ctx) = via.mcp().filter(|_| ask_user) else {
        return follow(gw, rec, row, a, via).await;
    };
    let question = user_question(&row);
    if via.is_modern() {
        // 2026-07-28: an input_required result; the retry carries the answer.
        let requests: InputRequests = [(USER_KEY.to_string(), question)].into_iter().collect();
        let state = format!("{USER_STATE_PREFIX}{}", row.id);
        return Next::End(Outcome::Waiting(Waiting::Question(InputRequiredResult::new(Some(requests), Some(state)))));
    }
    // 2025-11-25: asked on the agent's session, within the call.
    let answer = tokio::time::timeout(gw.approvals.settings().wait, super::bridge::answer(ctx, question)).await;
    if let Ok(Ok(answer)) = answer
        && let Err(e) = apply_user_answer(gw, &row, &a.principal, Some(answer)).await
    {
        return unavailable(rec, "approval", &e);
    }
    let row = match gw.approvals.get(&row.id).await {
        Ok(Some(r)) => r,
        Ok(None) => row,
        Err(e) => return unavailable(rec, "approval", &e),
    };
    follow(gw, rec, row, a, via).await
}

/// The retry that carries the agent's user's answer to tollgate's question
/// about action `id`.
async fn answered(gw: &Gateway, rec: &mut CallRecord, id: &str, digest: &str, a: Admitted, via: &Via) -> Next {
    let row = match gw.approvals.get(&ApprovalId::from(id)).await {
        Ok(r) => r,
        Err(e) => return unavailable(rec, "approval", &e),
    };
    // The state names an action; it counts only for the exact call it was asked for.
    let Some(row) = row.filter(|r| {
        r.principal == a.principal.key_id && r.tool == a.entry.name && r.digest == digest && r.tool_hash == a.entry.hash
    }) else {
        rec.stage("approve");
        let text = "this answer belongs to an approval that is unknown or not this call's; call the tool again";
        return Next::End(Outcome::Refused(Refusal::Denied(text.into())));
    };
    // Only a route that asks the agent's user takes an answer from the
    // agent's client: anywhere else it would be the agent approving itself.
    let user_route = gw.policies.current().route(&row.route).is_some_and(|r| r.user);
    let answer = a.params.input_responses.as_ref().and_then(|r| r.get(USER_KEY)).cloned().filter(|_| user_route);
    if let Err(e) = apply_user_answer(gw, &row, &a.principal, answer).await {
        return unavailable(rec, "approval", &e);
    }
    let row = match gw.approvals.get(&row.id).await {
        Ok(Some(r)) => r,
        Ok(None) => row,
        Err(e) => return unavailable(rec, "approval", &e),
    };
    resume(gw, rec, row, false, a, via).await
}

enum Opened {
    New(ApprovalRow),
    /// The same call, made concurrently, opened the action first.
    Joined(ApprovalRow),
}

/// Opens the pending action: its hold, taken now for the action's whole
/// life (its expiry, then the call), and its row, which notifies the route.
async fn open_action(
    gw: &Gateway,
    rec: &mut CallRecord,
    a: &Admitted,
    digest: &str,
    tasks: bool,
) -> Result<Opened, Next> {
    let settings = gw.approvals.settings();
    let route_id = a.grant.approval.as_ref().and_then(|x| x.route.clone()).unwrap_or_else(|| PAGE_ROUTE.into());
    let timeout = a.grant.approval.as_ref().and_then(|x| x.timeout).unwrap_or(settings.timeout);
    let webhooks: Vec<String> = gw
        .policies
        .current()
        .route(&route_id)
        .map(|r| r.webhooks.iter().map(|w| w.url.clone()).collect())
        .unwrap_or_default();
    let now = crate::audit::now_micros();
    let hold_ttl = timeout.saturating_add(a.call_ttl);
    let hold = hold_action(gw, rec, a, hold_ttl).await?;
    let why = match a.decided.effect {
        Effect::Approve => format!("grant `{}` requires approval", a.grant.id),
        _ => format!(
            "the call costs {}, above the {} grant `{}` allows without approval",
            crate::money::Micros(a.cost),
            a.grant.approve_above.unwrap_or_default(),
            a.grant.id
        ),
    };
    let expires_at = now.saturating_add(micros(timeout));
    let row = pending_row(
        rec,
        a,
        Pending { digest: digest.to_string(), route: route_id, why: why.clone(), hold: &hold, tasks, now, expires_at },
    );
    let created = gw.approvals.create(row, now.saturating_add(micros(hold_ttl)), webhooks).await;
    if !matches!(created, Ok(Some(_)))
        && let Some(h) = &hold
        && let Err(e) = gw.ledger.settle(h, 0, 0, None).await
    {
        tracing::warn!(hold = %h.id, "hold of an unstored approval not released (it will expire): {e}");
    }
    match created {
        Ok(Some(row)) => {
            rec.approval_id = Some(row.id.clone());
            rec.reason = Some(format!("{why}; pending action {}", row.id));
            rec.stage("approve");
            Ok(Opened::New(row))
        }
        // The same call, made concurrently, opened the action first: join it.
        Ok(None) => join(gw, rec, a, digest).await,
        Err(e) => Err(unavailable(rec, "approval", &e)),
    }
}

/// The open action (or one that ran moments ago) bound to exactly this
/// call: key, tool, argument digest and tool definition.
async fn action_for_call(gw: &Gateway, a: &Admitted, digest: &str) -> Result<Option<ApprovalRow>, StoreError> {
    gw.approvals
        .store()
        .approval_for_call(&a.principal.key_id, &a.entry.name, digest, &a.entry.hash, replay_since())
        .await
}

/// What a pending action is made of, besides the call.
struct Pending<'a> {
    digest: String,
    route: String,
    why: String,
    hold: &'a Option<Hold>,
    tasks: bool,
    now: i64,
    expires_at: i64,
}

/// The action's row, as stored.
fn pending_row(rec: &CallRecord, a: &Admitted, p: Pending<'_>) -> ApprovalRow {
    ApprovalRow {
        id: ApprovalId::random(),
        org: a.principal.org.clone(),
        principal: a.principal.key_id.clone(),
        principal_label: a.principal.to_string(),
        team: a.principal.team.clone(),
        tool: a.entry.name.clone(),
        upstream: Some(a.entry.upstream_name.to_string()),
        arguments: Some(serde_json::to_string(&a.arguments).unwrap_or_default()),
        arguments_redacted: rec.arguments.as_ref().map(Value::to_string).unwrap_or_else(|| "null".into()),
        digest: p.digest,
        tool_hash: a.entry.hash.clone(),
        grant_id: Some(a.grant.id.clone()),
        route: p.route,
        reason: p.why,
        risk: a.entry.settings.risk.map(|r| format!("{r:?}").to_lowercase()),
        cost: a.cost,
        hold_id: p.hold.as_ref().map(|h| h.id.clone()),
        call_id: rec.call_id.clone(),
        mode: if p.tasks { Mode::Task } else { Mode::Wait },
        status: Status::Pending,
        created_at: p.now,
        expires_at: p.expires_at,
        decided_at: None,
        decided_by: None,
        decision_reason: None,
        execution: Execution::None,
        claimed_by: None,
        result: None,
        reported: false,
        rev: 0,
        updated_at: p.now,
    }
}

/// Joins the action a concurrent twin of this call opened.
async fn join(gw: &Gateway, rec: &mut CallRecord, a: &Admitted, digest: &str) -> Result<Opened, Next> {
    rec.hold_id = None;
    rec.cost_held = 0;
    rec.budgets = Vec::new();
    match action_for_call(gw, a, digest).await {
        Ok(Some(row)) => Ok(Opened::Joined(row)),
        Ok(None) => {
            let e = StoreError::Unavailable("the open action for this call vanished".into());
            Err(unavailable(rec, "approval", &e))
        }
        Err(e) => Err(unavailable(rec, "approval", &e)),
    }
}

/// The action's hold, on every budget of the caller, all or nothing.
async fn hold_action(gw: &Gateway, rec: &mut CallRecord, a: &Admitted, ttl: Duration) -> Result<Option<Hold>, Next> {
    let hold = if a.cost > 0 || a.tokens > 0 {
        let ask = Ask {
            principal: &a.principal,
            call_id: &rec.call_id,
            tool: &a.entry.name,
            money: a.cost,
            tokens: a.tokens,
            ttl,
        };
        match gw.ledger.hold(ask, None).await {
            Ok(Held::Free) => None,
            Ok(Held::Held(h)) => Some(h),
            Ok(Held::Denied { budget_id, unit, remaining, needed }) => {
                let refused = over_budget(rec, &a.entry.name, (budget_id, unit, remaining, needed));
                return Err(Next::End(Outcome::Refused(refused)));
            }
            Err(e) => return Err(unavailable(rec, "budget", &e)),
        }
    } else {
        None
    };
    if let Some(h) = &hold {
        rec.hold_id = Some(h.id.clone());
        rec.cost_held = h.money;
        rec.tokens_held = h.tokens;
        rec.budgets = h.budget_ids();
    }
    rec.stage("hold");
    Ok(hold)
}

/// The key of tollgate's question in `inputRequests`, and the prefix of the
/// `requestState` naming the action it is about.
const USER_KEY: &str = "tollgate-approval";
const USER_STATE_PREFIX: &str = "tollgate-approval:";

/// The form asking the agent's user to approve the call.
fn user_question(row: &ApprovalRow) -> InputRequest {
    let message = format!(
        "Approve this call?\n\ntool: {}\narguments: {}\nestimated cost: {}\nwhy asked: {}",
        row.tool,
        crate::audit::record::bounded(&row.arguments_redacted, 2000),
        crate::money::Micros(row.cost),
        row.reason
    );
    let request = json!({
        "method": "elicitation/create",
        "params": {
            "mode": "form",
            "message": message,
            "requestedSchema": {
                "type": "object",
                "properties": {
                    "approve": {"type": "boolean", "title": "Approve", "default": true},
                    "reason": {"type": "string", "title": "Reason"}
                }
            }
        }
    });
    serde_json::from_value(request).unwrap_or_else(|e| unreachable!("a well-formed elicitation request: {e}"))
}

/// Decides the action by the user's answer: accept (without `approve:
/// false`) approves, decline or `approve: false` denies, cancel or no
/// answer leaves it pending for other approvers.
async fn apply_user_answer(
    gw: &Gateway,
    row: &ApprovalRow,
    principal: &Principal,
    answer: Option<Value>,
) -> Result<(), StoreError> {
    let Some(answer) = answer else { return Ok(()) };
    let content = answer.get("content").cloned().unwrap_or_default();
    let reason = content.get("reason").and_then(Value::as_str).map(str::to_string);
    let verdict = match answer.get("action").and_then(Value::as_str) {
        Some("accept") if content.get("approve") == Some(&Value::Bool(false)) => Verdict::Deny,
        Some("accept") => Verdict::Approve,
        Some("decline") => Verdict::Deny,
        _ => return Ok(()),
    };
    let by = format!("user ({principal})");
    gw.approvals.decide(&row.id, verdict, &by, reason).await.map(|_| ())
}

/// The same call again, while its action is open: a task client gets its
/// task back, any other call follows the action.
async fn resume(gw: &Gateway, rec: &mut CallRecord, row: ApprovalRow, tasks: bool, a: Admitted, via: &Via) -> Next {
    rec.approval_id = Some(row.id.clone());
    rec.hold_id = row.hold_id.clone();
    rec.cost_held = row.cost;
    rec.reason = Some(format!("resumes pending action {}", row.id));
    rec.stage("approve");
    if tasks && row.mode == Mode::Task {
        return Next::End(Outcome::Waiting(Waiting::Task(task::created(&row))));
    }
    follow(gw, rec, row, a, via).await
}

/// Takes an action wherever it stands: waits while pending, runs it once
/// approved, and reports a refusal or a result already produced.
async fn follow(gw: &Gateway, rec: &mut CallRecord, mut row: ApprovalRow, a: Admitted, via: &Via) -> Next {
    let deadline = tokio::time::Instant::now() + gw.approvals.settings().wait;
    let ct = via.ct();
    let mut progress = Progress { token: via.progress_token(), peer: via.mcp().map(|c| c.peer.clone()), n: 0.0 };
    loop {
        match (row.status, row.execution) {
            (Status::Approved, Execution::None) => match gw.approvals.claim(&row.id).await {
                Ok(Some(claimed)) => return claimed_action(gw, rec, claimed, a).await,
                // Someone else claimed it first: wait for their result.
                Ok(None) => {}
                Err(e) => return unavailable(rec, "approval", &e),
            },
            (Status::Approved, Execution::Done) => {
                let _ = gw.approvals.mark_reported(&row.id).await;
                rec.decision = decision::ALLOWED;
                rec.approver = row.decided_by.clone();
                rec.reason = Some(format!("action {} already ran; its result is returned again", row.id));
                rec.stage("approve");
                return Next::Replayed(stored(&row));
            }
            (Status::Pending | Status::Approved, _) => {}
            _ => {
                let _ = gw.approvals.mark_reported(&row.id).await;
                rec.approver = row.decided_by.clone();
                return Next::End(Outcome::Refused(super::admit::refuse(
                    rec,
                    "approve",
                    Refusal::Denied(task::refusal(&row)),
                )));
            }
        }
        if tokio::time::Instant::now() >= deadline || ct.is_cancelled() {
            break;
        }
        let seen = row.rev;
        let waited = gw
            .approvals
            .wait(&row.id, |r| r.rev > seen && changed_enough(r), deadline, &ct, PROGRESS_EVERY, |r| progress.tick(r))
            .await;
        match waited {
            Ok(Some(r)) => row = r,
            // Not a refusal: the call stays recorded as waiting for approval.
            Ok(None) => {
                return Next::End(Outcome::Ran(Err(McpError::internal_error("the pending action is gone", None))));
            }
            Err(e) => return unavailable(rec, "approval", &e),
        }
    }
    // Still undecided: the agent is told, and may repeat the call to resume.
    rec.stage("approve");
    let text = if row.status == Status::Approved {
        format!(
            "call to {} was approved and is running (action {}); call it again with the same arguments for its result",
            row.tool, row.id
        )
    } else {
        format!(
            "call to {} is waiting for approval (action {}, route `{}`, expires {}). It has not run. \
             Call the tool again with exactly the same arguments to resume: it runs once approved.",
            row.tool,
            row.id,
            row.route,
            crate::audit::rfc3339(row.expires_at)
        )
    };
    let expires_at = crate::audit::rfc3339(row.expires_at);
    Next::End(Outcome::Waiting(Waiting::Pending { text, approval_id: row.id, expires_at }))
}

/// Progress notifications to an agent that waits on an action.
struct Progress {
    token: Option<rmcp::model::ProgressToken>,
    peer: Option<rmcp::Peer<rmcp::RoleServer>>,
    n: f64,
}

impl Progress {
    fn tick(&mut self, r: &ApprovalRow) {
        if let (Some(t), Some(peer)) = (&self.token, &self.peer) {
            self.n += 1.0;
            let mut n = ProgressNotificationParam::new(t.clone(), self.n);
            n.message = Some(format!("awaiting approval {} ({})", r.id, r.status));
            let peer = peer.clone();
            tokio::spawn(async move {
                let _ = peer.notify_progress(n).await;
            });
        }
    }
}

/// A change a waiting call acts on: decided, or its execution moved.
fn changed_enough(r: &ApprovalRow) -> bool {
    r.status != Status::Pending && !(r.status == Status::Approved && r.execution == Execution::Running)
}

/// A claimed action, for the call that asked for it: its intent is durable
/// before its permit is handed out.
async fn claimed_action(gw: &Gateway, rec: &mut CallRecord, row: ApprovalRow, a: Admitted) -> Next {
    rec.decision = decision::ALLOWED;
    rec.approver = row.decided_by.clone();
    rec.reason =
        Some(format!("approved by {} (action {})", row.decided_by.as_deref().unwrap_or("an approver"), row.id));
    rec.stage("approve");
    if let Err(e) = gw.journal.audit(rec.intent()).await {
        tracing::error!(call = %rec.call_id, "approved call not run, its intent could not be audited: {e}");
        let _ = gw
            .approvals
            .finish(&row.id, &json!({"error": {"code": -32603, "message": "not run: audit unavailable"}}), true)
            .await;
        return Next::End(Outcome::Refused(Refusal::Unrecorded(format!("call not run: {e}"))));
    }
    let mut params = a.params;
    if params.request_state.as_deref().is_some_and(|s| s.starts_with(USER_STATE_PREFIX)) {
        // The answer to tollgate's own question is not the upstream's business.
        params.request_state = None;
        params.input_responses = None;
    }
    let dispatch = Dispatch { params, arguments: a.arguments, hold: hold_of(&row), cost: a.cost };
    match Permit::approved(&row, &a.entry, dispatch) {
        Some(permit) => Next::Run { permit, action: row.id },
        None => Next::End(Outcome::Refused(Refusal::Failed("the approved action is not this call's".into()))),
    }
}

/// Stores what an approved action's call produced, for repeats of the call.
pub(super) async fn store_result(gw: &Gateway, action: &ApprovalId, outcome: &Outcome) {
    let stored = match outcome {
        Outcome::Ran(Ok(CallToolResponse::Complete(r))) => json!({"result": r}),
        Outcome::Ran(Err(e)) => json!({"error": e}),
        _ => json!({"error": {"code": -32603, "message": "the approved call asked for input; call it again"}}),
    };
    if let Err(e) = gw.approvals.finish(action, &stored, true).await {
        tracing::error!(approval = %action, "approved call's result not stored: {e}");
    }
}

/// The result an approved action produced.
fn stored(row: &ApprovalRow) -> Outcome {
    Outcome::Ran(match task::stored_outcome(row) {
        task::Outcome::Result(r) => match serde_json::from_value::<CallToolResult>(Value::Object(r)) {
            Ok(r) => Ok(CallToolResponse::Complete(r)),
            Err(e) => Err(McpError::internal_error(format!("stored result unreadable: {e}"), None)),
        },
        task::Outcome::Error(e) => Err(serde_json::from_value::<McpError>(Value::Object(e))
            .unwrap_or_else(|_| McpError::internal_error("the approved call failed", None))),
    })
}

/// Fail closed: a call whose approval cannot be stored or read does not run.
fn unavailable(rec: &mut CallRecord, what: &str, e: &StoreError) -> Next {
    tracing::error!(call = %rec.call_id, "{what} store failed: {e}");
    rec.reason = Some(format!("{what} store failed: {e}"));
    rec.stage("approve");
    let text = format!("the {what} store is unavailable; the call was not run");
    Next::End(Outcome::Refused(Refusal::Failed(text)))
}

/// The hold an action took when it was asked for (settled by whoever runs it).
fn hold_of(row: &ApprovalRow) -> Option<Hold> {
    row.hold_id.as_ref().map(|id| Hold { id: id.clone(), money: row.cost, tokens: 0, lines: Vec::new() })
}

fn digest_of(arguments: &Value) -> String {
    crate::approval::digest(arguments)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Runs an approved task-mode action in the background (no agent call is
/// open for it), once: the claim decides who runs it. The grant is checked
/// again first, and the key must still be live.
pub async fn run_task(gw: Gateway, id: ApprovalId) {
    let row = match gw.approvals.claim(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(approval = %id, "task claim failed: {e}");
            return;
        }
    };
    let outcome = run_detached(&gw, &row).await;
    let stored = match &outcome {
        Ok(r) => json!({"result": r}),
        Err(e) => json!({"error": e}),
    };
    if let Err(e) = gw.approvals.finish(&row.id, &stored, false).await {
        tracing::error!(approval = %row.id, "task result not stored: {e}");
    }
}

async fn run_detached(gw: &Gateway, row: &ApprovalRow) -> Result<CallToolResult, McpError> {
    let hold = hold_of(row);
    let release = |reason: String| {
        let hold = hold.clone();
        async move {
            if let Some(h) = &hold {
                let _ = gw.ledger.settle(h, 0, 0, None).await;
            }
            Ok(CallToolResult::error(vec![ContentBlock::text(reason)]))
        }
    };
    let key = match gw.store.key_by_id(&row.principal).await {
        Ok(Some(k)) if k.revoked_at.is_none() => k,
        Ok(_) => return release(format!("call to {} not run: its key was revoked", row.tool)).await,
        Err(e) => return Err(McpError::internal_error(format!("key store unavailable: {e}"), None)),
    };
    let principal = Principal::from_row(&key);
    let catalog = gw.upstreams.catalog();
    let Some(entry) = catalog.tool(&row.tool).filter(|e| e.hash == row.tool_hash).cloned() else {
        return release(format!("call to {} not run: the tool changed or is gone since it was approved", row.tool))
            .await;
    };
    let arguments: Value = row.arguments.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
    let policy = gw.policies.current();
    if policy.decide(&principal, &entry.name, &arguments).effect == Effect::Deny {
        return release(format!("call to {} not run: the grants changed and now refuse it", row.tool)).await;
    }
    let mut rec = CallRecord::start(&entry.name, None);
    // Run by whoever resolved it, after the agent's request: a trace of its own.
    rec.trace = gw.tracing.begin(crate::trace::Carrier::default(), &entry.name, rec.wall_start());
    rec.principal = Some(principal);
    rec.upstream = Some(entry.upstream_name.to_string());
    rec.arguments = serde_json::from_str(&row.arguments_redacted).ok();
    rec.grants = row.grant_id.iter().cloned().collect();
    rec.decision = decision::ALLOWED;
    rec.approval_id = Some(row.id.clone());
    rec.approver = row.decided_by.clone();
    rec.hold_id = row.hold_id.clone();
    rec.cost_held = row.cost;
    rec.reason = Some(format!("approved by {} (task {})", row.decided_by.as_deref().unwrap_or("an approver"), row.id));
    if let Err(e) = gw.journal.audit(rec.intent()).await {
        return Err(McpError::internal_error(format!("not run: {e}"), None));
    }
    let dispatch = Dispatch { params: CallToolRequestParams::new(entry.name.clone()), arguments, hold, cost: row.cost };
    let Some(permit) = Permit::approved(row, &entry, dispatch) else {
        return Err(McpError::internal_error("the claimed action is not runnable", None));
    };
    match execute::run(gw, rec, permit, Via::Detached).await.into_mcp() {
        Ok(CallToolResponse::Complete(r)) => Ok(r),
        Ok(_) => Err(McpError::internal_error("unexpected answer", None)),
        Err(e) => Err(e),
    }
}

/// Runs approved task-mode actions as they are approved (here or on another
/// process), and those approved while no process ran.
pub async fn executor(gw: Gateway) {
    let mut rx = gw.approvals.subscribe();
    run_waiting_tasks(&gw).await;
    loop {
        tokio::select! {
            _ = gw.shutdown.cancelled() => return,
            ev = rx.recv() => match ev {
                Ok(r) if r.mode == Mode::Task && r.status == Status::Approved && r.execution == Execution::None => {
                    tokio::spawn(run_task(gw.clone(), r.id.clone()));
                }
                Ok(_) => {}
                // Missed events: the store says which approved tasks have not run.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => run_waiting_tasks(&gw).await,
                Err(_) => return,
            }
        }
    }
}

/// Starts every approved task-mode action that has not run yet.
async fn run_waiting_tasks(gw: &Gateway) {
    match gw.approvals.store().approvals(None, Some(Status::Approved), 1000).await {
        Ok(rows) => {
            for r in rows.into_iter().filter(|r| r.mode == Mode::Task && r.execution == Execution::None) {
                tokio::spawn(run_task(gw.clone(), r.id));
            }
        }
        Err(e) => tracing::warn!("approved tasks not looked up: {e}"),
    }
}
