//! The task-instance state machine: readiness by trigger rule, admission to queues under pools
//! and concurrency limits, atomic claims with leases and attempt tokens, heartbeats, results,
//! retries, lost attempts, and run completion.
//!
//! Architecture invariant: only the holder of the current attempt token can change a running
//! instance; a result quoting an old token is recorded on its try and changes nothing else.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::RngCore;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tern_core::trigger::{evaluate, Readiness};
use tern_core::{DagSpec, RunStates, Skips, TaskKind, TaskState, UpstreamSummary};

use crate::model::parse_state;
use crate::time::from_ms;
use crate::{Claimed, Result, Store, TaskInstance};

pub(crate) const TI_COLUMNS: &str =
    "id, run_pk, dag_id, run_id, task_id, state, try_number, max_tries, queue, pool, \
     priority, ready_at, queued_at, started_at, ended_at, attempt, worker, note, map_index";

const ACTIVE_STATES: &str = "('queued', 'running')";
/// The states of an instance in flight (its run is not over): word for word the condition of
/// the partial index `ti_in_flight` (migration 0019), as SQLite uses a partial index only for a
/// query whose condition matches it.
pub(crate) const IN_FLIGHT_STATES: &str =
    "('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule')";

/// The states that let a waiting task be decided before all its upstream tasks are done:
/// word for word the condition of the partial index `ti_decided_early` (migration 0020).
const DECIDED_EARLY_STATES: &str = "('failed', 'upstream_failed', 'skipped')";

pub(crate) fn ti_row(r: &AnyRow) -> Result<TaskInstance> {
    let opt_time =
        |name: &str| -> Result<_> { Ok(r.try_get::<Option<i64>, _>(name)?.map(from_ms)) };
    Ok(TaskInstance {
        id: r.try_get("id")?,
        run_pk: r.try_get("run_pk")?,
        dag_id: r.try_get("dag_id")?,
        run_id: r.try_get("run_id")?,
        task_id: r.try_get("task_id")?,
        state: parse_state(&r.try_get::<String, _>("state")?)?,
        try_number: r.try_get::<i64, _>("try_number")? as u32,
        max_tries: r.try_get::<i64, _>("max_tries")? as u32,
        queue: r.try_get("queue")?,
        pool: r.try_get("pool")?,
        priority: r.try_get("priority")?,
        ready_at: opt_time("ready_at")?,
        queued_at: opt_time("queued_at")?,
        started_at: opt_time("started_at")?,
        ended_at: opt_time("ended_at")?,
        attempt: r.try_get("attempt")?,
        worker: r.try_get("worker")?,
        note: r.try_get("note")?,
        map_index: r.try_get("map_index")?,
    })
}

fn new_attempt_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// `$first, $first+1, …` placeholders for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row when anything is queued on `n` queues named by the parameters from `$first` on.
fn queued_probe(first: usize, n: usize) -> String {
    format!(
        "SELECT id FROM task_instances WHERE state = 'queued' AND queue IN ({}) LIMIT 1",
        placeholders(first, n)
    )
}

/// A path segment for an id that no other id shares (percent-encoding of everything but
/// letters, digits and `-_.+`): runs `a:b` and `a_b` never share a log.
fn path_segment(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Applies `set` (an SQL `SET` list; with `now`, `$2` in it is bound to it) to the instances of
/// run `run_pk` named in `task_ids` that have not started (all of a task's instances, or the
/// ones of a mapped task cleared one by one), in one statement.
async fn set_tasks(
    tx: &mut Transaction<'static, Any>,
    backend: crate::Backend,
    run_pk: i64,
    task_ids: &[&str],
    set: &str,
    now: Option<i64>,
) -> Result<()> {
    if task_ids.is_empty() {
        return Ok(());
    }
    let ids_param = 2 + usize::from(now.is_some());
    let sql = format!(
        "UPDATE task_instances SET {set} WHERE run_pk = $1 AND state = 'none' AND task_id IN ({})",
        backend.json_texts(ids_param)
    );
    let mut q = sqlx::query(&sql).bind(run_pk);
    if let Some(now) = now {
        q = q.bind(now);
    }
    q.bind(serde_json::to_string(task_ids)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Adds a decision's skipped tasks to `forced` (a task keeps the first note it got) and to the
/// tasks the pass looks at.
fn force_skips<'s>(
    spec: &'s DagSpec,
    forced: &mut HashMap<&'s str, String>,
    candidates: &mut HashSet<&'s str>,
    decided: &Skips,
) {
    for t in &decided.tasks {
        if let Some(t) = spec.task(t) {
            forced
                .entry(t.task_id.as_str())
                .or_insert_with(|| decided.note.clone());
            candidates.insert(t.task_id.as_str());
        }
    }
}

/// The tasks directly downstream of `seeds` (the tasks whose result is being applied) when
/// each is a join: a task with an upstream task outside the seeds. `None` when there are none,
/// or when one is a chain's next task (all its upstream tasks among the seeds): it may run now,
/// so the full pass looks at it without probes first.
fn joins_downstream_of<'a>(
    spec: &'a DagSpec,
    down: &HashMap<String, Vec<String>>,
    seeds: &[&str],
) -> Option<Vec<&'a tern_core::TaskSpec>> {
    let tasks: Vec<&tern_core::TaskSpec> = seeds
        .iter()
        .flat_map(|s| down.get(*s).into_iter().flatten())
        .filter_map(|id| spec.task(id))
        .collect();
    let joins = !tasks.is_empty()
        && tasks
            .iter()
            .all(|t| t.upstream.iter().any(|u| !seeds.contains(&u.as_str())));
    joins.then_some(tasks)
}

