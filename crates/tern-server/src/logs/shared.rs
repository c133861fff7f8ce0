//! Task logs in an object store (`logs.store`), readable from every server: a running try's
//! chunks are rows of the metadata database (`tern_store::live_logs`); once the try has ended a
//! [`LogShipper`] on any server writes them as one object and deletes the rows. Until then (and
//! while the store is down, retried with back-off) the log is read from the database.

use std::sync::Arc;
use std::time::Duration;

use tern_store::Store;
use tern_worker::data::lake::Lake;
use tokio_util::sync::CancellationToken;

use super::LogTarget;
use crate::config::ConfigError;

pub(super) struct SharedLogs {
    store: Store,
    lake: Lake,
    /// Folder of the logs in the store (`PREFIX` of `s3://BUCKET/PREFIX`), without slashes at
    /// either end; empty for the store's root.
    prefix: String,
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl SharedLogs {
    pub(super) fn open(uri: &str, store: Store) -> Result<SharedLogs, ConfigError> {
        let (lake, prefix) = Lake::open_uri(uri, "logs.store").map_err(|e| ConfigError {
            key: "logs.store".into(),
            message: e.message,
        })?;
        Ok(SharedLogs {
            store,
            lake,
            prefix,
        })
    }

    fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    pub(super) async fn append(&self, at: LogTarget<'_>, text: &str) -> std::io::Result<bool> {
        self.store
            .append_log_chunk(at.ti_id, at.attempt, at.seq, text)
            .await
            .map_err(io)
    }

    pub(super) async fn len(&self, path: &str) -> std::io::Result<u64> {
        match self.store.live_log_len(path).await.map_err(io)? {
            Some(n) => Ok(n),
            None => Ok(self
                .lake
                .size_of(&self.key(path))
                .await
                .map_err(io)?
                .unwrap_or(0)),
        }
    }

    pub(super) async fn read_bytes(
        &self,
        path: &str,
        offset: u64,
        max: u64,
    ) -> std::io::Result<Vec<u8>> {
        let live = self.store.live_log_from(path, offset).await.map_err(io)?;
        if live.live {
            let mut out = Vec::new();
            for bytes in live.bytes_from(offset) {
                out.extend_from_slice(bytes);
                if out.len() as u64 >= max {
                    break;
                }
            }
            out.truncate(max.min(usize::MAX as u64) as usize);
            return Ok(out);
        }
        // Not in the database: shipped (read after the rows were gone, so the object is
        // there), or a log with no line.
        let key = self.key(path);
        match self.lake.size_of(&key).await.map_err(io)? {
            Some(size) if offset < size => self
                .lake
                .read_range(&key, offset..size.min(offset.saturating_add(max)))
                .await
                .map_err(io),
            _ => Ok(Vec::new()),
        }
    }
}

/// How long a server holds a log it is shipping before another may take it over.
const HOLD: Duration = Duration::from_secs(120);
/// Logs shipped per pass.
const BATCH: usize = 32;
/// How often the shipper looks for ended tries when there was nothing to do.
const PASS: Duration = Duration::from_secs(1);

/// Ships the logs of ended tries to the object store; every server runs one (a log is
/// claimed by one at a time).
#[derive(Clone)]
pub struct LogShipper {
    logs: Arc<SharedLogs>,
}

impl LogShipper {
    pub(super) fn new(logs: Arc<SharedLogs>) -> LogShipper {
        LogShipper { logs }
    }

    /// The wait before the next upload of a log that failed `failures` times: 1 s, doubling,
    /// at most 5 minutes.
    fn back_off(failures: u32) -> Duration {
        Duration::from_secs(1u64 << failures.min(9)).min(Duration::from_secs(300))
    }

    /// Ships every log that is due; returns how many were shipped.
    pub async fn ship_due(&self) -> tern_store::Result<usize> {
        let s = &self.logs;
        let mut shipped = 0;
        for log in s.store.claim_logs_to_ship(BATCH, HOLD).await? {
            match self.ship(&log.path).await {
                Ok(size) => {
                    s.store.log_shipped(&log.path, size).await?;
                    shipped += 1;
                }
                Err(e) => {
                    let wait = Self::back_off(log.failures);
                    tracing::warn!(
                        log = %log.path,
                        failures = log.failures + 1,
                        "cannot ship a task log to {} (kept in the database, next try in {wait:?}): {e}",
                        s.lake.describe,
                    );
                    s.store.log_ship_failed(&log.path, wait, &e).await?;
                }
            }
        }
        Ok(shipped)
    }

    /// Writes log `path` as one object, streamed from the database a page of chunks at a time
    /// (a huge log never sits in memory whole; the store gets it as a multipart upload, or a
    /// file renamed into place); returns its size.
    async fn ship(&self, path: &str) -> Result<u64, String> {
        use std::io::Write;
        let s = &self.logs;
        let (out, mut pending) = s.lake.create(&s.key(path)).map_err(|e| e.message)?;
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, out);
        let mut offset = 0u64;
        let copied: Result<(), String> = async {
            loop {
                let page = s
                    .store
                    .live_log_from(path, offset)
                    .await
                    .map_err(|e| e.to_string())?;
                if page.chunks.is_empty() {
                    break;
                }
                for bytes in page.bytes_from(offset) {
                    w.write_all(bytes).map_err(|e| e.to_string())?;
                    offset += bytes.len() as u64;
                }
                std::future::poll_fn(|cx| pending.poll_ready(cx))
                    .await
                    .map_err(|e| e.message)?;
            }
            w.flush().map_err(|e| e.to_string())
        }
        .await;
        drop(w);
        if let Err(e) = copied {
            return Err(pending.abort().await.map(|e| e.message).unwrap_or(e));
        }
        s.lake.publish(pending).await.map_err(|e| e.message)?;
        Ok(offset)
    }

    /// The `log_shipper` role: a pass every second, at once again after a full batch.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let full = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.ship_due() => match r {
                    Ok(n) => n >= BATCH,
                    Err(e) => {
                        tracing::warn!("shipping task logs failed: {e}");
                        false
                    }
                },
            };
            if !full {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(PASS) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_uploads_wait_longer_up_to_five_minutes() {
        let waits: Vec<u64> = (0..12).map(|f| LogShipper::back_off(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
