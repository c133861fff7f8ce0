//! The agent loop: claim tasks of the agent's queues (long-poll), run up to `concurrency` at
//! once, heartbeat each attempt's lease, stream logs, report results.

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Moves when the agent must stop every running attempt at once (its process lost the
    /// metadata database for too long, so another server may fail its work over).
    pub fence: Option<tokio::sync::watch::Receiver<u64>>,
}

pub struct Agent {
    cp: Arc<dyn ControlPlane>,
    cfg: AgentConfig,
}

/// One of an agent's `concurrency` slots, held by the attempt that runs in it.
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Set while the agent, with slots free and no backlog (its last claim took fewer tasks
    /// than it had slots for), asks for work: then an attempt that ends lets its result claim
    /// the next task for its slot (see [`run_one`]). With a backlog, or every slot busy, the
    /// agent claims for all its free slots in one call instead.
    agent_asks: Arc<AtomicBool>,
}

impl Agent {
    pub fn new(cp: Arc<dyn ControlPlane>, cfg: AgentConfig) -> Agent {
        Agent { cp, cfg }
    }

    /// Runs until `shutdown` is cancelled. Then it stops claiming, stops the attempts it runs
    /// (their results say the agent shut down, so they are retried per policy) and returns once
    /// they are reported. Returns early with [`TransportError::Revoked`] when the control
    /// plane no longer accepts this agent (its running attempts are stopped first).
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), TransportError> {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let asks = Arc::new(AtomicBool::new(false));
        // Whether the last claim took all that was queued (fewer tasks than free slots): no
        // backlog waits, so an ending attempt's result may claim the next task for its slot.
        let mut drained = true;
        let mut running = JoinSet::new();
        let mut backoff = Duration::from_millis(200);
        let stop_all = shutdown.child_token();
        let mut outcome = Ok(());
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
            asks.store(drained, Ordering::Relaxed);
            let claimed = tokio::select! {
                r = self.cp.claim(self.cfg.claim_wait, permits.len()) => r,
                _ = shutdown.cancelled() => break,
            };
            asks.store(false, Ordering::Relaxed);
            while running.try_join_next().is_some() {}
            match claimed {
                Ok(assignments) => {
                    backoff = Duration::from_millis(200);
                    drained = assignments.len() < permits.len();
                    for a in assignments {
                        let slot = Slot {
                            _permit: permits.pop().expect("never more tasks than permits"),
                            agent_asks: asks.clone(),
                        };
                        let cp = self.cp.clone();
                        let exec = self.cfg.exec.clone();
                        let stop = stop_all.child_token();
                        let fence = self.cfg.fence.clone();
                        running.spawn(run_attempt(cp, a, exec, stop, fence, Some(slot)));
                    }
                }
                Err(e @ TransportError::Revoked(_)) => {
                    tracing::error!(agent = %self.cfg.name, "{e}; stopping");
                    stop_all.cancel();
                    outcome = Err(e);
                    break;
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
        stop_all.cancel();
        while running.join_next().await.is_some() {}
        outcome
    }
}

/// An attempt stops itself when no lease renewal has been accepted for this share of the
/// lease: the control plane may declare it lost once the whole lease has passed, and its retry
/// must never overlap it.
const FENCE_AT: f64 = 0.85;

/// Confirms a claim before its task starts, retrying a lost call for a while. `Some(sent)`
/// (when the confirmed call was sent) when the task may start.
async fn acknowledge(cp: &dyn ControlPlane, a: &Assignment) -> Option<std::time::Instant> {
    let give_up = std::time::Instant::now() + Duration::from_millis(a.lease_ms / 3);
    let mut wait = Duration::from_millis(100);
    loop {
        let sent = std::time::Instant::now();
        match cp.ack(a.ti_id, &a.attempt).await {
            Ok(true) => return Some(sent),
            Ok(false) => {
                tracing::warn!(ti = a.ti_id, "claim is no longer current; not starting it");
                return None;
            }
            Err(e @ (TransportError::Refused(_) | TransportError::Revoked(_))) => {
                tracing::warn!(ti = a.ti_id, "claim refused: {e}; not starting it");
                return None;
            }
            Err(e) if std::time::Instant::now() + wait >= give_up => {
                tracing::warn!(
                    ti = a.ti_id,
                    "could not confirm the claim ({e}); not starting it, the control plane will queue it again"
                );
                return None;
            }
            Err(_) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
}

/// Runs one claimed attempt, then the tasks claimed with its result, in `slot` (the agent's
/// concurrency permit), until a result brings none (see [`run_one`]).
pub async fn run_attempt(
    cp: Arc<dyn ControlPlane>,
    a: Assignment,
    exec: ExecOptions,
    stop: CancellationToken,
    fence: Option<tokio::sync::watch::Receiver<u64>>,
    slot: Option<Slot>,
) {
    let _runs = crate::resident::attempt_runs();
    let mut todo = std::collections::VecDeque::from([a]);
    let mut slot = slot;
    while let Some(a) = todo.pop_front() {
        let (next, kept) = run_one(cp.clone(), a, &exec, &stop, fence.clone(), slot).await;
        slot = kept;
        todo.extend(next);
    }
}

/// Runs one claimed attempt with heartbeats and reports its end; returns the tasks claimed
/// with its result and the slot, if it was kept for them. The claim is confirmed first;
/// while the task runs, its lease is renewed every third of the lease, and the task is
/// stopped when no renewal was accepted for [`FENCE_AT`] of the lease.
///
/// Where the control plane claims with results ([`ControlPlane::claims_with_results`]: the
/// in-process one) and the agent is asking for work with slots free (so no backlog waits for
/// this slot), the slot is kept while the result is reported, and the report claims the
/// agent's next task for it in the result's transaction — on a chain, the task this result
/// made ready, without a transaction or a wake-up of its own. Otherwise the slot is given back
/// as soon as the task's process has ended and its end is recorded, before the result is
/// reported: a slot limits running tasks, and reporting waits for the control plane, which
/// would otherwise keep the next task from starting (a busy agent claims for all its free
/// slots in one call).
async fn run_one(
    cp: Arc<dyn ControlPlane>,
    a: Assignment,
    exec: &ExecOptions,
    stop: &CancellationToken,
    mut fence: Option<tokio::sync::watch::Receiver<u64>>,
    slot: Option<Slot>,
) -> (Vec<Assignment>, Option<Slot>) {
    // Only a fence that moves from now on stops this attempt: a receiver cloned from the
    // agent's still holds every earlier move as unseen.
    if let Some(f) = fence.as_mut() {
        f.borrow_and_update();
    }
    let Some(acked_at) = acknowledge(cp.as_ref(), &a).await else {
        cp.abandon(a.ti_id, &a.attempt).await;
        return (Vec::new(), slot);
    };
    let cancel = stop.child_token();
    // Why the agent stopped the attempt itself, if it did.
    let fenced: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let sink = ChunkedSink::start(cp.clone(), a.ti_id, a.attempt.clone());
    let heartbeat = {
        let cp = cp.clone();
        let cancel = cancel.clone();
        let fenced = fenced.clone();
        let (ti, attempt) = (a.ti_id, a.attempt.clone());
        let lease = Duration::from_millis(a.lease_ms.max(300));
        let every = lease / 3;
        let fence_after = lease.mul_f64(FENCE_AT);
        tokio::spawn(async move {
            let mut renewed = acked_at;
            let fence_now = |why: String| {
                tracing::warn!(ti, "{why}");
                *fenced.lock().expect("fence reason") = Some(why);
                cancel.cancel();
            };
            loop {
                let fence_at = renewed + fence_after;
                let next = (std::time::Instant::now() + every).min(fence_at);
                let fence_moved = async {
                    match fence.as_mut() {
                        Some(f) => f.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    true = fence_moved => {
                        fence_now("stopped by its agent: the server running it lost the metadata database, so another server may fail the task over; stopped so no retry overlaps it".into());
                        return;
                    }
                }
                if std::time::Instant::now() >= fence_at {
                    fence_now(format!(
                        "stopped by its agent: no lease renewal was accepted for {} (the control plane was unreachable), so the task was stopped before its lease ran out and a retry could overlap it",
                        tern_core::format_duration(fence_after)
                    ));
                    return;
                }
                let sent = std::time::Instant::now();
                // A renewal that hangs counts as failed when the fence comes due.
                let answer = tokio::time::timeout(
                    fence_at.saturating_duration_since(sent),
                    cp.heartbeat(ti, &attempt),
                )
                .await;
                match answer {
                    Ok(Ok(r)) if !r.keep_running => {
                        tracing::warn!(ti, "attempt is no longer current; stopping it");
                        cancel.cancel();
                        return;
                    }
                    Ok(Ok(_)) => renewed = sent,
                    Ok(Err(e)) => tracing::warn!(ti, "heartbeat failed: {e}"),
                    Err(_) => tracing::warn!(ti, "heartbeat got no answer in time"),
                }
            }
        })
    };
    let mut completion = execute(&a, exec, &sink, &cancel).await;
    heartbeat.abort();
    let fenced = fenced.lock().expect("fence reason").take();
    if let (Some(why), false) = (fenced, completion.success) {
        completion.retryable = true;
        completion.reason = Some(why);
    } else if stop.is_cancelled() && !completion.success {
        completion.retryable = true;
        completion.reason = Some("interrupted: the agent shut down while the task ran".into());
    }
    cp.ended(&completion).await;
    let claims_next = slot
        .as_ref()
        .is_some_and(|s| s.agent_asks.load(Ordering::Relaxed))
        && cp.claims_with_results()
        && !stop.is_cancelled();
    let slot = if claims_next {
        slot
    } else {
        drop(slot);
        None
    };
    sink.finish().await;
    let mut wait = Duration::from_millis(100);
    for _ in 0..8 {
        let reported = if claims_next {
            cp.complete_and_claim(completion.clone(), 1).await
        } else {
            cp.complete(completion.clone())
                .await
                .map(|reply| (reply, Vec::new()))
        };
        match reported {
            Ok((_, next)) => return (next, slot),
            Err(e @ (TransportError::Refused(_) | TransportError::Revoked(_))) => {
                tracing::warn!(ti = a.ti_id, "result refused: {e}");
                return (Vec::new(), None);
            }
            Err(e) => {
                tracing::warn!(ti = a.ti_id, "could not report the result: {e}; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    (Vec::new(), None)
}
