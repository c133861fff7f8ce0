//! Live task logs in the metadata database, for logs kept in an object store: the chunks of a
//! try that has not ended (readable by every server), and the queue of logs waiting to become
//! one object. The object store itself is not this crate's business: the server's log store
//! reads [`LiveLog`]s, uploads a shipped log and calls [`Store::log_shipped`].

use crate::{Result, Store};

/// What the database holds of one log from some offset on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLog {
    /// Whether the log is still in the database (its try goes on, or it waits to be shipped).
    /// When false, the log is in the object store (or never had a line).
    pub live: bool,
    /// Chunks that end after the offset asked for, in order: (byte offset of the chunk, text).
    pub chunks: Vec<(u64, String)>,
}

impl LiveLog {
    /// The log's bytes from byte `offset` on, as slices of its chunks in order (the first
    /// chunk cut where `offset` falls in it).
    pub fn bytes_from(&self, offset: u64) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().filter_map(move |(start, body)| {
            let from = usize::try_from(offset.saturating_sub(*start)).unwrap_or(usize::MAX);
            body.as_bytes().get(from..).filter(|b| !b.is_empty())
        })
    }
}

/// A log whose try has ended, claimed for shipping by one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogToShip {
    pub path: String,
    /// Failed uploads so far (for the back-off of the next one).
    pub failures: u32,
}

/// Most chunks one read returns; the reader asks again from where it stopped.
const READ_CHUNKS: i64 = 64;

/// Task instance states in which a try's log may still grow: the try runs, or it is a
/// sensor's try between pokes (its next attempt appends to the same log).
const GOING: &str = "i.try_number = l.try_number AND (i.state IN ('running', 'up_for_reschedule') \
     OR (i.state IN ('scheduled', 'queued') AND i.sensor_since IS NOT NULL))";

