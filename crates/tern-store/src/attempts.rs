//! Ending attempts: the one path that every result, lost lease, dead or revoked agent and
//! queue timeout takes, and the housekeeping that ends runs whose tasks are all final.
//!
//! Each attempt ends in a transaction that locks the run row first (PostgreSQL; SQLite
//! serialises writers, so there it is one read less), reads the task instance again under that
//! lock ([`Store::lock_and_read`]), checks what the caller expected of it ([`Expect`]: state,
//! attempt token, holder, lease) and writes with the same conditions, failing if no row matched
//! ([`Store::end_locked`]). After the transaction's last attempt, each run one of them ended
//! without reading all its states is judged once ([`Store::judge_runs`]: does it end?), then
//! admission runs once. Two paths ending attempts of one run therefore take turns, each sees
//! what the other wrote, and exactly one of them ends the run. Housekeeping ends each attempt
//! in a transaction of its own ([`Store::end_one`]); agents' results that arrive together
//! share one (`results.rs`).
//!
//! Lock order, everywhere: the run row, then task-instance rows, then the admission lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Row, Transaction};
use tern_core::TaskState;

use crate::across_runs::awaited_by_next_run;
use crate::gathered::{Gathered, QuietEnd};
use crate::tasks::{ti_row, IN_FLIGHT_STATES, TI_COLUMNS};
use crate::{Applied, ClaimNext, Claimed, Result, Store, StoreError, TaskInstance, TryResult};

/// What the caller of [`Store::end_one`] expects of the instance; if any of it no longer
/// holds under the run lock, nothing is changed.
#[derive(Debug, Default)]
pub(crate) struct Expect<'a> {
    /// `running` (an attempt ends) or `queued` (a queue timeout).
    state: Option<TaskState>,
    attempt: Option<&'a str>,
    worker: Option<&'a str>,
    /// The lease must have run out before this time.
    lease_ended_by: Option<i64>,
    /// The instance must have been queued before this time.
    queued_before: Option<i64>,
    /// A result from the agent: a refused one is noted on its try ("late result ignored").
    from_agent: bool,
    /// Put the claim back in its queue instead of ending the attempt.
    release: bool,
}

impl Ended {
    /// What a result's sender learns: what was applied, or nothing (not current).
    pub(crate) fn into_applied(self) -> Applied {
        match self {
            Ended::Applied(applied) => applied,
            Ended::Released | Ended::NotCurrent => Applied::default(),
        }
    }
}

impl<'a> Expect<'a> {
    /// What a result from an agent expects: the attempt `attempt` is current and running, held
    /// by `worker` when given.
    pub(crate) fn agent_result(attempt: &'a str, worker: Option<&'a str>) -> Expect<'a> {
        Expect {
            state: Some(TaskState::Running),
            attempt: Some(attempt),
            worker,
            from_agent: true,
            ..Expect::default()
        }
    }
}

/// An instance as read under its run's lock, with what ending its attempt checks.
pub(crate) struct Locked {
    ti: TaskInstance,
    lease_until: Option<i64>,
    acked: bool,
    version_id: i64,
}

/// The attempts one transaction ends (one, or agents' results written together): their
/// instances as read together under their runs' locks ([`Store::lock_and_read`]), each taken by
/// the first attempt that ends it, and the runs those attempts ended without a pass that read
/// all their states, judged once after the last of them ([`Store::judge_runs`]) with one probe
/// of what is still in flight instead of one per attempt.
#[derive(Default)]
pub(crate) struct Batch {
    rows: HashMap<i64, Locked>,
    /// The run of each instance read (kept after the instance is taken).
    run_of: HashMap<i64, i64>,
    to_judge: Vec<(i64, Arc<tern_core::DagSpec>)>,
    /// Quiet ends held back to be written together (`gathered.rs`), when this batch gathers.
    gathered: Gathered,
}

impl Batch {
    /// The run of instance `ti_id`, if it was read.
    pub(crate) fn run_of(&self, ti_id: i64) -> Option<i64> {
        self.run_of.get(&ti_id).copied()
    }

    /// From now on, the attempts this batch ends quietly are written together (see
    /// `gathered.rs`): the agents' results written in one transaction.
    pub(crate) fn gather_quiet_ends(&mut self) {
        self.gathered.enable();
    }

