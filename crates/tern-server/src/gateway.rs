//! The control plane's side of the agent protocol, for agents running in this process: claims
//! become store claims (long-polled on the `work` signal), results are recorded with their
//! consequences in one transaction, log chunks land in the log store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, Report, ReportReply,
    RunContext,
};
use tern_store::tasks::Queued;
use tern_store::{Claimed, Store, TryResult};
use tern_worker::{ControlPlane, TransportError};

use crate::events::Events;
use crate::logs::LogStore;

/// How often the queue watcher looks for work queued by another process (another server, a
/// program writing to the database): SQLite answers "did anything change?" almost for free;
/// PostgreSQL is asked which queues have work. The CLI does not wait for this: it pokes the
/// servers of its data folder (see [`crate::wake`]).
const WATCH_SQLITE: Duration = Duration::from_millis(5);
/// At most one look per this when the watched SQLite file was written. Most writes are this
/// process's own commits (several per task), whose queued work it signals directly; the look
/// is for other processes' writes, and the CLI pokes as well (see [`crate::wake`]). Looking
/// after every burst of own commits cost two statements per task on a chain.
const WATCH_SQLITE_WRITTEN: Duration = Duration::from_millis(50);
/// The safety look of a SQLite watcher whose database file is watched ([`crate::db_watch`]):
/// a write makes a look due (at most one per [`WATCH_SQLITE_WRITTEN`]).
const WATCH_SQLITE_WATCHED: Duration = Duration::from_secs(1);
const WATCH_POSTGRES: Duration = Duration::from_millis(50);
/// The safety look of a PostgreSQL watcher that listens for queued work.
const WATCH_LISTENING: Duration = Duration::from_secs(1);

/// The next write to the watched SQLite database; never, without a watch.
async fn db_written(watch: &Option<crate::db_watch::DbWatch>) {
    match watch {
        Some(w) => w.written().await,
        None => std::future::pending().await,
    }
}

/// The next notification of a listener; never, without one.
async fn next_heard(
    listener: &mut Option<tern_store::listen::QueuedListener>,
) -> tern_store::Result<tern_store::listen::Heard> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}
/// How often, at most, the queue watcher looks for revocations made by another process.
const REVOCATION_CHECK: Duration = Duration::from_millis(250);

/// Shared services of the gateway.
#[derive(Clone)]
pub struct Gateway {
    pub store: Store,
    pub events: Arc<Events>,
    pub logs: LogStore,
    pub lease: Duration,
    log_paths: Arc<Mutex<HashMap<(i64, String), String>>>,
    /// Next expected log chunk number per attempt.
    log_seqs: Arc<Mutex<HashMap<(i64, String), u64>>>,
    /// Opens the connections the control plane keeps, to send with assignments.
    pub secrets: Option<Arc<crate::secrets::SecretBox>>,
    /// Runs by key: the parts an assignment needs never change once a run exists.
    runs: Arc<Mutex<HashMap<i64, Arc<tern_store::DagRun>>>>,
    /// Remote agents waiting in a claim long-poll on this server, with how many polls each.
    polling: Arc<Mutex<HashMap<i64, usize>>>,
    /// Where the local agent records how its tries ended before reporting them.
    pub ended: Option<Arc<tern_worker::ended::EndedRecords>>,
}

/// An open claim long-poll of a remote agent; counted until dropped (also when the agent
/// hangs up and the request is dropped).
pub struct Polling {
    polling: Arc<Mutex<HashMap<i64, usize>>>,
    agent: i64,
}

impl Drop for Polling {
    fn drop(&mut self) {
        let mut map = self.polling.lock().expect("polling agents");
        if let Some(n) = map.get_mut(&self.agent) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.agent);
            }
        }
    }
}

/// What templates of a task of `run` see (besides the task's own identity).
pub fn run_context(
    run: &tern_store::DagRun,
    spec: &tern_core::DagSpec,
    outputs: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
) -> RunContext {
    RunContext {
        logical_date: run.logical_date,
        data_interval_start: run.data_interval.start,
        data_interval_end: run.data_interval.end,
        run_type: run.run_type.as_str().to_string(),
        params: match &run.params {
            serde_json::Value::Object(m) => m.clone(),
            _ => Default::default(),
        },
        conf: run.conf.clone(),
        outputs,
        timezone: spec.timezone.clone(),
    }
}

