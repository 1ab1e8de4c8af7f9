//! The LLM tool and `/v1/chat/completions`: real provider servers (both wire
//! formats), real MCP and HTTP clients, the real ledger and audit chain.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::governance::{call_records, params};
use crate::harness::*;
use crate::provider::{Provider, SETTINGS, tokens};

/// Prices: fast = 1.00 / 2.00 per million tokens in / out.
const FAST: &str = "id = \"ok\"\ninput_per_mtok = \"1.00\"\noutput_per_mtok = \"2.00\"";

fn money(input: i64, output: i64, per_in: i64, per_out: i64) -> i64 {
    // Per million tokens, in micro-units, rounded up per side (as documented).
    (input * per_in + 999_999) / 1_000_000 + (output * per_out + 999_999) / 1_000_000
}

fn budgets(extra: &str) -> String {
    format!(
        "{ALLOW_ALL}\n[[budget]]\nid = \"eng-tokens\"\nscope = \"team:eng\"\nunit = \"tokens\"\nlimit = \"100000\"\n\
         [[budget]]\nid = \"acme-money\"\nscope = \"org:acme\"\nlimit = \"10.00\"\n{extra}"
    )
}

async fn usage_of(tg: &TestGateway, id: &str) -> (i64, i64, i64) {
    let rows =
        tg.gw.store.budget_usage(None, tollgate::audit::now_micros(), tollgate::calendar::period_start).await.unwrap();
    let u = rows.into_iter().find(|u| u.budget.id == id).expect("budget");
    (u.budget.limit_amount, u.spent, u.held)
}

fn chat(model: &str, text: &str, max_tokens: Option<u64>) -> Value {
    let mut a = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    if let Some(m) = max_tokens {
        a["max_tokens"] = json!(m);
    }
    a
}

async fn post(tg: &TestGateway, key: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", tg.base))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("answered");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Starts a streamed completion; the status must be 200.
async fn stream(tg: &TestGateway, body: &Value) -> reqwest::Response {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", tg.base))
        .bearer_auth(&tg.key)
        .json(body)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    r
}

/// Reads a stream until `needle` has arrived (within [`WAIT`]); what was read.
async fn read_until(r: &mut reqwest::Response, needle: &str) -> String {
    let mut buf = String::new();
    while !buf.contains(needle) {
        let chunk = tokio::time::timeout(WAIT, r.chunk()).await.expect("text in time").unwrap().expect("more");
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    buf
}

/// Reads a server-sent event stream to its end: the `data:` payloads in order.
async fn events(mut r: reqwest::Response) -> Vec<String> {
    let mut buf = String::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    data_lines(&buf)
}

fn data_lines(buf: &str) -> Vec<String> {
    buf.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_string)
        .collect()
}

fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

async fn gateway(provider: &Provider, wire: &str, models: &[(&str, &str)], policy: String) -> TestGateway {
    TestGateway::builder()
        .manifest("models", provider.manifest("models", wire, SETTINGS, models))
        .policy("p", policy)
        .spawn()
        .await
}

#[tokio::test]
async fn the_llm_tool_answers_and_settles_the_providers_usage() {
    let p = Provider::start().await;
    unsafe { std::env::set_var("TEST_LLM_KEY", "sk-test-provider-key-0123456789") };
    let manifest = p.manifest(
        "openai-test",
        "openai",
        &format!("{SETTINGS}\napi_key = \"${{env:TEST_LLM_KEY}}\""),
        &[("fast", FAST)],
    );
    let tg = TestGateway::builder().manifest("openai-test", manifest).policy("p", budgets("")).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let tools = agent.peer().list_all_tools().await.unwrap();
    let tool = tools.iter().find(|t| t.name == "llm__chat").expect("llm__chat is listed");
    assert_eq!(tool.input_schema["properties"]["model"]["enum"], json!(["fast"]));

    let r = agent.peer().call_tool(params("llm__chat", chat("fast", "hello big world", Some(50)))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    assert_eq!(text_of(&r), "echo hello big world");
    let s = r.structured_content.expect("structured content");
    let (input, output) = (tokens("hello big world"), tokens("echo hello big world"));
    assert_eq!(s["model"], "fast");
    assert_eq!(s["usage"]["input_tokens"], input);
    assert_eq!(s["usage"]["output_tokens"], output);
    assert_eq!(s["usage"]["source"], "provider");
    let charged = money(input, output, 1_000_000, 2_000_000);
    assert_eq!(s["cost"], tollgate::money::Micros(charged).to_string());

    // What the provider was sent: its model id, the bound, the key from the environment.
    let seen = p.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].model, "ok");
    assert_eq!(seen[0].body["max_tokens"], 50);
    assert_eq!(seen[0].key.as_deref(), Some("Bearer sk-test-provider-key-0123456789"));

    // The hold covered the worst case; the settle is the provider's usage, exactly.
    let rec = call_records(&tg).await.pop().expect("record");
    assert_eq!(rec["status"], "ok");
    assert_eq!(rec["upstream"], "openai-test");
    let held = rec["cost"]["tokens_held"].as_i64().unwrap();
    assert!(held >= input + 50, "held {held}");
    assert_eq!(rec["cost"]["tokens_charged"], input + output);
    assert_eq!(rec["cost"]["charged_micros"], charged);
    assert!(rec["cost"]["held_micros"].as_i64().unwrap() >= charged);
    assert_eq!(rec["llm"]["usage"]["source"], "provider");
    assert_eq!(usage_of(&tg, "eng-tokens").await, (100_000, input + output, 0));
    assert_eq!(usage_of(&tg, "acme-money").await, (10_000_000, charged, 0));
}

