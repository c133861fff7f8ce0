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

/// Files written to crash or exhaust the evaluator (a stack overflow in `json.encode`, a
/// 16 GB list, params nested 2,000 deep, a FIFO): each is an import error of its own file,
/// and the running server, its other DAGs and every later command carry on.
#[test]
fn hostile_files_are_import_errors_and_the_server_survives_them() {
    let t = Tern::new();
    t.write_dag(
        "good.star",
        "d = dag(id = \"good\")\nshell(id = \"a\", cmd = \"echo fine\")\n",
    );
    let mut sa = t.standalone();
    t.write_dag(
        "deep_json.star",
        "x = []\nfor i in range(3000):\n    x = [x]\ns = json.encode(x)\ndag(id = \"deep\")\n",
    );
    t.write_dag("bomb.star", "x = [0] * 2000000000\ndag(id = \"bomb\")\n");
    t.write_dag(
        "deep_params.star",
        "p = 1\nfor i in range(2000):\n    p = [p]\ndag(id = \"dp\", params = {\"p\": p})\n",
    );
    let fifo = t.dags.join("_lib");
    std::fs::create_dir_all(&fifo).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(fifo.join("pipe.star"))
        .status()
        .unwrap()
        .success());
    t.write_dag(
        "fifo_user.star",
        "load(\"_lib/pipe.star\", \"x\")\ndag(id = \"fu\")\n",
    );
    let start = Instant::now();
    let errors = loop {
        let errors = t.json(&["dags", "errors"]);
        if errors.as_array().map(|a| a.len()) == Some(4) {
            break errors;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "errors never listed: {errors:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = errors.to_string();
    for file in [
        "deep_json.star",
        "bomb.star",
        "deep_params.star",
        "fifo_user.star",
    ] {
        assert!(text.contains(file), "{file} missing from {text}");
    }
    assert!(text.contains("crashed the evaluator"), "{text}");
    assert!(text.contains("nested deeper than 32 levels"), "{text}");
    assert!(text.contains("not a regular file"), "{text}");
    // The server is alive and still runs the good DAG.
    assert!(sa.child.try_wait().unwrap().is_none(), "the server died");
    let run_id = t.trigger("good", None);
    let v = t.wait_run("good", &run_id, "the good DAG", finished);
    assert_eq!(run_state(&v), "success");
    // Removing the files clears their errors without a restart.
    for f in [
        "deep_json.star",
        "bomb.star",
        "deep_params.star",
        "fifo_user.star",
    ] {
        std::fs::remove_file(t.dags.join(f)).unwrap();
    }
    let start = Instant::now();
    while t.json(&["dags", "errors"]).as_array().map(|a| a.len()) != Some(0) {
        assert!(start.elapsed() < DEADLINE, "errors were not cleared");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sa.child.try_wait().unwrap().is_none(), "the server died");
}

/// The server watches its DAG folder: a new file, a changed one and a removed one are seen
/// without waiting for a scan (the scan interval here is an hour).
#[test]
fn the_dag_folder_is_watched_so_changes_need_no_scan() {
    use crate::api::{call, token_for};
    let t = Tern::new();
    let settings = std::fs::read_to_string(t.path().join("tern.toml"))
        .unwrap()
        .replace(
            "dag_scan_interval = \"200ms\"",
            "dag_scan_interval = \"1h\"",
        );
    std::fs::write(t.path().join("tern.toml"), settings).unwrap();
    let (_server, url) = crate::links::server_on(&t, 0);
    let token = token_for(&t, "reader", "viewer");
    let until = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let version = || {
        let (status, v) = call(&url, "GET", "/api/v1/dags/watched", Some(&token), "");
        (status == 200 && v["is_active"] == true).then(|| v["version"].as_i64().unwrap())
    };
    t.write_dag(
        "watched.star",
        "dag(id = \"watched\")\nshell(id = \"a\", cmd = \"true\")\n",
    );
    until("the new file", &|| version() == Some(1));
    t.write_dag(
        "sub/watched.star.tmp",
        "not a DAG file: its name does not end in .star",
    );
    t.write_dag(
        "watched.star",
        "dag(id = \"watched\")\nshell(id = \"b\", cmd = \"true\")\n",
    );
    until("the changed file", &|| version() == Some(2));
    std::fs::remove_file(t.dags.join("watched.star")).unwrap();
    until("the removed file", &|| version().is_none());
}
