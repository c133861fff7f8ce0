//! The REST API with users, roles and tokens: every route refuses callers without a valid
//! token, each role gets exactly its permissions, bad requests get `{code, message, hint}`,
//! changes land in the audit log, and the first start makes an `admin` account.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{http, Tern};
use crate::links::server_on;

const ROLES: [&str; 4] = ["viewer", "user", "op", "admin"];

/// Adds a user with `role` and returns a token for it.
pub(crate) fn token_for(t: &Tern, name: &str, role: &str) -> String {
    t.ok(&["users", "add", name, "--role", role]);
    t.ok(&["tokens", "create", name, "--name", "tests"])
        .trim()
        .to_string()
}

pub(crate) fn call(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, text) = http(url, method, path, &headers, body);
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

#[test]
fn every_route_needs_a_token_and_each_role_gets_exactly_its_permissions() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|r| (*r, token_for(&t, &format!("{r}1"), r)))
        .collect();
    // (method, path, body, least role)
    let routes = [
        ("GET", "/api/v1/version", "", "viewer"),
        ("GET", "/api/v1/dags", "", "viewer"),
        ("PATCH", "/api/v1/dags/d", r#"{"is_paused": false}"#, "user"),
        ("POST", "/api/v1/dags/d/dagRuns", r#"{"conf": {}}"#, "user"),
        ("GET", "/api/v1/audit", "", "admin"),
    ];
    for (method, path, body, least) in routes {
        let (status, v) = call(&url, method, path, None, body);
        assert_eq!(status, 401, "{method} {path} without a token: {v}");
        assert_eq!(v["code"], "unauthorized");
        assert!(v["hint"].as_str().unwrap().contains("tern tokens create"));
        let (status, _) = call(&url, method, path, Some("tern_not-a-token"), body);
        assert_eq!(status, 401, "{method} {path} with a wrong token");
        let least_rank = ROLES.iter().position(|r| *r == least).unwrap();
        for (rank, (role, token)) in tokens.iter().enumerate() {
            let (status, v) = call(&url, method, path, Some(token), body);
            if rank >= least_rank {
                assert!(
                    (200..300).contains(&status),
                    "{role} may {method} {path}: {status} {v}"
                );
            } else {
                assert_eq!(status, 403, "{role} may not {method} {path}: {v}");
                assert_eq!(v["code"], "forbidden");
                assert!(v["message"].as_str().unwrap().contains(least), "{v}");
            }
        }
    }
    // What the list shows, and the audit log of the changes, with who made them.
    let admin = &tokens[3].1;
    let (_, v) = call(&url, "GET", "/api/v1/dags", Some(admin), "");
    assert_eq!(v["dags"][0]["dag_id"], "d");
    let (_, v) = call(&url, "GET", "/api/v1/audit", Some(admin), "");
    let entries = v["entries"].as_array().unwrap();
    let triggers: Vec<&str> = entries
        .iter()
        .filter(|e| e["action"] == "run.trigger")
        .map(|e| e["actor"].as_str().unwrap())
        .collect();
    assert_eq!(triggers.len(), 3, "{v:#}");
    for who in ["user1", "op1", "admin1"] {
        assert!(triggers.contains(&who), "{who} triggered: {v:#}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "token.create"
                && e["actor"].as_str().unwrap().starts_with("cli:"))
    );
}

#[test]
fn bad_requests_get_a_code_a_message_and_a_hint() {
    let t = Tern::new();
    t.write_dag(
        "p.star",
        "dag(id = \"p\", params = {\"n\": {\"default\": 1, \"type\": \"integer\"}})\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let token = token_for(&t, "u", "user");
    let tok = Some(token.as_str());
    let (status, v) = call(&url, "POST", "/api/v1/dags/p/dagRuns", tok, "{not json");
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (status, v) = call(
        &url,
        "POST",
        "/api/v1/dags/p/dagRuns",
        tok,
        r#"{"confx": {}}"#,
    );
    assert_eq!(status, 400, "an unknown field is refused: {v}");
    assert!(v["message"].as_str().unwrap().contains("confx"), "{v}");
    let (status, v) = call(
        &url,
        "POST",
        "/api/v1/dags/p/dagRuns",
        tok,
        r#"{"conf": {"params": {"n": "many"}}}"#,
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("invalid_conf")),
        "{v}"
    );
    let (status, v) = call(&url, "POST", "/api/v1/dags/nope/dagRuns", tok, "{}");
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("nope"), "{v}");
    // A paused DAG: a conflict whose hint says how to unpause.
    let (status, _) = call(
        &url,
        "PATCH",
        "/api/v1/dags/p",
        tok,
        r#"{"is_paused": true}"#,
    );
    assert_eq!(status, 200);
    let (status, v) = call(&url, "POST", "/api/v1/dags/p/dagRuns", tok, "{}");
    assert_eq!((status, v["code"].as_str()), (409, Some("paused")), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("is_paused"), "{v}");
    assert_eq!(
        t.json(&["dags", "list"])
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dag_id"] == "p")
            .unwrap()["is_paused"],
        true
    );
}

