//! `tests/fixtures/ok`: every file loads, and the specs hold exactly what the files declare.

use chrono::{TimeZone, Utc};
use serde_json::json;
use tern_core::{Schedule, TaskKind, TriggerRule};

use crate::{error_lines, fixture, ids, task, ups};

fn load_ok() -> tern_dag::LoadResult {
    let r = tern_dag::load_folder(&fixture("ok"));
    assert!(r.errors.is_empty(), "errors: {:#?}", error_lines(&r));
    r
}

fn dag<'a>(r: &'a tern_dag::LoadResult, id: &str) -> &'a tern_core::DagSpec {
    r.dags
        .iter()
        .find(|d| d.dag_id == id)
        .unwrap_or_else(|| panic!("no dag {id}"))
}

#[test]
fn folder_loads_in_path_order_and_helpers_yield_nothing() {
    let r = load_ok();
    let got: Vec<(&str, &str)> = r
        .dags
        .iter()
        .map(|d| (d.file.as_str(), d.dag_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("etl.star", "etl"),
            ("generated.star", "generated"),
            ("loop.star", "fanout"),
            ("multi.star", "multi_a"),
            ("multi.star", "multi_b"),
            ("scripted.star", "scripted"),
            ("sensors_and_containers.star", "waits"),
            ("sub/nested.star", "nested"),
        ]
    );
    // `_lib/` is skipped; lib.star is evaluated but declares no DAG.
    assert_eq!(
        r.files,
        [
            "etl.star",
            "generated.star",
            "lib.star",
            "loop.star",
            "multi.star",
            "scripted.star",
            "sensors_and_containers.star",
            "sub/nested.star"
        ]
    );
}

