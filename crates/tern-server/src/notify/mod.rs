//! DAG notifications: the notifier loop that drains the store's outbox (see
//! `tern_store::notifications`). It runs next to the scheduler, claims due rows, sends each to
//! its connection (webhook or mail) within a deadline, and records the outcome: sent, tried
//! again after the next back-off delay, or failed with the error (a permanent error at once,
//! a passing one after the last try). The scheduler never waits for it; rows left pending by a
//! stopped process are sent by the next one.
//!
//! - [`target`] resolves connection names into webhooks and mail servers;
//! - [`message`] renders what is sent;
//! - [`webhook`] and [`email`] send it.

pub mod email;
pub mod message;
pub mod target;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use tern_store::notifications::{Delivery, Notification};
use tern_store::Store;
use tern_worker::connections::Connections;
use tokio_util::sync::CancellationToken;

use crate::secrets::SecretBox;
use target::{Resolver, Target};

/// Why a try to send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Trying again will not help (unknown connection, 4xx answer, bad address).
    #[error("{0}")]
    Permanent(String),
    /// May pass (5xx, 408/429, timeout, refused connection).
    #[error("{0}")]
    Transient(String),
}

/// How notifications are sent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The web UI's address, for links to runs.
    pub base_url: Option<String>,
    /// Deadline of one try.
    pub timeout: Duration,
    /// Waits after failed tries; one try more than there are waits.
    pub retry_delays: Vec<Duration>,
    /// How often the outbox is looked at.
    pub poll: Duration,
    /// Rows sent at once.
    pub batch: usize,
}

impl Settings {
    /// What to record after try `tries` (1-based) ended with `result`.
    pub fn outcome(&self, tries: u32, result: Result<(), SendError>) -> Delivery {
        match result {
            Ok(()) => Delivery::Sent,
            Err(SendError::Permanent(error)) => Delivery::Failed { error },
            Err(SendError::Transient(error)) => {
                match self.retry_delays.get(tries.saturating_sub(1) as usize) {
                    Some(delay) => Delivery::RetryAt {
                        at: chrono::Utc::now()
                            + chrono::Duration::from_std(*delay).unwrap_or_default(),
                        error,
                    },
                    None => Delivery::Failed {
                        error: format!("gave up after {tries} tries: {error}"),
                    },
                }
            }
        }
    }
}

/// Sends the outbox's notifications.
pub struct Notifier {
    pub store: Store,
    pub settings: Settings,
    resolver: Resolver,
}

/// Sent and failed notifications are kept this long.
const KEEP: chrono::Duration = chrono::Duration::days(30);

impl Notifier {
    /// A notifier resolving connections from `env` (`TERN_CONN_<NAME>` variables) first, then
    /// from the connections the control plane keeps (opened with `secrets`).
    pub fn new(
        store: Store,
        secrets: Option<Arc<SecretBox>>,
        env: Connections,
        settings: Settings,
    ) -> Notifier {
        Notifier {
            resolver: Resolver {
                store: store.clone(),
                secrets,
                env,
            },
            store,
            settings,
        }
    }

    /// The notifier of a control plane with settings `cfg`.
    pub fn from_config(
        cfg: &crate::Config,
        store: Store,
        secrets: Option<Arc<SecretBox>>,
    ) -> anyhow::Result<Notifier> {
        use anyhow::Context;
        let env = Connections::resolve(&Default::default(), "", std::env::vars())
            .context("a TERN_CONN_<NAME> variable of the control plane")?;
        let settings = Settings {
            base_url: cfg.notifications.base_url.clone(),
            timeout: cfg.notification_timeout()?,
            retry_delays: cfg.notification_retry_delays()?,
            poll: Duration::from_secs(1),
            batch: 16,
        };
        Ok(Notifier::new(store, secrets, env, settings))
    }

