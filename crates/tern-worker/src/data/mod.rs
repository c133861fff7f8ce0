//! Data tasks that run in the agent process itself: `sql` (statements on a database
//! connection) and `sql_to_lake` (a query streamed into an object store). They use the agent's
//! connections by name, log the target (never a password, never row contents), and classify
//! their errors: an error that cannot succeed on retry fails the task at once.

pub mod cells;
pub mod db;
pub mod decode;
pub mod error;
pub mod export;
pub mod http_task;
pub mod lake;
pub mod sensor;
pub mod sql_task;
pub mod upload;

pub use error::DataError;

/// The connection called `name`, or a permanent error saying where to define it.
pub(crate) fn connection<'a>(
    conns: &'a crate::connections::Connections,
    name: &str,
) -> Result<&'a crate::connections::Connection, DataError> {
    conns.get(name).ok_or_else(|| {
        let known = conns.names();
        DataError::permanent(format!(
            "unknown connection {name:?}: define it where the task runs ([connections.{name}] in the agent's agent.toml, or TERN_CONN_{}) or on the control plane (`tern connections add {name} --uri …`); this agent has {}",
            name.to_ascii_uppercase(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))
    })
}

/// Renders a templated field; a template error is permanent.
pub(crate) fn render(
    r: &crate::template::Renderer,
    field: &str,
    s: &str,
) -> Result<String, DataError> {
    r.render(field, s)
        .map_err(|e| DataError::permanent(e.to_string()))
}

/// Checks that a connection works: `SELECT 1` on a database, a listing on an object store.
/// Returns what was checked.
pub async fn test_connection(c: &crate::connections::Connection) -> Result<String, DataError> {
    match c.conn_type.as_str() {
        "s3" | "azure" | "file" => {
            let lake = lake::Lake::open(c)?;
            lake.check("probe").await?;
            Ok(format!("listed {}", lake.describe))
        }
        _ => {
            let mut d = db::Db::connect(c, true).await?;
            let r = d.execute("SELECT 1", &[], false).await;
            d.close().await;
            r.map_err(|e| error::from_sqlx("SELECT 1 failed", e))?;
            Ok(format!("SELECT 1 on {}", db::describe(c)))
        }
    }
}
