//! What one run's life does beyond itself: a run that outlives its DAG's `dagrun_timeout`
//! fails (its unfinished tasks skipped, running ones stopped), and a DAG whose last
//! `max_consecutive_failed_dag_runs` runs all failed is paused — both as Airflow does.
//!
//! A timed-out run ends under the run lock, through the same task-ending step as marking a run
//! failed by hand, so a result from an attempt that was running is refused like any stale one;
//! it notifies `on_failure` and starts the DAG's next queued run like a run that ended by
//! itself.

use sqlx::{Any, Row, Transaction};
use tern_core::{format_duration, DagSpec};

use crate::{Result, Store};

/// The note a timed-out run's unfinished tasks get.
fn timeout_note(timeout_ms: u64) -> String {
    format!(
        "skipped: the run exceeded its dagrun_timeout of {}",
        format_duration(std::time::Duration::from_millis(timeout_ms))
    )
}

impl Store {
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
