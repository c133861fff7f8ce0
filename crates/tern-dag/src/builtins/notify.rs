//! The notification fields of `dag()`: `on_failure`, `on_success` and `on_retry` each name the
//! connections (a webhook or a mail server) the control plane notifies on that event.

use starlark::values::Value;

use super::{list_items, to_string, type_err};

/// A connection name or a list of them: each non-empty, written as connection names are
/// (lower-case letters, digits, `_`), none twice.
pub(super) fn to_conn_names(field: &str, v: Value) -> Result<Vec<String>, String> {
    let items = if v.unpack_str().is_some() {
        vec![v]
    } else {
        list_items(field, v).map_err(|_| {
            type_err(
                field,
                "a connection name or a list of connection names, e.g. [\"ops_mail\"]",
                v,
            )
        })?
    };
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let name = to_string(&format!("{field}[]"), item)?;
        if name.trim().is_empty() {
            return Err(format!(
                "`{field}` has an empty connection name; name a connection such as \"ops_mail\""
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "`{field}`: {name:?} is not a connection name (lower-case letters, digits and `_`)"
            ));
        }
        if names.contains(&name) {
            return Err(format!("`{field}` names connection {name:?} twice"));
        }
        names.push(name);
    }
    Ok(names)
}
