//! Remote agents: one-time activation codes, agent credentials (stored hashed), revocation,
//! and what an agent may serve. The queues an agent serves are decided here, from the code it
//! was activated with, never from what the agent asks for.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::time::from_ms;
use crate::{Result, Store, StoreError};

/// The queue every agent of site `site` serves.
pub fn site_queue(site: &str) -> String {
    format!("site:{site}")
}

/// A registered agent, as the control plane shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub id: i64,
    pub name: String,
    pub site: String,
    pub queues: Vec<String>,
    pub version: String,
    pub address: String,
    pub created_at: DateTime<Utc>,
    pub last_seen: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// Names of the site-local connections the agent reported (never their values).
    pub connections: Vec<String>,
    /// Whether the agent called within [`CONNECTED_WINDOW`].
    pub connected: bool,
    /// Attempts the agent holds now (filled by [`Store::list_agents`]).
    pub running: i64,
}

/// A freshly created activation code: shown once, stored only as a hash.
#[derive(Debug, Clone, Serialize)]
pub struct NewActivation {
    pub code: String,
    pub site: String,
    pub queues: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// An activation code as it may be listed: never the code itself (only its hash is stored).
#[derive(Debug, Clone, Serialize)]
pub struct ActivationInfo {
    pub id: i64,
    pub site: String,
    pub queues: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    /// The agent it activated.
    pub agent_id: Option<i64>,
    /// `waiting` (may still be used), `used` or `expired` (also when cancelled).
    pub state: &'static str,
}

/// What an agent receives when it activates: its identity and its credential (shown once).
#[derive(Debug, Clone, Serialize)]
pub struct Activated {
    pub agent: AgentRow,
    pub token: String,
}

/// A random token (48 hex digits), e.g. for a form's CSRF token.
pub fn random_token() -> String {
    random_secret(24)
}

pub(crate) fn random_secret(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The stored form of a code or token.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn valid_site(site: &str) -> bool {
    !site.is_empty()
        && site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

const AGENT_COLUMNS: &str =
    "id, name, site, queues, version, address, created_at, last_seen, revoked_at, connections";

fn agent_row(r: &sqlx::any::AnyRow, now: i64) -> Result<AgentRow> {
    Ok(AgentRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        site: r.try_get("site")?,
        queues: serde_json::from_str(&r.try_get::<String, _>("queues")?)?,
        version: r.try_get("version")?,
        address: r.try_get("address")?,
        created_at: from_ms(r.try_get("created_at")?),
        last_seen: r.try_get::<Option<i64>, _>("last_seen")?.map(from_ms),
        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        connections: serde_json::from_str(&r.try_get::<String, _>("connections")?)?,
        connected: r
            .try_get::<Option<i64>, _>("last_seen")?
            .is_some_and(|t| t >= now - CONNECTED_WINDOW.as_millis() as i64),
        running: 0,
    })
}

impl Store {
    /// Creates a single-use activation code for an agent of `site`, valid for `ttl`. The
    /// agent will serve `site:SITE` plus `extra_queues`.
    pub async fn create_activation(
        &self,
        site: &str,
        extra_queues: &[String],
        ttl: Duration,
    ) -> Result<NewActivation> {
        if !valid_site(site) {
            return Err(StoreError::Invalid(format!(
                "site name {site:?} is invalid: use letters, digits, `-`, `_` and `.`"
            )));
        }
        let mut queues = vec![site_queue(site)];
        for q in extra_queues {
            if q.starts_with("site:") && *q != site_queue(site) {
                return Err(StoreError::Invalid(format!(
                    "queue {q:?} belongs to another site; an agent of site {site:?} may only serve site:{site} and plain queues"
                )));
            }
            if !queues.contains(q) {
                queues.push(q.clone());
            }
        }
        let code = random_secret(12);
        let now = self.now_ms();
        let expires = now + ttl.as_millis() as i64;
        sqlx::query(
            "INSERT INTO activation_codes (code_hash, site, queues, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(secret_hash(&code))
        .bind(site)
        .bind(serde_json::to_string(&queues)?)
        .bind(now)
        .bind(expires)
        .execute(&self.pool)
        .await?;
        Ok(NewActivation {
            code,
            site: site.to_string(),
            queues,
            expires_at: from_ms(expires),
        })
    }

    /// The activation codes, newest first (at most `limit`).
    pub async fn list_activations(&self, limit: i64) -> Result<Vec<ActivationInfo>> {
        let now = self.now_ms();
        let rows = sqlx::query(
            "SELECT id, site, queues, created_at, expires_at, used_at, agent_id FROM activation_codes ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let expires: i64 = r.try_get(4)?;
            let used: Option<i64> = r.try_get(5)?;
            out.push(ActivationInfo {
                id: r.try_get(0)?,
                site: r.try_get(1)?,
                queues: serde_json::from_str(&r.try_get::<String, _>(2)?)?,
                created_at: from_ms(r.try_get(3)?),
                expires_at: from_ms(expires),
                used_at: used.map(from_ms),
                agent_id: r.try_get(6)?,
                state: match used {
                    Some(_) => "used",
                    None if expires < now => "expired",
                    None => "waiting",
                },
            });
        }
        Ok(out)
    }

    /// Cancels a code that has not been used: it expires now. A used code is a conflict (revoke
    /// its agent instead).
    pub async fn cancel_activation(&self, id: i64) -> Result<()> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let row = sqlx::query("SELECT used_at, expires_at FROM activation_codes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no activation code {id}")))?;
        if row.try_get::<Option<i64>, _>(0)?.is_some() {
            return Err(StoreError::Conflict(format!(
                "activation code {id} was already used; revoke the agent it activated instead"
            )));
        }
        if row.try_get::<i64, _>(1)? >= now {
            sqlx::query("UPDATE activation_codes SET expires_at = $1 WHERE id = $2")
                .bind(now - 1)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Exchanges an activation code for an agent credential. A code works once and only
    /// before it expires; the error says which it was.
    pub async fn activate(
        &self,
        code: &str,
        name: &str,
        version: &str,
        address: &str,
    ) -> Result<Activated> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let row = sqlx::query("SELECT id, site, queues, expires_at, used_at FROM activation_codes WHERE code_hash = $1")
            .bind(secret_hash(code))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound("unknown activation code; create one with `tern agents activation create --site SITE`".into()))?;
        let code_id: i64 = row.try_get(0)?;
        let site: String = row.try_get(1)?;
        let queues: String = row.try_get(2)?;
        if row.try_get::<Option<i64>, _>(4)?.is_some() {
            return Err(StoreError::Conflict(
                "this activation code was already used; create a new one".into(),
            ));
        }
        if row.try_get::<i64, _>(3)? < now {
            return Err(StoreError::Conflict(
                "this activation code has expired; create a new one".into(),
            ));
        }
        let token = random_secret(32);
        let agent_id: i64 = sqlx::query_scalar(
            "INSERT INTO agents (name, site, queues, token_hash, version, address, created_at, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING id",
        )
        .bind(name)
        .bind(&site)
        .bind(&queues)
        .bind(secret_hash(&token))
        .bind(version)
        .bind(address)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let used = sqlx::query("UPDATE activation_codes SET used_at = $2, agent_id = $3 WHERE id = $1 AND used_at IS NULL")
            .bind(code_id)
            .bind(now)
            .bind(agent_id)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() != 1 {
            return Err(StoreError::Conflict(
                "this activation code was already used; create a new one".into(),
            ));
        }
        tx.commit().await?;
        Ok(Activated {
            agent: self.get_agent(agent_id).await?,
            token,
        })
    }

