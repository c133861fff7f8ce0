//! Quiet ends written together: when agents' results are ended in one transaction
//! (`results.rs`), an attempt whose end asks for nothing but its own write, a look at the tasks
//! downstream of it and a judgement of its run — it ends in a final state, decides no skips,
//! no next run waits for it — has its instance and try written with the other quiet ends of
//! the transaction, in one statement, and the tasks downstream of them looked at once per run
//! (`Store::evaluate` with all of the run's ended tasks as seeds: a join waiting on a wide
//! fan is probed once for the batch, not once per result). Under load that is a few round
//! trips to the database for a batch of results instead of a few per result.
//!
//! The writes keep the checks of the one-by-one path ([`crate::Store`]'s `write_settled`):
//! each instance is written only if its state and attempt token are still those read under
//! its run's lock, its try only if its instance was, and a count short of the whole batch
//! fails the transaction (the writer then ends each result in a transaction of its own).
//! Ends are gathered only while nothing else is written: whatever the transaction does next
//! (another statement of any kind) writes them first, so every later statement reads them.
//! Looking downstream once for several ended tasks decides what looking after each would
//! have: a task's readiness depends on its upstream tasks' states, all written by then.

use std::sync::Arc;

use sqlx::{Any, Row, Transaction};
use tern_core::{DagSpec, TaskState};

use crate::{Backend, Result, Store, StoreError};

/// One attempt's end, held back: the values `write_settled` would write.
pub(crate) struct QuietEnd {
    pub ti_id: i64,
    pub run_pk: i64,
    pub task_id: String,
    /// The run's DAG version (its downstream tasks are looked at after the write).
    pub spec: Arc<DagSpec>,
    /// The state and attempt token it was read with (the write's guard).
    pub was: TaskState,
    pub attempt: String,
    pub state: TaskState,
    pub ended_at: i64,
    pub note: Option<String>,
    pub try_state: TaskState,
    pub try_number: i64,
    pub exit_code: Option<i64>,
    pub try_note: Option<String>,
}

/// The quiet ends a transaction holds back, if it gathers them at all.
#[derive(Default)]
pub(crate) struct Gathered {
    /// Whether this transaction gathers quiet ends (agents' results written together).
    enabled: bool,
    ends: Vec<QuietEnd>,
    /// How many were written together so far.
    written: u64,
}

impl Gathered {
    /// From now on, quiet ends are gathered.
    pub(crate) fn enable(&mut self) {
        self.enabled = true;
    }

    /// How many quiet ends were written together so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Whether this transaction gathers quiet ends.
    pub(crate) fn gathers(&self) -> bool {
        self.enabled
    }

    /// Holds `end` back, to be written with the others (the transaction gathers).
    pub(crate) fn hold(&mut self, end: QuietEnd) {
        debug_assert!(self.enabled, "only a transaction that gathers holds ends");
        self.ends.push(end);
    }
}

/// Every quiet end's instance, then its try, in one statement (the values are a JSON array of
/// arrays at `$1`, their number at `$2`); it returns how many instances it wrote. The rows are
/// found by `= ANY(ARRAY(…))`, an index lookup each (a join to the values cost three times as
/// much a row: 140 µs against 46, `pg_stat_statements`).
fn postgres_statement() -> String {
    format!(
        "WITH v AS ({}), \
         i AS (UPDATE task_instances t SET state = v.state, ended_at = v.ended_at, note = v.note, \
               ready_at = NULL, lease_until = NULL, sensor_since = NULL \
               FROM v WHERE t.id = ANY(ARRAY(SELECT id FROM v)) AND t.id = v.id \
               AND t.state = v.was AND COALESCE(t.attempt, '') = v.attempt RETURNING t.id), \
         r AS (UPDATE task_tries r SET state = v.try_state, ended_at = v.ended_at, \
               exit_code = v.exit_code, note = v.try_note \
               FROM v WHERE r.ti_id = ANY(ARRAY(SELECT id FROM i)) AND r.ti_id = v.id \
               AND r.try_number = v.try_number \
               AND (SELECT COUNT(*) FROM i) = $2 RETURNING 1) \
         SELECT COUNT(*) FROM i",
        values(Backend::Postgres)
    )
}

