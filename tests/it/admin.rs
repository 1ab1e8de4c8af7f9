//! The admin API end to end: live grant edits reaching open sessions,
//! optimistic concurrency, file grants read-only, revisions, org confinement
//! on every resource, hostile input on every endpoint, tool pins.

use reqwest::Method;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::harness::*;
use tollgate::identity::{self, Role};

/// A file policy: a route, a file grant for `fs__add` and an approval grant.
const FILES: &str = r#"
[[grant]]
id = "file-add"
org = "acme"
principals = ["team:eng"]
tools = ["fs__add"]
effect = "allow"

[[grant]]
id = "file-approve-slow"
org = "acme"
principals = ["team:eng"]
tools = ["fs__slow"]
effect = "approve"
approval = { timeout = "10m" }

[[budget]]
id = "acme-eng"
scope = "team:eng"
org = "acme"
limit = "5.00"
"#;

pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Api {
    pub fn of(tg: &TestGateway) -> Api {
        Api { base: format!("{}/admin/v1", tg.base), client: reqwest::Client::new() }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req.send().await.expect("admin API answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer { status, headers, body }
    }

    pub async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Answer {
        let headers: &[(&str, &str)] = if body.is_some() { &[("content-type", "application/json")] } else { &[] };
        self.raw(method, path, key, headers, body.map(|b| serde_json::to_vec(&b).unwrap())).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.call(Method::GET, path, key, None).await
    }
}

pub async fn role_key(tg: &TestGateway, org: &str, role: Role) -> (String, String) {
    let k = identity::create_key(&tg.gw.store, org, "ops", Some(role), None, 0).await.expect("key");
    (k.secret, k.row.id)
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default())
}

async fn gateway() -> TestGateway {
    TestGateway::builder().stdio_fixture("fs").policy("files", FILES).spawn().await
}

