//! A database connection of a data task: one connection (no pool) to PostgreSQL, MySQL /
//! MariaDB or SQLite, opened from a named connection with a timeout; statements with bound
//! parameters; queries streamed row by row.

use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::{Column as _, Connection as _, Executor, Row, TypeInfo};

use super::cells::{Cell, Column};
use super::decode::{mysql_cell, mysql_columns, pg_cell, pg_columns, sqlite_cell, sqlite_columns};
use super::error::{from_sqlx, DataError};
use crate::connections::Connection;

/// Longest wait for a database to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Receives a streamed query: its columns once, then each row value by value.
pub trait RowSink {
    /// The result's columns, before any value (also for an empty result).
    fn start(&mut self, columns: &[Column]) -> Result<(), DataError>;
    /// Value of column `i` of the current row; columns come in order.
    fn value(&mut self, i: usize, cell: Cell<'_>) -> Result<(), DataError>;
    /// The current row is complete.
    fn end_row(&mut self) -> Result<(), DataError>;
    /// Polled after each row: pending while the sink wants the query to wait (an upload with
    /// no room for another part), so memory stays bounded.
    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), DataError>> {
        std::task::Poll::Ready(Ok(()))
    }
}

pub enum Db {
    MySql(sqlx::MySqlConnection),
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

/// Where a connection points, for logs: never the password.
pub fn describe(c: &Connection) -> String {
    let mut s = format!("{} connection {:?}: ", c.conn_type, c.name);
    if c.conn_type == "sqlite" {
        let path = c.uri.trim_start_matches("sqlite:").trim_start_matches("//");
        return format!("{s}file {}", path.split('?').next().unwrap_or(path));
    }
    if let Some(u) = &c.login {
        s.push_str(&format!("user {u} at "));
    }
    match (&c.host, c.port) {
        (Some(h), Some(p)) => s.push_str(&format!("{h}:{p}")),
        (Some(h), None) => s.push_str(h),
        _ => {}
    }
    if let Some(db) = &c.schema {
        s.push_str(&format!(" database {db}"));
    }
    s
}

/// Binds JSON parameter values to a query, whatever the database.
macro_rules! bind_params {
    ($q:expr, $params:expr) => {{
        let mut q = $q;
        for p in $params {
            q = match p {
                Value::Null => q.bind(None::<String>),
                Value::Bool(b) => q.bind(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(n.as_f64().unwrap_or_default()),
                },
                Value::String(s) => q.bind(s.clone()),
                other => q.bind(other.to_string()),
            };
        }
        q
    }};
}

impl Db {
    /// Connects; a read-only connection refuses writes (SQLite opens the file read-only; the
    /// others use a read-only transaction, see [`Db::begin`]).
    pub async fn connect(c: &Connection, read_only: bool) -> Result<Db, DataError> {
        let what = describe(c);
        let connecting = async {
            match c.conn_type.as_str() {
                "mysql" | "mariadb" => {
                    let uri = c.uri.replacen("mariadb://", "mysql://", 1);
                    let opts = sqlx::mysql::MySqlConnectOptions::from_str(&uri)
                        .map_err(|e| from_sqlx(&what, e))?;
                    sqlx::MySqlConnection::connect_with(&opts)
                        .await
                        .map(Db::MySql)
                        .map_err(|e| from_sqlx(&format!("cannot connect to {what}"), e))
                }
                "postgres" | "postgresql" => {
                    let opts = sqlx::postgres::PgConnectOptions::from_str(&c.uri)
                        .map_err(|e| from_sqlx(&what, e))?;
                    sqlx::PgConnection::connect_with(&opts)
                        .await
                        .map(Db::Pg)
                        .map_err(|e| from_sqlx(&format!("cannot connect to {what}"), e))
                }
                "sqlite" => {
                    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&c.uri)
                        .map_err(|e| from_sqlx(&what, e))?
                        .read_only(read_only);
                    sqlx::SqliteConnection::connect_with(&opts)
                        .await
                        .map(Db::Sqlite)
                        .map_err(|e| from_sqlx(&format!("cannot open {what}"), e))
                }
                other => Err(DataError::permanent(format!(
                    "connection {:?} is of type {other}: SQL tasks need postgres://, mysql:// or sqlite://",
                    c.name
                ))),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                DataError::transient(format!(
                    "cannot connect to {what}: no answer within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
    }

    async fn run(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Db::MySql(c) => c.execute(sql).await.map(|_| ()),
            Db::Pg(c) => c.execute(sql).await.map(|_| ()),
            Db::Sqlite(c) => c.execute(sql).await.map(|_| ()),
        }
    }

    /// Starts a transaction, read-only when asked.
    pub async fn begin(&mut self, read_only: bool) -> Result<(), DataError> {
        let sql = match (&*self, read_only) {
            (Db::MySql(_), true) => "START TRANSACTION READ ONLY",
            (Db::Pg(_), true) => "BEGIN READ ONLY",
            _ => "BEGIN",
        };
        self.run(sql)
            .await
            .map_err(|e| from_sqlx("cannot start a transaction", e))
    }

    pub async fn commit(&mut self) -> Result<(), DataError> {
        self.run("COMMIT")
            .await
            .map_err(|e| from_sqlx("commit failed", e))
    }

    pub async fn rollback(&mut self) {
        let _ = self.run("ROLLBACK").await;
    }

    /// Runs one statement; returns the rows it affected and, when `first_row`, the first row
    /// it returned (column → value).
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[Value],
        first_row: bool,
    ) -> Result<(u64, Option<Vec<(String, Value)>>), sqlx::Error> {
        // Parameters go to the statements that take them: with several statements, a
        // CREATE TABLE has no placeholders while the INSERT after it has.
        macro_rules! go {
            ($conn:expr, $cell:expr, $columns:expr) => {{
                // Only a statement run with parameters needs describing (one more round trip).
                let takes = if params.is_empty() {
                    0
                } else {
                    match (&mut *$conn).describe(sql).await?.parameters() {
                        Some(sqlx::Either::Left(types)) => types.len(),
                        Some(sqlx::Either::Right(n)) => n,
                        None => params.len(),
                    }
                };
                let bound: &[Value] = if takes == 0 { &[] } else { params };
                let q = bind_params!(sqlx::query(sql), bound);
                if first_row {
                    match q.fetch_optional(&mut *$conn).await? {
                        None => Ok((0, Some(Vec::new()))),
                        Some(row) => {
                            let mut out = Vec::new();
                            for (i, col) in $columns(row.columns()).iter().enumerate() {
                                out.push((col.name.clone(), $cell(&row, i, col)?.json()));
                            }
                            Ok((1, Some(out)))
                        }
                    }
                } else {
                    Ok((q.execute(&mut *$conn).await?.rows_affected(), None))
                }
            }};
        }
        match self {
            Db::MySql(c) => go!(c, mysql_cell, mysql_columns),
            Db::Pg(c) => go!(c, pg_cell, |cols| pg_columns(cols, |_| None)),
            Db::Sqlite(c) => go!(c, sqlite_cell, sqlite_columns),
        }
    }

    /// Streams the rows of a query to `sink`; returns the row count. The columns come from
    /// the first row, or from describing the query when it returns none (so an empty export
    /// still has its header and schema); on PostgreSQL the query is described first, to learn
    /// the precision and scale of `NUMERIC` columns read from tables.
    pub async fn stream<S: RowSink + ?Sized>(
        &mut self,
        sql: &str,
        params: &[Value],
        sink: &mut S,
    ) -> Result<u64, DataError> {
        macro_rules! go {
            ($conn:expr, $cell:expr, $columns:expr, $known:expr) => {{
                let mut n = 0u64;
                let mut columns: Option<Vec<Column>> = $known;
                {
                    let q = bind_params!(sqlx::query(sql), params);
                    let mut rows = q.fetch(&mut *$conn);
                    while let Some(row) = rows
                        .try_next()
                        .await
                        .map_err(|e| from_sqlx("the query failed", e))?
                    {
                        let cols = columns.get_or_insert_with(|| $columns(row.columns()));
                        if n == 0 {
                            sink.start(cols)?;
                        }
                        for (i, col) in cols.iter().enumerate() {
                            let cell = $cell(&row, i, col)
                                .map_err(|e| from_sqlx("cannot read a value", e))?;
                            sink.value(i, cell)?;
                        }
                        sink.end_row()?;
                        n += 1;
                        std::future::poll_fn(|cx| sink.poll_ready(cx)).await?;
                    }
                }
                if n == 0 {
                    let cols = match columns {
                        Some(c) => c,
                        None => {
                            let d = (&mut *$conn)
                                .describe(sql)
                                .await
                                .map_err(|e| from_sqlx("the query failed", e))?;
                            $columns(d.columns())
                        }
                    };
                    sink.start(&cols)?;
                }
                Ok(n)
            }};
        }
        match self {
            Db::MySql(c) => go!(c, mysql_cell, mysql_columns, None),
            Db::Pg(c) => {
                let known = pg_describe(c, sql).await?;
                go!(c, pg_cell, |_| known.clone(), Some(known.clone()))
            }
            Db::Sqlite(c) => go!(c, sqlite_cell, sqlite_columns, None),
        }
    }

    pub async fn close(self) {
        let _ = match self {
            Db::MySql(c) => c.close().await,
            Db::Pg(c) => c.close().await,
            Db::Sqlite(c) => c.close().await,
        };
    }
}

/// The columns of a PostgreSQL query, with the type modifiers of `NUMERIC` columns that come
/// straight from a table (`pg_attribute.atttypmod`).
async fn pg_describe(c: &mut sqlx::PgConnection, sql: &str) -> Result<Vec<Column>, DataError> {
    let d = (&mut *c)
        .describe(sql)
        .await
        .map_err(|e| from_sqlx("the query failed", e))?;
    let mut typmods = Vec::with_capacity(d.columns().len());
    for col in d.columns() {
        let source = match (col.relation_id(), col.relation_attribute_no()) {
            (Some(rel), Some(att)) if col.type_info().name() == "NUMERIC" => Some((rel, att)),
            _ => None,
        };
        let typmod = match source {
            None => None,
            Some((rel, att)) => sqlx::query_scalar::<_, i32>(
                "SELECT atttypmod FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum = $2",
            )
            .bind(rel)
            .bind(att)
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| from_sqlx("cannot read the column types", e))?,
        };
        typmods.push(typmod);
    }
    // Describing cached the statement with the parameter types the server guessed; the query
    // must be prepared again with the types of the bound values.
    c.clear_cached_statements()
        .await
        .map_err(|e| from_sqlx("cannot read the column types", e))?;
    Ok(pg_columns(d.columns(), |i| typmods[i]))
}
