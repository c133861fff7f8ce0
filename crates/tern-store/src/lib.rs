//! tern's metadata store: the only code that speaks SQL to the metadata database.
//!
//! One [`Store`] serves SQLite (one file, WAL, the default) and PostgreSQL (several servers and
//! schedulers) with the same behaviour: the same queries run on both through sqlx's `Any` driver,
//! with the few dialect differences kept in [`Backend`]. Times are stored as UTC epoch
//! milliseconds and flags as 0/1 integers so every column decodes identically on both.
//!
//! Architecture invariant: state changes of task instances happen in transactions that also
//! apply their consequences (downstream readiness, admission to queues, run completion), so an
//! event never waits for a polling tick and a crash never leaves half an event applied.

mod across_runs;
pub mod agents;
mod attempts;
pub mod browse;
mod connect;
pub mod connections;
pub mod dags;
mod error;
mod gathered;
pub mod listen;
pub mod live_logs;
pub mod manage;
mod mapping;
pub mod model;
pub mod nodes;
pub mod notifications;
pub mod overview;
pub mod pools;
mod results;
pub mod runs;
pub mod sealed;
pub mod sessions;
pub mod stats;
pub mod tasks;
mod time;
pub mod users;
pub mod variables;

pub use connect::{Backend, Store};
pub use error::StoreError;
pub use model::*;
#[doc(hidden)]
pub use results::PausedResults;
pub use time::{from_ms, to_ms, Clock, ManualClock, SystemClock};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