    /// The agent a credential belongs to, if it is valid and not revoked; records that the
    /// agent was seen.
    pub async fn authenticate_agent(&self, token: &str, address: &str) -> Result<Option<AgentRow>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(secret_hash(token))
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut agent = agent_row(&row, self.now_ms())?;
        if agent.revoked {
            return Ok(None);
        }
        let now = self.now_ms();
        // Writing `last_seen` on every call (every log chunk) would make each call a write;
        // once per few seconds is enough to tell connected agents from gone ones.
        let stale = agent
            .last_seen
            .is_none_or(|t| now - t.timestamp_millis() > LAST_SEEN_RESOLUTION_MS);
        if stale || agent.address != address {
            sqlx::query("UPDATE agents SET last_seen = $2, address = $3 WHERE id = $1")
                .bind(agent.id)
                .bind(now)
                .bind(address)
                .execute(&self.pool)
                .await?;
            agent.last_seen = Some(from_ms(now));
            agent.address = address.to_string();
            agent.connected = true;
        }
        Ok(Some(agent))
    }

    /// Records what an agent reported about itself: the names of its site-local connections.
    pub async fn record_agent_connections(&self, id: i64, names: &[String]) -> Result<()> {
        sqlx::query("UPDATE agents SET connections = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(names)?)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_agent(&self, id: i64) -> Result<AgentRow> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("no agent {id}; `tern agents list` shows them"))
            })?;
        agent_row(&row, self.now_ms())
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentRow>> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents ORDER BY site, id");
        let mut agents: Vec<AgentRow> = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| agent_row(r, self.now_ms()))
            .collect::<Result<_>>()?;
        let held = sqlx::query(
            "SELECT worker, COUNT(*) FROM task_instances WHERE state = 'running' AND worker LIKE 'agent-%' GROUP BY worker",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in held {
            let worker: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            if let Some(a) = agents
                .iter_mut()
                .find(|a| agent_worker_name(a.id) == worker)
            {
                a.running = n;
            }
        }
        Ok(agents)
    }

    /// Revokes an agent: its credential stops working at its next call, and the attempts it
    /// holds are failed (retryable) at once.
    pub async fn revoke_agent(&self, id: i64) -> Result<usize> {
        let done =
            sqlx::query("UPDATE agents SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(self.now_ms())
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            self.get_agent(id).await?;
            return Err(StoreError::Conflict(format!(
                "agent {id} is already revoked"
            )));
        }
        self.fail_attempts_of_worker(
            &agent_worker_name(id),
            "attempt lost: its agent was revoked",
        )
        .await
    }
}

