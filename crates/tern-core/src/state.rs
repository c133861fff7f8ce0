//! States of DAG runs and task instances, and how each is spelled in storage and on the wire.

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where a task instance is in its life.
    TaskState {
        /// Created with its run; upstream tasks not yet settled.
        None = "none",
        /// Upstream tasks satisfy the trigger rule; waiting for a pool slot or concurrency.
        Scheduled = "scheduled",
        /// Admitted: waiting for an agent of its queue to claim it.
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
        /// Failed, with tries left: runs again once its retry delay has passed.
        UpForRetry = "up_for_retry",
        /// A sensor whose condition did not hold yet: poked again after its interval, on the
        /// same try, without holding a slot meanwhile.
        UpForReschedule = "up_for_reschedule",
        UpstreamFailed = "upstream_failed",
        Skipped = "skipped",
        /// The task is no longer in the DAG version the run follows.
        Removed = "removed",
    }
);

impl TaskState {
    /// A final state: the instance will not change again unless cleared.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Success
                | TaskState::Failed
                | TaskState::UpstreamFailed
                | TaskState::Skipped
                | TaskState::Removed
        )
    }
}

/// One state standing for several instances (a task group's tasks in the grid, a mapped
/// task's instances), in Airflow's order: a failure shows first, then work in progress, then
/// waiting; all skipped is skipped, otherwise all done is success. `None` for no instance.
pub fn summary_state(states: impl IntoIterator<Item = TaskState>) -> Option<TaskState> {
    use TaskState as S;
    let seen: Vec<TaskState> = states.into_iter().collect();
    if seen.is_empty() {
        return None;
    }
    let first = [
        S::Failed,
        S::UpstreamFailed,
        S::UpForRetry,
        S::Running,
        S::Queued,
        S::Scheduled,
        S::UpForReschedule,
        S::None,
    ]
    .into_iter()
    .find(|s| seen.contains(s));
    Some(first.unwrap_or(if seen.iter().all(|s| *s == S::Skipped) {
        S::Skipped
    } else {
        S::Success
    }))
}

/// The states of a run's task instances, by task: one for a task that is not mapped (or not
/// expanded yet), one per instance for an expanded mapped task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStates(std::collections::HashMap<String, Vec<TaskState>>);

impl RunStates {
    pub fn with_capacity(n: usize) -> RunStates {
        RunStates(std::collections::HashMap::with_capacity(n))
    }

    /// Adds the state of one more instance of `task`.
    pub fn push(&mut self, task: String, state: TaskState) {
        self.0.entry(task).or_default().push(state);
    }

    /// The states of `task`'s instances (none when the run has no such task).
    pub fn of(&self, task: &str) -> &[TaskState] {
        self.0.get(task).map(Vec::as_slice).unwrap_or_default()
    }

    /// What an upstream task counts as for its downstream trigger rules: every instance, less
    /// the instances of a mapped task that its last expansion no longer has (`removed`); a task
    /// the run does not have counts as one `removed`.
    pub fn for_rules(&self, task: &str) -> impl Iterator<Item = TaskState> + '_ {
        let all = self.of(task);
        let mapped_and_live = all.len() > 1 && all.iter().any(|s| *s != TaskState::Removed);
        let missing = all.is_empty().then_some(TaskState::Removed);
        all.iter()
            .copied()
            .filter(move |s| !(mapped_and_live && *s == TaskState::Removed))
            .chain(missing)
    }

    /// Whether some instance of `task` has not started (state `none`).
    pub fn waiting(&self, task: &str) -> bool {
        self.of(task).contains(&TaskState::None)
    }

    /// Whether any instance of the run has not started (state `none`).
    pub fn any_waiting(&self) -> bool {
        self.0.values().flatten().any(|s| *s == TaskState::None)
    }

    /// Whether `task`'s instances are all still to start (a mapped task then expands again).
    pub fn all_waiting(&self, task: &str) -> bool {
        let all = self.of(task);
        !all.is_empty() && all.iter().all(|s| *s == TaskState::None)
    }

    /// Sets `task`'s instances that have not started to `state`.
    pub fn settle_waiting(&mut self, task: &str, state: TaskState) {
        if let Some(all) = self.0.get_mut(task) {
            for s in all.iter_mut().filter(|s| **s == TaskState::None) {
                *s = state;
            }
        }
    }

    /// Replaces `task`'s instances with `n` instances in `state` (after an expansion).
    pub fn replace(&mut self, task: &str, n: usize, state: TaskState) {
        self.0.insert(task.to_string(), vec![state; n]);
    }

    /// Whether any instance of `task` failed or had an upstream failure.
    pub fn any_failed(&self, task: &str) -> bool {
        self.of(task)
            .iter()
            .any(|s| matches!(s, TaskState::Failed | TaskState::UpstreamFailed))
    }

    /// Whether every instance of the run is in a final state.
    pub fn all_finished(&self) -> bool {
        self.0.values().flatten().all(|s| s.is_finished())
    }
}

string_enum!(
    /// Where a DAG run is in its life.
    RunState {
        Queued = "queued",
        Running = "running",
        Success = "success",
        Failed = "failed",
    }
);

impl RunState {
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

string_enum!(
    /// Why a DAG run exists.
    RunType {
        Scheduled = "scheduled",
        Manual = "manual",
        Backfill = "backfill",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        for s in RunState::ALL {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), *s);
        }
        assert!("bogus"
            .parse::<TaskState>()
            .unwrap_err()
            .contains("expected one of"));
    }
}
