//! Loading the DAG folder into the store: new versions for changed DAGs, the current import
//! errors, deactivation of DAGs that disappeared. Run at start-up and then periodically, so a
//! fixed file clears its error without a restart.

use std::path::Path;
use std::time::Instant;

use tern_store::{ImportErrorRow, Store};

/// What one pass over the folder found.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub dags: usize,
    pub errors: usize,
    pub changed: bool,
}

/// Loads every DAG file under `dir` and records the result.
pub async fn sync_folder(store: &Store, dir: &Path) -> tern_store::Result<SyncOutcome> {
    let started = Instant::now();
    let dir = dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || tern_dag::load_folder(&dir))
        .await
        .expect("DAG loading does not panic");
    let errors: Vec<ImportErrorRow> = loaded
        .errors
        .iter()
        .map(|e| ImportErrorRow {
            file: e.file.clone(),
            line: e.line,
            message: e.message.clone(),
        })
        .collect();
    let report = store.sync_dags(&loaded.dags, &errors).await?;
    let changed =
        !report.new_versions.is_empty() || !report.deactivated.is_empty() || report.errors_changed;
    if changed {
        tracing::info!(
            dags = loaded.dags.len(),
            errors = errors.len(),
            new_versions = ?report.new_versions,
            deactivated = ?report.deactivated,
            took_ms = started.elapsed().as_millis() as u64,
            "DAG folder loaded"
        );
        for e in &errors {
            tracing::warn!("import error: {}:{}: {}", e.file, e.line, e.message);
        }
    }
    Ok(SyncOutcome {
        dags: loaded.dags.len(),
        errors: errors.len(),
        changed,
    })
}
