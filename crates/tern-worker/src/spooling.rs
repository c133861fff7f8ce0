//! A remote agent's link to the control plane that survives losing it. Calls go straight
//! through while the link works; when a log chunk or a result cannot be delivered it goes to
//! the [`Spool`] (and so does everything after it for the same attempt, to keep order). A
//! background loop ([`SpoolingControlPlane::keep_link`]) reconnects with back-off, reports what
//! the agent holds, and replays the spool; the control plane accepts replayed calls only for
//! attempts that are still current, and the rest are dropped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, HeldAttempt, LogChunk, Report,
    ReportReply,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::spool::{Entry, Spool};
use crate::transport::{ControlPlane, TransportError};

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub struct SpoolingControlPlane {
    inner: Arc<dyn ControlPlane>,
    spool: tokio::sync::Mutex<Spool>,
    /// Attempts claimed and not yet ended.
    running: Mutex<BTreeSet<(i64, String)>>,
    link_down: AtomicBool,
    wake: Notify,
    connections: Vec<String>,
}

fn key(ti_id: i64, attempt: &str) -> (i64, String) {
    (ti_id, attempt.to_string())
}

fn spool_error(e: std::io::Error) -> TransportError {
    TransportError::Unavailable(format!("cannot write the agent's spool: {e}"))
}

impl SpoolingControlPlane {
    /// Wraps `inner`. `connections` are the names reported to the control plane. The link
    /// starts as "to be confirmed": the first [`keep_link`](Self::keep_link) round reports
    /// and replays what an earlier run left in the spool.
    pub fn new(
        inner: Arc<dyn ControlPlane>,
        spool: Spool,
        connections: Vec<String>,
    ) -> Arc<SpoolingControlPlane> {
        Arc::new(SpoolingControlPlane {
            inner,
            spool: tokio::sync::Mutex::new(spool),
            running: Mutex::default(),
            link_down: AtomicBool::new(true),
            wake: Notify::new(),
            connections,
        })
    }

    fn mark_down(&self, e: &TransportError) {
        if matches!(e, TransportError::Unavailable(_))
            && !self.link_down.swap(true, Ordering::SeqCst)
        {
            tracing::warn!("lost the control plane ({e}); spooling logs and results");
            self.wake.notify_one();
        }
    }

    pub async fn spool_is_empty(&self) -> bool {
        self.spool.lock().await.is_empty()
    }

    pub fn link_is_up(&self) -> bool {
        !self.link_down.load(Ordering::SeqCst)
    }

