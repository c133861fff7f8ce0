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
