//! `tollgate call TOOL [ARGUMENTS]`: one governed tool call through a running
//! gateway, as an agent makes it (an MCP client over Streamable HTTP with the
//! key in TOLLGATE_KEY). For trying a deployment out and for scripts; agents
//! use their own MCP client.

use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

/// What the call came to, for the exit code.
pub enum Outcome {
    /// The tool ran and answered.
    Answered,
    /// Refused by tollgate or failed in the tool (`isError`), or an error.
    Refused,
}

pub async fn run(url: &str, key: &str, tool: &str, arguments: Option<&str>, json: bool) -> Result<Outcome, String> {
    let arguments = match arguments {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err("ARGUMENTS must be a JSON object, e.g. '{\"message\": \"hello\"}'".into()),
            Err(e) => return Err(format!("ARGUMENTS is not JSON: {e}")),
        },
    };
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string()).auth_header(key.to_string());
    let transport = StreamableHttpClientTransport::from_config(config);
    let lifecycle = ClientLifecycleMode::Auto {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        legacy_version: Some(ProtocolVersion::V_2025_11_25),
    };
    let client =
        ().serve_with_lifecycle(transport, lifecycle)
            .await
            .map_err(|e| format!("cannot reach the gateway at {url}: {e}"))?;
    let mut params = CallToolRequestParams::new(tool.to_string());
    params.arguments = Some(arguments);
    let answer = client.peer().call_tool(params).await;
    let _ = client.cancel().await;
    let result = match answer {
        Ok(r) => r,
        Err(rmcp::ServiceError::McpError(e)) => {
            eprintln!("refused ({}): {}", e.code.0, e.message);
            return Ok(Outcome::Refused);
        }
        Err(e) => return Err(e.to_string()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    } else {
        let texts: Vec<&str> = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.as_str())).collect();
        match (texts.is_empty(), &result.structured_content) {
            (true, Some(s)) => println!("{}", serde_json::to_string_pretty(s).unwrap_or_default()),
            _ => println!("{}", texts.join("\n")),
        }
    }
    Ok(if result.is_error == Some(true) { Outcome::Refused } else { Outcome::Answered })
}
