//! The answer to a request for a method tollgate serves whose params do not
//! fit that method's shape.
//!
//! rmcp reads such a request as a custom request (its method enum falls back
//! when the params fail to deserialize), which would be answered "method not
//! found". An agent that sent `tools/call` with `arguments` as an array needs
//! to hear "invalid params" and which field is wrong.

// `logging/setLevel` is deprecated by SEP-2577 but still served.
#![allow(deprecated)]

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequestParams, CompleteRequestParams, GetPromptRequestParams, PaginatedRequestParams,
    ReadResourceRequestParams, SetLevelRequestParams, SubscribeRequestParams, UnsubscribeRequestParams,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Methods tollgate serves, and whether their params are required.
const KNOWN: &[(&str, bool)] = &[
    ("initialize", true),
    ("ping", false),
    ("server/discover", false),
    ("tools/list", false),
    ("tools/call", true),
    ("resources/list", false),
    ("resources/templates/list", false),
    ("resources/read", true),
    ("resources/subscribe", true),
    ("resources/unsubscribe", true),
    ("prompts/list", false),
    ("prompts/get", true),
    ("completion/complete", true),
    ("logging/setLevel", true),
    ("subscriptions/listen", true),
    ("tasks/get", true),
    ("tasks/update", true),
    ("tasks/cancel", true),
];

/// The error for `method` called with `params`: `-32602` naming the field
/// for a known method, `-32601` for any other.
pub fn explain(method: &str, params: Option<&Value>) -> McpError {
    let Some(&(_, required)) = KNOWN.iter().find(|(m, _)| *m == method) else {
        return McpError::new(rmcp::model::ErrorCode::METHOD_NOT_FOUND, format!("method not found: {method}"), None);
    };
    let why = match params {
        None if required => "`params` is required".to_string(),
        None => "the request does not fit this method's shape".to_string(),
        Some(p) => field_error(method, p).unwrap_or_else(|| "the params do not fit this method's shape".to_string()),
    };
    McpError::invalid_params(format!("invalid params for `{method}`: {why}"), Some(json!({"method": method})))
}

/// The first field of `params` that does not fit, as "`params.<path>`: why".
fn field_error(method: &str, params: &Value) -> Option<String> {
    match method {
        "tools/call" => path_error::<CallToolRequestParams>(params),
        "resources/read" => path_error::<ReadResourceRequestParams>(params),
        "resources/subscribe" => path_error::<SubscribeRequestParams>(params),
        "resources/unsubscribe" => path_error::<UnsubscribeRequestParams>(params),
        "prompts/get" => path_error::<GetPromptRequestParams>(params),
        "completion/complete" => path_error::<CompleteRequestParams>(params),
        "logging/setLevel" => path_error::<SetLevelRequestParams>(params),
        "tools/list" | "resources/list" | "resources/templates/list" | "prompts/list" => {
            path_error::<PaginatedRequestParams>(params)
        }
        _ => None,
    }
}

fn path_error<T: DeserializeOwned>(params: &Value) -> Option<String> {
    let err = serde_path_to_error::deserialize::<_, T>(params).err()?;
    let path = err.path().to_string();
    // serde's message names the expected type; values are not echoed back
    // into logs from here (the message goes to the agent that sent them).
    let inner = err.into_inner().to_string();
    let inner = inner.split(" at line ").next().unwrap_or(&inner).to_string();
    Some(if path == "." { format!("`params`: {inner}") } else { format!("`params.{path}`: {inner}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn says(method: &str, params: Option<Value>) -> (i32, String) {
        let e = explain(method, params.as_ref());
        (e.code.0, e.message.to_string())
    }

    #[test]
    fn a_malformed_tools_call_names_the_field() {
        let (code, m) = says("tools/call", Some(json!({"name": 5})));
        assert_eq!(code, -32602);
        assert!(m.contains("`params.name`"), "{m}");
        let (code, m) = says("tools/call", Some(json!({"name": "x", "arguments": [1, 2]})));
        assert_eq!(code, -32602);
        assert!(m.contains("`params.arguments`"), "{m}");
        let (code, m) = says("tools/call", None);
        assert_eq!(code, -32602);
        assert!(m.contains("`params` is required"), "{m}");
        let (_, m) = says("tools/call", Some(json!({"arguments": {}})));
        assert!(m.contains("name"), "{m}");
    }

    #[test]
    fn other_known_methods_are_invalid_params_and_unknown_ones_not_found() {
        assert_eq!(says("resources/read", Some(json!({"uri": 1}))).0, -32602);
        assert_eq!(says("tools/list", Some(json!({"cursor": 3}))).0, -32602);
        assert_eq!(says("no/such", None).0, -32601);
    }
}
