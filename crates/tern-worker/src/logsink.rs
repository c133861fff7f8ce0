//! Where a running task's log lines go: batched chunks to the control plane, or a terminal.

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
/// every 32 KiB, whichever comes first. [`ChunkedSink::finish`] flushes what is left.
pub struct ChunkedSink {
    tx: mpsc::UnboundedSender<String>,
    done: tokio::task::JoinHandle<()>,
}

const CHUNK_BYTES: usize = 32 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(100);

impl ChunkedSink {
    pub fn start(cp: Arc<dyn ControlPlane>, ti_id: i64, attempt: String) -> ChunkedSink {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
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
                        buf.push_str(&line);
                        if buf.len() < CHUNK_BYTES {
                            continue;
                        }
                    }
                    Ok(None) => {
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
        ChunkedSink { tx, done }
    }

    /// Sends whatever is buffered and waits until it has been delivered.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.done.await;
    }
}

impl LogSink for ChunkedSink {
    fn line(&self, text: &str) {
        let _ = self.tx.send(stamp(text));
    }
}
