//! Branching and skips through the real binary: the shipped `branching` example triggered in
//! both modes against `tern standalone`, what the runs record and what the logs say.

use crate::harness::{run_state, task, Tern};

const EXAMPLE: &str = include_str!("../../../../examples/dags/branching.star");

#[test]
fn the_branching_example_runs_only_the_chosen_load_and_skips_by_exit_code_and_condition() {
    let t = Tern::new();
    t.write_dag("branching.star", EXAMPLE);
    let _sa = t.standalone();
    let trigger = |conf: &str| {
        let out = t.run(&["dags", "trigger", "branching", "--conf", conf, "--wait"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let v = t.json(&["runs", "show", "branching", &run_id]);
        (run_id, v)
    };

    let (run_id, v) = trigger(r#"{"params": {"mode": "full"}}"#);
    assert_eq!(run_state(&v), "success");
    let state =
        |v: &serde_json::Value, id: &str| task(v, id)["state"].as_str().unwrap().to_string();
    assert_eq!(
        state(&v, "only_latest"),
        "success",
        "a manual run is never held back"
    );
    assert_eq!(state(&v, "pick_load"), "success");
    assert_eq!(v["outputs"]["pick_load"]["follow"], "load_full");
    assert_eq!(state(&v, "load_full"), "success");
    assert_eq!(state(&v, "load_incremental"), "skipped");
    assert_eq!(
        task(&v, "load_incremental")["note"],
        "skipped: branch `pick_load` chose `load_full`"
    );
    assert_eq!(
        state(&v, "loaded"),
        "success",
        "the join runs after the branch"
    );
    assert_eq!(state(&v, "archive_old"), "skipped");
    assert_eq!(
        task(&v, "archive_old")["note"],
        "skipped: exit code 99 (skip_on_exit_code)"
    );
    let log = t.log("branching", &run_id, "archive_old", None);
    assert!(
        log.contains("nothing to archive today")
            && log.contains("task skipped: exit code 99 is in its skip_on_exit_code"),
        "{log}"
    );
    assert_eq!(state(&v, "publish"), "success");

    let (_, v) = trigger(r#"{"params": {"mode": "incremental", "publish": false}}"#);
    assert_eq!(run_state(&v), "success");
    assert_eq!(state(&v, "load_full"), "skipped");
    assert_eq!(state(&v, "load_incremental"), "success");
    assert_eq!(state(&v, "publish_gate"), "success");
    assert_eq!(state(&v, "publish"), "skipped");
    let note = task(&v, "publish")["note"].as_str().unwrap().to_string();
    assert!(note.contains("short_circuit `publish_gate`"), "{note}");
}

#[test]
fn a_branch_choosing_a_task_that_is_not_downstream_fails_with_the_choices() {
    let t = Tern::new();
    t.write_dag(
        "bad_branch.star",
        r#"
dag(id = "bad_branch")
pick = branch(id = "pick", cmd = "echo follow=lod >> $TERN_OUTPUT")
pick >> [shell(id = "load", cmd = "true"), shell(id = "skip_me", cmd = "true")]
"#,
    );
    let out = t.run(&["dags", "test", "bad_branch"]);
    assert_eq!(out.status.code(), Some(1), "the run fails");
    let runs = t.json(&["runs", "list", "--dag", "bad_branch"]);
    let run_id = runs[0]["run_id"].as_str().unwrap().to_string();
    let v = t.json(&["runs", "show", "bad_branch", &run_id]);
    assert_eq!(task(&v, "pick")["state"], "failed");
    let note = task(&v, "pick")["note"].as_str().unwrap();
    assert!(
        note.contains("`lod`") && note.contains("`load`, `skip_me`"),
        "{note}"
    );
    assert_eq!(task(&v, "load")["state"], "upstream_failed");
}
