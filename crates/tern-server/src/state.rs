//! What every HTTP handler of the control plane shares: the store, the task logs, the sealed
//! connections, the DAG folder (for DAG source), and the web UI's login limiter.

use std::sync::Arc;

use tern_store::Store;

use crate::auth::HasStore;
use crate::logs::LogStore;
use crate::secrets::SecretBox;

/// Settings of the HTTP side that come from the configuration.
#[derive(Debug, Clone, Default)]
pub struct WebOptions {
    /// The DAG folder this server loaded last (a bundle's tree moves), to show a DAG's source.
    pub dags_folder: crate::bundle::CurrentFolder,
    /// Whether the server speaks TLS: session cookies are then `Secure`.
    pub tls: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub logs: LogStore,
    pub secrets: Option<Arc<SecretBox>>,
    pub options: WebOptions,
    /// This process's signals (a DAG refresh asked through the API).
    pub events: Arc<crate::events::Events>,
    pub login_limiter: Arc<crate::ui::session::LoginLimiter>,
}

impl HasStore for AppState {
    fn store(&self) -> &Store {
        &self.store
    }
}
