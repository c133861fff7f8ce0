//! The grammar of ids, checked wherever an id enters tern (DAG files, the API, the CLI, the
//! scheduler), so every id is safe in a URL, a log path and the database.
//!
//! - DAG, task and pool ids: letters, digits, `_`, `.`, `-`;
//! - run ids: the same plus `:` and `+` (a generated run id holds a timestamp:
//!   `manual__2026-01-02T03:04:05.678901Z`, `scheduled__2026-01-02T00:00:00+00:00`);
//!
//! at most [`MAX_ID`] characters, never empty, never made of dots only.

/// Longest id.
pub const MAX_ID: usize = 250;

/// Checks a DAG, task or pool id.
pub fn check_id(id: &str) -> Result<(), String> {
    check(id, "", "letters, digits, `_`, `.` and `-`")
}

/// Path segments that follow `/api/v1/dags/` in the API's own routes: a DAG with such an id
/// could not be read, paused or deleted through `/api/v1/dags/{dag_id}`.
pub const RESERVED_DAG_IDS: &[&str] = &["refresh"];

/// Checks a DAG id: an id ([`check_id`]) that is not one of [`RESERVED_DAG_IDS`].
pub fn check_dag_id(id: &str) -> Result<(), String> {
    check_id(id)?;
    if RESERVED_DAG_IDS.contains(&id) {
        return Err(format!(
            "the DAG id `{id}` is reserved (`/api/v1/dags/{id}` is one of the API's own routes); \
             choose another id"
        ));
    }
    Ok(())
}

/// Checks a run id.
pub fn check_run_id(id: &str) -> Result<(), String> {
    check(id, ":+", "letters, digits, `_`, `.`, `-`, `:` and `+`")
}

fn check(id: &str, extra: &str, allowed: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the id is empty".into());
    }
    if id.chars().count() > MAX_ID {
        return Err(format!("the id is longer than {MAX_ID} characters"));
    }
    if let Some(c) = id.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') || extra.contains(*c))
    }) {
        return Err(format!(
            "invalid id `{}`: character {c:?} is not allowed; use {allowed}",
            id.escape_debug()
        ));
    }
    if id.chars().all(|c| c == '.') {
        return Err(format!(
            "invalid id `{id}`: an id cannot be made of dots only"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_run_ids() {
        for ok in ["etl", "etl.daily-v2_x", "a"] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "bad id",
            "a/b",
            "..",
            ".",
            "a\0b",
            "é",
            &"x".repeat(251),
        ] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_dag_id("etl").is_ok());
        let reserved = check_dag_id("refresh").unwrap_err();
        assert!(reserved.contains("reserved"), "{reserved}");
        assert!(
            check_id("refresh").is_ok(),
            "a task or pool may be called so"
        );
        for ok in [
            "manual__2026-01-02T03:04:05.678901Z",
            "scheduled__2026-01-02T00:00:00+00:00",
            "backfill_1",
        ] {
            assert!(check_run_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "..", "a\0b", "a b", "a%2Fb", "a\\b"] {
            assert!(check_run_id(bad).is_err(), "{bad:?}");
        }
    }
}
