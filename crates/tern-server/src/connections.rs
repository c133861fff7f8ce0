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

/// Every connection of the control plane as `tern connections export` writes it: `{name, uri,
/// extra, description, secrets_included}`; without `include_secrets` the password in the URI
/// and the secret extra fields are masked (`***`), and such an export cannot be imported.
pub async fn export(
    store: &Store,
    secrets: &SecretBox,
    include_secrets: bool,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for stored in store.list_connections().await? {
        let (Some(c), Some(spec)) = (
            parsed(store, secrets, &stored.name).await?,
            resolve(store, secrets, &stored.name).await?,
        ) else {
            continue;
        };
        let (uri, extra) = if include_secrets {
            (spec.uri, Value::Object(spec.extra))
        } else {
            let masker = tern_worker::mask::Masker::new(c.secrets());
            (masker.mask(&spec.uri), c.public_fields()["extra"].clone())
        };
        out.push(
            serde_json::json!({"name": stored.name, "uri": uri, "extra": extra,
                                    "description": stored.description,
                                    "secrets_included": include_secrets}),
        );
    }
    Ok(out)
}

/// One connection of an export, to import.
pub struct ImportEntry {
    pub name: String,
    pub uri: String,
    pub extra: Map<String, Value>,
    pub description: String,
}

/// The entries of an export (a list as [`export`] makes it); an entry exported without its
/// secrets is refused (importing it would store `***` as the password).
pub fn import_entries(list: &Value) -> anyhow::Result<Vec<ImportEntry>> {
    use anyhow::Context;
    let list = list
        .as_array()
        .context("expected a list of connections, as `tern connections export` prints")?;
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let name = e["name"]
            .as_str()
            .with_context(|| format!("entry {i} has no `name`"))?;
        let uri = e["uri"]
            .as_str()
            .with_context(|| format!("connection {name:?} has no `uri`"))?;
        if e["secrets_included"] == false {
            anyhow::bail!(
                "connection {name:?} was exported without its secrets; export with --include-secrets, or add it with `tern connections add {name} --uri-stdin`"
            );
        }
        out.push(ImportEntry {
            name: name.to_string(),
            uri: uri.to_string(),
            extra: e["extra"].as_object().cloned().unwrap_or_default(),
            description: e["description"].as_str().unwrap_or_default().to_string(),
        });
    }
    Ok(out)
}

/// Adds the connections of an export (each validated and sealed as [`add`] does); stops at
/// the first that fails, naming it.
pub async fn import(
    store: &Store,
    secrets: &SecretBox,
    entries: &[ImportEntry],
    replace: bool,
) -> anyhow::Result<()> {
    use anyhow::Context;
    for e in entries {
        add(
            store,
            secrets,
            &e.name,
            &e.uri,
            e.extra.clone(),
            &e.description,
            replace,
        )
        .await
        .with_context(|| format!("connection {:?}", e.name))?;
    }
    Ok(())
}
