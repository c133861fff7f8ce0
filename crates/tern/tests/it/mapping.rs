//! Dynamic task mapping through the real binary: the shipped `mapped_etl` example run by
//! `tern standalone`, its instances in `runs show`, their logs by `--map-index` (locally and
//! through the API with `--server`), clearing one instance, and a list over the limit.

use crate::agents::server_url;
use crate::api::{call, token_for};
use crate::harness::{run_state, Tern};

const EXAMPLE: &str = include_str!("../../../../examples/dags/mapped_etl.star");

/// The instances of `task_id` in a `runs show` answer: (map_index, state).
fn instances(v: &serde_json::Value, task_id: &str) -> Vec<(i64, String)> {
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_id"] == task_id)
        .map(|t| {
            (
                t["map_index"].as_i64().unwrap(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `tern dags trigger DAG [--conf CONF] --wait`: whether the run succeeded, and its id.
fn trigger_wait(t: &Tern, dag: &str, conf: Option<&str>) -> (bool, String) {
    let mut args = vec!["dags", "trigger", dag, "--wait"];
    if let Some(c) = conf {
        args.extend(["--conf", c]);
    }
    let out = t.run(&args);
    let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (out.status.success(), run_id)
}

fn success(n: i64) -> Vec<(i64, String)> {
    (0..n).map(|i| (i, "success".to_string())).collect()
}

#[test]
fn the_mapped_example_fans_out_over_a_runtime_list_and_each_instance_has_its_log() {
    let t = Tern::new();
    t.write_dag("mapped_etl.star", EXAMPLE);
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let (ok, run_id) = trigger_wait(&t, "mapped_etl", None);
    assert!(ok, "the run succeeds");
    let v = t.json(&["runs", "show", "mapped_etl", &run_id]);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(
        instances(&v, "extract.pull"),
        success(6),
        "3 tables x 2 regions"
    );
    assert_eq!(
        instances(&v, "check_rows"),
        success(6),
        "one check per pull"
    );
    assert_eq!(
        instances(&v, "load_full"),
        success(2),
        "one load per region"
    );
    assert_eq!(
        instances(&v, "load_sample"),
        vec![(-1, "skipped".to_string())]
    );
    assert_eq!(
        v["outputs"]["extract.pull"]["rows"],
        serde_json::json!([100, 200, 300, 400, 500, 600]),
        "downstream sees the list of outputs in index order"
    );
    // Instance 3 is customers x south (the last key varies fastest).
    let log = t.ok(&[
        "logs",
        "mapped_etl",
        &run_id,
        "extract.pull",
        "--map-index",
        "3",
    ]);
    assert!(
        log.contains("pulling customers for south") && log.contains("(instance 3)"),
        "{log}"
    );
    let report = t.ok(&["logs", "mapped_etl", &run_id, "report"]);
    assert!(
        report.contains("rows per pull: 100,200,300,400,500,600"),
        "{report}"
    );
    // Without an index a mapped task's log is ambiguous: the error says how to name one.
    let out = t.run(&["logs", "mapped_etl", &run_id, "extract.pull"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mapped into 6 instances") && err.contains("--map-index"),
        "{err}"
    );
    // The same log through the REST API (one CLI code path over the client interface).
    let token = token_for(&t, "ana", "viewer");
    let remote = t.ok(&[
        "--server",
        &url,
        "--token",
        &token,
        "logs",
        "mapped_etl",
        &run_id,
        "extract.pull",
        "--map-index",
        "3",
    ]);
    assert_eq!(remote, log, "local and remote logs agree");
    let table = t.ok(&[
        "--server",
        &url,
        "--token",
        &token,
        "runs",
        "show",
        "mapped_etl",
        &run_id,
    ]);
    assert!(table.contains("extract.pull[5]"), "{table}");

    // A param narrows the fan-out; the branch takes the sample load.
    let (ok, run2) = trigger_wait(
        &t,
        "mapped_etl",
        Some(r#"{"params": {"mode": "sample", "regions": ["north"]}}"#),
    );
    assert!(ok);
    let v = t.json(&["runs", "show", "mapped_etl", &run2]);
    assert_eq!(run_state(&v), "success");
    assert_eq!(instances(&v, "extract.pull"), success(3));
    assert_eq!(
        instances(&v, "load_full"),
        vec![(-1, "skipped".to_string())]
    );
    assert_eq!(
        instances(&v, "load_sample"),
        vec![(-1, "success".to_string())]
    );
}

#[test]
fn clearing_one_instance_reruns_only_it_and_a_list_over_the_limit_fails_the_task() {
    let t = Tern::new();
    std::fs::write(
        t.path().join("tern.toml"),
        std::fs::read_to_string(t.path().join("tern.toml"))
            .unwrap()
            .replace("[scheduler]\n", "[scheduler]\nmax_map_length = 4\n"),
    )
    .unwrap();
    t.write_dag(
        "m.star",
        r#"
dag(id = "m", params = {"items": [1, 2, 3]})
work = shell(id = "work", cmd = "echo item {{ item }} try {{ try_number }}", expand = {"item": param("items")})
after = shell(id = "after", cmd = "echo after")
work >> after
"#,
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let (ok, run_id) = trigger_wait(&t, "m", None);
    assert!(ok);
    let token = token_for(&t, "ana", "user");
    let (status, answer) = call(
        &url,
        "POST",
        &format!("/api/v1/dags/m/dagRuns/{run_id}/clear"),
        Some(&token),
        r#"{"task_ids": ["work"], "map_index": 1}"#,
    );
    assert_eq!(status, 200, "{answer}");
    // A map index the task does not have is a 404 that names it.
    let (status, answer) = call(
        &url,
        "POST",
        &format!("/api/v1/dags/m/dagRuns/{run_id}/clear"),
        Some(&token),
        r#"{"task_ids": ["work"], "map_index": 7}"#,
    );
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("map_index 7"),
        "{answer}"
    );
    let v = t.wait_run("m", &run_id, "the cleared instance", |v| {
        run_state(v) == "success"
            && v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["task_id"] == "work" && x["map_index"] == 1 && x["try_number"] == 2)
    });
    let tries: Vec<(i64, i64)> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["task_id"] == "work")
        .map(|x| {
            (
                x["map_index"].as_i64().unwrap(),
                x["try_number"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tries,
        vec![(0, 1), (1, 2), (2, 1)],
        "only instance 1 ran again"
    );
    let log = t.ok(&["logs", "m", &run_id, "work", "--map-index", "1"]);
    assert!(log.contains("item 2 try 2"), "{log}");

    // Five items with max_map_length = 4: the task fails saying why, and its downstream too.
    let (ok, _) = trigger_wait(&t, "m", Some(r#"{"params": {"items": [1, 2, 3, 4, 5]}}"#));
    assert!(!ok, "the run fails");
    let runs = t.json(&["runs", "list", "--dag", "m"]);
    let failed = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["state"] == "failed")
        .expect("a failed run");
    let v = t.json(&["runs", "show", "m", failed["run_id"].as_str().unwrap()]);
    let work = crate::harness::task(&v, "work");
    assert_eq!(work["state"], "failed");
    assert!(
        work["note"]
            .as_str()
            .unwrap()
            .contains("expands to 5 instances, more than max_map_length (4)"),
        "{work}"
    );
    assert_eq!(
        crate::harness::task(&v, "after")["state"],
        "upstream_failed"
    );
}