fn echo_grant(effect: &str) -> Value {
    json!({"id": "api-echo", "principals": ["team:eng"], "tools": ["fs__echo"], "effect": effect})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_edit_denies_the_next_call_of_a_live_session_and_tells_it_the_list_changed() {
    let tg = gateway().await;
    let (admin, admin_id) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    let made = api.call(Method::POST, "/grants", &admin, Some(echo_grant("allow"))).await;
    assert_eq!(made.status, 201, "{}", made.body);
    let etag = made.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(made.body["etag"], etag.as_str());
    assert_eq!(made.body["org"], "acme", "an API grant belongs to the caller's org");

    let (agent, mut heard) = tg.agent(Era::Legacy).await;
    let ok = agent.peer().call_tool(call("fs__echo", json!({"message": "hi"}))).await.unwrap();
    assert_eq!(text_of(&ok), "echo: hi");
    assert!(agent.peer().list_all_tools().await.unwrap().iter().any(|t| t.name == "fs__echo"));
    while heard.try_recv().is_ok() {}

    let changed = api
        .raw(
            Method::PUT,
            "/grants/api-echo",
            &admin,
            &[("content-type", "application/json"), ("if-match", &etag)],
            Some(serde_json::to_vec(&echo_grant("deny")).unwrap()),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_ne!(changed.headers["etag"].to_str().unwrap(), etag, "a change moves the ETag");

    // The very next call, on the session that was already open, is denied.
    let err = agent.peer().call_tool(call("fs__echo", json!({"message": "hi"}))).await;
    let refused = match err {
        Err(e) => e.to_string(),
        Ok(r) => {
            assert_eq!(r.is_error, Some(true), "the call must not run: {r:?}");
            text_of(&r)
        }
    };
    assert!(refused.contains("fs__echo"), "{refused}");
    tokio::time::timeout(WAIT, async {
        while let Some(h) = heard.recv().await {
            if matches!(h, Heard::ToolsChanged) {
                return;
            }
        }
    })
    .await
    .expect("the agent hears tools/list_changed");
    assert!(!agent.peer().list_all_tools().await.unwrap().iter().any(|t| t.name == "fs__echo"));

    // Audited with who made it and the diff.
    let audit = api.get("/audit?kind=grant.update", &admin).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let rec = &audit.body["records"][0];
    assert_eq!(rec["actor"], format!("key:{admin_id}"));
    assert_eq!(rec["detail"]["diff"], json!([{"path": "/effect", "before": "allow", "after": "deny"}]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_etag_gets_412_and_changes_nothing() {
    let tg = gateway().await;
    let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    let made = api.call(Method::POST, "/grants", &admin, Some(echo_grant("allow"))).await;
    let first = made.headers["etag"].to_str().unwrap().to_string();
    let json_ct = ("content-type", "application/json");
    let second = api
        .raw(
            Method::PUT,
            "/grants/api-echo",
            &admin,
            &[json_ct, ("if-match", &first)],
            Some(serde_json::to_vec(&echo_grant("approve")).unwrap()),
        )
        .await;
    assert_eq!(second.status, 200);
    let stale = api
        .raw(
            Method::PUT,
            "/grants/api-echo",
            &admin,
            &[json_ct, ("if-match", &first)],
            Some(serde_json::to_vec(&echo_grant("deny")).unwrap()),
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(stale.body["code"], "precondition_failed");
    let gone = api.raw(Method::DELETE, "/grants/api-echo", &admin, &[("if-match", &first)], None).await;
    assert_eq!(gone.status, 412);
    let now = api.get("/grants/api-echo", &admin).await;
    assert_eq!(now.body["effect"], "approve", "the stale writes changed nothing");
    assert_eq!(now.body["revision"], 2);
    assert_eq!(tg.gw.policies.current().grant("api-echo").unwrap().effect.as_str(), "approve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_grant_is_read_only_through_the_api_and_the_409_names_its_file() {
    let tg = gateway().await;
    let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    let listed = api.get("/grants", &admin).await;
    let file_grant = listed.body["grants"].as_array().unwrap().iter().find(|g| g["id"] == "file-add").cloned().unwrap();
    assert_eq!(file_grant["source"], "file");
    let body = json!({"id": "file-add", "principals": ["*"], "tools": ["*"], "effect": "allow"});
    for (method, body) in [(Method::PUT, Some(body.clone())), (Method::DELETE, None), (Method::POST, Some(body))] {
        let path = if method == Method::POST { "/grants" } else { "/grants/file-add" };
        let r = api.call(method.clone(), path, &admin, body).await;
        assert_eq!(r.status, 409, "{method} {}", r.body);
        assert_eq!(r.body["code"], "read_only");
        assert!(r.body["file"].as_str().unwrap().ends_with("files.toml"), "{}", r.body);
        assert!(r.body["message"].as_str().unwrap().contains("files.toml"));
    }
    let g = tg.gw.policies.current().grant("file-add").cloned().unwrap();
    assert_eq!(g.principals.len(), 1, "the file grant is unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revisions_keep_who_when_and_the_diff_across_delete_and_recreate() {
    let tg = gateway().await;
    let (admin, admin_id) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    assert_eq!(api.call(Method::POST, "/grants", &admin, Some(echo_grant("allow"))).await.status, 201);
    let mut changed = echo_grant("allow");
    changed["rate"] = json!("10/min");
    assert_eq!(api.call(Method::PUT, "/grants/api-echo", &admin, Some(changed)).await.status, 200);
    assert_eq!(api.call(Method::DELETE, "/grants/api-echo", &admin, None).await.status, 204);
    assert!(tg.gw.policies.current().grant("api-echo").is_none(), "a deleted grant is out of force");
    assert_eq!(api.get("/grants/api-echo", &admin).await.status, 404);
    let again = api.call(Method::POST, "/grants", &admin, Some(echo_grant("deny"))).await;
    assert_eq!(again.body["revision"], 4, "a grant made again continues its revisions");

    let revs = api.get("/grants/api-echo/revisions", &admin).await;
    let revs = revs.body["revisions"].as_array().unwrap().clone();
    let actions: Vec<&str> = revs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "update", "delete", "create"]);
    assert!(revs.iter().all(|r| r["actor"] == format!("key:{admin_id}")));
    assert_eq!(revs[1]["diff"], json!([{"path": "/rate", "before": null, "after": "10/min"}]));
    assert!(revs[2]["grant_after"].is_null());
    let kinds = api.get("/audit?kind=grant.delete", &admin).await;
    assert_eq!(kinds.body["records"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_key_reaches_nothing_of_this_org() {
    let tg = TestGateway::builder()
        .server("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\noperator_orgs = [\"acme\"]\n")
        .stdio_fixture("fs")
        .policy("files", FILES)
        .spawn()
        .await;
    let (admin, admin_id) = role_key(&tg, "acme", Role::Admin).await;
    let (approver, _) = role_key(&tg, "acme", Role::Approver).await;
    let (other, _) = role_key(&tg, "globex", Role::Admin).await;
    let (other_approver, _) = role_key(&tg, "globex", Role::Approver).await;
    let (other_auditor, _) = role_key(&tg, "globex", Role::Auditor).await;
    let api = Api::of(&tg);
    assert_eq!(api.call(Method::POST, "/grants", &admin, Some(echo_grant("allow"))).await.status, 201);
    let budget =
        api.call(Method::PUT, "/budgets/acme-api", &admin, Some(json!({"scope": "team:eng", "limit": "2.00"}))).await;
    assert_eq!(budget.status, 200, "{}", budget.body);

    // A pending action of acme's.
    let (agent, _) = tg.agent(Era::Legacy).await;
    let waiting = tokio::spawn(async move {
        let r = agent.peer().call_tool(call("fs__slow", json!({"steps": 1}))).await;
        (agent, r)
    });
    let pending = tokio::time::timeout(WAIT, async {
        loop {
            let l = api.get("/approvals?status=pending", &approver).await;
            if let Some(id) = l.body["approvals"][0]["id"].as_str() {
                break id.to_string();
            }
            assert!(!waiting.is_finished(), "the call should wait for approval");
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the action is pending");

    let before = tg.gw.policies.current().grants.len();
    let json_grant = Some(echo_grant("deny"));
    let cases: Vec<(Method, String, &str, Option<Value>)> = vec![
        (Method::GET, "/grants/api-echo".into(), &other, None),
        (Method::PUT, "/grants/api-echo".into(), &other, json_grant.clone()),
        (Method::DELETE, "/grants/api-echo".into(), &other, None),
        (Method::GET, "/grants/api-echo/revisions".into(), &other, None),
        (Method::GET, format!("/keys/{admin_id}"), &other, None),
        (Method::DELETE, format!("/keys/{admin_id}"), &other, None),
        (Method::GET, "/budgets/acme-api".into(), &other, None),
        (Method::GET, "/budgets/acme-eng".into(), &other, None),
        (Method::POST, "/budgets/acme-api/topup".into(), &other, Some(json!({"amount": "100.00"}))),
        (Method::GET, "/teams/eng".into(), &other, None),
        (Method::GET, format!("/approvals/{pending}"), &other_approver, None),
        (Method::POST, format!("/approvals/{pending}/decision"), &other_approver, Some(json!({"decision": "approve"}))),
    ];
    for (method, path, key, body) in cases {
        let r = api.call(method.clone(), &path, key, body).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
        assert_eq!(r.body["code"], "not_found");
    }
    // Creating acme's resources from globex: refused, not made.
    let r = api
        .call(
            Method::POST,
            "/grants",
            &other,
            Some(json!({"id": "x", "org": "acme", "principals": ["*"], "tools": ["*"], "effect": "allow"})),
        )
        .await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("org")));
    let r = api
        .call(
            Method::POST,
            "/grants",
            &other,
            Some(json!({"id": "api-echo", "principals": ["*"], "tools": ["*"], "effect": "allow"})),
        )
        .await;
    assert_eq!(r.status, 409, "an id in use elsewhere is not taken over");
    let r = api.call(Method::PUT, "/budgets/sneaky", &other, Some(json!({"scope": "org:acme", "limit": "1.00"}))).await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("scope")));
    let r =
        api.call(Method::PUT, "/budgets/acme-api", &other, Some(json!({"scope": "org:globex", "limit": "1.00"}))).await;
    assert_eq!(r.status, 409, "another org's budget id is not taken over: {}", r.body);
    // Lists show only the caller's org.
    for path in ["/grants", "/keys", "/budgets", "/approvals?status=pending", "/audit"] {
        let r = api.get(path, &other).await;
        assert_eq!(r.status, 200, "{path}");
        let text = r.body.to_string();
        assert!(
            !text.contains("api-echo")
                && !text.contains(&admin_id)
                && !text.contains("acme-api")
                && !text.contains(&pending),
            "{path}: {text}"
        );
    }
    let r = api.get("/audit", &other_auditor).await;
    assert!(r.body["records"].as_array().unwrap().iter().all(|x| x["org"] == "globex"), "{}", r.body);
    // Shared tool pins: only an operator org's admins.
    let r = api.call(Method::DELETE, "/pins/fs__echo", &other, None).await;
    assert_eq!((r.status, r.body["code"].clone()), (403, json!("forbidden")));
    // Roles: an approver cannot edit grants, an auditor cannot create keys.
    let r = api.call(Method::POST, "/grants", &other_approver, Some(echo_grant("allow"))).await;
    assert_eq!(r.status, 403);
    let r = api.call(Method::POST, "/keys", &other_auditor, Some(json!({"team": "x"}))).await;
    assert_eq!(r.status, 403);

    assert_eq!(tg.gw.policies.current().grants.len(), before, "nothing changed");
    assert_eq!(tg.gw.policies.current().grant("api-echo").unwrap().effect.as_str(), "allow");
    assert!(tg.gw.store.key_by_id(&admin_id).await.unwrap().unwrap().revoked_at.is_none());
    assert_eq!(api.get("/budgets/acme-api", &admin).await.body["limit"], 2_000_000);
    let still = api.get(&format!("/approvals/{pending}"), &approver).await;
    assert_eq!(still.body["approval"]["status"], "pending");
    // acme's own approver releases it.
    let ok = api
        .call(
            Method::POST,
            &format!("/approvals/{pending}/decision"),
            &approver,
            Some(json!({"decision": "deny", "reason": "test"})),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let (_agent, r) = waiting.await.unwrap();
    let denied = r.map(|r| text_of(&r)).unwrap_or_else(|e| e.to_string());
    assert!(denied.contains("denied"), "{denied}");
}

/// (method, path, headers, body, status, the field or code the error names)
type BadInput<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_endpoint_gets_a_json_4xx_and_changes_nothing() {
    let tg = gateway().await;
    let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    assert_eq!(api.call(Method::POST, "/grants", &admin, Some(echo_grant("allow"))).await.status, 201);
    let audit_before = tg.gw.store.audit(&Default::default()).await.unwrap().len();
    let keys_before = tg.gw.store.list_keys(None).await.unwrap().len();
    let huge = vec![b'['; 300 * 1024];
    let deep = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100)).into_bytes();
    let json_ct = ("content-type", "application/json");
    // (method, path, headers, body, status, field or code)
    let cases: Vec<BadInput> = vec![
        (Method::POST, "/grants", vec![json_ct], b"{".to_vec(), 400, "bad_request"),
        (Method::POST, "/grants", vec![json_ct], b"[]".to_vec(), 400, "body"),
        (Method::POST, "/grants", vec![json_ct], br#"{"id":"a","id":"b"}"#.to_vec(), 400, "bad_request"),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":7,"principals":["*"],"tools":["*"],"effect":"allow"}"#.to_vec(),
            400,
            "id",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":"x","principals":"*","tools":["*"],"effect":"allow"}"#.to_vec(),
            400,
            "principals",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":"x","principals":["*"],"tools":["*"],"effect":"allow","bogus":1}"#.to_vec(),
            400,
            "bogus",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"principals":["*"],"tools":["*"],"effect":"allow"}"#.to_vec(),
            400,
            "id",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":"x","principals":["*"],"tools":["*"],"effect":"sometimes"}"#.to_vec(),
            400,
            "effect",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":"x","principals":["*"],"tools":["*"],"effect":"allow","when":{"pattern":"("}}"#.to_vec(),
            400,
            "when",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":"x","principals":["*"],"tools":["*"],"effect":"allow","rate":"lots"}"#.to_vec(),
            400,
            "rate",
        ),
        (
            Method::POST,
            "/grants",
            vec![json_ct],
            br#"{"id":"x","principals":["*"],"tools":["*"],"effect":"approve","approval":{"route":"nowhere"}}"#
                .to_vec(),
            400,
            "approval.route",
        ),
        (Method::POST, "/grants", vec![json_ct], huge.clone(), 413, "too_large"),
        (Method::POST, "/grants", vec![json_ct], deep.clone(), 400, "bad_request"),
        (Method::POST, "/grants", vec![("content-type", "text/plain")], b"{}".to_vec(), 415, "unsupported_media_type"),
        (Method::POST, "/grants", vec![json_ct], vec![0xff, 0xfe], 400, "bad_request"),
        (
            Method::PUT,
            "/grants/api-echo",
            vec![json_ct],
            br#"{"id":"other","principals":["*"],"tools":["*"],"effect":"allow"}"#.to_vec(),
            400,
            "id",
        ),
        (
            Method::PUT,
            "/grants/api-echo",
            vec![json_ct],
            br#"{"id":"api-echo","principals":[],"tools":["*"],"effect":"allow"}"#.to_vec(),
            400,
            "principals",
        ),
        (
            Method::PUT,
            "/grants/nope",
            vec![json_ct],
            br#"{"principals":["*"],"tools":["*"],"effect":"allow"}"#.to_vec(),
            404,
            "not_found",
        ),
        (Method::POST, "/keys", vec![json_ct], br#"{"team":"bad team"}"#.to_vec(), 400, "team"),
        (Method::POST, "/keys", vec![json_ct], br#"{"team":"t","role":"root"}"#.to_vec(), 400, "role"),
        (Method::POST, "/keys", vec![json_ct], br#"{"role":"admin"}"#.to_vec(), 400, "team"),
        (Method::POST, "/keys", vec![json_ct], huge.clone(), 413, "too_large"),
        (Method::DELETE, "/keys/k_missing", vec![], vec![], 404, "not_found"),
        (Method::PUT, "/budgets/b1", vec![json_ct], br#"{"scope":"everyone","limit":"1"}"#.to_vec(), 400, "scope"),
        (Method::PUT, "/budgets/b1", vec![json_ct], br#"{"scope":"team:eng","limit":"-1"}"#.to_vec(), 400, "limit"),
        (Method::PUT, "/budgets/b1", vec![json_ct], br#"{"scope":"team:eng","limit":1}"#.to_vec(), 400, "limit"),
        (
            Method::PUT,
            "/budgets/b1",
            vec![json_ct],
            br#"{"scope":"team:eng","limit":"1","period":"hourly"}"#.to_vec(),
            400,
            "period",
        ),
        (
            Method::PUT,
            "/budgets/acme-eng",
            vec![json_ct],
            br#"{"scope":"team:eng","limit":"1"}"#.to_vec(),
            409,
            "read_only",
        ),
        (Method::POST, "/budgets/acme-eng/topup", vec![json_ct], br#"{"amount":"1"}"#.to_vec(), 409, "read_only"),
        (Method::POST, "/budgets/missing/topup", vec![json_ct], br#"{"amount":"1"}"#.to_vec(), 404, "not_found"),
        (Method::POST, "/approvals/none/decision", vec![json_ct], br#"{"decision":"maybe"}"#.to_vec(), 400, "decision"),
        (
            Method::POST,
            "/approvals/none/decision",
            vec![json_ct],
            br#"{"decision":"approve"}"#.to_vec(),
            404,
            "not_found",
        ),
        (Method::GET, "/audit?limit=abc", vec![], vec![], 400, "invalid"),
        (Method::GET, "/audit?since=yesterday-ish", vec![], vec![], 400, "since"),
        (Method::GET, "/audit?limit=0", vec![], vec![], 400, "limit"),
        (Method::GET, "/audit/export?format=csv", vec![], vec![], 400, "format"),
        (Method::POST, "/pins/nope/accept", vec![], vec![], 404, "not_found"),
        (Method::POST, "/pins/fs__echo/accept", vec![json_ct], br#"{"hash":"deadbeef"}"#.to_vec(), 409, "conflict"),
        (Method::GET, "/no/such/route", vec![], vec![], 404, "not_found"),
    ];
    for (method, path, headers, body, status, what) in cases {
        let r = api.raw(method.clone(), path, &admin, &headers, Some(body)).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert!(r.body.is_object(), "{method} {path}: a JSON error, got {}", r.body);
        assert!(r.body["code"] == what || r.body["field"] == what, "{method} {path}: expected {what}, got {}", r.body);
        assert!(r.body["message"].is_string());
    }
    // Without a key, or with a wrong one: 401 before anything is read.
    let r = api.raw(Method::POST, "/grants", "tg_wrong", &[json_ct], Some(b"{".to_vec())).await;
    assert_eq!((r.status, r.body["code"].clone()), (401, json!("unauthorized")));
    let agent_key = tg.key.clone();
    let r = api.get("/grants", &agent_key).await;
    assert_eq!((r.status, r.body["code"].clone()), (403, json!("forbidden")), "an agent key has no admin role");

    assert_eq!(
        tg.gw.store.audit(&Default::default()).await.unwrap().len(),
        audit_before,
        "nothing was audited: nothing changed"
    );
    assert_eq!(tg.gw.store.list_keys(None).await.unwrap().len(), keys_before);
    assert_eq!(tg.gw.policies.current().grant("api-echo").unwrap().effect.as_str(), "allow");
    assert!(tg.gw.policies.current().grant("x").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_accepts_a_changed_definition_and_the_quarantined_tool_is_callable_again() {
    let probe = TestGateway::builder().stdio_fixture("fs").spawn().await;
    let hash = probe.gw.upstreams.catalog().tool("fs__echo").unwrap().hash.clone();
    drop(probe);
    let manifest = format!("{}\n[tools.echo]\npin = \"{hash}\"\n", stdio_fixture("fs"));
    let tg = TestGateway::builder().manifest("fs", manifest).spawn().await;
    let (admin, admin_id) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    let (agent, _) = tg.agent(Era::Legacy).await;
    agent.peer().call_tool(call("fs__mutate", json!({"description": "Echoes, differently."}))).await.unwrap();
    tg.wait_until(|g| g.upstreams.catalog().quarantine_of("fs__echo").is_some()).await;

    let cat = api.get("/catalog", &admin).await;
    let q = cat.body["quarantined"].as_array().unwrap().iter().find(|q| q["tool"] == "fs__echo").cloned().unwrap();
    assert_eq!(q["pinned"], hash.as_str());
    let new_hash = q["hash"].as_str().unwrap().to_string();
    assert!(cat.body["upstreams"].as_array().unwrap().iter().any(|u| u["name"] == "fs" && u["health"] == "up"));

    let accepted = api.call(Method::POST, "/pins/fs__echo/accept", &admin, Some(json!({"hash": new_hash}))).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!((accepted.body["state"].clone(), accepted.body["pinned"].clone()), (json!("ok"), json!(new_hash)));
    let r = agent.peer().call_tool(call("fs__echo", json!({"message": "back"}))).await.unwrap();
    assert_eq!(text_of(&r), "echo: back");
    let audit = api.get("/audit?kind=tool.pin.accept", &admin).await;
    let rec = &audit.body["records"][0];
    assert_eq!(
        (rec["actor"].clone(), rec["detail"]["before"].clone()),
        (json!(format!("key:{admin_id}")), json!(hash))
    );

    // The admin pin now guards the tool: another change quarantines it again.
    agent.peer().call_tool(call("fs__mutate", json!({"description": "Echoes, a third way."}))).await.unwrap();
    tg.wait_until(|g| g.upstreams.catalog().quarantine_of("fs__echo").is_some()).await;
    let unpinned = api.call(Method::DELETE, "/pins/fs__echo", &admin, None).await;
    assert_eq!((unpinned.status, unpinned.body["pin_source"].clone()), (200, json!("none")));
    assert!(tg.gw.upstreams.catalog().tool("fs__echo").is_some(), "unpinned: callable whatever its definition");
}

/// Every admin route, as the router serves it: the document must list each.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/grants"),
    ("post", "/grants"),
    ("get", "/grants/{id}"),
    ("put", "/grants/{id}"),
    ("delete", "/grants/{id}"),
    ("get", "/grants/{id}/revisions"),
    ("get", "/keys"),
    ("post", "/keys"),
    ("get", "/keys/{id}"),
    ("delete", "/keys/{id}"),
    ("get", "/teams"),
    ("get", "/teams/{name}"),
    ("get", "/budgets"),
    ("get", "/budgets/{id}"),
    ("put", "/budgets/{id}"),
    ("post", "/budgets/{id}/topup"),
    ("get", "/approvals"),
    ("get", "/approvals/{id}"),
    ("post", "/approvals/{id}/decision"),
    ("get", "/audit"),
    ("get", "/audit/export"),
    ("get", "/catalog"),
    ("get", "/pins"),
    ("post", "/pins/{tool}/accept"),
    ("delete", "/pins/{tool}"),
    ("get", "/openapi.json"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_each_answers_as_documented() {
    let tg = gateway().await;
    let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    let doc = reqwest::get(format!("{}/admin/v1/openapi.json", tg.base)).await.unwrap();
    assert_eq!(doc.status(), 200, "the document needs no key");
    let doc: Value = doc.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, ROUTES.len(), "no undocumented and no phantom operations");
    for (method, path) in ROUTES {
        let op = &paths[*path][*method];
        assert!(op.is_object(), "{method} {path} is not documented");
        // Each route is really served: with no key it answers the documented
        // 401 (or, for the document itself, 200), never the router's 404/405.
        let url =
            format!("{}/admin/v1{}", tg.base, path.replace("{id}", "x").replace("{name}", "x").replace("{tool}", "x"));
        let r = reqwest::Client::new().request(method.to_uppercase().parse().unwrap(), &url).send().await.unwrap();
        let status = r.status().as_u16().to_string();
        assert!(op["responses"][&status].is_object(), "{method} {path} answered {status}, which is not documented");
        assert!(status == "401" || *path == "/openapi.json", "{method} {path}: {status}");
    }
    // The admin key sees the same document's shapes.
    assert_eq!(api.get("/grants", &admin).await.status, 200);
}

/// The document is valid OpenAPI 3.1 as a real validator reads it (client
/// generators refuse, for one, a response without a description).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (openapi-spec-validator)"]
async fn the_openapi_document_is_valid_openapi_3_1() {
    let tg = gateway().await;
    let doc = reqwest::get(format!("{}/admin/v1/openapi.json", tg.base)).await.unwrap().text().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &doc).unwrap();
    let out = tokio::process::Command::new(crate::thirdparty::venv_bin("openapi-spec-validator"))
        .args(["--schema", "3.1"])
        .arg(&file)
        .current_dir(dir.path())
        .output()
        .await
        .expect("openapi-spec-validator runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the validator refused the document:\n{text}");
    assert!(text.contains("OK"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python (schemathesis)"]
async fn schemathesis_finds_no_response_that_breaks_the_openapi_document() {
    let tg = gateway().await;
    let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
    let api = Api::of(&tg);
    // Something to read and change, so generated calls reach past 404.
    assert_eq!(api.call(Method::POST, "/grants", &admin, Some(echo_grant("allow"))).await.status, 201);
    let base = format!("{}/admin/v1", tg.base);
    // Schemathesis keeps a cache folder in its working directory: a temporary
    // one, so a test run leaves the work tree as it was.
    let cwd = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(crate::thirdparty::venv_bin("schemathesis"))
        .current_dir(cwd.path())
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        // Every check but positive_data_acceptance: the API's checks are
        // deliberately tighter than JSON Schema can state (durations, money,
        // schemas that must compile), so some schema-valid input is refused.
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--workers", "2", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .expect("schemathesis runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found failures:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Tested: 25"), "every operation was tested:\n{text}");
}

/// `tollgate --url URL <verb>` with `TOLLGATE_ADMIN_KEY`: (success, stdout, stderr).
async fn cli(base: &str, key: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(TOLLGATE)
        .args(["--url", base])
        .args(args)
        .env("TOLLGATE_ADMIN_KEY", key)
        .env_remove("TOLLGATE_CONFIG")
        .output()
        .await
        .expect("run tollgate");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_a_running_gateway_through_the_admin_api() {
    let tg = gateway().await;
    let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
    let file = tg.dir().join("grant.json");
    std::fs::write(&file, echo_grant("allow").to_string()).unwrap();
    let path = file.to_str().unwrap();

    let (ok, out, err) = cli(&tg.base, &admin, &["grants", "create", path]).await;
    assert!(ok, "{err}");
    let made: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(made["etag"], "\"1\"");
    assert!(tg.gw.policies.current().grant("api-echo").is_some(), "in force at once");

    let (ok, table, _) = cli(&tg.base, &admin, &["grants", "list"]).await;
    assert!(ok && table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("api-echo") && l.contains("allow") && l.contains("api")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("file-add") && l.contains("file")), "{table}");
    let (_, listed, _) = cli(&tg.base, &admin, &["grants", "list", "--json"]).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(listed["grants"].as_array().unwrap().iter().any(|g| g["id"] == "api-echo"));

    std::fs::write(&file, echo_grant("deny").to_string()).unwrap();
    let (ok, _, err) = cli(&tg.base, &admin, &["grants", "update", "api-echo", path, "--if-match", "\"1\""]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&tg.base, &admin, &["grants", "update", "api-echo", path, "--if-match", "\"1\""]).await;
    assert!(!ok && err.contains("412 precondition_failed"), "a stale update fails: {err}");
    let (ok, _, err) = cli(&tg.base, &admin, &["grants", "delete", "file-add"]).await;
    assert!(!ok && err.contains("409 read_only") && err.contains("files.toml"), "{err}");
    let (ok, revs, _) = cli(&tg.base, &admin, &["grants", "revisions", "api-echo"]).await;
    assert!(ok && revs.contains("/effect: \"allow\" -> \"deny\""), "{revs}");

    let (ok, secret, err) =
        cli(&tg.base, &admin, &["keys", "create", "--team", "ops", "--org", "ignored", "--json"]).await;
    assert!(ok, "{err}");
    let key: Value = serde_json::from_str(&secret).unwrap();
    assert_eq!(key["org"], "acme", "a key made through the API is in the admin's org");
    let (_, keys, _) = cli(&tg.base, &admin, &["keys", "list"]).await;
    assert!(keys.contains(key["id"].as_str().unwrap()), "{keys}");

    let (ok, _, err) =
        cli(&tg.base, &admin, &["budgets", "set", "--id", "cli-b", "--scope", "team:eng", "--limit", "3.00"]).await;
    assert!(ok, "{err}");
    let (_, budgets, _) = cli(&tg.base, &admin, &["budgets", "spend"]).await;
    assert!(budgets.lines().any(|l| l.starts_with("cli-b") && l.contains("3.00")), "{budgets}");

    let (ok, tools, _) = cli(&tg.base, &admin, &["tools"]).await;
    assert!(ok && tools.lines().any(|l| l.starts_with("fs__echo") && l.contains("up")), "{tools}");
    let (ok, export, _) = cli(&tg.base, &admin, &["audit", "export", "--kind", "grant.update"]).await;
    assert!(ok);
    let lines: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{export}");

    let (ok, _, err) = cli(&tg.base, "tg_not_a_key", &["grants", "list"]).await;
    assert!(!ok && err.contains("401"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_key_from_the_config_administers_a_fresh_deployment() {
    const VAR: &str = "TOLLGATE_TEST_BOOTSTRAP_KEY";
    let secret = "tg_bootstrapbootstrapbootstrap0123456789";
    // SAFETY: nextest runs each test in its own process; no thread reads the
    // environment yet.
    unsafe { std::env::set_var(VAR, secret) };
    let server = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nbootstrap_key = \"${{env:{VAR}}}\"\nbootstrap_org = \"acme\"\n"
    );
    let tg = TestGateway::builder().server(&server).stdio_fixture("fs").policy("files", FILES).spawn().await;
    let api = Api::of(&tg);
    let r = api.call(Method::POST, "/keys", secret, Some(json!({"team": "ops", "role": "admin"}))).await;
    assert_eq!((r.status, r.body["org"].clone()), (201, json!("acme")), "{}", r.body);
    let audit = api.get("/audit?kind=key.bootstrap", secret).await;
    assert_eq!(audit.body["records"].as_array().unwrap().len(), 1, "{}", audit.body);
    // A second start finds it stored and adds nothing.
    let tg = tg.restart(TestGateway::builder().server(&server).stdio_fixture("fs").policy("files", FILES)).await;
    let audit = Api::of(&tg).get("/audit?kind=key.bootstrap", secret).await;
    assert_eq!(audit.body["records"].as_array().unwrap().len(), 1);
}

/// docs/admin-api.md's two command blocks, run as written with bash against
/// a gateway (`$TG`) and an admin key of org acme (`$ADMIN`): the grant
/// they create ends as a deny at revision 2, and the CLI makes a key in acme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_docs_blocks_run_as_written() {
    let curl_block = doc_block("docs/admin-api.md", "admin-grants");
    let body = curl_block.split("-d '").nth(1).and_then(|r| r.split('\'').next()).expect("the POST body").to_string();
    for (block, file) in [(curl_block, None), (doc_block("docs/admin-api.md", "remote-cli"), Some(body))] {
        let tg = gateway().await;
        let (admin, _) = role_key(&tg, "acme", Role::Admin).await;
        let work = tempfile::tempdir().unwrap();
        if let Some(f) = &file {
            std::fs::write(work.path().join("eng-echo.json"), f).unwrap();
        }
        let (ok, out) = run_doc_block(work.path(), &block, &[("TG", &tg.base), ("ADMIN", &admin)]).await;
        assert!(ok, "{block}\n---\n{out}");
        let api = Api::of(&tg);
        let g = api.get("/grants/eng-echo", &admin).await;
        assert_eq!(g.status, 200, "{}", g.body);
        let revisions = api.get("/grants/eng-echo/revisions", &admin).await;
        let revisions = revisions.body["revisions"].as_array().cloned().unwrap_or_default();
        if file.is_none() {
            assert_eq!(g.body["effect"], "deny", "{}", g.body);
            assert_eq!(revisions.len(), 2, "created, then updated: {revisions:?}");
        } else {
            // Created, then updated with the same body; listed; a key made in acme.
            assert_eq!(g.body["effect"], "allow", "{}", g.body);
            assert_eq!(revisions.len(), 2, "{revisions:?}");
            assert!(out.contains("eng-echo"), "{out}");
            let keys = tg.gw.store.list_keys(Some("acme")).await.unwrap();
            assert!(keys.iter().any(|k| k.team == "eng"), "the CLI made an eng key in acme");
        }
    }
}
