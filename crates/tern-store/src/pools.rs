//! Pools: named slot counts that cap how many task instances run at once across DAGs.

use sqlx::Row;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Pool {
    pub name: String,
    pub slots: i64,
    pub description: String,
    /// Instances queued or running in the pool now.
    pub used: i64,
}

/// Most slots a pool may have (more than any machine runs at once).
pub const MAX_POOL_SLOTS: i64 = 1_000_000;

impl Store {
    pub async fn list_pools(&self) -> Result<Vec<Pool>> {
        sqlx::query(
            "SELECT p.name, p.slots, p.description, \
             (SELECT COUNT(*) FROM task_instances ti WHERE ti.pool = p.name AND ti.state IN ('queued', 'running')) \
             FROM pools p ORDER BY p.name",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(Pool {
                name: r.try_get(0)?,
                slots: r.try_get(1)?,
                description: r.try_get(2)?,
                used: r.try_get(3)?,
            })
        })
        .collect()
    }

    /// Creates or resizes a pool (0 to [`MAX_POOL_SLOTS`] slots).
    pub async fn set_pool(&self, name: &str, slots: i64, description: &str) -> Result<()> {
        tern_core::ids::check_id(name)
            .map_err(|e| StoreError::Invalid(format!("pool name: {e}")))?;
        if description
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(StoreError::Invalid(format!(
                "pool {name:?}: the description holds a control character"
            )));
        }
        if !(0..=MAX_POOL_SLOTS).contains(&slots) {
            return Err(StoreError::Invalid(format!(
                "pool {name:?}: slots must be from 0 to {MAX_POOL_SLOTS}, got {slots}"
            )));
        }
        sqlx::query(
            "INSERT INTO pools (name, slots, description) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET slots = excluded.slots, description = excluded.description",
        )
        .bind(name)
        .bind(slots)
        .bind(description)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_pool(&self, name: &str) -> Result<()> {
        if name == tern_core::spec::DEFAULT_POOL {
            return Err(StoreError::Invalid(
                "the default pool cannot be deleted; resize it instead".into(),
            ));
        }
        let done = sqlx::query("DELETE FROM pools WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no pool named {name:?}")));
        }
        Ok(())
    }
}
