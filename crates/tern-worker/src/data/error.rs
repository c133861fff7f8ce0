//! Errors of data tasks and whether a retry could help.

/// A data task's failure: a message for the log and the task note, and whether another try
/// could succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DataError {
    pub message: String,
    pub retryable: bool,
}

impl DataError {
    pub fn permanent(message: impl Into<String>) -> DataError {
        DataError {
            message: message.into(),
            retryable: false,
        }
    }

    pub fn transient(message: impl Into<String>) -> DataError {
        DataError {
            message: message.into(),
            retryable: true,
        }
    }
}

/// An error with its whole cause chain ("error sending request: client error (Connect):
/// tcp connect error: Connection refused"), skipping a cause whose text the message already
/// holds.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !c.is_empty() && !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// SQLSTATE classes that no retry can fix: syntax and access errors, unknown objects, data and
/// constraint errors, a write in a read-only transaction, an unknown database.
fn permanent_sqlstate(state: &str) -> bool {
    // 08P01: the statement's parameters do not match its placeholders.
    const PERMANENT: &[&str] = &[
        "42", "28", "22", "23", "25", "0A", "3D", "3F", "21", "44", "08P01",
    ];
    PERMANENT.iter().any(|c| state.starts_with(c))
}

/// Describes a database error with the database's own code and says whether to retry.
pub fn from_sqlx(context: &str, e: sqlx::Error) -> DataError {
    match &e {
        sqlx::Error::Database(db) => {
            let state = db.code().map(|c| c.to_string()).unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite: the primary result code (low byte) tells busy/locked/IO apart from
                // errors in the statement itself.
                let n: i64 = state.parse().unwrap_or(1);
                let retryable = matches!(n & 0xff, 5 | 6 | 10 | 13 | 14);
                return DataError {
                    message: format!("{context}: {} (SQLite error {n})", db.message()),
                    retryable,
                };
            }
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number().to_string());
            let code = match number {
                Some(n) => format!("MySQL error {n}, SQLSTATE {state}"),
                None if !state.is_empty() => format!("SQLSTATE {state}"),
                None => "database error".to_string(),
            };
            // MySQL reports lock-wait timeouts and similar with the generic HY000 state.
            let transient_mysql = matches!(
                db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|m| m.number()),
                Some(1205 | 1213 | 1040 | 1053 | 2006 | 2013)
            );
            DataError {
                message: format!("{context}: {} ({code})", db.message()),
                retryable: transient_mysql || !permanent_sqlstate(&state),
            }
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => {
            DataError::permanent(format!("{context}: {}", error_chain(&e)))
        }
        _ => DataError::transient(format!("{context}: {}", error_chain(&e))),
    }
}

/// Describes an object-store error; missing buckets, refused credentials and bad paths are
/// permanent, anything else (refused connections, timeouts, 5xx) may pass on retry.
pub fn from_object_store(context: &str, e: object_store::Error) -> DataError {
    use object_store::Error as E;
    let text = error_chain(&e);
    let permanent = match &e {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. } => true,
        _ => [
            "NoSuchBucket",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
            // Azure Blob Storage
            "ContainerNotFound",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "InvalidResourceName",
        ]
        .iter()
        .any(|c| text.contains(c)),
    };
    let message = format!("{context}: {text}");
    if permanent {
        DataError::permanent(message)
    } else {
        DataError::transient(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_chain_is_kept_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("upload failed: Connection refused")]
        struct Repeats(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Outer(io)),
            "error sending request: Connection refused"
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(
            error_chain(&Repeats(io)),
            "upload failed: Connection refused"
        );
    }

    #[test]
    fn sqlstate_classes() {
        assert!(permanent_sqlstate("42S22"));
        assert!(permanent_sqlstate("42601"));
        assert!(permanent_sqlstate("28000"));
        assert!(permanent_sqlstate("25006"));
        assert!(!permanent_sqlstate("40001"));
        assert!(!permanent_sqlstate("08006"));
        assert!(!permanent_sqlstate("HY000"));
    }
}
