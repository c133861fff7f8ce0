//! Loading the DAG folder into the store: new versions for changed DAGs, the current import
//! errors, deactivation of DAGs that disappeared. Run at start-up and then periodically, so a
//! fixed file clears its error without a restart. The folder is a plain one (`dags_folder`) or
//! the tree of a DAG bundle's commit (`dags.source`, see [`crate::bundle`]): [`DagLoader`]
//! loads either.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern_store::{ImportErrorRow, Store};

use crate::bundle::{CurrentFolder, DagBundle};
use crate::config::Config;

/// Where DAG files come from.
pub enum DagSource {
    Folder(PathBuf),
    Bundle {
        bundle: DagBundle,
        refresh: Duration,
    },
}

/// Loads the DAG files of its source into the store, and says where a bundle's are (a plain
/// folder's place is fixed: the node sets it).
pub struct DagLoader {
    source: DagSource,
    store: Store,
    current: CurrentFolder,
    /// The bundle version loaded last.
    loaded: Option<String>,
    next_fetch: Option<tokio::time::Instant>,
}

impl DagLoader {
    pub fn from_config(
        cfg: &Config,
        store: Store,
        current: CurrentFolder,
    ) -> anyhow::Result<DagLoader> {
        let source = match &cfg.dags.source {
            None => DagSource::Folder(cfg.dags_folder()),
            Some(s) => DagSource::Bundle {
                bundle: DagBundle::parse(s, &cfg.home)?,
                refresh: cfg.dags_refresh()?,
            },
        };
        Ok(DagLoader {
            source,
            store,
            current,
            loaded: None,
            next_fetch: None,
        })
    }

    /// Loads the files: a folder as it is now; a bundle at the commit the servers load (the
    /// one recorded in the database), after fetching its branch when `fetch` is asked or the
    /// refresh interval has passed (or nothing was ever recorded).
    pub async fn load(&mut self, fetch: bool) -> anyhow::Result<()> {
        match &self.source {
            DagSource::Folder(dir) => {
                sync_folder(&self.store, dir).await?;
            }
            DagSource::Bundle { bundle, refresh } => {
                let now = tokio::time::Instant::now();
                let mut want = self.store.bundle_version(bundle.source()).await?;
                if fetch || want.is_none() || self.next_fetch.is_some_and(|t| now >= t) {
                    self.next_fetch = Some(now + *refresh);
                    match bundle.fetch_head().await {
                        Ok(version) => {
                            if self
                                .store
                                .set_bundle_version(bundle.source(), &version)
                                .await?
                            {
                                tracing::info!(bundle = %bundle.source(), %version, "new DAG bundle version");
                            }
                            want = Some(version);
                        }
                        // The last good version stays loaded.
                        Err(e) => tracing::error!("{e}"),
                    }
                }
                let Some(want) = want else {
                    return Ok(());
                };
                if self.loaded.as_deref() == Some(want.as_str()) {
                    return Ok(());
                }
                let dir = match bundle.tree(&want).await {
                    Ok(dir) => dir,
                    Err(e) => {
                        // (A bucket that changed since: fetch at the next pass.)
                        self.next_fetch = Some(now);
                        return Err(e.into());
                    }
                };
                sync_dir(&self.store, &dir, Some(&want)).await?;
                self.current.set(dir);
                self.loaded = Some(want);
            }
        }
        Ok(())
    }
}

/// What one pass over the folder found.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub dags: usize,
    pub errors: usize,
    pub changed: bool,
}

/// Loads every DAG file under `dir` and records the result.
pub async fn sync_folder(store: &Store, dir: &Path) -> tern_store::Result<SyncOutcome> {
    sync_dir(store, dir, None).await
}

/// [`sync_folder`] of the tree of bundle version `bundle`, if any.
async fn sync_dir(
    store: &Store,
    dir: &Path,
    bundle: Option<&str>,
) -> tern_store::Result<SyncOutcome> {
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
    let report = store
        .sync_dags_of_bundle(&loaded.dags, &errors, bundle)
        .await?;
    let changed =
        !report.new_versions.is_empty() || !report.deactivated.is_empty() || report.errors_changed;
    if changed {
        tracing::info!(
            dags = loaded.dags.len(),
            errors = errors.len(),
            new_versions = ?report.new_versions,
            deactivated = ?report.deactivated,
            took_ms = started.elapsed().as_millis() as u64,
            bundle = bundle.unwrap_or("-"),
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
