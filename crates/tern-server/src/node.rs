//! One tern process's control-plane roles, started together and stopped together: DAG loading
//! and scheduling (with the notifier), the in-process agent, the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tern_store::{DagRun, Store};
use tern_worker::connections::Connections;
use tern_worker::{Agent, AgentConfig, ExecOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::Events;
use crate::gateway::Gateway;
use crate::logs::LogStore;
use crate::scheduler::Scheduler;
use crate::supervise::Supervisor;

/// Which roles a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub scheduler: bool,
    /// Whether the scheduler creates the runs of schedules that came due (off for
    /// `dags test` and `backfill`, which run only the runs they make).
    pub schedule_runs: bool,
    /// Whether the scheduler loads the DAG folder (off for runs of an already loaded DAG).
    pub dag_sync: bool,
    pub local_agent: bool,
    pub http: bool,
}

impl Roles {
    pub const STANDALONE: Roles = Roles {
        scheduler: true,
        schedule_runs: true,
        dag_sync: true,
        local_agent: true,
        http: true,
    };
}

pub struct Node {
    pub store: Store,
    pub events: Arc<Events>,
    pub gateway: Gateway,
    pub http_addr: Option<SocketAddr>,
    pub worker_name: String,
    shutdown: CancellationToken,
    supervisor: JoinHandle<()>,
    /// Cancelled when a role stopped on its own; [`Node::failure`] says which and why.
    failed: CancellationToken,
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

/// The name of this process's local agent, unique per host and process so a restarted process
/// can tell its predecessor's attempts from a live process's.
fn local_worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("local-{host}-{}", std::process::id())
}

/// Fails the attempts left running by local agents of this host whose process is gone (the
/// control plane was killed or stopped mid-run), so they retry per policy now rather than
/// after their lease expires.
async fn recover_dead_local_agents(store: &Store, me: &str) -> anyhow::Result<()> {
    let prefix = me
        .rsplit_once('-')
        .map(|(p, _)| format!("{p}-"))
        .unwrap_or_default();
    for worker in store.running_workers().await? {
        let Some(pid) = worker
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if tern_worker::process::alive(pid) {
            continue;
        }
        let n = store
            .fail_attempts_of_worker(
                &worker,
                "interrupted: the tern process running this task stopped (it was killed or restarted)",
            )
            .await?;
        if n > 0 {
            tracing::warn!(
                worker,
                attempts = n,
                "recovered attempts of a stopped local agent"
            );
        }
    }
    Ok(())
}

/// How often a server records that it is alive.
const NODE_BEAT: Duration = Duration::from_secs(1);
/// A server that could not record a beat for this long stops its local attempts (fences).
const NODE_FENCE: Duration = Duration::from_secs(3);
/// A server silent for this long is failed over by the others (its local attempts end as
/// retryable failures). Longer than [`NODE_FENCE`], so a server cut off from the database has
/// stopped its tasks by then.
const NODE_SILENCE: Duration = Duration::from_secs(6);

/// The `node_heartbeat` role: beats every [`NODE_BEAT`] (a process with a local agent), fails
/// over silent servers (a process with a scheduler), and fences the local agent when the
/// database has been out of reach for [`NODE_FENCE`].
async fn node_heartbeat(
    store: Store,
    events: Arc<Events>,
    me: String,
    roles: Roles,
    fence: tokio::sync::watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut last_ok = tokio::time::Instant::now();
    let mut fenced = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(NODE_BEAT) => {}
            _ = shutdown.cancelled() => return,
        }
        let beat = if roles.local_agent {
            tokio::time::timeout(NODE_BEAT, store.node_heartbeat(&me, &me)).await
        } else {
            Ok(Ok(()))
        };
        match beat {
            Ok(Ok(())) => {
                last_ok = tokio::time::Instant::now();
                fenced = false;
                events.roles.beat("node_heartbeat");
            }
            Ok(Err(e)) => tracing::warn!("cannot record this server's heartbeat: {e}"),
            Err(_) => tracing::warn!("recording this server's heartbeat took over {NODE_BEAT:?}"),
        }
        if roles.local_agent && !fenced && last_ok.elapsed() >= NODE_FENCE {
            tracing::error!(
                "no heartbeat recorded for {:?}: stopping this server's running tasks before another server fails them over",
                last_ok.elapsed()
            );
            fence.send_modify(|g| *g += 1);
            fenced = true;
        }
        if roles.scheduler {
            match store.fail_over_silent_nodes(&me, NODE_SILENCE).await {
                Ok(failed) => {
                    for (node, attempts) in failed {
                        tracing::warn!(
                            node,
                            attempts,
                            "failed over a server that stopped heartbeating"
                        );
                        events.work_queued();
                        events.scheduler.notify_one();
                    }
                }
                Err(e) => tracing::warn!("cannot fail over silent servers: {e}"),
            }
        }
    }
}

/// Delivers the results a killed predecessor recorded but did not report: those tries
/// finished, so they are not run again.
/// The chunk number of the line a recovered end adds to its log: one no agent's log reaches.
const RECOVERED_END_SEQ: u64 = i64::MAX as u64;