impl Store {
    /// Appends a chunk of `text` to the log of attempt `attempt` of task instance `ti_id`,
    /// if that attempt is still running; false (nothing written) when it is not. A chunk sent
    /// twice (same attempt and `seq`) is written once. Under a share lock of the instance's
    /// row, so the end of the attempt, which updates that row, orders after the chunk: every
    /// chunk a log ever gets is in the database before the log can be shipped.
    pub async fn append_log_chunk(
        &self,
        ti_id: i64,
        attempt: &str,
        seq: u64,
        text: &str,
    ) -> Result<bool> {
        // PostgreSQL stores no NUL character: it is written as U+FFFD, as a lossy read of
        // bytes that are not text would show it.
        let text = if text.contains('\0') {
            std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
        } else {
            std::borrow::Cow::Borrowed(text)
        };
        // Two servers appending to one log at once (an agent that moved) may pick the same
        // start; the unique start refuses one, which then reads the new end and tries again.
        let mut tries = 0;
        loop {
            match self.append_log_chunk_once(ti_id, attempt, seq, &text).await {
                Err(crate::StoreError::Db(sqlx::Error::Database(d)))
                    if d.is_unique_violation() && tries < 3 =>
                {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    async fn append_log_chunk_once(
        &self,
        ti_id: i64,
        attempt: &str,
        seq: u64,
        text: &str,
    ) -> Result<bool> {
        let lock = match self.backend() {
            crate::Backend::Sqlite => "",
            crate::Backend::Postgres => "FOR SHARE OF i",
        };
        let (mut tx, _write_lock) = self.write_tx().await?;
        let current: Option<(String, i64)> = sqlx::query_as(&format!(
            "SELECT t.log_path, t.try_number FROM task_instances i \
             JOIN task_tries t ON t.ti_id = i.id AND t.attempt = i.attempt \
             WHERE i.id = $1 AND i.attempt = $2 AND i.state = 'running' {lock}"
        ))
        .bind(ti_id)
        .bind(attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((path, try_number)) = current else {
            tx.rollback().await?;
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO log_chunks (path, attempt, seq, start_at, end_at, body) \
             SELECT $1, $2, $3, COALESCE(MAX(end_at), 0), COALESCE(MAX(end_at), 0) + $4, $5 \
             FROM log_chunks WHERE path = $1 \
             ON CONFLICT (path, attempt, seq) DO NOTHING",
        )
        .bind(&path)
        .bind(attempt)
        .bind(seq as i64)
        .bind(text.len() as i64)
        .bind(text)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO log_ships (path, ti_id, try_number, due_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (path) DO NOTHING",
        )
        .bind(&path)
        .bind(ti_id)
        .bind(try_number)
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The chunks of log `path` that end after byte `offset` (at most a page of them), and
    /// whether the log is still in the database. Chunks are read before the shipping row, so
    /// a log shipped in between reads as "not live" only once its object exists.
    pub async fn live_log_from(&self, path: &str, offset: u64) -> Result<LiveLog> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT start_at, body FROM log_chunks WHERE path = $1 AND end_at > $2 \
             ORDER BY start_at LIMIT $3",
        )
        .bind(path)
        .bind(offset as i64)
        .bind(READ_CHUNKS)
        .fetch_all(&self.pool)
        .await?;
        let live = !rows.is_empty() || self.log_waits_to_ship(path).await?;
        Ok(LiveLog {
            live,
            chunks: rows.into_iter().map(|(s, b)| (s as u64, b)).collect(),
        })
    }

    /// The size in bytes of log `path` as the database holds it; `None` when it is not there
    /// (it is in the object store, or has no line).
    pub async fn live_log_len(&self, path: &str) -> Result<Option<u64>> {
        let end: Option<i64> =
            sqlx::query_scalar("SELECT MAX(end_at) FROM log_chunks WHERE path = $1")
                .bind(path)
                .fetch_one(&self.pool)
                .await?;
        match end {
            Some(end) => Ok(Some(end as u64)),
            None => Ok(self.log_waits_to_ship(path).await?.then_some(0)),
        }
    }

    async fn log_waits_to_ship(&self, path: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM log_ships WHERE path = $1")
                .bind(path)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Claims up to `max` logs whose tries have ended and whose shipping is due, for `hold`
    /// (another server takes a log over only after that). A compare-and-set per log, so two
    /// servers never ship one log at once.
    pub async fn claim_logs_to_ship(
        &self,
        max: usize,
        hold: std::time::Duration,
    ) -> Result<Vec<LogToShip>> {
        let now = self.now_ms();
        let due: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT l.path, l.failures, l.due_at FROM log_ships l WHERE l.due_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM task_instances i WHERE i.id = l.ti_id AND {GOING}) \
             ORDER BY l.due_at LIMIT $2"
        ))
        .bind(now)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for (path, failures, due_at) in due {
            let took =
                sqlx::query("UPDATE log_ships SET due_at = $3 WHERE path = $1 AND due_at = $2")
                    .bind(&path)
                    .bind(due_at)
                    .bind(now + hold.as_millis() as i64)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            if took == 1 {
                claimed.push(LogToShip {
                    path,
                    failures: failures.clamp(0, i64::from(u32::MAX)) as u32,
                });
            }
        }
        Ok(claimed)
    }

    /// Log `path` is in the object store with its first `size` bytes: its chunks and its
    /// shipping row go, in one transaction.
    pub async fn log_shipped(&self, path: &str, size: u64) -> Result<()> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        sqlx::query("DELETE FROM log_chunks WHERE path = $1 AND end_at <= $2")
            .bind(path)
            .bind(size as i64)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM log_ships WHERE path = $1")
            .bind(path)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Shipping log `path` failed: it stays in the database and is tried again after `wait`.
    pub async fn log_ship_failed(
        &self,
        path: &str,
        wait: std::time::Duration,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE log_ships SET due_at = $2, failures = failures + 1, last_error = $3 WHERE path = $1",
        )
        .bind(path)
        .bind(self.now_ms() + wait.as_millis() as i64)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many logs wait to be shipped, and the last error of the oldest failing one (for
    /// `/health` and the operator).
    pub async fn logs_waiting_to_ship(&self) -> Result<(u64, Option<String>)> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_ships")
            .fetch_one(&self.pool)
            .await?;
        let error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM log_ships WHERE last_error IS NOT NULL ORDER BY failures DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten();
        Ok((n as u64, error))
    }
}
