//! Read models for the web UI's busiest pages: each DAG's newest runs for the DAG list, and
//! the runs × tasks cells of a DAG's grid, each read in one statement whatever the count.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use tern_core::{RunState, TaskState};

use crate::model::parse_state;
use crate::tasks::IN_FLIGHT_STATES;
use crate::time::from_ms;
use crate::{Result, Store};

/// A run as the DAG list shows it: a dot coloured by state.
#[derive(Debug, Clone, Serialize)]
pub struct RunDot {
    pub run_id: String,
    pub state: RunState,
    pub logical_date: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One cell of the grid: a task instance's state and times.
#[derive(Debug, Clone, Serialize)]
pub struct GridCell {
    #[serde(skip)]
    pub run_pk: i64,
    pub task_id: String,
    pub state: TaskState,
    pub try_number: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The instance's index in a mapped task; -1 when the task is not mapped.
    pub map_index: i64,
}

/// How many task instances of one queue are in one state, and since when the oldest queued.
#[derive(Debug, Clone, Serialize)]
pub struct QueueActivity {
    pub queue: String,
    pub state: TaskState,
    pub count: i64,
    pub oldest_queued_at: Option<DateTime<Utc>>,
}

fn grid_cell(r: &sqlx::any::AnyRow) -> Result<GridCell> {
    Ok(GridCell {
        run_pk: r.try_get(0)?,
        task_id: r.try_get(1)?,
        state: parse_state(&r.try_get::<String, _>(2)?)?,
        try_number: r.try_get::<i64, _>(3)? as u32,
        started_at: r.try_get::<Option<i64>, _>(4)?.map(from_ms),
        ended_at: r.try_get::<Option<i64>, _>(5)?.map(from_ms),
        map_index: r.try_get(6)?,
    })
}

impl Store {
    /// The newest `per_dag` runs of every DAG, newest first, by DAG id.
    pub async fn recent_runs_by_dag(&self, per_dag: i64) -> Result<HashMap<String, Vec<RunDot>>> {
        let rows = sqlx::query(
            "SELECT r.dag_id, r.run_id, r.state, r.logical_date, r.started_at, r.ended_at FROM dags d \
             JOIN dag_runs r ON r.id IN (SELECT x.id FROM dag_runs x WHERE x.dag_id = d.dag_id \
               ORDER BY x.logical_date DESC, x.id DESC LIMIT $1) \
             ORDER BY r.dag_id, r.logical_date DESC, r.id DESC",
        )
        .bind(per_dag)
        .fetch_all(&self.pool)
        .await?;
        let mut out: HashMap<String, Vec<RunDot>> = HashMap::new();
        for r in rows {
            out.entry(r.try_get(0)?).or_default().push(RunDot {
                run_id: r.try_get(1)?,
                state: parse_state(&r.try_get::<String, _>(2)?)?,
                logical_date: from_ms(r.try_get(3)?),
                started_at: r.try_get::<Option<i64>, _>(4)?.map(from_ms),
                ended_at: r.try_get::<Option<i64>, _>(5)?.map(from_ms),
            });
        }
        Ok(out)
    }

