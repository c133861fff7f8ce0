//! Data tasks against the real databases of this machine (MariaDB, PostgreSQL, SQLite files) and
//! an S3-compatible server started in the test (s3s-fs, SigV4 enforced).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;
use sqlx::{Connection, Executor};
use tern_core::{CsvOptions, ExportFormat, TaskKind};
use tern_worker::connections::{ConnectionConfig, Connections};
use tern_worker::{execute, ExecOptions};
use tokio_util::sync::CancellationToken;

pub(crate) use tern_testkit::s3::S3;

use crate::{assignment, Collect};

const MYSQL_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";

/// A database of its own on the machine's MariaDB, with the `customers` table of the hybrid
/// scenario: a quote in a name, a comma inside a field, a NULL, non-ASCII letters.
pub struct MariaDb {
    pub name: String,
}

impl MariaDb {
    pub async fn new() -> MariaDb {
        let name = format!("tern_w_{:08x}", rand_u32());
        let mut c = sqlx::MySqlConnection::connect(MYSQL_ADMIN).await.unwrap();
        c.execute(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4").as_str())
            .await
            .unwrap();
        c.execute(
            format!(
                "CREATE TABLE {name}.customers (id INT PRIMARY KEY, date DATETIME NOT NULL, first_name VARCHAR(50), \
                 last_name VARCHAR(50), email VARCHAR(100) NULL, gender VARCHAR(10), ip_address VARCHAR(40), \
                 country VARCHAR(40), consent BOOLEAN, balance DECIMAL(10,2))"
            )
            .as_str(),
        )
        .await
        .unwrap();
        c.execute(
            format!(
                "INSERT INTO {name}.customers VALUES \
                 (1, '2026-01-02 03:04:05', 'Seán', 'O''Brien', 'sean@example.com', 'Male', '10.0.0.1', 'Spain', 1, 10.50), \
                 (2, '2026-02-03 04:05:06', 'Ana, María', 'García \"la\" Grande', NULL, 'Female', '10.0.0.2', 'Spain', 0, -3.25), \
                 (3, '2026-03-04 05:06:07', 'Zoë', 'Łukasiewicz', 'zoe@example.com', 'Female', '10.0.0.3', 'Poland', 1, 0.00)"
            )
            .as_str(),
        )
        .await
        .unwrap();
        c.close().await.unwrap();
        MariaDb { name }
    }

    pub fn uri(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    pub async fn drop_db(self) {
        let mut c = sqlx::MySqlConnection::connect(MYSQL_ADMIN).await.unwrap();
        c.execute(format!("DROP DATABASE {}", self.name).as_str())
            .await
            .unwrap();
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

pub(crate) fn conns(list: &[(&str, String)]) -> Connections {
    let mut file = BTreeMap::new();
    for (name, uri) in list {
        file.insert(
            name.to_string(),
            ConnectionConfig {
                uri: uri.clone(),
                extra: Default::default(),
            },
        );
    }
    Connections::resolve(&file, "agent.toml", Vec::new()).unwrap()
}

pub fn export(sql: &str, target: &str, format: ExportFormat, csv: CsvOptions) -> TaskKind {
    TaskKind::SqlToLake(tern_core::SqlToLakeTask {
        conn: "hq".into(),
        sql: sql.into(),
        parameters: vec![],
        target_conn: "lake".into(),
        target: target.into(),
        format,
        csv,
        compression: Default::default(),
    })
}

pub(crate) async fn run(kind: TaskKind, c: Connections) -> (tern_protocol::Completion, String) {
    let a = assignment(kind);
    let sink = Collect::default();
    let opts = ExecOptions::default().with_connections(c);
    let done = execute(&a, &opts, &sink, &CancellationToken::new()).await;
    (done, sink.text())
}

/// `mysql --batch` output for a query: rows of fields, NULL as `NULL`, with its escapes undone.
fn mysql_batch(db: &str, sql: &str) -> Vec<Vec<String>> {
    tern_testkit::mysql(&["--batch", "--skip-column-names", db, "-e", sql])
        .lines()
        .map(|l| {
            l.split('\t')
                .map(|f| {
                    f.replace("\\n", "\n")
                        .replace("\\t", "\t")
                        .replace("\\\\", "\\")
                })
                .collect()
        })
        .collect()
}

fn read_csv(path: &Path, delimiter: u8, header: bool) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(header)
        .from_path(path)
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

#[tokio::test]
async fn mariadb_to_csv_matches_what_mysql_itself_returns() {
    let db = MariaDb::new().await;
    let lake = tempfile::tempdir().unwrap();
    let sql = "SELECT * FROM customers WHERE country = 'Spain' ORDER BY id";
    let csv = CsvOptions {
        null_text: "NULL".into(),
        ..CsvOptions::default()
    };
    let (done, log) = run(
        export(sql, "period1/hq-data.csv", ExportFormat::Csv, csv),
        conns(&[
            ("hq", db.uri()),
            ("lake", format!("file://{}", lake.path().display())),
        ]),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["rows"], 2);
    let file = lake.path().join("period1/hq-data.csv");
    assert_eq!(
        done.outputs["bytes"],
        std::fs::metadata(&file).unwrap().len()
    );
    let ours = read_csv(&file, b',', true);
    assert_eq!(ours, mysql_batch(&db.name, sql));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(
        "id,date,first_name,last_name,email,gender,ip_address,country,consent,balance\n"
    ));
    assert!(
        text.contains(
            "1,2026-01-02 03:04:05,Seán,O'Brien,sean@example.com,Male,10.0.0.1,Spain,1,10.50\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\"Ana, María\",\"García \"\"la\"\" Grande\",NULL"),
        "{text}"
    );
    // The log names the target and the count, never a row.
    assert!(log.contains("user root at 127.0.0.1:3306"), "{log}");
    assert!(log.contains("2 row(s) exported"), "{log}");
    assert!(
        !log.contains("sean@example.com") && !log.contains("Seán"),
        "{log}"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn csv_options_and_json_lines_and_empty_results() {
    let db = MariaDb::new().await;
    let lake = tempfile::tempdir().unwrap();
    let c = || {
        conns(&[
            ("hq", db.uri()),
            ("lake", format!("file://{}", lake.path().display())),
        ])
    };
    let opts = CsvOptions {
        header: false,
        delimiter: ';',
        quote: '\'',
        crlf: true,
        null_text: String::new(),
    };
    let (done, log) = run(
        export(
            "SELECT id, last_name, email FROM customers ORDER BY id",
            "a.csv",
            ExportFormat::Csv,
            opts,
        ),
        c(),
    )
    .await;
    assert!(done.success, "{log}");
    let text = std::fs::read_to_string(lake.path().join("a.csv")).unwrap();
    assert_eq!(
        text,
        "1;'O''Brien';sean@example.com\r\n2;García \"la\" Grande;\r\n3;Łukasiewicz;zoe@example.com\r\n"
    );
    let (done, log) = run(
        export(
            "SELECT id, consent, email, balance, date FROM customers WHERE id = 2",
            "b.jsonl",
            ExportFormat::Jsonl,
            CsvOptions::default(),
        ),
        c(),
    )
    .await;
    assert!(done.success, "{log}");
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(lake.path().join("b.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(
        line,
        json!({"id": 2, "consent": false, "email": null, "balance": "-3.25", "date": "2026-02-03 04:05:06"})
    );
    let (done, log) = run(
        export(
            "SELECT id, email FROM customers WHERE country = 'Atlantis'",
            "empty.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        c(),
    )
    .await;
    assert!(done.success, "{log}");
    assert_eq!(done.outputs["rows"], 0);
    assert_eq!(
        std::fs::read_to_string(lake.path().join("empty.csv")).unwrap(),
        "id,email\n"
    );
    db.drop_db().await;
}

#[tokio::test]
async fn errors_say_the_database_code_and_only_transient_ones_retry() {
    let db = MariaDb::new().await;
    let lake = tempfile::tempdir().unwrap();
    let c = |hq: String| {
        conns(&[
            ("hq", hq),
            ("lake", format!("file://{}", lake.path().display())),
        ])
    };
    let cases = [
        ("SELECT nope FROM customers", db.uri(), "1054", false),
        ("SELECT * FROM missing_table", db.uri(), "1146", false),
        ("SELEC 1", db.uri(), "1064", false),
        // A write in an export is refused by the read-only transaction.
        (
            "INSERT INTO customers (id, date) VALUES (9, NOW())",
            db.uri(),
            "1792",
            false,
        ),
        (
            "SELECT 1",
            "mysql://nobody:wrong@127.0.0.1:3306/test".to_string(),
            "28000",
            false,
        ),
        (
            "SELECT 1",
            "mysql://root@127.0.0.1:1/test".to_string(),
            "cannot connect",
            true,
        ),
    ];
    for (sql, uri, code, retryable) in cases {
        let (done, log) = run(
            export(sql, "x.csv", ExportFormat::Csv, CsvOptions::default()),
            c(uri),
        )
        .await;
        assert!(!done.success, "{sql}");
        let reason = done.reason.clone().unwrap();
        assert!(reason.contains(code), "{sql}: {reason}");
        assert_eq!(done.retryable, retryable, "{sql}: {reason}");
        assert!(log.contains(code), "the log carries the error: {log}");
        assert!(
            !lake.path().join("x.csv").exists(),
            "no object after a failure"
        );
        let left: Vec<_> = std::fs::read_dir(lake.path()).unwrap().collect();
        assert!(left.is_empty(), "no spool file left: {left:?}");
    }
    // The write really did not happen.
    let rows = mysql_batch(&db.name, "SELECT COUNT(*) FROM customers");
    assert_eq!(rows, vec![vec!["3".to_string()]]);
    // An unknown connection is a permanent error naming where to define it.
    let (done, _) = run(
        export(
            "SELECT 1",
            "x.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        conns(&[("lake", "file:///tmp".into())]),
    )
    .await;
    assert!(!done.retryable);
    assert!(done.reason.unwrap().contains("unknown connection \"hq\""));
    db.drop_db().await;
}

#[tokio::test]
async fn exports_reach_an_s3_bucket_and_bucket_errors_are_permanent() {
    let db = tern_testkit::TestDb::postgres().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    c.execute(
        "CREATE TABLE t (id INT, name TEXT, at TIMESTAMP, ok BOOLEAN, amount NUMERIC(8,3)); \
         INSERT INTO t VALUES (1, 'a,b', '2026-01-01 10:00:00', true, 1.5), (2, NULL, '2026-01-02 11:30:00', false, 2)",
    )
    .await
    .unwrap();
    let s3 = S3::start().await;
    let mut kind = export(
        "SELECT * FROM t WHERE id >= $1 ORDER BY id",
        "exports/t.csv",
        ExportFormat::Csv,
        CsvOptions::default(),
    );
    if let TaskKind::SqlToLake(t) = &mut kind {
        t.parameters.push(json!(1));
    }
    let (done, log) = run(
        kind,
        conns(&[
            ("hq", db.url.clone()),
            ("lake", s3.uri("datalake", "secret-key-test")),
        ]),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["url"], "s3://datalake/exports/t.csv");
    assert_eq!(
        std::fs::read_to_string(s3.object("datalake", "exports/t.csv")).unwrap(),
        "id,name,at,ok,amount\n1,\"a,b\",2026-01-01 10:00:00,1,1.500\n2,,2026-01-02 11:30:00,0,2.000\n"
    );
    assert!(!log.contains("secret-key-test"), "{log}");
    // A bucket that does not exist, or a wrong secret: permanent, no retry.
    for uri in [
        s3.uri("nobucket", "secret-key-test"),
        s3.uri("datalake", "wrong-secret"),
    ] {
        let (done, log) = run(
            export(
                "SELECT 1 AS x",
                "y.csv",
                ExportFormat::Csv,
                CsvOptions::default(),
            ),
            conns(&[("hq", db.url.clone()), ("lake", uri.clone())]),
        )
        .await;
        assert!(!done.success, "{uri}");
        assert!(!done.retryable, "{uri}: {:?}\n{log}", done.reason);
    }
    assert!(!s3.object("datalake", "y.csv").exists());
    // An object store that accepts connections and never answers, or refuses them: a clear,
    // retryable error inside the connection's timeout, and no object.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    // The failure reason keeps the cause: a time-out, a refused connection.
    for (endpoint, cause) in [
        (format!("http://{hang_addr}"), "timed out"),
        ("http://127.0.0.1:1".to_string(), "Connection refused"),
    ] {
        let uri = format!(
            "s3://AKTEST:secret-key-test@datalake?endpoint={endpoint}&region=us-east-1&timeout=1s"
        );
        let (done, log) = run(
            export(
                "SELECT 1 AS x",
                "z.csv",
                ExportFormat::Csv,
                CsvOptions::default(),
            ),
            conns(&[("hq", db.url.clone()), ("lake", uri)]),
        )
        .await;
        assert!(!done.success, "{endpoint}");
        assert!(done.retryable, "{endpoint}: {:?}", done.reason);
        assert!(log.contains("cannot reach bucket datalake"), "{log}");
        let reason = done.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(cause),
            "{endpoint}: the cause is dropped: {reason}"
        );
    }
    assert!(!s3.object("datalake", "z.csv").exists());
}

#[tokio::test]
async fn sql_statements_bind_parameters_and_publish_the_first_row() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    let (done, log) = run(
        TaskKind::Sql(tern_core::SqlTask {
            conn: "hq".into(),
            sql: vec![
                "CREATE TABLE t (id INTEGER, name TEXT)".into(),
                "INSERT INTO missing VALUES (1)".into(),
            ],
            parameters: vec![],
            transaction: true,
            output_first_row: false,
        }),
        conns(&[("hq", uri.clone())]),
    )
    .await;
    // The second statement fails: a permanent error, and the transaction (with the CREATE
    // TABLE) is rolled back, so the next run can create the table again.
    assert!(!done.success && !done.retryable, "{log}");
    assert!(log.contains("rolled back"), "{log}");
    assert!(done.reason.unwrap().contains("statement 2 failed"));
    let (done, log) = run(
        TaskKind::Sql(tern_core::SqlTask {
            conn: "hq".into(),
            sql: vec![
                "CREATE TABLE t (id INTEGER, name TEXT)".into(),
                "INSERT INTO t VALUES (?, ?)".into(),
                "SELECT COUNT(*) AS n, MAX(name) AS name FROM t".into(),
            ],
            parameters: vec![json!(1), json!("x'); DROP TABLE t; -- {{ ds }}")],
            transaction: true,
            output_first_row: true,
        }),
        conns(&[("hq", uri)]),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["n"], 1);
    // The parameter was bound (templated, never spliced): the text is stored as is.
    assert_eq!(done.outputs["name"], "x'); DROP TABLE t; -- 2026-03-01");
}

/// A tiny HTTP/1.1 server: answers `/status/N` with status N, `/big` with 100 KB, anything else
/// with 200 and the request head it received.
async fn http_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = if let Some(code) = path.strip_prefix("/status/") {
                    (code.parse::<u16>().unwrap_or(500), "status".to_string())
                } else if path == "/big" {
                    (200, "x".repeat(100_000))
                } else {
                    (200, head)
                };
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn http(url: &str, conn: Option<&str>, expected: Vec<u16>) -> TaskKind {
    TaskKind::Http(tern_core::HttpTask {
        method: "POST".into(),
        url: url.into(),
        conn: conn.map(str::to_string),
        headers: BTreeMap::from([("x-day".to_string(), "{{ ds }}".to_string())]),
        body: Some("{\"day\": \"{{ ds }}\"}".into()),
        expected_status: expected,
        max_body_bytes: 1000,
        save_to_conn: None,
        save_to: None,
    })
}

#[tokio::test]
async fn http_tasks_use_the_connection_and_classify_statuses() {
    let base = http_server().await;
    let api = || {
        let with_user = base.replace("http://", "http://svc:s3cr3t-pw@");
        conns(&[("api", with_user)])
    };
    let (done, log) = run(http("/v1/ping", Some("api"), vec![]), api()).await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["status"], 200);
    let echoed = done.outputs["body"].as_str().unwrap().to_ascii_lowercase();
    assert!(echoed.starts_with("post /v1/ping http/1.1"), "{echoed}");
    assert!(echoed.contains("x-day: 2026-03-01"), "{echoed}");
    assert!(
        echoed.contains("authorization: basic c3zjonmzy3izdc1wdw=="),
        "{echoed}"
    );
    assert!(!log.contains("s3cr3t-pw"), "{log}");
    // A cut body says so.
    let (done, _) = run(http("/big", Some("api"), vec![]), api()).await;
    assert_eq!(done.outputs["body"].as_str().unwrap().len(), 1000);
    assert_eq!(done.outputs["body_truncated"], true);
    // 404 cannot succeed on retry; 503 and 429 can; an expected 404 is a success.
    for (code, retryable) in [(404, false), (401, false), (503, true), (429, true)] {
        let (done, log) = run(http(&format!("/status/{code}"), Some("api"), vec![]), api()).await;
        assert!(!done.success, "{code}");
        assert_eq!(done.retryable, retryable, "{code}: {log}");
        assert!(done.reason.unwrap().contains(&format!("answered {code}")));
    }
    let (done, _) = run(http("/status/404", Some("api"), vec![404]), api()).await;
    assert!(done.success);
    // Nobody listening: transient.
    let (done, _) = run(http("http://127.0.0.1:1/x", None, vec![]), conns(&[])).await;
    assert!(!done.success && done.retryable, "{done:?}");
}