impl Store {
    /// Applies trigger rules to the not-yet-started tasks of a run: tasks that may run become
    /// `scheduled`, tasks that never will are settled (`skipped` / `upstream_failed`) and their
    /// own downstream tasks are looked at in the same pass. With `seeds`, only tasks downstream of
    /// those are considered (the event path); without, every task is (run start, clear).
    /// `skips` (a branch's or short circuit's decision) are skipped first, if they have not
    /// started. Returns the states of all task instances of the run after the pass, or `None`
    /// when the seeds have no downstream task and nothing had to be read.
    pub(crate) async fn evaluate(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        seeds: Option<&[&str]>,
        skips: Option<&Skips>,
        now: i64,
    ) -> Result<Option<RunStates>> {
        let down = spec.downstream_map();
        if let (Some(seeds), None) = (seeds, skips) {
            if seeds
                .iter()
                .all(|s| down.get(*s).is_none_or(|d| d.is_empty()))
            {
                return Ok(None);
            }
            if let Some(joins) = joins_downstream_of(spec, down, seeds) {
                if self.joins_still_wait(tx, run_pk, &joins).await?
                    || self.joins_decided(tx, run_pk, &joins).await?
                {
                    return Ok(None);
                }
            }
        }
        let mut states = self.run_states(tx, run_pk).await?;
        let mut candidates: HashSet<&str> = match seeds {
            None => spec.tasks.iter().map(|t| t.task_id.as_str()).collect(),
            Some(seeds) => seeds
                .iter()
                .flat_map(|s| down.get(*s).into_iter().flatten().map(String::as_str))
                .collect(),
        };
        // Tasks a decision skips, with the note they get.
        let mut forced: HashMap<&str, String> = HashMap::new();
        if let Some(skips) = skips {
            force_skips(spec, &mut forced, &mut candidates, skips);
        }
        let mut run_facts: Option<(tern_core::RunType, chrono::DateTime<chrono::Utc>)> = None;
        let mut to_schedule: Vec<&str> = Vec::new();
        // `empty` and `latest_only` tasks that may run are done here, as Airflow's scheduler
        // does with `EmptyOperator`: no pool slot, no agent, no process.
        let mut done_here: Vec<&str> = Vec::new();
        let mut settled: Vec<(&str, TaskState, String)> = Vec::new();
        // Tasks that may run but wait for the previous run (`depends_on_past`), with why.
        let mut blocked: Vec<(&str, String)> = Vec::new();
        let mut past = crate::across_runs::PastRun::default();
        // Tasks are in topological order, so one pass sees a task after everything upstream.
        for task in &spec.tasks {
            let id = task.task_id.as_str();
            if !candidates.contains(id) || !states.waiting(id) {
                continue;
            }
            let readiness = if forced.contains_key(id) {
                Readiness::Skip
            } else {
                let summary = UpstreamSummary::from_upstream(task.upstream.iter().flat_map(|u| {
                    let setup = spec.task(u).is_some_and(|t| t.setup);
                    states.for_rules(u).map(move |st| (st, setup))
                }));
                evaluate(task.trigger_rule, summary)
            };
            if readiness == Readiness::Run && task.depends_on_past {
                if let Some(why) = self.past_blocks(tx, run_pk, spec, task, &mut past).await? {
                    blocked.push((id, why));
                    continue;
                }
            }
            match readiness {
                Readiness::Wait => {}
                Readiness::Run if task.done_by_scheduler() => {
                    done_here.push(id);
                    states.settle_waiting(id, TaskState::Success);
                    candidates.extend(down.get(id).into_iter().flatten().map(String::as_str));
                    if matches!(task.kind, TaskKind::LatestOnly) {
                        let (run_type, interval_end) = match run_facts {
                            Some(f) => f,
                            None => *run_facts.insert(self.run_facts(tx, run_pk).await?),
                        };
                        if !spec.is_latest_run(run_type, interval_end, crate::time::from_ms(now)) {
                            force_skips(
                                spec,
                                &mut forced,
                                &mut candidates,
                                &spec.latest_only_skips(id),
                            );
                        }
                    }
                }
                // A mapped task whose instances all wait expands now (again, after a clear of
                // the whole task), over lists that may only exist since its upstream ran.
                Readiness::Run if task.expand.is_some() && states.all_waiting(id) => {
                    match self.expand(tx, run_pk, spec, task).await? {
                        crate::mapping::Expansion::Instances(n) => {
                            states.replace(id, n, TaskState::Scheduled)
                        }
                        crate::mapping::Expansion::Settled(st, note) => {
                            settled.push((id, st, note));
                            states.settle_waiting(id, st);
                            candidates
                                .extend(down.get(id).into_iter().flatten().map(String::as_str));
                        }
                    }
                }
                Readiness::Run => {
                    to_schedule.push(id);
                    states.settle_waiting(id, TaskState::Scheduled);
                }
                r @ (Readiness::Skip | Readiness::UpstreamFailed) => {
                    let st = r.settled_state().expect("skip and upstream_failed settle");
                    let note = match (forced.get(id), st) {
                        (Some(why), _) => why.clone(),
                        (None, TaskState::UpstreamFailed) => "an upstream task failed".into(),
                        (None, _) => "skipped by its trigger rule".into(),
                    };
                    settled.push((id, st, note));
                    states.settle_waiting(id, st);
                    candidates.extend(down.get(id).into_iter().flatten().map(String::as_str));
                }
            }
        }
        if !to_schedule.is_empty()
            && done_here.is_empty()
            && settled.is_empty()
            && !states.any_waiting()
        {
            // Everything of the run that had not started may run now (a wide fan-out's root
            // ended): one statement that names no task.
            sqlx::query(
                "UPDATE task_instances SET state = 'scheduled', note = NULL WHERE run_pk = $1 AND state = 'none'",
            )
            .bind(run_pk)
            .execute(&mut **tx)
            .await?;
        } else {
            set_tasks(
                tx,
                self.backend(),
                run_pk,
                &to_schedule,
                "state = 'scheduled', note = NULL",
                None,
            )
            .await?;
        }
        set_tasks(
            tx,
            self.backend(),
            run_pk,
            &done_here,
            "state = 'success', started_at = $2, ended_at = $2, note = NULL",
            Some(now),
        )
        .await?;
        for (id, st, note) in &settled {
            sqlx::query("UPDATE task_instances SET state = $3, ended_at = $4, note = $5 WHERE run_pk = $1 AND task_id = $2 AND state = 'none'")
                .bind(run_pk)
                .bind(*id)
                .bind(st.as_str())
                .bind(now)
                .bind(note)
                .execute(&mut **tx)
                .await?;
        }
        for (id, why) in blocked {
            sqlx::query("UPDATE task_instances SET note = $3 WHERE run_pk = $1 AND task_id = $2 AND state = 'none'")
                .bind(run_pk)
                .bind(id)
                .bind(why)
                .execute(&mut **tx)
                .await?;
        }
        // Tasks that ended here may be what the next run's `depends_on_past` tasks wait for.
        let ended: Vec<&str> = done_here
            .iter()
            .copied()
            .chain(
                settled
                    .iter()
                    .filter(|(_, st, _)| *st == TaskState::Skipped)
                    .map(|(id, _, _)| *id),
            )
            .collect();
        Box::pin(self.wake_next_run(tx, run_pk, spec, &ended, now)).await?;
        Ok(Some(states))
    }

