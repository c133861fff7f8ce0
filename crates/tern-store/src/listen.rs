//! Hearing about queued work from other processes at once: on PostgreSQL every task instance
//! that becomes queued notifies channel `tern_queued` with its queue (a trigger, migration
//! 0015), and a [`QueuedListener`] receives them on a connection of its own. SQLite has no
//! such channel: its watchers look at the file's data version.

use sqlx::postgres::PgListener;

use crate::{Backend, Result, Store};

/// The channel the trigger notifies.
const CHANNEL: &str = "tern_queued";

/// Receives the queues that got work, from any process on the database.
pub struct QueuedListener {
    listener: PgListener,
}

/// What a listener heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// These queues got work (each once).
    Queued(Vec<String>),
    /// The connection was lost and made again: notifications in between are lost, so the
    /// caller must look at the queues itself.
    Reconnected,
}

impl Store {
    /// A listener for queued work; `None` on SQLite.
    pub async fn listen_for_queued(&self) -> Result<Option<QueuedListener>> {
        if self.backend() != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(QueuedListener { listener }))
    }
}

impl QueuedListener {
    /// Waits for the next notification, then takes every one already received with it.
    pub async fn next(&mut self) -> Result<Heard> {
        let Some(first) = self.listener.try_recv().await? else {
            return Ok(Heard::Reconnected);
        };
        let mut queues = vec![first.payload().to_string()];
        while let Some(more) = self.listener.next_buffered() {
            let q = more.payload();
            if !queues.iter().any(|known| known == q) {
                queues.push(q.to_string());
            }
        }
        Ok(Heard::Queued(queues))
    }
}
