//! Sensors through the scheduler and the local agent: a waiting sensor frees its slot between
//! pokes, an external-task sensor sees another DAG's run for the same date, and pokes share one
//! try and one log.

use crate::harness::{finished, run_state, task, Tern};

#[test]
fn sensors_wait_without_a_slot_and_see_other_dags() {
    let t = Tern::new();
    t.agent_setting("concurrency = 1");
    let flags = t.path().join("flags");
    std::fs::create_dir_all(&flags).unwrap();
    t.write_dag(
        "feed.star",
        r#"
dag(id = "feed")
shell(id = "load", cmd = "echo loaded")
"#,
    );
    t.write_dag(
        "report.star",
        &format!(
            r#"
dag(id = "report")
f = file_sensor(id = "wait_file", path = "{}/{{{{ ds }}}}.done", poke_interval = 0.2, timeout = "10m", priority_weight = 10)
e = external_task_sensor(id = "wait_feed", external_dag_id = "feed", external_task_id = "load", poke_interval = 0.2)
shell(id = "busy", cmd = "echo busy")
shell(id = "publish", cmd = "echo published {{{{ outputs.wait_file.path }}}}", upstream = [f, e])
"#,
            flags.display()
        ),
    );
    let _sa = t.standalone();
    let date = "2026-03-01T00:00:00Z";
    let report = t
        .ok(&["dags", "trigger", "report", "--logical-date", date])
        .trim()
        .to_string();
    // One slot only: `busy` can run only because the waiting sensors do not hold it.
    let v = t.wait_run("report", &report, "busy to run beside the sensors", |v| {
        task(v, "busy")["state"] == "success"
    });
    for sensor in ["wait_file", "wait_feed"] {
        let state = task(&v, sensor)["state"].as_str().unwrap().to_string();
        assert_ne!(
            state, "success",
            "{sensor} cannot have succeeded yet: {v:#}"
        );
    }
    let feed = t
        .ok(&["dags", "trigger", "feed", "--logical-date", date])
        .trim()
        .to_string();
    std::fs::write(flags.join("2026-03-01.done"), "").unwrap();
    let v = t.wait_run("report", &report, "the report run to finish", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(
        run_state(&t.json(&["runs", "show", "feed", &feed])),
        "success"
    );
    let sensor = task(&v, "wait_file");
    assert_eq!(sensor["try_number"], 1, "pokes share one try: {sensor:#}");
    let log = t.log("report", &report, "wait_file", None);
    let pokes = log.matches("next poke in").count();
    assert!(pokes >= 1, "every poke appends to the try's log:\n{log}");
    assert!(log.contains("tern: task succeeded"), "{log}");
    assert!(t
        .log("report", &report, "publish", None)
        .contains("published /"));
    let ext = t.log("report", &report, "wait_feed", None);
    assert!(ext.contains("waiting for task feed.load"), "{ext}");
}

#[test]
fn sensor_timeout_with_soft_fail_skips_downstream() {
    let t = Tern::new();
    t.write_dag(
        "soft.star",
        r#"
dag(id = "soft")
w = file_sensor(id = "wait", path = "/nonexistent/{{ ds }}", poke_interval = 0.1, timeout = 0.5, soft_fail = True, retries = 3)
shell(id = "after", cmd = "echo never", upstream = [w])
"#,
    );
    let _sa = t.standalone();
    let run = t.trigger("soft", None);
    let v = t.wait_run("soft", &run, "the sensor to give up", |v| {
        task(v, "after")["state"] == "skipped"
    });
    let w = task(&v, "wait");
    assert_eq!(w["state"], "skipped", "{v:#}");
    assert!(
        w["note"].as_str().unwrap().contains("sensor timed out"),
        "{w:#}"
    );
    assert_eq!(w["try_number"], 1, "a timeout uses no retry: {w:#}");
}
