//! Opening the metadata database, applying migrations, and starting transactions.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Transaction};

use tern_core::DagSpec;

use crate::time::{Clock, SystemClock};
use crate::Result;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a [`Store`] talks to; the SQL dialect differences live here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A `FROM` item `j` with one row per element of the JSON array bound at `$param`, in array
    /// order: `j.value` is the element (read a field of an array element with `j.value ->> i`),
    /// `j.key` its position. Many rows in one parameter: SQLite looks a numbered parameter's
    /// name up by a linear scan, so a statement with thousands of them costs quadratic time
    /// just binding them.
    pub(crate) fn json_rows(self, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("json_each(${param}) AS j"),
            Backend::Postgres => format!(
                "jsonb_array_elements(CAST(${param} AS jsonb)) WITH ORDINALITY AS j(value, key)"
            ),
        }
    }

    /// An aggregate (a select-list item) of the selected rows as one JSON array (as text) of
    /// arrays of `columns` (`"a, b"`); `[]` for no row.
    pub(crate) fn json_agg_arrays(self, columns: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_group_array(json_array({columns}))"),
            Backend::Postgres => {
                format!("CAST(COALESCE(json_agg(json_build_array({columns})), '[]') AS TEXT)")
            }
        }
    }

    /// A `SELECT` of the strings of the JSON array of strings bound at `$param` (for `IN`).
    pub(crate) fn json_texts(self, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("SELECT value FROM json_each(${param})"),
            Backend::Postgres => {
                format!("SELECT jsonb_array_elements_text(CAST(${param} AS jsonb))")
            }
        }
    }

    /// A condition: `column` is one of the integers of the JSON array bound at `$param`. One
    /// statement text however many ids (prepared once per connection), and on PostgreSQL an
    /// index lookup per id (`IN (SELECT …)` of a set-returning function is planned as a hash
    /// join over the whole table).
    pub(crate) fn in_json_ids(self, column: &str, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
            Backend::Postgres => format!(
                "{column} = ANY(ARRAY(SELECT CAST(jsonb_array_elements_text(CAST(${param} AS jsonb)) AS BIGINT)))"
            ),
        }
    }

    /// A condition: `column` is one of the strings of the JSON array bound at `$param` (as
    /// [`Backend::in_json_ids`] for integers).
    pub(crate) fn in_json_texts(self, column: &str, param: usize) -> String {
        match self {
            Backend::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
            Backend::Postgres => format!(
                "{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST(${param} AS jsonb))))"
            ),
        }
    }

    /// An `UPDATE … RETURNING columns` that claims the rows `pick` (a `SELECT id FROM table …`)
    /// chooses, setting `set` on them. On SQLite (one writer at a time) the plain form, with
    /// `still` (a condition the rows must still meet) checked again, is exact. On PostgreSQL the
    /// picked rows are locked (`FOR UPDATE SKIP LOCKED`, so concurrent claimers never share a
    /// row) and fixed once: a materialised CTE, not an IN subquery that a concurrent recheck
    /// could evaluate again.
    pub(crate) fn claim_sql(
        self,
        table: &str,
        set: &str,
        pick: &str,
        still: &str,
        columns: &str,
    ) -> String {
        match self {
            Backend::Sqlite => format!(
                "UPDATE {table} SET {set} WHERE id IN ({pick}) AND {still} RETURNING {columns}"
            ),
            Backend::Postgres => format!(
                "WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) \
                 UPDATE {table} SET {set} FROM picked WHERE {table}.id = picked.id RETURNING {}",
                columns
                    .split(',')
                    .map(|c| format!("{table}.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// A handle on the metadata database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    /// Where write transactions run: on SQLite one connection of its own, whose page cache no
    /// other writer's commit makes stale (SQLite drops a connection's whole cache when another
    /// connection wrote since its last transaction); on PostgreSQL the pool itself.
    writer: AnyPool,
    backend: Backend,
    specs: Arc<Mutex<HashMap<i64, Arc<DagSpec>>>>,
    /// Queues this process's SQLite writers without SQLite's busy handler, which sleeps in
    /// millisecond steps when the write lock is taken.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    /// Where every state change reads "now" (injected in tests).
    clock: Arc<dyn Clock>,
    /// Most instances one mapped task may expand to (`scheduler.max_map_length`).
    pub(crate) max_map_length: usize,
    /// The database URL, for connections outside the pool (PostgreSQL `LISTEN`).
    pub(crate) url: Arc<str>,
    /// Agents' results waiting to be written together.
    pub(crate) results: crate::results::ResultQueue,
    /// Times every state of a run was read (for tests: shows when a readiness pass could
    /// do without).
    pub(crate) run_state_reads: Arc<std::sync::atomic::AtomicU64>,
}

/// Databases in memory opened by this process so far (each store's has a name of its own).
static MEMORY_DATABASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Held for the life of a write transaction on SQLite; nothing on PostgreSQL.
pub(crate) type WriteLock = Option<tokio::sync::OwnedMutexGuard<()>>;

impl Store {
    /// Connects to `url` (`sqlite:///path/to/tern.db`, `sqlite::memory:`, `postgres://…`),
    /// creating a SQLite file if missing. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(crate::StoreError::Invalid(format!(
                "unsupported database URL {url:?}: use sqlite:///path/to/tern.db or postgres://user@host/db"
            )));
        };
        let url = match backend {
            // Each connection reads the URL again, and `:memory:` gives each a database of its
            // own: a name the pools' connections share (and no other store) makes them one.
            Backend::Sqlite if url.contains(":memory:") => format!(
                "sqlite:file:tern-memory-{}?mode=memory&cache=shared",
                MEMORY_DATABASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let stored_url: Arc<str> = Arc::from(url.as_str());
        let (pool, writer) = match backend {
            // Three connections for reads (the API, the CLI's views, housekeeping) and one for
            // every write transaction: writes are serialised anyway (one writer at a time), and
            // on the same connection each finds the pages the last one used still cached
            // (measured on a chain: the result transaction's statements 428 → 277 µs a task).
            Backend::Sqlite => {
                let pool = sqlite_pool(3, opts.clone()).await?;
                (pool, sqlite_pool(1, opts).await?)
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    // No statement, lock wait or idle transaction holds a connection (and the
                    // rows it locked) forever: past these the database ends it with an error
                    // that the caller reports or retries.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "SET statement_timeout = '60s'; SET lock_timeout = '15s'; \
                                 SET idle_in_transaction_session_timeout = '60s';",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?;
                (pool.clone(), pool)
            }
        };
        Ok(Store {
            pool,
            writer,
            backend,
            specs: Arc::default(),
            sqlite_writer: Arc::default(),
            clock: Arc::new(SystemClock),
            max_map_length: tern_core::mapping::DEFAULT_MAX_MAP_LENGTH,
            url: stored_url,
            results: Default::default(),
            run_state_reads: Arc::default(),
        })
    }

    /// Applies pending migrations. Safe to run from several processes at once. A database
    /// whose schema is newer than this build knows (upgraded by a newer tern) is refused with
    /// what to do, before anything is changed.
    pub async fn migrate(&self) -> Result<()> {
        let (applied, known) = self.schema_versions().await;
        if let Some(applied) = applied.filter(|a| *a > known) {
            return Err(crate::StoreError::Invalid(format!(
                "the metadata database has schema version {applied}, newer than this tern knows \
                 ({known}): a newer tern upgraded it. Run that version (or a newer one) here; an \
                 older binary must not write to it"
            )));
        }
        match self.backend {
            // sqlx takes no lock on SQLite: two processes opening a new file at once can both
            // try the first migration. Each migration is one transaction, so the loser rolled
            // back; trying again finds it applied.
            Backend::Sqlite => {
                let mut attempt = 0;
                loop {
                    match SQLITE_MIGRATIONS.run(&self.pool).await {
                        Ok(()) => break,
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::debug!("migration attempt {attempt} failed ({e}); retrying");
                            tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// `(applied, known)` when the database holds an older schema than this build knows (one
    /// that has tables but misses migrations); `None` for a current or an empty database.
    pub async fn older_schema(&self) -> Result<Option<(i64, i64)>> {
        let (applied, known) = self.schema_versions().await;
        Ok(applied.filter(|a| *a < known).map(|a| (a, known)))
    }

    /// The newest schema version applied to the database (`None`: no schema yet) and the
    /// newest this build knows.
    /// This build's migrations for the store's backend.
    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    async fn schema_versions(&self) -> (Option<i64>, i64) {
        let known = self.migrator().iter().map(|m| m.version).max().unwrap_or(0);
        // No table yet (a new database) reads as no version.
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(None);
        (applied, known)
    }

    /// Connects and migrates.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Store::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// The same store reading the time from `clock` (tests move a [`crate::ManualClock`]
    /// instead of sleeping).
    pub fn with_clock(mut self, clock: impl Clock) -> Store {
        self.clock = Arc::new(clock);
        // Results are written by a writer of the store that queued them: one with this clock.
        self.results = Default::default();
        self
    }

    /// Sets the most instances one mapped task may expand to (at least 1).
    pub fn with_max_map_length(mut self, max: usize) -> Store {
        self.max_map_length = max.max(1);
        self
    }

    /// Now, in UTC epoch milliseconds, by the store's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The SQLite database file, for a store on one (not in memory, not PostgreSQL).
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        let path = self.url.strip_prefix("sqlite://")?.split('?').next()?;
        (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front (`BEGIN
    /// IMMEDIATE`) so two writers queue on the busy timeout instead of failing on upgrade.
    /// Keep the returned lock alive until the transaction ends.
    pub(crate) async fn write_tx(&self) -> Result<(Transaction<'static, sqlx::Any>, WriteLock)> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let lock = self.sqlite_writer.clone().lock_owned().await;
                (self.writer.begin_with("BEGIN IMMEDIATE").await?, Some(lock))
            }
            Backend::Postgres => (self.writer.begin().await?, None),
        })
    }

    /// Serialises the work on one DAG run across processes (PostgreSQL row lock; SQLite
    /// already serialises writers).
    pub(crate) async fn lock_run(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
        run_pk: i64,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM dag_runs WHERE id = $1 FOR UPDATE")
                .bind(run_pk)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Serialises admission (pool and concurrency accounting) across schedulers.
    pub(crate) async fn lock_admission(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(727100001)")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Takes the admission lock if nobody holds it, without waiting (PostgreSQL; SQLite
    /// already serialises writers, so it is always free there). A result whose transaction
    /// finds it taken leaves admission to the admitter, which waits for it.
    pub(crate) async fn try_lock_admission(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
    ) -> Result<bool> {
        if self.backend == Backend::Postgres {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(727100001)")
                .fetch_one(&mut **tx)
                .await?;
            return Ok(got);
        }
        Ok(true)
    }

    /// Serialises DAG folder syncs across processes, so two of them never both write version N
    /// of a DAG (PostgreSQL; SQLite already serialises writers).
    pub(crate) async fn lock_dag_sync(
        &self,
        tx: &mut Transaction<'static, sqlx::Any>,
    ) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(727100002)")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(crate) fn cached_spec(&self, version_id: i64) -> Option<Arc<DagSpec>> {
        self.specs
            .lock()
            .expect("spec cache lock")
            .get(&version_id)
            .cloned()
    }

    pub(crate) fn cache_spec(&self, version_id: i64, spec: Arc<DagSpec>) {
        self.specs
            .lock()
            .expect("spec cache lock")
            .insert(version_id, spec);
    }

    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }
}

impl Store {
    /// Diagnostic for benchmarks: the time of `n` trivial statements, one after the other.
    #[doc(hidden)]
    pub async fn round_trips(&self, n: usize) -> Result<Duration> {
        let start = std::time::Instant::now();
        for _ in 0..n {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
        }
        Ok(start.elapsed())
    }

    /// For tests: how many times every state of a run was read since the store was opened.
    #[doc(hidden)]
    pub fn debug_run_state_reads(&self) -> u64 {
        self.run_state_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// For tests: runs one statement on the database as it is.
    #[doc(hidden)]
    pub async fn debug_execute(&self, sql: &str) -> Result<()> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    /// For tests: gives a new database the schema of the tern before this one (every migration
    /// but the newest), what an upgrade starts from.
    #[doc(hidden)]
    pub async fn debug_migrate_all_but_the_newest(&self) -> Result<()> {
        let all = self.migrator();
        let newest = all.iter().map(|m| m.version).max().unwrap_or(0);
        let older = sqlx::migrate::Migrator {
            migrations: all
                .iter()
                .filter(|m| m.version < newest)
                .cloned()
                .collect::<Vec<_>>()
                .into(),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        older.run(&self.pool).await?;
        Ok(())
    }

    /// The time limits of a pooled session: PostgreSQL's statement, lock and idle-transaction
    /// timeouts; SQLite's busy timeout (milliseconds).
    #[doc(hidden)]
    pub async fn debug_session_settings(&self) -> Result<Vec<String>> {
        if self.backend == Backend::Sqlite {
            let ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&self.pool)
                .await?;
            return Ok(vec![ms.to_string()]);
        }
        let mut out = Vec::new();
        for name in [
            "statement_timeout",
            "lock_timeout",
            "idle_in_transaction_session_timeout",
        ] {
            out.push(
                sqlx::query_scalar(&format!("SHOW {name}"))
                    .fetch_one(&self.pool)
                    .await?,
            );
        }
        Ok(out)
    }

    #[doc(hidden)]
    pub async fn round_trips_in_tx(&self, n: usize) -> Result<Duration> {
        let start = std::time::Instant::now();
        let (mut tx, _l) = self.write_tx().await?;
        for _ in 0..n {
            sqlx::query("SELECT 1").execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(start.elapsed())
    }

    /// For the benchmarks: `txs` write transactions of `per_tx` `SELECT 1` each, `idle` apart
    /// (as a chain's transactions are); returns the median time of a statement inside a
    /// transaction, of a `BEGIN IMMEDIATE` and of a commit.
    #[doc(hidden)]
    pub async fn round_trips_after_idle(
        &self,
        txs: usize,
        per_tx: usize,
        idle: Duration,
    ) -> Result<(Duration, Duration, Duration)> {
        let (mut stmt, mut begin, mut commit) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..txs {
            tokio::time::sleep(idle).await;
            let t = std::time::Instant::now();
            let (mut tx, _l) = self.write_tx().await?;
            begin.push(t.elapsed());
            for _ in 0..per_tx {
                let t = std::time::Instant::now();
                sqlx::query("SELECT 1").execute(&mut *tx).await?;
                stmt.push(t.elapsed());
            }
            let t = std::time::Instant::now();
            tx.commit().await?;
            commit.push(t.elapsed());
        }
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        Ok((median(stmt), median(begin), median(commit)))
    }
}

/// A pool of `max` connections to a SQLite database, each set up alike.
async fn sqlite_pool(max: u32, opts: AnyConnectOptions) -> Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(max)
        // A file database has no connection to lose: skip the ping sqlx otherwise
        // sends on every acquire (it costs ~100 µs a statement, measured).
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        // The database file is read through a memory map: a connection whose page
        // cache another connection's commit made stale (SQLite then drops it whole)
        // reads pages without a `pread` each (measured: ~6% of a busy control
        // plane's CPU was those reads).
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                     PRAGMA mmap_size = 268435456;",
                )
                .await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::Store;

    /// `PRAGMA data_version` of the connection a write transaction runs on: it moves when
    /// another connection committed since that connection last looked (SQLite then drops the
    /// connection's page cache), and not for the connection's own commits.
    async fn data_version_seen_by_a_writer(store: &Store) -> i64 {
        let (mut tx, _lock) = store.write_tx().await.unwrap();
        let v: i64 = sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        sqlx::query("UPDATE pools SET slots = slots + 1 WHERE name = 'default_pool'")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        v
    }

    /// A database in memory is one database, whichever pool a statement runs on.
    #[tokio::test]
    async fn a_database_in_memory_reads_what_its_write_transactions_wrote() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let before = store.list_pools().await.unwrap()[0].slots;
        data_version_seen_by_a_writer(&store).await;
        assert_eq!(store.list_pools().await.unwrap()[0].slots, before + 1);
    }

    #[tokio::test]
    async fn sqlite_write_transactions_keep_one_connection_and_its_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tern.db").display());
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        // Reads on the other connections in between, as the API and the CLI make them.
        let first = data_version_seen_by_a_writer(&store).await;
        for _ in 0..8 {
            let (a, b) = tokio::join!(store.list_pools(), store.list_pools());
            a.unwrap();
            b.unwrap();
            assert_eq!(
                data_version_seen_by_a_writer(&store).await,
                first,
                "a write transaction ran on a connection another connection's commit made stale"
            );
        }
    }
}
