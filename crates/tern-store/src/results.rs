//! Results that arrive together are written together: the entry point of an agent's result
//! ([`Store::complete_by`]).
//!
//! A result joins a queue; one writer task at a time takes everything queued and ends those
//! attempts in one transaction: the run rows of all of them locked first, in key order (the
//! lock order), their instances read in one statement, then each attempt ended by the same
//! checks and writes as any other path ([`Store::end_locked`]), then each run judged once
//! (does it end?) and one admission for them all; the ends in a final state are written
//! together in one statement, their downstream tasks looked at once per run (`gathered.rs`).
//! Under load (many tasks ending at once) that is one transaction, one commit and one
//! admission for many results instead of one each; a lone result is a batch of one, written
//! at once, so nothing waits for company.
//!
//! An agent may ask, with its result, to claim its next tasks in the same transaction
//! ([`Store::complete_and_claim`]): after the admission, the claim runs the statements every
//! claim runs ([`Store::claim_in`]), so the task a result made ready starts without a
//! transaction (and, on a chain, a wake-up of the agent) of its own.
//!
//! If the shared transaction fails (a deadlock with another server, a database error), it is
//! rolled back and each result is ended again in a transaction of its own, so one result's
//! failure is only its own. The writer runs as a task of its own: a caller that stops waiting
//! (an agent's request dropped) cancels nothing of the others' results.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::attempts::Expect;
use crate::{Applied, ClaimNext, Claimed, Result, Store, TryResult};

/// Most results ended in one transaction: a transaction stays short however many arrive.
const BATCH_MAX: usize = 256;

/// One queued result and where its answer goes.
struct Pending {
    ti_id: i64,
    attempt: String,
    worker: Option<String>,
    result: TryResult,
    /// What to claim for `worker` after the result, in its transaction.
    next: Option<ClaimNext>,
    reply: oneshot::Sender<Result<(Applied, Vec<Claimed>)>>,
}

impl Pending {
    fn expect(&self) -> Expect<'_> {
        Expect::agent_result(&self.attempt, self.worker.as_deref())
    }

    /// The claim to make after this result: the reporting agent and what it asked for.
    fn claim(&self) -> Option<(&str, &ClaimNext)> {
        Some((self.worker.as_deref()?, self.next.as_ref()?))
    }
}

impl Store {
    /// Makes `claim` (the reporting agent and what it asked for; none: nothing) in `tx`, after
    /// the result's admission. When nothing is left queued on the agent's queues after it (it
    /// took fewer than it asked for, or a look finds none), `applied` no longer asks for agents
    /// of those queues to be woken: an agent woken for work this claim took would take the
    /// write lock for nothing.
    pub(crate) async fn claim_after_result(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        claim: Option<(&str, &ClaimNext)>,
        mut applied: Vec<&mut Applied>,
        now: i64,
    ) -> Result<Vec<Claimed>> {
        let Some((worker, next)) = claim else {
            return Ok(Vec::new());
        };
        let (claimed, more_queued) = self
            .claim_in(
                tx,
                &next.queues,
                worker,
                next.lease,
                next.max,
                false,
                true,
                now,
            )
            .await?;
        if !more_queued {
            for a in applied.iter_mut() {
                a.drained(&next.queues);
            }
        }
        Ok(claimed)
    }
}

#[derive(Default)]
struct Queue {
    items: Vec<Pending>,
    /// Whether a writer task is running (it takes what is queued until nothing is).
    writing: bool,
    /// Results ended in a transaction shared with others, since the store was opened.
    together: u64,
    /// Of those, the quiet ends written in one statement (`gathered.rs`).
    quiet_together: u64,
    /// Results only queue, no writer starts (tests: [`Store::debug_pause_results`]).
    paused: bool,
}

/// The results waiting to be written, shared by clones of a [`Store`].
#[derive(Default, Clone)]
pub(crate) struct ResultQueue(Arc<Mutex<Queue>>);

impl Queue {
    /// Whether a writer must be started now (results wait, none runs, not paused); if so, it
    /// is marked running.
    fn wants_writer(&mut self) -> bool {
        !self.items.is_empty() && !self.paused && !std::mem::replace(&mut self.writing, true)
    }
}

