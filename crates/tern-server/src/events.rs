//! In-process signals between the parts of a control plane: work was queued (wake agents),
//! DAGs changed (recompute schedules), a run finished (wake waiters).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Events {
    /// A task instance became queued. Raise it with [`Events::work_queued`].
    pub work: Notify,
    /// Counts [`Events::work_queued`] calls, so a claimer can tell whether anything was queued
    /// since it last looked.
    work_generation: AtomicU64,
    /// The set or versions of DAGs changed, or a DAG was paused or unpaused.
    pub dags: Notify,
    /// A DAG run finished.
    pub run_finished: Notify,
    /// A retry was scheduled: the scheduler recomputes when to wake.
    pub scheduler: Notify,
}

impl Events {
    /// Signals that task instances became queued in this process.
    pub fn work_queued(&self) {
        self.work_generation.fetch_add(1, Ordering::SeqCst);
        self.work.notify_waiters();
    }

    pub fn work_generation(&self) -> u64 {
        self.work_generation.load(Ordering::SeqCst)
    }

    /// Publishes what recording a result changed.
    pub fn applied(&self, applied: &tern_store::Applied) {
        if applied.queued_any {
            self.work_queued();
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
