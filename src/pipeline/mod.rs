//! The call pipeline: every `tools/call` passes the stages in order, top
//! to bottom, in [`call`]: identify, resolve, authorize, validate, scan,
//! limit, price ([`admit`]); then hold ([`hold`]) or approve
//! ([`approve`]); then execute and settle ([`execute`]); then audit
//! ([`audit`]). A stage that refuses the call returns a [`Refusal`]; the
//! call ends as one [`Outcome`], audited before its caller hears it.
//! Nothing runs without a [`permit::Permit`], which only an allow decision
//! or a claimed approved action makes. Upstream tools and the LLM tool,
//! called over MCP, over `/v1/chat/completions` or as approved background
//! tasks, all take this path; [`Via`] is what the stages know of the caller.

mod admit;
pub mod approve;
mod audit;
mod bridge;
mod execute;
mod forward;
mod hold;
mod llm;
mod outcome;
mod permit;
mod scans;
mod via;

use rmcp::model::CallToolRequestParams;

use crate::audit::CallRecord;
use crate::gateway::Gateway;
use crate::identity::AuthError;

pub use admit::Caller;
pub use outcome::{Outcome, Refusal, UNAUTHORIZED, UNAVAILABLE, Waiting, tool_error, unauthorized};
pub use scans::{scan_layers, scan_prompt, scan_resource, scan_settings};
pub use via::{Http, Via};

/// The execute stage without a permit, for the gateway bench's bare-proxy
/// floor (what MCP proxying costs before any governance). Nothing in the
/// gateway calls it: its calls reach upstreams only through [`call`].
#[doc(hidden)]
pub mod bench_floor {
    pub use super::forward::forward_tool as forward_ungoverned;
}

/// Runs one governed tool call, start to end.
pub async fn call(gw: &Gateway, caller: Result<Caller, AuthError>, params: CallToolRequestParams, via: Via) -> Outcome {
    let mut rec = CallRecord::start(&params.name, caller.as_ref().ok().and_then(|c| c.session.clone()));
    let before = std::time::Duration::from_micros(caller.as_ref().map_or(0, |c| c.auth_micros));
    let started = rec.wall_start().checked_sub(before).unwrap_or_else(|| rec.wall_start());
    rec.trace = gw.tracing.begin(via.trace_context(), &rec.tool, started);

    let admitted = match admit::admit(gw, &mut rec, caller, params).await {
        Ok(a) => a,
        Err(refused) => return audit::finish(gw, rec, Outcome::Refused(refused)).await,
    };
    // A grant that says so, or a cost above the grant's `approve_above`,
    // makes the call a pending action. A retry that answers a question of
    // a call already in flight (a parked call) is that call, not a new one.
    let resumes = admitted.params.request_state.clone().filter(|s| s.starts_with(crate::upstream::park::STATE_PREFIX));
    let over = admitted.grant.approve_above.is_some_and(|limit| admitted.cost > limit.0);
    let permit = match resumes {
        Some(state) => hold::resume(gw, &mut rec, admitted, &state).await,
        None if admitted.decided.effect == crate::policy::Effect::Approve || over => {
            match approve::stage(gw, &mut rec, admitted, &via).await {
                approve::Next::Run { permit, action } => {
                    let outcome = execute::run(gw, rec, permit, via).await;
                    approve::store_result(gw, &action, &outcome).await;
                    return outcome;
                }
                approve::Next::Replayed(outcome) => return audit::replayed(gw, rec, outcome).await,
                approve::Next::End(outcome) => return audit::finish(gw, rec, outcome).await,
            }
        }
        None => hold::take(gw, &mut rec, admitted).await,
    };
    match permit {
        Ok(permit) => execute::run(gw, rec, permit, via).await,
        Err(refused) => audit::finish(gw, rec, Outcome::Refused(refused)).await,
    }
}
