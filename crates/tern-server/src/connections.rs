//! Connections kept by the control plane: validated like an agent's, sealed with the
//! [`SecretBox`] before they reach the store, opened only to be sent with an assignment to the
//! agent that runs a task naming them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tern_protocol::ConnectionSpec;
use tern_store::connections::StoredConnection;
use tern_store::Store;
use tern_worker::connections::{Connection, ConnectionConfig};

use crate::secrets::SecretBox;

/// What is sealed: the URI and the extra fields.
#[derive(Serialize, Deserialize)]
struct Sealed {
    uri: String,
    #[serde(default)]
    extra: Map<String, Value>,
}

/// Validates and stores a connection; returns it as parsed (for a summary).
pub async fn add(
    store: &Store,
    secrets: &SecretBox,
    name: &str,
    uri: &str,
    extra: Map<String, Value>,
    description: &str,
    replace: bool,
) -> anyhow::Result<Connection> {
    let cfg = ConnectionConfig {
        uri: uri.to_string(),
        extra: extra.clone(),
    };
    let parsed = Connection::parse(name, "the command line", &cfg)?;
    let sealed = secrets.seal(&serde_json::to_string(&Sealed {
        uri: uri.to_string(),
        extra,
    })?);
    let now = chrono::Utc::now();
    store
        .put_connection(
            &StoredConnection {
                name: name.to_string(),
                conn_type: parsed.conn_type.clone(),
                host: parsed.host.clone().unwrap_or_default(),
                login: parsed.login.clone().unwrap_or_default(),
                secret: sealed,
                description: description.to_string(),
                created_at: now,
                updated_at: now,
            },
            replace,
        )
        .await?;
    Ok(parsed)
}

/// The connection `name` in clear, if the control plane keeps one.
pub async fn resolve(
    store: &Store,
    secrets: &SecretBox,
    name: &str,
) -> anyhow::Result<Option<ConnectionSpec>> {
    let Some(c) = store.find_connection(name).await? else {
        return Ok(None);
    };
    let sealed: Sealed = serde_json::from_str(&secrets.open(&c.secret)?)?;
    Ok(Some(ConnectionSpec {
        uri: sealed.uri,
        extra: sealed.extra,
    }))
}

/// A parsed connection, for `show` and `test`.
pub async fn parsed(
    store: &Store,
    secrets: &SecretBox,
    name: &str,
) -> anyhow::Result<Option<Connection>> {
    Ok(match resolve(store, secrets, name).await? {
        None => None,
        Some(spec) => Some(Connection::parse(
            name,
            "the store",
            &ConnectionConfig {
                uri: spec.uri,
                extra: spec.extra,
            },
        )?),
    })
}