/// The outputs of runs, by run key, read once for the instances claimed together.
pub type RunOutputs = std::collections::HashMap<
    i64,
    std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
>;

/// Bound on cached runs; the cache is emptied when it grows past it.
const RUN_CACHE_MAX: usize = 4096;
/// Bound on remembered log chunk numbers.
const LOG_SEQ_MAX: usize = 65_536;

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

/// A store error as the agent sees it: a revoked agent must stop; anything else may pass.
fn transport_error(e: tern_store::StoreError) -> TransportError {
    match e {
        tern_store::StoreError::Revoked(m) => TransportError::Revoked(m),
        other => unavailable(other),
    }
}

impl Gateway {
    pub fn new(store: Store, events: Arc<Events>, logs: LogStore, lease: Duration) -> Gateway {
        Gateway {
            store,
            events,
            logs,
            lease,
            log_paths: Arc::default(),
            log_seqs: Arc::default(),
            secrets: None,
            runs: Arc::default(),
            polling: Arc::default(),
            ended: None,
        }
    }

    /// Counts agent `agent` as waiting in a long-poll until the returned value is dropped.
    pub fn polling(&self, agent: i64) -> Polling {
        *self
            .polling
            .lock()
            .expect("polling agents")
            .entry(agent)
            .or_default() += 1;
        Polling {
            polling: self.polling.clone(),
            agent,
        }
    }

