//! What operators do to runs and task instances by hand: clear tasks (optionally with their
//! downstream or upstream tasks) so they run again, mark a task or a whole run success or
//! failed, and delete a run.
//!
//! Every action takes the current attempt token away from the instances it touches, so a
//! result from an attempt that was running at the time is recorded on its try and changes
//! nothing else (the invariant of [`crate::tasks`]).

use std::collections::{BTreeSet, HashSet};

use sqlx::{Any, Transaction};
use tern_core::{DagSpec, RunState, TaskState};

use crate::{Result, Store, StoreError};

/// Which tasks around the named ones a clear also takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClearScope {
    pub downstream: bool,
    pub upstream: bool,
    /// Only this instance of the named (mapped) tasks; the tasks a scope adds are cleared
    /// whole. `None`: every instance (a mapped task then expands again).
    pub map_index: Option<i64>,
}

impl Store {
    /// Clears `task_ids` of a run (and their downstream/upstream tasks when asked): they go back
    /// to `none`, get their retries again and run once their upstream tasks allow; a finished
    /// run becomes `running` again. Returns the task ids cleared, in DAG order.
    pub async fn clear_tasks(
        &self,
        run_pk: i64,
        task_ids: &[String],
        scope: ClearScope,
    ) -> Result<Vec<String>> {
        let now = self.now_ms();
        let (mut tx, _lock) = self.write_tx().await?;
        self.lock_run(&mut tx, run_pk).await?;
        let spec = self.spec_of_run(&mut tx, run_pk).await?;
        let chosen = expand(&spec, task_ids, scope)?;
        let named: HashSet<&str> = task_ids.iter().map(String::as_str).collect();
        for task in spec.tasks.iter().filter(|t| chosen.contains(&t.task_id)) {
            let wanted = scope
                .map_index
                .filter(|_| named.contains(task.task_id.as_str()));
            let only = self
                .instance_filter(&mut tx, run_pk, &task.task_id, wanted)
                .await?;
            // A try running now ends here: its attempt loses its token below, so nothing it
            // reports later is taken.
            sqlx::query(
                "UPDATE task_tries SET state = 'failed', ended_at = $3, note = 'cleared by an operator while it ran' \
                 WHERE ended_at IS NULL AND ti_id IN (SELECT id FROM task_instances WHERE run_pk = $1 AND task_id = $2 \
                 AND ($4 = -2 OR map_index = $4))",
            )
            .bind(run_pk)
            .bind(&task.task_id)
            .bind(now)
            .bind(only)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE task_instances SET state = 'none', note = NULL, ready_at = NULL, queued_at = NULL, \
                 started_at = NULL, ended_at = NULL, attempt = NULL, worker = NULL, lease_until = NULL, \
                 sensor_since = NULL, max_tries = try_number + $3 WHERE run_pk = $1 AND task_id = $2 \
                 AND ($4 = -2 OR map_index = $4)",
            )
            .bind(run_pk)
            .bind(&task.task_id)
            .bind(i64::from(task.retries) + 1)
            .bind(only)
            .execute(&mut *tx)
            .await?;
        }
        self.judge_again(&mut tx, run_pk, &spec, None, now).await?;
        self.admit(&mut tx, now).await?;
        tx.commit().await?;
        Ok(spec
            .tasks
            .iter()
            .filter(|t| chosen.contains(&t.task_id))
            .map(|t| t.task_id.clone())
            .collect())
    }

    /// Sets one task instance to `success` or `failed` by hand (`note` says who did it): its
    /// downstream tasks follow their trigger rules and the run ends when nothing is left; a
    /// finished run takes the state its tasks now give it.
    pub async fn mark_task(
        &self,
        run_pk: i64,
        task_id: &str,
        map_index: Option<i64>,
        state: TaskState,
        note: &str,
    ) -> Result<()> {
        if !matches!(state, TaskState::Success | TaskState::Failed) {
            return Err(StoreError::Invalid(format!(
                "a task can be marked success or failed, not {}",
                state.as_str()
            )));
        }
        let now = self.now_ms();
        let (mut tx, _lock) = self.write_tx().await?;
        self.lock_run(&mut tx, run_pk).await?;
        let spec = self.spec_of_run(&mut tx, run_pk).await?;
        if spec.task(task_id).is_none() {
            return Err(StoreError::NotFound(format!(
                "DAG {:?} has no task {task_id:?}",
                spec.dag_id
            )));
        }
        let only = self
            .instance_filter(&mut tx, run_pk, task_id, map_index)
            .await?;
        sqlx::query(
            "UPDATE task_instances SET state = $3, note = $4, ended_at = $5, ready_at = NULL, attempt = NULL, \
             lease_until = NULL, sensor_since = NULL WHERE run_pk = $1 AND task_id = $2 \
             AND ($6 = -2 OR map_index = $6) AND state <> 'removed'",
        )
        .bind(run_pk)
        .bind(task_id)
        .bind(state.as_str())
        .bind(note)
        .bind(now)
        .bind(only)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE task_tries SET state = $2, ended_at = $3, note = $4 WHERE ti_id IN \
             (SELECT id FROM task_instances WHERE run_pk = $1 AND task_id = $5 AND ($6 = -2 OR map_index = $6)) \
             AND ended_at IS NULL",
        )
        .bind(run_pk)
        .bind(state.as_str())
        .bind(now)
        .bind(note)
        .bind(task_id)
        .bind(only)
        .execute(&mut *tx)
        .await?;
        self.judge_again(&mut tx, run_pk, &spec, Some(&[task_id]), now)
            .await?;
        if state == TaskState::Success {
            self.wake_next_run(&mut tx, run_pk, &spec, &[task_id], now)
                .await?;
        }
        self.admit(&mut tx, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The `$N = -2 OR map_index = $N` filter value of an action on `task_id`'s instances:
    /// `-2` (no index has it) for every instance, else the index, refused when the task has no
    /// instance there (or one its last expansion removed).
    async fn instance_filter(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        task_id: &str,
        map_index: Option<i64>,
    ) -> Result<i64> {
        let Some(map_index) = map_index else {
            return Ok(-2);
        };
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM task_instances WHERE run_pk = $1 AND task_id = $2 AND map_index = $3 AND state <> 'removed'",
        )
        .bind(run_pk)
        .bind(task_id)
        .bind(map_index)
        .fetch_one(&mut **tx)
        .await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "task {task_id:?} has no instance with map_index {map_index} in this run"
            )));
        }
        Ok(map_index)
    }

    /// Ends a run by hand as `success` or `failed`. Its unfinished task instances end too:
    /// all of them `success` when marking success; when marking failed, running and queued
    /// ones `failed` and those that had not started `skipped` (as Airflow does).
    pub async fn mark_run(&self, run_pk: i64, state: RunState, note: &str) -> Result<()> {
        let (running, waiting) = match state {
            RunState::Success => ("success", "success"),
            RunState::Failed => ("failed", "skipped"),
            other => {
                return Err(StoreError::Invalid(format!(
                    "a run can be marked success or failed, not {}",
                    other.as_str()
                )))
            }
        };
        let now = self.now_ms();
        let (mut tx, _lock) = self.write_tx().await?;
        self.lock_run(&mut tx, run_pk).await?;
        let dag_id: String = sqlx::query_scalar("SELECT dag_id FROM dag_runs WHERE id = $1")
            .bind(run_pk)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no DAG run with key {run_pk}")))?;
        self.end_unfinished_tasks(&mut tx, run_pk, running, waiting, note, now)
            .await?;
        let was: String = sqlx::query_scalar("SELECT state FROM dag_runs WHERE id = $1")
            .bind(run_pk)
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("UPDATE dag_runs SET state = $2, ended_at = $3, started_at = COALESCE(started_at, $3) WHERE id = $1")
            .bind(run_pk)
            .bind(state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if was == "running" || was == "queued" {
            self.start_queued_runs(&mut tx, Some(&dag_id), now).await?;
        }
        self.admit(&mut tx, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends every unfinished task instance of a run: those that started (running, queued, up
    /// for retry or reschedule) become `running_to`, those that had not `waiting_to`, each with
    /// `note`; their attempts end, so an agent still running one learns at its next heartbeat
    /// that it is no longer current and stops it, and its result is refused.
    pub(crate) async fn end_unfinished_tasks(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        running_to: &str,
        waiting_to: &str,
        note: &str,
        now: i64,
    ) -> Result<()> {
        for (from, to) in [
            (
                "('running', 'queued', 'up_for_retry', 'up_for_reschedule')",
                running_to,
            ),
            ("('none', 'scheduled')", waiting_to),
        ] {
            let sql = format!(
                "UPDATE task_instances SET state = $2, note = $3, ended_at = $4, ready_at = NULL, attempt = NULL, \
                 lease_until = NULL, sensor_since = NULL WHERE run_pk = $1 AND state IN {from}"
            );
            sqlx::query(&sql)
                .bind(run_pk)
                .bind(to)
                .bind(note)
                .bind(now)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(
            "UPDATE task_tries SET state = $2, ended_at = $3, note = $4 WHERE ended_at IS NULL AND ti_id IN \
             (SELECT id FROM task_instances WHERE run_pk = $1)",
        )
        .bind(run_pk)
        .bind(running_to)
        .bind(now)
        .bind(note)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Deletes a DAG's metadata: its runs with their task instances, tries and outputs, its
    /// versions, backfills and notifications. A DAG with a run queued or running is refused
    /// (mark or delete those runs first). If its file still declares it, the next scan of the
    /// DAG folder brings it back as a new DAG, as in Airflow.
    pub async fn delete_dag(&self, dag_id: &str) -> Result<()> {
        let (mut tx, _lock) = self.write_tx().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT dag_id FROM dags WHERE dag_id = $1")
                .bind(dag_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("no DAG with id {dag_id:?}")));
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dag_runs WHERE dag_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(dag_id)
        .fetch_one(&mut *tx)
        .await?;
        if active > 0 {
            return Err(StoreError::Conflict(format!(
                "DAG {dag_id:?} has {active} run(s) queued or running; mark them (`tern runs mark`) or delete them first"
            )));
        }
        for sql in [
            "DELETE FROM task_outputs WHERE ti_id IN (SELECT id FROM task_instances WHERE dag_id = $1)",
            "DELETE FROM task_tries WHERE ti_id IN (SELECT id FROM task_instances WHERE dag_id = $1)",
            "DELETE FROM task_instances WHERE dag_id = $1",
            "DELETE FROM dag_runs WHERE dag_id = $1",
            "DELETE FROM notifications WHERE dag_id = $1",
            "DELETE FROM backfills WHERE dag_id = $1",
            "DELETE FROM dags WHERE dag_id = $1",
            "DELETE FROM dag_versions WHERE dag_id = $1",
        ] {
            sqlx::query(sql).bind(dag_id).execute(&mut *tx).await?;
        }
        // Its file, if still there, declares it again at the next load: that load must not be
        // skipped as unchanged.
        sqlx::query(crate::dags::FORGET_LOADED_FOLDER)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a run with its task instances, tries and outputs (log files stay where they are).
    pub async fn delete_run(&self, run_pk: i64) -> Result<()> {
        let now = self.now_ms();
        let (mut tx, _lock) = self.write_tx().await?;
        self.lock_run(&mut tx, run_pk).await?;
        let dag_id: String = sqlx::query_scalar("SELECT dag_id FROM dag_runs WHERE id = $1")
            .bind(run_pk)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no DAG run with key {run_pk}")))?;
        for sql in [
            "DELETE FROM task_outputs WHERE run_pk = $1",
            "DELETE FROM task_tries WHERE ti_id IN (SELECT id FROM task_instances WHERE run_pk = $1)",
            "DELETE FROM task_instances WHERE run_pk = $1",
            "DELETE FROM dag_runs WHERE id = $1",
        ] {
            sqlx::query(sql).bind(run_pk).execute(&mut *tx).await?;
        }
        self.start_queued_runs(&mut tx, Some(&dag_id), now).await?;
        self.admit(&mut tx, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reopens a finished run and applies trigger rules (to everything, or downstream of
    /// `seeds`); the run ends again at once if its tasks say so.
    async fn judge_again(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        seeds: Option<&[&str]>,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE dag_runs SET state = 'running', ended_at = NULL WHERE id = $1 AND state IN ('success', 'failed')",
        )
        .bind(run_pk)
        .execute(&mut **tx)
        .await?;
        let states = self.evaluate(tx, run_pk, spec, seeds, None, now).await?;
        self.finish_run_if_done(tx, run_pk, spec, states, now)
            .await?;
        Ok(())
    }

    async fn spec_of_run(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
    ) -> Result<std::sync::Arc<DagSpec>> {
        let version_id: i64 = sqlx::query_scalar("SELECT version_id FROM dag_runs WHERE id = $1")
            .bind(run_pk)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no DAG run with key {run_pk}")))?;
        self.spec(version_id).await
    }
}

/// The named tasks plus, when asked, everything downstream and/or upstream of them.
fn expand(spec: &DagSpec, task_ids: &[String], scope: ClearScope) -> Result<HashSet<String>> {
    let known: HashSet<&str> = spec.tasks.iter().map(|t| t.task_id.as_str()).collect();
    let unknown: BTreeSet<&str> = task_ids
        .iter()
        .map(String::as_str)
        .filter(|t| !known.contains(t))
        .collect();
    if !unknown.is_empty() {
        return Err(StoreError::NotFound(format!(
            "DAG {:?} has no task {}",
            spec.dag_id,
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut chosen: HashSet<String> = task_ids.iter().cloned().collect();
    let walk = |start: &HashSet<String>, next: &dyn Fn(&str) -> Vec<String>| {
        let mut seen = HashSet::new();
        let mut stack: Vec<String> = start.iter().cloned().collect();
        while let Some(t) = stack.pop() {
            for n in next(&t) {
                if seen.insert(n.clone()) {
                    stack.push(n);
                }
            }
        }
        seen
    };
    let named = chosen.clone();
    if scope.downstream {
        let down = spec.downstream_map();
        chosen.extend(walk(&named, &|t| {
            down.get(t)
                .map(|d| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }));
    }
    if scope.upstream {
        chosen.extend(walk(&named, &|t| {
            spec.task(t).map(|t| t.upstream.clone()).unwrap_or_default()
        }));
    }
    // As in Airflow, clearing work clears the setups it depends on and their teardowns, so the
    // work runs again with what it needs and is cleaned up after.
    let work: HashSet<String> = chosen
        .iter()
        .filter(|t| spec.task(t).is_some_and(|t| !t.setup && !t.teardown))
        .cloned()
        .collect();
    if !work.is_empty() {
        let ancestors = walk(&work, &|t| {
            spec.task(t).map(|t| t.upstream.clone()).unwrap_or_default()
        });
        let setups: HashSet<String> = ancestors
            .into_iter()
            .filter(|t| spec.task(t).is_some_and(|t| t.setup))
            .collect();
        let down = spec.downstream_map();
        let teardowns: Vec<String> = walk(&setups, &|t| {
            down.get(t)
                .map(|d| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        })
        .into_iter()
        .filter(|t| spec.task(t).is_some_and(|t| t.teardown))
        .collect();
        chosen.extend(setups);
        chosen.extend(teardowns);
    }
    Ok(chosen)
}
