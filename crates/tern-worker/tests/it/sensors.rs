//! One poke of each sensor against real things: PostgreSQL and SQLite queries, an S3-compatible
//! server and a local folder, files, an HTTP server that comes up late, the clock.

use chrono::{TimeZone, Utc};
use sqlx::{Connection, Executor};
use tern_core::{SensorCheck, SensorTask, TaskKind};
use tern_protocol::Completion;
use tern_worker::{execute, ExecOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::data::{conns, run, S3};
use crate::{assignment, Collect};

const POKE_MS: u64 = 30_000;

fn sensor(check: SensorCheck) -> TaskKind {
    TaskKind::Sensor(SensorTask {
        check,
        poke_interval_ms: POKE_MS,
        timeout_ms: 3_600_000,
        soft_fail: false,
    })
}

fn sql_check(sql: &str) -> SensorCheck {
    SensorCheck::Sql {
        conn: "db".into(),
        sql: sql.into(),
        parameters: vec![],
    }
}

/// Not met: a failed attempt that asks for the next poke after the interval, not a failure.
#[track_caller]
fn assert_not_yet(c: &Completion, log: &str, why: &str) {
    assert!(!c.success, "{c:?}\n{log}");
    assert_eq!(c.reschedule_after_ms, Some(POKE_MS), "{c:?}\n{log}");
    let reason = c.reason.as_deref().unwrap_or_default();
    assert!(reason.contains(why), "{reason:?} should say {why:?}\n{log}");
    assert!(log.contains("next poke in 30s"), "{log}");
}

#[track_caller]
fn assert_met(c: &Completion, log: &str) {
    assert!(c.success, "{c:?}\n{log}");
    assert_eq!(c.reschedule_after_ms, None);
}

#[tokio::test]
async fn sql_sensor_waits_for_a_truthy_first_cell_on_postgres_and_sqlite() {
    let pg = tern_testkit::TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("s.db").display());
    for url in [pg.url.clone(), format!("{sqlite}?mode=rwc")] {
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
        c.execute("CREATE TABLE loads (day TEXT, rows_loaded INT)")
            .await
            .unwrap();
        let check = || sql_check("SELECT rows_loaded FROM loads WHERE day = '{{ ds }}'");
        let (done, log) = run(sensor(check()), conns(&[("db", url.clone())])).await;
        assert_not_yet(&done, &log, "no row");
        c.execute("INSERT INTO loads VALUES ('2026-03-01', 0)")
            .await
            .unwrap();
        let (done, log) = run(sensor(check()), conns(&[("db", url.clone())])).await;
        assert_not_yet(&done, &log, "\"0\"");
        c.execute("UPDATE loads SET rows_loaded = 42")
            .await
            .unwrap();
        let (done, log) = run(sensor(check()), conns(&[("db", url.clone())])).await;
        assert_met(&done, &log);
        assert_eq!(done.outputs["value"], "42");
        // A broken query is a failure (not retried), not a "not yet".
        let (done, log) = run(
            sensor(sql_check("SELECT nope FROM loads")),
            conns(&[("db", url.clone())]),
        )
        .await;
        assert!(!done.success && !done.retryable, "{done:?}\n{log}");
        assert_eq!(done.reschedule_after_ms, None);
        c.close().await.unwrap();
    }
}

#[tokio::test]
async fn object_sensor_finds_objects_and_prefixes_in_s3_and_folders() {
    let s3 = S3::start().await;
    let folder = tempfile::tempdir().unwrap();
    let lakes = [
        s3.uri("datalake", "secret-key-test"),
        format!("file://{}", folder.path().display()),
    ];
    for (i, lake) in lakes.iter().enumerate() {
        let exact = || SensorCheck::Object {
            conn: "lake".into(),
            path: "incoming/{{ ds }}/orders.csv".into(),
            prefix: false,
        };
        let prefix = || SensorCheck::Object {
            conn: "lake".into(),
            path: "incoming/{{ ds }}/ord".into(),
            prefix: true,
        };
        let c = || conns(&[("lake", lake.clone())]);
        let (done, log) = run(sensor(exact()), c()).await;
        assert_not_yet(&done, &log, "no object");
        let (done, log) = run(sensor(prefix()), c()).await;
        assert_not_yet(&done, &log, "no object under");
        let written = if i == 0 {
            s3.object("datalake", "incoming/2026-03-01/orders.csv")
        } else {
            folder.path().join("incoming/2026-03-01/orders.csv")
        };
        std::fs::create_dir_all(written.parent().unwrap()).unwrap();
        std::fs::write(&written, "id\n1\n").unwrap();
        let (done, log) = run(sensor(exact()), c()).await;
        assert_met(&done, &log);
        assert!(done.outputs["url"]
            .as_str()
            .unwrap()
            .ends_with("incoming/2026-03-01/orders.csv"));
        let (done, log) = run(sensor(prefix()), c()).await;
        assert_met(&done, &log);
    }
    // A wrong secret cannot succeed by waiting: a permanent failure.
    let (done, log) = run(
        sensor(SensorCheck::Object {
            conn: "lake".into(),
            path: "x".into(),
            prefix: false,
        }),
        conns(&[("lake", s3.uri("datalake", "wrong-secret"))]),
    )
    .await;
    assert!(!done.success && !done.retryable, "{done:?}\n{log}");
}