    /// How many quiet ends this batch wrote together.
    pub(crate) fn quiet_ends_written(&self) -> u64 {
        self.gathered.written()
    }

    fn judge_later(&mut self, run_pk: i64, spec: &Arc<tern_core::DagSpec>) {
        if !self.to_judge.iter().any(|(r, _)| *r == run_pk) {
            self.to_judge.push((run_pk, spec.clone()));
        }
    }
}

/// How an attempt's try record ends.
struct TryEnd {
    state: TaskState,
    exit_code: Option<i64>,
    note: Option<String>,
}

/// What [`Store::end_one`] did.
pub(crate) enum Ended {
    /// The attempt ended and its consequences were applied.
    Applied(Applied),
    /// The claim was never acknowledged: the instance went back to its queue, no try used.
    Released,
    /// The instance was not as expected: nothing changed.
    NotCurrent,
}

impl Store {
    /// Writes the quiet ends `batch` holds (`gathered.rs`) and leaves their runs to judge:
    /// before any other statement of its transaction.
    async fn write_held(
        &self,
        tx: &mut Transaction<'static, Any>,
        batch: &mut Batch,
    ) -> Result<()> {
        for (run_pk, spec) in self.write_gathered(tx, &mut batch.gathered).await? {
            batch.judge_later(run_pk, &spec);
        }
        Ok(())
    }

