//! The scheduling loop: reads the DAG folder, creates runs for schedules that came due, and
//! does housekeeping (due retries, expired leases, queued runs). Task-to-task progress does not
//! go through here: it happens in the transaction that records each result.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tern_core::schedule::NextRun;
use tern_core::RunType;
use tern_store::{NewRun, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::events::Events;

pub struct Scheduler {
    pub store: Store,
    pub events: Arc<Events>,
    /// What loads the DAG files, if this scheduler loads them.
    pub dags: Option<crate::dagsync::DagLoader>,
    pub scan_interval: Duration,
    pub housekeeping_interval: Duration,
    /// Fail site tasks queued this long with no connected agent of their site.
    pub queue_timeout: Option<Duration>,
    /// Whether runs of schedules that came due are created here (off: housekeeping only).
    pub schedule_runs: bool,
}

/// The next scheduled run of each schedulable DAG, with the DAG version it belongs to.
type DueMap = HashMap<String, (i64, NextRun)>;

impl Scheduler {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut due: DueMap = HashMap::new();
        let mut next_scan = tokio::time::Instant::now();
        let mut refresh = true;
        let mut fetch = false;
        loop {
            let now_i = tokio::time::Instant::now();
            let pass_started = std::time::Instant::now();
            if let Some(loader) = &mut self.dags {
                if now_i >= next_scan {
                    if let Err(e) = loader.load(std::mem::take(&mut fetch)).await {
                        tracing::error!("loading the DAG files failed: {e:#}");
                    }
                    next_scan = now_i + self.scan_interval;
                    // Recompute schedules after every scan: new versions, and pauses made by
                    // other processes, are seen at least this often.
                    refresh = true;
                }
            }
            if refresh {
                match self.due_map().await {
                    Ok(m) => {
                        due = m;
                        refresh = false;
                    }
                    Err(e) => tracing::error!("reading schedules failed: {e}"),
                }
            }
            if let Err(e) = self.create_due_runs(&mut due).await {
                tracing::error!("creating scheduled runs failed: {e}");
            }
            if let Err(e) = self.housekeeping().await {
                tracing::error!("scheduler housekeeping failed: {e}");
            }
            crate::metrics::metrics().scheduler_pass(pass_started.elapsed());
            self.events.roles.beat("scheduler");
            let now = Utc::now();
            let mut sleep = self.housekeeping_interval;
            let next_retry = self.store.next_retry_due().await.unwrap_or_else(|e| {
                tracing::error!("reading retry times failed: {e}");
                None
            });
            if let Some(first) = due
                .values()
                .map(|(_, r)| r.run_after)
                .chain(next_retry)
                .min()
            {
                let until = (first - now).to_std().unwrap_or(Duration::ZERO);
                sleep = sleep.min(until);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep) => {}
                _ = self.events.dags.notified() => refresh = true,
                _ = self.events.dags_refresh.notified() => {
                    // Fetch a DAG bundle now (`POST /api/v1/dags/refresh`).
                    fetch = true;
                    next_scan = tokio::time::Instant::now();
                }
                _ = self.events.scheduler.notified() => {}
            }
        }
    }

    async fn due_map(&self) -> tern_store::Result<DueMap> {
        let mut map = HashMap::new();
        if !self.schedule_runs {
            return Ok(map);
        }
        let now = Utc::now();
        for (dag_id, version_id) in self.store.schedulable_dags().await? {
            let spec = self.store.spec(version_id).await?;
            let last = self.store.last_scheduled_interval_end(&dag_id).await?;
            if let Some(r) = next_run(&spec, last, now) {
                map.insert(dag_id, (version_id, r));
            }
        }
        Ok(map)
    }

    /// Creates every run whose time has come, oldest first; several schedulers may do this at
    /// once, the store's unique key keeps it to one run per logical date.
    async fn create_due_runs(&self, due: &mut DueMap) -> tern_store::Result<()> {
        let now = Utc::now();
        let ready: Vec<String> = due
            .iter()
            .filter(|(_, (_, r))| r.run_after <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for dag_id in ready {
            let Some((version_id, due_run)) = due.get(&dag_id).copied() else {
                continue;
            };
            let spec = self.store.spec(version_id).await?;
            let params = tern_core::params::resolve_params(&spec.params, &serde_json::Value::Null)
                .map(serde_json::Value::Object)
                .unwrap_or_else(|_| serde_json::json!({}));
            let new = NewRun {
                dag_id: dag_id.clone(),
                run_id: format!(
                    "scheduled__{}",
                    due_run
                        .logical_date
                        .to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
                run_type: RunType::Scheduled,
                logical_date: due_run.logical_date,
                data_interval: due_run.data_interval,
                conf: serde_json::json!({}),
                params,
            };
            match self.store.create_run(&new, version_id).await {
                Ok((run, queued)) => {
                    tracing::info!(dag_id, run_id = %run.run_id, "scheduled run created");
                    if queued {
                        self.events.work_queued();
                    }
                }
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            match next_run(&spec, Some(due_run.data_interval.end), now) {
                Some(r) => {
                    due.insert(dag_id, (version_id, r));
                }
                None => {
                    due.remove(&dag_id);
                }
            }
        }
        Ok(())
    }

    async fn housekeeping(&self) -> tern_store::Result<()> {
        let lost = self.store.expire_leases().await?;
        if lost > 0 {
            tracing::warn!(lost, "attempts lost: their leases expired");
        }
        let timed_out = self.store.review_site_queues(self.queue_timeout).await?;
        if timed_out > 0 {
            tracing::warn!(
                timed_out,
                "site tasks failed: no agent of their site in time"
            );
        }
        if self.store.promote_and_admit().await? || lost > 0 || timed_out > 0 {
            self.events.work_queued();
        }
        let timed_out_runs = self.store.time_out_runs().await?;
        if timed_out_runs > 0 {
            tracing::warn!(
                timed_out_runs,
                "runs failed: they exceeded their dagrun_timeout"
            );
            self.events.run_finished.notify_waiters();
            self.events.work_queued();
        }
        let ended = self.store.finish_settled_runs().await?;
        if ended > 0 {
            tracing::warn!(ended, "ended runs whose tasks were all final");
            self.events.run_finished.notify_waiters();
            self.events.work_queued();
        }
        Ok(())
    }
}

/// The next run the scheduler creates for `spec`, after the one whose data interval ended at
/// `last_end`.
pub(crate) fn next_run(
    spec: &tern_core::DagSpec,
    last_end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<NextRun> {
    spec.schedule
        .next_run(&spec.schedule_bounds(), last_end, now)
}

/// The next runs a DAG's schedule will make, as `tern dags next`, the API and the DAG page show
/// them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Upcoming {
    pub dag_id: String,
    /// The schedule as the DAG file writes it.
    pub schedule: String,
    pub timezone: String,
    pub is_paused: bool,
    pub catchup: bool,
    /// Oldest first; empty for `none`, a list of times that has run out, or a passed
    /// `end_date`.
    pub runs: Vec<NextRun>,
}

/// The next `n` runs of `dag_id` after its last scheduled one, from its latest version.
pub async fn upcoming_runs(store: &Store, dag_id: &str, n: usize) -> tern_store::Result<Upcoming> {
    let dag = store.get_dag(dag_id).await?;
    let spec = store.spec(dag.latest_version_id).await?;
    upcoming_of(store, &dag, &spec, n).await
}

/// [`upcoming_runs`] for a DAG its caller has already read.
pub async fn upcoming_of(
    store: &Store,
    dag: &tern_store::model::DagRow,
    spec: &tern_core::DagSpec,
    n: usize,
) -> tern_store::Result<Upcoming> {
    let last = store.last_scheduled_interval_end(&dag.dag_id).await?;
    let runs = spec
        .schedule
        .upcoming(&spec.schedule_bounds(), last, Utc::now(), n);
    Ok(Upcoming {
        dag_id: dag.dag_id.clone(),
        schedule: spec.schedule.describe(),
        timezone: spec.timezone.clone(),
        is_paused: dag.is_paused,
        catchup: spec.catchup,
        runs,
    })
}