/// How attempts of remote agent `id` are labelled (`worker`).
pub fn agent_worker_name(id: i64) -> String {
    format!("agent-{id}")
}

/// The remote agent a `worker` label names, if it names one.
pub fn agent_id_of_worker(worker: &str) -> Option<i64> {
    worker.strip_prefix("agent-")?.parse().ok()
}

impl Store {
    /// Fails with [`StoreError::Revoked`] when agent `id` is revoked or unknown. Inside a
    /// transaction the agent's row is share-locked (PostgreSQL) until it ends.
    pub(crate) async fn refuse_revoked_agent(
        &self,
        tx: Option<&mut sqlx::Transaction<'static, sqlx::Any>>,
        id: i64,
    ) -> Result<()> {
        let lock = match (&tx, self.backend()) {
            (Some(_), crate::Backend::Postgres) => " FOR SHARE",
            _ => "",
        };
        let sql = format!("SELECT revoked_at FROM agents WHERE id = $1{lock}");
        let q = sqlx::query_scalar::<_, Option<i64>>(&sql).bind(id);
        let revoked_at = match tx {
            Some(tx) => q.fetch_optional(&mut **tx).await?,
            None => q.fetch_optional(&self.pool).await?,
        };
        match revoked_at {
            Some(None) => Ok(()),
            Some(Some(_)) => Err(StoreError::Revoked(format!(
                "agent {id} was revoked; activate it again with a new code"
            ))),
            None => Err(StoreError::Revoked(format!("agent {id} is unknown"))),
        }
    }

    /// Marks agents as seen now (those waiting in a claim long-poll), in one statement.
    pub async fn touch_agents(&self, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = ids
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query(&format!(
            "UPDATE agents SET last_seen = $1 WHERE id IN ({list}) AND revoked_at IS NULL"
        ))
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many agents have been revoked: a cheap way for a server to notice a revocation
    /// made by another process.
    pub async fn revoked_agent_count(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE revoked_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// An agent counts as connected when it was seen within this window: a call, or a claim
/// long-poll that is still open (servers refresh `last_seen` of waiting agents every
/// [`SEEN_REFRESH`]), so a stopped agent stops counting within seconds.
pub const CONNECTED_WINDOW: Duration = Duration::from_secs(12);

/// How often a server marks the agents waiting in its claim long-polls as seen.
pub const SEEN_REFRESH: Duration = Duration::from_secs(4);

/// `last_seen` is refreshed by calls at most this often per agent.
const LAST_SEEN_RESOLUTION_MS: i64 = 4_000;

impl Store {
    /// Notes on every queued site task whose site has no connected agent why it waits, clears
    /// the note once one is connected, and fails those queued longer than `queue_timeout` (if
    /// set). Returns how many were failed.
    pub async fn review_site_queues(&self, queue_timeout: Option<Duration>) -> Result<usize> {
        let now = self.now_ms();
        let connected_since = now - CONNECTED_WINDOW.as_millis() as i64;
        let rows = sqlx::query(
            "SELECT DISTINCT queue FROM task_instances WHERE state = 'queued' AND queue LIKE 'site:%'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut failed = 0;
        for r in rows {
            let queue: String = r.try_get(0)?;
            let site = queue.trim_start_matches("site:").to_string();
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM agents WHERE site = $1 AND revoked_at IS NULL AND last_seen >= $2",
            )
            .bind(&site)
            .bind(connected_since)
            .fetch_one(&self.pool)
            .await?;
            let note = if live == 0 {
                Some(format!("no connected agent for site {site}"))
            } else {
                None
            };
            sqlx::query(
                "UPDATE task_instances SET note = $2 WHERE state = 'queued' AND queue = $1 \
                 AND COALESCE(note, '') <> COALESCE($2, '')",
            )
            .bind(&queue)
            .bind(&note)
            .execute(&self.pool)
            .await?;
            if let (Some(timeout), Some(note)) = (queue_timeout, note) {
                failed += self
                    .fail_queued_before(&queue, now - timeout.as_millis() as i64, &note)
                    .await?;
            }
        }
        Ok(failed)
    }
}
