//! tern's domain model and the pure rules the scheduler applies to it.
//!
//! Nothing here performs I/O: no files, no clock reads (callers pass `now`), no database, no
//! async runtime. Every other crate depends on this one, so it stays small and stable.

pub mod container;
pub mod duration;
pub mod flow;
pub mod ids;
pub mod mapping;
pub mod params;
pub mod retry;
pub mod schedule;
pub mod sensor;
pub mod spec;
pub mod spelling;
pub mod state;
pub mod trigger;

pub use container::{ContainerTask, Mount, Sandbox};
pub use duration::{format_duration, human_duration, parse_duration, DurationError};
pub use flow::{Flow, Skips};
pub use mapping::{Expand, ExpandKey, MapSource};
pub use schedule::{DataInterval, Schedule, ScheduleError};
pub use sensor::{SensorCheck, SensorTask};
pub use spec::{
    CsvOptions, DagSpec, ExportFormat, GroupSpec, HttpTask, ParamRules, ParamSpec,
    ParquetCompression, SqlTask, SqlToLakeTask, TaskKind, TaskSpec,
};
pub use state::{RunState, RunStates, RunType, TaskState};
pub use trigger::{TriggerRule, UpstreamSummary};
