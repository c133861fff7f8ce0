//! Typed errors of the metadata store.

/// What went wrong in the metadata store, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata database error: {0}")]
    Db(sqlx::Error),
    #[error("metadata migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The agent making the call was revoked (or never existed): it must stop.
    #[error("{0}")]
    Revoked(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    /// Text the database cannot store (PostgreSQL refuses NUL characters) is the caller's
    /// mistake, not an outage.
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                return StoreError::Invalid(
                    "a text value holds a character the database cannot store (a NUL byte)".into(),
                );
            }
        }
        StoreError::Db(e)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
