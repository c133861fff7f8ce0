//! DAGs, their versions and import errors: what the DAG folder sync writes and listings read.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::Row;
use tern_core::DagSpec;

use crate::time::from_ms;
use crate::{DagRow, ImportErrorRow, Result, Store, StoreError};

/// What a folder sync changed.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// DAG ids that got a new version (new DAGs included).
    pub new_versions: Vec<String>,
    /// DAG ids that were deactivated because their file no longer declares them.
    pub deactivated: Vec<String>,
    pub errors_changed: bool,
}

const DAG_COLUMNS: &str =
    "d.dag_id, d.file, d.is_paused, d.is_active, d.latest_version_id, v.version, \
     d.schedule, d.timezone, d.last_parsed_at";

fn dag_row(r: &sqlx::any::AnyRow) -> Result<DagRow> {
    Ok(DagRow {
        dag_id: r.try_get("dag_id")?,
        file: r.try_get("file")?,
        is_paused: r.try_get::<i64, _>("is_paused")? != 0,
        is_active: r.try_get::<i64, _>("is_active")? != 0,
        latest_version_id: r.try_get("latest_version_id")?,
        version: r.try_get("version")?,
        schedule: r.try_get("schedule")?,
        timezone: r.try_get("timezone")?,
        last_parsed_at: from_ms(r.try_get("last_parsed_at")?),
    })
}

impl Store {
    /// Records the result of loading the whole DAG folder: a new version for every DAG whose
    /// spec changed, the current set of import errors, and deactivation of DAGs that a file no
    /// longer declares. A DAG whose file currently fails to load keeps its last good version.
    pub async fn sync_dags(
        &self,
        specs: &[DagSpec],
        errors: &[ImportErrorRow],
    ) -> Result<SyncReport> {
        self.sync_dags_of_bundle(specs, errors, None).await
    }