#[tokio::test]
async fn anthropic_streams_through_the_endpoint_as_tokens_arrive() {
    let p = Provider::start().await;
    let models = [("claude", "id = \"gated\"\ninput_per_mtok = \"3\"\noutput_per_mtok = \"15\"")];
    let tg = gateway(&p, "anthropic", &models, budgets("")).await;
    let body = json!({"model": "claude", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]});
    let mut r = stream(&tg, &body).await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    // The first words arrive while the provider still holds back the rest.
    let buf = read_until(&mut r, "echo").await;
    assert!(!buf.contains("[DONE]"));
    p.open_gate();
    let mut rest = data_lines(&buf);
    rest.extend(events(r).await);
    assert_eq!(streamed_text(&rest), "echo one two three");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    let finish: Vec<Value> = rest.iter().filter_map(|e| serde_json::from_str(e).ok()).collect();
    assert!(finish.iter().any(|v| v["choices"][0]["finish_reason"] == "stop"));
    let usage = finish.iter().find(|v| v["usage"].is_object()).expect("a usage chunk");
    let (input, output) = (tokens("be briefone two three"), tokens("echo one two three"));
    assert_eq!(usage["usage"]["prompt_tokens"], input);
    assert_eq!(usage["usage"]["completion_tokens"], output);
    // Anthropic's format on the wire: system apart, version header present.
    let seen = p.seen();
    assert_eq!(seen[0].wire, "anthropic");
    assert_eq!(seen[0].body["system"], "be brief");
    assert_eq!(seen[0].body["stream"], true);
    let rec = call_records(&tg).await.pop().unwrap();
    assert_eq!(rec["tool"], "llm__chat");
    assert_eq!(rec["cost"]["tokens_charged"], input + output);
    assert_eq!(rec["cost"]["charged_micros"], money(input, output, 3_000_000, 15_000_000));
    assert_eq!(usage_of(&tg, "eng-tokens").await.1, input + output);
}

