//! `sql_to_lake` to Parquet from the machine's MariaDB and PostgreSQL and from SQLite files; the
//! written files are read back with the `parquet` crate's reader and compared value by value and
//! type by type.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sqlx::{Connection, Executor};
use tern_core::{CsvOptions, ExportFormat, ParquetCompression, TaskKind};

use crate::data::{conns, export, run, MariaDb, S3};

/// A Parquet file read back: its schema, row groups and rows (each value rendered as text, NULL
/// as `NULL`).
struct Read {
    schema: SchemaRef,
    row_groups: usize,
    rows: Vec<Vec<String>>,
}

fn read_parquet(path: &Path) -> Read {
    let file = std::fs::File::open(path).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = b.schema().clone();
    let row_groups = b.metadata().num_row_groups();
    let mut rows = Vec::new();
    for batch in b.build().unwrap() {
        rows.extend(render(&batch.unwrap()));
    }
    Read {
        schema,
        row_groups,
        rows,
    }
}

fn render(batch: &RecordBatch) -> Vec<Vec<String>> {
    (0..batch.num_rows())
        .map(|r| batch.columns().iter().map(|c| value(c, r)).collect())
        .collect()
}

fn value(a: &dyn Array, i: usize) -> String {
    if a.is_null(i) {
        return "NULL".into();
    }
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    match a.data_type() {
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(i).to_string(),
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::Binary => a
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        DataType::Date32 => (epoch
            + chrono::Duration::days(a.as_primitive::<Date32Type>().value(i) as i64))
        .to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let us = a.as_primitive::<TimestampMicrosecondType>().value(i);
            let t = chrono::DateTime::from_timestamp_micros(us)
                .unwrap()
                .naive_utc();
            format!("{t}{}", if tz.is_some() { " UTC" } else { "" })
        }
        DataType::Time64(TimeUnit::Microsecond) => {
            let us = a.as_primitive::<Time64MicrosecondType>().value(i);
            chrono::NaiveTime::from_num_seconds_from_midnight_opt(
                (us / 1_000_000) as u32,
                (us % 1_000_000) as u32 * 1000,
            )
            .unwrap()
            .to_string()
        }
        DataType::Decimal128(_, s) => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            rust_decimal::Decimal::from_i128_with_scale(v, *s as u32).to_string()
        }
        other => panic!("unexpected type {other}"),
    }
}

/// Column name → Arrow type, in order.
fn types(schema: &SchemaRef) -> Vec<(String, DataType)> {
    schema
        .fields()
        .iter()
        .map(|f| {
            assert!(f.is_nullable(), "{} is nullable", f.name());
            (f.name().clone(), f.data_type().clone())
        })
        .collect()
}

fn parquet(sql: &str, target: &str) -> TaskKind {
    export(sql, target, ExportFormat::Parquet, CsvOptions::default())
}