    /// Marks the agents waiting in this server's long-polls as seen every
    /// [`tern_store::agents::SEEN_REFRESH`]: an agent's liveness follows its open poll, so a
    /// stopped agent stops counting as connected within seconds.
    pub async fn keep_agents_seen(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tern_store::agents::SEEN_REFRESH) => {}
                _ = shutdown.cancelled() => return,
            }
            let ids: Vec<i64> = self
                .polling
                .lock()
                .expect("polling agents")
                .keys()
                .copied()
                .collect();
            match self.store.touch_agents(&ids).await {
                Ok(()) => self.events.roles.beat("agent_liveness"),
                Err(e) => tracing::warn!("cannot mark waiting agents as seen: {e}"),
            }
        }
    }

    /// Wakes waiting claims when their queues have work: at once for work queued in this
    /// process, and on PostgreSQL at once for work queued by another (`LISTEN`, see
    /// [`tern_store::listen`]), with a look every [`WATCH_LISTENING`] in case a notification
    /// was lost; on SQLite when its file is written (at most one look per
    /// [`WATCH_SQLITE_WRITTEN`]), and a look at its data version every [`WATCH_SQLITE_WATCHED`]
    /// in case (every [`WATCH_SQLITE`] where the file cannot be watched). Without its
    /// listener (while the database is away) PostgreSQL is polled every [`WATCH_POSTGRES`].
    /// One watcher per process, however many agents wait.
    pub async fn watch_queues(self, shutdown: tokio_util::sync::CancellationToken) {
        self.watch_queues_every(WATCH_SQLITE_WRITTEN, shutdown)
            .await
    }

    /// [`Gateway::watch_queues`], looking at most once per `written_every` when the SQLite
    /// file was written.
    async fn watch_queues_every(
        self,
        written_every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let postgres = self.store.backend() == tern_store::Backend::Postgres;
        let mut listener = None;
        let mut listen_tried: Option<tokio::time::Instant> = None;
        let mut changes = self.store.change_watch();
        let mut db_watch = match postgres {
            true => None,
            false => self
                .store
                .sqlite_file()
                .and_then(|f| crate::db_watch::DbWatch::start(&f)),
        };
        let mut last_look = tokio::time::Instant::now();
        // When a look is due for writes to the SQLite file.
        let mut written_look: Option<tokio::time::Instant> = None;
        let mut revoked = self.store.revoked_agent_count().await.ok();
        let mut revocations_checked = tokio::time::Instant::now();
        let mut revocation_due = false;
        loop {
            if postgres
                && listener.is_none()
                && listen_tried.is_none_or(|t| t.elapsed() >= WATCH_LISTENING)
            {
                listen_tried = Some(tokio::time::Instant::now());
                match self.store.listen_for_queued().await {
                    Ok(l) => listener = l,
                    Err(e) => tracing::warn!("queue watcher cannot listen, polling: {e}"),
                }
            }
            let poll = match (postgres, listener.is_some()) {
                (false, _) if db_watch.is_some() => WATCH_SQLITE_WATCHED,
                (false, _) => WATCH_SQLITE,
                (true, true) => WATCH_LISTENING,
                (true, false) => WATCH_POSTGRES,
            };
            let look = tokio::select! {
                _ = self.events.work.notified() => true,
                heard = next_heard(&mut listener) => match heard {
                    Ok(tern_store::listen::Heard::Queued(queues)) => {
                        self.events.wake_queues(&queues);
                        revocation_due = true;
                        false
                    }
                    Ok(tern_store::listen::Heard::Reconnected) => true,
                    Err(e) => {
                        tracing::warn!("queue watcher lost its listener, polling: {e}");
                        listener = None;
                        true
                    }
                },
                () = db_written(&db_watch), if written_look.is_none() => {
                    // Writes come in bursts (each of this process's commits is one): one look
                    // for all of those, when the next is due; anything else that calls for a
                    // look meanwhile (work queued here) is not kept waiting. Until that look
                    // the watch is paused: the burst's other writes would only wake its thread.
                    written_look = Some(last_look + written_every);
                    if let Some(w) = &db_watch {
                        w.pause();
                    }
                    continue;
                }
                // (The file was written, so its data version is not asked.)
                () = tokio::time::sleep_until(written_look.unwrap_or(last_look)), if written_look.is_some() => true,
                _ = tokio::time::sleep(poll) => false,
                _ = shutdown.cancelled() => return,
            };
            last_look = tokio::time::Instant::now();
            // Every look sees all queued work, the written file's included; the watch is
            // resumed first, so a write it would miss is one this look sees.
            if written_look.take().is_some() {
                if let Some(Err(e)) = db_watch.as_ref().map(|w| w.resume()) {
                    tracing::warn!(
                        "queue watcher cannot watch the database file again, polling: {e}"
                    );
                    db_watch = None;
                }
            }
            self.events.roles.beat("queue_watcher");
            if look || changes.changed(&self.store).await {
                revocation_due = true;
                match self.store.queued_queues().await {
                    Ok(queues) => self.events.wake_queues(&queues),
                    Err(e) => tracing::warn!("queue watcher: {e}"),
                }
            }
            // A revocation by another process (the CLI) ends the revoked agent's waiting claim.
            if revocation_due && revocations_checked.elapsed() >= REVOCATION_CHECK {
                revocations_checked = tokio::time::Instant::now();
                revocation_due = false;
                if let Ok(n) = self.store.revoked_agent_count().await {
                    if revoked.is_some_and(|r| r != n) {
                        self.events.agents_revoked.notify_waiters();
                    }
                    revoked = Some(n);
                }
            }
        }
    }

    /// Admits what results left to it (see [`tern_store::Applied::admission_deferred`]): on
    /// PostgreSQL a result does not wait for the admission lock another transaction holds;
    /// this one pass, waiting for the lock, admits for all the results that arrived meanwhile.
    pub async fn admit_deferred(self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = self.events.admission.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            self.events.roles.beat("admitter");
            match self.store.admit_now().await {
                Ok(queues) => self.events.wake_queues(&queues),
                Err(e) => {
                    // Housekeeping admits too; try again soon rather than wait for it.
                    tracing::warn!("admission failed, retrying: {e}");
                    self.events.admission.notify_one();
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// A control plane for the in-process agent serving `queues`, known as `worker`.
    pub fn for_agent(&self, worker: &str, queues: Vec<String>) -> LocalControlPlane {
        LocalControlPlane {
            gw: self.clone(),
            worker: worker.to_string(),
            queues,
            remote_agent: None,
        }
    }

    /// A control plane for remote agent `agent_id` serving `queues`: every log chunk is
    /// checked against the store (the attempt must still be current and held by this agent).
    pub fn for_remote_agent(&self, agent_id: i64, queues: Vec<String>) -> LocalControlPlane {
        LocalControlPlane {
            remote_agent: Some(agent_id),
            ..self.for_agent(&tern_store::agents::agent_worker_name(agent_id), queues)
        }
    }

    /// Drops chunks already received (a replay after a lost answer); true when `seq` is new.
    fn delivered_before(&self, chunk: &LogChunk) -> bool {
        let seen = self.log_seqs.lock().expect("log sequence cache");
        seen.get(&(chunk.ti_id, chunk.attempt.clone()))
            .is_some_and(|next| chunk.seq < *next)
    }

    /// Notes a chunk as written: only then, so a chunk whose write failed is taken when the
    /// agent sends it again.
    fn note_delivered(&self, chunk: &LogChunk) {
        let mut seen = self.log_seqs.lock().expect("log sequence cache");
        if seen.len() >= LOG_SEQ_MAX {
            seen.clear();
        }
        let next = seen
            .entry((chunk.ti_id, chunk.attempt.clone()))
            .or_insert(0);
        *next = (*next).max(chunk.seq + 1);
    }

    /// Turns a claimed instance into everything an agent needs to run it. `outputs` holds the
    /// outputs of the runs already read for the same claim: the instances claimed together
    /// read their run's outputs once (they were all claimed at one moment, after every
    /// upstream task they depend on had ended).
    pub async fn assignment(
        &self,
        c: &Claimed,
        outputs: &mut RunOutputs,
    ) -> tern_store::Result<Assignment> {
        let run = self.run(c.ti.run_pk).await?;
        let spec = self.store.spec(run.version_id).await?;
        let task = spec.task(&c.ti.task_id).cloned().ok_or_else(|| {
            tern_store::StoreError::Corrupt(format!(
                "task {} missing from its DAG version",
                c.ti.task_id
            ))
        })?;
        // The task as text, written once: what its templates may read is found in it (only
        // templates read outputs: a task without one is not sent them; and the variables
        // they name). A task that cannot be written is taken as templated.
        let text = serde_json::to_string(&task).ok();
        let templated = text
            .as_deref()
            .is_none_or(tern_core::spec::may_hold_templates);
        let outputs = match outputs.entry(run.pk) {
            _ if !templated => Default::default(),
            std::collections::hash_map::Entry::Occupied(o) => o.get().clone(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.store.run_outputs(run.pk).await?).clone()
            }
        };
        let connections = self.stored_connections(&task.kind).await?;
        let variables = match &self.secrets {
            Some(secrets) => {
                let text = text.as_deref().unwrap_or_default();
                crate::variables::for_task_text(&self.store, secrets, text).await?
            }
            None => Default::default(),
        };
        let external_state = external_state(&self.store, &task, run.logical_date).await?;
        let (map_index, map_values) = match u32::try_from(c.ti.map_index) {
            Ok(i) => (Some(i), self.store.map_values(c.ti.id).await?),
            Err(_) => (None, Default::default()),
        };
        Ok(Assignment {
            ti_id: c.ti.id,
            attempt: c.attempt.clone(),
            dag_id: run.dag_id.clone(),
            run_id: run.run_id.clone(),
            task_id: c.ti.task_id.clone(),
            try_number: c.ti.try_number,
            max_tries: c.ti.max_tries,
            task,
            context: run_context(&run, &spec, outputs),
            lease_ms: self.lease.as_millis() as u64,
            connections,
            external_state,
            variables,
            map_index,
            map_values,
        })
    }

    /// The stored connections a task names (an agent's own connection of the same name wins
    /// on the agent).
    async fn stored_connections(
        &self,
        kind: &tern_core::TaskKind,
    ) -> tern_store::Result<std::collections::BTreeMap<String, tern_protocol::ConnectionSpec>> {
        let mut out = std::collections::BTreeMap::new();
        let Some(secrets) = &self.secrets else {
            return Ok(out);
        };
        for name in kind.connection_names() {
            match crate::connections::resolve(&self.store, secrets, name).await {
                Ok(Some(spec)) => {
                    out.insert(name.to_string(), spec);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(connection = %name, "cannot open a stored connection: {e}")
                }
            }
        }
        Ok(out)
    }

    async fn run(&self, run_pk: i64) -> tern_store::Result<Arc<tern_store::DagRun>> {
        if let Some(r) = self.runs.lock().expect("run cache").get(&run_pk) {
            return Ok(r.clone());
        }
        let run = Arc::new(self.store.get_run_by_pk(run_pk).await?);
        let mut cache = self.runs.lock().expect("run cache");
        if cache.len() >= RUN_CACHE_MAX {
            cache.clear();
        }
        cache.insert(run_pk, run.clone());
        Ok(run)
    }

    /// A claimed instance whose assignment could not be built: with a database error it goes
    /// back to its queue without using a try; when its task cannot be run at all (missing from
    /// its DAG version, unreadable) the attempt fails without retry, with the reason.
    async fn undeliverable(&self, c: &Claimed, e: tern_store::StoreError) {
        tracing::error!(ti = c.ti.id, task = %c.ti.task_id, "cannot build the assignment: {e}");
        let outcome = match e {
            tern_store::StoreError::Db(_) => self
                .store
                .release_claim(c.ti.id, &c.attempt)
                .await
                .map(|_| self.events.work_queued()),
            other => self
                .store
                .complete(
                    c.ti.id,
                    &c.attempt,
                    &TryResult {
                        note: Some(format!(
                            "the control plane cannot hand out this task: {other}"
                        )),
                        ..TryResult::default()
                    },
                )
                .await
                .map(|applied| self.events.applied(&applied)),
        };
        if let Err(e) = outcome {
            tracing::error!(
                ti = c.ti.id,
                "cannot put the undeliverable claim back: {e}; its lease will expire"
            );
        }
    }

    async fn log_path(&self, ti_id: i64, attempt: &str) -> Result<Option<String>, TransportError> {
        let key = (ti_id, attempt.to_string());
        if let Some(p) = self.log_paths.lock().expect("log path cache").get(&key) {
            return Ok(Some(p.clone()));
        }
        let p = self
            .store
            .log_path_of_attempt(ti_id, attempt)
            .await
            .map_err(unavailable)?;
        if let Some(p) = &p {
            self.log_paths
                .lock()
                .expect("log path cache")
                .insert(key, p.clone());
        }
        Ok(p)
    }
}

/// The [`ControlPlane`] of an agent that runs inside the control-plane process.
pub struct LocalControlPlane {
    gw: Gateway,
    worker: String,
    queues: Vec<String>,
    /// The remote agent this serves, if any.
    remote_agent: Option<i64>,
}

impl LocalControlPlane {
    /// The assignments of tasks just claimed for this agent. One whose assignment cannot be
    /// built is put back (or failed, when it can never be built) and left out.
    async fn deliver(&self, claimed: &[Claimed]) -> Vec<Assignment> {
        let mut out = Vec::with_capacity(claimed.len());
        let mut outputs = RunOutputs::new();
        let now = chrono::Utc::now();
        for c in claimed {
            if let Some(q) = c.ti.queued_at {
                crate::metrics::metrics()
                    .claimed(&c.ti.queue, (now - q).to_std().unwrap_or_default());
            }
            // Remote agents' log chunks are checked against the store instead.
            if self.remote_agent.is_none() {
                self.gw
                    .log_paths
                    .lock()
                    .expect("log path cache")
                    .insert((c.ti.id, c.attempt.clone()), c.log_path.clone());
            }
            match self.gw.assignment(c, &mut outputs).await {
                Ok(a) => out.push(a),
                Err(e) => self.gw.undeliverable(c, e).await,
            }
        }
        out
    }

    /// Writes an attempt's result (and makes the claim `next` asks for in its transaction),
    /// then tells who waits on its consequences.
    async fn report_result(
        &self,
        c: Completion,
        next: Option<tern_store::ClaimNext>,
    ) -> Result<(CompletionReply, Vec<Assignment>), TransportError> {
        let result = TryResult {
            success: c.success,
            retryable: c.retryable,
            exit_code: c.exit_code,
            note: c.reason,
            outputs: c.outputs,
            reschedule_after: c.reschedule_after_ms.map(Duration::from_millis),
        };
        let store = &self.gw.store;
        let (applied, claimed) = match next {
            Some(next) => {
                store
                    .complete_and_claim(c.ti_id, &c.attempt, &self.worker, &result, next)
                    .await
            }
            None => store
                .complete_by(c.ti_id, &c.attempt, Some(&self.worker), &result)
                .await
                .map(|applied| (applied, Vec::new())),
        }
        .map_err(unavailable)?;
        self.gw.events.applied(&applied);
        if let (true, Some(ran)) = (applied.accepted, applied.ran_for) {
            let outcome = if c.success {
                "success"
            } else if c.reschedule_after_ms.is_some() {
                "rescheduled"
            } else {
                "failed"
            };
            crate::metrics::metrics().try_ended(outcome, ran);
        }
        if let (None, Some(records)) = (self.remote_agent, &self.gw.ended) {
            records.forget(c.ti_id, &c.attempt);
        }
        self.gw
            .log_paths
            .lock()
            .expect("log path cache")
            .remove(&(c.ti_id, c.attempt.clone()));
        self.gw
            .log_seqs
            .lock()
            .expect("log sequence cache")
            .remove(&(c.ti_id, c.attempt.clone()));
        let reply = CompletionReply {
            accepted: applied.accepted,
        };
        Ok((reply, self.deliver(&claimed).await))
    }
}

#[async_trait::async_trait]
impl ControlPlane for LocalControlPlane {
    async fn claim(&self, wait: Duration, max: usize) -> Result<Vec<Assignment>, TransportError> {
        let deadline = tokio::time::Instant::now() + wait;
        let signals: Vec<Arc<tokio::sync::Notify>> = self
            .queues
            .iter()
            .map(|q| self.gw.events.queue_signal(q))
            .collect();
        // What the last wait said: a queue's signal means work was just queued there. Only
        // the in-process agent claims at once on a signal: a queue's signal wakes every agent
        // waiting on it, and remote agents sharing a queue look first, so only those that see
        // work take the write lock.
        let claims_at_once = self.remote_agent.is_none();
        let mut queued = Queued::Unknown;
        loop {
            // Listen before probing, so work queued in between is not missed.
            let mut waits: Vec<_> = signals.iter().map(|n| Box::pin(n.notified())).collect();
            if self.remote_agent.is_some() {
                waits.push(Box::pin(self.gw.events.agents_revoked.notified()));
            }
            for w in waits.iter_mut() {
                w.as_mut().enable();
            }
            let claimed = self
                .gw
                .store
                .claim_many_when(&self.queues, &self.worker, self.gw.lease, max, queued)
                .await
                .map_err(transport_error)?;
            let out = self.deliver(&claimed).await;
            if !out.is_empty() {
                return Ok(out);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            // (The last wait is a remote agent's revocation signal.)
            queued = tokio::select! {
                (_, i, _) = futures::future::select_all(waits) => {
                    if claims_at_once && i < signals.len() { Queued::Signalled } else { Queued::Unknown }
                }
                _ = tokio::time::sleep_until(deadline) => Queued::Unknown,
            };
        }
    }

    async fn ack(&self, ti_id: i64, attempt: &str) -> Result<bool, TransportError> {
        if self.remote_agent.is_none() {
            // An in-process claim cannot be lost on the way: it was acknowledged as it was made.
            return Ok(true);
        }
        Ok(self.heartbeat(ti_id, attempt).await?.keep_running)
    }

    async fn heartbeat(&self, ti_id: i64, attempt: &str) -> Result<HeartbeatReply, TransportError> {
        let keep_running = self
            .gw
            .store
            .heartbeat(ti_id, attempt, &self.worker, self.gw.lease)
            .await
            .map_err(unavailable)?;
        Ok(HeartbeatReply { keep_running })
    }

    async fn log(&self, chunk: LogChunk) -> Result<(), TransportError> {
        let path = if self.remote_agent.is_some() {
            self.gw
                .store
                .current_log_path(chunk.ti_id, &chunk.attempt, &self.worker)
                .await
                .map_err(unavailable)?
        } else {
            self.gw.log_path(chunk.ti_id, &chunk.attempt).await?
        };
        let Some(path) = path else {
            return Err(TransportError::Refused(format!(
                "attempt {} of task instance {} is not a current attempt of this agent",
                chunk.attempt, chunk.ti_id
            )));
        };
        if self.gw.delivered_before(&chunk) {
            return Ok(());
        }
        let at = crate::logs::LogTarget {
            path: &path,
            ti_id: chunk.ti_id,
            attempt: &chunk.attempt,
            seq: chunk.seq,
        };
        let taken = self
            .gw
            .logs
            .append(at, &chunk.text)
            .await
            .map_err(unavailable)?;
        if !taken {
            return Err(TransportError::Refused(format!(
                "attempt {} of task instance {} has ended: its log takes no more lines",
                chunk.attempt, chunk.ti_id
            )));
        }
        self.gw.note_delivered(&chunk);
        Ok(())
    }

    async fn ended(&self, c: &Completion) {
        if let (None, Some(records)) = (self.remote_agent, &self.gw.ended) {
            if let Err(e) = records.record(c) {
                tracing::warn!(ti = c.ti_id, "cannot record the try's end: {e}");
            }
        }
    }

    async fn complete(&self, c: Completion) -> Result<CompletionReply, TransportError> {
        Ok(self.report_result(c, None).await?.0)
    }

    async fn complete_and_claim(
        &self,
        c: Completion,
        max: usize,
    ) -> Result<(CompletionReply, Vec<Assignment>), TransportError> {
        let next = self.claims_with_results().then(|| tern_store::ClaimNext {
            queues: self.queues.clone(),
            lease: self.gw.lease,
            max,
        });
        self.report_result(c, next).await
    }

    fn claims_with_results(&self) -> bool {
        self.remote_agent.is_none()
    }

    async fn report(&self, report: Report) -> Result<ReportReply, TransportError> {
        if let Some(id) = self.remote_agent {
            self.gw
                .store
                .record_agent_connections(id, &report.connections)
                .await
                .map_err(unavailable)?;
        }
        let mut current = Vec::new();
        for h in report.held {
            if self
                .gw
                .store
                .heartbeat(h.ti_id, &h.attempt, &self.worker, self.gw.lease)
                .await
                .map_err(unavailable)?
            {
                current.push(h);
            }
        }
        Ok(ReportReply { current })
    }
}

/// For an `external_task_sensor`, the state of what it waits on (see
/// [`tern_store::Store::external_state`]); `None` for every other task.
pub async fn external_state(
    store: &Store,
    task: &tern_core::TaskSpec,
    logical_date: chrono::DateTime<chrono::Utc>,
) -> tern_store::Result<Option<String>> {
    let tern_core::TaskKind::Sensor(tern_core::SensorTask {
        check:
            tern_core::SensorCheck::ExternalTask {
                external_dag_id,
                external_task_id,
                execution_delta_ms,
                ..
            },
        ..
    }) = &task.kind
    else {
        return Ok(None);
    };
    let date = logical_date - chrono::Duration::milliseconds(*execution_delta_ms);
    store
        .external_state(external_dag_id, external_task_id.as_deref(), date)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_store::NewRun;

    fn new_run(run_id: &str) -> NewRun {
        let at = chrono::Utc::now();
        NewRun {
            dag_id: "d".into(),
            run_id: run_id.into(),
            run_type: tern_core::RunType::Manual,
            logical_date: at,
            data_interval: tern_core::DataInterval { start: at, end: at },
            conf: serde_json::json!({}),
            params: serde_json::json!({}),
        }
    }

    /// This process's own commits write the SQLite file, which puts a look off until it is
    /// due; work queued here meanwhile is still signalled at once (it once waited for that
    /// look, up to its interval: a run triggered right after other work started late).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_queued_here_is_signalled_while_a_look_for_file_writes_is_not_due() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tern.db").display());
        let store = Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let spec = tern_testkit::dag("d", vec![tern_testkit::task("a", &[])]);
        store.sync_dags(&[spec], &[]).await.unwrap();
        let version = store.latest_spec("d").await.unwrap().0;
        let events = Arc::new(Events::default());
        let gw = Gateway::new(
            store.clone(),
            events.clone(),
            LogStore::folder(dir.path().join("logs")),
            Duration::from_secs(30),
        );
        let signal = events.queue_signal("default");
        let shutdown = tokio_util::sync::CancellationToken::new();
        // A look for file writes is due an hour after the last look.
        let watcher = tokio::spawn(
            gw.clone()
                .watch_queues_every(Duration::from_secs(3600), shutdown.clone()),
        );
        for i in 0..5 {
            // A commit of this process (a run whose task is queued), then its signal.
            store
                .create_run(&new_run(&format!("r{i}")), version)
                .await
                .unwrap();
            let woken = signal.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            events.work_queued();
            tokio::time::timeout(Duration::from_secs(20), woken)
                .await
                .unwrap_or_else(|_| panic!("run r{i}'s queued task was never signalled"));
        }
        shutdown.cancel();
        watcher.await.unwrap();
    }
}
