//! What one run's life does beyond itself, as Airflow does: a run that outlives its DAG's
//! `dagrun_timeout` fails (its unfinished tasks skipped, running ones stopped); a DAG whose last
//! `max_consecutive_failed_dag_runs` runs all failed is paused; a `depends_on_past` task waits
//! for the same task in the previous run (by logical date) to have succeeded or been skipped
//! (and with `wait_for_downstream` for that instance's direct downstream tasks too), and is
//! judged again when they end.
//!
//! A timed-out run ends under the run lock, through the same task-ending step as marking a run
//! failed by hand, so a result from an attempt that was running is refused like any stale one;
//! it notifies `on_failure` and starts the DAG's next queued run like a run that ended by
//! itself.

use sqlx::{Any, Row, Transaction};
use tern_core::{format_duration, DagSpec, TaskSpec};

use crate::{Result, Store};

/// Whether the next run of `spec`'s DAG may wait for the tasks `ended` (so their end must
/// judge it again). Looked up from what ended (a result's path must not scan the whole DAG):
/// an ended task is waited for by its own next instance (`depends_on_past`), or through
/// `wait_for_downstream` by the next instance of one of its upstream tasks.
pub(crate) fn awaited_by_next_run(spec: &DagSpec, ended: &[&str]) -> bool {
    ended.iter().filter_map(|id| spec.task(id)).any(|t| {
        t.depends_on_past
            || t.upstream
                .iter()
                .filter_map(|u| spec.task(u))
                .any(|u| u.wait_for_downstream)
    })
}

/// The note a timed-out run's unfinished tasks get.
fn timeout_note(timeout_ms: u64) -> String {
    format!(
        "skipped: the run exceeded its dagrun_timeout of {}",
        format_duration(std::time::Duration::from_millis(timeout_ms))
    )
}

/// The previous run of the run being judged, read once per pass (`None` inside: there is none).
#[derive(Default)]
pub(crate) struct PastRun(Option<Option<i64>>);

/// States that let the next run's `depends_on_past` instance go.
fn lets_next_run_go(state: Option<&str>) -> bool {
    matches!(state, None | Some("success" | "skipped" | "removed"))
}

impl Store {
    /// Why `task` may not run yet in run `run_pk` because of the previous run, or `None` when
    /// it may: there is no previous run, the task was not in it, or it (and with
    /// `wait_for_downstream` its direct downstream tasks there) succeeded or was skipped.
    pub(crate) async fn past_blocks(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        task: &TaskSpec,
        past: &mut PastRun,
    ) -> Result<Option<String>> {
        let prev = match past.0 {
            Some(p) => p,
            None => {
                let p: Option<i64> = sqlx::query_scalar(
                    "SELECT p.id FROM dag_runs p, dag_runs r WHERE r.id = $1 AND p.dag_id = r.dag_id \
                     AND (p.logical_date < r.logical_date OR (p.logical_date = r.logical_date AND p.id < r.id)) \
                     ORDER BY p.logical_date DESC, p.id DESC LIMIT 1",
                )
                .bind(run_pk)
                .fetch_optional(&mut **tx)
                .await?;
                *past.0.insert(p)
            }
        };
        let Some(prev) = prev else {
            return Ok(None);
        };
        let mut ids = vec![task.task_id.as_str()];
        if task.wait_for_downstream {
            ids.extend(
                spec.downstream_map()
                    .get(&task.task_id)
                    .into_iter()
                    .flatten()
                    .map(String::as_str),
            );
        }
        for id in ids {
            // A mapped task lets the next run go once every instance it still has did.
            let states: Vec<String> = sqlx::query_scalar(
                "SELECT state FROM task_instances WHERE run_pk = $1 AND task_id = $2 AND state <> 'removed'",
            )
            .bind(prev)
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
            let go = if states.is_empty() {
                lets_next_run_go(None)
            } else {
                states.iter().all(|s| lets_next_run_go(Some(s)))
            };
            if !go {
                let what = if id == task.task_id {
                    "depends_on_past".to_string()
                } else {
                    format!("wait_for_downstream of `{}`", task.task_id)
                };
                return Ok(Some(format!(
                    "waiting for the previous run's `{id}` to succeed or be skipped ({what})"
                )));
            }
        }
        Ok(None)
    }

