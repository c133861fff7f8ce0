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

/// What one pass over the folder did.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// False when the folder was as the database's last load of it, so nothing was evaluated.
    pub evaluated: bool,
    /// Whether the database changed (new versions, deactivated DAGs, other import errors).
    pub changed: bool,
}

/// Loads every DAG file under `dir` and records the result, unless the folder is as it was at
/// the load the database holds (by its fingerprint, `tern_dag::folder_fingerprint`).
pub async fn sync_folder(store: &Store, dir: &Path) -> tern_store::Result<SyncOutcome> {
    sync_dir(store, dir, None).await
}

/// [`sync_folder`] of the tree of bundle version `bundle`, if any (a bundle's version already
/// says whether its tree changed: [`DagLoader`] compares it).
async fn sync_dir(
    store: &Store,
    dir: &Path,
    bundle: Option<&str>,
) -> tern_store::Result<SyncOutcome> {
    let started = Instant::now();
    let dir = dir.to_path_buf();
    let fingerprint = match bundle {
        None => {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || tern_dag::folder_fingerprint(&dir))
                .await
                .expect("fingerprinting does not panic")
        }
        Some(_) => None,
    };
    if fingerprint.is_some() && store.loaded_folder().await? == fingerprint {
        return Ok(SyncOutcome {
            evaluated: false,
            changed: false,
        });
    }
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
    store.set_loaded_folder(fingerprint.as_deref()).await?;
    Ok(SyncOutcome {
        evaluated: true,
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn versions(store: &Store) -> Vec<(String, i64)> {
        store
            .list_dags()
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.dag_id, d.version))
            .collect()
    }

    #[tokio::test]
    async fn an_unchanged_folder_is_not_evaluated_again_and_any_change_is() {
        let home = tempfile::tempdir().unwrap();
        let dags = home.path().join("dags");
        std::fs::create_dir(&dags).unwrap();
        std::fs::write(dags.join("_lib.star"), "CMD = \"true\"\n").unwrap();
        std::fs::write(
            dags.join("a.star"),
            "load(\"_lib.star\", \"CMD\")\ndag(id = \"a\")\nshell(id = \"t\", cmd = CMD)\n",
        )
        .unwrap();
        let url = format!("sqlite://{}", home.path().join("tern.db").display());
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();

        let first = sync_folder(&store, &dags).await.unwrap();
        assert!(first.evaluated && first.changed);
        assert_eq!(versions(&store).await, [("a".to_string(), 1)]);
        let again = sync_folder(&store, &dags).await.unwrap();
        assert!(!again.evaluated, "the folder did not change");

        // A helper only `load()`ed by the DAG file changes: the DAG gets a new version.
        std::fs::write(dags.join("_lib.star"), "CMD = \"echo hi\"\n").unwrap();
        let changed = sync_folder(&store, &dags).await.unwrap();
        assert!(changed.evaluated && changed.changed);
        assert_eq!(versions(&store).await, [("a".to_string(), 2)]);
        assert!(!sync_folder(&store, &dags).await.unwrap().evaluated);

        // A deleted DAG whose file is still there is declared again by the next load.
        store.delete_dag("a").await.unwrap();
        assert!(versions(&store).await.is_empty());
        assert!(sync_folder(&store, &dags).await.unwrap().evaluated);
        assert_eq!(versions(&store).await.len(), 1);
    }
}
