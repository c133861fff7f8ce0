//! The agent loop: claim tasks of the agent's queues (long-poll), run up to `concurrency` at
//! once, heartbeat each attempt's lease, stream logs, report results.

use std::sync::Arc;
use std::time::Duration;

use tern_protocol::Assignment;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::executor::{execute, ExecOptions};
use crate::logsink::ChunkedSink;
use crate::transport::{ControlPlane, TransportError};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How the agent is known in task instances (`worker`).
    pub name: String,
    /// Task attempts run at once.
    pub concurrency: usize,
    /// How long one claim call waits for work before asking again.
    pub claim_wait: Duration,
    pub exec: ExecOptions,
}

pub struct Agent {
    cp: Arc<dyn ControlPlane>,
    cfg: AgentConfig,
}

impl Agent {
    pub fn new(cp: Arc<dyn ControlPlane>, cfg: AgentConfig) -> Agent {
        Agent { cp, cfg }
    }

    /// Runs until `shutdown` is cancelled. Then it stops claiming, stops the attempts it runs
    /// (their results say the agent shut down, so they are retried per policy) and returns once
    /// they are reported.
    pub async fn run(&self, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let mut running = JoinSet::new();
        let mut backoff = Duration::from_millis(200);
        loop {
            let first = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                _ = shutdown.cancelled() => break,
            };
            // Claim as many tasks as there are free slots, in one call.
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let claimed = tokio::select! {
                r = self.cp.claim(self.cfg.claim_wait, permits.len()) => r,
                _ = shutdown.cancelled() => break,
            };
            while running.try_join_next().is_some() {}
            match claimed {
                Ok(assignments) => {
                    backoff = Duration::from_millis(200);
                    for a in assignments {
                        let permit = permits.pop().expect("never more tasks than permits");
                        let cp = self.cp.clone();
                        let exec = self.cfg.exec.clone();
                        let stop = shutdown.child_token();
                        running.spawn(async move {
                            run_attempt(cp, a, exec, stop).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(agent = %self.cfg.name, "claim failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        while running.join_next().await.is_some() {}
    }
}

/// Runs one claimed attempt with heartbeats and reports its end.
pub async fn run_attempt(
    cp: Arc<dyn ControlPlane>,
    a: Assignment,
    exec: ExecOptions,
    stop: CancellationToken,
) {
    let cancel = stop.child_token();
    let sink = ChunkedSink::start(cp.clone(), a.ti_id, a.attempt.clone());
    let heartbeat = {
        let cp = cp.clone();
        let cancel = cancel.clone();
        let (ti, attempt) = (a.ti_id, a.attempt.clone());
        let every = Duration::from_millis((a.lease_ms / 3).max(100));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match cp.heartbeat(ti, &attempt).await {
                    Ok(r) if !r.keep_running => {
                        tracing::warn!(ti, "attempt is no longer current; stopping it");
                        cancel.cancel();
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(ti, "heartbeat failed: {e}"),
                }
            }
        })
    };
    let mut completion = execute(&a, &exec, &sink, &cancel).await;
    heartbeat.abort();
    if stop.is_cancelled() && !completion.success {
        completion.retryable = true;
        completion.reason = Some("interrupted: the agent shut down while the task ran".into());
    }
    sink.finish().await;
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        match cp.complete(completion.clone()).await {
            Ok(_) => return,
            Err(TransportError::Refused(e)) => {
                tracing::warn!(ti = a.ti_id, "result refused: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(ti = a.ti_id, "could not report the result: {e}; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}
