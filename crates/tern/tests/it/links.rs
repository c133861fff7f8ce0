//! Remote agents and bad links on loopback: a killed agent that restarts and reports from its
//! spool, a control plane killed and restarted while its agent finishes a task, two servers on
//! one PostgreSQL database, and site secrets that never reach the control plane.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::agents::{new_code, server_url, AgentProc};
use crate::harness::{
    files_containing, finished, free_port, run_state, task, Standalone, Tern, DEADLINE,
};

/// `tern server` on a given port.
pub fn server_on(t: &Tern, port: u16) -> (Standalone, String) {
    let mut sa = Standalone {
        child: t
            .command(&["server", "--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let url = server_url(&mut sa);
    (sa, url)
}

/// A remote agent whose stderr goes to `DIR.log` (shown when a test fails).
fn agent(servers: &str, code: Option<&str>, dir: &Path) -> AgentProc {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    c.args(["agent", "--server", servers, "--dir"]).arg(dir);
    if let Some(code) = code {
        c.args(["--activation", code]);
    }
    AgentProc(c.stdout(Stdio::null()).stderr(log).spawn().unwrap())
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn wait_for(what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the agent's spool holds a result.
fn spooled_result(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("spool"))
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"complete\""))
            })
        })
        .unwrap_or(false)
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .map(|e| e.count())
        .unwrap_or(0)
}

