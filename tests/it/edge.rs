//! Hostile and malformed input at `/mcp`: each gets a well-formed JSON-RPC
//! error with the right status, nothing runs, and the server keeps serving.

use futures::stream;
use serde_json::{Value, json};

use crate::harness::*;

async fn post(tg: &TestGateway, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client
        .post(tg.mcp_url())
        .bearer_auth(&tg.key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn error_code(body: &str) -> i64 {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    assert_eq!(v["jsonrpc"], "2.0", "{body}");
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("no error code: {body}"))
}

fn modern_request(method: &str, params: Value) -> String {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}
    });
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

const MODERN: [(&str, &str); 1] = [("mcp-protocol-version", "2026-07-28")];

async fn still_serves(tg: &TestGateway) {
    let (agent, _) = tg.agent(Era::Modern).await;
    let mut p = rmcp::model::CallToolRequestParams::new("fs__echo");
    p.arguments = json!({"message": "alive"}).as_object().cloned();
    assert_eq!(text_of(&agent.peer().call_tool(p).await.unwrap()), "echo: alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_bodies_get_json_rpc_errors() {
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\nmax_json_depth = 32\n")
        .stdio_fixture("fs")
        .spawn()
        .await;
    let cases: Vec<(&str, Vec<u8>, u16, i64)> = vec![
        ("malformed JSON", b"{\"jsonrpc\":\"2.0\",".to_vec(), 400, -32700),
        ("invalid UTF-8", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}".to_vec(), 400, -32700),
        ("batch", br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#.to_vec(), 400, -32600),
        ("not an object", b"\"tools/list\"".to_vec(), 400, -32600),
        (
            "duplicate keys",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#.to_vec(),
            400,
            -32600,
        ),
        (
            "deep nesting",
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{}1{}}}",
                "[".repeat(200),
                "]".repeat(200)
            )
            .into_bytes(),
            400,
            -32600,
        ),
        ("oversize", format!("{{\"pad\":\"{}\"}}", "x".repeat(70_000)).into_bytes(), 413, -32600),
    ];
    for (name, body, status, code) in cases {
        let (s, text) = post(&tg, body, &MODERN).await;
        assert_eq!(s, status, "{name}: {text}");
        assert_eq!(error_code(&text), code, "{name}: {text}");
    }
    still_serves(&tg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_chunked_body_is_refused_without_buffering_it_all() {
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n")
        .stdio_fixture("fs")
        .spawn()
        .await;
    // No Content-Length: the cap applies while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..64).map(|_| Ok(vec![b' '; 4096])).collect();
    let body = reqwest::Body::wrap_stream(stream::iter(chunks));
    let (s, text) = post(&tg, body, &MODERN).await;
    assert_eq!(s, 413, "{text}");
    assert_eq!(error_code(&text), -32600);
    still_serves(&tg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_is_refused_and_an_allowed_one_passes() {
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\nallowed_origins = [\"http://localhost:*\"]\n")
        .stdio_fixture("fs")
        .spawn()
        .await;
    let body = modern_request("tools/list", json!({}));
    let headers =
        [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list"), ("origin", "http://evil.example")];
    let (s, text) = post(&tg, body.clone(), &headers).await;
    assert_eq!(s, 403, "{text}");
    assert_eq!(error_code(&text), -32600);
    let headers =
        [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list"), ("origin", "http://localhost:5173")];
    let (s, text) = post(&tg, body, &headers).await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains("fs__echo"), "{text}");
    // The WebSocket endpoint applies the same rule.
    let ws = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws).unwrap();
    req.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_and_wrong_shapes_are_json_rpc_errors() {
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    let (s, text) = post(
        &tg,
        modern_request("nope/nothing", json!({})),
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "nope/nothing")],
    )
    .await;
    assert!(text.contains("-32601"), "status {s}: {text}");
    let wrong = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"not an object"}"#;
    let (s, text) = post(&tg, wrong, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call")]).await;
    assert!((400..500).contains(&s) || text.contains("\"error\""), "status {s}: {text}");
    let no_method = r#"{"jsonrpc":"2.0","id":1}"#;
    let (s, text) = post(&tg, no_method, &MODERN).await;
    assert!((400..500).contains(&s), "status {s}: {text}");
    still_serves(&tg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_frames_get_json_rpc_errors_and_the_socket_keeps_serving() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\nmax_json_depth = 32\n")
        .stdio_fixture("fs")
        .spawn()
        .await;
    let url = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&url, &tg.key)).await.expect("ws connect");
    let cases: Vec<(String, i64)> = vec![
        ("{\"jsonrpc\":\"2.0\",".into(), -32700),
        (r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#.into(), -32600),
        (r#"{"jsonrpc":"2.0","id":1,"method":"ping","id":2}"#.into(), -32600),
        (
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{}1{}}}",
                "[".repeat(100),
                "]".repeat(100)
            ),
            -32600,
        ),
        (r#"{"not":"json-rpc"}"#.into(), -32600),
    ];
    for (frame, code) in cases {
        ws.send(Message::Text(frame.clone().into())).await.unwrap();
        let reply = tokio::time::timeout(WAIT, ws.next()).await.expect("a reply").expect("open").unwrap();
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v["error"]["code"], code, "{frame}: {v}");
        assert_eq!(v["id"], Value::Null);
    }
    // Still serving: a proper handshake on the same socket.
    let init = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.expect("a reply").expect("open").unwrap();
    let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(v["result"]["serverInfo"]["name"], "tollgate");
}
