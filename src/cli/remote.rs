//! The admin CLI verbs against a running gateway (`--url`): each maps to an
//! `/admin/v1` request with the key in `TOLLGATE_ADMIN_KEY`, and prints a
//! table for people or, with `--json`, the API's JSON for scripts.

use reqwest::Method;
use serde_json::{Value, json};

use super::approvals::ApprovalsCommand;
use super::audit::AuditCommand;
use super::budgets::BudgetsCommand;
use super::grants::{GrantsCommand, read_body};
use super::keys::KeysCommand;

/// A verb that can run against the admin API.
pub enum Verb {
    Grants(GrantsCommand),
    Keys(KeysCommand),
    Budgets(BudgetsCommand),
    Approvals(ApprovalsCommand),
    Audit(AuditCommand),
    Tools { json: bool },
}

struct Api {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, String> {
        let mut req = self.http.request(method.clone(), format!("{}/admin/v1{path}", self.base)).bearer_auth(&self.key);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = r.status();
        let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = r.text().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let mut v: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let code = v["code"].as_str().unwrap_or("error");
            let message = v["message"].as_str().map_or_else(|| v.to_string(), str::to_string);
            return Err(format!("{} {code}: {message}", status.as_u16()));
        }
        if let (Some(e), Value::Object(m)) = (etag, &mut v)
            && !m.contains_key("etag")
        {
            m.insert("etag".into(), Value::from(e));
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(Method::GET, path, None, &[]).await
    }

