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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_json_that_is_not_json_rpc_is_a_400_json_rpc_error() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    let cases = [
        r#"{"hello":"world"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"a string"}"#,
        r#"{"jsonrpc":"2.0","id":{"an":"object"},"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":["tools/list"]}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
    ];
    for body in cases {
        let resp = reqwest::Client::new()
            .post(tg.mcp_url())
            .bearer_auth(&tg.key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(ct.starts_with("application/json"), "{body}: content-type {ct}");
        assert_eq!(error_code(&resp.text().await.unwrap()), -32600, "{body}");
    }
    let url = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&url, &tg.key)).await.expect("ws connect");
    for frame in cases {
        ws.send(Message::Text(frame.into())).await.unwrap();
        let reply = tokio::time::timeout(WAIT, ws.next()).await.expect("a reply").expect("open").unwrap();
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v["error"]["code"], -32600, "{frame}: {v}");
    }
    still_serves(&tg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tools_call_is_invalid_params_naming_the_field() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    // 2026-07-28 over HTTP: each request carries its own `_meta`.
    for (params, field, name) in [
        (json!({"name": 42}), "params.name", None),
        (json!({"name": "fs__echo", "arguments": ["message", "hi"]}), "params.arguments", Some("fs__echo")),
    ] {
        let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call")];
        headers.extend(name.map(|n| ("mcp-name", n)));
        let (s, text) = post(&tg, modern_request("tools/call", params.clone()), &headers).await;
        assert_eq!(error_code(&text), -32602, "{params}: status {s}: {text}");
        assert!(text.contains(field), "{params}: {text}");
    }
    // A legacy session over WebSocket, including a call with no params at all.
    let url = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&url, &tg.key)).await.expect("ws connect");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    tokio::time::timeout(WAIT, ws.next()).await.expect("initialized").expect("open").unwrap();
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    ws.send(Message::Text(done.to_string().into())).await.unwrap();
    for (i, (request, field)) in [
        (json!({"jsonrpc": "2.0", "method": "tools/call"}), "`params` is required"),
        (json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": true}}), "params.name"),
        (
            json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "fs__echo", "arguments": [1]}}),
            "params.arguments",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = request;
        request["id"] = json!(i + 1);
        ws.send(Message::Text(request.to_string().into())).await.unwrap();
        let reply = tokio::time::timeout(WAIT, ws.next()).await.expect("a reply").expect("open").unwrap();
        let v: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(v["id"], json!(i + 1), "{v}");
        assert_eq!(v["error"]["code"], -32602, "{request}: {v}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains(field), "{request}: {v}");
    }
}

/// Opens a legacy session with a bare `initialize`; the session id, or the
/// refusal's status and JSON-RPC error code.
async fn open_session(base: &str, key: &str) -> Result<String, (u16, i64)> {
    open_session_with(&reqwest::Client::new(), base, key).await
}