    /// After tasks `ended` of run `run_pk` succeeded or were skipped: judges the DAG's next run
    /// (by logical date) again when one of its `depends_on_past` tasks may have waited for them.
    pub(crate) async fn wake_next_run(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        ended: &[&str],
        now: i64,
    ) -> Result<()> {
        if !awaited_by_next_run(spec, ended) {
            return Ok(());
        }
        let next = sqlx::query(
            "SELECT n.id, n.version_id, n.state FROM dag_runs n, dag_runs r WHERE r.id = $1 AND n.dag_id = r.dag_id \
             AND (n.logical_date > r.logical_date OR (n.logical_date = r.logical_date AND n.id > r.id)) \
             ORDER BY n.logical_date, n.id LIMIT 1",
        )
        .bind(run_pk)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(next) = next else {
            return Ok(());
        };
        let (next_pk, version_id, state): (i64, i64, String) =
            (next.try_get(0)?, next.try_get(1)?, next.try_get(2)?);
        if state != "running" {
            return Ok(());
        }
        self.lock_run(tx, next_pk).await?;
        let next_spec = self.spec(version_id).await?;
        let states = self
            .evaluate(tx, next_pk, &next_spec, None, None, now)
            .await?;
        self.finish_run_if_done(tx, next_pk, &next_spec, states, now)
            .await?;
        Ok(())
    }

    /// Fails every running run older than its DAG version's `dagrun_timeout`. Returns how
    /// many ended.
    pub async fn time_out_runs(&self) -> Result<usize> {
        let now = self.now_ms();
        let rows = sqlx::query(
            "SELECT id, version_id, started_at FROM dag_runs WHERE state = 'running' AND started_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut ended = 0;
        for r in rows {
            let (run_pk, version_id, started): (i64, i64, i64) =
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            let spec = self.spec(version_id).await?;
            let Some(timeout) = spec.dagrun_timeout_ms else {
                continue;
            };
            if started.saturating_add(timeout.min(i64::MAX as u64) as i64) > now {
                continue;
            }
            if self.time_out_run(run_pk, &spec, timeout, now).await? {
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn time_out_run(
        &self,
        run_pk: i64,
        spec: &DagSpec,
        timeout: u64,
        now: i64,
    ) -> Result<bool> {
        let (mut tx, _lock) = self.write_tx().await?;
        self.lock_run(&mut tx, run_pk).await?;
        // Decided under the lock: the run may have ended since it was read.
        let done = sqlx::query(
            "UPDATE dag_runs SET state = 'failed', ended_at = $2 WHERE id = $1 AND state = 'running'",
        )
        .bind(run_pk)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let note = timeout_note(timeout);
        self.end_unfinished_tasks(&mut tx, run_pk, "skipped", "skipped", &note, now)
            .await?;
        self.enqueue_run_notifications(&mut tx, run_pk, spec, true, now)
            .await?;
        self.pause_after_failures(&mut tx, spec).await?;
        self.start_queued_runs(&mut tx, Some(&spec.dag_id), now)
            .await?;
        self.admit(&mut tx, now).await?;
        tx.commit().await?;
        tracing::warn!(dag_id = %spec.dag_id, run_pk, "{note}");
        Ok(true)
    }

    /// Pauses the DAG when its newest `max_consecutive_failed_dag_runs` finished runs all
    /// failed (call once a run of it has failed, in that transaction).
    pub(crate) async fn pause_after_failures(
        &self,
        tx: &mut Transaction<'static, Any>,
        spec: &DagSpec,
    ) -> Result<()> {
        let n = spec.max_consecutive_failed_dag_runs;
        if n == 0 {
            return Ok(());
        }
        let states: Vec<String> = sqlx::query_scalar(
            "SELECT state FROM dag_runs WHERE dag_id = $1 AND state IN ('success', 'failed') \
             ORDER BY logical_date DESC, id DESC LIMIT $2",
        )
        .bind(&spec.dag_id)
        .bind(i64::from(n))
        .fetch_all(&mut **tx)
        .await?;
        if states.len() < n as usize || states.iter().any(|s| s != "failed") {
            return Ok(());
        }
        let paused =
            sqlx::query("UPDATE dags SET is_paused = 1 WHERE dag_id = $1 AND is_paused = 0")
                .bind(&spec.dag_id)
                .execute(&mut **tx)
                .await?;
        if paused.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(self.now_ms())
            .bind("scheduler")
            .bind("dag.pause")
            .bind(&spec.dag_id)
            .bind(format!(
                "paused: its last {n} runs failed (max_consecutive_failed_dag_runs)"
            ))
            .execute(&mut **tx)
            .await?;
            tracing::warn!(
                dag_id = %spec.dag_id,
                "DAG paused: its last {n} runs failed (max_consecutive_failed_dag_runs)"
            );
        }
        Ok(())
    }
}
