//! Remote agents over HTTP on loopback: activation, routing by site, revocation.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{finished, run_state, task, Tern, DEADLINE};

const HYBRID: &str = r#"
d = dag(id = "hybrid")
cloud = shell(id = "cloud", cmd = "echo cloud side")
site = shell(id = "site", cmd = "echo site side; echo rows=7 >> $TERN_OUTPUT", queue = "site:warsaw")
done = shell(id = "done", cmd = "echo joined {{ outputs.site.rows }}")
done << [cloud, site]
"#;

/// Reads the bound address from the server's stderr.
pub fn server_url(sa: &mut crate::harness::Standalone) -> String {
    use std::io::{BufRead, BufReader};
    let stderr = sa.child.stderr.take().unwrap();
    let mut reader = BufReader::new(stderr);
    let start = Instant::now();
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if let Some(rest) = line.trim().strip_prefix("http:") {
            let url = rest.trim().trim_end_matches("/health").to_string();
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return url;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the server never printed its address"
        );
    }
}

/// Starts `tern server` on a free port; returns it and its URL.
pub fn start_server(t: &Tern) -> (crate::harness::Standalone, String) {
    crate::links::server_on(t, 0)
}

pub struct AgentProc(pub Child);

impl AgentProc {
    /// What the agent wrote to its standard error (piped), once it has exited.
    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut err = String::new();
        self.0
            .stderr
            .take()
            .expect("stderr is piped")
            .read_to_string(&mut err)
            .unwrap();
        err
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_agent(url: &str, code: Option<&str>, dir: &std::path::Path) -> AgentProc {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    c.args(["agent", "--server", url, "--dir"]).arg(dir);
    if let Some(code) = code {
        c.args(["--activation", code]);
    }
    AgentProc(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub fn new_code(t: &Tern, ttl: &str) -> String {
    t.ok(&[
        "agents",
        "activation",
        "create",
        "--site",
        "warsaw",
        "--ttl",
        ttl,
    ])
    .trim()
    .to_string()
}

#[test]
fn site_tasks_wait_for_their_agent_and_run_only_there() {
    let t = Tern::new();
    t.write_dag("hybrid.star", HYBRID);
    let (_sa, url) = start_server(&t);
    let run_id = t.trigger("hybrid", None);
    // No agent of the site yet: the cloud task runs, the site task waits, queued.
    let v = t.wait_run("hybrid", &run_id, "the cloud task", |v| {
        task(v, "cloud")["state"] == "success"
    });
    std::thread::sleep(Duration::from_millis(300));
    let v2 = t.json(&["runs", "show", "hybrid", &run_id]);
    assert_eq!(task(&v2, "site")["state"], "queued", "{v:#}");
    assert_eq!(run_state(&v2), "running");

    let dir = t.path().join("agent");
    let code = new_code(&t, "10m");
    let _agent = start_agent(&url, Some(&code), &dir);
    let v = t.wait_run("hybrid", &run_id, "the run to finish", finished);
    assert_eq!(run_state(&v), "success");
    assert!(
        task(&v, "site")["worker"]
            .as_str()
            .unwrap()
            .starts_with("agent-"),
        "{v:#}"
    );
    assert!(task(&v, "cloud")["worker"]
        .as_str()
        .unwrap()
        .starts_with("local-"));
    assert!(t.log("hybrid", &run_id, "done", None).contains("joined 7"));
    assert!(
        t.log("hybrid", &run_id, "site", None).contains("site side"),
        "the site task's log is central"
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("credential.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the credential is private to the agent"
    );
    let agents = t.json(&["agents", "list"]);
    assert_eq!(agents[0]["site"], "warsaw");
    assert_eq!(agents[0]["queues"][0], "site:warsaw");
}

#[test]
fn activation_codes_are_single_use_and_revocation_cuts_the_agent_off() {
    let t = Tern::new();
    t.write_dag("hybrid.star", HYBRID);
    let (_sa, url) = start_server(&t);
    let code = new_code(&t, "10m");
    let first = t.path().join("a1");
    let agent = start_agent(&url, Some(&code), &first);
    let start = Instant::now();
    while !first.join("credential.json").exists() {
        assert!(start.elapsed() < DEADLINE, "the agent never activated");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same code a second time is refused, with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["agent", "--server", &url, "--activation", &code, "--dir"])
        .arg(t.path().join("a2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));
    // An expired code is refused too.
    let expired = new_code(&t, "1ms");
    std::thread::sleep(Duration::from_millis(10));
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["agent", "--server", &url, "--activation", &expired, "--dir"])
        .arg(t.path().join("a3"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    // Without a credential and without a code, the agent says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["agent", "--server", &url, "--dir"])
        .arg(t.path().join("a4"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--activation CODE"));

    drop(agent);
    let agents = t.json(&["agents", "list"]);
    let id = agents[0]["id"].as_i64().unwrap().to_string();
    t.ok(&["agents", "revoke", &id]);
    assert_eq!(t.json(&["agents", "list"])[0]["revoked"], true);
    // The revoked agent restarts with its saved credential and is refused at once; its site
    // task is never run.
    let run_id = t.trigger("hybrid", None);
    let revoked = start_agent(&url, None, &first);
    std::thread::sleep(Duration::from_millis(500));
    let v = t.json(&["runs", "show", "hybrid", &run_id]);
    assert_eq!(task(&v, "site")["state"], "queued", "{v:#}");
    drop(revoked);
}

#[test]
fn a_site_queue_cannot_be_served_by_the_local_agent() {
    let t = Tern::new();
    std::fs::write(
        t.path().join("tern.toml"),
        "[agent]\nqueues = [\"default\", \"site:warsaw\"]\n",
    )
    .unwrap();
    let out = t.run(&["dags", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("setting agent.queues"));
}

#[test]
fn a_site_task_says_why_it_waits_and_can_time_out() {
    let t = Tern::new();
    std::fs::write(
        t.path().join("tern.toml"),
        "[scheduler]\ndag_scan_interval = \"200ms\"\nhousekeeping_interval = \"100ms\"\nqueue_timeout = \"1s\"\n",
    )
    .unwrap();
    t.write_dag("hybrid.star", HYBRID);
    let _sa = t.standalone();
    let run_id = t.trigger("hybrid", None);
    let v = t.wait_run("hybrid", &run_id, "the site task's reason", |v| {
        task(v, "site")["note"] == "no connected agent for site warsaw"
    });
    assert_eq!(task(&v, "site")["state"], "queued");
    let v = t.wait_run("hybrid", &run_id, "the queue timeout", finished);
    assert_eq!(run_state(&v), "failed");
    assert_eq!(task(&v, "site")["state"], "failed");
    assert_eq!(
        task(&v, "site")["note"],
        "queue timeout: no connected agent for site warsaw"
    );
    assert_eq!(task(&v, "done")["state"], "upstream_failed");
    assert_eq!(
        task(&v, "cloud")["state"],
        "success",
        "the cloud task is unaffected"
    );
}

#[test]
fn a_killed_agent_loses_its_attempt_and_the_retry_runs_on_the_site() {
    let t = Tern::new();
    // Lease of 2 s: the harness's default settings with a shorter lease.
    t.with_lease("2s");
    t.write_dag(
        "site.star",
        r#"
d = dag(id = "site")
shell(id = "work", queue = "site:warsaw", retries = 1, retry_delay = "0s",
      cmd = "if [ $TERN_TRY_NUMBER = 1 ]; then echo first try hangs; sleep 60; else echo second try on the site; fi")
"#,
    );
    let (_sa, url) = start_server(&t);
    let dir = t.path().join("agent");
    let code = new_code(&t, "10m");
    let mut agent = start_agent(&url, Some(&code), &dir);
    let run_id = t.trigger("site", None);
    t.wait_run("site", &run_id, "the first try to run", |v| {
        task(v, "work")["state"] == "running"
    });
    agent.0.kill().unwrap();
    agent.0.wait().unwrap();
    let v = t.wait_run("site", &run_id, "the lost attempt", |v| {
        task(v, "work")["state"] == "up_for_retry" || task(v, "work")["state"] == "queued"
    });
    // The lost try says why (the instance's own note shows why it waits now: housekeeping
    // may already have replaced it by the site's state).
    let note = v["tries"]["work"][0]["note"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        note.contains("stopped reporting and its lease expired"),
        "{v:#}"
    );
    // The retry waits for an agent of the site: the local agent never takes it.
    std::thread::sleep(Duration::from_millis(300));
    let v = t.json(&["runs", "show", "site", &run_id]);
    assert_eq!(task(&v, "work")["state"], "queued", "{v:#}");
    let _agent = start_agent(&url, None, &dir);
    let v = t.wait_run("site", &run_id, "the retry on the site", finished);
    assert_eq!(run_state(&v), "success");
    assert_eq!(task(&v, "work")["try_number"], 2);
    assert!(task(&v, "work")["worker"]
        .as_str()
        .unwrap()
        .starts_with("agent-"));
    assert!(t
        .log("site", &run_id, "work", Some(2))
        .contains("second try on the site"));
}

#[test]
fn a_revoked_idle_agent_stops_at_once_and_never_gets_the_next_task() {
    let t = Tern::new();
    t.write_dag("hybrid.star", HYBRID);
    let (_sa, url) = start_server(&t);
    let dir = t.path().join("agent");
    let code = new_code(&t, "10m");
    let mut c = Command::new(env!("CARGO_BIN_EXE_tern"));
    c.args(["agent", "--server", &url, "--dir"])
        .arg(&dir)
        .args(["--activation", &code]);
    let mut agent = AgentProc(
        c.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Wait until it is activated and waiting in its long poll.
    let start = Instant::now();
    while t.json(&["agents", "list"])[0]["connected"] != true {
        assert!(start.elapsed() < DEADLINE, "the agent never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Revoked by the CLI (another process than the server): the waiting poll ends now.
    let revoked_at = Instant::now();
    t.ok(&["agents", "revoke", "1"]);
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(10),
            "the revoked agent is still running (its 25 s poll must not be waited out)"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let err = agent.stderr();
    assert!(err.contains("revoked"), "{err}");
    assert!(err.contains("activation create"), "says what to do: {err}");
    // Work for its site is never handed to it.
    let run_id = t.trigger("hybrid", None);
    t.wait_run("hybrid", &run_id, "the cloud task", |v| {
        task(v, "cloud")["state"] == "success"
    });
    let v = t.json(&["runs", "show", "hybrid", &run_id]);
    assert_eq!(task(&v, "site")["state"], "queued", "{v:#}");
    assert_eq!(task(&v, "site")["try_number"], 0, "{v:#}");
}

#[test]
fn a_stopped_agent_stops_counting_as_connected_within_seconds() {
    let t = Tern::new();
    t.write_dag("hybrid.star", HYBRID);
    let (_sa, url) = start_server(&t);
    let code = new_code(&t, "10m");
    let agent = start_agent(&url, Some(&code), &t.path().join("agent"));
    let start = Instant::now();
    while t.json(&["agents", "list"])[0]["connected"] != true {
        assert!(start.elapsed() < DEADLINE, "the agent never connected");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Idle in its long poll for longer than the connected window: still connected.
    std::thread::sleep(Duration::from_secs(14));
    assert_eq!(
        t.json(&["agents", "list"])[0]["connected"],
        true,
        "a waiting agent is connected"
    );
    drop(agent); // kill -9
    let killed = Instant::now();
    while t.json(&["agents", "list"])[0]["connected"] != false {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "a killed agent still counts as connected after 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The agent-only binary (`tern-agent`, for branch offices): activated with a code, it runs its
/// site's task; revoked, it exits with status 1 and says what to do. Its binary holds none of
/// the control plane (no Starlark, no web UI).
#[test]
fn the_agent_only_binary_runs_site_tasks_and_stops_when_revoked() {
    let agent_bin = env!("CARGO_BIN_EXE_tern-agent");
    let t = Tern::new();
    t.write_dag("hybrid.star", HYBRID);
    let (_sa, url) = start_server(&t);
    let dir = t.path().join("branch-office");
    let code = new_code(&t, "10m");
    let mut agent = AgentProc(
        Command::new(agent_bin)
            .args(["--server", &url, "--dir"])
            .arg(&dir)
            .args(["--activation", &code])
            .env_remove("TERN_SERVER")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let run_id = t.trigger("hybrid", None);
    let v = t.wait_run("hybrid", &run_id, "the run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert!(task(&v, "site")["worker"]
        .as_str()
        .unwrap()
        .starts_with("agent-"));
    assert!(t.log("hybrid", &run_id, "site", None).contains("site side"));
    t.ok(&["agents", "revoke", "1"]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < DEADLINE, "the revoked agent still runs");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let err = agent.stderr();
    assert!(err.contains("activation create"), "says what to do: {err}");
    // Nothing of the control plane was linked in.
    let bytes = std::fs::read(agent_bin).unwrap();
    for marker in ["starlark", "utoipa", "axum"] {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "tern-agent contains {marker:?}"
        );
    }
    // Without a server it refuses with the way out.
    let out = Command::new(agent_bin)
        .args(["--dir"])
        .arg(&dir)
        .env_remove("TERN_SERVER")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));
}