    /// Whether the joins downstream of a result (see [`joins_downstream_of`]) are sure to keep
    /// waiting, known without reading the run's states (a wide join would otherwise read them
    /// all at each of its upstream tasks' results: quadratic in its width). Sure when each has
    /// a rule that waits while an upstream task is not done, unless one failed or was skipped
    /// (`TriggerRule::waits_while_an_upstream_runs`: `all_success`, `all_done`, `none_failed`
    /// and others), no instance of the run failed, had an upstream failure or was
    /// skipped (one probe of `ti_decided_early`), and each has an upstream task among the
    /// first instances of the run still in flight. False means "not sure": the full pass
    /// decides.
    async fn joins_still_wait(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        joins: &[&tern_core::TaskSpec],
    ) -> Result<bool> {
        /// In-flight instances looked at: a join has one of its upstream tasks among them
        /// until its last ones end.
        const SAMPLE: usize = 64;
        if joins
            .iter()
            .any(|t| !t.trigger_rule.waits_while_an_upstream_runs())
            || self
                .run_has_instance_in(tx, run_pk, DECIDED_EARLY_STATES, None)
                .await?
        {
            return Ok(false);
        }
        let in_flight: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT task_id FROM task_instances WHERE run_pk = $1 \
             AND state IN {IN_FLIGHT_STATES} LIMIT {SAMPLE}"
        ))
        .bind(run_pk)
        .fetch_all(&mut **tx)
        .await?;
        let in_flight: HashSet<&str> = in_flight.iter().map(String::as_str).collect();
        Ok(joins
            .iter()
            .all(|t| t.upstream.iter().any(|u| in_flight.contains(u.as_str()))))
    }

    /// Whether the joins downstream of a result are all decided already (no instance of them
    /// is still to start): a `one_success` join after its first success, any join a failure
    /// settled. The full pass would only read the run to leave them as they are (quadratic in
    /// a wide join's width, as above). One probe.
    async fn joins_decided(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        joins: &[&tern_core::TaskSpec],
    ) -> Result<bool> {
        let ids: Vec<&str> = joins.iter().map(|t| t.task_id.as_str()).collect();
        let waiting = self
            .run_has_instance_in(tx, run_pk, "('none')", Some(&ids))
            .await?;
        Ok(!waiting)
    }

    /// Whether some instance of the run (of one of `tasks`, if given) is in one of `states` (a
    /// parenthesised list; one matching a partial index's condition makes the probe read only
    /// that index).
    async fn run_has_instance_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        states: &str,
        tasks: Option<&[&str]>,
    ) -> Result<bool> {
        let of_tasks = match tasks {
            Some(_) => format!(" AND {}", self.backend().in_json_texts("task_id", 2)),
            None => String::new(),
        };
        let query = format!(
            "SELECT id FROM task_instances WHERE run_pk = $1 AND state IN {states}{of_tasks} LIMIT 1"
        );
        let mut probe = sqlx::query_scalar::<_, i64>(&query).bind(run_pk);
        if let Some(tasks) = tasks {
            probe = probe.bind(serde_json::to_string(tasks)?);
        }
        Ok(probe.fetch_optional(&mut **tx).await?.is_some())
    }

    /// A run's type and data-interval end (what `latest_only` decides by).
    async fn run_facts(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
    ) -> Result<(tern_core::RunType, chrono::DateTime<chrono::Utc>)> {
        let row = sqlx::query("SELECT run_type, interval_end FROM dag_runs WHERE id = $1")
            .bind(run_pk)
            .fetch_one(&mut **tx)
            .await?;
        let run_type: String = row.try_get(0)?;
        let run_type = run_type
            .parse::<tern_core::RunType>()
            .map_err(crate::StoreError::Corrupt)?;
        Ok((run_type, from_ms(row.try_get(1)?)))
    }

    /// The states of every task instance of a run, by task.
    pub(crate) async fn run_states(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
    ) -> Result<RunStates> {
        self.run_state_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // One row holding them all: a run of 10,000 instances read row by row cost ~30 ms in
        // row decoding alone.
        let sql = format!(
            "SELECT {} FROM task_instances WHERE run_pk = $1",
            self.backend().json_agg_arrays("task_id, state")
        );
        let json: String = sqlx::query_scalar(&sql)
            .bind(run_pk)
            .fetch_one(&mut **tx)
            .await?;
        let rows: Vec<(String, String)> = serde_json::from_str(&json)?;
        let mut states = RunStates::with_capacity(rows.len());
        for (task, state) in rows {
            states.push(task, parse_state(&state)?);
        }
        Ok(states)
    }

    /// Ends a run whose task instances are all final: failed if any leaf task failed or had an
    /// upstream failure, success otherwise. Starts the DAG's next queued run. Returns whether
    /// the run ended.
    pub(crate) async fn finish_run_if_done(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        states: Option<RunStates>,
        now: i64,
    ) -> Result<bool> {
        let states = match states {
            Some(s) => s,
            None => {
                // One probe of the in-flight index answers "not yet" while anything of the run
                // waits or runs (the common case, whatever the run's size); every state is read
                // only when nothing is in flight.
                if self
                    .run_has_instance_in(tx, run_pk, IN_FLIGHT_STATES, None)
                    .await?
                {
                    return Ok(false);
                }
                self.run_states(tx, run_pk).await?
            }
        };
        if !states.all_finished() {
            return Ok(false);
        }
        let failed = spec.run_failed(&states);
        let state = if failed { "failed" } else { "success" };
        let done = sqlx::query(
            "UPDATE dag_runs SET state = $2, ended_at = $3 WHERE id = $1 AND state = 'running'",
        )
        .bind(run_pk)
        .bind(state)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 1 {
            self.enqueue_run_notifications(tx, run_pk, spec, failed, now)
                .await?;
            if failed {
                self.pause_after_failures(tx, spec).await?;
            }
            Box::pin(self.start_queued_runs(tx, Some(&spec.dag_id), now)).await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Moves `scheduled` instances to `queued`, highest priority first, while their pool has
    /// free slots and their DAG is under `max_active_tasks`. Waits for the admission lock.
    /// Returns the queues that got work.
    pub(crate) async fn admit(
        &self,
        tx: &mut Transaction<'static, Any>,
        now: i64,
    ) -> Result<Vec<String>> {
        self.lock_admission(tx).await?;
        self.admit_locked(tx, now).await
    }

    /// [`Store::admit`] if the admission lock is free now; `None` when another transaction
    /// holds it (PostgreSQL): the caller leaves admission to the admitter
    /// ([`Store::admit_now`]) instead of waiting, so results never queue up behind one lock.
    pub(crate) async fn try_admit(
        &self,
        tx: &mut Transaction<'static, Any>,
        now: i64,
    ) -> Result<Option<Vec<String>>> {
        if !self.try_lock_admission(tx).await? {
            return Ok(None);
        }
        Ok(Some(self.admit_locked(tx, now).await?))
    }

    /// Admission in a transaction of its own, waiting for the admission lock: what the
    /// admitter runs after results that left admission to it. Returns the queues that got
    /// work.
    pub async fn admit_now(&self) -> Result<Vec<String>> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let queues = self.admit(&mut tx, now).await?;
        tx.commit().await?;
        Ok(queues)
    }

    /// For tests: holds the admission lock (PostgreSQL) until the returned transaction is
    /// dropped, as a long admission in another process would.
    #[doc(hidden)]
    pub async fn debug_hold_admission_lock(&self) -> Result<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        self.lock_admission(&mut tx).await?;
        Ok(tx)
    }

    async fn admit_locked(
        &self,
        tx: &mut Transaction<'static, Any>,
        now: i64,
    ) -> Result<Vec<String>> {
        // Free slots per pool, running instances per DAG, the DAG versions of running runs
        // (their `max_active_tasks`), and whether anything waits to be admitted at all, in
        // one statement: each statement is a round trip (on SQLite, a hop to its thread).
        let usage = format!(
            "SELECT 'pool', name, slots - (SELECT COUNT(*) FROM task_instances t \
               WHERE t.pool = p.name AND t.state IN {ACTIVE_STATES}) FROM pools p \
             UNION ALL \
             SELECT 'dag', dag_id, COUNT(*) FROM task_instances WHERE state IN {ACTIVE_STATES} GROUP BY dag_id \
             UNION ALL \
             SELECT 'version', dag_id, version_id FROM dag_runs WHERE state = 'running' GROUP BY dag_id, version_id \
             UNION ALL \
             SELECT 'waiting', '', COUNT(*) FROM \
               (SELECT 1 FROM task_instances WHERE state = 'scheduled' LIMIT 1) w"
        );
        let mut pool_free: HashMap<String, i64> = HashMap::new();
        let mut dag_used: HashMap<String, i64> = HashMap::new();
        let mut running_versions: Vec<(String, i64)> = Vec::new();
        let mut waiting = false;
        for r in sqlx::query(&usage).fetch_all(&mut **tx).await? {
            let kind: String = r.try_get(0)?;
            let map = match kind.as_str() {
                "pool" => &mut pool_free,
                "dag" => &mut dag_used,
                "version" => {
                    running_versions.push((r.try_get(1)?, r.try_get(2)?));
                    continue;
                }
                _ => {
                    waiting = r.try_get::<i64, _>(2)? > 0;
                    continue;
                }
            };
            map.insert(r.try_get(1)?, r.try_get(2)?);
        }
        if !waiting {
            // Nothing is `scheduled`: the usual case after a result of a chain or a fan.
            return Ok(Vec::new());
        }
        // Saturating: a pool stored with an absurd size must not overflow the sum and stop
        // every pool.
        let mut free_total: i64 = pool_free
            .values()
            .filter(|f| **f > 0)
            .fold(0i64, |a, f| a.saturating_add(*f));
        let mut admitted: Vec<i64> = Vec::new();
        let mut queues: Vec<String> = Vec::new();
        let mut missing_pool: Vec<(i64, String)> = Vec::new();
        // DAGs at their limit (the highest `max_active_tasks` of their running versions) and
        // pools with no free slot are left out of the candidate query, so instances waiting
        // on them cost nothing, however many there are.
        let mut dag_limit: HashMap<String, i64> = HashMap::new();
        let mut task_used: HashMap<(String, String), i64> = HashMap::new();
        if free_total > 0 {
            for (dag, version) in running_versions {
                let spec = self.spec(version).await?;
                let limit = dag_limit.entry(dag).or_insert(0);
                *limit = (*limit).max(i64::from(spec.max_active_tasks));
            }
        }
        let mut full_dags: Vec<String> = dag_used
            .iter()
            .filter(|(d, used)| dag_limit.get(*d).is_some_and(|l| **used >= *l))
            .map(|(d, _)| d.clone())
            .collect();
        let mut full_pools: Vec<String> = pool_free
            .iter()
            .filter(|(_, free)| **free <= 0)
            .map(|(p, _)| p.clone())
            .collect();
        // Read the most urgent candidates a page at a time, a page about as large as the free
        // capacity: admission stays cheap however many instances wait.
        let mut after: Option<(i64, i64)> = None;
        for _page in 0..16 {
            if free_total <= 0 {
                break;
            }
            let limit = free_total.saturating_add(32).min(4096);
            // The page is cut before the join to the runs (every instance has its run): a
            // planner without statistics joined every `scheduled` instance first.
            let mut sql = String::from(
                "SELECT ti.id, ti.dag_id, ti.pool, ti.priority, ti.queue, ti.task_id, ti.run_pk FROM task_instances ti \
                 WHERE ti.state = 'scheduled' AND ($1 = 0 OR ti.priority < $2 OR (ti.priority = $2 AND ti.id > $3))",
            );
            if !full_dags.is_empty() {
                sql += &format!(
                    " AND ti.dag_id NOT IN ({})",
                    placeholders(5, full_dags.len())
                );
            }
            if !full_pools.is_empty() {
                sql += &format!(
                    " AND ti.pool NOT IN ({})",
                    placeholders(5 + full_dags.len(), full_pools.len())
                );
            }
            sql += " ORDER BY ti.priority DESC, ti.id LIMIT $4";
            let sql = format!(
                "SELECT p.id, p.dag_id, p.pool, r.version_id, p.priority, p.queue, p.task_id \
                 FROM ({sql}) p JOIN dag_runs r ON r.id = p.run_pk ORDER BY p.priority DESC, p.id"
            );
            let mut q = sqlx::query(&sql)
                .bind(i64::from(after.is_some()))
                .bind(after.map(|a| a.0).unwrap_or(0))
                .bind(after.map(|a| a.1).unwrap_or(0))
                .bind(limit);
            for name in full_dags.iter().chain(&full_pools) {
                q = q.bind(name);
            }
            let rows = q.fetch_all(&mut **tx).await?;
            let page_len = rows.len() as i64;
            for r in rows {
                let id: i64 = r.try_get(0)?;
                let dag: String = r.try_get(1)?;
                let pool: String = r.try_get(2)?;
                after = Some((r.try_get(4)?, id));
                let spec = self.spec(r.try_get(3)?).await?;
                let Some(free) = pool_free.get_mut(&pool) else {
                    missing_pool.push((id, pool));
                    continue;
                };
                if *free <= 0 {
                    if !full_pools.contains(&pool) {
                        full_pools.push(pool);
                    }
                    continue;
                }
                let used = dag_used.entry(dag.clone()).or_default();
                if *used >= i64::from(spec.max_active_tasks) {
                    if dag_limit.get(&dag).is_none_or(|l| *used >= *l) && !full_dags.contains(&dag)
                    {
                        full_dags.push(dag);
                    }
                    continue;
                }
                // A task with `max_active_tis_per_dag` (its instances across runs, a mapped
                // task's one by one) waits at its limit; counted once per pass when first met.
                let task_id: String = r.try_get(6)?;
                if let Some(max) = spec.task(&task_id).and_then(|t| t.max_active_tis_per_dag) {
                    let key = (dag.clone(), task_id);
                    let active = match task_used.get(&key) {
                        Some(n) => *n,
                        None => {
                            let n: i64 = sqlx::query_scalar(&format!(
                                "SELECT COUNT(*) FROM task_instances WHERE dag_id = $1 AND task_id = $2 AND state IN {ACTIVE_STATES}"
                            ))
                            .bind(&key.0)
                            .bind(&key.1)
                            .fetch_one(&mut **tx)
                            .await?;
                            n
                        }
                    };
                    if active >= i64::from(max) {
                        task_used.insert(key, active);
                        continue;
                    }
                    task_used.insert(key, active + 1);
                }
                *free -= 1;
                *used += 1;
                free_total -= 1;
                admitted.push(id);
                let queue: String = r.try_get(5)?;
                if !queues.contains(&queue) {
                    queues.push(queue);
                }
            }
            if page_len < limit {
                break;
            }
        }
        for (id, pool) in missing_pool {
            let note = format!(
                "pool {pool:?} does not exist; create it with `tern pools set {pool} SLOTS`"
            );
            sqlx::query("UPDATE task_instances SET note = $2 WHERE id = $1 AND (note IS NULL OR note <> $2)")
                .bind(id)
                .bind(note)
                .execute(&mut **tx)
                .await?;
        }
        if !admitted.is_empty() {
            // On PostgreSQL an instance another transaction is changing right now (a clear, a
            // mark) is skipped rather than waited for: that transaction admits after it. The
            // rows are found by primary key and their state checked in the join: with the state
            // in the locking read, a table without statistics yet (a new database's first
            // minute) was read through the whole `scheduled` index for every admission (3–5 ms
            // each, under the admission lock; BENCHMARKS.md).
            let sql = match self.backend() {
                crate::Backend::Postgres => format!(
                    "WITH l AS MATERIALIZED (SELECT id FROM task_instances WHERE {} FOR UPDATE SKIP LOCKED) \
                     UPDATE task_instances t SET state = 'queued', queued_at = $1 \
                     FROM l WHERE t.id = l.id AND t.state = 'scheduled'",
                    self.backend().in_json_ids("id", 2)
                ),
                crate::Backend::Sqlite => format!(
                    "UPDATE task_instances SET state = 'queued', queued_at = $1 WHERE {} AND state = 'scheduled'",
                    self.backend().in_json_ids("id", 2)
                ),
            };
            sqlx::query(&sql)
                .bind(now)
                .bind(serde_json::to_string(&admitted)?)
                .execute(&mut **tx)
                .await?;
        }
        Ok(queues)
    }

    /// Claims the most urgent queued task instance of `queues` for `worker`: it becomes
    /// `running` with a fresh attempt token and a lease of `lease`. At most one claimer gets
    /// each instance.
    pub async fn claim(
        &self,
        queues: &[String],
        worker: &str,
        lease: Duration,
    ) -> Result<Option<Claimed>> {
        Ok(self.claim_many(queues, worker, lease, 1).await?.pop())
    }

    /// Claims up to `max` queued task instances of `queues`, most urgent first, in one
    /// transaction. Each gets its own attempt token (a random per-claim prefix and the
    /// instance id) and a lease of `lease`.
    pub async fn claim_many(
        &self,
        queues: &[String],
        worker: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Claimed>> {
        self.claim_many_when(queues, worker, lease, max, Queued::Unknown)
            .await
    }

    /// [`Store::claim_many`] knowing what the caller knows of the queues: one that was just
    /// told work was queued on them ([`Queued::Signalled`]) takes the write lock at once
    /// instead of first looking whether anything is queued (a round trip saved on the path
    /// from one task's end to the next one's start; a claimer that lost the work to another
    /// takes the lock for nothing).
    pub async fn claim_many_when(
        &self,
        queues: &[String],
        worker: &str,
        lease: Duration,
        max: usize,
        queued: Queued,
    ) -> Result<Vec<Claimed>> {
        if queues.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        // A revoked agent is refused even when there is nothing to claim.
        let remote_agent = crate::agents::agent_id_of_worker(worker);
        if let Some(id) = remote_agent {
            self.refuse_revoked_agent(None, id).await?;
        }
        if queued == Queued::Unknown && !self.anything_queued(queues).await? {
            return Ok(Vec::new());
        }
        self.claim_queued(queues, worker, lease, max, remote_agent)
            .await
    }

    /// A read that answers whether anything is queued on `queues`: when nothing is (the
    /// common case for a waiting agent) no write lock is taken.
    async fn anything_queued(&self, queues: &[String]) -> Result<bool> {
        let probe = queued_probe(1, queues.len());
        let mut q = sqlx::query(&probe);
        for queue in queues {
            q = q.bind(queue);
        }
        Ok(q.fetch_optional(&self.pool).await?.is_some())
    }

    async fn claim_queued(
        &self,
        queues: &[String],
        worker: &str,
        lease: Duration,
        max: usize,
        remote_agent: Option<i64>,
    ) -> Result<Vec<Claimed>> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        if let Some(id) = remote_agent {
            // Under a share lock of the agent's row: a revocation waits for this claim to
            // commit, then fails what it claimed.
            self.refuse_revoked_agent(Some(&mut tx), id).await?;
        }
        let (claimed, _) = self
            .claim_in(
                &mut tx,
                queues,
                worker,
                lease,
                max,
                remote_agent.is_some(),
                false,
                now,
            )
            .await?;
        if claimed.is_empty() {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(claimed)
    }

    /// The claim itself, in the caller's write transaction: up to `max` queued instances of
    /// `queues` become `running` for `worker`, each with a try on record, most urgent first.
    /// Every claim goes through here: an agent's own ([`Store::claim_many_when`]) and one
    /// made with a result ([`Store::complete_and_claim`]). A `remote` agent's claim stays
    /// unacknowledged until the agent confirms it received it. Also returns whether more may
    /// be queued on `queues`: false when the claim took fewer than `max`; with
    /// `look_for_more`, false too when a look after the claim finds none.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn claim_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        queues: &[String],
        worker: &str,
        lease: Duration,
        max: usize,
        remote: bool,
        look_for_more: bool,
        now: i64,
    ) -> Result<(Vec<Claimed>, bool)> {
        if queues.is_empty() || max == 0 {
            return Ok((Vec::new(), false));
        }
        let prefix = new_attempt_token();
        // A sensor's next poke (`sensor_since` set) continues its try. A remote agent's claim
        // stays unacknowledged until the agent confirms it received it (its first heartbeat):
        // a claim lost on the way then goes back to the queue without using a try.
        let set = format!(
            "state = 'running', \
             try_number = try_number + CASE WHEN sensor_since IS NULL THEN 1 ELSE 0 END, \
             attempt = $1 || '-' || CAST(task_instances.id AS TEXT), lease_until = $2, worker = $3, started_at = $4, \
             ended_at = NULL, note = NULL, acked = {}",
            i64::from(!remote)
        );
        let pick = format!(
            "SELECT id FROM task_instances WHERE state = 'queued' AND queue IN ({}) \
             ORDER BY priority DESC, queued_at, id LIMIT $5",
            placeholders(6, queues.len())
        );
        let sql = self.backend().claim_sql(
            "task_instances",
            &set,
            &pick,
            "state = 'queued'",
            TI_COLUMNS,
        );
        let mut q = sqlx::query(&sql)
            .bind(&prefix)
            .bind(now + lease.as_millis() as i64)
            .bind(worker)
            .bind(now)
            .bind(max as i64);
        for queue in queues {
            q = q.bind(queue);
        }
        let rows = q.fetch_all(&mut **tx).await?;
        if rows.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let ti = ti_row(row)?;
            // A mapped instance's log carries its index after `@`, which no encoded task id
            // contains.
            let map_part = if ti.map_index >= 0 {
                format!("@{}", ti.map_index)
            } else {
                String::new()
            };
            let log_path = format!(
                "{}/{}/{}{map_part}.{}.log",
                path_segment(&ti.dag_id),
                path_segment(&ti.run_id),
                path_segment(&ti.task_id),
                ti.try_number
            );
            let attempt = ti.attempt.clone().unwrap_or_default();
            claimed.push(Claimed {
                ti,
                attempt,
                log_path,
            });
        }
        // One JSON parameter for all the tries, so the statement text is the same however many
        // were claimed (prepared once per connection; see `Backend::json_rows`).
        let insert = format!(
            "INSERT INTO task_tries (ti_id, try_number, attempt, state, worker, started_at, log_path) \
             SELECT CAST(j.value ->> 0 AS BIGINT), CAST(j.value ->> 1 AS BIGINT), j.value ->> 2, 'running', $1, $2, \
             j.value ->> 3 FROM {} WHERE true ORDER BY j.key \
             ON CONFLICT (ti_id, try_number) DO UPDATE SET attempt = excluded.attempt, state = 'running', \
             worker = excluded.worker, ended_at = NULL, exit_code = NULL, note = NULL",
            self.backend().json_rows(3)
        );
        // (The conflict is a sensor's next poke: it keeps its try, its first start and its log.)
        let tries: Vec<serde_json::Value> = claimed
            .iter()
            .map(|c| serde_json::json!([c.ti.id, c.ti.try_number, c.attempt, c.log_path]))
            .collect();
        // Whether anything is left queued on `queues` matters only when the claim took all it
        // could; then the look goes with the tries' insert, in the same round trip.
        let look = look_for_more && claimed.len() == max;
        let sql = match (look, self.backend()) {
            (false, _) => insert,
            (true, backend) => {
                let probe = queued_probe(4, queues.len());
                match backend {
                    // Two statements in one call to the connection's thread.
                    crate::Backend::Sqlite => format!("{insert}; {probe}"),
                    // An insert in a `WITH` runs whatever the query reads; the probe sees the
                    // claim (an earlier statement of the transaction).
                    crate::Backend::Postgres => format!("WITH tries AS ({insert}) {probe}"),
                }
            }
        };
        let mut q = sqlx::query(&sql)
            .bind(worker)
            .bind(now)
            .bind(serde_json::Value::Array(tries).to_string());
        if look {
            for queue in queues {
                q = q.bind(queue);
            }
        }
        let found = q.fetch_all(&mut **tx).await?;
        let more_queued = claimed.len() == max && (!look || !found.is_empty());
        // Most urgent first, as the queue orders them.
        claimed.sort_by(|a, b| {
            b.ti.priority
                .cmp(&a.ti.priority)
                .then(a.ti.id.cmp(&b.ti.id))
        });
        Ok((claimed, more_queued))
    }

    /// Extends the lease of a running attempt, and acknowledges its claim (an agent's first
    /// heartbeat confirms it received the task). False when the attempt is no longer current:
    /// the agent must stop the task.
    pub async fn heartbeat(
        &self,
        ti_id: i64,
        attempt: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE task_instances SET lease_until = $3, acked = 1 \
             WHERE id = $1 AND attempt = $2 AND state = 'running' AND worker = $4",
        )
        .bind(ti_id)
        .bind(attempt)
        .bind(self.now_ms() + lease.as_millis() as i64)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives every attempt held by a remote agent at least one more `lease` from now. Run when
    /// a control plane starts: its agents could not heartbeat while it was down, and their
    /// attempts must not be declared lost before they had a chance to report.
    pub async fn extend_remote_leases(&self, lease: Duration) -> Result<u64> {
        let until = self.now_ms() + lease.as_millis() as i64;
        let (mut tx, _write_lock) = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE task_instances SET lease_until = $1 WHERE state = 'running' AND worker LIKE 'agent-%' AND lease_until < $1",
        )
        .bind(until)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Periodic housekeeping: retries whose delay has passed become `scheduled`, queued runs
    /// start where `max_active_runs` allows, and `scheduled` instances are admitted. Returns
    /// whether any task instance became queued.
    pub async fn promote_and_admit(&self) -> Result<bool> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        sqlx::query("UPDATE task_instances SET state = 'scheduled', ready_at = NULL WHERE state IN ('up_for_retry', 'up_for_reschedule') AND ready_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        self.start_queued_runs(&mut tx, None, now).await?;
        let queued = !self.admit(&mut tx, now).await?.is_empty();
        tx.commit().await?;
        Ok(queued)
    }

    /// The earliest time a waiting retry becomes due, if any: the scheduler sleeps until then.
    pub async fn next_retry_due(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(ready_at) FROM task_instances WHERE state IN ('up_for_retry', 'up_for_reschedule')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(v.map(from_ms))
    }
}

