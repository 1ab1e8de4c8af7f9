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

/// A stdio agent whose key was refused: its client hears why in the answer to
/// its `initialize` (a JSON-RPC error), rather than a closed pipe, then the
/// process ends with the same message on stderr.
pub async fn refuse(why: String) -> Result<(), String> {
    let refusal = Refusal(why.clone());
    match rmcp::serve_server(refusal, rmcp::transport::stdio()).await {
        // The handshake fails: its answer was the refusal.
        Err(_) => Err(why),
        // A 2026-07-28 agent skips the handshake: refuse its requests until it goes.
        Ok(service) => {
            let _ = service.waiting().await;
            Err(why)
        }
    }
}

/// Answers every request with the refusal: an agent of either era (an
/// `initialize`, or a 2026-07-28 request straight away) hears it.
struct Refusal(String);

impl rmcp::Service<rmcp::RoleServer> for Refusal {
    async fn handle_request(
        &self,
        _request: rmcp::model::ClientRequest,
        _ctx: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ServerResult, rmcp::ErrorData> {
        Err(rmcp::ErrorData::new(crate::pipeline::UNAUTHORIZED, self.0.clone(), None))
    }

    async fn handle_notification(
        &self,
        _notification: rmcp::model::ClientNotification,
        _ctx: rmcp::service::NotificationContext<rmcp::RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        Ok(())
    }

    fn get_info(&self) -> rmcp::model::ServerConfig {
        rmcp::model::ServerConfig::default()
    }
}