    async fn text(&self, path: &str) -> Result<String, String> {
        let r = self
            .http
            .get(format!("{}/admin/v1{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = r.status();
        let text = r.text().await.map_err(|e| e.to_string())?;
        if status.is_success() { Ok(text) } else { Err(format!("{}: {text}", status.as_u16())) }
    }
}

/// Runs `verb` against the gateway at `url`.
pub async fn run(url: &str, verb: Verb) -> Result<(), String> {
    let key = std::env::var("TOLLGATE_ADMIN_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or("--url needs an admin API key in TOLLGATE_ADMIN_KEY")?;
    let api = Api { base: url.trim_end_matches('/').to_string(), key, http: reqwest::Client::new() };
    match verb {
        Verb::Grants(c) => grants(&api, c).await,
        Verb::Keys(c) => keys(&api, c).await,
        Verb::Budgets(c) => budgets(&api, c).await,
        Verb::Approvals(c) => approvals(&api, c).await,
        Verb::Audit(c) => audit(&api, c).await,
        Verb::Tools { json } => tools(&api, json).await,
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Prints `rows` as a table of `columns` (header, JSON field).
fn table(rows: &[Value], columns: &[(&str, &str)]) {
    let cell = |r: &Value, f: &str| match &r[f] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => {
            a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    };
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(|r| columns.iter().map(|(_, f)| cell(r, f)).collect()).collect();
    super::table::print(&header, &cells, &[]);
}

fn items(v: &Value, field: &str) -> Vec<Value> {
    v[field].as_array().cloned().unwrap_or_default()
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn grants(api: &Api, c: GrantsCommand) -> Result<(), String> {
    let if_match = |m: Option<String>| m.map(|e| vec![("if-match", e)]).unwrap_or_default();
    match c {
        GrantsCommand::List { json } => {
            let v = api.get("/grants").await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                table(
                    &items(&v, "grants"),
                    &[
                        ("ID", "id"),
                        ("EFFECT", "effect"),
                        ("PRINCIPALS", "principals"),
                        ("TOOLS", "tools"),
                        ("SOURCE", "source"),
                        ("ETAG", "etag"),
                    ],
                );
            }
        }
        GrantsCommand::Show { id } => println!("{}", pretty(&api.get(&format!("/grants/{}", enc(&id))).await?)),
        GrantsCommand::Create { file } => {
            println!("{}", pretty(&api.send(Method::POST, "/grants", Some(read_body(&file)?), &[]).await?));
        }
        GrantsCommand::Update { id, file, if_match: m } => {
            let v =
                api.send(Method::PUT, &format!("/grants/{}", enc(&id)), Some(read_body(&file)?), &if_match(m)).await?;
            println!("{}", pretty(&v));
        }
        GrantsCommand::Delete { id, if_match: m } => {
            api.send(Method::DELETE, &format!("/grants/{}", enc(&id)), None, &if_match(m)).await?;
            println!("deleted {id}");
        }
        GrantsCommand::Revisions { id, json } => {
            let v = api.get(&format!("/grants/{}/revisions", enc(&id))).await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                let rows: Vec<Value> = items(&v, "revisions")
                    .into_iter()
                    .map(|mut r| {
                        let changes: Vec<String> = r["diff"]
                            .as_array()
                            .map(|d| {
                                d.iter()
                                    .map(|c| {
                                        format!(
                                            "{}: {} -> {}",
                                            c["path"].as_str().unwrap_or(""),
                                            c["before"],
                                            c["after"]
                                        )
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        r["changes"] = Value::from(changes.join("; "));
                        r
                    })
                    .collect();
                table(
                    &rows,
                    &[
                        ("REV", "revision"),
                        ("ACTION", "action"),
                        ("AT", "at"),
                        ("ACTOR", "actor"),
                        ("CHANGES", "changes"),
                    ],
                );
            }
        }
    }
    Ok(())
}

async fn keys(api: &Api, c: KeysCommand) -> Result<(), String> {
    match c {
        KeysCommand::Create { team, org: _, role, label, json } => {
            // The org is the admin key's: the API confines it.
            let v =
                api.send(Method::POST, "/keys", Some(json!({"team": team, "role": role, "label": label})), &[]).await?;
            if json {
                println!("{v}");
            } else {
                println!("{}", v["secret"].as_str().unwrap_or(""));
                eprintln!(
                    "key {} for team {} in org {}: the secret above is shown once; store it now",
                    v["id"].as_str().unwrap_or(""),
                    v["team"].as_str().unwrap_or(""),
                    v["org"].as_str().unwrap_or("")
                );
            }
        }
        KeysCommand::List { org: _, json } => {
            let v = api.get("/keys").await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                table(
                    &items(&v, "keys"),
                    &[
                        ("ID", "id"),
                        ("ORG", "org"),
                        ("TEAM", "team"),
                        ("ROLE", "role"),
                        ("STATE", "state"),
                        ("LABEL", "label"),
                    ],
                );
            }
        }
        KeysCommand::Revoke { id } => {
            api.send(Method::DELETE, &format!("/keys/{}", enc(&id)), None, &[]).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn budgets(api: &Api, c: BudgetsCommand) -> Result<(), String> {
    let idem = |k: Option<String>| k.map(|k| vec![("idempotency-key", k)]).unwrap_or_default();
    match c {
        BudgetsCommand::Set { id, scope, org: _, unit, limit, period, idempotency_key } => {
            // PUT replaces the budget: what was left out keeps its current value.
            let current = if scope.is_none() || limit.is_none() || period.is_none() || unit.is_none() {
                let all = api.get("/budgets").await?;
                items(&all, "budgets").into_iter().find(|b| b["id"] == json!(id))
            } else {
                None
            };
            let keep = |given: Option<String>, field: &str| {
                given.map(serde_json::Value::from).or_else(|| current.as_ref().map(|b| b[field].clone()))
            };
            let body = json!({
                "scope": keep(scope, "scope"),
                "unit": keep(unit, "unit"),
                // Tokens are whole numbers; money's text is decimal units.
                "limit": keep(limit, if current.as_ref().is_some_and(|b| b["unit"] == "tokens") { "limit" } else { "limit_text" })
                    .map(|v| if v.is_number() { Value::from(v.to_string()) } else { v }),
                "period": keep(period, "period"),
            });
            let v =
                api.send(Method::PUT, &format!("/budgets/{}", enc(&id)), Some(body), &idem(idempotency_key)).await?;
            println!("{}", pretty(&v));
        }
        BudgetsCommand::Topup { id, amount, idempotency_key } => {
            let path = format!("/budgets/{}/topup", enc(&id));
            let v = api.send(Method::POST, &path, Some(json!({"amount": amount})), &idem(idempotency_key)).await?;
            println!("{}", pretty(&v));
        }
        BudgetsCommand::List { org: _, json } | BudgetsCommand::Spend { org: _, json } => {
            let v = api.get("/budgets").await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                table(
                    &items(&v, "budgets"),
                    &[
                        ("ID", "id"),
                        ("SCOPE", "scope"),
                        ("PERIOD", "period"),
                        ("LIMIT", "limit_text"),
                        ("SPENT", "spent_text"),
                        ("HELD", "held_text"),
                        ("REMAINING", "remaining_text"),
                        ("SOURCE", "source"),
                    ],
                );
            }
        }
    }
    Ok(())
}

async fn approvals(api: &Api, c: ApprovalsCommand) -> Result<(), String> {
    let decide = |id: String, decision: &'static str, reason: Option<String>| async move {
        let v = api
            .send(
                Method::POST,
                &format!("/approvals/{}/decision", enc(&id)),
                Some(json!({"decision": decision, "reason": reason})),
                &[],
            )
            .await?;
        println!("{id}: {}", v["decision"].as_str().unwrap_or(decision));
        Ok::<_, String>(())
    };
    match c {
        ApprovalsCommand::List { status, org: _, limit, json } => {
            let q = if status == "all" {
                format!("?limit={limit}")
            } else {
                format!("?status={}&limit={limit}", enc(&status))
            };
            let v = api.get(&format!("/approvals{q}")).await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                table(
                    &items(&v, "approvals"),
                    &[
                        ("ID", "id"),
                        ("STATUS", "status"),
                        ("TOOL", "tool"),
                        ("COST", "estimated_cost"),
                        ("PRINCIPAL", "principal"),
                        ("EXPIRES", "expires_at"),
                    ],
                );
            }
        }
        ApprovalsCommand::Show { id } => println!("{}", pretty(&api.get(&format!("/approvals/{}", enc(&id))).await?)),
        ApprovalsCommand::Approve { id, reason } => decide(id, "approve", reason).await?,
        ApprovalsCommand::Deny { id, reason } => decide(id, "deny", reason).await?,
        ApprovalsCommand::Deliveries { .. } => {
            return Err(
                "deliveries are read from the store (run without --url) or GET /v1/approvals/{id}/deliveries".into()
            );
        }
    }
    Ok(())
}

async fn audit(api: &Api, c: AuditCommand) -> Result<(), String> {
    match c {
        AuditCommand::Verify => Err("audit verify reads the whole chain from the store: run it without --url".into()),
        AuditCommand::Export { since, until, format, org: _, tool, decision, kind } => {
            let mut q = vec![format!("format={}", enc(&format))];
            for (k, v) in [("since", since), ("until", until), ("tool", tool), ("decision", decision), ("kind", kind)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            print!("{}", api.text(&format!("/audit/export?{}", q.join("&"))).await?);
            Ok(())
        }
    }
}

async fn tools(api: &Api, json: bool) -> Result<(), String> {
    let v = api.get("/catalog").await?;
    if json {
        println!("{}", pretty(&v));
        return Ok(());
    }
    table(&items(&v, "tools"), &[("TOOL", "name"), ("UPSTREAM", "upstream"), ("HEALTH", "health"), ("HASH", "hash")]);
    for q in items(&v, "quarantined") {
        println!("{} (quarantined: {})", q["tool"].as_str().unwrap_or(""), q["reason"].as_str().unwrap_or(""));
    }
    for u in items(&v, "upstreams").iter().filter(|u| u["health"] != "up") {
        println!(
            "upstream {}: {} {}",
            u["name"].as_str().unwrap_or(""),
            u["health"].as_str().unwrap_or(""),
            u["error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
