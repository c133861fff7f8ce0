//! Web UI sessions: created at login, found by the cookie's value (kept only as a SHA-256
//! hash), each with its own CSRF token, ended at logout or expiry.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::agents::{random_secret, secret_hash};
use crate::time::from_ms;
use crate::users::User;
use crate::{Result, Store};

/// A logged-in browser: who, the CSRF token its forms must carry, and until when.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

impl Store {
    /// Starts a session for `user_id` lasting `ttl`; returns the cookie value (given out once)
    /// and the session.
    pub async fn create_session(
        &self,
        user_id: i64,
        ttl: std::time::Duration,
    ) -> Result<(String, String)> {
        let value = random_secret(32);
        let csrf = random_secret(24);
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        // Expired sessions go when new ones come.
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(secret_hash(&value))
        .bind(user_id)
        .bind(&csrf)
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((value, csrf))
    }

    /// The live session a cookie value belongs to (not expired, user not disabled).
    pub async fn find_session(&self, value: &str) -> Result<Option<Session>> {
        let row = sqlx::query(
            "SELECT s.csrf, s.expires_at, u.id, u.username, u.role, u.password_hash, u.created_at, \
             u.disabled_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
        )
        .bind(secret_hash(value))
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Session {
            user: crate::users::user_row(&r)?,
            csrf: r.try_get("csrf")?,
            expires_at: from_ms(r.try_get("expires_at")?),
        }))
    }

    /// Ends a session (logout); unknown values are ignored.
    pub async fn end_session(&self, value: &str) -> Result<()> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(secret_hash(value))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