impl ResultQueue {
    /// Queues `item`; true when the caller must start a writer.
    fn push(&self, item: Pending) -> bool {
        let mut q = self.0.lock().expect("result queue");
        q.items.push(item);
        q.wants_writer()
    }

    /// The next batch; empty (and the writer marked stopped) when nothing is queued.
    fn take(&self) -> Vec<Pending> {
        let mut q = self.0.lock().expect("result queue");
        let n = q.items.len().min(BATCH_MAX);
        if n == 0 {
            q.writing = false;
        }
        q.items.drain(..n).collect()
    }
}

/// Results queue without being written until this is dropped.
#[doc(hidden)]
pub struct PausedResults(Store);

impl Drop for PausedResults {
    fn drop(&mut self) {
        let start = {
            let mut q = self.0.results.0.lock().expect("result queue");
            q.paused = false;
            q.wants_writer()
        };
        if start {
            self.0.start_writer();
        }
    }
}

impl Store {
    /// For tests: results queue without being written until the returned guard is dropped, so
    /// a test can make results arrive together.
    #[doc(hidden)]
    pub fn debug_pause_results(&self) -> PausedResults {
        self.results.0.lock().expect("result queue").paused = true;
        PausedResults(self.clone())
    }

    /// For tests: how many results wait to be written.
    #[doc(hidden)]
    pub fn debug_queued_results(&self) -> usize {
        self.results.0.lock().expect("result queue").items.len()
    }

    /// How many results that ended in a final state were written in one statement with others
    /// (`gathered.rs`) since this store was opened (for tests: shows that path is taken).
    #[doc(hidden)]
    pub fn quiet_ends_written_together(&self) -> u64 {
        self.results.0.lock().expect("result queue").quiet_together
    }

    /// How many results were ended in a transaction shared with others since this store was
    /// opened (for tests and the speed benchmarks: shows the shared path is taken).
    #[doc(hidden)]
    pub fn results_written_together(&self) -> u64 {
        self.results.0.lock().expect("result queue").together
    }
}

/// Marks the writer stopped if it ends any other way than by finding the queue empty (a
/// panic, or its runtime shutting down): the results still queued are answered with an error
/// (their senders retry, which starts a new writer) instead of waiting for a writer that never
/// comes.
struct WriterGuard {
    queue: ResultQueue,
    finished: bool,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if !self.finished {
            if let Ok(mut q) = self.queue.0.lock() {
                q.writing = false;
                q.items.clear();
            }
        }
    }
}

impl Store {
    /// Records the result of an attempt and, in the same transaction, its consequences:
    /// retry or final state, downstream readiness, admission, run completion. A result for an
    /// attempt that is no longer current is noted on its try and changes nothing else.
    pub async fn complete(&self, ti_id: i64, attempt: &str, result: &TryResult) -> Result<Applied> {
        self.complete_by(ti_id, attempt, None, result).await
    }

    /// [`Store::complete`], accepted only from `worker` when given: an agent can end only the
    /// attempts it holds. Results that arrive while others are being written are written
    /// together, in one transaction (see the module documentation).
    pub async fn complete_by(
        &self,
        ti_id: i64,
        attempt: &str,
        worker: Option<&str>,
        result: &TryResult,
    ) -> Result<Applied> {
        Ok(self.report(ti_id, attempt, worker, result, None).await?.0)
    }

    /// [`Store::complete_by`], and then, in the same transaction, a claim of up to
    /// `next.max` queued instances of `next.queues` for `worker` — made by the same statements
    /// as every claim, after the result's own admission, so a task the result made ready is
    /// among them. A remote agent's worker claims nothing here: its claims are checked against
    /// its revocation and acknowledged, on its own claim calls.
    pub async fn complete_and_claim(
        &self,
        ti_id: i64,
        attempt: &str,
        worker: &str,
        result: &TryResult,
        next: ClaimNext,
    ) -> Result<(Applied, Vec<Claimed>)> {
        let next = crate::agents::agent_id_of_worker(worker)
            .is_none()
            .then_some(next);
        self.report(ti_id, attempt, Some(worker), result, next)
            .await
    }