#[test]
fn a_killed_agent_restarts_and_reports_its_attempt_at_once() {
    let t = Tern::new();
    // A long lease: only the restarted agent's report can end the first try in time.
    t.with_lease("5m");
    t.write_dag(
        "site.star",
        r#"
d = dag(id = "site")
shell(id = "work", queue = "site:warsaw", retries = 1, retry_delay = "0s",
      cmd = "if [ $TERN_TRY_NUMBER = 1 ]; then echo first try hangs; sleep 120; else echo second try; fi")
"#,
    );
    let (_sa, url) = server_on(&t, 0);
    let dir = t.path().join("agent");
    let code = new_code(&t, "10m");
    let mut first = agent(&url, Some(&code), &dir);
    let run_id = t.trigger("site", None);
    t.wait_run("site", &run_id, "the first try to run", |v| {
        task(v, "work")["state"] == "running"
    });
    kill9(&mut first.0);
    let _second = agent(&url, None, &dir);
    let v = t.wait_run("site", &run_id, "the run after the restart", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    let tries = v["tries"]["work"].as_array().unwrap();
    assert_eq!(tries.len(), 2, "{v:#}");
    let note = tries[0]["note"].as_str().unwrap_or("");
    assert!(note.contains("restarted"), "first try: {note}");
    assert!(t
        .log("site", &run_id, "work", Some(2))
        .contains("second try"));
    wait_for("the spool to empty", || spool_files(&dir) == 0);
}

#[test]
fn a_control_plane_restart_does_not_relaunch_a_running_task_and_its_result_is_replayed() {
    let t = Tern::new();
    // The task marks its start: a claim is `running` in the database before the agent has
    // confirmed it, and an agent that cannot confirm a claim (its control plane gone) never
    // starts it, so the kill must come after the task started, not after the claim.
    let started = t.path().join("work-started");
    t.write_dag(
        "site.star",
        &format!(
            r#"
d = dag(id = "site")
work = shell(id = "work", queue = "site:warsaw", retries = 2, retry_delay = "0s",
      cmd = "echo started; touch '{}'; sleep 1; echo finished while the control plane was down; echo rows=3 >> $TERN_OUTPUT")
after = shell(id = "after", cmd = "echo got {{{{ outputs.work.rows }}}}")
work >> after
"#,
            started.display()
        ),
    );
    let port = free_port();
    let (mut server, url) = server_on(&t, port);
    let dir = t.path().join("agent");
    let code = new_code(&t, "10m");
    let _agent = agent(&url, Some(&code), &dir);
    let run_id = t.trigger("site", None);
    t.wait_run("site", &run_id, "the task to run on the site", |v| {
        task(v, "work")["state"] == "running"
    });
    wait_for("the task to start on the site", || started.exists());
    kill9(&mut server.child);
    // The agent finishes the task with nobody to tell and keeps the result in its spool.
    wait_for("the result to be spooled", || spooled_result(&dir));
    let (_server, _) = server_on(&t, port);
    let v = t.wait_run("site", &run_id, "the run after the restart", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(
        task(&v, "work")["try_number"],
        1,
        "the task ran once: {v:#}"
    );
    assert_eq!(v["tries"]["work"].as_array().unwrap().len(), 1);
    let log = t.log("site", &run_id, "work", None);
    assert!(
        log.contains("started") && log.contains("finished while the control plane was down"),
        "{log}"
    );
    assert!(t.log("site", &run_id, "after", None).contains("got 3"));
    wait_for("the spool to empty", || spool_files(&dir) == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_serve_an_agent_that_moves_between_them() {
    let db = tern_testkit::TestDb::postgres().await;
    let mut t = Tern::new();
    t.database_url = Some(db.url.clone());
    t.write_dag(
        "site.star",
        r#"
d = dag(id = "site")
shell(id = "work", queue = "site:warsaw", cmd = "echo one; sleep 2; echo two")
"#,
    );
    // No shared disk: each server has its own data folder, task logs go to an object store.
    let logs = tempfile::tempdir().unwrap();
    let mut other = Tern::new();
    other.database_url = Some(db.url.clone());
    other.dags = t.dags.clone();
    for home in [&t, &other] {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(home.path().join("tern.toml"))
            .unwrap();
        writeln!(f, "\n[logs]\nstore = \"file://{}\"", logs.path().display()).unwrap();
    }
    tokio::task::block_in_place(|| {
        let (mut a, url_a) = server_on(&t, 0);
        let (_b, url_b) = server_on(&other, 0);
        let dir = t.path().join("agent");
        let code = new_code(&t, "10m");
        let _agent = agent(&format!("{url_a},{url_b}"), Some(&code), &dir);
        let run_id = t.trigger("site", None);
        t.wait_run("site", &run_id, "the task to run", |v| {
            task(v, "work")["state"] == "running"
        });
        kill9(&mut a.child);
        let v = t.wait_run(
            "site",
            &run_id,
            "the run through the other server",
            finished,
        );
        assert_eq!(run_state(&v), "success", "{v:#}");
        assert_eq!(task(&v, "work")["try_number"], 1, "{v:#}");
        // Its log is whole, from either data folder: the lines sent through the dead server
        // and through the live one.
        for home in [&t, &other] {
            let log = home.log("site", &run_id, "work", None);
            assert!(log.contains("one") && log.contains("two"), "{log}");
        }
        // A second run is claimed through the surviving server.
        let again = t.trigger("site", None);
        let v = t.wait_run("site", &again, "a run after the failover", finished);
        assert_eq!(run_state(&v), "success", "{v:#}");
    });
}

#[test]
fn site_secrets_are_masked_on_the_agent_and_never_reach_the_control_plane() {
    const CANARY: &str = "Canary-7f3Kq9-pw";
    let t = Tern::new();
    // The DAG only names the connection; the password lives in the agent's folder.
    t.write_dag(
        "secret.star",
        r#"
d = dag(id = "secret")
shell(id = "leak", queue = "site:warsaw", cmd = """
echo "dsn: $TERN_CONN_WAREHOUSE"
pw=$(python3 -c 'import os, urllib.parse; print(urllib.parse.urlparse(os.environ["TERN_CONN_WAREHOUSE"]).password)')
echo "password: $pw"
printf 'in two writes: %s' "${pw%%-pw}"; sleep 0.2; printf -- '-pw done\n'
echo "host={{ conn.warehouse.host }}"
echo "leaked=$pw" >> $TERN_OUTPUT
""")
"#,
    );
    let (_sa, url) = server_on(&t, 0);
    let site = tempfile::tempdir().unwrap();
    let dir = site.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("agent.toml"),
        format!("[connections.warehouse]\nuri = \"postgres://etl:{CANARY}@db.site.internal:5432/sales\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("agent.toml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let code = new_code(&t, "10m");
    let _agent = agent(&url, Some(&code), &dir);
    let run_id = t.trigger("secret", None);
    let v = t.wait_run("secret", &run_id, "the task", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    let log = t.log("secret", &run_id, "leak", None);
    assert!(log.contains("password: ***"), "{log}");
    assert!(log.contains("dsn: ***"), "{log}");
    assert!(log.contains("in two writes: *** done"), "{log}");
    assert!(log.contains("host=db.site.internal"), "{log}");
    // The control plane knows the connection by name only.
    wait_for("the agent to report its connections", || {
        t.json(&["agents", "list"])[0]["connections"] == serde_json::json!(["warehouse"])
    });
    let mut answers = String::new();
    for args in [
        vec!["agents", "list"],
        vec!["runs", "show", "secret", &run_id],
        vec!["dags", "show", "secret"],
    ] {
        answers.push_str(&t.json(&args).to_string());
    }
    answers.push_str(&log);
    assert!(
        !answers.contains(CANARY),
        "the canary leaked into an answer"
    );
    // Nowhere in the control plane's data folder: database, WAL, logs.
    assert_eq!(files_containing(t.path(), CANARY), Vec::<String>::new());
    // The positive control: the canary is in the agent's own folder.
    assert!(!files_containing(&dir, CANARY).is_empty());
}

#[test]
fn agents_reach_a_tls_control_plane_and_refuse_an_untrusted_one() {
    let t = Tern::new();
    t.write_dag(
        "site.star",
        r#"
d = dag(id = "site")
shell(id = "work", queue = "site:warsaw", cmd = "echo over tls")
"#,
    );
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (t.path().join("cert.pem"), t.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let mut sa = Standalone {
        child: t
            .command(&["server", "--port", "0", "--tls-cert"])
            .arg(&cert_pem)
            .arg("--tls-key")
            .arg(&key_pem)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let url = server_url(&mut sa);
    assert!(url.starts_with("https://"), "{url}");
    // Without trusting the certificate, activation fails and says why.
    let code = new_code(&t, "10m");
    let untrusted = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["agent", "--server", &url, "--activation", &code, "--dir"])
        .arg(t.path().join("untrusted"))
        .output()
        .unwrap();
    assert!(!untrusted.status.success());
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("activation failed"), "{err}");
    // With the CA given, the same code works (the failed attempt did not use it up).
    let dir = t.path().join("agent");
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(t.path().join("agent.log")).unwrap();
    let _agent = AgentProc(
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "agent",
                "--server",
                &url,
                "--activation",
                &code,
                "--ca-cert",
            ])
            .arg(&cert_pem)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let run_id = t.trigger("site", None);
    let v = t.wait_run("site", &run_id, "the task over TLS", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert!(t.log("site", &run_id, "work", None).contains("over tls"));
}

/// A raw HTTP/1.1 POST on loopback: (status, body).
fn post_raw(url: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    crate::harness::http(url, "POST", path, headers, body)
}

#[test]
fn agents_one_minor_version_apart_are_served_and_another_major_is_refused() {
    let t = Tern::new();
    let (_sa, url) = server_on(&t, 0);
    let body = r#"{"code": "not-a-code", "name": "a", "version": "0"}"#;
    // An older minor version (1.0) gets past the version check to the code check.
    let (status, text) = post_raw(
        &url,
        "/agent/v1/activate",
        &[("x-tern-protocol", "1.0")],
        body,
    );
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("unknown activation code"), "{text}");
    let (status, text) = post_raw(
        &url,
        "/agent/v1/activate",
        &[("x-tern-protocol", "1.9")],
        body,
    );
    assert_eq!(status, 404, "{text}");
    // Another major version is refused with a message saying what to do.
    let (status, text) = post_raw(
        &url,
        "/agent/v1/activate",
        &[("x-tern-protocol", "2.0")],
        body,
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("protocol_version") && text.contains("upgrade"),
        "{text}"
    );
    // A malformed request is a 4xx, not a crash.
    let (status, _) = post_raw(
        &url,
        "/agent/v1/activate",
        &[("x-tern-protocol", "1.1")],
        "{",
    );
    assert!((400..500).contains(&status), "{status}");
    // And every agent route wants a credential.
    let (status, text) = post_raw(
        &url,
        "/agent/v1/claim",
        &[("x-tern-protocol", "1.1")],
        r#"{"wait_ms": 0, "max": 1}"#,
    );
    assert_eq!(status, 401, "{text}");
    // The credential is checked first: an anonymous caller with a malformed body or another
    // protocol version learns neither what the body should be nor the server's version.
    for (version, body) in [("9.0", r#"{"wait_ms": 0, "max": 1}"#), ("1.1", "{")] {
        let (status, text) = post_raw(
            &url,
            "/agent/v1/claim",
            &[("x-tern-protocol", version)],
            body,
        );
        assert_eq!(status, 401, "{version} {body}: {text}");
        assert!(!text.contains(tern_protocol::PROTOCOL_VERSION), "{text}");
    }
}

#[test]
fn two_sites_each_run_only_their_own_tasks() {
    let t = Tern::new();
    let mut dag = String::from("d = dag(id = \"two\")\n");
    for i in 0..4 {
        dag.push_str(&format!(
            "shell(id = \"w{i}\", queue = \"site:warsaw\", cmd = \"echo warsaw {i}\")\n\
             shell(id = \"l{i}\", queue = \"site:lisbon\", cmd = \"echo lisbon {i}\")\n"
        ));
    }
    t.write_dag("two.star", &dag);
    let (_sa, url) = server_on(&t, 0);
    let warsaw = new_code(&t, "10m");
    let lisbon = t
        .ok(&["agents", "activation", "create", "--site", "lisbon"])
        .trim()
        .to_string();
    let _a = agent(&url, Some(&warsaw), &t.path().join("warsaw"));
    let _b = agent(&url, Some(&lisbon), &t.path().join("lisbon"));
    let run_id = t.trigger("two", None);
    let v = t.wait_run("two", &run_id, "both sites' tasks", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    let agents = t.json(&["agents", "list"]);
    let worker_of = |site: &str| {
        let a = agents
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["site"] == site)
            .unwrap();
        format!("agent-{}", a["id"])
    };
    for i in 0..4 {
        assert_eq!(
            task(&v, &format!("w{i}"))["worker"],
            worker_of("warsaw"),
            "{v:#}"
        );
        assert_eq!(
            task(&v, &format!("l{i}"))["worker"],
            worker_of("lisbon"),
            "{v:#}"
        );
    }
}
