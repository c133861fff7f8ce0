//! Manual runs: checks the DAG exists, is active and not paused, validates `conf` against the
//! DAG's params, and creates the run.

use chrono::{DateTime, SecondsFormat, Utc};
use tern_core::RunType;
use tern_store::{DagRun, NewRun, Store, StoreError};

/// Why a trigger was refused; nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("DAG {0:?} is paused; unpause it with `tern dags unpause {0}` first")]
    Paused(String),
    #[error("DAG {0:?} is no longer in the DAG folder")]
    Inactive(String),
    #[error("invalid conf for DAG {dag_id:?}: {message}")]
    InvalidConf { dag_id: String, message: String },
}

/// What to trigger.
#[derive(Debug, Clone, Default)]
pub struct TriggerRequest {
    pub dag_id: String,
    pub conf: serde_json::Value,
    pub run_id: Option<String>,
    pub logical_date: Option<DateTime<Utc>>,
    pub run_type: Option<RunType>,
}

/// Creates a manual run; returns it and whether tasks were queued.
pub async fn trigger(store: &Store, req: &TriggerRequest) -> Result<(DagRun, bool), TriggerError> {
    let dag = store.get_dag(&req.dag_id).await?;
    if !dag.is_active {
        return Err(TriggerError::Inactive(req.dag_id.clone()));
    }
    if dag.is_paused {
        return Err(TriggerError::Paused(req.dag_id.clone()));
    }
    let spec = store.spec(dag.latest_version_id).await?;
    let conf = if req.conf.is_null() {
        serde_json::json!({})
    } else {
        req.conf.clone()
    };
    let params = tern_core::params::resolve_params(&spec.params, &conf).map_err(|e| {
        TriggerError::InvalidConf {
            dag_id: req.dag_id.clone(),
            message: e.to_string(),
        }
    })?;
    let now = Utc::now();
    let logical_date = req.logical_date.unwrap_or(now);
    let run_type = req.run_type.unwrap_or(RunType::Manual);
    let data_interval = spec
        .schedule
        .manual_interval(&spec.schedule_bounds(), logical_date);
    let run_id = req.run_id.clone().unwrap_or_else(|| {
        format!(
            "{}__{}",
            run_type.as_str(),
            logical_date.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    });
    let new = NewRun {
        dag_id: req.dag_id.clone(),
        run_id,
        run_type,
        logical_date,
        data_interval,
        conf,
        params: serde_json::Value::Object(params),
    };
    Ok(store.create_run(&new, dag.latest_version_id).await?)
}