    /// Queues a result (and the claim to make after it) for the writer and waits for it.
    async fn report(
        &self,
        ti_id: i64,
        attempt: &str,
        worker: Option<&str>,
        result: &TryResult,
        next: Option<ClaimNext>,
    ) -> Result<(Applied, Vec<Claimed>)> {
        let (reply, answer) = oneshot::channel();
        let item = Pending {
            ti_id,
            attempt: attempt.to_string(),
            worker: worker.map(str::to_string),
            result: result.clone(),
            next,
            reply,
        };
        if self.results.push(item) {
            self.start_writer();
        }
        answer.await.map_err(|_| {
            crate::StoreError::Conflict(format!(
                "the result of task instance {ti_id} (attempt {attempt}) was not written: its writer stopped; report it again"
            ))
        })?
    }

    /// Starts the writer task (the caller marked it running).
    fn start_writer(&self) {
        let store = self.clone();
        tokio::spawn(async move { store.write_results().await });
    }

    /// The writer: ends queued results, a batch at a time, until none is left.
    async fn write_results(self) {
        let mut guard = WriterGuard {
            queue: self.results.clone(),
            finished: false,
        };
        loop {
            let batch = self.results.take();
            if batch.is_empty() {
                guard.finished = true;
                return;
            }
            if batch.len() > 1 {
                match self.end_together(&batch).await {
                    Ok((applied, quiet)) => {
                        let mut q = self.results.0.lock().expect("result queue");
                        q.together += applied.len() as u64;
                        q.quiet_together += quiet;
                        drop(q);
                        for (item, applied) in batch.into_iter().zip(applied) {
                            let _ = item.reply.send(Ok(applied));
                        }
                        continue;
                    }
                    Err(e) => tracing::debug!(
                        results = batch.len(),
                        "results written together failed ({e}); writing each on its own"
                    ),
                }
            }
            for item in batch {
                let ended = self
                    .end_one_then_claim(item.ti_id, &item.expect(), &item.result, item.claim())
                    .await;
                let _ = item
                    .reply
                    .send(ended.map(|(ended, claimed)| (ended.into_applied(), claimed)));
            }
        }
    }

    /// Ends every attempt of `batch` in one transaction: their instances read in one
    /// statement, each run judged once after them all, then one admission.
    /// Also returns how many of them were quiet ends written in one statement.
    async fn end_together(&self, batch: &[Pending]) -> Result<(Vec<(Applied, Vec<Claimed>)>, u64)> {
        let now = self.now_ms();
        let (mut tx, _write_lock) = self.write_tx().await?;
        let ids: Vec<i64> = batch.iter().map(|p| p.ti_id).collect();
        let mut read = self.lock_and_read(&mut tx, &ids).await?;
        read.gather_quiet_ends();
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            let ended = self
                .end_locked(
                    &mut tx,
                    &mut read,
                    item.ti_id,
                    &item.expect(),
                    &item.result,
                    now,
                )
                .await?;
            out.push(ended.into_applied());
        }
        // A run that ended is told to the last accepted result of it.
        for run_pk in self.judge_runs(&mut tx, &mut read, now).await? {
            let last = batch
                .iter()
                .zip(out.iter_mut())
                .rev()
                .find(|(item, applied)| {
                    applied.accepted && read.run_of(item.ti_id) == Some(run_pk)
                });
            if let Some((_, applied)) = last {
                applied.run_finished = true;
            }
        }
        if out.iter().any(|a| a.accepted) {
            let admitted = self.try_admit(&mut tx, now).await?;
            for applied in out.iter_mut().filter(|a| a.accepted) {
                applied.set_admission(admitted.clone());
            }
        }
        // Then each agent's claim, in the order the results came.
        let mut claims = Vec::with_capacity(batch.len());
        for item in batch {
            let all = out.iter_mut().collect();
            claims.push(
                self.claim_after_result(&mut tx, item.claim(), all, now)
                    .await?,
            );
        }
        tx.commit().await?;
        Ok((
            out.into_iter().zip(claims).collect(),
            read.quiet_ends_written(),
        ))
    }
}
