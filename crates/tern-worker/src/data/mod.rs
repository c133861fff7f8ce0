//! Data tasks that run in the agent process itself: `sql` (statements on a database
//! connection) and `sql_to_lake` (a query streamed into an object store). They use the agent's
//! connections by name, log the target (never a password, never row contents), and classify
//! their errors: an error that cannot succeed on retry fails the task at once.

pub mod cells;
pub mod db;
pub mod error;
pub mod export;
pub mod lake;
pub mod sql_task;

pub use error::DataError;
