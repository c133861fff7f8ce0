//! `tern tasks list|clear`, `tern runs mark|delete` and `tern dags state` through the real
//! binary, locally and with `--server` (one code path over the client interface): the same
//! output either way, changes in the audit log under who made them.

use crate::agents::server_url;
use crate::api::{call, token_for};
use crate::harness::{run_state, task, Tern};

#[test]
fn tasks_are_listed_cleared_and_runs_marked_and_deleted_locally_and_remotely() {
    let t = Tern::new();
    let flag = t.path().join("ready.flag");
    t.write_dag(
        "ops.star",
        &format!(
            r#"
dag(id = "ops")
a = shell(id = "a", cmd = "echo a")
b = shell(id = "b", cmd = "test -f {flag}")
c = shell(id = "c", cmd = "echo c")
m = shell(id = "m", cmd = "echo item {{{{ n }}}} try {{{{ try_number }}}}", expand = {{"n": [1, 2, 3]}})
a >> b >> c
a >> m
"#,
            flag = flag.display()
        ),
    );
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let token = token_for(&t, "ana", "user");
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "--token", token.as_str()];
        all.extend(args);
        t.run(&all)
    };
    let out = t.run(&["dags", "trigger", "ops", "--wait"]);
    assert!(!out.status.success(), "b fails: the run fails");
    let run_id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // tasks list: the same table from the database and from the API.
    let local = t.ok(&["tasks", "list", "ops"]);
    assert!(local.contains("product n"), "{local}");
    let out = remote(&["tasks", "list", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), local);
    assert_eq!(t.ok(&["dags", "state", "ops", &run_id]).trim(), "failed");

    // Without --yes, clear lists what it would clear and changes nothing.
    let out = t.run(&["tasks", "clear", "ops", "--only-failed"]);
    assert_eq!(out.status.code(), Some(1));
    let plan = String::from_utf8(out.stdout).unwrap();
    assert!(
        plan.contains("would clear") && plan.contains("b, c"),
        "{plan}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    assert_eq!(t.ok(&["dags", "state", "ops", &run_id]).trim(), "failed");

    // The flag exists now: the failed tasks run again and the run succeeds.
    std::fs::write(&flag, "").unwrap();
    let cleared = t.ok(&["tasks", "clear", "ops", "--only-failed", "--yes"]);
    assert!(
        cleared.contains(&run_id) && cleared.contains("b, c"),
        "{cleared}"
    );
    let v = t.wait_run("ops", &run_id, "the cleared run", |v| {
        run_state(v) == "success"
    });
    assert_eq!(task(&v, "b")["try_number"], 2);

    // One instance of a mapped task, through the API.
    let out = remote(&[
        "tasks",
        "clear",
        "ops",
        "--run",
        &run_id,
        "--task",
        "m",
        "--map-index",
        "1",
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = t.wait_run("ops", &run_id, "instance 1 again", |v| {
        run_state(v) == "success"
            && v["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["task_id"] == "m" && x["map_index"] == 1 && x["try_number"] == 2)
    });
    let tries: Vec<i64> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["task_id"] == "m")
        .map(|x| x["try_number"].as_i64().unwrap())
        .collect();
    assert_eq!(tries, [1, 2, 1], "only instance 1 ran again");
    // A regex that matches nothing says so.
    let out = t.run(&["tasks", "clear", "ops", "--task", "z.*", "--yes"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches no task"));

    // Mark through the API, read the state locally; the same answer in both modes.
    let out = remote(&["runs", "mark", "ops", &run_id, "failed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("{run_id} failed")
    );
    assert_eq!(t.ok(&["dags", "state", "ops", &run_id]).trim(), "failed");
    let out = remote(&["dags", "state", "ops", &run_id]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "failed");

    // Delete needs --yes.
    let out = t.run(&["runs", "delete", "ops", &run_id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    let out = remote(&["runs", "delete", "ops", &run_id, "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = t.run(&["dags", "state", "ops", &run_id]);
    assert!(!out.status.success(), "the run is gone");

    // Who did what: the local clears as cli:USER, the API's changes as ana.
    let admin = token_for(&t, "root", "admin");
    let (_, audit) = call(&url, "GET", "/api/v1/audit", Some(&admin), "");
    let entries: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        entries.contains(&("run.delete".into(), "ana".into())),
        "{entries:?}"
    );
    assert!(
        entries.contains(&("run.mark_failed".into(), "ana".into())),
        "{entries:?}"
    );
    assert!(
        entries
            .iter()
            .any(|(a, who)| a == "task.clear" && who.starts_with("cli:")),
        "{entries:?}"
    );
}