fn row(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

#[tokio::test]
async fn mariadb_to_parquet_keeps_types_values_and_nulls() {
    let db = MariaDb::new().await;
    tern_testkit::mysql(&[
        &db.name,
        "-e",
        "SET time_zone = '+00:00'; \
         CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(50), consent BOOLEAN, balance DECIMAL(10,2), \
         born DATE, at DATETIME, ts TIMESTAMP NULL, big BIGINT UNSIGNED, small TINYINT UNSIGNED, \
         n BIGINT, ratio DOUBLE, raw VARBINARY(8)); \
         INSERT INTO p VALUES \
         (1, 'Seán O''Brien, \"Jr\"', 1, 10.50, '1990-05-17', '2026-01-02 03:04:05', '2026-01-02 03:04:05', \
          18446744073709551615, 255, -9000000000, 0.25, 0x00ff10), \
         (2, 'Zoë Łukasiewicz\nnew line', 0, -3.25, '2000-02-29', '1969-12-31 23:59:59', NULL, 0, 0, 0, -1.5, ''), \
         (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    ]);
    let lake = tempfile::tempdir().unwrap();
    let c = || {
        conns(&[
            ("hq", db.uri()),
            ("lake", format!("file://{}", lake.path().display())),
        ])
    };
    let (done, log) = run(parquet("SELECT * FROM p ORDER BY id", "p/all.parquet"), c()).await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["rows"], 3);
    let file = lake.path().join("p/all.parquet");
    assert_eq!(
        done.outputs["bytes"],
        std::fs::metadata(&file).unwrap().len()
    );
    assert!(log.contains("(parquet)"), "{log}");
    let read = read_parquet(&file);
    let expected_types = vec![
        ("id".to_string(), DataType::Int32),
        ("name".into(), DataType::Utf8),
        ("consent".into(), DataType::Boolean),
        // MySQL does not tell the driver a DECIMAL's scale: exact text.
        ("balance".into(), DataType::Utf8),
        ("born".into(), DataType::Date32),
        (
            "at".into(),
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ),
        ("ts".into(), utc()),
        ("big".into(), DataType::UInt64),
        ("small".into(), DataType::Int32),
        ("n".into(), DataType::Int64),
        ("ratio".into(), DataType::Float64),
        ("raw".into(), DataType::Binary),
    ];
    assert_eq!(types(&read.schema), expected_types);
    assert_eq!(
        read.rows,
        vec![
            row(&[
                "1",
                "Seán O'Brien, \"Jr\"",
                "true",
                "10.50",
                "1990-05-17",
                "2026-01-02 03:04:05",
                "2026-01-02 03:04:05 UTC",
                "18446744073709551615",
                "255",
                "-9000000000",
                "0.25",
                "00ff10"
            ]),
            row(&[
                "2",
                "Zoë Łukasiewicz\nnew line",
                "false",
                "-3.25",
                "2000-02-29",
                "1969-12-31 23:59:59",
                "NULL",
                "0",
                "0",
                "0",
                "-1.5",
                ""
            ]),
            row(&[
                "3", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL",
                "NULL", "NULL"
            ]),
        ]
    );
    // An empty result is a valid file with the same schema and no rows.
    let (done, log) = run(
        parquet("SELECT * FROM p WHERE id < 0", "p/empty.parquet"),
        c(),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["rows"], 0);
    let empty = read_parquet(&lake.path().join("p/empty.parquet"));
    assert_eq!(types(&empty.schema), expected_types);
    assert!(empty.rows.is_empty());
    db.drop_db().await;
}

#[tokio::test]
async fn a_large_mariadb_result_is_written_in_several_row_groups() {
    let db = MariaDb::new().await;
    let lake = tempfile::tempdir().unwrap();
    let n = 300_000u64;
    let (done, log) = run(
        parquet(
            &format!(
                "SELECT seq AS id, IF(seq % 1000 = 0, NULL, CONCAT('row ', seq, ', \"q\"')) AS name, \
                 '2026-01-01' + INTERVAL seq SECOND AS at FROM seq_1_to_{n}"
            ),
            "big.parquet",
        ),
        conns(&[
            ("hq", db.uri()),
            ("lake", format!("file://{}", lake.path().display())),
        ]),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    assert_eq!(done.outputs["rows"], n);
    let read = read_parquet(&lake.path().join("big.parquet"));
    // At most 65,536 rows per row group.
    assert_eq!(read.row_groups, 5, "row groups");
    assert_eq!(read.rows.len() as u64, n);
    let ids: u64 = read.rows.iter().map(|r| r[0].parse::<u64>().unwrap()).sum();
    assert_eq!(ids, n * (n + 1) / 2);
    assert_eq!(
        read.rows[123_455],
        row(&["123456", "row 123456, \"q\"", "2026-01-02 10:17:36"])
    );
    assert_eq!(read.rows[999][1], "NULL");
    assert_eq!(
        read.rows.iter().filter(|r| r[1] == "NULL").count() as u64,
        n / 1000
    );
    db.drop_db().await;
}

#[tokio::test]
async fn postgres_to_parquet_in_s3_with_decimals_and_zstd() {
    let db = tern_testkit::TestDb::postgres().await;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    c.execute(
        "CREATE TABLE t (id INT, s INT2, big INT8, amount NUMERIC(8,3), loose NUMERIC, ok BOOLEAN, \
         name TEXT, code VARCHAR(5), raw BYTEA, day DATE, at TIMESTAMP, tz TIMESTAMPTZ, tm TIME, \
         doc JSONB, u UUID, f FLOAT8, r FLOAT4); \
         INSERT INTO t VALUES \
         (1, -2, 9000000000, 1.5, 2.25, true, 'a,b \"c\" ñ', 'x', '\\x00ff', '2026-01-31', \
          '2026-01-01 10:00:00.123456', '2026-01-01 10:00:00+02', '23:59:58.5', '{\"k\": [1, \"é\"]}', \
          'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 0.1, 1.5), \
         (2, NULL, NULL, -12345.678, NULL, false, '', NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await
    .unwrap();
    c.close().await.unwrap();
    let s3 = S3::start().await;
    let mut kind = parquet(
        "SELECT *, amount * 2 AS doubled FROM t WHERE id >= $1 ORDER BY id",
        "exports/t.parquet",
    );
    if let TaskKind::SqlToLake(t) = &mut kind {
        t.parameters.push(serde_json::json!(1));
        t.compression = ParquetCompression::Zstd;
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
    assert_eq!(done.outputs["url"], "s3://datalake/exports/t.parquet");
    let path = s3.object("datalake", "exports/t.parquet");
    let read = read_parquet(&path);
    assert_eq!(
        types(&read.schema),
        vec![
            ("id".to_string(), DataType::Int32),
            ("s".into(), DataType::Int32),
            ("big".into(), DataType::Int64),
            ("amount".into(), DataType::Decimal128(8, 3)),
            // No precision, or not a table column: exact text.
            ("loose".into(), DataType::Utf8),
            ("ok".into(), DataType::Boolean),
            ("name".into(), DataType::Utf8),
            ("code".into(), DataType::Utf8),
            ("raw".into(), DataType::Binary),
            ("day".into(), DataType::Date32),
            (
                "at".into(),
                DataType::Timestamp(TimeUnit::Microsecond, None)
            ),
            ("tz".into(), utc()),
            ("tm".into(), DataType::Time64(TimeUnit::Microsecond)),
            ("doc".into(), DataType::Utf8),
            ("u".into(), DataType::Utf8),
            ("f".into(), DataType::Float64),
            ("r".into(), DataType::Float64),
            ("doubled".into(), DataType::Utf8),
        ]
    );
    assert_eq!(
        read.rows,
        vec![
            row(&[
                "1",
                "-2",
                "9000000000",
                "1.500",
                "2.25",
                "true",
                "a,b \"c\" ñ",
                "x",
                "00ff",
                "2026-01-31",
                "2026-01-01 10:00:00.123456",
                "2026-01-01 08:00:00 UTC",
                "23:59:58.500",
                "{\"k\":[1,\"é\"]}",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "0.1",
                "1.5",
                "3.000"
            ]),
            row(&[
                "2",
                "NULL",
                "NULL",
                "-12345.678",
                "NULL",
                "false",
                "",
                "NULL",
                "",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "NULL",
                "-24691.356"
            ]),
        ]
    );
    let meta = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .metadata()
        .clone();
    assert!(matches!(
        meta.row_group(0).column(0).compression(),
        parquet::basic::Compression::ZSTD(_)
    ));
}

#[tokio::test]
async fn sqlite_to_parquet_and_a_value_that_does_not_fit_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let uri = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("db.sqlite").display()
    );
    let mut c = sqlx::SqliteConnection::connect(&uri).await.unwrap();
    c.execute(
        "CREATE TABLE s (id INTEGER, name TEXT, score REAL, ok BOOLEAN, at DATETIME, day DATE, data BLOB); \
         INSERT INTO s VALUES (1, 'Łódź, \"x\"', 2.5, 1, '2026-01-02 03:04:05', '2026-01-02', x'0a0b'), \
         (2, NULL, NULL, 0, NULL, NULL, NULL); \
         CREATE TABLE bad (n INTEGER); INSERT INTO bad VALUES (1), ('not a number');",
    )
    .await
    .unwrap();
    c.close().await.unwrap();
    let lake = tempfile::tempdir().unwrap();
    let cs = || {
        conns(&[
            ("hq", uri.clone()),
            ("lake", format!("file://{}", lake.path().display())),
        ])
    };
    let (done, log) = run(parquet("SELECT * FROM s ORDER BY id", "s.parquet"), cs()).await;
    assert!(done.success, "{done:?}\n{log}");
    let read = read_parquet(&lake.path().join("s.parquet"));
    assert_eq!(
        types(&read.schema),
        vec![
            ("id".to_string(), DataType::Int64),
            ("name".into(), DataType::Utf8),
            ("score".into(), DataType::Float64),
            ("ok".into(), DataType::Boolean),
            (
                "at".into(),
                DataType::Timestamp(TimeUnit::Microsecond, None)
            ),
            ("day".into(), DataType::Date32),
            ("data".into(), DataType::Binary),
        ]
    );
    assert_eq!(
        read.rows,
        vec![
            row(&[
                "1",
                "Łódź, \"x\"",
                "2.5",
                "true",
                "2026-01-02 03:04:05",
                "2026-01-02",
                "0a0b"
            ]),
            row(&["2", "NULL", "NULL", "false", "NULL", "NULL", "NULL"]),
        ]
    );
    // Empty: the declared types still make the schema.
    let (done, log) = run(
        parquet("SELECT * FROM s WHERE id > 5", "empty.parquet"),
        cs(),
    )
    .await;
    assert!(done.success, "{done:?}\n{log}");
    let empty = read_parquet(&lake.path().join("empty.parquet"));
    assert_eq!(types(&empty.schema), types(&read.schema));
    assert!(empty.rows.is_empty());
    // SQLite lets a column hold text among integers: a permanent error naming the column, no
    // object, and no row contents in the message.
    let (done, log) = run(
        parquet("SELECT n FROM bad ORDER BY rowid", "bad.parquet"),
        cs(),
    )
    .await;
    assert!(!done.success && !done.retryable, "{done:?}\n{log}");
    let reason = done.reason.unwrap();
    assert!(reason.contains("column \"n\""), "{reason}");
    assert!(reason.contains("row 2"), "{reason}");
    assert!(!reason.contains("not a number"), "{reason}");
    assert!(!lake.path().join("bad.parquet").exists());
}
