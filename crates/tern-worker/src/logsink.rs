//! Where a running task's log lines go: batched chunks to the control plane, or a terminal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::sync::mpsc;

use crate::transport::ControlPlane;

/// Receives the lines of one attempt's log, already stamped.
pub trait LogSink: Send + Sync {
    fn line(&self, text: &str);
}

/// Stamps a line the way every task log shows it: `2026-01-01T02:00:00.123Z message`.
pub fn stamp(text: &str) -> String {
    format!(
        "{} {}\n",
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        text
    )
}

/// Prints lines to standard error (for `tern tasks test`).
pub struct TerminalSink;

impl LogSink for TerminalSink {
    fn line(&self, text: &str) {
        eprint!("{}", stamp(text));
    }
}

/// Batches lines into numbered chunks and sends them to the control plane, every 100 ms or
/// every 32 KiB, whichever comes first. [`ChunkedSink::finish`] flushes what is left. The
/// backlog waiting to be sent is bounded ([`BACKLOG_MAX`]): a task that writes faster than
/// the link carries loses the lines past it, and the log says how many.
pub struct ChunkedSink {
    tx: mpsc::UnboundedSender<String>,
    done: tokio::task::JoinHandle<()>,
    backlog: Arc<Backlog>,
}

/// Bytes handed to the sender and not yet sent, and what was dropped for want of room.
#[derive(Default)]
struct Backlog {
    bytes: AtomicUsize,
    dropped_lines: AtomicUsize,
    dropped_bytes: AtomicUsize,
}

const CHUNK_BYTES: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Most bytes of log lines an attempt holds in memory waiting for the link.
pub const BACKLOG_MAX: usize = 8 * 1024 * 1024;

impl ChunkedSink {
    pub fn start(cp: Arc<dyn ControlPlane>, ti_id: i64, attempt: String) -> ChunkedSink {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let backlog = Arc::new(Backlog::default());
        let counts = backlog.clone();
        let done = tokio::spawn(async move {
            let mut seq = 0u64;
            let mut buf = String::new();
            let send = |buf: String, seq: u64| {
                let cp = cp.clone();
                let attempt = attempt.clone();
                async move {
                    let chunk = tern_protocol::LogChunk {
                        ti_id,
                        attempt,
                        seq,
                        text: buf,
                    };
                    if let Err(e) = cp.log(chunk).await {
                        tracing::warn!(ti_id, seq, "could not send a log chunk: {e}");
                    }
                }
            };
            loop {
                let next = tokio::time::timeout(FLUSH_EVERY, rx.recv()).await;
                match next {
                    Ok(Some(line)) => {
                        counts.bytes.fetch_sub(line.len(), Ordering::SeqCst);
                        note_dropped(&counts, &mut buf);
                        buf.push_str(&line);
                        if buf.len() < CHUNK_BYTES {
                            continue;
                        }
                    }
                    Ok(None) => {
                        note_dropped(&counts, &mut buf);
                        if !buf.is_empty() {
                            send(std::mem::take(&mut buf), seq).await;
                        }
                        return;
                    }
                    Err(_) => {}
                }
                if !buf.is_empty() {
                    send(std::mem::take(&mut buf), seq).await;
                    seq += 1;
                }
            }
        });
        ChunkedSink { tx, done, backlog }
    }

    /// Sends whatever is buffered and waits until it has been delivered.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.done.await;
    }
}

/// Says in the log how much was dropped since the last time, if anything.
fn note_dropped(counts: &Backlog, buf: &mut String) {
    let lost = counts.dropped_lines.swap(0, Ordering::SeqCst);
    if lost > 0 {
        let bytes = counts.dropped_bytes.swap(0, Ordering::SeqCst);
        buf.push_str(&stamp(&format!(
            "tern: {lost} line(s) ({bytes} bytes) of output were dropped: the task wrote faster than its log could be sent"
        )));
    }
}

impl LogSink for ChunkedSink {
    fn line(&self, text: &str) {
        let line = stamp(text);
        let held = self.backlog.bytes.fetch_add(line.len(), Ordering::SeqCst);
        if held + line.len() > BACKLOG_MAX {
            self.backlog.bytes.fetch_sub(line.len(), Ordering::SeqCst);
            self.backlog.dropped_lines.fetch_add(1, Ordering::SeqCst);
            self.backlog
                .dropped_bytes
                .fetch_add(line.len(), Ordering::SeqCst);
            return;
        }
        let _ = self.tx.send(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_protocol::{
        Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, Report, ReportReply,
    };

    /// A control plane whose log calls wait until released, keeping what they got.
    #[derive(Default)]
    struct SlowLink {
        open: tokio::sync::Notify,
        got: std::sync::Mutex<String>,
    }

    #[async_trait::async_trait]
    impl ControlPlane for SlowLink {
        async fn claim(&self, _: Duration, _: usize) -> Result<Vec<Assignment>, TransportError> {
            Ok(vec![])
        }
        async fn heartbeat(&self, _: i64, _: &str) -> Result<HeartbeatReply, TransportError> {
            Ok(HeartbeatReply { keep_running: true })
        }
        async fn log(&self, chunk: LogChunk) -> Result<(), TransportError> {
            self.open.notified().await;
            self.open.notify_one();
            self.got.lock().unwrap().push_str(&chunk.text);
            Ok(())
        }
        async fn complete(&self, _: Completion) -> Result<CompletionReply, TransportError> {
            Ok(CompletionReply { accepted: true })
        }
        async fn report(&self, _: Report) -> Result<ReportReply, TransportError> {
            Ok(ReportReply { current: vec![] })
        }
    }

    use crate::transport::TransportError;

    #[tokio::test]
    async fn a_slow_link_bounds_the_backlog_and_the_log_says_what_was_dropped() {
        let link = Arc::new(SlowLink::default());
        let sink = ChunkedSink::start(link.clone(), 1, "a".into());
        let line = "x".repeat(1000);
        for _ in 0..20_000 {
            sink.line(&line); // 20 MB, far past the bound
            assert!(sink.backlog.bytes.load(Ordering::SeqCst) <= BACKLOG_MAX);
        }
        assert!(sink.backlog.dropped_lines.load(Ordering::SeqCst) > 0);
        link.open.notify_one();
        sink.finish().await;
        let got = link.got.lock().unwrap();
        assert!(
            got.contains("of output were dropped"),
            "{}",
            &got[got.len() - 300..]
        );
        assert!(got.len() < 2 * BACKLOG_MAX, "{}", got.len());
    }
}