/// What a claimer knows about the queues it claims from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// Nothing: look first, take the write lock only when something is queued.
    Unknown,
    /// It was just told work was queued.
    Signalled,
}

impl Store {
    /// Where the log of an attempt lives, relative to the log folder.
    /// The log file of an attempt that is still current and held by `worker`; `None` when the
    /// attempt ended, was lost, or belongs to someone else.
    pub async fn current_log_path(
        &self,
        ti_id: i64,
        attempt: &str,
        worker: &str,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT t.log_path FROM task_instances i JOIN task_tries t ON t.ti_id = i.id AND t.attempt = i.attempt \
             WHERE i.id = $1 AND i.attempt = $2 AND i.state = 'running' AND i.worker = $3",
        )
        .bind(ti_id)
        .bind(attempt)
        .bind(worker)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn log_path_of_attempt(&self, ti_id: i64, attempt: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT log_path FROM task_tries WHERE ti_id = $1 AND attempt = $2")
                .bind(ti_id)
                .bind(attempt)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Queues that have queued task instances now.
    pub async fn queued_queues(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT queue FROM task_instances WHERE state = 'queued'")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A cheap way to tell whether another connection changed the database (see
    /// [`ChangeWatch`]).
    pub fn change_watch(&self) -> ChangeWatch {
        ChangeWatch {
            conn: None,
            last: None,
        }
    }

    /// DAGs the scheduler creates runs for: active, not paused, with a schedule.
    pub async fn schedulable_dags(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query(
            "SELECT dag_id, latest_version_id FROM dags WHERE is_active = 1 AND is_paused = 0 AND schedule <> 'none'",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }
}

impl Store {
    /// Agents that hold running attempts now.
    pub async fn running_workers(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT worker FROM task_instances WHERE state = 'running' AND worker IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Tells whether the database changed since the last look. On SQLite it asks `PRAGMA
/// data_version` on a connection of its own (the value moves when any other connection
/// commits); on PostgreSQL it cannot tell and always answers yes.
pub struct ChangeWatch {
    conn: Option<sqlx::pool::PoolConnection<Any>>,
    last: Option<i64>,
}

impl ChangeWatch {
    pub async fn changed(&mut self, store: &Store) -> bool {
        if store.backend() != crate::Backend::Sqlite {
            return true;
        }
        if self.conn.is_none() {
            match store.pool.acquire().await {
                Ok(c) => self.conn = Some(c),
                Err(_) => return true,
            }
        }
        let conn = self.conn.as_mut().expect("acquired above");
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut **conn)
            .await
        {
            Ok(v) => {
                let changed = self.last != Some(v);
                self.last = Some(v);
                changed
            }
            Err(_) => {
                self.conn = None;
                true
            }
        }
    }
}