    /// Sends due notifications until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut next_prune = tokio::time::Instant::now();
        loop {
            // Stopping drops a pass in flight: its rows stay claimed and are sent again once
            // their lease lapses, so a slow endpoint never holds up a shutdown.
            let passed = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.pass() => r,
            };
            let full = match passed {
                Ok(n) => n >= self.settings.batch,
                Err(e) => {
                    tracing::error!("sending notifications failed: {e}");
                    false
                }
            };
            if tokio::time::Instant::now() >= next_prune {
                match self
                    .store
                    .prune_notifications(chrono::Utc::now() - KEEP)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "pruned old notifications"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("pruning old notifications failed: {e}"),
                }
                next_prune += Duration::from_secs(3600);
            }
            let wait = if full {
                Duration::ZERO
            } else {
                self.settings.poll
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Claims and sends one batch of due notifications; returns how many were claimed.
    pub async fn pass(&self) -> tern_store::Result<usize> {
        let lease = target::claim_lease(self.settings.timeout);
        let batch = self
            .store
            .claim_notifications(self.settings.batch, lease)
            .await?;
        let n = batch.len();
        let sends = batch.into_iter().map(|row| async move {
            let result = self.send(&row).await;
            let delivery = self.settings.outcome(row.tries, result);
            log(&row, &delivery);
            crate::metrics::metrics().notification(match &delivery {
                Delivery::Sent => "sent",
                Delivery::RetryAt { .. } => "retry",
                Delivery::Failed { .. } => "failed",
            });
            match self
                .store
                .finish_notification(row.id, row.tries, &delivery)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    id = row.id,
                    "notification outcome not recorded: its claim lapsed and another sender took it"
                ),
                Err(e) => tracing::error!(id = row.id, "recording a notification failed: {e}"),
            }
        });
        futures::future::join_all(sends).await;
        Ok(n)
    }

    /// One try to send `row` to its connection.
    async fn send(&self, row: &Notification) -> Result<(), SendError> {
        let timeout = self.settings.timeout;
        let base = self.settings.base_url.as_deref();
        match self.resolver.target(&row.conn, &row.hook).await? {
            Target::Webhook(hook) => {
                webhook::post(&hook, &message::json_body(row, base), timeout).await
            }
            Target::Email(smtp) => {
                email::send(
                    &row.conn,
                    &smtp,
                    &message::subject(row),
                    message::text_body(row, base),
                    timeout,
                )
                .await
            }
        }
    }
}

fn log(row: &Notification, delivery: &Delivery) {
    let (dag, run, conn, event, tries) = (
        row.dag_id.as_str(),
        row.run_id.as_str(),
        row.conn.as_str(),
        row.event.as_str(),
        row.tries,
    );
    match delivery {
        Delivery::Sent => {
            tracing::info!(dag, run, conn, event, tries, "notification sent")
        }
        Delivery::RetryAt { at, error } => tracing::warn!(
            dag, run, conn, event, tries, retry_at = %at,
            "notification of DAG {dag} via connection {conn} failed, will try again: {error}"
        ),
        Delivery::Failed { error } => tracing::error!(
            dag,
            run,
            conn,
            event,
            tries,
            "notification of DAG {dag} via connection {conn} ({}) failed for good: {error}",
            row.hook
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_retry_per_the_delays_then_fail() {
        let s = Settings {
            base_url: None,
            timeout: Duration::from_secs(1),
            retry_delays: vec![Duration::from_secs(10), Duration::from_secs(30)],
            poll: Duration::from_secs(1),
            batch: 8,
        };
        let t = || Err(SendError::Transient("503".into()));
        assert!(matches!(s.outcome(1, t()), Delivery::RetryAt { .. }));
        assert!(matches!(s.outcome(2, t()), Delivery::RetryAt { .. }));
        assert_eq!(
            s.outcome(3, t()),
            Delivery::Failed {
                error: "gave up after 3 tries: 503".into()
            }
        );
        assert_eq!(
            s.outcome(1, Err(SendError::Permanent("400".into()))),
            Delivery::Failed {
                error: "400".into()
            }
        );
        assert_eq!(s.outcome(1, Ok(())), Delivery::Sent);
    }
}
