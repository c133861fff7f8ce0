//! Runs through the scheduler and the local agent: success, failure, retries, timeouts,
//! trigger rules, params in templates, outputs between tasks, `dags test`, `tasks test`,
//! backfill, and the same on PostgreSQL.

use crate::harness::{finished, run_state, task, Tern};

const CHAIN: &str = r#"
d = dag(id = "chain", params = {"limit": 5, "country": "Spain"})
a = shell(id = "extract", cmd = "echo rows=$(( {{ params.limit }} * 2 )) >> $TERN_OUTPUT; echo extracting {{ params.country }}")
b = shell(id = "load", cmd = "echo loaded {{ outputs.extract.rows }} rows for {{ ds }}")
c = python(id = "check", code = "import sys; print('checked', sys.argv[1])", args = ["{{ outputs.extract.rows }}"])
a >> b >> c
"#;

#[test]
fn trigger_wait_runs_a_chain_with_params_and_outputs() {
    let t = Tern::new();
    t.write_dag("chain.star", CHAIN);
    let _sa = t.standalone();
    let out = t.run(&[
        "dags",
        "trigger",
        "chain",
        "--conf",
        r#"{"params": {"limit": 21}}"#,
        "--wait",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let v = t.json(&["runs", "show", "chain", &run_id]);
    assert_eq!(run_state(&v), "success");
    assert_eq!(v["outputs"]["extract"]["rows"], 42);
    let log = t.log("chain", &run_id, "load", None);
    assert!(log.contains("loaded 42 rows for"), "{log}");
    assert!(t
        .log("chain", &run_id, "extract", None)
        .contains("extracting Spain"));
    assert!(t
        .log("chain", &run_id, "check", None)
        .contains("checked 42"));
}

#[test]
fn failure_exits_nonzero_and_follows_trigger_rules() {
    let t = Tern::new();
    t.write_dag(
        "rules.star",
        r#"
d = dag(id = "rules")
a = shell(id = "a", cmd = "echo failing on purpose; exit 4")
b = shell(id = "b", cmd = "echo never", upstream = [a])
c = empty(id = "cleanup", trigger_rule = "all_done", upstream = [a])
alert = shell(id = "alert", cmd = "echo alert", trigger_rule = "one_failed", upstream = [a])
skipped = empty(id = "only_if_all_failed", trigger_rule = "all_failed", upstream = [alert])
"#,
    );
    let _sa = t.standalone();
    let out = t.run(&["dags", "trigger", "rules", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "a failed run exits non-zero");
    let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let v = t.json(&["runs", "show", "rules", &run_id]);
    assert_eq!(task(&v, "a")["state"], "failed");
    assert_eq!(task(&v, "a")["note"], "exit code 4");
    assert_eq!(task(&v, "b")["state"], "upstream_failed");
    assert_eq!(task(&v, "cleanup")["state"], "success");
    assert_eq!(task(&v, "alert")["state"], "success");
    assert_eq!(task(&v, "only_if_all_failed")["state"], "skipped");
    let log = t.log("rules", &run_id, "a", None);
    assert!(
        log.contains("failing on purpose") && log.contains("task failed: exit code 4"),
        "{log}"
    );
}

#[test]
fn retries_run_again_and_keep_each_try_log() {
    let t = Tern::new();
    let marker = t.path().join("first-try-done");
    t.write_dag(
        "flaky.star",
        &format!(
            r#"
d = dag(id = "flaky")
shell(id = "flaky", retries = 2, retry_delay = "100ms",
      cmd = "if [ -f {m} ]; then echo second try $TERN_TRY_NUMBER; else touch {m}; echo first try fails; exit 1; fi")
"#,
            m = marker.display()
        ),
    );
    let _sa = t.standalone();
    let run_id = t.trigger("flaky", None);
    let v = t.wait_run("flaky", &run_id, "the flaky run to end", finished);
    assert_eq!(run_state(&v), "success");
    assert_eq!(task(&v, "flaky")["try_number"], 2);
    assert!(t
        .log("flaky", &run_id, "flaky", Some(1))
        .contains("first try fails"));
    assert!(t
        .log("flaky", &run_id, "flaky", Some(2))
        .contains("second try 2"));
}

#[test]
fn timeout_fails_the_task_with_the_reason_in_its_log() {
    let t = Tern::new();
    t.write_dag(
        "slow.star",
        r#"
d = dag(id = "slow")
shell(id = "slow", cmd = "echo starting; sleep 30", execution_timeout = "500ms")
"#,
    );
    let _sa = t.standalone();
    let run_id = t.trigger("slow", None);
    let v = t.wait_run("slow", &run_id, "the slow run to end", finished);
    assert_eq!(run_state(&v), "failed");
    let note = task(&v, "slow")["note"].as_str().unwrap().to_string();
    assert!(note.contains("timed out after 500ms"), "{note}");
    let log = t.log("slow", &run_id, "slow", None);
    assert!(
        log.contains("starting") && log.contains("timed out"),
        "{log}"
    );
}

#[test]
fn dags_test_and_tasks_test_run_without_a_scheduler() {
    let t = Tern::new();
    t.write_dag("chain.star", CHAIN);
    let out = t.run(&["dags", "test", "chain"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("success"), "{err}");
    let out = t.run(&["tasks", "test", "chain", "extract", "--date", "2026-02-03"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"rows\": 10"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("extracting Spain"));
    // tasks test records nothing.
    let runs = t.json(&["runs", "list", "--dag", "chain"]);
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "only the dags test run: {runs}"
    );
}

#[test]
fn backfill_runs_every_interval_and_resumes() {
    let t = Tern::new();
    t.write_dag(
        "daily.star",
        r#"
d = dag(id = "daily", schedule = "@daily", start_date = "2026-01-01", catchup = False)
shell(id = "work", cmd = "echo day {{ ds }} from {{ data_interval_start }} to {{ data_interval_end }}")
"#,
    );
    t.ok(&["dags", "pause", "daily"]);
    let out = t.run(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
    ]);
    assert!(!out.status.success(), "a paused DAG is refused");
    t.ok(&["dags", "unpause", "daily"]);
    let out = t.run(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = t.json(&["runs", "list", "--dag", "daily"]);
    let backfills: Vec<_> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["run_type"] == "backfill")
        .collect();
    assert_eq!(backfills.len(), 3);
    assert!(backfills.iter().all(|r| r["state"] == "success"));
    let log = t.log("daily", "backfill__2026-01-02T00:00:00Z", "work", None);
    assert!(
        log.contains("day 2026-01-02 from 2026-01-02T00:00:00+00:00 to 2026-01-03T00:00:00+00:00"),
        "{log}"
    );
    let again = t.run(&[
        "dags",
        "backfill",
        "daily",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
    ]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 new run(s), 3 already there"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_on_postgres_runs_the_chain() {
    let db = tern_testkit::TestDb::postgres().await;
    let mut t = Tern::new();
    t.database_url = Some(db.url.clone());
    t.write_dag("chain.star", CHAIN);
    let sa = t.standalone();
    let run_id = t.trigger("chain", None);
    let v = tokio::task::block_in_place(|| {
        t.wait_run("chain", &run_id, "the chain on PostgreSQL", finished)
    });
    assert_eq!(run_state(&v), "success");
    assert_eq!(v["outputs"]["extract"]["rows"], 10);
    drop(sa);
}

#[test]
fn schedule_with_catchup_creates_a_run_per_past_interval() {
    let t = Tern::new();
    let start = (chrono::Utc::now() - chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
    t.write_dag(
        "sched.star",
        &format!(
            r#"
d = dag(id = "sched", schedule = "@daily", start_date = "{start}", catchup = True, max_active_runs = 2)
shell(id = "work", cmd = "echo {{{{ ds }}}}")
"#
        ),
    );
    t.write_dag(
        "nocatch.star",
        &format!(
            r#"
d = dag(id = "nocatch", schedule = "@daily", start_date = "{start}", catchup = False)
shell(id = "work", cmd = "echo {{{{ ds }}}}")
"#
        ),
    );
    let _sa = t.standalone();
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    let runs = loop {
        let runs = t.json(&["runs", "list", "--dag", "sched"]);
        let done = runs
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "success")
            .count();
        if done >= 3 {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "catchup runs did not finish: {runs:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let runs = runs.as_array().unwrap();
    // Intervals [start, start+1d), [start+1d, start+2d), [start+2d, start+3d) have ended.
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert!(runs.iter().all(|r| r["run_type"] == "scheduled"));
    assert_eq!(runs[2]["run_id"], format!("scheduled__{start}T00:00:00Z"));
    let nocatch = t.json(&["runs", "list", "--dag", "nocatch"]);
    let nocatch = nocatch.as_array().unwrap();
    assert_eq!(
        nocatch.len(),
        1,
        "without catchup only the latest interval runs: {nocatch:#?}"
    );
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    assert_eq!(
        nocatch[0]["run_id"],
        format!("scheduled__{yesterday}T00:00:00Z")
    );
}

#[test]
fn every_example_dag_runs_to_success() {
    let t = Tern::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dags");
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(&examples).unwrap().to_path_buf();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                t.write_dag(
                    &rel.join(inner.file_name().unwrap()).to_string_lossy(),
                    &std::fs::read_to_string(&inner).unwrap(),
                );
            }
        } else {
            t.write_dag(
                &rel.to_string_lossy(),
                &std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
    let dags = t.json(&["dags", "list"]);
    let ids: Vec<String> = dags
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dag_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "branching",
            "grouped_etl",
            "hello",
            "manual_report",
            "mapped_etl",
            "regional_exports"
        ]
    );
    assert!(t.json(&["dags", "errors"]).as_array().unwrap().is_empty());
    for id in &ids {
        let out = t.run(&["dags", "test", id]);
        assert!(
            out.status.success(),
            "example {id} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A param given at trigger time is text in the shipped example's shell command, never code:
/// the `$(…)` a caller sends is printed, not run.
#[test]
fn a_param_cannot_inject_code_into_a_shell_command() {
    let t = Tern::new();
    // The shipped example without its param rules (which refuse such a value at trigger).
    let example = include_str!("../../../../examples/dags/manual_report.star");
    let start = example.find("\"country\": {").unwrap();
    let end = start + example[start..].find("},").unwrap() + 2;
    t.write_dag(
        "manual_report.star",
        &example.replace(
            &example[start..end],
            "\"country\": {\"default\": \"Spain\", \"type\": \"string\"},",
        ),
    );
    t.write_dag(
        "shipped/manual_report_checked.star",
        &example.replace("id = \"manual_report\"", "id = \"manual_report_checked\""),
    );
    let owned = std::env::temp_dir().join(format!("tern-owned-{}", std::process::id()));
    let _ = std::fs::remove_file(&owned);
    let hostile = format!("$(id > {0}); `id > {0}`; '; id > {0}; '", owned.display());
    let conf = serde_json::json!({"params": {"country": hostile, "limit": 3}}).to_string();
    let _sa = t.standalone();
    // The shipped example's own rules refuse the value at the door.
    let out = t.run(&["dags", "trigger", "manual_report_checked", "--conf", &conf]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid conf for DAG \"manual_report_checked\": param \"country\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = t.trigger("manual_report", Some(&conf));
    let v = t.wait_run("manual_report", &run_id, "the report", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert!(!owned.exists(), "a param ran as code");
    // The value arrived as the same text.
    let log = t.log("manual_report", &run_id, "show_query", None);
    assert!(
        log.contains(&format!("WHERE country = '{hostile}' LIMIT 3")),
        "{log}"
    );
    // `| raw` is the author's explicit way to put a value in as code.
    let raw = std::env::temp_dir().join(format!("tern-raw-{}", std::process::id()));
    let _ = std::fs::remove_file(&raw);
    t.write_dag(
        "raw.star",
        &format!(
            "d = dag(id = \"raw\", params = {{\"c\": \"touch {}\"}})\nshell(id = \"t\", cmd = \"{{{{ params.c | raw }}}}\")\n",
            raw.display()
        ),
    );
    let start = std::time::Instant::now();
    let run_id = loop {
        let out = t.run(&["dags", "trigger", "raw"]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(
            start.elapsed() < crate::harness::DEADLINE,
            "the raw DAG never loaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let v = t.wait_run("raw", &run_id, "the raw run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert!(raw.exists(), "| raw puts the value in as written");
    let _ = std::fs::remove_file(&raw);
}

/// `dags test` runs the DAG under test and nothing else: a due schedule of another DAG in the
/// folder gets no run from it.
#[test]
fn dags_test_touches_only_the_dag_under_test() {
    let t = Tern::new();
    t.write_dag(
        "due.star",
        "dag(id = \"due\", schedule = \"@hourly\", start_date = \"2026-01-01\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    t.write_dag(
        "t.star",
        "dag(id = \"under_test\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    let out = t.run(&["dags", "test", "under_test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = t.json(&["runs", "list"]);
    let dags: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dag_id"].as_str().unwrap())
        .collect();
    assert_eq!(dags, ["under_test"], "{runs}");
}
