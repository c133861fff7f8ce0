//! Variables kept by the control plane: set and read by `tern variables`, the API and the UI;
//! a secret one is sealed with the [`SecretBox`] before it reaches the store and opened only to
//! be sent, with an assignment, to the agent that runs a task whose templates name it.

use std::collections::BTreeMap;

use tern_protocol::VariableSpec;
use tern_store::variables::StoredVariable;
use tern_store::Store;

use crate::secrets::SecretBox;

/// Longest value kept.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Whether `key` can be a variable's key: letters, digits and `_` (so `var.value.KEY` reads
/// it in a template), at most 250 characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 250 {
        return Err(format!("variable key {key:?} must be 1 to 250 characters"));
    }
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || key.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "variable key {key:?} may hold only letters, digits and `_` and not start with a digit (templates read it as var.value.{key})"
        ));
    }
    Ok(())
}

/// Sets a variable; a secret one is sealed first.
pub async fn set(
    store: &Store,
    secrets: &SecretBox,
    key: &str,
    value: &str,
    secret: bool,
    description: &str,
) -> anyhow::Result<()> {
    check_key(key).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        value.len() <= MAX_VALUE_BYTES,
        "the value of {key:?} is {} bytes; variables hold at most {MAX_VALUE_BYTES}",
        value.len()
    );
    let stored = if secret {
        secrets.seal(value)
    } else {
        value.to_string()
    };
    store
        .put_variable(key, &stored, secret, description)
        .await?;
    Ok(())
}

/// The variable `key` with its value in clear.
pub async fn get(
    store: &Store,
    secrets: &SecretBox,
    key: &str,
) -> anyhow::Result<Option<(StoredVariable, String)>> {
    let Some(v) = store.variable(key).await? else {
        return Ok(None);
    };
    let value = open(secrets, &v)?;
    Ok(Some((v, value)))
}

fn open(secrets: &SecretBox, v: &StoredVariable) -> anyhow::Result<String> {
    if v.is_secret {
        Ok(secrets.open(&v.value).map_err(|e| {
            anyhow::anyhow!(
                "cannot open secret variable {:?}: {e}; was it set with another secret key?",
                v.key
            )
        })?)
    } else {
        Ok(v.value.clone())
    }
}

/// The variables the templates of `task` name that the control plane keeps, in clear.
pub async fn for_task(
    store: &Store,
    secrets: &SecretBox,
    task: &tern_core::TaskSpec,
) -> tern_store::Result<BTreeMap<String, VariableSpec>> {
    for_task_text(
        store,
        secrets,
        &serde_json::to_string(task).unwrap_or_default(),
    )
    .await
}

/// [`for_task`] of a task already written as JSON (`task_text`).
pub async fn for_task_text(
    store: &Store,
    secrets: &SecretBox,
    task_text: &str,
) -> tern_store::Result<BTreeMap<String, VariableSpec>> {
    let mut out = BTreeMap::new();
    for key in tern_protocol::variable_keys(task_text) {
        let Some(v) = store.variable(&key).await? else {
            continue;
        };
        match open(secrets, &v) {
            Ok(value) => {
                out.insert(
                    key,
                    VariableSpec {
                        value,
                        secret: v.is_secret,
                    },
                );
            }
            Err(e) => tracing::error!(variable = %key, "{e}"),
        }
    }
    Ok(out)
}
