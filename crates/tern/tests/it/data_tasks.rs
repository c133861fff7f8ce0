//! Data tasks through the real binary: a `sql` task fills a SQLite database, a
//! `sql_to_lake` task exports it to a local lake folder, a downstream task reads the outputs.
//! Connections come from `TERN_CONN_*` variables of the control plane's local agent.

use std::process::Stdio;

use crate::harness::{files_containing, finished, run_state, Standalone, Tern};

#[test]
fn sql_then_export_then_outputs_downstream() {
    let t = Tern::new();
    let lake = t.path().join("lake");
    t.write_dag(
        "etl.star",
        r#"
d = dag(id = "etl")
fill = sql(id = "load", conn = "hq", sql = [
    "CREATE TABLE IF NOT EXISTS sales (day TEXT, amount REAL)",
    "INSERT INTO sales VALUES (?, ?)",
], parameters = ["{{ ds }}", 12.5])
export = sql_to_lake(id = "export", conn = "hq", sql = "SELECT day, amount FROM sales",
                     target_conn = "lake", target = "sales/{{ ds }}.csv", line_ending = "crlf")
report = shell(id = "report", cmd = "echo exported {{ outputs.export.rows }} rows to {{ outputs.export.url }}")
fill >> export >> report
"#,
    );
    let db = t.path().join("hq.sqlite");
    let child = t
        .command(&["standalone", "--port", "0", "--no-examples"])
        .env(
            "TERN_CONN_HQ",
            format!("sqlite://{}?mode=rwc", db.display()),
        )
        .env("TERN_CONN_LAKE", format!("file://{}", lake.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _sa = Standalone { child };
    let run_id = t.trigger("etl", None);
    let v = t.wait_run("etl", &run_id, "the ETL run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    let ds = v["run"]["logical_date"].as_str().unwrap()[..10].to_string();
    let text = std::fs::read_to_string(lake.join(format!("sales/{ds}.csv"))).unwrap();
    assert_eq!(text, format!("day,amount\r\n{ds},12.5\r\n"));
    assert_eq!(v["outputs"]["export"]["rows"], 1);
    assert_eq!(v["outputs"]["load"]["rows_affected"], 1);
    assert!(t.log("etl", &run_id, "report", None).contains(&format!(
        "exported 1 rows to file://{}/sales/{ds}.csv",
        lake.display()
    )));
    let log = t.log("etl", &run_id, "export", None);
    assert!(log.contains("1 row(s) exported"), "{log}");
}

#[test]
fn a_dag_with_bad_data_task_fields_is_refused_with_one_error_per_problem() {
    let t = Tern::new();
    t.write_dag(
        "bad.star",
        r#"
d = dag(id = "bad")
sql(id = "a", sql = "SELECT 1")
sql_to_lake(id = "b", conn = "hq", sql = "SELECT 1", target_conn = "lake", target = "x.xlsx")
sql_to_lake(id = "c", conn = "hq", sql = "SELECT 1", target_conn = "lake", target = "x.csv", delimiter = ",,", formt = "csv")
sql_to_lake(id = "e", conn = "hq", sql = "SELECT 1", target_conn = "lake", target = "x.csv", compression = "zstd")
sql_to_lake(id = "f", conn = "hq", sql = "SELECT 1", target_conn = "lake", target = "x.parquet", compression = "zst")
"#,
    );
    let out = t.run(&["dags", "errors"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("bad.star:3") && text.contains("`conn` is required"),
        "{text}"
    );
    assert!(
        text.contains("bad.star:4") && text.contains("cannot tell the format"),
        "{text}"
    );
    assert!(
        text.contains("bad.star:5") && text.contains("`delimiter` must be one ASCII character"),
        "{text}"
    );
    assert!(
        text.contains("formt") && text.contains("did you mean `format`"),
        "{text}"
    );
    assert!(
        text.contains("bad.star:6")
            && text.contains("`compression` applies to format \"parquet\" only"),
        "{text}"
    );
    assert!(
        text.contains("bad.star:7") && text.contains("unknown compression `zst`"),
        "{text}"
    );
}

fn mysql(sql: &str) {
    tern_testkit::mysql(&["-e", sql]);
}

#[test]
fn stored_connections_are_encrypted_never_shown_and_reach_the_task() {
    const CANARY: &str = "Canary-Db-9x7Qp";
    let id = std::process::id();
    let (db, user) = (format!("tern_c_{id}"), format!("tern_c_{id}"));
    mysql(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT, name VARCHAR(20)); \
         INSERT INTO {db}.t VALUES (1, 'x'), (2, 'y'); DROP USER IF EXISTS '{user}'@'%'; \
         CREATE USER '{user}'@'%' IDENTIFIED BY '{CANARY}'; GRANT SELECT ON {db}.* TO '{user}'@'%';"
    ));
    let t = Tern::new();
    let lake = t.path().join("lake");
    t.ok(&[
        "connections",
        "add",
        "hq",
        "--uri",
        &format!("mysql://{user}:{CANARY}@127.0.0.1:3306/{db}"),
    ]);
    t.ok(&[
        "connections",
        "add",
        "lake",
        "--uri",
        &format!("file://{}", lake.display()),
    ]);
    // Adding it again without --replace is refused.
    assert!(!t
        .run(&["connections", "add", "lake", "--uri", "file:///tmp"])
        .status
        .success());
    let listed = t.ok(&["connections", "list"]) + &t.ok(&["connections", "show", "hq"]);
    assert!(
        listed.contains("127.0.0.1") && listed.contains(&user),
        "{listed}"
    );
    assert!(!listed.contains(CANARY), "{listed}");
    assert!(t.ok(&["connections", "test", "hq"]).contains("SELECT 1"));
    t.write_dag(
        "export.star",
        r#"
d = dag(id = "export")
sql_to_lake(id = "export", conn = "hq", sql = "SELECT * FROM t ORDER BY id", target_conn = "lake", target = "t.csv")
"#,
    );
    let _sa = t.standalone();
    let run_id = t.trigger("export", None);
    let v = t.wait_run("export", &run_id, "the export", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(
        std::fs::read_to_string(lake.join("t.csv")).unwrap(),
        "id,name\n1,x\n2,y\n"
    );
    let log = t.log("export", &run_id, "export", None);
    assert!(
        log.contains(&format!("user {user} at 127.0.0.1:3306")),
        "{log}"
    );
    // Encrypted at rest: the password is nowhere in the data folder (database, logs, key file).
    assert_eq!(files_containing(t.path(), CANARY), Vec::<String>::new());
    mysql(&format!("DROP DATABASE {db}; DROP USER '{user}'@'%';"));
}