/// The same as two statements in one call to SQLite's thread: the tries' statement changes
/// rows only when the instances' changed all `$2` (`changes()` counts the statement before),
/// so the call's count reaches `$2` exactly when every instance was written.
fn sqlite_statement() -> String {
    let v = values(Backend::Sqlite);
    format!(
        "UPDATE task_instances AS t SET state = v.state, ended_at = v.ended_at, note = v.note, \
         ready_at = NULL, lease_until = NULL, sensor_since = NULL \
         FROM ({v}) AS v WHERE t.id = v.id AND t.state = v.was AND COALESCE(t.attempt, '') = v.attempt; \
         UPDATE task_tries AS r SET state = v.try_state, ended_at = v.ended_at, \
         exit_code = v.exit_code, note = v.try_note \
         FROM ({v}) AS v WHERE r.ti_id = v.id AND r.try_number = v.try_number AND changes() = $2"
    )
}

/// The quiet ends bound at `$1` as rows.
fn values(backend: Backend) -> String {
    format!(
        "SELECT CAST(j.value ->> 0 AS BIGINT) AS id, j.value ->> 1 AS state, \
         CAST(j.value ->> 2 AS BIGINT) AS ended_at, j.value ->> 3 AS note, j.value ->> 4 AS was, \
         j.value ->> 5 AS attempt, j.value ->> 6 AS try_state, \
         CAST(j.value ->> 7 AS BIGINT) AS exit_code, j.value ->> 8 AS try_note, \
         CAST(j.value ->> 9 AS BIGINT) AS try_number FROM {}",
        backend.json_rows(1)
    )
}

impl Store {
    /// Writes the quiet ends `gathered` holds, if any, in one statement, then looks at the tasks
    /// downstream of them once per run; an error (and nothing written) if any of them no
    /// longer matched what was read under its run's lock. Returns their runs, to be judged
    /// (does it end?). Called before any other statement of a transaction that gathers.
    pub(crate) async fn write_gathered(
        &self,
        tx: &mut Transaction<'static, Any>,
        gathered: &mut Gathered,
    ) -> Result<Vec<(i64, Arc<DagSpec>)>> {
        if gathered.ends.is_empty() {
            return Ok(Vec::new());
        }
        let ends = std::mem::take(&mut gathered.ends);
        let rows: Vec<serde_json::Value> = ends
            .iter()
            .map(|e| {
                serde_json::json!([
                    e.ti_id,
                    e.state.as_str(),
                    e.ended_at,
                    e.note,
                    e.was.as_str(),
                    e.attempt,
                    e.try_state.as_str(),
                    e.exit_code,
                    e.try_note,
                    e.try_number,
                ])
            })
            .collect();
        static POSTGRES: std::sync::LazyLock<String> = std::sync::LazyLock::new(postgres_statement);
        static SQLITE: std::sync::LazyLock<String> = std::sync::LazyLock::new(sqlite_statement);
        let n = ends.len() as i64;
        let json = serde_json::to_string(&rows)?;
        let written = match self.backend() {
            Backend::Postgres => {
                let row = sqlx::query(&POSTGRES)
                    .bind(json)
                    .bind(n)
                    .fetch_one(&mut **tx)
                    .await?;
                row.try_get::<i64, _>(0)?
            }
            Backend::Sqlite => {
                let done = sqlx::query(&SQLITE)
                    .bind(json)
                    .bind(n)
                    .execute(&mut **tx)
                    .await?;
                // Instances and tries: at least `n` exactly when every instance was written.
                (done.rows_affected() as i64).min(n)
            }
        };
        if written != n {
            let ids: Vec<i64> = ends.iter().map(|e| e.ti_id).collect();
            return Err(StoreError::Conflict(format!(
                "of the task instances {ids:?}, ended together, {written} of {n} were as read under their runs' locks; nothing was written"
            )));
        }
        gathered.written += n as u64;
        // Each run once, in the order its first end came, with all of its ended tasks.
        let mut runs: Vec<(i64, Arc<DagSpec>, Vec<&str>, i64)> = Vec::new();
        for e in &ends {
            match runs.iter_mut().find(|r| r.0 == e.run_pk) {
                Some(run) => {
                    run.2.push(&e.task_id);
                    run.3 = run.3.max(e.ended_at);
                }
                None => runs.push((e.run_pk, e.spec.clone(), vec![&e.task_id], e.ended_at)),
            }
        }
        for (run_pk, spec, seeds, now) in &runs {
            self.evaluate(tx, *run_pk, spec, Some(seeds), None, *now)
                .await?;
        }
        Ok(runs
            .into_iter()
            .map(|(run_pk, spec, _, _)| (run_pk, spec))
            .collect())
    }
}
