//! `tollgate stdio`: one agent on standard input/output, the gateway in-process.
//! Logs go to stderr; stdout carries only JSON-RPC.

use rmcp::ServiceExt;

use super::handler::Session;
use crate::gateway::Gateway;
use crate::identity::Principal;

pub async fn serve(gw: Gateway, principal: Principal) -> Result<(), String> {
    let service = Session::authenticated(gw.clone(), principal, "stdio")
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("stdio session failed to start: {e}"))?;
    let ct = service.cancellation_token();
    tokio::select! {
        r = service.waiting() => { r.map_err(|e| format!("stdio session failed: {e}"))?; }
        _ = gw.shutdown.cancelled() => ct.cancel(),
    }
    Ok(())
}
