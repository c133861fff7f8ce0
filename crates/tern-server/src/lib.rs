//! tern's control plane: everything that holds the metadata database.
//!
//! - [`dagsync`] loads the DAG folder and records versions and import errors;
//! - [`scheduler`] creates scheduled runs and does housekeeping (retries, leases);
//! - [`gateway`] is the agent side of the control plane, here in-process for the local agent;
//! - [`trigger`] creates manual runs with validated conf and params;
//! - [`http`] serves the HTTP endpoints: [`api`] (REST, OpenAPI), [`ui`] (web pages),
//!   [`agent_api`] (agents), all sharing [`state::AppState`];
//! - [`node`] wires the roles of one process together (`standalone`, `server`, `dags test`),
//!   each run and watched by [`supervise`].

pub mod agent_api;
pub mod api;
pub mod api_error;
pub mod auth;
pub mod bundle;
pub mod config;
pub mod connections;
pub mod dag_watch;
pub mod dagsync;
pub mod db_watch;
pub mod events;
pub mod gateway;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod scheduler;
pub mod secrets;
pub mod state;
pub mod supervise;
pub mod trigger;
pub mod ui;
pub mod variables;
pub mod wake;

pub use config::Config;
pub use node::{Node, Roles};
