//! Connections kept by the control plane. The store never sees a secret in clear: the caller
//! encrypts the URI and extra fields into `secret`; the plain columns (type, host, login) are
//! what listings show.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::time::from_ms;
use crate::{Result, Store, StoreError};

/// A stored connection. `secret` is the caller's ciphertext of the URI and extra fields.
#[derive(Debug, Clone, Serialize)]
pub struct StoredConnection {
    pub name: String,
    pub conn_type: String,
    pub host: String,
    pub login: String,
    #[serde(skip)]
    pub secret: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn row(r: &sqlx::any::AnyRow) -> Result<StoredConnection> {
    Ok(StoredConnection {
        name: r.try_get("name")?,
        conn_type: r.try_get("conn_type")?,
        host: r.try_get("host")?,
        login: r.try_get("login")?,
        secret: r.try_get("secret")?,
        description: r.try_get("description")?,
        created_at: from_ms(r.try_get("created_at")?),
        updated_at: from_ms(r.try_get("updated_at")?),
    })
}

const COLUMNS: &str = "name, conn_type, host, login, secret, description, created_at, updated_at";

impl Store {
    /// Adds a connection, or replaces it when `replace`.
    pub async fn put_connection(&self, c: &StoredConnection, replace: bool) -> Result<()> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT name FROM connections WHERE name = $1")
                .bind(&c.name)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() && !replace {
            return Err(StoreError::Conflict(format!(
                "connection {:?} already exists; delete it first or use --replace",
                c.name
            )));
        }
        sqlx::query("DELETE FROM connections WHERE name = $1")
            .bind(&c.name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO connections (name, conn_type, host, login, secret, description, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&c.name)
        .bind(&c.conn_type)
        .bind(&c.host)
        .bind(&c.login)
        .bind(&c.secret)
        .bind(&c.description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_connections(&self) -> Result<Vec<StoredConnection>> {
        let sql = format!("SELECT {COLUMNS} FROM connections ORDER BY name");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// The connection called `name`, if any.
    pub async fn find_connection(&self, name: &str) -> Result<Option<StoredConnection>> {
        let sql = format!("SELECT {COLUMNS} FROM connections WHERE name = $1");
        sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    pub async fn delete_connection(&self, name: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM connections WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no connection {name:?}; `tern connections list` shows them"
            )));
        }
        Ok(())
    }
}
