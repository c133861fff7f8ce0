//! In-process signals between the parts of a control plane: work was queued (wake agents),
//! DAGs changed (recompute schedules), a run finished (wake waiters).

use tokio::sync::Notify;

#[derive(Default)]
pub struct Events {
    /// A task instance became queued.
    pub work: Notify,
    /// The set or versions of DAGs changed, or a DAG was paused or unpaused.
    pub dags: Notify,
    /// A DAG run finished.
    pub run_finished: Notify,
    /// Something the scheduler should look at soon (a retry was scheduled, a run was queued).
    pub scheduler: Notify,
}

impl Events {
    /// Publishes what recording a result changed.
    pub fn applied(&self, applied: &tern_store::Applied) {
        if applied.queued_any {
            self.work.notify_waiters();
        }
        if applied.run_finished {
            self.run_finished.notify_waiters();
        }
        if applied.accepted {
            self.scheduler.notify_one();
        }
    }
}