#[tokio::test]
async fn file_sensor_waits_for_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("2026-03-01.done");
    let check = || SensorCheck::File {
        path: format!("{}/{{{{ ds }}}}.done", dir.path().display()),
    };
    let (done, log) = run(sensor(check()), conns(&[])).await;
    assert_not_yet(&done, &log, "does not exist");
    std::fs::write(&path, "").unwrap();
    let (done, log) = run(sensor(check()), conns(&[])).await;
    assert_met(&done, &log);
    assert_eq!(done.outputs["path"], path.display().to_string());
}

/// An HTTP server answering 503 to its first `unready` requests, then 200 with `body`.
pub(crate) async fn late_server(unready: usize, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut served = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let (status, text) = if served < unready {
                ("503 Unavailable", "starting")
            } else {
                ("200 OK", body)
            };
            served += 1;
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_sensor_waits_for_the_status_and_the_text() {
    let check = |url: String, contains: Option<&str>| SensorCheck::Http {
        url,
        conn: None,
        method: "GET".into(),
        headers: Default::default(),
        expected_status: vec![],
        response_contains: contains.map(str::to_string),
    };
    // Nothing listens yet: not a failure, the service may come up.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (done, log) = run(
        sensor(check(format!("http://{closed}/ready"), None)),
        conns(&[]),
    )
    .await;
    assert_not_yet(&done, &log, "failed");
    let base = late_server(1, "state: warming").await;
    let (done, log) = run(sensor(check(format!("{base}/ready"), None)), conns(&[])).await;
    assert_not_yet(&done, &log, "answered 503");
    let (done, log) = run(
        sensor(check(format!("{base}/ready"), Some("state: ready"))),
        conns(&[]),
    )
    .await;
    assert_not_yet(&done, &log, "without \"state: ready\"");
    let (done, log) = run(
        sensor(check(format!("{base}/ready"), Some("warming"))),
        conns(&[]),
    )
    .await;
    assert_met(&done, &log);
    assert_eq!(done.outputs["status"], 200);
}

#[tokio::test]
async fn time_and_delta_sensors_poke_again_no_later_than_their_target() {
    // The fixture's data interval ends on 2026-03-01T00:00Z, long past.
    let (done, log) = run(
        sensor(SensorCheck::Delta {
            delta_ms: 3_600_000,
        }),
        conns(&[]),
    )
    .await;
    assert_met(&done, &log);
    assert_eq!(done.outputs["target"], "2026-03-01T01:00:00Z");
    // A data interval ending now, with a target 5 s later: poked again after 5 s, not 30 s.
    let mut a = assignment(sensor(SensorCheck::Delta { delta_ms: 5_000 }));
    a.context.data_interval_end = Utc::now();
    let sink = Collect::default();
    let done = execute(
        &a,
        &ExecOptions::default(),
        &sink,
        &CancellationToken::new(),
    )
    .await;
    let after = done.reschedule_after_ms.expect("not yet");
    assert!((1..=5_000).contains(&after), "{after}");
    // A time of day in the DAG's zone: 23:30 in Madrid on 2026-03-01 is 22:30Z.
    let mut a = assignment(sensor(SensorCheck::Time {
        target_time: "23:30".into(),
    }));
    a.context.timezone = "Europe/Madrid".into();
    a.context.data_interval_end = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let sink = Collect::default();
    let done = execute(
        &a,
        &ExecOptions::default(),
        &sink,
        &CancellationToken::new(),
    )
    .await;
    assert!(done.success, "{done:?}");
    assert_eq!(done.outputs["target"], "2026-03-01T22:30:00Z");
    a.context.data_interval_end = Utc::now() + chrono::Duration::days(2);
    let done = execute(
        &a,
        &ExecOptions::default(),
        &sink,
        &CancellationToken::new(),
    )
    .await;
    assert_eq!(done.reschedule_after_ms, Some(POKE_MS), "{done:?}");
}

#[tokio::test]
async fn external_task_sensor_reads_the_state_sent_with_the_poke() {
    let check = SensorCheck::ExternalTask {
        external_dag_id: "load".into(),
        external_task_id: Some("orders".into()),
        allowed_states: vec!["success".into()],
        failed_states: vec!["failed".into()],
        execution_delta_ms: 0,
    };
    let mut a = assignment(sensor(check));
    let poke = |a: &tern_protocol::Assignment| {
        let a = a.clone();
        async move {
            let sink = Collect::default();
            let c = execute(
                &a,
                &ExecOptions::default(),
                &sink,
                &CancellationToken::new(),
            )
            .await;
            (c, sink.text())
        }
    };
    let (done, log) = poke(&a).await;
    assert_not_yet(&done, &log, "there is no task load.orders");
    a.external_state = Some("running".into());
    let (done, log) = poke(&a).await;
    assert_not_yet(&done, &log, "is running");
    a.external_state = Some("failed".into());
    let (done, log) = poke(&a).await;
    assert!(!done.success && !done.retryable, "{done:?}\n{log}");
    assert_eq!(done.reschedule_after_ms, None);
    a.external_state = Some("success".into());
    let (done, log) = poke(&a).await;
    assert_met(&done, &log);
}
