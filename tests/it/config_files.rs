//! Config and manifest errors name the file, the line and the field; every
//! shipped file loads through the real loader.

use std::path::Path;

use crate::harness::*;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn load_errors(gateway: &str, manifests: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", gateway);
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    for (name, text) in manifests {
        write(dir.path(), &format!("tool-manifests/{name}"), text);
    }
    let lookup = |n: &str| (n == "GH_TOKEN").then(|| "t0ken".to_string());
    match tollgate::config::load_with_env(&dir.path().join("tollgate.toml"), &lookup) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_file_line_and_field() {
    let e = load_errors("[server]\nlisten = \"nowhere\"\n", &[]);
    assert!(e.contains("tollgate.toml:2: server.listen:"), "{e}");

    let e =
        load_errors("", &[("gh.toml", "name = \"gh\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\nbogus = 1\n")]);
    assert!(e.contains("gh.toml:") && e.contains("bogus"), "{e}");

    let e = load_errors(
        "",
        &[(
            "gh.toml",
            "name = \"gh\"\n[transport]\ntype = \"http\"\nurl = \"http://x\"\nheaders = { Authorization = \"Bearer abc\" }\n",
        )],
    );
    assert!(e.contains("gh.toml:5: transport.headers.Authorization: looks like a credential"), "{e}");

    let e = load_errors(
        "",
        &[(
            "gh.toml",
            "name = \"gh\"\n[transport]\ntype = \"http\"\nurl = \"http://x\"\nheaders = { Authorization = \"Bearer ${env:MISSING}\" }\n",
        )],
    );
    assert!(e.contains("gh.toml:5:") && e.contains("MISSING"), "{e}");

    let ok = load_errors(
        "",
        &[(
            "gh.toml",
            "name = \"gh\"\n[transport]\ntype = \"http\"\nurl = \"http://x\"\nheaders = { Authorization = \"Bearer ${env:GH_TOKEN}\" }\n",
        )],
    );
    assert_eq!(ok, "");

    let e = load_errors("", &[("a.toml", "name = \"a\"\n[transport]\ntype = \"carrier-pigeon\"\n")]);
    assert!(e.contains("a.toml:3: transport.type:"), "{e}");

    let e = load_errors(
        "",
        &[(
            "a.toml",
            "name = \"a\"\ncall_timeout = \"soon\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\n[tools.echo]\npin = \"md5:1\"\ncost = \"-1\"\n",
        )],
    );
    assert!(e.contains("a.toml:2: call_timeout:"), "{e}");
    assert!(e.contains("a.toml:7: tools.echo.pin:"), "{e}");
    assert!(e.contains("a.toml:8: tools.echo.cost:"), "{e}");
}

#[test]
fn telemetry_settings_are_checked() {
    let e = load_errors("[telemetry]\notlp_endpoint = \"collector:4318\"\n", &[]);
    assert!(e.contains("tollgate.toml:2: telemetry.otlp_endpoint:"), "{e}");
    let e = load_errors("[telemetry]\notlp_endpoint = \"http://c:4318\"\notlp_protocol = \"grpc\"\n", &[]);
    assert!(e.contains("tollgate.toml:3: telemetry.otlp_protocol: `grpc` is not one of"), "{e}");
    let e = load_errors(
        "[telemetry]\notlp_endpoint = \"http://c:4318\"\notlp_headers = { authorization = \"Bearer x\" }\n",
        &[],
    );
    assert!(e.contains("tollgate.toml:3: telemetry.otlp_headers.authorization: looks like a credential"), "{e}");
    let e = load_errors("[telemetry]\nservice_name = \"\"\n", &[]);
    assert!(e.contains("telemetry.service_name: must not be empty"), "{e}");
    let ok = load_errors(
        "[telemetry]\notlp_endpoint = \"https://c:4318/\"\notlp_protocol = \"http/json\"\n\
         otlp_headers = { authorization = \"Bearer ${env:GH_TOKEN}\" }\n",
        &[],
    );
    assert_eq!(ok, "");

    // Off by default; OpenTelemetry's standard variables turn it on when the file says nothing.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    let path = dir.path().join("tollgate.toml");
    let c = tollgate::config::load_with_env(&path, &|_: &str| None).unwrap();
    assert!(c.telemetry.otlp.is_none());
    let env = |n: &str| match n {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_string()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/json".to_string()),
        "OTEL_SERVICE_NAME" => Some("gw-eu".to_string()),
        _ => None,
    };
    let o = tollgate::config::load_with_env(&path, &env).unwrap().telemetry.otlp.expect("export on");
    assert_eq!(o.traces_url(), "http://collector:4318/v1/traces");
    assert_eq!(o.protocol, tollgate::config::OtlpProtocol::Json);
    assert_eq!(o.service_name, "gw-eu");
    write(dir.path(), "tollgate.toml", "[telemetry]\notlp_endpoint = \"http://file:4318/v1/traces\"\n");
    let o = tollgate::config::load_with_env(&path, &env).unwrap().telemetry.otlp.unwrap();
    assert_eq!(o.traces_url(), "http://file:4318/v1/traces", "the file wins over the environment");
}

#[test]
fn a_store_password_comes_from_the_environment_never_the_file() {
    let e = load_errors("store = \"postgres://tg:hunter2@db:5432/tollgate\"\n", &[]);
    assert!(e.contains("tollgate.toml:1: store: a password in the store URL must come from the environment"), "{e}");
    assert!(!e.contains("hunter2"), "the error does not repeat the password: {e}");
    let e = load_errors("store = \"postgres://tg:${env:NOT_SET_ANYWHERE}@db/tollgate\"\n", &[]);
    assert!(e.contains("store: environment variable `NOT_SET_ANYWHERE` is not set"), "{e}");
    assert_eq!(load_errors("store = \"postgres://tg@db/tollgate\"\n", &[]), "", "no password: trust or .pgpass");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "store = \"postgres://tg:${env:PGPASSWORD}@db:5432/tollgate\"\n");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    let env = |n: &str| (n == "PGPASSWORD").then(|| "s3cret".to_string());
    let c = tollgate::config::load_with_env(&dir.path().join("tollgate.toml"), &env).unwrap();
    assert_eq!(c.store.expose(), "postgres://tg:s3cret@db:5432/tollgate");
    assert!(!format!("{c:?}").contains("s3cret"), "the resolved password is not in the config's Debug");
    // A password with URL delimiters stays one password.
    let env = |n: &str| (n == "PGPASSWORD").then(|| "p@ss/w:rd?".to_string());
    let c = tollgate::config::load_with_env(&dir.path().join("tollgate.toml"), &env).unwrap();
    assert_eq!(c.store.expose(), "postgres://tg:p%40ss%2Fw%3Ard%3F@db:5432/tollgate");
    let e = load_errors("store = \"postgres://db/tollgate?user=tg&password=hunter2\"\n", &[]);
    assert!(e.contains("store: a password in the store URL must come from the environment"), "{e}");
}