#[tokio::test]
async fn non_streaming_completion_in_openai_shape() {
    let p = Provider::start().await;
    let tg = gateway(&p, "openai", &[("fast", FAST)], budgets("")).await;
    let (status, body) = post(
        &tg,
        &tg.key,
        &json!({"model": "fast", "max_tokens": 20,
        "messages": [{"role": "user", "content": "ping"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "echo ping");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], tokens("ping"));
    assert_eq!(body["usage"]["completion_tokens"], tokens("echo ping"));
    assert_eq!(p.seen()[0].body["max_tokens"], 20);
}

async fn a_429_is_retried_after_retry_after_and_a_500_is_retried_on(wire: &str) {
    let p = Provider::start().await;
    let models = [
        ("limited", "id = \"429-once\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\""),
        ("flaky", "id = \"500-once\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\""),
    ];
    let tg = gateway(&p, wire, &models, budgets("")).await;
    let (agent, _) = tg.agent(Era::Legacy).await;
    let started = Instant::now();
    let r = agent.peer().call_tool(params("llm__chat", chat("limited", "a", Some(5)))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    // Retry-After: 1 was honoured (the configured backoff is 50 ms).
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(p.count("429-once"), 2);
    let r = agent.peer().call_tool(params("llm__chat", chat("flaky", "b", Some(5)))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    assert_eq!(p.count("500-once"), 2);
    let recs = call_records(&tg).await;
    let statuses = |r: &Value| -> Vec<Value> {
        r["llm"]["attempts"].as_array().unwrap().iter().map(|a| a["status"].clone()).collect()
    };
    assert_eq!(statuses(&recs[0]), vec![json!(429), json!(200)]);
    assert_eq!(statuses(&recs[1]), vec![json!(500), json!(200)]);
    assert!(recs[0]["llm"]["attempts"][0]["error"].as_str().unwrap().contains("slow down"));
}

async fn a_hanging_provider_times_out_and_the_hold_is_released_on(wire: &str) {
    let p = Provider::start().await;
    let manifest = p.manifest(
        "models",
        wire,
        "timeout = \"300ms\"\nretries = 2",
        &[("stuck", "id = \"hang\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"")],
    );
    let tg = TestGateway::builder().manifest("models", manifest).policy("p", budgets("")).spawn().await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let r = agent.peer().call_tool(params("llm__chat", chat("stuck", "anyone?", Some(5)))).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text_of(&r).contains("no response within"), "{}", text_of(&r));
    // A timeout is not retried on the same model.
    assert_eq!(p.count("hang"), 1);
    let rec = call_records(&tg).await.pop().unwrap();
    assert_eq!(rec["status"], "tool_error");
    assert_eq!(rec["cost"]["tokens_charged"], 0);
    assert!(rec["cost"]["tokens_held"].as_i64().unwrap() > 0);
    assert_eq!(usage_of(&tg, "eng-tokens").await, (100_000, 0, 0));
}

async fn a_stream_cut_midway_ends_in_an_error_and_charges_what_was_sent_on(wire: &str) {
    let p = Provider::start().await;
    let models = [("fast", "id = \"cut\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"")];
    let tg = gateway(&p, wire, &models, budgets("")).await;
    let body =
        json!({"model": "fast", "stream": true, "messages": [{"role": "user", "content": "alpha beta gamma delta"}]});
    let mut r = stream(&tg, &body).await;
    let buf = read_until(&mut r, "alpha").await;
    p.open_gate();
    let mut evs = data_lines(&buf);
    evs.extend(events(r).await);
    assert_eq!(streamed_text(&evs), "echo alpha ");
    assert!(!evs.iter().any(|e| e == "[DONE]"), "{evs:?}");
    let last: Value = serde_json::from_str(evs.last().unwrap()).unwrap();
    assert!(last["error"]["message"].as_str().unwrap().contains("stream"), "{last}");
    // Not retried: the client already had text.
    assert_eq!(p.count("cut"), 1);
    let rec = call_records(&tg).await.pop().unwrap();
    assert_eq!(rec["status"], "tool_error");
    assert_eq!(rec["llm"]["usage"]["source"], "estimate");
    let charged = rec["cost"]["tokens_charged"].as_i64().unwrap();
    assert!(charged > 0);
    assert_eq!(usage_of(&tg, "eng-tokens").await, (100_000, charged, 0));
}

#[tokio::test]
async fn concurrent_llm_calls_never_exceed_a_token_budget() {
    let p = Provider::start().await;
    let policy =
        format!("{ALLOW_ALL}\n[[budget]]\nid = \"tight\"\nscope = \"team:eng\"\nunit = \"tokens\"\nlimit = \"1000\"\n");
    let tg = gateway(&p, "openai", &[("fast", FAST)], policy).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", tg.base);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (client, url, key) = (client.clone(), url.clone(), tg.key.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": "fast", "max_tokens": 100, "messages": [{"role": "user", "content": format!("call {i}")}]});
            let r = client.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }));
    }
    let (mut ok, mut refused, mut used) = (0, 0, 0);
    for t in tasks {
        let (status, v) = t.await.unwrap();
        match status {
            200 => {
                ok += 1;
                used += v["usage"]["total_tokens"].as_i64().unwrap();
            }
            429 => {
                assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(refused > 0 && ok > 0, "ok {ok}, refused {refused}");
    assert_eq!(p.seen().len(), ok, "only admitted calls reach the provider");
    let (limit, spent, held) = usage_of(&tg, "tight").await;
    assert_eq!(held, 0);
    assert_eq!(spent, used, "the settles are the provider's usage");
    assert!(spent <= limit, "spent {spent} of {limit}");
}

#[tokio::test]
async fn fallback_to_a_second_provider_is_audited_with_both_attempts() {
    let p = Provider::start().await;
    let primary = p.manifest(
        "primary",
        "openai",
        SETTINGS,
        &[("main", "id = \"down\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\nfallback = \"spare\"")],
    );
    let backup = p.manifest(
        "backup",
        "anthropic",
        SETTINGS,
        &[("spare", "id = \"ok\"\ninput_per_mtok = \"2\"\noutput_per_mtok = \"2\"")],
    );
    let tg = TestGateway::builder()
        .manifest("primary", primary)
        .manifest("backup", backup)
        .policy("p", budgets(""))
        .spawn()
        .await;
    let (status, body) =
        post(&tg, &tg.key, &json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "spare");
    assert_eq!(body["choices"][0]["message"]["content"], "echo hi");
    let rec = call_records(&tg).await.pop().unwrap();
    assert_eq!(rec["upstream"], "backup");
    assert_eq!(rec["llm"]["fallback"], true);
    let attempts: Vec<(String, String, Value)> = rec["llm"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["provider"].as_str().unwrap().into(), a["model"].as_str().unwrap().into(), a["status"].clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("primary".into(), "main".into(), json!(503)),
            ("primary".into(), "main".into(), json!(503)),
            ("backup".into(), "spare".into(), json!(200)),
        ]
    );
}

#[tokio::test]
async fn grants_restrict_models_and_max_tokens_defaults_included() {
    let p = Provider::start().await;
    let policy = "[[grant]]\nid = \"models\"\nprincipals = [\"team:eng\"]\ntools = [\"llm__chat\"]\neffect = \"allow\"\n\
                  arguments = { properties = { max_tokens = { maximum = 100 } } }\n\
                  [[grant]]\nid = \"no-dear\"\nprincipals = [\"*\"]\ntools = [\"llm__chat\"]\neffect = \"deny\"\n\
                  when = { properties = { model = { const = \"dear\" } }, required = [\"model\"] }\n";
    let models = [("fast", FAST), ("dear", "id = \"ok\"\ninput_per_mtok = \"50\"\noutput_per_mtok = \"50\"")];
    let tg = gateway(&p, "openai", &models, policy.to_string()).await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let denied = agent.peer().call_tool(params("llm__chat", chat("dear", "x", Some(10)))).await.unwrap();
    assert_eq!(denied.is_error, Some(true));
    assert!(text_of(&denied).contains("no-dear"), "{}", text_of(&denied));
    let over = agent.peer().call_tool(params("llm__chat", chat("fast", "x", Some(500)))).await.unwrap();
    assert!(text_of(&over).contains("/max_tokens"), "{}", text_of(&over));
    // Leaving max_tokens out means the model's default (1024): still bounded by the grant.
    let omitted = agent.peer().call_tool(params("llm__chat", chat("fast", "x", None))).await.unwrap();
    assert!(text_of(&omitted).contains("/max_tokens"), "{}", text_of(&omitted));
    let unknown = agent.peer().call_tool(params("llm__chat", chat("gpt-unknown", "x", Some(5)))).await.unwrap();
    assert!(text_of(&unknown).contains("/model"), "{}", text_of(&unknown));
    let ok = agent.peer().call_tool(params("llm__chat", chat("fast", "x", Some(100)))).await.unwrap();
    assert_ne!(ok.is_error, Some(true), "{}", text_of(&ok));
    assert_eq!(p.seen().len(), 1, "refused calls never reach the provider");
    // GET /v1/models lists what a key may ask for: nothing without a grant.
    let list = |key: String| {
        let url = format!("{}/v1/models", tg.base);
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(key).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            let ids: Vec<String> = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect();
            (status, ids)
        }
    };
    assert_eq!(list(tg.key.clone()).await, (200, vec!["dear".to_string(), "fast".to_string()]));
    let (ops, _) = tg.new_key("ops", "acme").await;
    assert_eq!(list(ops).await, (200, vec![]));
    assert_eq!(list("tg_nope".into()).await.0, 401);
    // The same refusals over HTTP, in OpenAI's shape.
    let (status, body) =
        post(&tg, &tg.key, &json!({"model": "dear", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!((status, body["error"]["code"].clone()), (403, json!("permission_denied")), "{body}");
    let (status, body) =
        post(&tg, &tg.key, &json!({"model": "fast", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("/max_tokens"), "{body}");
}

#[tokio::test]
async fn prompts_stay_out_of_the_audit_unless_the_manifest_records_them() {
    let p = Provider::start().await;
    for record in [false, true] {
        let extra = format!("{SETTINGS}\nrecord_content = {record}");
        let manifest = p.manifest("models", "openai", &extra, &[("fast", FAST)]);
        let tg = TestGateway::builder().manifest("models", manifest).spawn().await;
        let (agent, _) = tg.agent(Era::Modern).await;
        let r = agent
            .peer()
            .call_tool(params("llm__chat", chat("fast", "the vault opens with swordfish", Some(50))))
            .await
            .unwrap();
        assert_ne!(r.is_error, Some(true));
        let all = tg.gw.store.audit(&tollgate::store::AuditFilter::default()).await.unwrap();
        let text: String = all.iter().map(|r| r.body.clone()).collect();
        assert_eq!(text.contains("swordfish"), record, "record_content = {record}");
        let rec = call_records(&tg).await.pop().unwrap();
        assert_eq!(rec["llm"]["prompt_bytes"], "the vault opens with swordfish".len());
        assert_eq!(rec["llm"]["completion_bytes"], "echo the vault opens with swordfish".len());
        let total = tokens("the vault opens with swordfish") + tokens("echo the vault opens with swordfish");
        assert_eq!(rec["llm"]["usage"]["total_tokens"], total);
    }
}

#[tokio::test]
async fn without_reported_usage_the_estimate_is_charged_and_said() {
    let p = Provider::start().await;
    let models = [("quiet", "id = \"no-usage\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"")];
    let tg = gateway(&p, "anthropic", &models, budgets("")).await;
    let (agent, _) = tg.agent(Era::Modern).await;
    let r = agent.peer().call_tool(params("llm__chat", chat("quiet", "count me", Some(40)))).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{}", text_of(&r));
    let s = r.structured_content.unwrap();
    assert_eq!(s["usage"]["source"], "estimate");
    let rec = call_records(&tg).await.pop().unwrap();
    assert!(rec["llm"]["note"].as_str().unwrap().contains("estimate"));
    let charged = rec["cost"]["tokens_charged"].as_i64().unwrap();
    assert_eq!(charged, s["usage"]["total_tokens"].as_i64().unwrap());
    assert!(charged > 0 && charged <= rec["cost"]["tokens_held"].as_i64().unwrap());
    assert_eq!(usage_of(&tg, "eng-tokens").await.1, charged);
}

#[tokio::test]
async fn an_llm_call_waiting_for_approval_resumes_once_approved() {
    let p = Provider::start().await;
    let policy = "[[grant]]\nid = \"ask\"\nprincipals = [\"*\"]\ntools = [\"llm__chat\"]\neffect = \"approve\"\n";
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\n[approval]\nwait = \"200ms\"\n")
        .manifest("models", p.manifest("models", "openai", SETTINGS, &[("fast", FAST)]))
        .policy("p", policy)
        .spawn()
        .await;
    let body = json!({"model": "fast", "max_tokens": 10, "messages": [{"role": "user", "content": "deploy?"}]});
    let (status, pending) = post(&tg, &tg.key, &body).await;
    assert_eq!(status, 409, "{pending}");
    assert_eq!(pending["error"]["code"], "approval_pending");
    let id = pending["error"]["approval_id"].as_str().expect("approval id").to_string();
    assert!(p.seen().is_empty());
    let approver =
        tollgate::identity::create_key(&tg.gw.store, "acme", "sec", Some(tollgate::identity::Role::Approver), None, 0)
            .await
            .unwrap()
            .secret;
    let decided = reqwest::Client::new()
        .post(format!("{}/v1/approvals/{id}/decision", tg.base))
        .bearer_auth(&approver)
        .json(&json!({"decision": "approve", "reason": "fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    let (status, done) = post(&tg, &tg.key, &body).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["choices"][0]["message"]["content"], "echo deploy?");
    assert_eq!(p.seen().len(), 1);
}

#[tokio::test]
async fn bad_requests_to_the_endpoint_are_refused_and_change_nothing() {
    let p = Provider::start().await;
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 4096\n")
        .manifest("models", p.manifest("models", "openai", SETTINGS, &[("fast", FAST)]))
        .policy("p", budgets(""))
        .spawn()
        .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", tg.base);
    let before = tg.gw.store.audit(&tollgate::store::AuditFilter::default()).await.unwrap().len();
    let no_key = client.post(&url).json(&chat("fast", "x", None)).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let v: Value = no_key.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let wrong_key =
        client.post(&url).bearer_auth("tg_0000000000000000000000").json(&chat("fast", "x", None)).send().await.unwrap();
    assert_eq!(wrong_key.status(), 401);
    let raw = |body: Vec<u8>| {
        let (client, url, key) = (client.clone(), url.clone(), tg.key.clone());
        async move {
            let r = client
                .post(&url)
                .bearer_auth(&key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("a JSON error body"))
        }
    };
    let cases: Vec<(Vec<u8>, u16, Option<&str>)> = vec![
        (b"{not json".to_vec(), 400, None),
        (b"[1,2]".to_vec(), 400, None),
        (vec![0xff, 0xfe, 0x00], 400, None),
        (format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(), 400, None),
        (br#"{"model": "fast", "model": "dear", "messages": []}"#.to_vec(), 400, None),
        (json!({"model": 7, "messages": []}).to_string().into_bytes(), 400, Some("model")),
        (json!({"model": "fast"}).to_string().into_bytes(), 400, Some("messages")),
        (
            json!({"model": "fast", "messages": [{"role": "user", "content": 5}]}).to_string().into_bytes(),
            400,
            Some("messages"),
        ),
        (
            json!({"model": "fast", "messages": [], "max_tokens": "lots"}).to_string().into_bytes(),
            400,
            Some("max_tokens"),
        ),
        (
            json!({"model": "fast", "messages": [], "tools": [{"type": "function"}]}).to_string().into_bytes(),
            400,
            Some("tools"),
        ),
        (
            json!({"model": "fast", "messages": [{"role": "user", "content": "x".repeat(8000)}]})
                .to_string()
                .into_bytes(),
            413,
            None,
        ),
    ];
    for (body, want, param) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let (status, v) = raw(body).await;
        assert_eq!(status, want, "{shown}: {v}");
        assert!(v["error"]["message"].is_string(), "{shown}: {v}");
        if let Some(param) = param {
            assert_eq!(v["error"]["param"], param, "{shown}: {v}");
        }
    }
    assert!(p.seen().is_empty());
    let after = tg.gw.store.audit(&tollgate::store::AuditFilter::default()).await.unwrap().len();
    assert_eq!(before, after, "refused before the pipeline: nothing recorded, nothing held");
    assert_eq!(usage_of(&tg, "eng-tokens").await, (100_000, 0, 0));
}

#[tokio::test]
#[ignore = "needs Python (.venv with openai, see .ci/install-deps.sh)"]
async fn the_openai_python_client_is_answered_and_governed() {
    let p = Provider::start().await;
    let policy = format!(
        "{ALLOW_ALL}\n[[grant]]\nid = \"no-dear\"\nprincipals = [\"*\"]\ntools = [\"llm__chat\"]\neffect = \"deny\"\n\
         when = {{ properties = {{ model = {{ const = \"dear\" }} }}, required = [\"model\"] }}\n\
         [[budget]]\nid = \"broke\"\nscope = \"team:broke\"\nunit = \"tokens\"\nlimit = \"10\"\n"
    );
    let models = [("fast", FAST), ("dear", "id = \"ok\"\ninput_per_mtok = \"9\"\noutput_per_mtok = \"9\"")];
    let tg = gateway(&p, "openai", &models, policy).await;
    let (broke_key, _) = tg.new_key("broke", "acme").await;
    let script = repo_root().join("tests/py/openai_client.py");
    let out = tokio::process::Command::new(crate::thirdparty::venv_bin("python"))
        .arg(&script)
        .args(["--base-url", &format!("{}/v1", tg.base), "--key", &tg.key, "--broke-key", &broke_key])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(report["models"], json!(["dear", "fast"]));
    assert_eq!(report["plain"]["text"], "echo hello from python");
    assert_eq!(report["plain"]["prompt_tokens"], tokens("hello from python"));
    assert_eq!(report["stream"]["text"], "echo streaming now please");
    assert!(report["stream"]["chunks"].as_i64().unwrap() >= 4, "{report}");
    assert_eq!(report["stream"]["usage_total"], tokens("streaming now please") + tokens("echo streaming now please"));
    assert_eq!(report["denied"]["error"], "PermissionDeniedError");
    assert_eq!(report["denied"]["status"], 403);
    assert_eq!(report["broke"]["error"], "RateLimitError");
    assert_eq!(report["broke"]["code"], "insufficient_quota");
    // Only the two answered calls reached the provider; all four were audited.
    assert_eq!(p.seen().len(), 2);
    let decisions: Vec<Value> = call_records(&tg).await.iter().map(|r| r["decision"].clone()).collect();
    assert!(decisions.contains(&json!("denied")) && decisions.contains(&json!("over_budget")), "{decisions:?}");
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_and_a_500_is_retried_openai() {
    a_429_is_retried_after_retry_after_and_a_500_is_retried_on("openai").await;
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_and_a_500_is_retried_anthropic() {
    a_429_is_retried_after_retry_after_and_a_500_is_retried_on("anthropic").await;
}

#[tokio::test]
async fn a_hanging_provider_times_out_and_the_hold_is_released_openai() {
    a_hanging_provider_times_out_and_the_hold_is_released_on("openai").await;
}

#[tokio::test]
async fn a_hanging_provider_times_out_and_the_hold_is_released_anthropic() {
    a_hanging_provider_times_out_and_the_hold_is_released_on("anthropic").await;
}

#[tokio::test]
async fn a_stream_cut_midway_ends_in_an_error_and_charges_what_was_sent_openai() {
    a_stream_cut_midway_ends_in_an_error_and_charges_what_was_sent_on("openai").await;
}

#[tokio::test]
async fn a_stream_cut_midway_ends_in_an_error_and_charges_what_was_sent_anthropic() {
    a_stream_cut_midway_ends_in_an_error_and_charges_what_was_sent_on("anthropic").await;
}

/// The shipped example's shape with one key: the optional provider whose key
/// is unset sends nothing and fails over to its fallback; a model with no
/// fallback fails with 502 naming the variable.
#[tokio::test]
async fn an_unconfigured_optional_provider_fails_over_without_a_request() {
    let p = Provider::start().await;
    let keyless = p.manifest(
        "keyless",
        "openai",
        &format!("{SETTINGS}\napi_key = \"${{env:TOLLGATE_TEST_UNSET_KEY}}\"\noptional = true"),
        &[
            ("main", "id = \"ok\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\nfallback = \"spare\""),
            ("alone", "id = \"ok\"\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\""),
        ],
    );
    let backup = p.manifest(
        "backup",
        "anthropic",
        SETTINGS,
        &[("spare", "id = \"ok\"\ninput_per_mtok = \"2\"\noutput_per_mtok = \"2\"")],
    );
    let tg = TestGateway::builder()
        .manifest("keyless", keyless)
        .manifest("backup", backup)
        .policy("p", budgets(""))
        .spawn()
        .await;

    let (status, body) = post(&tg, &tg.key, &chat("main", "hi", None)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "spare");
    let seen = p.seen();
    assert_eq!(seen.iter().map(|s| s.wire).collect::<Vec<_>>(), ["anthropic"], "nothing sent for the keyless provider");
    let rec = call_records(&tg).await.pop().unwrap();
    assert_eq!(rec["llm"]["attempts"][0]["provider"], "keyless");
    assert!(rec["llm"]["attempts"][0]["error"].as_str().unwrap().contains("TOLLGATE_TEST_UNSET_KEY"), "{rec}");

    let (status, body) = post(&tg, &tg.key, &chat("alone", "hi", None)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("TOLLGATE_TEST_UNSET_KEY"), "{body}");
    assert_eq!(p.seen().len(), 1, "still nothing sent for the keyless provider");
}

/// docs/llm.md's request, run as written with bash (curl) against a gateway
/// whose `gpt-4o-mini` is served by the stand-in provider.
#[tokio::test]
async fn the_llm_docs_block_runs_as_written() {
    let p = Provider::start().await;
    let tg = gateway(&p, "openai", &[("gpt-4o-mini", FAST)], budgets("")).await;
    let block = doc_block("docs/llm.md", "chat-completions");
    let work = tempfile::tempdir().unwrap();
    let (ok, out) = run_doc_block(work.path(), &block, &[("TG", &tg.base), ("TG_KEY", &tg.key)]).await;
    assert!(ok, "{block}\n---\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["choices"][0]["message"]["content"], "echo hi", "{v}");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(p.seen().len(), 1);
}