    /// [`Store::sync_dags`] of the files of a DAG bundle at `bundle` (a commit id): new
    /// versions record it.
    pub async fn sync_dags_of_bundle(
        &self,
        specs: &[DagSpec],
        errors: &[ImportErrorRow],
        bundle: Option<&str>,
    ) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let existing: HashMap<String, (String, i64, bool)> = sqlx::query(
            "SELECT d.dag_id, v.hash, v.version, d.is_active FROM dags d \
             JOIN dag_versions v ON v.id = d.latest_version_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<String, _>(0)?,
                (
                    r.try_get::<String, _>(1)?,
                    r.try_get::<i64, _>(2)?,
                    r.try_get::<i64, _>(3)? != 0,
                ),
            ))
        })
        .collect::<Result<_>>()?;
        let old_errors = self.import_errors().await?;
        let errors_changed = old_errors != errors;
        let error_files: HashSet<&str> = errors.iter().map(|e| e.file.as_str()).collect();
        let seen: HashSet<&str> = specs.iter().map(|s| s.dag_id.as_str()).collect();
        let changed: Vec<(&DagSpec, String)> = specs
            .iter()
            .map(|s| (s, s.content_hash()))
            .filter(|(s, h)| match existing.get(&s.dag_id) {
                Some((old, _, active)) => old != h || !active,
                None => true,
            })
            .collect();
        let files_of: HashMap<String, String> =
            if existing.keys().any(|k| !seen.contains(k.as_str())) {
                sqlx::query("SELECT dag_id, file FROM dags WHERE is_active = 1")
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<Result<_>>()?
            } else {
                HashMap::new()
            };
        let to_deactivate: Vec<&String> = files_of
            .iter()
            .filter(|(id, file)| {
                !seen.contains(id.as_str()) && !error_files.contains(file.as_str())
            })
            .map(|(id, _)| id)
            .collect();
        if changed.is_empty() && to_deactivate.is_empty() && !errors_changed {
            return Ok(report);
        }
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        self.lock_dag_sync(&mut tx).await?;
        for (spec, hash) in changed {
            // Re-read inside the write transaction: another process may have synced meanwhile.
            let prev: Option<(String, i64)> = sqlx::query(
                "SELECT v.hash, v.version FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id \
                 WHERE d.dag_id = $1",
            )
            .bind(&spec.dag_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?;
            let prev = prev.as_ref();
            let same_hash = prev.map(|p| p.0 == hash).unwrap_or(false);
            if same_hash {
                // Reactivation of an unchanged DAG: no new version.
                sqlx::query("UPDATE dags SET is_active = 1, file = $2, last_parsed_at = $3 WHERE dag_id = $1")
                    .bind(&spec.dag_id)
                    .bind(&spec.file)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let version = prev.map(|p| p.1 + 1).unwrap_or(1);
            let spec_json = serde_json::to_string(spec)?;
            let version_id: i64 = sqlx::query_scalar(
                "INSERT INTO dag_versions (dag_id, version, hash, spec, created_at, bundle_version) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&spec.dag_id)
            .bind(version)
            .bind(&hash)
            .bind(spec_json)
            .bind(now)
            .bind(bundle)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO dags (dag_id, file, is_paused, is_active, latest_version_id, schedule, timezone, last_parsed_at) \
                 VALUES ($1, $2, 0, 1, $3, $4, $5, $6) \
                 ON CONFLICT (dag_id) DO UPDATE SET file = excluded.file, is_active = 1, \
                 latest_version_id = excluded.latest_version_id, schedule = excluded.schedule, \
                 timezone = excluded.timezone, last_parsed_at = excluded.last_parsed_at",
            )
            .bind(&spec.dag_id)
            .bind(&spec.file)
            .bind(version_id)
            .bind(spec.schedule.describe())
            .bind(&spec.timezone)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            report.new_versions.push(spec.dag_id.clone());
        }
        for dag_id in to_deactivate {
            sqlx::query("UPDATE dags SET is_active = 0 WHERE dag_id = $1")
                .bind(dag_id)
                .execute(&mut *tx)
                .await?;
            report.deactivated.push(dag_id.clone());
        }
        if errors_changed {
            sqlx::query("DELETE FROM import_errors")
                .execute(&mut *tx)
                .await?;
            for e in errors {
                sqlx::query("INSERT INTO import_errors (file, line, message, created_at) VALUES ($1, $2, $3, $4)")
                    .bind(&e.file)
                    .bind(i64::from(e.line))
                    .bind(&e.message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            report.errors_changed = true;
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Current import errors, ordered by file and line.
    pub async fn import_errors(&self) -> Result<Vec<ImportErrorRow>> {
        sqlx::query("SELECT file, line, message FROM import_errors ORDER BY file, line, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(ImportErrorRow {
                    file: r.try_get(0)?,
                    line: r.try_get::<i64, _>(1)? as u32,
                    message: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Every DAG the store knows, active ones first, by id.
    pub async fn list_dags(&self) -> Result<Vec<DagRow>> {
        let sql = format!(
            "SELECT {DAG_COLUMNS} FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id \
             ORDER BY d.is_active DESC, d.dag_id"
        );
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(dag_row)
            .collect()
    }

    pub async fn get_dag(&self, dag_id: &str) -> Result<DagRow> {
        let sql = format!(
            "SELECT {DAG_COLUMNS} FROM dags d JOIN dag_versions v ON v.id = d.latest_version_id WHERE d.dag_id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(dag_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no DAG with id {dag_id:?}; `tern dags list` shows the known DAGs"
                ))
            })?;
        dag_row(&row)
    }

    /// The spec of a DAG version. Versions never change once written, so they are cached.
    pub async fn spec(&self, version_id: i64) -> Result<Arc<DagSpec>> {
        if let Some(s) = self.cached_spec(version_id) {
            return Ok(s);
        }
        let json: String = sqlx::query_scalar("SELECT spec FROM dag_versions WHERE id = $1")
            .bind(version_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no DAG version {version_id}")))?;
        let spec: Arc<DagSpec> = Arc::new(serde_json::from_str(&json)?);
        self.cache_spec(version_id, spec.clone());
        Ok(spec)
    }

    /// Reads the specs of `version_ids` that are not cached yet in one statement per 500, so a
    /// listing of every DAG costs a query or two, not one per DAG.
    pub async fn preload_specs(&self, version_ids: &[i64]) -> Result<()> {
        let missing: Vec<i64> = version_ids
            .iter()
            .copied()
            .filter(|id| self.cached_spec(*id).is_none())
            .collect();
        for ids in missing.chunks(500) {
            let sql = format!(
                "SELECT id, spec FROM dag_versions WHERE id IN ({})",
                crate::tasks::placeholders(1, ids.len())
            );
            let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
            for id in ids {
                q = q.bind(*id);
            }
            for (id, json) in q.fetch_all(&self.pool).await? {
                self.cache_spec(id, Arc::new(serde_json::from_str(&json)?));
            }
        }
        Ok(())
    }

    /// The latest spec of a DAG, with its version id.
    pub async fn latest_spec(&self, dag_id: &str) -> Result<(i64, Arc<DagSpec>)> {
        let dag = self.get_dag(dag_id).await?;
        Ok((
            dag.latest_version_id,
            self.spec(dag.latest_version_id).await?,
        ))
    }

    /// Versions of a DAG, newest first.
    pub async fn dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersionRow>> {
        sqlx::query("SELECT id, version, created_at, bundle_version FROM dag_versions WHERE dag_id = $1 ORDER BY version DESC")
            .bind(dag_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(DagVersionRow {
                    id: r.try_get(0)?,
                    version: r.try_get(1)?,
                    created_at: from_ms(r.try_get(2)?),
                    bundle_version: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Pauses or unpauses a DAG. Returns an error naming the DAG if it does not exist.
    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<()> {
        let done = sqlx::query("UPDATE dags SET is_paused = $2 WHERE dag_id = $1")
            .bind(dag_id)
            .bind(i64::from(paused))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "no DAG with id {dag_id:?}; `tern dags list` shows the known DAGs"
            )));
        }
        Ok(())
    }
}

/// Forgets which DAG folder is loaded: the next load of any folder evaluates it.
pub(crate) const FORGET_LOADED_FOLDER: &str = "DELETE FROM dag_folder_load";

/// The DAG folder whose load the database holds, by its fingerprint
/// (`tern_dag::folder_fingerprint`): a loader whose folder has that fingerprint has nothing to
/// evaluate. Written after a load is stored; removed by a bundle's load and by a deleted DAG
/// (whose file, if still there, must declare it again).
impl Store {
    /// The fingerprint of the folder loaded last, if the last load was of a plain folder.
    pub async fn loaded_folder(&self) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT fingerprint FROM dag_folder_load WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that the folder of `fingerprint` is loaded (`None`: what is loaded is not a
    /// plain folder, or has no fingerprint).
    pub async fn set_loaded_folder(&self, fingerprint: Option<&str>) -> Result<()> {
        match fingerprint {
            Some(fp) => {
                sqlx::query(
                    "INSERT INTO dag_folder_load (id, fingerprint, loaded_at) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, loaded_at = excluded.loaded_at",
                )
                .bind(fp)
                .bind(self.now_ms())
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query(FORGET_LOADED_FOLDER)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The version of a DAG bundle every server loads.
impl Store {
    /// The bundle version of `source` the servers load now, if one was fetched.
    pub async fn bundle_version(&self, source: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT version FROM dag_bundles WHERE source = $1")
                .bind(source)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that `source` is at `version` now (a fetch found it); true when that changed it.
    pub async fn set_bundle_version(&self, source: &str, version: &str) -> Result<bool> {
        let changed = sqlx::query(
            "INSERT INTO dag_bundles (source, version, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at \
             WHERE dag_bundles.version <> excluded.version",
        )
        .bind(source)
        .bind(version)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }
}

/// One version of a DAG, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DagVersionRow {
    pub id: i64,
    pub version: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The DAG bundle version it was loaded from; `None` for a plain folder.
    pub bundle_version: Option<String>,
}