#[test]
fn revoked_and_expired_tokens_are_refused() {
    let t = Tern::new();
    let (_sa, url) = server_on(&t, 0);
    t.ok(&["users", "add", "v", "--role", "viewer"]);
    let keep = t.ok(&["tokens", "create", "v"]).trim().to_string();
    let revoke = t.ok(&["tokens", "create", "v"]).trim().to_string();
    let short = t
        .ok(&["tokens", "create", "v", "--expires", "1s"])
        .trim()
        .to_string();
    for tok in [&keep, &revoke, &short] {
        assert_eq!(call(&url, "GET", "/api/v1/version", Some(tok), "").0, 200);
    }
    let list = t.json(&["tokens", "list"]);
    let id = list[1]["id"].to_string();
    t.ok(&["tokens", "revoke", &id]);
    assert_eq!(
        call(&url, "GET", "/api/v1/version", Some(&revoke), "").0,
        401
    );
    // The expiry is the behaviour under test: a one-second token, checked after it.
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(
        call(&url, "GET", "/api/v1/version", Some(&short), "").0,
        401
    );
    assert_eq!(call(&url, "GET", "/api/v1/version", Some(&keep), "").0, 200);
    let list = t.json(&["tokens", "list"]);
    assert_eq!(list[1]["revoked"], true);
    assert!(list[0]["last_used_at"].is_string(), "{list:#}");
    // Tokens and passwords are stored only as hashes.
    assert!(crate::harness::files_containing(t.path(), &keep).is_empty());
}

