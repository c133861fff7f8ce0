//! The notifications outbox. When a DAG run ends or a task goes up for retry, the transaction
//! that changes the state also inserts one row per connection the DAG names for that event
//! (`on_failure`, `on_success`, `on_retry`), with the facts to send as JSON. The control plane's
//! notifier claims due rows (the claim counts a try and pushes `next_at` one lease ahead, so a
//! sender that dies leaves the row due again), sends them, and records the outcome quoting the
//! try it claimed: sent, due again at a later time, or failed with the error.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use tern_core::DagSpec;

use crate::time::{from_ms, to_ms};
use crate::{Result, Store, TaskInstance};

/// What a notification tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A DAG run ended `failed` (`on_failure`).
    RunFailed,
    /// A DAG run ended `success` (`on_success`).
    RunSucceeded,
    /// A task instance failed with tries left and waits for its retry (`on_retry`).
    TaskUpForRetry,
}

impl NotifyEvent {
    /// The event's name in payloads and rows.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::RunFailed => "dag_run_failed",
            NotifyEvent::RunSucceeded => "dag_run_succeeded",
            NotifyEvent::TaskUpForRetry => "task_up_for_retry",
        }
    }

    /// The `dag()` field that names the connections for this event.
    pub fn hook(self) -> &'static str {
        match self {
            NotifyEvent::RunFailed => "on_failure",
            NotifyEvent::RunSucceeded => "on_success",
            NotifyEvent::TaskUpForRetry => "on_retry",
        }
    }

    fn connections(self, spec: &DagSpec) -> &[String] {
        match self {
            NotifyEvent::RunFailed => &spec.on_failure,
            NotifyEvent::RunSucceeded => &spec.on_success,
            NotifyEvent::TaskUpForRetry => &spec.on_retry,
        }
    }
}

/// One row of the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: i64,
    pub dag_id: String,
    pub run_id: String,
    /// `dag_run_failed`, `dag_run_succeeded` or `task_up_for_retry`.
    pub event: String,
    /// The `dag()` field that named the connection (`on_failure`, …).
    pub hook: String,
    /// The connection name.
    pub conn: String,
    /// The facts to send (no secrets): see [`NotifyEvent`].
    pub payload: Value,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    /// Tries made so far (a claim counts one).
    pub tries: u32,
    /// When a pending row is due (while claimed: when the claim lapses).
    pub next_at: DateTime<Utc>,
    /// The error of the latest failed try (kept when a later try succeeds).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// The outcome of one try to send a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent,
    /// Failed for now: due again at `at`.
    RetryAt {
        at: DateTime<Utc>,
        error: String,
    },
    /// Failed for good (a permanent error, or the last try).
    Failed {
        error: String,
    },
}

const COLUMNS: &str = "id, dag_id, run_id, event, hook, conn, payload, state, tries, next_at, \
                       last_error, created_at, ended_at";

fn row(r: &AnyRow) -> Result<Notification> {
    Ok(Notification {
        id: r.try_get("id")?,
        dag_id: r.try_get("dag_id")?,
        run_id: r.try_get("run_id")?,
        event: r.try_get("event")?,
        hook: r.try_get("hook")?,
        conn: r.try_get("conn")?,
        payload: serde_json::from_str(&r.try_get::<String, _>("payload")?)?,
        state: r.try_get("state")?,
        tries: r.try_get::<i64, _>("tries")? as u32,
        next_at: from_ms(r.try_get("next_at")?),
        last_error: r.try_get("last_error")?,
        created_at: from_ms(r.try_get("created_at")?),
        ended_at: r.try_get::<Option<i64>, _>("ended_at")?.map(from_ms),
    })
}

