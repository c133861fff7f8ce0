//! DAG files: a broken file is an import error with file and line while the other DAGs keep
//! running; fixing it clears the error without a restart.

use std::time::{Duration, Instant};

use crate::harness::{finished, run_state, Tern, DEADLINE};

#[test]
fn broken_file_is_reported_and_fixing_it_needs_no_restart() {
    let t = Tern::new();
    t.write_dag(
        "good.star",
        "d = dag(id = \"good\")\nshell(id = \"a\", cmd = \"echo fine\")\n",
    );
    t.write_dag(
        "broken.star",
        "d = dag(id = \"broken\", schedule = \"61 * * * *\")\nempty(id = \"a\")\n",
    );
    let _sa = t.standalone();
    let errors = t.json(&["dags", "errors"]);
    let errors = errors.as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["file"], "broken.star");
    assert_eq!(errors[0]["line"], 1);
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("61 * * * *"));

    let run_id = t.trigger("good", None);
    let v = t.wait_run("good", &run_id, "the good DAG to run", finished);
    assert_eq!(run_state(&v), "success");

    // Fix the file; the running standalone picks it up on its next scan.
    t.write_dag(
        "broken.star",
        "d = dag(id = \"broken\", schedule = \"1 * * * *\")\nempty(id = \"a\")\n",
    );
    let start = Instant::now();
    loop {
        let dags = t.json(&["dags", "list"]);
        let listed = dags
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["dag_id"] == "broken");
        if listed && t.json(&["dags", "errors"]).as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the fixed file was not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dags_list_and_show_read_the_folder() {
    let t = Tern::new();
    t.write_dag(
        "etl.star",
        r#"
d = dag(id = "etl", schedule = "0 2 * * *", timezone = "Europe/Madrid", start_date = "2026-01-01", tags = ["x"])
for i in range(3):
    shell(id = "t%d" % i, cmd = "true")
"#,
    );
    let dags = t.json(&["dags", "list"]);
    assert_eq!(dags[0]["dag_id"], "etl");
    assert_eq!(dags[0]["schedule"], "0 2 * * *");
    let show = t.json(&["dags", "show", "etl"]);
    assert_eq!(show["spec"]["timezone"], "Europe/Madrid");
    assert_eq!(show["spec"]["tasks"].as_array().unwrap().len(), 3);
    assert_eq!(show["spec"]["start_date"], "2025-12-31T23:00:00Z");
}
