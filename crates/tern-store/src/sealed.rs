//! Every value the control plane keeps sealed (connections' secrets, secret variables'
//! values), rewritten at once: what rotating the secret key does. The store never sees a
//! key: the caller's function opens each value with the old key and seals it with the new.

use sqlx::Row;

use crate::{Result, Store, StoreError};

/// How many values a [`Store::reseal_all`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resealed {
    pub connections: usize,
    pub variables: usize,
}

impl Store {
    /// Rewrites every sealed value through `reseal`, in one transaction: all are rewritten or,
    /// when `reseal` fails for one (naming it in the error), none.
    pub async fn reseal_all(
        &self,
        reseal: impl Fn(&str) -> std::result::Result<String, String>,
    ) -> Result<Resealed> {
        let (mut tx, _write_lock) = self.write_tx().await?;
        let mut done = Resealed::default();
        let connections = sqlx::query("SELECT name, secret FROM connections ORDER BY name")
            .fetch_all(&mut *tx)
            .await?;
        for r in connections {
            let name: String = r.try_get(0)?;
            let sealed: String = r.try_get(1)?;
            let fresh = reseal(&sealed)
                .map_err(|e| StoreError::Invalid(format!("connection {name:?}: {e}")))?;
            sqlx::query("UPDATE connections SET secret = $2 WHERE name = $1")
                .bind(&name)
                .bind(fresh)
                .execute(&mut *tx)
                .await?;
            done.connections += 1;
        }
        let variables =
            sqlx::query("SELECT key, value FROM variables WHERE is_secret = 1 ORDER BY key")
                .fetch_all(&mut *tx)
                .await?;
        for r in variables {
            let key: String = r.try_get(0)?;
            let sealed: String = r.try_get(1)?;
            let fresh = reseal(&sealed)
                .map_err(|e| StoreError::Invalid(format!("variable {key:?}: {e}")))?;
            sqlx::query("UPDATE variables SET value = $2 WHERE key = $1")
                .bind(&key)
                .bind(fresh)
                .execute(&mut *tx)
                .await?;
            done.variables += 1;
        }
        tx.commit().await?;
        Ok(done)
    }
}