#[test]
fn duplicate_names_and_prefixes_are_refused_at_load() {
    let m = "name = \"dup\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\n";
    let e = load_errors("", &[("a.toml", m), ("b.toml", m)]);
    assert!(e.contains("b.toml") && e.contains("already the name"), "{e}");
    let e = load_errors(
        "",
        &[
            ("a.toml", "name = \"a\"\nprefix = \"p\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\n"),
            ("b.toml", "name = \"b\"\nprefix = \"p\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\n"),
        ],
    );
    assert!(e.contains("already the prefix"), "{e}");
    let e = load_errors(
        "",
        &[(
            "a.toml",
            "name = \"a\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\n[tools.one]\nrename = \"same\"\n[tools.two]\nrename = \"same\"\n",
        )],
    );
    assert!(e.contains("also the name of tool"), "{e}");
}

#[test]
fn check_command_reports_errors_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "[server]\nlisten = 5\n");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    let out = std::process::Command::new(TOLLGATE)
        .args(["--config"])
        .arg(dir.path().join("tollgate.toml"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tollgate.toml:2"), "{err}");
}

#[test]
fn every_shipped_example_and_manifest_loads() {
    let root = repo_root();
    let mut configs = vec![root.join("examples/quickstart/tollgate.toml"), root.join("examples/llm/tollgate.toml")];
    if root.join("tollgate.toml").exists() {
        configs.push(root.join("tollgate.toml"));
    }
    // `check` refuses a stdio command that is not on PATH; the shipped ones
    // (npx, mcp-server-time) are installed by .ci/install-deps.sh, not by a
    // bare `cargo test`, so stand-ins are put first on PATH here.
    let bin = tempfile::tempdir().unwrap();
    for program in ["npx", "mcp-server-time"] {
        use std::os::unix::fs::PermissionsExt;
        let p = bin.path().join(program);
        std::fs::write(
            &p,
            "#!/bin/sh
exit 0
",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    for c in configs {
        // Every referenced variable is set; OpenTelemetry's own are not (they would turn export on).
        let lookup = |n: &str| (!n.starts_with("OTEL_")).then(|| "placeholder".to_string());
        if let Err(e) = tollgate::config::load_with_env(&c, &lookup) {
            panic!("{}: {e}", c.display());
        }
        let out = std::process::Command::new(TOLLGATE)
            .arg("--config")
            .arg(&c)
            .arg("check")
            .env("PATH", &path)
            .env("OPENAI_API_KEY", "placeholder")
            .env("ANTHROPIC_API_KEY", "placeholder")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", c.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn llm_manifests_are_checked_with_file_line_and_field() {
    let model = "[models.fast]\ninput_per_mtok = \"0.15\"\noutput_per_mtok = 0.6\n";
    let ok = load_errors(
        "[llm]\ntool = \"ai__chat\"\n",
        &[(
            "openai.toml",
            &format!(
                "name = \"openai\"\nkind = \"llm\"\nprovider = \"openai\"\napi_key = \"${{env:GH_TOKEN}}\"\n{model}"
            ),
        )],
    );
    assert_eq!(ok, "");
    let cases: Vec<(String, &str)> = vec![
        (format!("name = \"x\"\nkind = \"llm\"\nprovider = \"cohere\"\n{model}"), "x.toml:3: provider: `cohere` is not one of openai, anthropic"),
        (format!("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\napi_key = \"sk-inline\"\n{model}"), "x.toml:4: api_key: give the key as a `${env:NAME}` reference"),
        (format!("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\nbase_url = \"ftp://x\"\n{model}"), "x.toml:4: base_url: must be an http"),
        ("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\n[models.m]\ninput_per_mtok = \"cheap\"\noutput_per_mtok = \"1\"\n".into(), "x.toml:5: models.m.input_per_mtok:"),
        ("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\n[models.m]\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\nfallback = \"nope\"\n".into(), "models.m.fallback: `nope` is not a model"),
        ("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\n[models.a]\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\nfallback = \"b\"\n[models.b]\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\nfallback = \"a\"\n".into(), "fallbacks loop back"),
        ("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\n".into(), "models: name at least one model"),
        (format!("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\nretries = 99\n{model}"), "x.toml:4: retries: must be at most 10"),
        (format!("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\ntransport = 1\n{model}"), "x.toml:4"),
    ];
    for (text, want) in cases {
        let e = load_errors("", &[("x.toml", &text)]);
        assert!(e.contains(want), "want {want:?} in: {e}");
    }
    let twice = format!("name = \"y\"\nkind = \"llm\"\nprovider = \"anthropic\"\n{model}");
    let first = format!("name = \"x\"\nkind = \"llm\"\nprovider = \"openai\"\n{model}");
    let e = load_errors("", &[("x.toml", &first), ("y.toml", &twice)]);
    assert!(e.contains("model `fast` is also offered by provider `x`"), "{e}");
    let e = load_errors("[llm]\ntool = \"bad name!\"\n", &[]);
    assert!(e.contains("tollgate.toml:2: llm.tool"), "{e}");
}

#[test]
fn check_refuses_a_missing_policy_folder_and_a_command_not_on_path() {
    let run = |dir: &std::path::Path| {
        let (code, _, err) = tollgate_run(dir, &["check"]);
        (code, err)
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "policies_dir = \"no-such-folder\"\n");
    std::fs::create_dir_all(dir.path().join("tool-manifests")).unwrap();
    let (code, err) = run(dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-folder") && err.contains("policy folder"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "");
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    write(
        dir.path(),
        "tool-manifests/ghost.toml",
        "name = \"ghost\"\n[transport]\ntype = \"stdio\"\ncommand = \"no-such-program-tollgate-test\"\n",
    );
    let (code, err) = run(dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ghost.toml") && err.contains("`no-such-program-tollgate-test` is not found on PATH"),
        "{err}"
    );
}

/// An `optional` LLM provider whose key is not in the environment loads
/// unconfigured (naming what is missing); without `optional` the same file
/// is a load error naming the variable.
#[test]
fn an_optional_llm_provider_without_its_key_loads_unconfigured() {
    let provider = |optional: &str| {
        format!(
            "name = \"ai\"\nkind = \"llm\"\nprovider = \"openai\"\napi_key = \"${{env:NO_SUCH_KEY}}\"\n{optional}\n\
             [models.\"m\"]\ninput_per_mtok = \"1\"\noutput_per_mtok = \"1\"\n"
        )
    };
    let e = load_errors("", &[("ai.toml", &provider(""))]);
    assert!(e.contains("ai.toml:4: api_key:") && e.contains("NO_SUCH_KEY"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "");
    write(dir.path(), "tool-manifests/ai.toml", &provider("optional = true"));
    let lookup = |_: &str| None;
    let config = tollgate::config::load_with_env(&dir.path().join("tollgate.toml"), &lookup).expect("loads");
    let p = &config.llm.providers[0];
    assert_eq!(p.unconfigured.as_deref(), Some(&["NO_SUCH_KEY".to_string()][..]));
    assert!(p.api_key.is_none());

    // With the key set, `optional` changes nothing.
    let lookup = |n: &str| (n == "NO_SUCH_KEY").then(|| "sk-1".to_string());
    let config = tollgate::config::load_with_env(&dir.path().join("tollgate.toml"), &lookup).expect("loads");
    assert!(config.llm.providers[0].unconfigured.is_none());
    assert_eq!(config.llm.providers[0].api_key.as_ref().map(|k| k.expose().to_string()).as_deref(), Some("sk-1"));
}

/// `[agent_sessions]`: defaults per transport (64 remote, 0 stdio, 5 min
/// idle), and out-of-range or unknown values refused with file, line and field.
#[test]
fn agent_sessions_have_defaults_per_transport_and_bad_values_are_refused() {
    let http = "name = \"gh\"\n[transport]\ntype = \"http\"\nurl = \"http://x\"\n";
    let stdio = "name = \"gs\"\n[transport]\ntype = \"stdio\"\ncommand = \"x\"\n";
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tollgate.toml", "");
    write(dir.path(), "tool-manifests/gh.toml", http);
    write(dir.path(), "tool-manifests/gs.toml", &format!("{stdio}[agent_sessions]\nmax = 3\nidle = \"90s\"\n"));
    let config = tollgate::config::load(&dir.path().join("tollgate.toml")).expect("loads");
    let by_name = |n: &str| config.manifests.iter().find(|m| m.name == n).expect("manifest").agent_sessions;
    let five_minutes = std::time::Duration::from_secs(300);
    assert_eq!(by_name("gh"), tollgate::config::AgentSessions { max: 64, idle: five_minutes });
    assert_eq!(by_name("gs"), tollgate::config::AgentSessions { max: 3, idle: std::time::Duration::from_secs(90) });
    let e = load_errors("", &[("gs.toml", &format!("{stdio}[agent_sessions]\nmax = -1\n"))]);
    assert!(e.contains("gs.toml:6: agent_sessions.max: must be 0 to 10000"), "{e}");
    let e = load_errors("", &[("gh.toml", &format!("{http}[agent_sessions]\nidle = \"0s\"\n"))]);
    assert!(e.contains("gh.toml:6: agent_sessions.idle:"), "{e}");
    let e = load_errors("", &[("gh.toml", &format!("{http}[agent_sessions]\nidle = \"soon\"\n"))]);
    assert!(e.contains("gh.toml:6: agent_sessions.idle:"), "{e}");
    let e = load_errors("", &[("gh.toml", &format!("{http}[agent_sessions]\nmaximum = 3\n"))]);
    assert!(e.contains("gh.toml:") && e.contains("maximum"), "{e}");
}
