//! A database connection of a data task: one connection (no pool) to PostgreSQL, MySQL /
//! MariaDB or SQLite, opened from a named connection with a timeout; statements with bound
//! parameters; queries streamed row by row.

use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::Value;
use sqlx::{Column, Connection as _, Executor, Row};

use super::cells::{mysql_cell, pg_cell, sqlite_cell, Cell};
use super::error::{from_sqlx, DataError};
use crate::connections::Connection;

/// Longest wait for a database to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Receives each row of a streamed query: the column names and the values.
pub type RowSink<'a> = dyn FnMut(&[String], &[Cell]) -> Result<(), DataError> + Send + 'a;

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
    ) -> Result<(u64, Option<Vec<(String, Cell)>>), sqlx::Error> {
        // Parameters go to the statements that take them: with several statements, a
        // CREATE TABLE has no placeholders while the INSERT after it has.
        macro_rules! go {
            ($conn:expr, $cell:expr) => {{
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
                            for (i, col) in row.columns().iter().enumerate() {
                                out.push((col.name().to_string(), $cell(&row, i)?));
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
            Db::MySql(c) => go!(c, mysql_cell),
            Db::Pg(c) => go!(c, pg_cell),
            Db::Sqlite(c) => go!(c, sqlite_cell),
        }
    }

    /// Streams the rows of a query to `each` (column names, values); returns the row count.
    /// Column names come from the first row, or from describing the query when it returns
    /// none (so an empty export still has its header).
    pub async fn stream(
        &mut self,
        sql: &str,
        params: &[Value],
        each: &mut RowSink<'_>,
    ) -> Result<u64, DataError> {
        macro_rules! go {
            ($conn:expr, $cell:expr) => {{
                let mut n = 0u64;
                let mut names: Vec<String> = Vec::new();
                let mut cells: Vec<Cell> = Vec::new();
                {
                    let q = bind_params!(sqlx::query(sql), params);
                    let mut rows = q.fetch(&mut *$conn);
                    while let Some(row) = rows
                        .try_next()
                        .await
                        .map_err(|e| from_sqlx("the query failed", e))?
                    {
                        if n == 0 {
                            names = row.columns().iter().map(|c| c.name().to_string()).collect();
                        }
                        cells.clear();
                        for i in 0..names.len() {
                            cells.push(
                                $cell(&row, i).map_err(|e| from_sqlx("cannot read a value", e))?,
                            );
                        }
                        each(&names, &cells)?;
                        n += 1;
                    }
                }
                if n == 0 {
                    let d = (&mut *$conn)
                        .describe(sql)
                        .await
                        .map_err(|e| from_sqlx("the query failed", e))?;
                    names = d.columns().iter().map(|c| c.name().to_string()).collect();
                    each(&names, &[])?;
                }
                Ok(n)
            }};
        }
        match self {
            Db::MySql(c) => go!(c, mysql_cell),
            Db::Pg(c) => go!(c, pg_cell),
            Db::Sqlite(c) => go!(c, sqlite_cell),
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