    /// The logical date and state of every run of `dag_id` whose logical date is at or after
    /// `since` (the calendar of a DAG's runs).
    pub async fn run_states_since(
        &self,
        dag_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, RunState)>> {
        sqlx::query(
            "SELECT logical_date, state FROM dag_runs WHERE dag_id = $1 AND logical_date >= $2",
        )
        .bind(dag_id)
        .bind(crate::time::to_ms(since))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                from_ms(r.try_get(0)?),
                parse_state(&r.try_get::<String, _>(1)?)?,
            ))
        })
        .collect()
    }

    /// Task instances waiting or running now, by queue: `(queue, state, count, oldest
    /// queued_at)` for the states `scheduled`, `queued`, `running`, `up_for_retry` and
    /// `up_for_reschedule` (the cluster activity page).
    pub async fn activity_by_queue(&self) -> Result<Vec<QueueActivity>> {
        sqlx::query(&format!(
            "SELECT queue, state, COUNT(*), MIN(queued_at) FROM task_instances \
             WHERE state IN {IN_FLIGHT_STATES} GROUP BY queue, state ORDER BY queue, state"
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(QueueActivity {
                queue: r.try_get(0)?,
                state: parse_state(&r.try_get::<String, _>(1)?)?,
                count: r.try_get(2)?,
                oldest_queued_at: r.try_get::<Option<i64>, _>(3)?.map(from_ms),
            })
        })
        .collect()
    }

    /// Where each DAG's next scheduled run starts: the end of its newest scheduled interval.
    pub async fn last_scheduled_interval_ends(&self) -> Result<HashMap<String, DateTime<Utc>>> {
        sqlx::query(
            "SELECT dag_id, MAX(interval_end) FROM dag_runs WHERE run_type = 'scheduled' GROUP BY dag_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, from_ms(r.try_get(1)?))))
        .collect()
    }

    /// The id of the newest audit-log entry (every change by hand is audited).
    async fn newest_audit_entry(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MAX(id) FROM audit_log")
            .fetch_one(&self.pool)
            .await?)
    }

    /// A number that changes whenever the task instances of `run_pks` change state, start,
    /// end or try again, read without reading the instances one by one (an aggregate per
    /// state over the runs' index), together with the newest audit-log entry (every change by
    /// hand is audited): what a live page compares to know whether to send itself again.
    pub async fn activity_fingerprint(&self, run_pks: &[i64]) -> Result<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.newest_audit_entry().await?.hash(&mut h);
        for chunk in run_pks.chunks(200) {
            let sql = format!(
                "SELECT state, COUNT(*), CAST(SUM(try_number) AS BIGINT), MAX(COALESCE(queued_at, 0)), \
                 MAX(COALESCE(started_at, 0)), MAX(COALESCE(ended_at, 0)) FROM task_instances \
                 WHERE {} GROUP BY state ORDER BY state",
                self.backend().in_json_ids("run_pk", 1)
            );
            let ids = serde_json::to_string(chunk)?;
            for r in sqlx::query(&sql).bind(ids).fetch_all(&self.pool).await? {
                r.try_get::<String, _>(0)?.hash(&mut h);
                for i in 1..6 {
                    r.try_get::<Option<i64>, _>(i)?.hash(&mut h);
                }
            }
        }
        Ok(h.finish())
    }

    /// A number that changes as work moves anywhere: the count of task instances in each
    /// active state (`scheduled`, `queued`, `running`, `up_for_retry`; read from the partial
    /// index of instances in flight, so it costs what is active, not what exists; a sensor
    /// waiting for its next poke is not counted) and the newest audit-log entry. It
    /// can miss a change that leaves every count as it was (one task ends as another starts and
    /// a third is queued), which is why a page relying on it also refreshes now and then.
    pub async fn estate_activity(&self) -> Result<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.newest_audit_entry().await?.hash(&mut h);
        for r in sqlx::query(&format!(
            "SELECT state, COUNT(*) FROM task_instances \
             WHERE state IN {IN_FLIGHT_STATES} GROUP BY state ORDER BY state"
        ))
        .fetch_all(&self.pool)
        .await?
        {
            let state: String = r.try_get(0)?;
            if state == TaskState::UpForReschedule.as_str() {
                continue;
            }
            state.hash(&mut h);
            r.try_get::<i64, _>(1)?.hash(&mut h);
        }
        Ok(h.finish())
    }

    /// The task instances of `tasks` in the given runs (one page of a big grid), in no
    /// particular order.
    pub async fn grid_cells_of_tasks(
        &self,
        run_pks: &[i64],
        tasks: &[String],
    ) -> Result<Vec<GridCell>> {
        // One run at a time, so that each lookup is a seek on the (run_pk, task_id) index.
        let mut out = Vec::new();
        for run in run_pks {
            for chunk in tasks.chunks(500) {
                let sql = format!(
                    "SELECT run_pk, task_id, state, try_number, started_at, ended_at, map_index FROM task_instances \
                     WHERE run_pk = $1 AND task_id IN ({})",
                    (2..=chunk.len() + 1).map(|i| format!("${i}")).collect::<Vec<_>>().join(",")
                );
                let mut q = sqlx::query(&sql).bind(*run);
                for t in chunk {
                    q = q.bind(t.as_str());
                }
                for r in q.fetch_all(&self.pool).await? {
                    out.push(grid_cell(&r)?);
                }
            }
        }
        Ok(out)
    }

    /// The task instances of the given runs (grid cells), in no particular order.
    pub async fn grid_cells(&self, run_pks: &[i64]) -> Result<Vec<GridCell>> {
        let mut out = Vec::new();
        for chunk in run_pks.chunks(200) {
            let sql = format!(
                "SELECT run_pk, task_id, state, try_number, started_at, ended_at, map_index FROM task_instances \
                 WHERE {}",
                self.backend().in_json_ids("run_pk", 1)
            );
            let ids = serde_json::to_string(chunk)?;
            for r in sqlx::query(&sql).bind(ids).fetch_all(&self.pool).await? {
                out.push(grid_cell(&r)?);
            }
        }
        Ok(out)
    }
}