async fn deliver_recorded_ends(
    store: &Store,
    logs: &LogStore,
    ended: &tern_worker::ended::EndedRecords,
) -> anyhow::Result<()> {
    for c in ended.take_leftovers()? {
        // The last lines the try wrote may have died with the predecessor: its log says how it
        // ended and that something may be missing before that.
        if let Some(path) = store.log_path_of_attempt(c.ti_id, &c.attempt).await? {
            let how = if c.success { "succeeded" } else { "failed" };
            let line = tern_worker::logsink::stamp(&format!(
                "tern: the server stopped as this try ended; its recorded end is delivered now: \
                 task {how} (lines written just before the stop may be missing)"
            ));
            let at = crate::logs::LogTarget {
                path: &path,
                ti_id: c.ti_id,
                attempt: &c.attempt,
                seq: RECOVERED_END_SEQ,
            };
            if let Err(e) = logs.append(at, &line).await {
                tracing::warn!(ti = c.ti_id, "cannot note the recorded end in the log: {e}");
            }
        }
        let result = tern_store::TryResult {
            success: c.success,
            retryable: c.retryable,
            exit_code: c.exit_code,
            note: c.reason.clone(),
            outputs: c.outputs.clone(),
            reschedule_after: c.reschedule_after_ms.map(Duration::from_millis),
        };
        let applied = store.complete(c.ti_id, &c.attempt, &result).await?;
        tracing::info!(
            ti = c.ti_id,
            accepted = applied.accepted,
            "delivered the result of a try that ended just before this process's predecessor stopped"
        );
    }
    Ok(())
}