    /// Reconnects, reports and replays whenever the link is down or the spool holds
    /// something, until `shutdown`.
    pub async fn keep_link(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let pending = !self.spool.lock().await.is_empty();
            if !self.link_down.load(Ordering::SeqCst) && !pending {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            match self.resync().await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::debug!("control plane still unreachable: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Reports what the agent holds, then replays the spool, oldest attempt first.
    async fn resync(&self) -> Result<(), TransportError> {
        let mut spool = self.spool.lock().await;
        let mut held: BTreeSet<(i64, String)> = self.running.lock().expect("running").clone();
        for h in spool.attempts() {
            held.insert((h.ti_id, h.attempt));
        }
        let report = Report {
            held: held
                .iter()
                .map(|(ti_id, attempt)| HeldAttempt {
                    ti_id: *ti_id,
                    attempt: attempt.clone(),
                })
                .collect(),
            connections: self.connections.clone(),
        };
        let reply = self.inner.report(report).await?;
        if self.link_down.swap(false, Ordering::SeqCst) {
            tracing::info!(
                held = held.len(),
                spooled = spool.attempts().len(),
                "connected to the control plane"
            );
        }
        let current: BTreeSet<(i64, String)> = reply
            .current
            .into_iter()
            .map(|h| (h.ti_id, h.attempt))
            .collect();
        for h in spool.attempts() {
            let entries = spool.entries(h.ti_id, &h.attempt).map_err(spool_error)?;
            if !current.contains(&(h.ti_id, h.attempt.clone())) {
                tracing::warn!(
                    ti = h.ti_id,
                    attempt = %h.attempt,
                    "the control plane no longer counts this attempt as current; dropping its spooled log"
                );
                // The late result is still delivered: the control plane records it on the try
                // ("late result ignored") and changes nothing else.
                for e in &entries {
                    if let Entry::Complete(c) = e {
                        if let Err(e @ TransportError::Unavailable(_)) =
                            self.inner.complete(c.clone()).await
                        {
                            self.mark_down(&e);
                            return Err(e);
                        }
                    }
                }
                spool.keep(h.ti_id, &h.attempt, &[]).map_err(spool_error)?;
                spool.release(h.ti_id, &h.attempt);
                continue;
            }
            for (i, e) in entries.iter().enumerate() {
                let sent = match e {
                    Entry::Log(c) => self.inner.log(c.clone()).await.map(|_| ()),
                    Entry::Complete(c) => self.inner.complete(c.clone()).await.map(|_| ()),
                };
                match sent {
                    Ok(()) => {}
                    Err(TransportError::Refused(m)) => {
                        tracing::warn!(
                            ti = h.ti_id,
                            "spooled call refused: {m}; dropping the rest"
                        );
                        break;
                    }
                    Err(e) => {
                        spool
                            .keep(h.ti_id, &h.attempt, &entries[i..])
                            .map_err(spool_error)?;
                        self.mark_down(&e);
                        return Err(e);
                    }
                }
            }
            spool.keep(h.ti_id, &h.attempt, &[]).map_err(spool_error)?;
            if entries.iter().any(|e| matches!(e, Entry::Complete(_))) {
                spool.release(h.ti_id, &h.attempt);
            }
        }
        Ok(())
    }

    /// Whether calls about this attempt must go to the spool rather than the wire.
    async fn must_spool(&self, ti_id: i64, attempt: &str) -> bool {
        self.link_down.load(Ordering::SeqCst) || self.spool.lock().await.has(ti_id, attempt)
    }

    async fn spool_entry(&self, e: Entry) -> Result<(), TransportError> {
        self.spool.lock().await.append(e).map_err(spool_error)?;
        self.wake.notify_one();
        Ok(())
    }
}

#[async_trait::async_trait]
impl ControlPlane for SpoolingControlPlane {
    async fn claim(&self, wait: Duration, max: usize) -> Result<Vec<Assignment>, TransportError> {
        // Take no new work before the control plane has heard what we hold: wait for the
        // link to come back (an empty answer, not an error, so the agent does not back off).
        let deadline = tokio::time::Instant::now() + wait;
        while self.link_down.load(Ordering::SeqCst) {
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = self
            .inner
            .claim(wait, max)
            .await
            .inspect_err(|e| self.mark_down(e))?;
        let mut spool = self.spool.lock().await;
        for a in &got {
            self.running
                .lock()
                .expect("running")
                .insert(key(a.ti_id, &a.attempt));
            if let Err(e) = spool.hold(&HeldAttempt {
                ti_id: a.ti_id,
                attempt: a.attempt.clone(),
            }) {
                tracing::warn!(
                    ti = a.ti_id,
                    "cannot mark the attempt held in the spool: {e}"
                );
            }
        }
        Ok(got)
    }

    async fn heartbeat(&self, ti_id: i64, attempt: &str) -> Result<HeartbeatReply, TransportError> {
        self.inner
            .heartbeat(ti_id, attempt)
            .await
            .inspect_err(|e| self.mark_down(e))
    }

    async fn log(&self, chunk: LogChunk) -> Result<(), TransportError> {
        if self.must_spool(chunk.ti_id, &chunk.attempt).await {
            return self.spool_entry(Entry::Log(chunk)).await;
        }
        match self.inner.log(chunk.clone()).await {
            Err(e @ TransportError::Unavailable(_)) => {
                self.mark_down(&e);
                self.spool_entry(Entry::Log(chunk)).await
            }
            other => other,
        }
    }

    async fn complete(&self, c: Completion) -> Result<CompletionReply, TransportError> {
        let (ti_id, attempt) = (c.ti_id, c.attempt.clone());
        self.running
            .lock()
            .expect("running")
            .remove(&key(ti_id, &attempt));
        let spooled = CompletionReply { accepted: true };
        if self.must_spool(ti_id, &attempt).await {
            self.spool_entry(Entry::Complete(c)).await?;
            return Ok(spooled);
        }
        match self.inner.complete(c.clone()).await {
            Err(e @ TransportError::Unavailable(_)) => {
                self.mark_down(&e);
                self.spool_entry(Entry::Complete(c)).await?;
                Ok(spooled)
            }
            other => {
                self.spool.lock().await.release(ti_id, &attempt);
                other
            }
        }
    }

    async fn report(&self, report: Report) -> Result<ReportReply, TransportError> {
        self.inner.report(report).await
    }

    async fn ended(&self, completion: &Completion) {
        if let Err(e) = self.spool.lock().await.record_end(completion) {
            tracing::warn!(
                ti = completion.ti_id,
                "cannot record the attempt's end: {e}"
            );
        }
    }

    async fn abandon(&self, ti_id: i64, attempt: &str) {
        self.running
            .lock()
            .expect("running")
            .remove(&key(ti_id, attempt));
        self.spool.lock().await.release(ti_id, attempt);
    }
}
