//! The `sql` and `sql_to_lake` task kinds.

use serde_json::{Map, Value};
use tern_core::{ExportFormat, SqlTask, SqlToLakeTask};

use std::task::{Context, Poll};

use super::cells::{Cell, Column};
use super::db::{describe, Db, RowSink};
use super::error::{from_sqlx, DataError};
use super::export::{CsvRows, JsonLines, ParquetRows, RowWriter};
use super::lake::{Lake, Pending};
use super::{connection, render};
use crate::connections::Connections;
use crate::logsink::LogSink;
use crate::template::Renderer;

pub(crate) fn render_params(r: &Renderer, params: &[Value]) -> Result<Vec<Value>, DataError> {
    params
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Value::String(s) => render(r, &format!("parameters[{i}]"), s).map(Value::String),
            other => Ok(other.clone()),
        })
        .collect()
}

/// Runs the statements of a `sql` task; outputs `rows_affected` and, when asked, the first row.
pub async fn run_sql(
    conns: &Connections,
    r: &Renderer,
    sink: &dyn LogSink,
    spec: &SqlTask,
) -> Result<Map<String, Value>, DataError> {
    let c = connection(conns, &spec.conn)?;
    let params = render_params(r, &spec.parameters)?;
    let sqls = spec
        .sql
        .iter()
        .enumerate()
        .map(|(i, s)| render(r, &format!("sql[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    sink.line(&format!("tern: connecting to {}", describe(c)));
    let mut db = Db::connect(c, false).await?;
    if spec.transaction {
        db.begin(false).await?;
    }
    let mut affected = 0u64;
    let mut first = None;
    let last = sqls.len().saturating_sub(1);
    for (i, sql) in sqls.iter().enumerate() {
        sink.line(&format!("tern: statement {}: {sql}", i + 1));
        let want_row = spec.output_first_row && i == last;
        match db.execute(sql, &params, want_row).await {
            Ok((n, row)) => {
                affected += n;
                if row.is_some() {
                    first = row;
                } else {
                    sink.line(&format!("tern: {n} row(s) affected"));
                }
            }
            Err(e) => {
                if spec.transaction {
                    db.rollback().await;
                    sink.line("tern: rolled back");
                }
                db.close().await;
                return Err(from_sqlx(&format!("statement {} failed", i + 1), e));
            }
        }
    }
    if spec.transaction {
        db.commit().await?;
    }
    db.close().await;
    let mut out = Map::new();
    out.insert("rows_affected".into(), Value::from(affected));
    if let Some(row) = first {
        sink.line(&format!(
            "tern: first row published as outputs ({} column(s))",
            row.len()
        ));
        for (k, v) in row {
            out.insert(k, v);
        }
    }
    Ok(out)
}

/// The format writer and where its bytes go, as one [`RowSink`].
struct Export {
    writer: Box<dyn RowWriter>,
    pending: Pending,
}

impl RowSink for Export {
    fn start(&mut self, columns: &[Column]) -> Result<(), DataError> {
        self.writer.start(columns)
    }

    fn value(&mut self, i: usize, cell: Cell<'_>) -> Result<(), DataError> {
        self.writer.value(i, cell)
    }

    fn end_row(&mut self) -> Result<(), DataError> {
        self.writer.end_row()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DataError>> {
        self.pending.poll_ready(cx)
    }
}

/// Streams a query into the target (see [`Lake::create`]: uploaded while the query runs, or a
/// temporary file beside the object), then publishes it whole; outputs `rows`, `bytes` and
/// `url`. On failure the upload is aborted, or the temporary file removed.
pub async fn run_export(
    conns: &Connections,
    r: &Renderer,
    sink: &dyn LogSink,
    spec: &SqlToLakeTask,
) -> Result<Map<String, Value>, DataError> {
    let source = connection(conns, &spec.conn)?;
    let target_conn = connection(conns, &spec.target_conn)?;
    let sql = render(r, "sql", &spec.sql)?;
    let params = render_params(r, &spec.parameters)?;
    let target = render(r, "target", &spec.target)?;
    let lake = Lake::open(target_conn)?;
    sink.line(&format!("tern: source {}", describe(source)));
    sink.line(&format!("tern: query: {sql}"));
    sink.line(&format!(
        "tern: target {} object {target} ({})",
        lake.describe,
        match spec.format {
            ExportFormat::Csv => "csv",
            ExportFormat::Jsonl => "json lines",
            ExportFormat::Parquet => "parquet",
        }
    ));
    lake.check(&target).await?;
    let mut db = Db::connect(source, true).await?;
    let (out, pending) = lake.create(&target)?;
    // Each writer buffers in front of `out` itself.
    let writer: Box<dyn RowWriter> = match spec.format {
        ExportFormat::Csv => Box::new(CsvRows::new(out, &spec.csv)),
        ExportFormat::Jsonl => Box::new(JsonLines::new(out)),
        ExportFormat::Parquet => Box::new(ParquetRows::new(out, spec.compression)),
    };
    let mut export = Export { writer, pending };
    let rows = async {
        db.begin(true).await?;
        let rows = db.stream(&sql, &params, &mut export).await;
        db.rollback().await;
        let rows = rows?;
        export.writer.finish()?;
        Ok::<_, DataError>(rows)
    }
    .await;
    db.close().await;
    let Export { writer, pending } = export;
    drop(writer);
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            // The upload's own error, when it stopped the query, says more.
            return Err(pending.abort().await.unwrap_or(e));
        }
    };
    sink.line(&format!("tern: {rows} row(s) exported"));
    let bytes = lake.publish(pending).await?;
    let url = format!("{}{}", lake.url_prefix, target.trim_start_matches('/'));
    sink.line(&format!("tern: wrote {url} ({bytes} bytes)"));
    let mut out = Map::new();
    out.insert("rows".into(), Value::from(rows));
    out.insert("bytes".into(), Value::from(bytes));
    out.insert("url".into(), Value::from(url));
    Ok(out)
}
