//! Counts the metrics endpoint reports, read from the metadata database at scrape time.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::{Result, Store};

/// A snapshot of what is in the database.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Task instances by state.
    pub task_instances: BTreeMap<String, i64>,
    /// DAG runs by state.
    pub dag_runs: BTreeMap<String, i64>,
    /// Age in seconds of the oldest queued task instance, by queue.
    pub oldest_queued_seconds: BTreeMap<String, f64>,
    /// Agents seen within the connected window, by site.
    pub connected_agents: BTreeMap<String, i64>,
    pub import_errors: i64,
}

impl Store {
    pub async fn stats(&self) -> Result<Stats> {
        let now = self.now_ms();
        let mut s = Stats::default();
        for r in sqlx::query("SELECT state, COUNT(*) AS n FROM task_instances GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            s.task_instances
                .insert(r.try_get("state")?, r.try_get("n")?);
        }
        for r in sqlx::query("SELECT state, COUNT(*) AS n FROM dag_runs GROUP BY state")
            .fetch_all(&self.pool)
            .await?
        {
            s.dag_runs.insert(r.try_get("state")?, r.try_get("n")?);
        }
        for r in sqlx::query(
            "SELECT queue, MIN(queued_at) AS first FROM task_instances WHERE state = 'queued' GROUP BY queue",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let first: Option<i64> = r.try_get("first")?;
            if let Some(first) = first {
                s.oldest_queued_seconds
                    .insert(r.try_get("queue")?, (now - first).max(0) as f64 / 1000.0);
            }
        }
        let since = now - crate::agents::CONNECTED_WINDOW.as_millis() as i64;
        for r in sqlx::query(
            "SELECT site, COUNT(*) AS n FROM agents WHERE revoked_at IS NULL AND last_seen >= $1 GROUP BY site",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?
        {
            s.connected_agents.insert(r.try_get("site")?, r.try_get("n")?);
        }
        s.import_errors = sqlx::query_scalar("SELECT COUNT(*) FROM import_errors")
            .fetch_one(&self.pool)
            .await?;
        Ok(s)
    }
}
