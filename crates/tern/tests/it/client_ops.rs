//! `tern tasks list|clear`, `tern runs mark|delete`, `tern dags state|delete` and `tern users
//! delete` through the real
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
    // One output per command whatever the mode: the listings print the same.
    for args in [
        &["dags", "list"][..],
        &["runs", "list"][..],
        &["runs", "list", "--dag", "ops", "-o", "json"][..],
        &["runs", "show", "ops", &run_id][..],
        &["runs", "show", "ops", &run_id, "-o", "json"][..],
    ] {
        let out = remote(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            t.ok(args),
            "{args:?}"
        );
    }

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

    // Deleting a DAG needs --yes and the op role; its file brings it back, without runs.
    t.ok(&["dags", "trigger", "ops"]);
    let out = remote(&["dags", "delete", "ops", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs the op role"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = t.run(&["dags", "delete", "ops"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    let deadline = std::time::Instant::now() + crate::harness::DEADLINE;
    loop {
        // Refused while the new run is queued or running, then done.
        let out = t.run(&["dags", "delete", "ops", "--yes"]);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("queued or running"), "{err}");
        assert!(std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let runs = t.json(&["runs", "list", "--dag", "ops"]);
    assert_eq!(runs.as_array().unwrap().len(), 0, "{runs}");
    let dags = t.json(&["dags", "list"]);
    assert_eq!(dags[0]["dag_id"], "ops", "the file declares it again");

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

    // Deleting a user ends their token at once; the last admin stays.
    let out = t.run(&["users", "delete", "ana"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"));
    t.ok(&["users", "delete", "ana", "--yes"]);
    let out = remote(&["dags", "state", "ops", &run_id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    t.ok(&["users", "delete", "root", "--yes"]);
    let out = t.run(&["users", "delete", "admin", "--yes"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pools, connections, agents, tokens, users and variables: listed the same way and removed
/// the same way (audited) from the database and through the API.
#[test]
fn the_estates_listings_print_the_same_locally_and_remotely_and_removals_are_audited() {
    let t = Tern::new();
    let mut sa = t.standalone();
    let url = server_url(&mut sa);
    let token = token_for(&t, "olga", "admin");
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str(), "--token", token.as_str()];
        all.extend(args);
        let out = t.run(&all);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    t.ok(&["pools", "set", "etl", "4", "--description", "nightly loads"]);
    remote(&["pools", "set", "web", "2"]);
    t.ok(&[
        "connections",
        "add",
        "wh",
        "--uri",
        "postgres://etl:secret-pw@db.internal:5432/wh",
    ]);
    t.ok(&["variables", "set", "region", "eu-west-1"]);
    t.ok(&["variables", "set", "api_key", "k-123", "--secret"]);
    t.ok(&["users", "add", "viv", "--role", "viewer"]);
    let viv = t.ok(&["tokens", "create", "viv", "--name", "ci"]);
    assert!(!viv.trim().is_empty());
    t.ok(&["agents", "activation", "create", "--site", "branch"]);
    for args in [
        &["pools", "list"][..],
        &["pools", "list", "-o", "json"][..],
        &["connections", "list"][..],
        &["connections", "list", "-o", "json"][..],
        &["agents", "list"][..],
        &["tokens", "list"][..],
        &["tokens", "list", "-o", "json"][..],
        &["users", "list"][..],
        &["variables", "list"][..],
        &["variables", "list", "-o", "json"][..],
    ] {
        let here = t.ok(args);
        let there = remote(args);
        // A token's "last used" moves as the remote calls use it: compare without that column.
        let strip = |s: &str| -> String {
            if args[0] == "tokens" {
                s.lines()
                    .filter(|l| !l.contains("olga"))
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                s.to_string()
            }
        };
        assert_eq!(strip(&there), strip(&here), "{args:?} differs by mode");
    }
    let pools = t.ok(&["pools", "list"]);
    assert!(pools.starts_with("POOL"), "{pools}");
    assert!(
        pools.contains("nightly loads") && pools.contains("web"),
        "{pools}"
    );
    assert!(!t
        .ok(&["connections", "list", "-o", "json"])
        .contains("secret-pw"));
    let vars = t.ok(&["variables", "list"]);
    assert!(
        vars.contains("(secret)") && !vars.contains("k-123"),
        "{vars}"
    );

    // Removals: locally and remotely, each in the audit log.
    t.ok(&["pools", "delete", "etl"]);
    remote(&["pools", "delete", "web"]);
    remote(&["connections", "delete", "wh"]);
    t.ok(&["variables", "delete", "region"]);
    let token_id = t
        .json(&["tokens", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["username"] == "viv")
        .unwrap()["id"]
        .to_string();
    remote(&["tokens", "revoke", &token_id]);
    let pools = t.ok(&["pools", "list"]);
    assert!(!pools.contains("etl") && !pools.contains("web"), "{pools}");
    assert!(!t.ok(&["connections", "list"]).contains("wh"));
    assert!(t.ok(&["tokens", "list"]).contains("revoked"));
    let (_, audit) = call(&url, "GET", "/api/v1/audit", Some(&token), "");
    let actions: Vec<(String, String)> = audit["entries"]
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
    for (action, by_cli) in [
        ("pool.set", true),
        ("pool.delete", true),
        ("pool.delete", false),
        ("connection.delete", false),
        ("variable.delete", true),
        ("token.revoke", false),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, who)| a == action && who.starts_with("cli:") == by_cli),
            "{action} by {} missing in {actions:?}",
            if by_cli { "the local CLI" } else { "the API" }
        );
    }
    // Removing what is not there says so, in both modes.
    let out = t.run(&["pools", "delete", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope"), "{err}");
}
