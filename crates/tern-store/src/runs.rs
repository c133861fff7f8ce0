//! DAG runs: creation with their task instances, start under `max_active_runs`, completion,
//! and the read side (listings, details, tries, outputs).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tern_core::{DataInterval, RunState, TaskState};

use crate::model::parse_state;
use crate::time::{from_ms, to_ms};
use crate::{DagRun, NewRun, Result, Store, StoreError, TaskInstance, TaskTry};

pub(crate) const RUN_COLUMNS: &str =
    "id, dag_id, run_id, version_id, run_type, state, logical_date, \
     interval_start, interval_end, conf, params, created_at, started_at, ended_at";

pub(crate) fn run_row(r: &AnyRow) -> Result<DagRun> {
    Ok(DagRun {
        pk: r.try_get("id")?,
        dag_id: r.try_get("dag_id")?,
        run_id: r.try_get("run_id")?,
        version_id: r.try_get("version_id")?,
        run_type: parse_state(&r.try_get::<String, _>("run_type")?)?,
        state: parse_state(&r.try_get::<String, _>("state")?)?,
        logical_date: from_ms(r.try_get("logical_date")?),
        data_interval: DataInterval {
            start: from_ms(r.try_get("interval_start")?),
            end: from_ms(r.try_get("interval_end")?),
        },
        conf: serde_json::from_str(&r.try_get::<String, _>("conf")?)?,
        params: serde_json::from_str(&r.try_get::<String, _>("params")?)?,
        created_at: from_ms(r.try_get("created_at")?),
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(from_ms),
        ended_at: r.try_get::<Option<i64>, _>("ended_at")?.map(from_ms),
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    /// Creates a run and its task instances from DAG version `version_id`. The run starts at
    /// once if `max_active_runs` allows, its root tasks are queued in the same transaction.
    /// Returns the run and whether any task became queued.
    pub async fn create_run(&self, new: &NewRun, version_id: i64) -> Result<(DagRun, bool)> {
        tern_core::ids::check_run_id(&new.run_id)
            .map_err(|e| StoreError::Invalid(format!("run id: {e}")))?;
        let spec = self.spec(version_id).await?;
        let priorities = spec.effective_priorities();
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let pk: i64 = sqlx::query_scalar(
            "INSERT INTO dag_runs (dag_id, run_id, version_id, run_type, state, logical_date, \
             interval_start, interval_end, conf, params, created_at) \
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(&new.dag_id)
        .bind(&new.run_id)
        .bind(version_id)
        .bind(new.run_type.as_str())
        .bind(to_ms(new.logical_date))
        .bind(to_ms(new.data_interval.start))
        .bind(to_ms(new.data_interval.end))
        .bind(new.conf.to_string())
        .bind(new.params.to_string())
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "DAG {:?} already has a run {:?} or a run for logical date {}",
                    new.dag_id, new.run_id, new.logical_date
                ))
            } else {
                e.into()
            }
        })?;
        // Every instance in one statement, however many tasks.
        let rows: Vec<serde_json::Value> = spec
            .tasks
            .iter()
            .map(|t| {
                let priority = priorities
                    .get(&t.task_id)
                    .copied()
                    .unwrap_or(t.priority_weight);
                serde_json::json!([
                    t.task_id,
                    i64::from(t.retries) + 1,
                    t.queue,
                    t.pool,
                    priority
                ])
            })
            .collect();
        let sql = format!(
            "INSERT INTO task_instances (run_pk, dag_id, run_id, task_id, state, max_tries, queue, pool, priority) \
             SELECT $1, $2, $3, j.value ->> 0, 'none', CAST(j.value ->> 1 AS BIGINT), j.value ->> 2, \
             j.value ->> 3, CAST(j.value ->> 4 AS BIGINT) FROM {} ORDER BY j.key",
            self.backend().json_rows(4)
        );
        sqlx::query(&sql)
            .bind(pk)
            .bind(&new.dag_id)
            .bind(&new.run_id)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
        self.start_queued_runs(&mut tx, Some(&new.dag_id), now)
            .await?;
        let queued_any = !self.admit(&mut tx, now).await?.is_empty();
        tx.commit().await?;
        let run = self.get_run_by_pk(pk).await?;
        Ok((run, queued_any))
    }

    /// Moves queued runs to running while their DAG is under `max_active_runs` and not paused,
    /// oldest logical date first, and settles or schedules their root tasks.
    pub(crate) async fn start_queued_runs(
        &self,
        tx: &mut Transaction<'static, Any>,
        dag_id: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let rows = sqlx::query(
            "SELECT r.id, r.dag_id, r.version_id FROM dag_runs r JOIN dags d ON d.dag_id = r.dag_id \
             WHERE r.state = 'queued' AND d.is_paused = 0 AND ($1 = '' OR r.dag_id = $1) \
             ORDER BY r.logical_date, r.id",
        )
        .bind(dag_id.unwrap_or(""))
        .fetch_all(&mut **tx)
        .await?;
        let mut running: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows {
            let pk: i64 = r.try_get(0)?;
            let dag: String = r.try_get(1)?;
            let version_id: i64 = r.try_get(2)?;
            let spec = self.spec(version_id).await?;
            let count = match running.get(&dag) {
                Some(c) => *c,
                None => {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT COUNT(*) FROM dag_runs WHERE dag_id = $1 AND state = 'running'",
                    )
                    .bind(&dag)
                    .fetch_one(&mut **tx)
                    .await?
                }
            };
            if count >= i64::from(spec.max_active_runs) {
                running.insert(dag, count);
                continue;
            }
            sqlx::query("UPDATE dag_runs SET state = 'running', started_at = $2 WHERE id = $1")
                .bind(pk)
                .bind(now)
                .execute(&mut **tx)
                .await?;
            running.insert(dag, count + 1);
            let states = self.evaluate(tx, pk, &spec, None, None, now).await?;
            self.finish_run_if_done(tx, pk, &spec, states, now).await?;
        }
        Ok(())
    }

    /// The end of the newest scheduled interval of a DAG: where the next scheduled run starts.
    pub async fn last_scheduled_interval_end(&self, dag_id: &str) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(interval_end) FROM dag_runs WHERE dag_id = $1 AND run_type = 'scheduled'",
        )
        .bind(dag_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(from_ms))
    }

    /// Runs, newest first, optionally of one DAG and in one state.
    pub async fn list_runs(
        &self,
        dag_id: Option<&str>,
        state: Option<RunState>,
        limit: i64,
    ) -> Result<Vec<DagRun>> {
        // The browse query, which states only the conditions given (so the DAG's index is used).
        self.browse_runs(&crate::browse::BrowseFilter {
            dag_id: dag_id.map(str::to_string),
            state,
            limit,
            ..Default::default()
        })
        .await
    }

    /// What an `external_task_sensor` waits on: the state of `task_id` (or, without one, of
    /// the whole run) in the newest run of `dag_id` for `logical_date`. `None` when there is
    /// no such run (or the run has no such task) yet.
    pub async fn external_state(
        &self,
        dag_id: &str,
        task_id: Option<&str>,
        logical_date: DateTime<Utc>,
    ) -> Result<Option<String>> {
        let state: Option<String> = match task_id {
            Some(task_id) => {
                // Every instance of the task in the newest such run (several for a mapped task).
                let states: Vec<String> = sqlx::query_scalar(
                    "SELECT i.state FROM task_instances i WHERE i.task_id = $3 AND i.state <> 'removed' AND i.run_pk = \
                     (SELECT r.id FROM dag_runs r WHERE r.dag_id = $1 AND r.logical_date = $2 ORDER BY r.id DESC LIMIT 1)",
                )
                .bind(dag_id)
                .bind(to_ms(logical_date))
                .bind(task_id)
                .fetch_all(&self.pool)
                .await?;
                one_state_of(&states)
            }
            None => {
                sqlx::query_scalar(
                    "SELECT state FROM dag_runs WHERE dag_id = $1 AND logical_date = $2 \
                 ORDER BY id DESC LIMIT 1",
                )
                .bind(dag_id)
                .bind(to_ms(logical_date))
                .fetch_optional(&self.pool)
                .await?
            }
        };
        Ok(state)
    }

    pub async fn get_run(&self, dag_id: &str, run_id: &str) -> Result<DagRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE dag_id = $1 AND run_id = $2");
        let row = sqlx::query(&sql)
            .bind(dag_id)
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "DAG {dag_id:?} has no run {run_id:?}; `tern runs list --dag {dag_id}` shows its runs"
                ))
            })?;
        run_row(&row)
    }

    pub async fn get_run_by_pk(&self, pk: i64) -> Result<DagRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM dag_runs WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(pk)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no DAG run with key {pk}")))?;
        run_row(&row)
    }

    /// Every task instance of a run in creation order, a mapped task's instances together by
    /// index.
    pub async fn task_instances(&self, run_pk: i64) -> Result<Vec<TaskInstance>> {
        let sql = format!(
            "SELECT {} FROM task_instances WHERE run_pk = $1 ORDER BY id",
            crate::tasks::TI_COLUMNS
        );
        let mut all: Vec<TaskInstance> = sqlx::query(&sql)
            .bind(run_pk)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(crate::tasks::ti_row)
            .collect::<Result<_>>()?;
        // A mapped task's instances stand together where the task does, by index.
        let mut first: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for t in &all {
            first.entry(t.task_id.clone()).or_insert(t.id);
        }
        all.sort_by_key(|t| (first[&t.task_id], t.map_index));
        Ok(all)
    }

    /// The instance of a task that is not mapped (or of a mapped task with one instance).
    pub async fn task_instance(&self, run_pk: i64, task_id: &str) -> Result<TaskInstance> {
        self.task_instance_at(run_pk, task_id, None).await
    }

    /// Instance `map_index` of a mapped task, or with `None` the task's only instance; a
    /// mapped task with several instances then is an error that says how to name one.
    pub async fn task_instance_at(
        &self,
        run_pk: i64,
        task_id: &str,
        map_index: Option<i64>,
    ) -> Result<TaskInstance> {
        let mut all = self.task_instances_of(run_pk, task_id).await?;
        if all.is_empty() {
            return Err(StoreError::NotFound(format!(
                "the run has no task {task_id:?}"
            )));
        }
        match map_index {
            Some(i) => all
                .into_iter()
                .find(|t| t.map_index == i)
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "task {task_id:?} has no instance with map_index {i} in this run"
                    ))
                }),
            None if all.len() == 1 => Ok(all.remove(0)),
            None => Err(StoreError::Invalid(format!(
                "task {task_id:?} is mapped into {} instances in this run; name one with its map index, 0 to {} (`--map-index N` on the command line, `?map_index=N` in the API)",
                all.len(),
                all.len() - 1
            ))),
        }
    }

    /// Every instance of a task in a run, by map index.
    pub async fn task_instances_of(&self, run_pk: i64, task_id: &str) -> Result<Vec<TaskInstance>> {
        let sql = format!(
            "SELECT {} FROM task_instances WHERE run_pk = $1 AND task_id = $2 ORDER BY map_index",
            crate::tasks::TI_COLUMNS
        );
        sqlx::query(&sql)
            .bind(run_pk)
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(crate::tasks::ti_row)
            .collect()
    }

    /// Every try of a task instance, first try first.
    pub async fn task_tries(&self, ti_id: i64) -> Result<Vec<TaskTry>> {
        sqlx::query(
            "SELECT try_number, state, worker, started_at, ended_at, exit_code, note, log_path \
             FROM task_tries WHERE ti_id = $1 ORDER BY try_number",
        )
        .bind(ti_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(TaskTry {
                try_number: r.try_get::<i64, _>(0)? as u32,
                state: parse_state::<TaskState>(&r.try_get::<String, _>(1)?)?,
                worker: r.try_get(2)?,
                started_at: from_ms(r.try_get(3)?),
                ended_at: r.try_get::<Option<i64>, _>(4)?.map(from_ms),
                exit_code: r.try_get::<Option<i64>, _>(5)?.map(|c| c as i32),
                note: r.try_get(6)?,
                log_path: r.try_get(7)?,
            })
        })
        .collect()
    }

    /// The outputs one task instance published: key → value.
    pub async fn instance_outputs(
        &self,
        ti_id: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut out = serde_json::Map::new();
        for r in sqlx::query("SELECT key, value FROM task_outputs WHERE ti_id = $1")
            .bind(ti_id)
            .fetch_all(&self.pool)
            .await?
        {
            out.insert(
                r.try_get(0)?,
                serde_json::from_str(&r.try_get::<String, _>(1)?)?,
            );
        }
        Ok(out)
    }

    /// Outputs published by the tasks of a run: task id → key → value; for a mapped task, key
    /// → the list of its instances' values in index order (`null` where one published none).
    pub async fn run_outputs(
        &self,
        run_pk: i64,
    ) -> Result<BTreeMap<String, serde_json::Map<String, serde_json::Value>>> {
        let rows = sqlx::query(
            // From the run's outputs (often none) to their instances, never the other way:
            // `CROSS JOIN` keeps SQLite's join order, and a wide run has thousands of instances.
            "SELECT ti.task_id, o.key, o.value, ti.map_index FROM task_outputs o CROSS JOIN task_instances ti \
             WHERE o.run_pk = $1 AND ti.id = o.ti_id AND ti.state <> 'removed'",
        )
        .bind(run_pk)
        .fetch_all(&self.pool)
        .await?;
        let mut out: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = BTreeMap::new();
        for r in rows {
            let value: serde_json::Value = serde_json::from_str(&r.try_get::<String, _>(2)?)?;
            let map_index: i64 = r.try_get(3)?;
            let outputs = out.entry(r.try_get(0)?).or_default();
            let key: String = r.try_get(1)?;
            if map_index < 0 {
                outputs.insert(key, value);
                continue;
            }
            let slot = outputs
                .entry(key)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = slot {
                let at = map_index as usize;
                if list.len() <= at {
                    list.resize(at + 1, serde_json::Value::Null);
                }
                list[at] = value;
            }
        }
        Ok(out)
    }
}

/// The state a sensor sees for a task from its instances' states: the one state of a task that
/// is not mapped; for a mapped task's instances their summary (`tern_core`'s, as the grid
/// shows it), an upstream failure among them reading as `failed`.
fn one_state_of(states: &[String]) -> Option<String> {
    if states.len() <= 1 {
        return states.first().cloned();
    }
    let parsed = states.iter().filter_map(|s| s.parse::<TaskState>().ok());
    Some(match tern_core::state::summary_state(parsed)? {
        TaskState::UpstreamFailed => TaskState::Failed.to_string(),
        s => s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::one_state_of;

    fn of(states: &[&str]) -> Option<String> {
        one_state_of(&states.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn a_mapped_tasks_instances_read_as_one_state() {
        assert_eq!(of(&[]), None);
        assert_eq!(of(&["running"]).as_deref(), Some("running"));
        assert_eq!(
            of(&["success", "running", "success"]).as_deref(),
            Some("running")
        );
        assert_eq!(
            of(&["success", "failed", "running"]).as_deref(),
            Some("failed")
        );
        assert_eq!(of(&["success", "skipped"]).as_deref(), Some("success"));
        assert_eq!(of(&["skipped", "skipped"]).as_deref(), Some("skipped"));
    }
}