impl Node {
    /// Opens the store, migrates it, and starts the requested roles.
    pub async fn start(cfg: &Config, roles: Roles) -> anyhow::Result<Node> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.home).with_context(|| {
            format!(
                "cannot create the data folder {} (setting home / --home)",
                cfg.home.display()
            )
        })?;
        let store = Store::open(&cfg.database_url())
            .await
            .with_context(|| format!("cannot open the metadata database {}", cfg.database_url()))?
            .with_max_map_length(cfg.scheduler.max_map_length);
        Self::start_with_store(cfg, roles, store).await
    }

    pub async fn start_with_store(
        cfg: &Config,
        roles: Roles,
        store: Store,
    ) -> anyhow::Result<Node> {
        let events = Arc::new(Events::default());
        let logs = LogStore::open(cfg, &store)?;
        // Where the DAG files are: the folder, or the bundle tree the loader unpacked last.
        let current_dags = if cfg.dags.source.is_some() {
            crate::bundle::CurrentFolder::default()
        } else {
            crate::bundle::CurrentFolder::fixed(cfg.dags_folder())
        };
        let shipper = logs.shipper();
        let mut gateway = Gateway::new(store.clone(), events.clone(), logs, cfg.lease()?);
        gateway.secrets = Some(Arc::new(
            crate::secrets::SecretBox::load(&cfg.home).context("the secret key")?,
        ));
        let shutdown = CancellationToken::new();
        let worker_name = local_worker_name();
        let mut roles_sup = Supervisor::new(events.roles.clone());
        // Moves when this process lost the database for too long: the local agent then stops
        // its attempts before another server can fail them over.
        let (fence_tx, fence_rx) = tokio::sync::watch::channel(0u64);
        let mut http_addr = None;
        let groups = if roles.local_agent {
            // First end what tries of a killed predecessor left running, then retry them.
            let dir = cfg.home.join("run").join("groups");
            let groups = tern_worker::groups::GroupRegistry::open(&dir).with_context(|| {
                format!("cannot open the process-group folder {}", dir.display())
            })?;
            groups
                .end_leftovers()
                .with_context(|| format!("cannot read {}", dir.display()))?;
            let ended_dir = cfg.home.join("run").join("ended");
            let ended = tern_worker::ended::EndedRecords::open(&ended_dir)
                .with_context(|| format!("cannot open {}", ended_dir.display()))?;
            deliver_recorded_ends(&store, &gateway.logs, &ended).await?;
            gateway.ended = Some(Arc::new(ended));
            recover_dead_local_agents(&store, &worker_name).await?;
            // On the list of live servers before the local agent takes any work, so a server
            // that dies in its first second is failed over too.
            store.node_heartbeat(&worker_name, &worker_name).await?;
            Some(Arc::new(groups))
        } else {
            None
        };
        if roles.local_agent || roles.http {
            roles_sup.spawn(
                "queue_watcher",
                gateway.clone().watch_queues(shutdown.clone()),
            );
            roles_sup.spawn("admitter", gateway.clone().admit_deferred(shutdown.clone()));
            roles_sup.spawn(
                "wake_listener",
                crate::wake::listen(cfg.home.clone(), events.clone(), shutdown.clone()),
            );
        }
        if roles.http {
            roles_sup.spawn(
                "agent_liveness",
                gateway.clone().keep_agents_seen(shutdown.clone()),
            );
        }
        if roles.scheduler {
            // Remote agents could not heartbeat while no control plane ran: give their
            // attempts one lease to report before any is declared lost.
            let extended = store.extend_remote_leases(cfg.lease()?).await?;
            if extended > 0 {
                tracing::info!(
                    attempts = extended,
                    "gave attempts of remote agents one lease to report after the restart"
                );
            }
            let dags = if roles.dag_sync {
                let mut loader = crate::dagsync::DagLoader::from_config(
                    cfg,
                    store.clone(),
                    current_dags.clone(),
                )?;
                // Load the files once before anything else so DAGs are there when we return.
                // A failure here is not fatal: the scheduler loop loads them again.
                if let Err(e) = loader.load(true).await {
                    tracing::warn!(
                        "first load of the DAG files failed, retrying in the loop: {e:#}"
                    );
                }
                Some(loader)
            } else {
                None
            };
            let scheduler = Scheduler {
                store: store.clone(),
                events: events.clone(),
                dags,
                scan_interval: cfg.dag_scan_interval()?,
                housekeeping_interval: cfg.housekeeping_interval()?,
                queue_timeout: cfg.queue_timeout()?,
                schedule_runs: roles.schedule_runs,
            };
            roles_sup.spawn("scheduler", scheduler.run(shutdown.clone()));
            if roles.dag_sync && cfg.dags.source.is_none() {
                // A plain folder: a change is read at once, not at the next scan.
                roles_sup.spawn(
                    "dag_watcher",
                    crate::dag_watch::watch(cfg.dags_folder(), events.clone(), shutdown.clone()),
                );
            }
            let notifier =
                crate::notify::Notifier::from_config(cfg, store.clone(), gateway.secrets.clone())?;
            roles_sup.spawn("notifier", notifier.run(shutdown.clone()));
            if let Some(shipper) = shipper {
                roles_sup.spawn("log_shipper", shipper.run(shutdown.clone()));
            }
        }
        if roles.local_agent {
            let cp = Arc::new(gateway.for_agent(&worker_name, cfg.agent.queues.clone()));
            let agent = Agent::new(
                cp,
                AgentConfig {
                    name: worker_name.clone(),
                    concurrency: cfg.agent.concurrency,
                    claim_wait: Duration::from_secs(30),
                    exec: ExecOptions {
                        python: cfg.agent.python.clone(),
                        kill_grace: cfg.kill_grace()?,
                        groups,
                        venvs: cfg.home.join("venvs"),
                        pip: cfg.agent.pip_source(),
                        ..ExecOptions::default()
                    }
                    .with_connections(
                        Connections::resolve(&Default::default(), "", std::env::vars())
                            .context("a TERN_CONN_<NAME> variable of the control plane")?,
                    ),
                    fence: Some(fence_rx.clone()),
                },
            );
            let token = shutdown.clone();
            roles_sup.spawn("local_agent", async move {
                // The local agent's claims are never refused: it serves no site.
                if let Err(e) = agent.run(token).await {
                    tracing::error!("the local agent stopped: {e}");
                }
            });
        }
        if roles.http {
            let (addr, h) = crate::http::serve(
                store.clone(),
                gateway.clone(),
                &cfg.server.bind,
                cfg.server
                    .tls_cert
                    .as_deref()
                    .zip(cfg.server.tls_key.as_deref()),
                current_dags.clone(),
                events.roles.clone(),
                shutdown.clone(),
            )
            .await?;
            http_addr = Some(addr);
            roles_sup.spawn("http", async move {
                if let Err(e) = h.await {
                    std::panic::resume_unwind(e.into_panic());
                }
            });
        }
        if roles.local_agent || roles.scheduler {
            roles_sup.spawn(
                "node_heartbeat",
                node_heartbeat(
                    store.clone(),
                    events.clone(),
                    worker_name.clone(),
                    roles,
                    fence_tx,
                    shutdown.clone(),
                ),
            );
        }
        let failed = roles_sup.failed.clone();
        let failure = roles_sup.failure_slot();
        let supervisor = tokio::spawn(roles_sup.watch(shutdown.clone()));
        Ok(Node {
            store,
            events,
            gateway,
            http_addr,
            worker_name,
            shutdown,
            supervisor,
            failed,
            failure,
        })
    }

    /// Waits until run `run_id` of `dag_id` has finished.
    pub async fn wait_run(&self, dag_id: &str, run_id: &str) -> anyhow::Result<DagRun> {
        loop {
            let notified = self.events.run_finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let run = self.store.get_run(dag_id, run_id).await?;
            if run.state.is_finished() {
                return Ok(run);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// Resolves when a role stopped on its own (a panic, an error): the process must end.
    /// Returns which role and why.
    pub async fn failure(&self) -> String {
        self.failed.cancelled().await;
        self.failure
            .lock()
            .expect("failure")
            .clone()
            .unwrap_or_else(|| "a role stopped".into())
    }

    /// Stops every role: the agent stops its running attempts and reports them, then the rest
    /// ends, and the process leaves the list of live servers.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.supervisor.await;
        if let Err(e) = self.store.remove_node(&self.worker_name).await {
            tracing::warn!("cannot remove this server from the list of live servers: {e}");
        }
    }
}