#[test]
fn the_first_start_makes_an_admin_with_a_password_shown_once() {
    use std::os::unix::fs::PermissionsExt;
    let t = Tern::new();
    let (sa, _url) = server_on(&t, 0);
    drop(sa);
    let file = t.path().join("admin-password");
    let password = std::fs::read_to_string(&file).unwrap();
    assert_eq!(password.trim().len(), 20);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let users = t.json(&["users", "list"]);
    assert_eq!(users[0]["username"], "admin");
    assert_eq!(users[0]["role"], "admin");
    // Only a hash is in the database.
    assert_eq!(
        crate::harness::files_containing(t.path(), password.trim()),
        vec![file.display().to_string()]
    );
    // A second start keeps the account and the password.
    let (sa, _url) = server_on(&t, 0);
    drop(sa);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), password);
    assert_eq!(t.json(&["users", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn metrics_need_a_token_and_count_what_happened() {
    let t = Tern::new();
    t.write_dag(
        "m.star",
        "dag(id = \"m\")\nshell(id = \"a\", cmd = \"true\")\nshell(id = \"b\", cmd = \"exit 3\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let token = token_for(&t, "watcher", "viewer");
    assert_eq!(call(&url, "GET", "/metrics", None, "").0, 401);
    let run = t.trigger("m", None);
    t.wait_run("m", &run, "the run", crate::harness::finished);
    assert_eq!(
        call(&url, "GET", "/api/v1/version", Some(&token), "").0,
        200
    );
    let (status, text) = http(
        &url,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(status, 200, "{text}");
    for line in [
        "tern_task_instances{state=\"success\"} 1",
        "tern_task_instances{state=\"failed\"} 1",
        "tern_dag_runs{state=\"failed\"} 1",
        "tern_api_request_seconds_count{route=\"/api/v1/version\",status=\"200\"} 1",
        "tern_import_errors 0",
        "tern_task_try_duration_seconds_count{outcome=\"success\"} 1",
        "tern_task_try_duration_seconds_count{outcome=\"failed\"} 1",
        "tern_claim_latency_seconds_count{queue=\"default\"} 2",
        "tern_role_running{role=\"scheduler\"} 1",
        "tern_role_running{role=\"local_agent\"} 1",
        "tern_role_running{role=\"dag_watcher\"} 1",
        "tern_task_logs_waiting_to_ship 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("tern_scheduler_loop_seconds_count"), "{text}");
    // Health needs no token and says the scheduler is alive.
    let (status, health) = call(&url, "GET", "/health", None, "");
    assert_eq!(status, 200);
    assert_eq!(health["database"], "ok");
    assert_eq!(health["scheduler"], "ok", "{health}");
    // Every role of the process is listed as running, those that beat with a recent beat.
    for role in [
        "scheduler",
        "notifier",
        "queue_watcher",
        "admitter",
        "wake_listener",
        "local_agent",
        "http",
        "agent_liveness",
    ] {
        assert_eq!(
            health["roles"][role]["state"], "running",
            "{role}: {health}"
        );
    }
    assert!(
        health["roles"]["scheduler"]["last_beat_seconds_ago"]
            .as_f64()
            .is_some_and(|s| s < 30.0),
        "{health}"
    );
}

#[test]
fn absurd_numbers_are_refused_with_a_clear_error() {
    let t = Tern::new();
    let (_sa, url) = server_on(&t, 0);
    let admin = t.ok(&["tokens", "create", "admin"]).trim().to_string();
    // A token lasting a billion days: 400 with {code, message, hint}, not a dropped connection.
    let (status, body) = call(
        &url,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        r#"{"name": "forever", "expires_days": 1000000000}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("from 1 to 3650"),
        "{body}"
    );
    assert!(body["hint"].is_string(), "{body}");
    // The same through the CLI: an error, not a panic.
    let out = t.run(&["tokens", "create", "admin", "--expires", "100000000d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("at most 3650 days"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A pool of i64::MAX slots is refused; every pool keeps admitting work.
    let (status, body) = call(
        &url,
        "PUT",
        "/api/v1/pools/huge",
        Some(&admin),
        r#"{"slots": 9223372036854775807}"#,
    );
    assert_eq!(status, 400, "{body}");
    let out = t.run(&["pools", "set", "huge", "9223372036854775807"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 0 to 1000000"));
}

#[test]
fn ids_follow_one_grammar_and_logs_of_similar_runs_never_mix() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"t\", cmd = \"echo run=$TERN_RUN_ID\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let admin = t.ok(&["tokens", "create", "admin"]).trim().to_string();
    let start = std::time::Instant::now();
    while call(&url, "GET", "/api/v1/dags/d", Some(&admin), "").0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the DAG never loaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ids outside the grammar: 400 with {code, message, hint}, nothing created.
    for bad in ["a/b", "", "..", "a\u{0}b", "a b"] {
        let body = serde_json::json!({"dag_run_id": bad}).to_string();
        let (status, v) = call(&url, "POST", "/api/v1/dags/d/dagRuns", Some(&admin), &body);
        assert_eq!(status, 400, "{bad:?}: {v}");
        assert!(v["message"].as_str().unwrap().contains("id"), "{v}");
    }
    // `a:b` and `a_b` are both valid, and each run's log holds only its own lines.
    for id in ["a:b", "a_b"] {
        let body = serde_json::json!({"dag_run_id": id}).to_string();
        let (status, v) = call(&url, "POST", "/api/v1/dags/d/dagRuns", Some(&admin), &body);
        assert_eq!(status, 201, "{id}: {v}");
    }
    for id in ["a:b", "a_b"] {
        t.wait_run("d", id, "the run", crate::harness::finished);
        let log = t.log("d", id, "t", None);
        assert!(log.contains(&format!("run={id}")), "{id}: {log}");
        let other = if id == "a:b" { "a_b" } else { "a:b" };
        assert!(
            !log.contains(&format!("run={other}")),
            "{id} shows {other}'s log: {log}"
        );
    }
    // A NUL in a path or a body is a 400, never a 503.
    let (status, v) = call(&url, "GET", "/api/v1/dags/a%00b", Some(&admin), "");
    assert_eq!(status, 400, "{v}");
    let (status, v) = call(
        &url,
        "PUT",
        "/api/v1/pools/p1",
        Some(&admin),
        r#"{"slots": 1, "description": "a\u0000b"}"#,
    );
    assert_eq!(status, 400, "{v}");
    let (status, v) = call(
        &url,
        "PUT",
        "/api/v1/pools/a..b%2Fc",
        Some(&admin),
        r#"{"slots": 1}"#,
    );
    assert_eq!(status, 400, "{v}");
}

/// The peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// A 30 MB log is read a page at a time and downloaded as a stream (with ranges): readers
/// cost the server bounded memory, not the log's size each.
#[test]
fn big_logs_are_paged_and_streamed_in_bounded_memory() {
    let t = Tern::new();
    t.write_dag(
        "big.star",
        "dag(id = \"big\")\nshell(id = \"t\", cmd = \"i=0; while [ $i -lt 8 ]; do yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -n 50000; i=$((i+1)); done\")\n",
    );
    let (sa, url) = server_on(&t, 0);
    let admin = t.ok(&["tokens", "create", "admin"]).trim().to_string();
    let run_id = t.trigger("big", None);
    t.wait_run("big", &run_id, "the run", crate::harness::finished);
    let base = format!("/api/v1/dags/big/dagRuns/{run_id}/taskInstances/t/logs/1");
    let pid = sa.child.id();
    let before = peak_rss(pid);
    // Four readers at once, each paging through the whole log.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (url, admin, base) = (url.clone(), admin.clone(), base.clone());
            std::thread::spawn(move || {
                let mut offset = 0u64;
                let mut text = String::new();
                loop {
                    let (status, v) = call(
                        &url,
                        "GET",
                        &format!("{base}?offset={offset}"),
                        Some(&admin),
                        "",
                    );
                    assert_eq!(status, 200, "{v}");
                    let page = v["content"].as_str().unwrap();
                    assert!(page.len() <= 1 << 20, "a page of {} bytes", page.len());
                    text.push_str(page);
                    offset = v["next_offset"].as_u64().unwrap();
                    if v["more"] != true {
                        break text;
                    }
                }
            })
        })
        .collect();
    let texts: Vec<String> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(texts[0].len() > 25_000_000, "{}", texts[0].len());
    assert!(texts.iter().all(|x| x == &texts[0]));
    let grew = peak_rss(pid).saturating_sub(before);
    assert!(
        grew < 40 << 20,
        "four readers of a {} MB log raised the server's peak memory by {} MB",
        texts[0].len() >> 20,
        grew >> 20
    );
    // The download is the same bytes; a range is exactly its slice.
    let auth = format!("Bearer {admin}");
    let (status, headers, body) = crate::harness::exchange(
        &url,
        "GET",
        &format!("{base}/download"),
        &[("Authorization", &auth)],
        "",
        "",
    );
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|h| h.starts_with("content-disposition: attachment")),
        "{headers:?}"
    );
    assert_eq!(body.len(), texts[0].len());
    assert!(body == texts[0]);
    let (status, headers, body) = crate::harness::exchange(
        &url,
        "GET",
        &format!("{base}/download"),
        &[("Authorization", &auth), ("Range", "bytes=100-149")],
        "",
        "",
    );
    assert_eq!(status, 206);
    assert_eq!(body, texts[0][100..150]);
    assert!(
        headers
            .iter()
            .any(|h| h == &format!("content-range: bytes 100-149/{}", texts[0].len())),
        "{headers:?}"
    );
    let (status, _, _) = crate::harness::exchange(
        &url,
        "GET",
        &format!("{base}/download"),
        &[("Authorization", &auth), ("Range", "bytes=999999999-")],
        "",
        "",
    );
    assert_eq!(status, 416);
}

#[test]
fn a_trigger_from_the_local_cli_is_in_the_audit_log_even_without_user() {
    let t = Tern::new();
    t.write_dag(
        "d.star",
        "dag(id = \"d\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let admin = t.ok(&["tokens", "create", "admin"]).trim().to_string();
    let out = t
        .command(&["dags", "trigger", "d"])
        .env_remove("USER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, v) = call(&url, "GET", "/api/v1/audit", Some(&admin), "");
    assert_eq!(status, 200, "{v}");
    let entries = v["entries"]
        .as_array()
        .or(v.as_array())
        .cloned()
        .unwrap_or_default();
    let entry = entries
        .iter()
        .find(|e| e["action"] == "run.trigger")
        .unwrap_or_else(|| panic!("no run.trigger entry in {v}"));
    assert_eq!(entry["target"], format!("d/{run_id}"), "{entry}");
    let uid = nix::unistd::getuid();
    assert_eq!(entry["actor"], format!("cli:uid-{uid}"), "{entry}");
}

#[test]
fn runs_and_task_instances_are_listed_across_dags_with_filters() {
    let t = Tern::new();
    t.write_dag(
        "ok.star",
        "dag(id = \"ok\")\nshell(id = \"fine\", cmd = \"true\", queue = \"site-a\")\n",
    );
    t.write_dag(
        "bad.star",
        "dag(id = \"bad\")\nshell(id = \"boom\", cmd = \"exit 1\")\n",
    );
    let (_sa, url) = server_on(&t, 0);
    let token = token_for(&t, "oncall", "viewer");
    let (status, _) = call(
        &url,
        "POST",
        "/api/v1/dags/ok/dagRuns",
        Some(&token_for(&t, "trig", "user")),
        r#"{"dag_run_id": "march", "logical_date": "2026-03-01T00:00:00Z"}"#,
    );
    assert_eq!(status, 201);
    let bad = t.trigger("bad", None);
    t.wait_run("bad", &bad, "the failing run", crate::harness::finished);
    // (No agent serves site-a: `fine` stays queued there.)

    let (status, v) = call(
        &url,
        "GET",
        "/api/v1/dags/~/dagRuns/~/taskInstances?state=failed",
        Some(&token),
        "",
    );
    assert_eq!(status, 200, "{v}");
    let failed: Vec<(&str, &str)> = v["task_instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["dag_id"].as_str().unwrap(),
                t["task_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(failed, [("bad", "boom")]);
    assert!(v["task_instances"][0]["logical_date"].is_string(), "{v}");

    let (_, v) = call(
        &url,
        "GET",
        "/api/v1/dags/~/dagRuns/~/taskInstances?queue=site-a",
        Some(&token),
        "",
    );
    assert_eq!(v["task_instances"][0]["task_id"], "fine", "{v}");
    assert_eq!(v["task_instances"].as_array().unwrap().len(), 1, "{v}");

    let (_, v) = call(
        &url,
        "GET",
        "/api/v1/dags/~/dagRuns?logical_date_lte=2026-06-01T00:00:00Z",
        Some(&token),
        "",
    );
    let runs: Vec<&str> = v["dag_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["march"], "{v}");
    let (_, v) = call(
        &url,
        "GET",
        "/api/v1/dags/~/dagRuns?limit=1&offset=1",
        Some(&token),
        "",
    );
    assert_eq!(
        v["dag_runs"][0]["run_id"], "march",
        "the older run on the second page: {v}"
    );

    // A bad state is a 400 naming the states; a DAG that does not exist a 404.
    let (status, v) = call(
        &url,
        "GET",
        "/api/v1/dags/~/dagRuns/~/taskInstances?state=broken",
        Some(&token),
        "",
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("upstream_failed"),
        "{v}"
    );
    assert!(!v["hint"].as_str().unwrap().is_empty(), "{v}");
    let (status, _) = call(
        &url,
        "GET",
        "/api/v1/dags/nope/dagRuns/~/taskInstances",
        Some(&token),
        "",
    );
    assert_eq!(status, 404);
}