    /// `FOR UPDATE` where the database has row locks.
    fn for_update(&self) -> &'static str {
        match self.backend() {
            crate::Backend::Sqlite => "",
            crate::Backend::Postgres => "FOR UPDATE",
        }
    }

    /// Ends one task instance's attempt (or queued wait) with `result`, if it is still as
    /// `expect` says, in a transaction of its own under the run's lock.
    pub(crate) async fn end_one(
        &self,
        ti_id: i64,
        expect: &Expect<'_>,
        result: &TryResult,
    ) -> Result<Ended> {
        Ok(self
            .end_one_then_claim(ti_id, expect, result, None)
            .await?
            .0)
    }

    /// [`Store::end_one`], then `claim` (the reporting agent and its request for its next
    /// tasks) in the same transaction, after the admission. Nothing is claimed when the
    /// instance was not found.
    pub(crate) async fn end_one_then_claim(
        &self,
        ti_id: i64,
        expect: &Expect<'_>,
        result: &TryResult,
        claim: Option<(&str, &ClaimNext)>,
    ) -> Result<(Ended, Vec<Claimed>)> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let mut batch = self.lock_and_read(&mut tx, &[ti_id]).await?;
        if batch.rows.is_empty() {
            return Ok((Ended::NotCurrent, Vec::new()));
        }
        let mut ended = self
            .end_locked(&mut tx, &mut batch, ti_id, expect, result, now)
            .await?;
        let finished = self.judge_runs(&mut tx, &mut batch, now).await?;
        if let Ended::Applied(applied) = &mut ended {
            applied.run_finished |= !finished.is_empty();
            let admitted = self.try_admit(&mut tx, now).await?;
            applied.set_admission(admitted);
        }
        let applied = match &mut ended {
            Ended::Applied(a) => vec![a],
            _ => Vec::new(),
        };
        let claimed = self
            .claim_after_result(&mut tx, claim, applied, now)
            .await?;
        tx.commit().await?;
        Ok((ended, claimed))
    }

    /// Locks the runs of the instances `ti_ids` (the first step of the lock order), then reads
    /// the instances under those locks: the start of every transaction that ends attempts.
    pub(crate) async fn lock_and_read(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti_ids: &[i64],
    ) -> Result<Batch> {
        self.lock_runs_of(tx, ti_ids).await?;
        self.read_batch(tx, ti_ids).await
    }

    /// Locks the runs of the instances `ti_ids` (PostgreSQL; SQLite serialises writers), in
    /// the order of their keys.
    async fn lock_runs_of(&self, tx: &mut Transaction<'static, Any>, ti_ids: &[i64]) -> Result<()> {
        if self.backend() != crate::Backend::Postgres {
            return Ok(());
        }
        sqlx::query(&format!(
            "SELECT r.id FROM dag_runs r WHERE r.id = ANY(ARRAY(\
             SELECT t.run_pk FROM task_instances t WHERE {})) \
             ORDER BY r.id FOR UPDATE",
            self.backend().in_json_ids("t.id", 1)
        ))
        .bind(serde_json::to_string(ti_ids)?)
        .fetch_all(&mut **tx)
        .await?;
        Ok(())
    }

    /// Reads the instances `ti_ids` in one statement, under their runs' locks (taken by
    /// [`Store::lock_and_read`]), locking their rows too where the database has row locks, in
    /// key order. An instance that no longer exists is missing from the batch.
    async fn read_batch(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti_ids: &[i64],
    ) -> Result<Batch> {
        let sql = format!(
            "SELECT {TI_COLUMNS}, lease_until, acked, \
             (SELECT r.version_id FROM dag_runs r WHERE r.id = task_instances.run_pk) AS version_id \
             FROM task_instances WHERE {} ORDER BY id {}",
            self.backend().in_json_ids("id", 1),
            self.for_update()
        );
        let rows = sqlx::query(&sql)
            .bind(serde_json::to_string(ti_ids)?)
            .fetch_all(&mut **tx)
            .await?;
        let mut out = Batch::default();
        for row in rows {
            let ti = ti_row(&row)?;
            out.run_of.insert(ti.id, ti.run_pk);
            let locked = Locked {
                lease_until: row.try_get("lease_until")?,
                acked: row.try_get::<i64, _>("acked")? != 0,
                version_id: row.try_get("version_id")?,
                ti,
            };
            out.rows.insert(locked.ti.id, locked);
        }
        Ok(out)
    }

    /// Judges, once each, the runs `batch`'s attempts ended without reading all their states:
    /// a run whose instances are all final ends. Called after the transaction's last attempt
    /// ended and before its admission. Returns the runs that ended.
    pub(crate) async fn judge_runs(
        &self,
        tx: &mut Transaction<'static, Any>,
        batch: &mut Batch,
        now: i64,
    ) -> Result<Vec<i64>> {
        self.write_held(tx, batch).await?;
        let mut finished = Vec::new();
        for (run_pk, spec) in std::mem::take(&mut batch.to_judge) {
            if self
                .finish_run_if_done(tx, run_pk, &spec, None, now)
                .await?
            {
                finished.push(run_pk);
            }
        }
        Ok(finished)
    }

    /// The part of [`Store::end_one`] under the run's lock, without admission and without
    /// judging the run (both once per transaction, by its owner): takes the instance as read
    /// under the lock from `batch` (or reads it again when an earlier attempt of the same
    /// transaction already took it), checks `expect`, and ends the attempt (or notes a late
    /// result, or puts an unconfirmed claim back); a run left to judge goes to `batch`. Every
    /// path that ends an attempt comes through here.
    pub(crate) async fn end_locked(
        &self,
        tx: &mut Transaction<'static, Any>,
        batch: &mut Batch,
        ti_id: i64,
        expect: &Expect<'_>,
        result: &TryResult,
        now: i64,
    ) -> Result<Ended> {
        let locked = match batch.rows.remove(&ti_id) {
            Some(locked) => Some(locked),
            None => {
                self.write_held(tx, batch).await?;
                self.read_batch(tx, &[ti_id]).await?.rows.remove(&ti_id)
            }
        };
        // (Gone if its run was deleted meanwhile.)
        let Some(Locked {
            ti,
            lease_until,
            acked,
            version_id,
        }) = locked
        else {
            return Ok(Ended::NotCurrent);
        };
        let queued_at = ti.queued_at.map(|t| t.timestamp_millis());
        let holds = expect.state.is_none_or(|s| s == ti.state)
            && expect
                .attempt
                .is_none_or(|a| ti.attempt.as_deref() == Some(a))
            && expect
                .worker
                .is_none_or(|w| ti.worker.as_deref() == Some(w))
            && expect
                .lease_ended_by
                .is_none_or(|t| lease_until.is_some_and(|l| l < t))
            && expect
                .queued_before
                .is_none_or(|t| queued_at.is_some_and(|q| q < t));
        if !holds {
            if let (true, Some(attempt)) = (expect.from_agent, expect.attempt) {
                self.write_held(tx, batch).await?;
                let verdict = if result.success { "success" } else { "failure" };
                sqlx::query(
                    "UPDATE task_tries SET note = COALESCE(note, '') || $3 WHERE ti_id = $1 AND attempt = $2",
                )
                .bind(ti_id)
                .bind(attempt)
                .bind(format!(" (late result ignored: {verdict})"))
                .execute(&mut **tx)
                .await?;
            }
            return Ok(Ended::NotCurrent);
        }
        if expect.release || (expect.lease_ended_by.is_some() && !acked) {
            self.write_held(tx, batch).await?;
            self.release_unacked(tx, &ti, now).await?;
            return Ok(Ended::Released);
        }
        if !result.outputs.is_empty() {
            self.write_held(tx, batch).await?;
        }
        for (key, value) in &result.outputs {
            sqlx::query(
                "INSERT INTO task_outputs (ti_id, key, value, run_pk) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (ti_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(ti_id)
            .bind(key)
            .bind(value.to_string())
            .bind(ti.run_pk)
            .execute(&mut **tx)
            .await?;
        }
        let mut applied = self
            .end_attempt(tx, &ti, version_id, result, now, batch)
            .await?;
        applied.ran_for = ti
            .started_at
            .map(|s| Duration::from_millis((now - s.timestamp_millis()).max(0) as u64));
        Ok(Ended::Applied(applied))
    }

    /// Puts a claim its agent never acknowledged back in its queue: the task never started,
    /// so the try is given back (a sensor's continuing try keeps its number) and its try
    /// record goes.
    async fn release_unacked(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        now: i64,
    ) -> Result<()> {
        let note = format!(
            "claimed by {} but never started (the claim did not reach it); queued again without using a try",
            ti.worker.as_deref().unwrap_or("?")
        );
        let done = sqlx::query(
            "UPDATE task_instances SET state = 'queued', \
             try_number = try_number - CASE WHEN sensor_since IS NULL THEN 1 ELSE 0 END, \
             attempt = NULL, worker = NULL, lease_until = NULL, acked = 1, started_at = NULL, \
             queued_at = $3, note = $4 WHERE id = $1 AND state = 'running' AND attempt = $2",
        )
        .bind(ti.id)
        .bind(ti.attempt.as_deref())
        .bind(now)
        .bind(&note)
        .execute(&mut **tx)
        .await?;
        expect_one_row(done.rows_affected(), ti)?;
        sqlx::query(
            "DELETE FROM task_tries WHERE ti_id = $1 AND attempt = $2 AND NOT EXISTS \
             (SELECT 1 FROM task_instances WHERE id = $1 AND sensor_since IS NOT NULL)",
        )
        .bind(ti.id)
        .bind(ti.attempt.as_deref())
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE task_tries SET state = 'up_for_reschedule', note = $3 WHERE ti_id = $1 AND attempt = $2",
        )
        .bind(ti.id)
        .bind(ti.attempt.as_deref())
        .bind(&note)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Puts a claimed attempt that never started back in its queue without using a try (the
    /// control plane could not hand it to its agent). False when it was no longer current.
    pub async fn release_claim(&self, ti_id: i64, attempt: &str) -> Result<bool> {
        let expect = Expect {
            state: Some(TaskState::Running),
            attempt: Some(attempt),
            release: true,
            ..Expect::default()
        };
        Ok(matches!(
            self.end_one(ti_id, &expect, &TryResult::default()).await?,
            Ended::Released
        ))
    }

    /// Fails, or schedules for retry, every running attempt whose lease has expired: its agent
    /// stopped heartbeating. A claim whose agent never acknowledged it goes back to its queue
    /// without using a try. Returns how many attempts were ended or released.
    pub async fn expire_leases(&self) -> Result<usize> {
        let now = self.now_ms();
        let candidates = sqlx::query(
            "SELECT id, attempt, worker FROM task_instances WHERE state = 'running' AND lease_until < $1 \
             ORDER BY run_pk, id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for r in candidates {
            let (id, attempt): (i64, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
            let worker: Option<String> = r.try_get(2)?;
            let result = TryResult {
                success: false,
                retryable: true,
                note: Some(format!(
                    "attempt lost: agent {} stopped reporting and its lease expired",
                    worker.as_deref().unwrap_or("?")
                )),
                ..TryResult::default()
            };
            let expect = Expect {
                state: Some(TaskState::Running),
                attempt: attempt.as_deref(),
                lease_ended_by: Some(now),
                ..Expect::default()
            };
            if !matches!(self.end_one(id, &expect, &result).await?, Ended::NotCurrent) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Ends every running attempt held by `worker` (an agent known to be gone, such as the
    /// local agent of a control plane that restarted) as a retryable failure with `note`.
    pub async fn fail_attempts_of_worker(&self, worker: &str, note: &str) -> Result<usize> {
        let held = sqlx::query(
            "SELECT id, attempt FROM task_instances WHERE state = 'running' AND worker = $1 ORDER BY run_pk, id",
        )
        .bind(worker)
        .fetch_all(&self.pool)
        .await?;
        let result = TryResult {
            success: false,
            retryable: true,
            note: Some(note.to_string()),
            ..TryResult::default()
        };
        let mut n = 0;
        for r in held {
            let (id, attempt): (i64, Option<String>) = (r.try_get(0)?, r.try_get(1)?);
            let expect = Expect {
                state: Some(TaskState::Running),
                attempt: attempt.as_deref(),
                worker: Some(worker),
                ..Expect::default()
            };
            if matches!(self.end_one(id, &expect, &result).await?, Ended::Applied(_)) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Fails (without retry) the instances of `queue` queued before `before`: nothing could
    /// run them in time. The reason names the timeout and `why`. An instance an agent claimed
    /// meanwhile is left alone.
    pub async fn fail_queued_before(&self, queue: &str, before: i64, why: &str) -> Result<usize> {
        let stale: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM task_instances WHERE state = 'queued' AND queue = $1 AND queued_at < $2 ORDER BY run_pk, id",
        )
        .bind(queue)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        let result = TryResult {
            success: false,
            retryable: false,
            note: Some(format!("queue timeout: {why}")),
            ..TryResult::default()
        };
        let mut n = 0;
        for id in stale {
            let expect = Expect {
                state: Some(TaskState::Queued),
                queued_before: Some(before),
                ..Expect::default()
            };
            if matches!(self.end_one(id, &expect, &result).await?, Ended::Applied(_)) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Housekeeping's safety net: every running run with nothing in flight (no task scheduled,
    /// queued, running or waiting to retry) is judged again under its lock: tasks whose
    /// upstream tasks are all done are scheduled or settled, and a run whose tasks are all
    /// final ends. Returns how many runs ended. (Every path that ends an attempt already does
    /// this in its own transaction; this catches what a crash or an older version left.)
    pub async fn finish_settled_runs(&self) -> Result<usize> {
        let candidates: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT r.id FROM dag_runs r WHERE r.state = 'running' AND NOT EXISTS \
             (SELECT 1 FROM task_instances t WHERE t.run_pk = r.id \
              AND t.state IN {IN_FLIGHT_STATES}) ORDER BY r.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut ended = 0;
        for run_pk in candidates {
            let now = self.now_ms();
            let (mut tx, _write_lock) = self.write_tx().await?;
            self.lock_run(&mut tx, run_pk).await?;
            let row = sqlx::query("SELECT state, version_id FROM dag_runs WHERE id = $1")
                .bind(run_pk)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { continue };
            if row.try_get::<String, _>(0)? != "running" {
                continue;
            }
            let spec = self.spec(row.try_get(1)?).await?;
            let states = self
                .evaluate(&mut tx, run_pk, &spec, None, None, now)
                .await?;
            if self
                .finish_run_if_done(&mut tx, run_pk, &spec, states, now)
                .await?
            {
                ended += 1;
            }
            self.admit(&mut tx, now).await?;
            tx.commit().await?;
        }
        Ok(ended)
    }
}

impl Store {
    /// For tests of recovery: sets an instance's state with none of the consequences, as a
    /// crash between two statements of an older version could have left it.
    #[doc(hidden)]
    pub async fn debug_set_state(&self, ti_id: i64, state: TaskState) -> Result<()> {
        sqlx::query(
            "UPDATE task_instances SET state = $2, attempt = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(ti_id)
        .bind(state.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// `sql` with an ended attempt's instance values bound as `$1`–`$7` (see `write_settled`).
fn instance_query<'q>(
    sql: &'q str,
    (ti, state, now, note, ready_at): (&TaskInstance, TaskState, i64, &Option<String>, Option<i64>),
) -> AnyQuery<'q> {
    sqlx::query(sql)
        .bind(ti.id)
        .bind(state.as_str())
        .bind(now)
        .bind(note.clone())
        .bind(ready_at)
        .bind(ti.state.as_str())
        .bind(ti.attempt.clone().unwrap_or_default())
}

/// `q` with the try's values bound as `$8`–`$11` (see `write_settled`).
fn try_query<'q>(q: AnyQuery<'q>, t: &TryEnd, ti: &TaskInstance) -> AnyQuery<'q> {
    q.bind(t.state.as_str())
        .bind(t.exit_code)
        .bind(t.note.clone())
        .bind(i64::from(ti.try_number))
}

/// A guarded write must change exactly the one row it read under the run lock.
fn expect_one_row(rows: u64, ti: &TaskInstance) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "task instance {} ({}.{}) changed under its run lock; nothing was written",
            ti.id, ti.dag_id, ti.task_id
        )))
    }
}

impl Store {
    /// Ends the current attempt of a running instance and applies the consequences.
    async fn end_attempt(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        version_id: i64,
        result: &TryResult,
        now: i64,
        batch: &mut Batch,
    ) -> Result<Applied> {
        let spec = self.spec(version_id).await?;
        let task = spec.task(&ti.task_id);
        let sensor = task.and_then(|t| match &t.kind {
            tern_core::TaskKind::Sensor(s) => Some(s),
            _ => None,
        });
        // A sensor out of time and an exit code the task skips on settle the instance outright.
        let mut outright = None;
        if let (Some(after), Some(sensor), false) =
            (result.reschedule_after, sensor, result.success)
        {
            self.write_held(tx, batch).await?;
            let since = self.sensor_since(tx, ti, now).await?;
            let deadline = since.saturating_add(sensor.timeout_ms as i64);
            if now < deadline {
                return self
                    .reschedule(
                        tx,
                        ti,
                        result,
                        now,
                        since,
                        (now + after.as_millis() as i64).min(deadline),
                    )
                    .await;
            }
            let waited = tern_core::format_duration(Duration::from_millis((now - since) as u64));
            let why = result.note.as_deref().unwrap_or("condition not met");
            outright = Some(if sensor.soft_fail {
                (
                    TaskState::Skipped,
                    format!("sensor timed out after {waited} ({why}); skipped (soft_fail)"),
                )
            } else {
                (
                    TaskState::Failed,
                    format!("sensor timed out after {waited} ({why}); not retried"),
                )
            });
        } else if !result.success
            && result
                .exit_code
                .is_some_and(|code| task.is_some_and(|t| t.skips_on_exit(code)))
        {
            let why = result.note.as_deref().unwrap_or("exit code");
            outright = Some((
                TaskState::Skipped,
                format!("skipped: {why} (skip_on_exit_code)"),
            ));
        }
        if let Some((state, note)) = outright {
            return self
                .settle(
                    tx,
                    ti,
                    &spec,
                    result,
                    now,
                    (state, None, Some(note)),
                    None,
                    batch,
                )
                .await;
        }
        // A branch or short circuit decides from its outputs which downstream tasks are
        // skipped; a decision that cannot be used fails the try (retried per its policy).
        let mut skips = None;
        let unusable;
        let result = match (result.success, task) {
            (true, Some(t)) => match spec.flow_skips(t, &result.outputs) {
                Ok(s) => {
                    skips = s;
                    result
                }
                Err(why) => {
                    unusable = TryResult {
                        success: false,
                        retryable: true,
                        note: Some(why),
                        ..result.clone()
                    };
                    &unusable
                }
            },
            _ => result,
        };
        let (state, ready_at) = if result.success {
            (TaskState::Success, None)
        } else if result.retryable && ti.try_number < ti.max_tries {
            let delay = task
                .map(|t| tern_core::retry::retry_delay(t, ti.try_number))
                .unwrap_or_default();
            (TaskState::UpForRetry, Some(now + delay.as_millis() as i64))
        } else {
            (TaskState::Failed, None)
        };
        let note = match (state, &result.note) {
            (TaskState::UpForRetry, Some(n)) => Some(format!(
                "{n}; retry {} of {} after {}",
                ti.try_number,
                ti.max_tries - 1,
                tern_core::format_duration(Duration::from_millis(
                    (ready_at.unwrap_or(now) - now) as u64
                ))
            )),
            (_, n) => n.clone(),
        };
        self.settle(
            tx,
            ti,
            &spec,
            result,
            now,
            (state, ready_at, note),
            skips.as_ref(),
            batch,
        )
        .await
    }

    /// When the current try of a sensor made its first poke, in milliseconds.
    async fn sensor_since(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        now: i64,
    ) -> Result<i64> {
        let since: Option<i64> =
            sqlx::query_scalar("SELECT sensor_since FROM task_instances WHERE id = $1")
                .bind(ti.id)
                .fetch_one(&mut **tx)
                .await?;
        Ok(since
            .or(ti.started_at.map(|t| t.timestamp_millis()))
            .unwrap_or(now))
    }

    /// Ends a sensor's poke whose condition did not hold: the instance waits, slot-free, as
    /// `up_for_reschedule` until `due`, keeping its try (with `sensor_since` set, the next
    /// poke's claim does not count a new try, and it appends to the same log).
    async fn reschedule(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        result: &TryResult,
        now: i64,
        since: i64,
        due: i64,
    ) -> Result<Applied> {
        let why = result.note.as_deref().unwrap_or("condition not met");
        let note = format!(
            "poke: {why}; next poke in {}",
            tern_core::format_duration(Duration::from_millis((due - now).max(0) as u64))
        );
        let done = sqlx::query(
            "UPDATE task_instances SET state = 'up_for_reschedule', \
             ended_at = $2, note = $3, ready_at = $4, lease_until = NULL, sensor_since = $5, \
             pokes = pokes + 1 WHERE id = $1 AND state = $6 AND COALESCE(attempt, '') = $7",
        )
        .bind(ti.id)
        .bind(now)
        .bind(&note)
        .bind(due)
        .bind(since)
        .bind(ti.state.as_str())
        .bind(ti.attempt.clone().unwrap_or_default())
        .execute(&mut **tx)
        .await?;
        expect_one_row(done.rows_affected(), ti)?;
        sqlx::query(
            "UPDATE task_tries SET state = 'up_for_reschedule', ended_at = $3, note = $4 \
             WHERE ti_id = $1 AND try_number = $2",
        )
        .bind(ti.id)
        .bind(i64::from(ti.try_number))
        .bind(now)
        .bind(&note)
        .execute(&mut **tx)
        .await?;
        Ok(Applied {
            accepted: true,
            retry_pending: true,
            ..Applied::default()
        })
    }

    /// Writes an ended attempt's instance (guarded by the state and token it was read with; an
    /// error if that no longer matched) and, with `try_end`, its try's record, the try's only if
    /// the instance's matched: on PostgreSQL one statement, on SQLite two sent in one call (each
    /// call is a hop to the connection's thread and back), one round trip per result less.
    async fn write_settled(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        now: i64,
        (state, ready_at, note): (TaskState, Option<i64>, &Option<String>),
        try_end: Option<TryEnd>,
    ) -> Result<()> {
        const INSTANCE: &str = "UPDATE task_instances SET state = $2, ended_at = $3, note = $4, \
             ready_at = $5, lease_until = NULL, sensor_since = NULL \
             WHERE id = $1 AND state = $6 AND COALESCE(attempt, '') = $7";
        const TRY: &str =
            "UPDATE task_tries SET state = $8, ended_at = $3, exit_code = $9, note = $10 \
             WHERE ti_id = $1 AND try_number = $11";
        /// Both in one statement (PostgreSQL), built once.
        static TOGETHER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH i AS ({INSTANCE} RETURNING id), \
                 t AS ({TRY} AND EXISTS (SELECT 1 FROM i) RETURNING 1) \
                 SELECT COUNT(*) FROM i"
            )
        });
        /// Both in one call to SQLite's thread (a hop saved): the try's statement changes its
        /// row only when the instance's changed one (`changes()` counts the statement before),
        /// so the two counts sum to one or two exactly when the instance was written.
        static ONE_AFTER_THE_OTHER: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("{INSTANCE}; {TRY} AND changes() = 1"));
        // The instance's values are $1–$7, the try's $8–$11 (with $1 and $3); SQLite's try
        // statement gets all eleven, whichever it names.
        let values = (ti, state, now, note, ready_at);
        let Some(t) = try_end else {
            let done = instance_query(INSTANCE, values).execute(&mut **tx).await?;
            return expect_one_row(done.rows_affected(), ti);
        };
        let written = match self.backend() {
            crate::Backend::Postgres => {
                let row = try_query(instance_query(&TOGETHER, values), &t, ti)
                    .fetch_one(&mut **tx)
                    .await?;
                row.try_get::<i64, _>(0)? as u64
            }
            crate::Backend::Sqlite => {
                let done = try_query(instance_query(&ONE_AFTER_THE_OTHER, values), &t, ti)
                    .execute(&mut **tx)
                    .await?;
                done.rows_affected().min(1)
            }
        };
        expect_one_row(written, ti)
    }

    /// Moves an ended attempt's instance to `state` (with when it is ready again, for a retry,
    /// and its note) and applies the consequences: downstream readiness for a final state, and
    /// run completion when that pass read the run's states (otherwise the run is left to judge
    /// with the rest of `batch`).
    /// (Admission is the caller's: once per transaction, however many attempts it ends.)
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        spec: &Arc<tern_core::DagSpec>,
        result: &TryResult,
        now: i64,
        (state, ready_at, note): (TaskState, Option<i64>, Option<String>),
        skips: Option<&tern_core::Skips>,
        batch: &mut Batch,
    ) -> Result<Applied> {
        let (try_state, try_note) = if state == TaskState::UpForRetry {
            (TaskState::Failed, result.note.clone())
        } else {
            (state, note.clone())
        };
        // A queued instance that times out never started a try of its own: its last try's record
        // (if any) stays as it was.
        let try_end = (ti.state == TaskState::Running).then_some(TryEnd {
            state: try_state,
            exit_code: result.exit_code.map(i64::from),
            note: try_note,
        });
        // An end that asks for nothing but its write, a look downstream and its run's
        // judgement (a final state, no skips decided, no next run waiting for it): held back,
        // it is written with the transaction's other quiet ends, their downstream tasks looked
        // at and their runs judged once for them all (`gathered.rs`).
        let quiet = batch.gathered.gathers()
            && state.is_finished()
            && skips.is_none()
            && !(matches!(state, TaskState::Success | TaskState::Skipped)
                && awaited_by_next_run(spec, &[ti.task_id.as_str()]));
        if let (true, Some(t)) = (quiet, &try_end) {
            batch.gathered.hold(QuietEnd {
                ti_id: ti.id,
                run_pk: ti.run_pk,
                task_id: ti.task_id.clone(),
                spec: spec.clone(),
                was: ti.state,
                attempt: ti.attempt.clone().unwrap_or_default(),
                state,
                ended_at: now,
                note,
                try_state: t.state,
                try_number: i64::from(ti.try_number),
                exit_code: t.exit_code,
                try_note: t.note.clone(),
            });
            return Ok(Applied {
                accepted: true,
                ..Applied::default()
            });
        }
        self.write_held(tx, batch).await?;
        self.write_settled(tx, ti, now, (state, ready_at, &note), try_end)
            .await?;
        if state == TaskState::UpForRetry {
            self.enqueue_retry_notifications(tx, ti, spec, result.note.as_deref(), ready_at, now)
                .await?;
        }
        let mut applied = Applied {
            accepted: true,
            retry_pending: state == TaskState::UpForRetry,
            ..Applied::default()
        };
        if state.is_finished() {
            let states = self
                .evaluate(
                    tx,
                    ti.run_pk,
                    spec,
                    Some(&[ti.task_id.as_str()]),
                    skips,
                    now,
                )
                .await?;
            match states {
                Some(states) => {
                    applied.run_finished = self
                        .finish_run_if_done(tx, ti.run_pk, spec, Some(states), now)
                        .await?;
                }
                None => batch.judge_later(ti.run_pk, spec),
            }
            if matches!(state, TaskState::Success | TaskState::Skipped) {
                self.wake_next_run(tx, ti.run_pk, spec, &[ti.task_id.as_str()], now)
                    .await?;
            }
        }
        Ok(applied)
    }
}
