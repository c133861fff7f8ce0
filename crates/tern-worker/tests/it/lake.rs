//! Exports streamed into object stores while the query runs: results larger than one part
//! (8 MiB), failures in the middle of the stream (the query fails, the task times out), and
//! Azure Blob Storage through Azurite (the test fails when Azurite is not installed).

use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tern_core::{CsvOptions, ExportFormat};
use tern_testkit::azure::{Azurite, ACCOUNT, KEY};
use tern_worker::{execute, ExecOptions};
use tokio_util::sync::CancellationToken;

use crate::data::{conns, export, run, S3};
use crate::{assignment, Collect};

/// About 31 MB of CSV (4 parts) from PostgreSQL: `n` rows of an id and 200 letters.
fn big_query(n: u32) -> String {
    format!("SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, {n}) g")
}

#[tokio::test]
async fn a_large_export_streams_to_s3_and_a_failure_mid_stream_leaves_nothing() {
    let db = tern_testkit::TestDb::postgres().await;
    let s3 = S3::start().await;
    let c = || {
        conns(&[
            ("hq", db.url.clone()),
            ("lake", s3.uri("datalake", "secret-key-test")),
        ])
    };
    // Larger than several parts: uploaded as a multipart upload, complete and in order.
    let (done, log) = run(
        export(
            &big_query(150_000),
            "big/t.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        c(),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    let text = std::fs::read_to_string(s3.object("datalake", "big/t.csv")).unwrap();
    let pad = "x".repeat(200);
    assert_eq!(text.len() as u64, done.outputs["bytes"].as_u64().unwrap());
    assert!(text.len() > 3 * 8 * 1024 * 1024, "{}", text.len());
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            assert_eq!(line, "id,pad");
        } else {
            assert_eq!(line, format!("{i},{pad}"), "line {i}");
        }
    }
    assert_eq!(text.lines().count(), 150_001);
    assert!(
        s3.pending_uploads().is_empty(),
        "{:?}",
        s3.pending_uploads()
    );

    // The query fails after 150,000 rows (about 31 MB, several parts uploaded already): the
    // error is the database's, no object appears and the multipart upload is aborted.
    let (done, log) = run(
        export(
            "SELECT g AS id, repeat('x', 200) AS pad, 1 / (150000 - g) AS boom FROM generate_series(1, 200000) g",
            "big/failed.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        c(),
    )
    .await;
    assert!(!done.success);
    let reason = done.reason.clone().unwrap();
    assert!(reason.contains("22012"), "{reason}\n{log}");
    assert!(!done.retryable, "{reason}");
    assert!(!s3.object("datalake", "big/failed.csv").exists());
    assert!(
        s3.pending_uploads().is_empty(),
        "{:?}",
        s3.pending_uploads()
    );

    // The task times out while the query waits after 60,000 rows (12 MB): a part was uploaded
    // while the query ran; the timeout drops the export and the upload is aborted all the same.
    let mut a = assignment(export(
        "SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 70000) g \
         WHERE CASE WHEN g = 60000 THEN pg_sleep(60)::text = '' ELSE true END",
        "big/slow.csv",
        ExportFormat::Csv,
        CsvOptions::default(),
    ));
    a.task.execution_timeout_ms = Some(15_000);
    let opts = ExecOptions::default().with_connections(c());
    let sink = Collect::default();
    let cancel = CancellationToken::new();
    let task = execute(&a, &opts, &sink, &cancel);
    tokio::pin!(task);
    // Parts reach the server while the query is still running.
    let mut saw_parts = false;
    let done = loop {
        tokio::select! {
            done = &mut task => break done,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                saw_parts |= s3.pending_uploads().iter().any(|f| f.contains(".part-"));
            }
        }
    };
    assert!(
        saw_parts,
        "no part was uploaded while the query ran: {done:?}\n{}",
        sink.text()
    );
    assert!(!done.success);
    assert!(done.retryable);
    assert!(
        done.reason.as_deref().unwrap_or("").contains("timed out"),
        "{done:?}"
    );
    // The abort runs in the upload's own task, after the export's future was dropped.
    let start = Instant::now();
    while !s3.pending_uploads().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the multipart upload is not aborted: {:?}",
            s3.pending_uploads()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!s3.object("datalake", "big/slow.csv").exists());
}

