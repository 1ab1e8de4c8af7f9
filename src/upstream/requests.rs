//! The requests the edge relays to an upstream for an agent, other than
//! tool calls (those are `flight`): prompts, resources, completions. Each
//! counts as in flight on the connection, is bounded by the upstream's call
//! timeout, and fails with the error the agent receives.

use std::future::Future;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse,
    ReadResourceRequestParams, ReadResourceResponse, ServerResult,
};
use rmcp::service::ServiceError;

use super::Upstream;

impl Upstream {
    pub async fn get_prompt(&self, params: GetPromptRequestParams) -> Result<GetPromptResponse, McpError> {
        let conn = self.conn().map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let _counted = conn.inflight.other();
        self.bounded(conn.peer.get_prompt_once(params)).await
    }

    pub async fn read_resource(&self, params: ReadResourceRequestParams) -> Result<ReadResourceResponse, McpError> {
        let conn = self.conn().map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let _counted = conn.inflight.other();
        self.bounded(conn.peer.read_resource_once(params)).await
    }

    pub async fn complete(&self, params: CompleteRequestParams) -> Result<CompleteResult, McpError> {
        let conn = self.conn().map_err(|e| McpError::internal_error(e.to_string(), None))?;
        let _counted = conn.inflight.other();
        let request = ClientRequest::CompleteRequest(CompleteRequest::new(params));
        match self.bounded(conn.peer.send_request(request)).await? {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(McpError::internal_error(
                format!("upstream `{}` answered completion with another result", self.name),
                None,
            )),
        }
    }

    async fn bounded<T>(&self, request: impl Future<Output = Result<T, ServiceError>>) -> Result<T, McpError> {
        match tokio::time::timeout(self.manifest.call_timeout, request).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(ServiceError::McpError(e))) => Err(e),
            Ok(Err(other)) => Err(McpError::internal_error(format!("upstream `{}` failed: {other}", self.name), None)),
            Err(_) => Err(McpError::internal_error(
                format!("upstream `{}` did not answer within {:?}", self.name, self.manifest.call_timeout),
                None,
            )),
        }
    }
}
