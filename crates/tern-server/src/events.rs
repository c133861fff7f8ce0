//! In-process signals between the parts of a control plane: work was queued (wake the queue
//! watcher, which wakes the agents of the queues that have work), admission was left to the
//! admitter, DAGs changed (recompute schedules), a run finished (wake waiters).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Events {
    /// A task instance became queued in this process: a hint for the queue watcher (one
    /// stored permit, so a hint given while it is busy is not lost).
    pub work: Notify,
    /// Per queue: claims of agents serving it wait here; the watcher wakes a queue when it has
    /// queued tasks.
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    /// The set or versions of DAGs changed, or a DAG was paused or unpaused.
    pub dags: Notify,
    /// Someone asked for the DAG files to be read again now (a bundle fetched): one stored
    /// permit.
    pub dags_refresh: Notify,
    /// A result left admission to the admitter (the admission lock was busy): one stored
    /// permit, so results that arrive while it admits are covered by its next pass.
    pub admission: Notify,
    /// A DAG run finished.
    pub run_finished: Notify,
    /// A retry was scheduled: the scheduler recomputes when to wake.
    pub scheduler: Notify,
    /// An agent was revoked (here or by another process): waiting claims of remote agents
    /// look again, so a revoked agent is refused at once.
    pub agents_revoked: Notify,
    /// The roles of this process and their last beats (see [`crate::supervise`]).
    pub roles: Arc<crate::supervise::RoleBoard>,
}

impl Events {
    /// Signals that task instances became queued in this process.
    pub fn work_queued(&self) {
        self.work.notify_one();
    }

    /// The signal claims of `queue` wait on.
    pub fn queue_signal(&self, queue: &str) -> Arc<Notify> {
        self.queues
            .lock()
            .expect("queue signals")
            .entry(queue.to_string())
            .or_default()
            .clone()
    }

    /// Wakes the claims waiting on these queues.
    pub fn wake_queues(&self, queues: &[String]) {
        let signals = self.queues.lock().expect("queue signals");
        for q in queues {
            if let Some(n) = signals.get(q) {
                n.notify_waiters();
            }
        }
    }

    /// Publishes what recording a result changed.
    pub fn applied(&self, applied: &tern_store::Applied) {
        // The result's transaction knows which queues got work: wake those directly.
        self.wake_queues(&applied.queued_queues);
        if applied.admission_deferred {
            self.admission.notify_one();
        }
        if applied.run_finished {
            self.run_finished.notify_waiters();
        }
        // The scheduler only needs waking for a retry; every other consequence of a result was
        // applied in its transaction.
        if applied.retry_pending {
            self.scheduler.notify_one();
        }
    }
}