#[tokio::test]
async fn a_large_parquet_export_streams_to_s3() {
    let db = tern_testkit::TestDb::postgres().await;
    let s3 = S3::start().await;
    let (done, log) = run(
        export(
            "SELECT g AS id, md5(g::text) AS a, md5((g + 1)::text) AS b, md5((g + 2)::text) AS c \
             FROM generate_series(1, 300000) g",
            "big/t.parquet",
            ExportFormat::Parquet,
            CsvOptions::default(),
        ),
        conns(&[
            ("hq", db.url.clone()),
            ("lake", s3.uri("datalake", "secret-key-test")),
        ]),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    let bytes = std::fs::read(s3.object("datalake", "big/t.parquet")).unwrap();
    assert!(bytes.len() > 8 * 1024 * 1024, "{}", bytes.len());
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .unwrap()
        .build()
        .unwrap();
    let mut rows = 0;
    for b in reader {
        rows += b.unwrap().num_rows();
    }
    assert_eq!(rows, 300_000);
    assert!(s3.pending_uploads().is_empty());
}

/// An object_store client of the Azurite container, to read what the exports wrote.
fn azure_reader(az: &Azurite, container: &str) -> impl ObjectStore {
    tern_worker::http_transport::install_crypto_provider();
    object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(ACCOUNT)
        .with_access_key(KEY)
        .with_container_name(container)
        .with_endpoint(az.endpoint())
        .with_allow_http(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn exports_reach_azure_blob_storage_in_every_format() {
    let az = Azurite::start();
    let db = tern_testkit::TestDb::postgres().await;
    let c = |uri: String| conns(&[("hq", db.url.clone()), ("lake", uri)]);
    let lake = c(az.uri("datalake", KEY));
    let store = azure_reader(&az, "datalake");
    let get = |name: &'static str| {
        let store = &store;
        async move {
            store
                .get(&object_store::path::Path::from(name))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        }
    };
    let sql = "SELECT g AS id, 'a,b \"c\"' AS name, g * 1.5 AS amount FROM generate_series(1, 3) g";
    for (format, object) in [
        (ExportFormat::Csv, "exports/t.csv"),
        (ExportFormat::Jsonl, "exports/t.jsonl"),
        (ExportFormat::Parquet, "exports/t.parquet"),
    ] {
        let (done, log) = run(
            export(sql, object, format, CsvOptions::default()),
            lake.clone(),
        )
        .await;
        assert!(done.success, "{object}: {done:?}\n{log}");
        assert_eq!(done.outputs["url"], format!("azure://datalake/{object}"));
        assert!(!log.contains(KEY), "{log}");
        assert!(
            log.contains("container datalake of account devstoreaccount1"),
            "{log}"
        );
    }
    assert_eq!(
        String::from_utf8(get("exports/t.csv").await.to_vec()).unwrap(),
        "id,name,amount\n1,\"a,b \"\"c\"\"\",1.5\n2,\"a,b \"\"c\"\"\",3.0\n3,\"a,b \"\"c\"\"\",4.5\n"
    );
    let jsonl = String::from_utf8(get("exports/t.jsonl").await.to_vec()).unwrap();
    assert_eq!(jsonl.lines().count(), 3);
    assert!(
        jsonl.starts_with("{\"id\":1,\"name\":\"a,b \\\"c\\\"\",\"amount\":"),
        "{jsonl}"
    );
    let parquet = ParquetRecordBatchReaderBuilder::try_new(get("exports/t.parquet").await)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = parquet.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);

    // Larger than several parts: staged as blocks, committed once at the end.
    let (done, log) = run(
        export(
            &big_query(150_000),
            "big/t.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        lake.clone(),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    let text = get("big/t.csv").await;
    assert_eq!(text.len() as u64, done.outputs["bytes"].as_u64().unwrap());
    assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 150_001);

    // A query failing after several parts: no blob appears.
    let (done, log) = run(
        export(
            "SELECT g AS id, repeat('x', 200) AS pad, 1 / (150000 - g) AS boom FROM generate_series(1, 200000) g",
            "big/failed.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        lake.clone(),
    )
    .await;
    assert!(!done.success && !done.retryable, "{done:?}\n{log}");
    assert!(
        !az.blobs("datalake").contains(&"big/failed.csv".to_string()),
        "{:?}",
        az.blobs("datalake")
    );

    // A container that does not exist, or a wrong key: permanent, no retry, no blob.
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    for uri in [az.uri("nocontainer", KEY), az.uri("datalake", wrong_key)] {
        let (done, log) = run(
            export(
                "SELECT 1 AS x",
                "y.csv",
                ExportFormat::Csv,
                CsvOptions::default(),
            ),
            c(uri.clone()),
        )
        .await;
        assert!(!done.success, "{uri}");
        assert!(!done.retryable, "{uri}: {:?}\n{log}", done.reason);
        assert!(!log.contains(wrong_key), "{log}");
    }
    assert!(!az.blobs("datalake").contains(&"y.csv".to_string()));
    // A store that refuses connections: transient.
    let refused = format!(
        "azure://{ACCOUNT}:{}@datalake?endpoint=http://127.0.0.1:1/{ACCOUNT}&timeout=1s",
        KEY.replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D")
    );
    let (done, log) = run(
        export(
            "SELECT 1 AS x",
            "z.csv",
            ExportFormat::Csv,
            CsvOptions::default(),
        ),
        c(refused),
    )
    .await;
    assert!(!done.success);
    assert!(done.retryable, "{:?}\n{log}", done.reason);
    assert!(log.contains("cannot reach container datalake"), "{log}");
}
