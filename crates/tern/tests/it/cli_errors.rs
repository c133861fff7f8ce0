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

    // A top-level key one letter from `params` would vanish silently: refused as a typo.
    let out = t.run(&[
        "dags",
        "trigger",
        "p",
        "--conf",
        r#"{"parms": {"limit": 1}}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("conf key \"parms\" looks like a typo of \"params\""),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_banner_never_shows_the_database_password() {
    use std::io::BufRead;
    let db = tern_testkit::TestDb::postgres().await;
    // The machine's PostgreSQL trusts loopback, so any password works: a canary.
    let url = db.url.replacen(
        "postgres://postgres@",
        "postgres://postgres:canary-pw-7731@",
        1,
    );
    let t = Tern::new();
    let mut child = t
        .command(&["--database-url", &url, "server", "--port", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let banner = tokio::task::block_in_place(|| {
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.trim_start().starts_with("database:") {
                break;
            }
        }
        seen
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(banner.contains("postgres:***@127.0.0.1"), "{banner}");
    assert!(!banner.contains("canary-pw-7731"), "{banner}");
}

#[test]
fn a_connection_uri_can_come_from_standard_input() {
    use std::io::Write;
    let t = Tern::new();
    let mut child = t
        .command(&["connections", "add", "wh", "--uri-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While it waits for the URI, its command line holds no secret.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("stdin-pw-5512"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"postgres://etl:stdin-pw-5512@db.example:5432/dw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = t.ok(&["connections", "show", "wh"]);
    assert!(shown.contains("db.example"), "{shown}");
    assert!(!shown.contains("stdin-pw-5512"), "{shown}");
    // Neither --uri nor --uri-stdin: clap says what is missing.
    let out = t.run(&["connections", "add", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--uri"));
}

#[test]
fn dags_show_names_trigger_rules_as_written_and_backfill_needs_a_schedule() {
    let t = Tern::new();
    t.write_dag(
        "m.star",
        "d = dag(id = \"m\")\na = shell(id = \"a\", cmd = \"true\")\nb = shell(id = \"b\", cmd = \"true\", trigger_rule = \"none_failed_min_one_success\")\na >> b\n",
    );
    let shown = t.ok(&["dags", "show", "m"]);
    assert!(shown.contains("all_success"), "{shown}");
    assert!(shown.contains("none_failed_min_one_success"), "{shown}");
    assert!(!shown.contains("allsuccess"), "{shown}");
    let out = t.run(&[
        "dags",
        "backfill",
        "m",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-03",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("has no schedule"), "{err}");
    assert!(
        t.json(&["runs", "list"]).as_array().unwrap().is_empty(),
        "no run was made"
    );
}

#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::io::Read;
    let t = Tern::new();
    // Far more output than a pipe holds, so the writer meets the closed end.
    for i in 0..1500 {
        t.write_dag(&format!("d{i}.star"), &format!("dag(id = \"d{i}\")\n"));
    }
    let mut child = t
        .command(&["dags", "list", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then hang up, as `head` does.
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.success() || status.signal() == Some(13),
        "{status:?}: {err}"
    );
}

#[test]
fn connections_add_refuses_misspelled_and_unsupported_types() {
    let t = Tern::new();
    for (uri, says) in [
        (
            "postgress://u:p@db/x",
            "unknown connection type \"postgress\"",
        ),
        ("gs://bucket", "gs:// is not supported"),
    ] {
        let out = t.run(&["connections", "add", "c", "--uri", uri]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{uri} was saved");
        assert!(err.contains(says), "{uri}: {err}");
    }
    assert!(t
        .json(&["connections", "list"])
        .as_array()
        .unwrap()
        .is_empty());
}

/// Run where no data folder is (and none named), a command says so instead of making an empty
/// `./tern-home` and answering from it.
#[test]
fn a_command_without_a_data_folder_says_how_to_point_at_one_and_creates_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["dags", "list"])
        .current_dir(cwd.path())
        .env_remove("TERN_HOME")
        .env_remove("TERN_DAGS")
        .env_remove("TERN_DATABASE_URL")
        .env_remove("TERN_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("no data folder here") && err.contains("--home"),
        "{err}"
    );
    assert!(
        !cwd.path().join("tern-home").exists(),
        "nothing was created"
    );
}
