//! Users, their API tokens and the audit log. The store keeps only hashes: the caller hashes
//! passwords (argon2) before [`Store::create_user`]; tokens are generated here and returned in
//! clear exactly once, then kept as SHA-256 hashes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::agents::secret_hash;
use crate::time::from_ms;
use crate::{Result, Store, StoreError};

/// A user. `role` is one of `admin`, `op`, `user`, `viewer` (the server defines what each may do).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: String,
    #[serde(skip)]
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

/// An API token's record (never its value).
#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    pub id: i64,
    pub username: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One recorded change: who did what to what, when.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

const USER_COLUMNS: &str = "id, username, role, password_hash, created_at, disabled_at";

pub(crate) fn user_row(r: &sqlx::any::AnyRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        role: r.try_get("role")?,
        password_hash: r.try_get("password_hash")?,
        created_at: from_ms(r.try_get("created_at")?),
        disabled: r.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
    })
}

/// How long a token's `last_used_at` may lag (it is written at most this often).
const LAST_USED_EVERY_MS: i64 = 60_000;

impl Store {
    /// Creates a user; a taken name is a conflict.
    pub async fn create_user(
        &self,
        username: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<User> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "user {username:?} already exists"
            )));
        }
        let sql = format!(
            "INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(username)
            .bind(role)
            .bind(password_hash)
            .bind(self.now_ms())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match e {
                // Another server inserted the same name between the check and the insert.
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    StoreError::Conflict(format!("user {username:?} already exists"))
                }
                other => other.into(),
            })?;
        tx.commit().await?;
        user_row(&row)
    }

    pub async fn find_user(&self, username: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        sqlx::query(&sql)
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| user_row(&r))
            .transpose()
    }

    /// Deletes a user with their tokens and sessions. The last admin cannot be deleted (nobody
    /// could manage users any more).
    pub async fn delete_user(&self, username: &str) -> Result<()> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        let role: Option<String> = sqlx::query_scalar("SELECT role FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(role) = role else {
            return Err(crate::StoreError::NotFound(format!("no user {username:?}")));
        };
        if role == "admin" {
            let admins: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
                .fetch_one(&mut *tx)
                .await?;
            if admins <= 1 {
                return Err(crate::StoreError::Conflict(format!(
                    "{username:?} is the last admin; add another admin first"
                )));
            }
        }
        for sql in [
            "DELETE FROM api_tokens WHERE user_id = (SELECT id FROM users WHERE username = $1)",
            "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE username = $1)",
            "DELETE FROM users WHERE username = $1",
        ] {
            sqlx::query(sql).bind(username).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_row)
            .collect()
    }

    /// Makes a token for `username`; returns its record and its value (shown once).
    pub async fn create_token(
        &self,
        username: &str,
        name: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(ApiToken, String)> {
        let user = self.find_user(username).await?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "no user {username:?}; `tern users list` shows the users"
            ))
        })?;
        let value = format!("tern_{}", crate::agents::random_secret(24));
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(user.id)
        .bind(name)
        .bind(secret_hash(&value))
        .bind(now)
        .bind(expires_at.map(|t| t.timestamp_millis()))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((
            ApiToken {
                id,
                username: user.username,
                name: name.to_string(),
                created_at: from_ms(now),
                expires_at,
                revoked: false,
                last_used_at: None,
            },
            value,
        ))
    }

    /// The user a token value belongs to, if the token is known, not revoked, not expired, and
    /// its user not disabled.
    pub async fn authenticate_token(&self, value: &str) -> Result<Option<User>> {
        let now = self.now_ms();
        let sql =
            "SELECT t.id AS token_id, t.last_used_at, u.id, u.username, u.role, u.password_hash, \
                   u.created_at, u.disabled_at FROM api_tokens t JOIN users u ON u.id = t.user_id \
                   WHERE t.token_hash = $1 AND t.revoked_at IS NULL \
                   AND (t.expires_at IS NULL OR t.expires_at > $2) AND u.disabled_at IS NULL";
        let Some(row) = sqlx::query(sql)
            .bind(secret_hash(value))
            .bind(now)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let last: Option<i64> = row.try_get("last_used_at")?;
        if last.is_none_or(|l| now - l > LAST_USED_EVERY_MS) {
            let id: i64 = row.try_get("token_id")?;
            // A write like any other: through the store's write path (one writer on SQLite).
            let (mut tx, _write_lock) = self.write_tx().await?;
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(Some(user_row(&row)?))
    }

    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(
            "SELECT t.id, u.username, t.name, t.created_at, t.expires_at, t.revoked_at, t.last_used_at \
             FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ApiToken {
                    id: r.try_get("id")?,
                    username: r.try_get("username")?,
                    name: r.try_get("name")?,
                    created_at: from_ms(r.try_get("created_at")?),
                    expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(from_ms),
                    revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
                    last_used_at: r.try_get::<Option<i64>, _>("last_used_at")?.map(from_ms),
                })
            })
            .collect()
    }

    /// Revokes a token; unknown ids are named.
    pub async fn revoke_token(&self, id: i64) -> Result<()> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no active token {id}; `tern tokens list` shows them"
            )));
        }
        Ok(())
    }

    /// Records a change in the audit log.
    pub async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> Result<()> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.now_ms())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, target, detail FROM audit_log ORDER BY at DESC, id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: from_ms(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}
