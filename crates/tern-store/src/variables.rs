//! Variables kept by the control plane: key/value settings templates read. The store never
//! sees a secret variable's value in clear: the caller encrypts it into `value` and sets
//! `is_secret`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::time::from_ms;
use crate::{Result, Store, StoreError};

/// A stored variable; `value` is the caller's ciphertext when `is_secret`.
#[derive(Debug, Clone, Serialize)]
pub struct StoredVariable {
    pub key: String,
    #[serde(skip)]
    pub value: String,
    pub is_secret: bool,
    pub description: String,
    pub updated_at: DateTime<Utc>,
}

fn row(r: &sqlx::any::AnyRow) -> Result<StoredVariable> {
    Ok(StoredVariable {
        key: r.try_get("key")?,
        value: r.try_get("value")?,
        is_secret: r.try_get::<i64, _>("is_secret")? != 0,
        description: r.try_get("description")?,
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

const COLUMNS: &str = "key, value, is_secret, description, updated_at";

impl Store {
    /// Sets a variable (adds it or replaces its value, secrecy and description).
    pub async fn put_variable(
        &self,
        key: &str,
        value: &str,
        is_secret: bool,
        description: &str,
    ) -> Result<()> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        sqlx::query("DELETE FROM variables WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO variables (key, value, is_secret, description, updated_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key)
        .bind(value)
        .bind(i64::from(is_secret))
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The variable `key`, if there is one.
    pub async fn variable(&self, key: &str) -> Result<Option<StoredVariable>> {
        let r = sqlx::query(&format!("SELECT {COLUMNS} FROM variables WHERE key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// Every variable, by key.
    pub async fn list_variables(&self) -> Result<Vec<StoredVariable>> {
        sqlx::query(&format!("SELECT {COLUMNS} FROM variables ORDER BY key"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// Deletes the variable `key`; an unknown key is `NotFound`.
    pub async fn delete_variable(&self, key: &str) -> Result<()> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM variables WHERE key = $1")
            .bind(key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no variable {key:?}; `tern variables list` shows them"
            )));
        }
        Ok(())
    }
}
