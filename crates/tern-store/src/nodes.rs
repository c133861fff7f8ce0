//! Control-plane processes and their heartbeats. Each server beats every second; a server
//! whose beats stopped is failed over by the others: the attempts its local agent held end as
//! retryable failures within seconds, not after a whole lease. (A server that cannot reach
//! the database stops its own local tasks first, before the others can fail it over.)

use std::time::Duration;

use sqlx::Row;

use crate::{Result, Store};

impl Store {
    /// Records that server `name`, whose local agent is `worker`, is alive.
    pub async fn node_heartbeat(&self, name: &str, worker: &str) -> Result<()> {
        let now = self.now_ms();
        sqlx::query(
            "INSERT INTO nodes (name, worker, started_at, heartbeat_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, worker = excluded.worker",
        )
        .bind(name)
        .bind(worker)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A server that stops cleanly leaves the list at once.
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM nodes WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Fails over every server other than `me` that has not beaten for `silence`: the
    /// attempts of its local agent end as retryable failures (the note says why) and it
    /// leaves the list. Returns the failed-over servers with how many attempts each held.
    pub async fn fail_over_silent_nodes(
        &self,
        me: &str,
        silence: Duration,
    ) -> Result<Vec<(String, usize)>> {
        let before = self.now_ms() - silence.as_millis() as i64;
        let silent = sqlx::query(
            "SELECT name, worker, heartbeat_at FROM nodes WHERE heartbeat_at < $1 AND name <> $2",
        )
        .bind(before)
        .bind(me)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in silent {
            let (name, worker): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let last: i64 = r.try_get(2)?;
            let note = format!(
                "interrupted: the server running it ({name}) stopped heartbeating {:.1} s ago; failed over by {me}",
                (self.now_ms() - last) as f64 / 1000.0
            );
            let n = self.fail_attempts_of_worker(&worker, &note).await?;
            sqlx::query("DELETE FROM nodes WHERE name = $1 AND heartbeat_at = $2")
                .bind(&name)
                .bind(last)
                .execute(&self.pool)
                .await?;
            out.push((name, n));
        }
        Ok(out)
    }
}
