//! Expanding mapped tasks: when a mapped task may run, its lists are read (the run's params,
//! upstream outputs), turned into element sets by `tern_core::mapping`, and written as one
//! task instance per set, in the transaction of the event that made the task ready. Also the
//! read side an assignment needs: the elements of one instance.

use std::collections::BTreeMap;

use sqlx::{Any, Row, Transaction};
use tern_core::{DagSpec, MapSource, TaskSpec, TaskState};

use crate::{Result, Store};

/// What expanding a mapped task did.
pub(crate) enum Expansion {
    /// It has this many instances now, all `scheduled`.
    Instances(usize),
    /// It has no instances to run: settle it in this state with this note (an empty list
    /// skips it; a list over the limit or one that cannot be read fails it).
    Settled(TaskState, String),
}

impl Store {
    /// Expands mapped task `task` of run `run_pk`, whose instances all wait: instance `i` of
    /// the new set takes index `i` (the unexpanded instance, index -1, becomes index 0; an
    /// instance of an earlier expansion keeps its row, tries and logs; one past the new end
    /// becomes `removed`).
    pub(crate) async fn expand(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        task: &TaskSpec,
    ) -> Result<Expansion> {
        let expand = task.expand.as_ref().expect("only mapped tasks expand");
        let mut lists = Vec::with_capacity(expand.keys.len());
        let mut params: Option<serde_json::Value> = None;
        for key in &expand.keys {
            let list = match &key.source {
                MapSource::Values { values } => Some(values.clone()),
                MapSource::Param { name } => {
                    if params.is_none() {
                        let text: String =
                            sqlx::query_scalar("SELECT params FROM dag_runs WHERE id = $1")
                                .bind(run_pk)
                                .fetch_one(&mut **tx)
                                .await?;
                        params = Some(serde_json::from_str(&text)?);
                    }
                    params
                        .as_ref()
                        .and_then(|p| p.get(name))
                        .and_then(tern_core::mapping::as_list)
                }
                MapSource::Output {
                    task: from,
                    key: out,
                } => {
                    let mapped = spec.task(from).is_some_and(|t| t.expand.is_some());
                    self.output_list(tx, run_pk, from, out, mapped).await?
                }
            };
            match list {
                Some(l) => lists.push(l),
                None => {
                    return Ok(Expansion::Settled(
                        TaskState::Failed,
                        format!(
                            "cannot expand `{}`: {} is not a list (or is missing); a mapped task expands over a JSON list",
                            key.name,
                            key.source.describe()
                        ),
                    ))
                }
            }
        }
        let sets = match tern_core::mapping::element_sets(expand, &lists, self.max_map_length) {
            Ok(sets) => sets,
            Err(why) => return Ok(Expansion::Settled(TaskState::Failed, why)),
        };
        if sets.is_empty() {
            return Ok(Expansion::Settled(
                TaskState::Skipped,
                "mapped over an empty list: nothing to run".into(),
            ));
        }
        self.write_instances(tx, run_pk, &task.task_id, &sets)
            .await?;
        Ok(Expansion::Instances(sets.len()))
    }

    /// The list `from.output(key)` stands for: the output itself (a JSON list), or for a
    /// mapped `from` the value of every instance in index order (`null` where one published
    /// none). `None` when it is not a list.
    async fn output_list(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        from: &str,
        key: &str,
        mapped: bool,
    ) -> Result<Option<Vec<serde_json::Value>>> {
        let rows = sqlx::query(
            "SELECT ti.map_index, ti.state, o.value FROM task_instances ti \
             LEFT JOIN task_outputs o ON o.ti_id = ti.id AND o.key = $3 \
             WHERE ti.run_pk = $1 AND ti.task_id = $2 ORDER BY ti.map_index",
        )
        .bind(run_pk)
        .bind(from)
        .bind(key)
        .fetch_all(&mut **tx)
        .await?;
        let mut values = Vec::with_capacity(rows.len());
        for r in rows {
            let map_index: i64 = r.try_get(0)?;
            let state: String = r.try_get(1)?;
            // A mapped task that never expanded (it mapped over nothing) contributes nothing,
            // nor does an instance its last expansion removed.
            if mapped && (map_index < 0 || state == TaskState::Removed.as_str()) {
                continue;
            }
            let v: Option<String> = r.try_get(2)?;
            values.push(match v {
                Some(text) => serde_json::from_str(&text)?,
                None => serde_json::Value::Null,
            });
        }
        if mapped {
            return Ok(Some(values));
        }
        Ok(values.first().and_then(tern_core::mapping::as_list))
    }

    /// Writes the instances of `sets` for `task_id`, reusing the rows of an earlier expansion.
    async fn write_instances(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        task_id: &str,
        sets: &[serde_json::Map<String, serde_json::Value>],
    ) -> Result<()> {
        let existing: BTreeMap<i64, i64> = sqlx::query(
            "SELECT map_index, id FROM task_instances WHERE run_pk = $1 AND task_id = $2",
        )
        .bind(run_pk)
        .bind(task_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_>>()?;
        let Some(template) = existing.values().next().copied() else {
            return Err(crate::StoreError::Corrupt(format!(
                "mapped task {task_id} has no instance in its run"
            )));
        };
        let mut fresh = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            let i = i as i64;
            let values = serde_json::Value::Object(set.clone()).to_string();
            let row = existing
                .get(&i)
                .or_else(|| (i == 0).then(|| existing.get(&-1)).flatten());
            match row {
                Some(id) => {
                    sqlx::query(
                        "UPDATE task_instances SET map_index = $2, map_values = $3, state = 'scheduled', note = NULL \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(i)
                    .bind(values)
                    .execute(&mut **tx)
                    .await?;
                }
                None => fresh.push((i, values)),
            }
        }
        let past_end: Vec<i64> = existing
            .iter()
            .filter(|(i, _)| **i >= sets.len() as i64)
            .map(|(_, id)| *id)
            .collect();
        for id in past_end {
            sqlx::query(
                "UPDATE task_instances SET state = 'removed', note = 'no element at this index since the list changed' \
                 WHERE id = $1",
            )
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        if !fresh.is_empty() {
            // The new instances in one statement, however many (see `Backend::json_rows`).
            let rows: Vec<serde_json::Value> = fresh
                .iter()
                .map(|(i, values)| serde_json::json!([i, values]))
                .collect();
            let sql = format!(
                "INSERT INTO task_instances (run_pk, dag_id, run_id, task_id, state, max_tries, queue, pool, priority, map_index, map_values) \
                 SELECT t.run_pk, t.dag_id, t.run_id, t.task_id, 'scheduled', t.max_tries, t.queue, t.pool, t.priority, \
                 CAST(j.value ->> 0 AS BIGINT), j.value ->> 1 \
                 FROM task_instances t, {} WHERE t.id = $1 ORDER BY j.key",
                self.backend().json_rows(2)
            );
            sqlx::query(&sql)
                .bind(template)
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The elements instance `ti_id` was expanded with (key → element); empty for an
    /// instance of a task that is not mapped.
    pub async fn map_values(
        &self,
        ti_id: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT map_values FROM task_instances WHERE id = $1")
                .bind(ti_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        Ok(match text {
            Some(t) => match serde_json::from_str(&t)? {
                serde_json::Value::Object(m) => m,
                _ => Default::default(),
            },
            None => Default::default(),
        })
    }
}
