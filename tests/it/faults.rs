//! One broken upstream never takes the gateway or the others down.

use rmcp::model::CallToolRequestParams;
use serde_json::json;
use tollgate::upstream::Health;

use crate::harness::*;

fn call_params(name: &str, a: serde_json::Value) -> CallToolRequestParams {
    let mut p = CallToolRequestParams::new(name.to_string());
    p.arguments = a.as_object().cloned();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_crashes_mid_call_is_restarted_and_the_next_call_works() {
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    let restarts_before = tg.gw.upstreams.all()[0].status().restarts;
    let r = agent.peer().call_tool(call_params("fs__crash", json!({}))).await.unwrap();
    assert_eq!(r.is_error, Some(true), "the agent gets an error: {}", text_of(&r));
    tg.wait_until(|g| {
        let s = g.upstreams.all()[0].status();
        s.health == Health::Up && s.restarts > restarts_before
    })
    .await;
    let r = agent.peer().call_tool(call_params("fs__echo", json!({"message": "back"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_that_never_answers_times_out_and_others_keep_serving() {
    let slow = format!(
        "name = \"slowpoke\"\ncall_timeout = \"700ms\"\n[transport]\ntype = \"stdio\"\ncommand = \"{FIXTURE}\"\n"
    );
    let tg = TestGateway::builder().manifest("slowpoke", slow).stdio_fixture("ok").spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let peer = agent.peer().clone();
    let hung = tokio::spawn(async move { peer.call_tool(call_params("slowpoke__hang", json!({}))).await });
    // While the hung call is outstanding, the other upstream answers.
    let r = agent.peer().call_tool(call_params("ok__echo", json!({"message": "still here"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: still here");
    let r = hung.await.unwrap().unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("did not answer"), "{}", text_of(&r));
    // The timed-out upstream itself still works.
    let r = agent.peer().call_tool(call_params("slowpoke__echo", json!({"message": "ok"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstreams_do_not_block_start_up_or_the_others() {
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // A URL may carry a credential: it must never show in health or logs.
    let dead_url = format!("http://{}/mcp?token=canary-s3cret", refused.local_addr().unwrap());
    drop(refused);
    let missing =
        "name = \"missing\"\n[transport]\ntype = \"stdio\"\ncommand = \"/nonexistent/tollgate-no-such-server\"\n";
    let tg = TestGateway::builder()
        .manifest("gone", remote_manifest("gone", "http", &dead_url))
        .manifest("missing", missing)
        .stdio_fixture("ok")
        .spawn()
        .await;
    match tg.health("gone") {
        Health::Down { error } => assert!(!error.contains("canary-s3cret"), "url leaked: {error}"),
        other => panic!("expected down, got {other:?}"),
    }
    assert!(
        matches!(tg.health("missing"), Health::Down { error } if error.contains("not found") || error.contains("cannot start"))
    );
    assert_eq!(tg.health("ok"), Health::Up);
    let (agent, _) = tg.agent(Era::Legacy).await;
    let r = agent.peer().call_tool(call_params("ok__echo", json!({"message": "fine"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: fine");
    let ready: serde_json::Value = reqwest_get_json(&format!("{}/readyz", tg.base)).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["upstreams"].as_array().unwrap().len(), 3);
    // Honest: serving, with two upstreams down, each named with its error
    // and an RFC 3339 time.
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["upstreams_down"], json!(["gone", "missing"]), "{ready}");
    let since = ready["upstreams"][0]["since"].as_str().unwrap_or_default();
    assert!(chrono::DateTime::parse_from_rfc3339(since).is_ok(), "{ready}");
    // A tool of a dead upstream is unavailable, not unknown.
    let err = agent.peer().call_tool(call_params("missing__anything", json!({}))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("unavailable") && text.contains("upstream `missing` is down"), "{text}");
    let err = agent.peer().call_tool(call_params("nowhere__anything", json!({}))).await.unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstreams_get_only_their_declared_environment() {
    // SAFETY: set before the child is spawned; no other thread reads it concurrently.
    unsafe { std::env::set_var("TOLLGATE_TEST_SECRET", "must-not-leak") };
    let m =
        format!("name = \"e\"\n[transport]\ntype = \"stdio\"\ncommand = \"{FIXTURE}\"\nenv = {{ ONLY = \"this\" }}\n");
    let tg = TestGateway::builder().manifest("e", m).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let r = agent.peer().call_tool(call_params("e__env", json!({}))).await.unwrap();
    let vars = r.structured_content.unwrap();
    assert_eq!(vars, json!({"ONLY": "this"}), "exactly the declared environment");
}

/// A stdio upstream slower to read its first message than rmcp's own 10 s
/// `server/discover` probe (an `npx` download on a first run) connects within
/// its manifest's `connect_timeout`, in its own era. Unfixed, the late discover
/// answer met rmcp's `initialize` ("conflict initialized response id") and
/// every restart failed the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_starting_stdio_upstream_connects_within_its_connect_timeout() {
    let m = format!(
        "name = \"late\"\nconnect_timeout = \"30s\"\n[transport]\ntype = \"stdio\"\ncommand = \"{FIXTURE}\"\nargs = [\"--first-answer-delay-ms\", \"15000\"]\n"
    );
    // `spawn` returns once the first connection attempt has finished.
    let tg = TestGateway::builder().manifest("late", m).spawn().await;
    assert_eq!(tg.health("late"), Health::Up, "the first attempt connects");
    let status = tg.gw.upstreams.all()[0].status();
    assert_eq!((status.protocol.as_deref(), status.restarts), (Some("2026-07-28"), 0));
    let (agent, _) = tg.agent(Era::Modern).await;
    let r = agent.peer().call_tool(call_params("late__echo", json!({"message": "worth the wait"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: worth the wait");
}

async fn reqwest_get_json(url: &str) -> serde_json::Value {
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    serde_json::from_str(&body).unwrap()
}

async fn agent_cancellation_reaches_the_upstream(era: Era) {
    let tg = TestGateway::builder().stdio_fixture("fs").spawn().await;
    let (agent, _) = tg.agent(era).await;
    let request = rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(call_params(
        "fs__hang",
        json!({}),
    )));
    let handle =
        agent.peer().send_request_with_option(request, rmcp::service::PeerRequestOptions::no_options()).await.unwrap();
    // The call is in flight upstream once the fixture has counted it.
    let stats = || async {
        let r = agent.peer().call_tool(call_params("fs__stats", json!({}))).await.unwrap();
        r.structured_content.unwrap()["calls"].clone()
    };
    tokio::time::timeout(WAIT, async {
        while stats().await.get("hang").is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("hang reached the upstream");
    handle.cancel(Some("agent gave up".into())).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while stats().await.get("hang:cancelled").is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the upstream saw the cancellation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_agent_cancellation_reaches_the_upstream() {
    agent_cancellation_reaches_the_upstream(Era::Legacy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modern_agent_cancellation_reaches_the_upstream() {
    agent_cancellation_reaches_the_upstream(Era::Modern).await;
}
