//! The control plane's whole HTTP surface as callers see it: the OpenAPI document matches the
//! routes served and each of them refuses a caller without credentials; every route gives each
//! role exactly its permissions; web sessions need their CSRF token for every change; failed
//! logins are rate-limited; no page or answer ever shows a connection's secret.

use serde_json::Value;

use crate::api::token_for;
use crate::harness::{exchange, Tern};
use crate::links::server_on;

const ROLES: [&str; 4] = ["viewer", "user", "op", "admin"];
const CANARY: &str = "canary-Zq81xPw";

pub(crate) fn json_call(
    url: &str,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, _, text) = exchange(
        url,
        method,
        path,
        &[("Authorization", &auth)],
        "application/json",
        body,
    );
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn cookie_value(headers: &[String], name: &str) -> Option<String> {
    headers
        .iter()
        .filter_map(|h| h.strip_prefix("set-cookie: "))
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or("").to_string())
}

fn attr(html: &str, marker: &str) -> String {
    let at = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Logs in through the login form; returns the session cookie and the page's CSRF token.
pub(crate) fn login(url: &str, user: &str, password: &str) -> Result<(String, String), u16> {
    let (_, headers, page) = exchange(url, "GET", "/login", &[], "text/plain", "");
    let bound = cookie_value(&headers, "tern_login").unwrap();
    let token = attr(&page, "name=\"csrf\" value=\"");
    let cookie = format!("tern_login={bound}");
    let form = format!("username={user}&password={password}&csrf={token}&next=/dags");
    let (status, headers, _) = exchange(
        url,
        "POST",
        "/login",
        &[("Cookie", &cookie)],
        "application/x-www-form-urlencoded",
        &form,
    );
    if status != 303 {
        return Err(status);
    }
    let set = headers
        .iter()
        .find(|h| h.starts_with("set-cookie: tern_session="))
        .unwrap();
    assert!(
        set.contains("httponly") && set.contains("samesite=strict"),
        "{set}"
    );
    let session = cookie_value(&headers, "tern_session").unwrap();
    let cookie = format!("tern_session={session}");
    let (status, _, page) = exchange(
        url,
        "GET",
        "/dags",
        &[("Cookie", &cookie)],
        "text/plain",
        "",
    );
    assert_eq!(status, 200, "{page}");
    Ok((cookie, attr(&page, "name=\"csrf-token\" content=\"")))
}

/// Path parameters of the document's templates, filled with things that exist.
fn fill(path: &str, run_id: &str) -> String {
    path.replace("{dag_id}", "d")
        .replace("{run_id}", run_id)
        .replace("{task_id}", "a")
        .replace("{try_number}", "1")
        .replace("{name}", "p1")
        .replace("{id}", "1")
}

#[test]
fn the_openapi_document_matches_the_routes_and_each_role_gets_exactly_its_permissions() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"a\", cmd = \"echo hi\")\nshell(id = \"b\", cmd = \"true\", upstream = [\"a\"])\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|r| (*r, token_for(&t, &format!("{r}1"), r)))
        .collect();
    let admin = tokens[3].1.clone();
    let run_id = t.trigger("d", None);
    t.wait_run("d", &run_id, "finished", crate::harness::finished);

    let (status, doc) = json_call(&url, "GET", "/api/v1/openapi.json", &admin, "");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    // Valid by the OpenAPI specification (openapi-spec-validator from PyPI; scripts/test
    // installs it).
    let file = t.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        check.status.success(),
        "the OpenAPI document is invalid (or openapi-spec-validator is missing: pip install openapi-spec-validator): {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let paths = doc["paths"].as_object().unwrap();
    // Every documented operation exists and refuses an anonymous caller.
    let mut documented = Vec::new();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].is_object(),
                "{method} {path} documents its answers"
            );
            let m = method.to_uppercase();
            let (status, _, body) = exchange(
                &url,
                &m,
                &fill(path, &run_id),
                &[],
                "application/json",
                "{}",
            );
            assert_eq!(status, 401, "{m} {path} without credentials: {body}");
            documented.push(format!("{m} {path}"));
        }
    }
    for expected in [
        "GET /api/v1/dags",
        "GET /api/v1/dags/{dag_id}",
        "PATCH /api/v1/dags/{dag_id}",
        "GET /api/v1/dags/{dag_id}/source",
        "GET /api/v1/dags/{dag_id}/versions",
        "GET /api/v1/importErrors",
        "GET /api/v1/dags/{dag_id}/dagRuns",
        "POST /api/v1/dags/{dag_id}/dagRuns",
        "GET /api/v1/dags/{dag_id}/dagRuns/{run_id}",
        "PATCH /api/v1/dags/{dag_id}/dagRuns/{run_id}",
        "DELETE /api/v1/dags/{dag_id}/dagRuns/{run_id}",
        "POST /api/v1/dags/{dag_id}/dagRuns/{run_id}/clear",
        "GET /api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
        "GET /api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
        "PATCH /api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
        "GET /api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
        "GET /api/v1/dags/{dag_id}/dagRuns/{run_id}/outputs",
        "GET /api/v1/pools",
        "PUT /api/v1/pools/{name}",
        "GET /api/v1/agents",
        "POST /api/v1/agents/activations",
        "GET /api/v1/agents/activations",
        "DELETE /api/v1/agents/activations/{id}",
        "GET /api/v1/connections",
        "POST /api/v1/connections",
        "POST /api/v1/connections/{name}/test",
        "GET /api/v1/connections-export",
        "POST /api/v1/connections-import",
        "GET /api/v1/users",
        "POST /api/v1/tokens",
        "GET /api/v1/audit",
        "GET /api/v1/variables",
        "PUT /api/v1/variables/{key}",
        "GET /api/v1/dags/{dag_id}/next",
    ] {
        assert!(
            documented.iter().any(|d| d == expected),
            "{expected} is documented"
        );
    }
    // A route the document does not list is not served.
    let (status, _) = json_call(&url, "GET", "/api/v1/nothing", &admin, "");
    assert_eq!(status, 404);

    // Permissions: (method, path, body, least role). Changes are made so that each role's
    // permitted call succeeds on its own (unique names), or at least is not refused.
    let routes: Vec<(&str, String, String, &str)> = vec![
        ("GET", "/api/v1/dags/d".into(), String::new(), "viewer"),
        (
            "GET",
            "/api/v1/dags/d/source".into(),
            String::new(),
            "viewer",
        ),
        (
            "GET",
            "/api/v1/importErrors".into(),
            String::new(),
            "viewer",
        ),
        (
            "GET",
            format!("/api/v1/dags/d/dagRuns/{run_id}"),
            String::new(),
            "viewer",
        ),
        (
            "GET",
            format!("/api/v1/dags/d/dagRuns/{run_id}/taskInstances/a/logs/1"),
            String::new(),
            "viewer",
        ),
        ("GET", "/api/v1/pools".into(), String::new(), "viewer"),
        ("GET", "/api/v1/connections".into(), String::new(), "viewer"),
        (
            "POST",
            format!("/api/v1/dags/d/dagRuns/{run_id}/clear"),
            r#"{"task_ids": ["b"]}"#.into(),
            "user",
        ),
        (
            "PATCH",
            format!("/api/v1/dags/d/dagRuns/{run_id}/taskInstances/b"),
            r#"{"state": "success"}"#.into(),
            "user",
        ),
        (
            "PUT",
            "/api/v1/pools/p1".into(),
            r#"{"slots": 3}"#.into(),
            "op",
        ),
        (
            "POST",
            "/api/v1/agents/activations".into(),
            r#"{"site": "branch"}"#.into(),
            "op",
        ),
        (
            "GET",
            "/api/v1/agents/activations".into(),
            String::new(),
            "op",
        ),
        ("GET", "/api/v1/variables".into(), String::new(), "viewer"),
        (
            "PUT",
            "/api/v1/variables/region".into(),
            r#"{"value": "eu"}"#.into(),
            "op",
        ),
        (
            "GET",
            "/api/v1/variables/region".into(),
            String::new(),
            "viewer",
        ),
        ("GET", "/api/v1/dags/d/next".into(), String::new(), "viewer"),
        ("GET", "/api/v1/users".into(), String::new(), "admin"),
        ("GET", "/api/v1/audit".into(), String::new(), "admin"),
    ];
    for (method, path, body, least) in &routes {
        let least_rank = ROLES.iter().position(|r| r == least).unwrap();
        for (rank, (role, token)) in tokens.iter().enumerate() {
            let (status, v) = json_call(&url, method, path, token, body);
            if rank >= least_rank {
                assert!(
                    (200..300).contains(&status),
                    "{role} may {method} {path}: {status} {v}"
                );
            } else {
                assert_eq!(status, 403, "{role} may not {method} {path}: {v}");
                assert!(v["message"].as_str().unwrap().contains(least), "{v}");
            }
        }
    }
    // Users are created by admins only, with a generated password shown once.
    let (status, _) = json_call(
        &url,
        "POST",
        "/api/v1/users",
        &tokens[2].1,
        r#"{"username": "x", "role": "viewer"}"#,
    );
    assert_eq!(status, 403);
    let (status, v) = json_call(
        &url,
        "POST",
        "/api/v1/users",
        &admin,
        r#"{"username": "x", "role": "viewer"}"#,
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["password"].as_str().unwrap().len(), 20);
    let (status, v) = json_call(
        &url,
        "POST",
        "/api/v1/users",
        &admin,
        r#"{"username": "y", "role": "root"}"#,
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    // A viewer makes and revokes its own token, not another user's.
    let viewer = &tokens[0].1;
    let (status, v) = json_call(
        &url,
        "POST",
        "/api/v1/tokens",
        viewer,
        r#"{"name": "mine"}"#,
    );
    assert_eq!(status, 201, "{v}");
    let own = v["token"]["id"].to_string();
    let (status, _) = json_call(
        &url,
        "POST",
        "/api/v1/tokens",
        viewer,
        r#"{"username": "admin1"}"#,
    );
    assert_eq!(status, 403);
    let (status, _) = json_call(&url, "DELETE", &format!("/api/v1/tokens/{own}"), viewer, "");
    assert_eq!(status, 204);
    // Run lifecycle by hand: mark failed, then delete.
    let user = &tokens[1].1;
    let (status, v) = json_call(
        &url,
        "PATCH",
        &format!("/api/v1/dags/d/dagRuns/{run_id}"),
        user,
        r#"{"state": "failed"}"#,
    );
    assert_eq!(
        (status, v["dag_run"]["state"].as_str()),
        (200, Some("failed")),
        "{v}"
    );
    let (status, v) = json_call(
        &url,
        "PATCH",
        &format!("/api/v1/dags/d/dagRuns/{run_id}"),
        user,
        r#"{"state": "running"}"#,
    );
    assert_eq!(status, 400, "{v}");
    let (status, _) = json_call(
        &url,
        "DELETE",
        &format!("/api/v1/dags/d/dagRuns/{run_id}"),
        user,
        "",
    );
    assert_eq!(status, 204);
    let (status, v) = json_call(
        &url,
        "GET",
        &format!("/api/v1/dags/d/dagRuns/{run_id}"),
        user,
        "",
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
}

#[test]
fn sessions_need_their_csrf_token_and_failed_logins_are_limited() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let password = std::fs::read_to_string(t.path().join("admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let (cookie, csrf) = login(&url, "admin", &password).unwrap();
    let patch = |headers: &[(&str, &str)]| {
        exchange(
            &url,
            "PATCH",
            "/api/v1/dags/d",
            headers,
            "application/json",
            r#"{"is_paused": true}"#,
        )
    };
    let (status, _, body) = patch(&[("Cookie", &cookie)]);
    assert_eq!(status, 403, "no CSRF token: {body}");
    assert!(body.contains("\"csrf\""), "{body}");
    let (status, _, _) = patch(&[("Cookie", &cookie), ("X-CSRF-Token", "0000")]);
    assert_eq!(status, 403, "a wrong CSRF token");
    let (status, _, body) = patch(&[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]);
    assert_eq!(status, 200, "{body}");
    // Reads need no token; forms check theirs.
    let (status, _, _) = exchange(&url, "GET", "/api/v1/dags", &[("Cookie", &cookie)], "", "");
    assert_eq!(status, 200);
    let (status, _, _) = exchange(
        &url,
        "POST",
        "/dags/d/trigger",
        &[("Cookie", &cookie)],
        "application/x-www-form-urlencoded",
        "csrf=forged",
    );
    assert_eq!(status, 403);
    let (status, _, _) = exchange(
        &url,
        "POST",
        "/logout",
        &[("Cookie", &cookie)],
        "application/x-www-form-urlencoded",
        "csrf=forged",
    );
    assert_eq!(status, 403, "even logout needs the token");
    // A login form without its token is refused.
    let (status, _, _) = exchange(
        &url,
        "POST",
        "/login",
        &[],
        "application/x-www-form-urlencoded",
        &format!("username=admin&password={password}"),
    );
    assert_eq!(status, 403);
    // Five wrong passwords, then even the right one waits.
    for _ in 0..5 {
        assert_eq!(login(&url, "admin", "wrong"), Err(401));
    }
    assert_eq!(login(&url, "admin", &password), Err(429));
    // Pages without a session go to the login page; health and assets need nothing.
    let (status, headers, _) = exchange(&url, "GET", "/dags/d", &[], "", "");
    assert_eq!(status, 303);
    assert!(
        headers.iter().any(|h| h == "location: /login?next=/dags/d"),
        "{headers:?}"
    );
    for open in [
        "/health",
        "/static/app.css",
        "/static/app.js",
        "/static/api-docs.js",
        "/login",
    ] {
        assert_eq!(exchange(&url, "GET", open, &[], "", "").0, 200, "{open}");
    }
    assert_eq!(exchange(&url, "GET", "/metrics", &[], "", "").0, 401);
    // The API docs page is for logged-in users too.
    let (status, headers, _) = exchange(&url, "GET", "/api/v1/docs", &[], "", "");
    assert_eq!(status, 303);
    assert!(
        headers
            .iter()
            .any(|h| h == "location: /login?next=/api/v1/docs"),
        "{headers:?}"
    );
    // Every page and asset of the UI carries the browser protections.
    for path in ["/login", "/static/app.js", "/dags/d"] {
        let (_, headers, _) = exchange(&url, "GET", path, &[], "", "");
        for h in [
            "content-security-policy: default-src 'self'",
            "x-frame-options: deny",
            "x-content-type-options: nosniff",
            "referrer-policy: same-origin",
        ] {
            assert!(
                headers.iter().any(|x| x.starts_with(h)),
                "{path}: no {h} in {headers:?}"
            );
        }
    }
}

#[test]
fn no_page_or_answer_shows_a_connection_secret() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let op = token_for(&t, "op1", "op");
    let body = format!(
        r#"{{"name": "warehouse", "uri": "postgres://etl:{CANARY}@db.example:5432/dw", "description": "the DW"}}"#
    );
    let (status, v) = json_call(&url, "POST", "/api/v1/connections", &op, &body);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["host"], "db.example");
    let (status, v) = json_call(&url, "POST", "/api/v1/connections", &op, &body);
    assert_eq!(status, 409, "exists: {v}");
    let (status, v) = json_call(
        &url,
        "POST",
        "/api/v1/connections",
        &op,
        r#"{"name": "bad", "uri": "not a uri"}"#,
    );
    assert_eq!(status, 400, "{v}");
    t.ok(&[
        "connections",
        "add",
        "lake",
        "--uri",
        &format!("s3://bucket?endpoint=http://127.0.0.1:9&region=x&secret={CANARY}"),
    ]);
    let password = std::fs::read_to_string(t.path().join("admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let (cookie, _) = login(&url, "admin", &password).unwrap();
    let admin = token_for(&t, "admin1", "admin");
    let mut seen = 0;
    for page in [
        "/dags",
        "/dags/d",
        "/connections",
        "/agents",
        "/pools",
        "/users",
        "/audit",
    ] {
        let (status, _, html) = exchange(&url, "GET", page, &[("Cookie", &cookie)], "", "");
        assert_eq!(status, 200, "{page}");
        assert!(!html.contains(CANARY), "{page} shows the secret");
        seen += usize::from(html.contains("warehouse"));
    }
    assert!(
        seen >= 2,
        "the connections page and the audit log name the connection"
    );
    for api in [
        "/api/v1/connections",
        "/api/v1/connections/warehouse",
        "/api/v1/connections/lake",
        "/api/v1/audit",
        "/api/v1/openapi.json",
    ] {
        let (status, v) = json_call(&url, "GET", api, &admin, "");
        assert_eq!(status, 200, "{api}: {v}");
        assert!(
            !v.to_string().contains(CANARY),
            "{api} shows the secret: {v}"
        );
    }
    let (_, v) = json_call(&url, "GET", "/api/v1/connections/warehouse", &admin, "");
    assert_eq!(v["login"], "etl", "non-secret fields are shown: {v}");
}

#[test]
fn activation_codes_are_listed_without_the_code_and_can_be_cancelled() {
    let t = Tern::new();
    let (_sa, url) = server_on(&t, 0);
    let op = token_for(&t, "op1", "op");
    let (status, created) = json_call(
        &url,
        "POST",
        "/api/v1/agents/activations",
        &op,
        r#"{"site": "gdansk", "queues": ["heavy"]}"#,
    );
    assert_eq!(status, 201, "{created}");
    let code = created["code"].as_str().unwrap().to_string();
    let (status, v) = json_call(&url, "GET", "/api/v1/agents/activations", &op, "");
    assert_eq!(status, 200, "{v}");
    let listed = &v["activations"][0];
    assert_eq!(listed["site"], "gdansk");
    assert_eq!(listed["state"], "waiting");
    assert_eq!(
        listed["queues"],
        serde_json::json!(["site:gdansk", "heavy"])
    );
    assert!(
        !v.to_string().contains(&code),
        "the code is never listed: {v}"
    );
    let id = listed["id"].as_i64().unwrap();

    // The agents page lists it for an operator, with a Cancel button, and never the code.
    let password = std::fs::read_to_string(t.path().join("admin-password"))
        .unwrap()
        .trim()
        .to_string();
    let (cookie, _) = login(&url, "admin", &password).unwrap();
    let (status, _, html) = exchange(&url, "GET", "/agents", &[("Cookie", &cookie)], "", "");
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!("data-activation=\"{id}\"")),
        "{html}"
    );
    assert!(html.contains(&format!("DELETE /api/v1/agents/activations/{id}")));
    assert!(!html.contains(&code));

    let path = format!("/api/v1/agents/activations/{id}");
    let (status, v) = json_call(&url, "DELETE", &path, &op, "");
    assert_eq!(status, 204, "{v}");
    let (_, v) = json_call(&url, "GET", "/api/v1/agents/activations", &op, "");
    assert_eq!(v["activations"][0]["state"], "expired");
    let (status, v) = json_call(&url, "DELETE", "/api/v1/agents/activations/999", &op, "");
    assert_eq!(status, 404, "{v}");
    // A cancelled code activates nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["agent", "--server", &url, "--activation", &code, "--dir"])
        .arg(t.path().join("agent"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expired"), "{err}");
    let (_, v) = json_call(
        &url,
        "GET",
        "/api/v1/audit",
        &token_for(&t, "adm", "admin"),
        "",
    );
    assert!(v.to_string().contains("agent.activation.cancel"), "{v}");
}

/// `tern --server URL --token T …` from a machine with no metadata database of its own.
pub(crate) fn remote(url: &str, token: &str, args: &[&str]) -> std::process::Output {
    let elsewhere = tempfile::tempdir().unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("--home")
        .arg(elsewhere.path())
        .args(["--server", url, "--token", token])
        .args(args)
        .env_remove("TERN_DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn the_cli_works_against_a_remote_server_with_a_token() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"a\", cmd = \"echo remote-hello\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let token = token_for(&t, "ci", "user");
    let out = remote(&url, &token, &["dags", "list", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dags: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dags[0]["dag_id"], "d");
    let out = remote(&url, &token, &["dags", "trigger", "d", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One output per command whatever the mode: the run id on stdout, the report on stderr.
    let run_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!run_id.contains(' '), "only the run id: {run_id}");
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        report.contains(&format!("run {run_id} of d: success in")),
        "{report}"
    );
    let out = remote(&url, &token, &["logs", "d", &run_id, "a"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("remote-hello"));
    let out = remote(&url, &token, &["runs", "list", "-o", "json"]);
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    let local = t.run(&["dags", "trigger", "d", "--wait"]);
    let local_report = String::from_utf8_lossy(&local.stderr).to_string();
    let shape = |r: &str| -> Vec<String> {
        r.lines()
            .filter(|l| l.starts_with("  "))
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(shape(&report), shape(&local_report), "the same task lines");
    assert!(remote(&url, &token, &["dags", "pause", "d"])
        .status
        .success());
    assert_eq!(
        t.json(&["dags", "list"])[0]["is_paused"],
        true,
        "paused on the server"
    );
    // The role still applies, and a bad token or a local-only command says what to do.
    let out = remote(&url, &token, &["pools", "set", "p", "3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the op role"));
    let out = remote(&url, "tern_wrong", &["dags", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = remote(&url, &token, &["db", "migrate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --server form"));
    let out = remote(&url, "", &["dags", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs an API token"));
}

/// A live page (the grid, a run) is sent again only when what it shows changed: an open tab on
/// an idle DAG costs one small query per refresh, not a page (`X-Tern-Version` → 204).
#[test]
fn live_refreshes_of_an_unchanged_page_send_nothing() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\na = shell(id = \"a\", cmd = \"true\")\nb = shell(id = \"b\", cmd = \"true\")\na >> b\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let (cookie, _) = login(&url, "admin", password.trim()).unwrap();
    let run = t.trigger("d", None);
    t.wait_run("d", &run, "the run", crate::harness::finished);
    let page = |path: &str, version: Option<&str>| {
        let mut headers = vec![("Cookie", cookie.as_str()), ("X-Tern-Refresh", "1")];
        if let Some(v) = version {
            headers.push(("X-Tern-Version", v));
        }
        let (status, _, body) = exchange(&url, "GET", path, &headers, "text/plain", "");
        (status, body)
    };
    let run_path = format!("/dags/d/runs/{run}");
    for path in ["/dags/d", run_path.as_str()] {
        let (status, body) = page(path, None);
        assert_eq!(status, 200);
        let v = attr(&body, "name=\"live-version\" content=\"");
        let (status, body) = page(path, Some(&v));
        assert_eq!(status, 204, "{path}: unchanged, nothing sent: {body}");
        assert!(body.is_empty());
        // Another version (an older page) gets the page.
        let (status, _) = page(path, Some("0"));
        assert_eq!(status, 200);
    }
    let (_, body) = page("/dags/d", None);
    let grid_before = attr(&body, "name=\"live-version\" content=\"");
    let (_, body) = page(&run_path, None);
    let run_before = attr(&body, "name=\"live-version\" content=\"");

    // A task marked failed by hand in the finished run: both pages change.
    let token = token_for(&t, "marker", "user");
    let (status, v) = json_call(
        &url,
        "PATCH",
        &format!("/api/v1/dags/d/dagRuns/{run}/taskInstances/b"),
        &token,
        r#"{"state": "failed"}"#,
    );
    assert_eq!(status, 200, "{v}");
    let (status, _) = page("/dags/d", Some(&grid_before));
    assert_eq!(status, 200, "the grid changed");
    let (status, _) = page(&run_path, Some(&run_before));
    assert_eq!(status, 200, "the run changed");

    // A new run changes the grid.
    let (_, body) = page("/dags/d", None);
    let grid_now = attr(&body, "name=\"live-version\" content=\"");
    let second = t.trigger("d", None);
    t.wait_run("d", &second, "the second run", crate::harness::finished);
    let (status, _) = page("/dags/d", Some(&grid_now));
    assert_eq!(status, 200, "a new run shows");
}

/// A big DAG's grid shows its tasks a page at a time, each page with its own cells.
#[test]
fn a_big_grid_is_shown_a_page_of_tasks_at_a_time() {
    let t = Tern::new();
    t.write_dag(
        "wide.star",
        "dag(id = \"wide\")\nroot = shell(id = \"root\", cmd = \"true\")\nfor i in range(130):\n    root >> empty(id = \"e%d\" % (1000 + i))\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let password = std::fs::read_to_string(t.path().join("admin-password")).unwrap();
    let (cookie, _) = login(&url, "admin", password.trim()).unwrap();
    let run = t.trigger("wide", None);
    t.wait_run("wide", &run, "the wide run", crate::harness::finished);
    let get = |path: &str| {
        let (status, _, body) = exchange(
            &url,
            "GET",
            path,
            &[("Cookie", cookie.as_str())],
            "text/plain",
            "",
        );
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let rows = |html: &str| html.matches("<tr data-t=").count();
    let cells = |html: &str| html.matches("class=\"c s-success\"").count();
    // By default (one run) every task fits on one page.
    let whole = get("/dags/wide");
    assert_eq!(rows(&whole), 131);
    assert!(!whole.contains("id=\"grid-pager\""));
    // 50 rows a page: three pages, each with its tasks' cells, the last with the rest.
    let first = get("/dags/wide?rows=50");
    assert_eq!((rows(&first), cells(&first)), (50, 50));
    assert!(first.contains("tasks 1–50 of 131"), "{first}");
    assert!(
        first.contains("wide?tab=grid&amp;page=1&amp;rows=50\" id=\"grid-next\">"),
        "{first}"
    );
    let second = get("/dags/wide?tab=grid&page=1&rows=50");
    assert!(second.contains("tasks 51–100 of 131"));
    // root and e1000–e1048 on the first page.
    assert!(second.contains("data-t=\"e1049\"") && second.contains("data-t=\"e1098\""));
    assert!(!second.contains("data-t=\"e1048\"") && !second.contains("data-t=\"e1099\""));
    let last = get("/dags/wide?rows=50&page=2");
    assert_eq!((rows(&last), cells(&last)), (31, 31));
    assert!(last.contains("data-t=\"e1129\"") && !last.contains("id=\"grid-next\""));
}
