//! Runs tasks. The same code serves the in-process agent of `standalone` and a remote
//! `tern agent`; only the [`ControlPlane`] transport differs.
//!
//! Architecture invariant: this crate never touches the metadata store. Everything it knows
//! about a task arrives in an [`Assignment`](tern_protocol::Assignment), and everything it
//! reports leaves through [`ControlPlane`].

pub mod agent;
pub mod connections;
pub mod container;
pub mod data;
pub mod ended;
pub mod executor;
pub mod groups;
pub mod guardian;
pub mod http_transport;
pub mod journal;
pub mod logsink;
pub mod mask;
pub mod outputs;
pub mod process;
pub mod resident;
pub mod sandbox;
pub mod shellsafe;
pub mod spool;
pub mod spooling;
pub mod template;
pub mod transport;
pub mod variables;
pub mod venv;
pub mod workdir;

pub use agent::{Agent, AgentConfig};
pub use executor::{execute, ExecOptions};
pub use logsink::LogSink;
pub use transport::{ControlPlane, TransportError};
