//! Bad input: a clear message, a non-zero exit, and nothing changed.

use crate::harness::Tern;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_triggers_are_refused_and_create_nothing() {
    let t = Tern::new();
    t.write_dag(
        "p.star",
        r#"
d = dag(id = "p", params = {"limit": {"default": 10, "type": "integer"}})
empty(id = "a")
"#,
    );
    let out = t.run(&["dags", "trigger", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no DAG with id \"nope\""),
        "{}",
        stderr(&out)
    );

    let out = t.run(&[
        "dags",
        "trigger",
        "p",
        "--conf",
        r#"{"params": {"limit": "ten"}}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("param \"limit\" must be of type integer, got string"),
        "{}",
        stderr(&out)
    );

    let out = t.run(&[
        "dags",
        "trigger",
        "p",
        "--conf",
        r#"{"params": {"limt": 1}}"#,
    ]);
    assert!(
        stderr(&out).contains("unknown param \"limt\""),
        "{}",
        stderr(&out)
    );

    let out = t.run(&["dags", "trigger", "p", "--conf", "not json"]);
    assert!(
        stderr(&out).contains("--conf is not valid JSON"),
        "{}",
        stderr(&out)
    );

    t.ok(&["dags", "pause", "p"]);
    let out = t.run(&["dags", "trigger", "p"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is paused"), "{}", stderr(&out));

    let runs = t.json(&["runs", "list"]);
    assert_eq!(
        runs.as_array().unwrap().len(),
        0,
        "nothing was created: {runs}"
    );
}

#[test]
fn bad_settings_name_the_setting() {
    let t = Tern::new();
    std::fs::write(
        t.path().join("tern.toml"),
        "[scheduler]\nlease = \"soon\"\n",
    )
    .unwrap();
    let out = t.run(&["dags", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("setting scheduler.lease"),
        "{}",
        stderr(&out)
    );
    std::fs::write(t.path().join("tern.toml"), "[scheduler]\nleese = \"5s\"\n").unwrap();
    let out = t.run(&["dags", "list"]);
    assert!(
        stderr(&out).contains("unknown field `leese`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_show_masks_the_database_password() {
    let t = Tern::new();
    let out = t.ok(&[
        "--database-url",
        "postgres://tern:hunter2@db.example:5432/tern",
        "config",
        "show",
    ]);
    assert!(
        out.contains("postgres://tern:***@db.example:5432/tern"),
        "{out}"
    );
    assert!(!out.contains("hunter2"));
}