async fn open_session_with(client: &reqwest::Client, base: &str, key: &str) -> Result<String, (u16, i64)> {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let resp = client
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = resp.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = resp.text().await.unwrap_or_default();
    match id {
        Some(id) if status == 200 => Ok(id),
        _ => Err((status, error_code(&text))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_per_key_and_in_total_and_freed_when_closed_or_idle() {
    let tg = TestGateway::builder()
        .server(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_sessions_per_key = 5\nmax_sessions = 8\nsession_idle = \"10s\"\n",
        )
        .stdio_fixture("fs")
        .spawn()
        .await;
    let (other, _) = tg.new_key("eng", "acme").await;
    let mut mine = Vec::new();
    for _ in 0..5 {
        mine.push(open_session(&tg.base, &tg.key).await.expect("under the key's cap"));
    }
    assert_eq!(open_session(&tg.base, &tg.key).await, Err((429, -32005)), "the key's cap");
    let ws = format!("{}/ws", tg.base.replace("http://", "ws://"));
    let refused = tokio_tungstenite::connect_async(ws_request(&ws, &tg.key)).await;
    assert!(refused.is_err(), "a WebSocket connection is a session too");
    for _ in 0..3 {
        open_session(&tg.base, &other).await.expect("under the total cap");
    }
    assert_eq!(open_session(&tg.base, &other).await, Err((503, -32005)), "the total cap");
    // Closing a session gives its place back.
    let closed = reqwest::Client::new()
        .delete(tg.mcp_url())
        .bearer_auth(&tg.key)
        .header("mcp-session-id", mine.pop().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), 200, "a session's end is answered 200, as clients expect");
    let reopened =
        eventually("the closed session's place", || async { open_session(&tg.base, &tg.key).await.ok() }).await;
    mine.push(reopened);
    assert_eq!(open_session(&tg.base, &tg.key).await, Err((429, -32005)));
    // Abandoned sessions idle out and give their places back.
    eventually("idle sessions closed", || async { open_session(&tg.base, &other).await.ok() }).await;
    still_serves(&tg).await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

/// 5,000 sessions opened and abandoned: the gateway keeps exactly the cap, and
/// its memory grows by no more than the cap's worth of idle sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_abandoned_sessions_stay_under_the_cap_and_its_memory() {
    use futures::StreamExt;
    const CAP: usize = 1000;
    /// Bound on what one idle session may hold: measured at about 125 KiB in
    /// the debug build the tests run (rmcp's session worker, service task and
    /// channels), with room for allocator slack.
    const PER_SESSION_KIB: u64 = 192;
    let dir = config_dir(&[("fs", stdio_fixture("fs"))]);
    std::fs::write(
        dir.path().join("tollgate.toml"),
        format!("[server]\nmax_sessions = {CAP}\nmax_sessions_per_key = 100000\n"),
    )
    .unwrap();
    let (key, _) = cli_key(dir.path(), "eng", "acme");
    let served = serve_binary(dir.path(), std::process::Stdio::null()).await;
    let pid = served.child.id().expect("pid");
    // Warm up (allocator arenas, connection pools), then measure from there.
    for _ in 0..50 {
        let id = open_session(&served.base, &key).await.expect("warm-up session");
        reqwest::Client::new()
            .delete(served.mcp_url())
            .bearer_auth(&key)
            .header("mcp-session-id", id)
            .send()
            .await
            .unwrap();
    }
    let before = rss_kib(pid);
    let client = reqwest::Client::new();
    let outcomes: Vec<Result<String, (u16, i64)>> = futures::stream::iter(0..5000)
        .map(|_| open_session_with(&client, &served.base, &key))
        .buffer_unordered(16)
        .collect()
        .await;
    let opened = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused = outcomes.iter().filter(|o| **o == Err((503, -32005))).count();
    // The warm-up's sessions may still be closing: at most 50 places short.
    assert!((CAP - 50..=CAP).contains(&opened), "opened {opened}");
    assert_eq!(opened + refused, 5000, "every other attempt refused with -32005");
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("rss before {before} KiB, after {after} KiB: {grown} KiB for {opened} idle sessions");
    assert!(grown < CAP as u64 * PER_SESSION_KIB, "grew {grown} KiB for {opened} sessions");
}

/// Whether process `pid` is running (a zombie has ended: it waits only for
/// its parent to read its status).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A stdio upstream whose command first starts a process of its own (as
/// `npx` starts the server it downloads) and writes its pid to `pidfile`,
/// then becomes `then`.
fn upstream_with_a_child(pidfile: &std::path::Path, then: &str, connect_timeout: &str) -> String {
    let script = format!("/usr/bin/sleep 300 & echo $! > {}; exec {then}", pidfile.display());
    format!(
        "name = \"g\"\nconnect_timeout = \"{connect_timeout}\"\n[transport]\ntype = \"stdio\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", {}]\n",
        serde_json::to_string(&script).unwrap()
    )
}

/// Sends SIGTERM to `served` once `started` (the upstream's own child) runs,
/// and waits for tollgate to exit cleanly and that child to be gone.
async fn sigterm_and_see_the_child_gone(mut served: Served, pidfile: &std::path::Path) {
    let started: i32 =
        eventually("the upstream's own child", || async { std::fs::read_to_string(pidfile).ok()?.trim().parse().ok() })
            .await;
    assert!(running(started), "the upstream's child runs while tollgate does");
    let tollgate = served.child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &tollgate]).status().unwrap();
    assert!(sent.success());
    let exited = tokio::time::timeout(WAIT, served.child.wait()).await.expect("tollgate exits").unwrap();
    assert!(exited.success(), "{exited:?}");
    // Ended before tollgate exited; re-checked briefly for a slow /proc.
    eventually("the upstream's child gone", || async { (!running(started)).then_some(()) }).await;
}

/// SIGTERM to `tollgate serve` ends each stdio upstream's whole process
/// group before tollgate exits: a process the upstream started does not
/// outlive it, re-parented to init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_no_upstream_process_behind() {
    let pids = tempfile::tempdir().unwrap();
    let pidfile = pids.path().join("started.pid");
    let dir = config_dir(&[("g", upstream_with_a_child(&pidfile, &format!("{FIXTURE} --name g"), "30s"))]);
    let served = serve_binary(dir.path(), std::process::Stdio::null()).await;
    // Connected: the orderly close (stdin closed, SIGTERM, kill) ends the group.
    let client = reqwest::Client::new();
    eventually("the upstream connected", || async {
        let r = client.get(format!("{}/readyz", served.base)).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    sigterm_and_see_the_child_gone(served, &pidfile).await;
}

/// The same while the upstream is still connecting (it never answers): the
/// abandoned attempt ends its group too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_an_upstream_connects_leaves_no_process_behind() {
    let pids = tempfile::tempdir().unwrap();
    let pidfile = pids.path().join("started.pid");
    let dir = config_dir(&[("g", upstream_with_a_child(&pidfile, "/usr/bin/sleep 301", "120s"))]);
    let served = serve_binary(dir.path(), std::process::Stdio::null()).await;
    sigterm_and_see_the_child_gone(served, &pidfile).await;
}