fn rfc3339(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Store {
    /// Queues the `on_failure` / `on_success` notifications of a run that just ended, in the
    /// transaction that ended it. A failed run lists its failed tasks (not those that only had
    /// an upstream failure).
    pub(crate) async fn enqueue_run_notifications(
        &self,
        tx: &mut Transaction<'static, Any>,
        run_pk: i64,
        spec: &DagSpec,
        failed: bool,
        now: i64,
    ) -> Result<()> {
        let event = if failed {
            NotifyEvent::RunFailed
        } else {
            NotifyEvent::RunSucceeded
        };
        if event.connections(spec).is_empty() {
            return Ok(());
        }
        let run = sqlx::query("SELECT run_id, logical_date FROM dag_runs WHERE id = $1")
            .bind(run_pk)
            .fetch_one(&mut **tx)
            .await?;
        let run_id: String = run.try_get(0)?;
        let mut payload = json!({
            "event": event.as_str(),
            "dag_id": spec.dag_id,
            "run_id": run_id,
            "logical_date": rfc3339(run.try_get(1)?),
            "state": if failed { "failed" } else { "success" },
            "ended_at": rfc3339(now),
        });
        if failed {
            let failed_tasks: Vec<Value> = sqlx::query(
                "SELECT task_id, try_number, note FROM task_instances \
                 WHERE run_pk = $1 AND state = 'failed' ORDER BY id",
            )
            .bind(run_pk)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| {
                Ok(json!({
                    "task_id": r.try_get::<String, _>(0)?,
                    "try_number": r.try_get::<i64, _>(1)?,
                    "note": r.try_get::<Option<String>, _>(2)?,
                }))
            })
            .collect::<Result<_>>()?;
            payload["failed_tasks"] = Value::Array(failed_tasks);
        }
        self.insert_notifications(tx, spec, &run_id, event, &payload, now)
            .await
    }

    /// Queues the `on_retry` notifications of a task instance that just went up for retry
    /// (`note`: why the try failed; `retry_at`: when the next try is due).
    pub(crate) async fn enqueue_retry_notifications(
        &self,
        tx: &mut Transaction<'static, Any>,
        ti: &TaskInstance,
        spec: &DagSpec,
        note: Option<&str>,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<()> {
        let event = NotifyEvent::TaskUpForRetry;
        if event.connections(spec).is_empty() {
            return Ok(());
        }
        let logical_date: i64 =
            sqlx::query_scalar("SELECT logical_date FROM dag_runs WHERE id = $1")
                .bind(ti.run_pk)
                .fetch_one(&mut **tx)
                .await?;
        let payload = json!({
            "event": event.as_str(),
            "dag_id": spec.dag_id,
            "run_id": ti.run_id,
            "logical_date": rfc3339(logical_date),
            "state": "up_for_retry",
            "task_id": ti.task_id,
            "try_number": ti.try_number,
            "max_tries": ti.max_tries,
            "note": note,
            "retry_at": retry_at.map(rfc3339),
        });
        self.insert_notifications(tx, spec, &ti.run_id, event, &payload, now)
            .await
    }

    async fn insert_notifications(
        &self,
        tx: &mut Transaction<'static, Any>,
        spec: &DagSpec,
        run_id: &str,
        event: NotifyEvent,
        payload: &Value,
        now: i64,
    ) -> Result<()> {
        let payload = payload.to_string();
        for conn in event.connections(spec) {
            sqlx::query(
                "INSERT INTO notifications (dag_id, run_id, event, hook, conn, payload, next_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(&spec.dag_id)
            .bind(run_id)
            .bind(event.as_str())
            .bind(event.hook())
            .bind(conn)
            .bind(&payload)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Claims up to `max` due pending notifications, oldest due first: each claim counts a try
    /// and holds the row for `lease` (after that it is due again, e.g. when the sender died).
    /// Two claimers never get the same row.
    pub async fn claim_notifications(
        &self,
        max: usize,
        lease: Duration,
    ) -> Result<Vec<Notification>> {
        let now = self.now_ms();
        // A read first: nothing is due most of the time, and then no write lock is taken.
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM notifications WHERE state = 'pending' AND next_at <= $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if due.is_none() || max == 0 {
            return Ok(Vec::new());
        }
        let pick = "SELECT id FROM notifications WHERE state = 'pending' AND next_at <= $2 \
                    ORDER BY next_at, id LIMIT $3";
        let set = "next_at = $1, tries = tries + 1";
        let sql =
            self.backend()
                .claim_sql("notifications", set, pick, "state = 'pending'", COLUMNS);
        let (mut tx, _write_lock) = self.write_tx().await?;
        let rows = sqlx::query(&sql)
            .bind(now + lease.as_millis() as i64)
            .bind(now)
            .bind(max as i64)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = rows.iter().map(row).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|n| n.id);
        Ok(out)
    }

    /// Records the outcome of try `tries` of notification `id`. False when that try is no
    /// longer the current claim (its lease lapsed and another sender took the row): nothing
    /// changes then.
    pub async fn finish_notification(
        &self,
        id: i64,
        tries: u32,
        delivery: &Delivery,
    ) -> Result<bool> {
        let now = self.now_ms();
        let (state, next_at, error, ended_at) = match delivery {
            Delivery::Sent => ("sent", now, None, Some(now)),
            Delivery::RetryAt { at, error } => ("pending", to_ms(*at), Some(error.as_str()), None),
            Delivery::Failed { error } => ("failed", now, Some(error.as_str()), Some(now)),
        };
        let (mut tx, _write_lock) = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE notifications SET state = $3, next_at = $4, last_error = COALESCE($5, last_error), ended_at = $6 \
             WHERE id = $1 AND tries = $2 AND state = 'pending'",
        )
        .bind(id)
        .bind(i64::from(tries))
        .bind(state)
        .bind(next_at)
        .bind(error)
        .bind(ended_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notifications, newest first, optionally of one DAG.
    pub async fn list_notifications(
        &self,
        dag_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE ($1 = '' OR dag_id = $1) \
             ORDER BY id DESC LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(dag_id.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// Deletes sent and failed notifications created before `before`. Returns how many.
    pub async fn prune_notifications(&self, before: DateTime<Utc>) -> Result<u64> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        let n = sqlx::query(
            "DELETE FROM notifications WHERE state IN ('sent', 'failed') AND created_at < $1",
        )
        .bind(to_ms(before))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