#[test]
fn etl_dag_fields() {
    let r = load_ok();
    let d = dag(&r, "etl");
    assert_eq!(d.line, 2);
    assert_eq!(d.schedule, Schedule::Cron("0 2 * * *".into()));
    assert_eq!(d.timezone, "Europe/Madrid");
    // Midnight in Madrid (UTC+1 in winter) is 23:00 UTC the day before.
    assert_eq!(
        d.start_date,
        Some(Utc.with_ymd_and_hms(2025, 12, 31, 23, 0, 0).unwrap())
    );
    assert_eq!(d.end_date, None);
    assert!(!d.catchup);
    assert_eq!(
        d.description.as_deref(),
        Some("Nightly extract, transform, load.")
    );
    assert_eq!(d.tags, ["etl", "nightly"]);
    assert_eq!((d.max_active_runs, d.max_active_tasks), (1, 8));

    let p = &d.params;
    assert_eq!(p["limit"].default, json!(10));
    assert_eq!(p["limit"].r#type.as_deref(), Some("integer"));
    assert_eq!(p["country"].default, json!("Spain"));
    assert_eq!(p["country"].r#type.as_deref(), Some("string"));
    assert_eq!(p["country"].description.as_deref(), Some("Country to load"));
    assert_eq!(p["ratio"].r#type.as_deref(), Some("number"));
}

#[test]
fn etl_tasks_order_upstreams_and_defaults() {
    let r = load_ok();
    let d = dag(&r, "etl");
    assert_eq!(
        ids(d),
        ["extract", "transform", "check", "load", "notify", "done"]
    );
    assert_eq!(ups(d, "extract"), Vec::<&str>::new());
    assert_eq!(ups(d, "transform"), ["extract"]);
    assert_eq!(ups(d, "check"), ["transform"]);
    assert_eq!(ups(d, "load"), ["transform"]);
    // `notify << [check, load]` then `notify.set_upstream(extract)`.
    assert_eq!(ups(d, "notify"), ["check", "load", "extract"]);
    // `upstream = ["notify", check]`: ids and task values mix.
    assert_eq!(ups(d, "done"), ["notify", "check"]);

    let extract = task(d, "extract");
    assert_eq!(extract.line, 21);
    assert_eq!(
        extract.retries, 1,
        "the task's own value beats default_args"
    );
    assert_eq!(extract.retry_delay_ms, 30_000, "from default_args");
    assert_eq!(extract.execution_timeout_ms, Some(3_600_000), "int seconds");
    let TaskKind::Shell { cmd, env, cwd, .. } = &extract.kind else {
        panic!("extract is a shell task")
    };
    assert_eq!(cmd, "echo {{ ds }}");
    assert_eq!(env["K"], "v");
    assert_eq!(env["N"], "3", "numbers become strings");
    assert_eq!(cwd, &None);

    let transform = task(d, "transform");
    assert_eq!(transform.retries, 2, "from default_args");
    let TaskKind::Python {
        code, script, args, ..
    } = &transform.kind
    else {
        panic!("transform is a python task")
    };
    assert_eq!(code, "print('hi')");
    assert_eq!(script, &None);
    assert_eq!(args, &["{{ ds }}", "7"]);

    let check = task(d, "check");
    assert_eq!(check.kind, TaskKind::Empty);
    assert_eq!(check.trigger_rule, TriggerRule::AllDone);
    assert_eq!(check.retry_delay_ms, 90_000);

    let load = task(d, "load");
    assert_eq!(load.pool, "db");
    assert_eq!(load.queue, "default");
    assert_eq!(load.priority_weight, 5);
    assert!(load.retry_exponential_backoff);
    assert_eq!(load.max_retry_delay_ms, Some(600_000));
    assert_eq!(load.trigger_rule, TriggerRule::AllSuccess);
}

#[test]
fn loop_generated_dag() {
    let r = load_ok();
    let d = dag(&r, "fanout");
    assert_eq!(d.schedule, Schedule::Cron("@hourly".into()));
    assert!(d.catchup);
    assert_eq!(d.timezone, "UTC");
    assert_eq!(
        d.start_date,
        Some(Utc.with_ymd_and_hms(2026, 3, 1, 6, 0, 0).unwrap())
    );
    assert_eq!(
        ids(d),
        ["start", "part_0", "part_1", "part_2", "part_3", "part_4", "join", "after"]
    );
    assert_eq!(
        ups(d, "join"),
        ["part_0", "part_1", "part_2", "part_3", "part_4"]
    );
    assert_eq!(ups(d, "after"), ["join"]);
    let TaskKind::Shell { cmd, .. } = &task(d, "part_3").kind else {
        panic!()
    };
    assert_eq!(cmd, "process --part 3");
    // Built-in defaults.
    let t = task(d, "part_0");
    assert_eq!(t.retries, 0);
    assert_eq!(t.retry_delay_ms, 300_000);
    assert_eq!(t.queue, "default");
    assert_eq!(t.pool, "default_pool");
    assert_eq!(t.priority_weight, 1);
    assert_eq!(t.execution_timeout_ms, None);
    assert_eq!(d.max_active_runs, 16);
    assert_eq!(d.max_active_tasks, 16);
}

#[test]
fn helper_made_tasks_attach_to_the_loading_files_dag() {
    let r = load_ok();
    let d = dag(&r, "generated");
    assert_eq!(ids(d), ["wait", "step_0", "step_1", "step_2"]);
    assert_eq!(ups(d, "step_0"), ["wait"]);
    assert_eq!(ups(d, "step_2"), ["wait", "step_1"]);
    let wait = task(d, "wait");
    assert_eq!(wait.retries, 3, "set by the helper");
    assert_eq!(
        wait.pool, "gen",
        "default_args of the DAG apply to helper-made tasks"
    );
    assert_eq!(task(d, "step_1").retries, 4);
    // Lines point into the DAG file: the call that led to the task.
    assert_eq!(wait.line, 5);
    assert_eq!(task(d, "step_1").line, 6);
    let TaskKind::Shell { env, .. } = &wait.kind else {
        panic!()
    };
    assert_eq!(env["APP_ENV"], "prod");
}

#[test]
fn multiple_dags_in_one_file() {
    let r = load_ok();
    let a = dag(&r, "multi_a");
    let b = dag(&r, "multi_b");
    assert_eq!(ids(a), ["a1", "a2"]);
    assert_eq!(ups(a, "a2"), ["a1"]);
    assert_eq!(a.tags, ["multi"]);
    assert_eq!(ids(b), ["b1", "b2"]);
    assert_eq!(ups(b, "b2"), ["b1"]);
    assert_eq!(b.schedule, Schedule::Cron("@daily".into()));
}

#[test]
fn notification_fields_take_a_name_or_a_list() {
    let r = load_ok();
    let a = dag(&r, "multi_a");
    let b = dag(&r, "multi_b");
    assert_eq!(a.on_failure, ["ops_mail"]);
    assert!(a.on_success.is_empty() && a.on_retry.is_empty());
    assert_eq!(b.on_failure, ["ops_mail", "alerts_hook"]);
    assert_eq!(b.on_success, ["alerts_hook"]);
    assert!(b.on_retry.is_empty());
    // Unset fields stay out of the stored JSON, so older specs keep their content hash.
    let json = serde_json::to_value(dag(&r, "etl")).unwrap();
    assert!(json.get("on_failure").is_none() && json.get("on_retry").is_none());
}

#[test]
fn python_script_is_read_by_the_loader() {
    let r = load_ok();
    let t = task(dag(&r, "scripted"), "transform");
    let TaskKind::Python {
        code, script, args, ..
    } = &t.kind
    else {
        panic!()
    };
    assert_eq!(script.as_deref(), Some("scripts/transform.py"));
    assert!(
        code.contains("print(\"transforming\", sys.argv[1:])"),
        "{code}"
    );
    assert_eq!(args, &["--day", "{{ ds }}"]);

    // From a subfolder: relative to the DAG file, stored relative to the DAG folder.
    let n = dag(&r, "nested");
    let TaskKind::Python { script, code, .. } = &task(n, "local_script").kind else {
        panic!()
    };
    assert_eq!(script.as_deref(), Some("scripts/transform.py"));
    assert!(code.starts_with("import sys"));
    assert_eq!(ups(n, "n_1"), ["ready"]);
}

#[test]
fn load_file_loads_one_file() {
    let r = tern_dag::load_file(&fixture("ok"), "sub/nested.star");
    assert!(r.errors.is_empty(), "{:#?}", error_lines(&r));
    assert_eq!(r.dags.len(), 1);
    assert_eq!(r.dags[0].file, "sub/nested.star");
    assert_eq!(r.files, ["sub/nested.star"]);
    let r = tern_dag::load_file(&fixture("ok"), "../ok/etl.star");
    assert_eq!(
        error_lines(&r),
        ["../ok/etl.star:0: the path points outside the DAG folder"]
    );
}

#[test]
fn specs_round_trip_through_json_and_hash_stably() {
    let a = load_ok();
    let b = load_ok();
    for (x, y) in a.dags.iter().zip(&b.dags) {
        assert_eq!(
            x.content_hash(),
            y.content_hash(),
            "evaluation is deterministic"
        );
        let back: tern_core::DagSpec =
            serde_json::from_str(&serde_json::to_string(x).unwrap()).unwrap();
        assert_eq!(&back, x);
    }
}

#[test]
fn the_shipped_examples_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/dags");
    let r = tern_dag::load_folder(&dir);
    assert!(r.errors.is_empty(), "{:#?}", error_lines(&r));
    let ids: Vec<&str> = r.dags.iter().map(|d| d.dag_id.as_str()).collect();
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
    let d = dag(&r, "regional_exports");
    assert_eq!(d.tasks.len(), 6);
    assert_eq!(d.tasks.last().unwrap().task_id, "summarize");
    assert_eq!(task(d, "export_east").retries, 2);
}
