//! Streaming an export into an object store while the query runs.
//!
//! The format writer writes into a [`PartWriter`], which cuts the bytes into parts of [`PART`]
//! bytes. Between rows the query loop hands sealed parts to an upload task
//! ([`Upload::poll_ready`]); each part handed on holds one of [`IN_FLIGHT`] permits until its
//! upload has ended. When every permit is taken the query loop waits, so memory stays at about
//! (`IN_FLIGHT` + 2) × `PART` whatever the size of the result (the parts handed on, one sealed
//! and the one being filled).
//!
//! The object appears whole or not at all: a result smaller than one part is one `PUT` at the
//! end; a larger one is a multipart upload, started with the first full part and completed only
//! after the last. Whatever stops the export before that (a query error, an upload error, the
//! task's timeout or cancellation dropping the future, the [`Upload`] dropped unfinished) makes
//! the task stop its part uploads and abort the multipart upload, so no parts are left behind
//! (the task is spawned: it runs to its end even when the export's future is dropped); it lets
//! the parts in flight end before aborting, so that none is written after the abort. Every
//! call has the client's request timeout (see [`super::lake::Lake::open`]).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::{CancellationToken, DropGuard, PollSemaphore};

use super::error::{from_object_store, DataError};

/// Part size: S3's minimum for all but the last part, which keeps memory low (see the module
/// comment); with [`MAX_PARTS`] it makes the largest object about 48 GiB.
pub const PART: usize = 5 * 1024 * 1024;
/// Parts handed to the upload task and not yet uploaded, at most.
pub const IN_FLIGHT: usize = 2;
/// Most parts of one multipart upload (S3 and GCS allow 10,000; Azure 50,000 blocks).
pub const MAX_PARTS: usize = 10_000;

/// The bytes written so far that have not been handed to the upload task.
struct Filling {
    /// The part being filled.
    current: Vec<u8>,
    /// Full parts waiting for room in the channel.
    sealed: VecDeque<Bytes>,
    /// Parts sealed so far.
    parts: usize,
}

struct Shared {
    filling: Mutex<Filling>,
    /// Whether `filling.sealed` is non-empty: checked after every row without locking.
    has_sealed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Filling> {
        // A panic while holding the lock leaves nothing half-done worth refusing.
        self.filling.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `Write` end of an upload, given to the format writer. Never blocks: it only fills and
/// seals parts; [`Upload::poll_ready`] moves them on and applies back-pressure.
pub struct PartWriter(Arc<Shared>);

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut f = self.0.lock();
        if f.current.capacity() == 0 {
            f.current.reserve_exact(PART);
        }
        let n = buf.len().min(PART - f.current.len());
        f.current.extend_from_slice(&buf[..n]);
        if f.current.len() == PART {
            if f.parts + 1 >= MAX_PARTS {
                return Err(std::io::Error::other(format!(
                    "the object would need more than {MAX_PARTS} parts of {} MiB",
                    PART >> 20
                )));
            }
            let full = std::mem::take(&mut f.current);
            f.sealed.push_back(Bytes::from(full));
            f.parts += 1;
            self.0.has_sealed.store(true, Ordering::Release);
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Msg {
    /// A full part, with the permit it holds until its upload has ended.
    Part(Bytes, OwnedSemaphorePermit),
    /// The last bytes: complete the object.
    Last(Bytes),
}

/// An upload of one object in progress. Dropping it unfinished aborts it.
pub struct Upload {
    shared: Arc<Shared>,
    permits: PollSemaphore,
    /// Unbounded: the permits bound the parts in it.
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<Result<u64, Stop>>,
    /// Tells the task to abort when the upload is dropped before it has finished.
    _abort_on_drop: DropGuard,
}

impl Upload {
    /// Starts the upload task of object `path`; `context` prefixes its errors. Needs a tokio
    /// runtime.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
        context: String,
    ) -> (Upload, PartWriter) {
        let shared = Arc::new(Shared {
            filling: Mutex::new(Filling {
                current: Vec::new(),
                sealed: VecDeque::new(),
                parts: 0,
            }),
            has_sealed: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(store, path, context, rx, cancel.clone()));
        let upload = Upload {
            shared: shared.clone(),
            permits: PollSemaphore::new(Arc::new(Semaphore::new(IN_FLIGHT))),
            tx,
            task,
            _abort_on_drop: cancel.drop_guard(),
        };
        (upload, PartWriter(shared))
    }

    /// Hands the sealed parts to the upload task; pending while every permit is taken (the
    /// back-pressure on the query). An error means the upload task has stopped: its own error
    /// comes from [`Upload::finish`].
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DataError>> {
        while self.shared.has_sealed.load(Ordering::Acquire) {
            let Some(permit) = std::task::ready!(self.permits.poll_acquire(cx)) else {
                return Poll::Ready(Err(DataError::transient("the upload stopped")));
            };
            let part = {
                let mut f = self.shared.lock();
                let part = f.sealed.pop_front();
                if f.sealed.is_empty() {
                    self.shared.has_sealed.store(false, Ordering::Release);
                }
                part
            };
            if let Some(p) = part {
                if self.tx.send(Msg::Part(p, permit)).is_err() {
                    return Poll::Ready(Err(DataError::transient("the upload stopped")));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends `part` to the upload task once a permit is free; an error when the task has stopped.
    async fn send_part(&mut self, part: Bytes) -> Result<(), ()> {
        let permit = std::future::poll_fn(|cx| self.permits.poll_acquire(cx))
            .await
            .ok_or(())?;
        self.tx.send(Msg::Part(part, permit)).map_err(|_| ())
    }

    /// Stops the upload (after a failed export) and waits until the task has stopped its part
    /// uploads and aborted the multipart upload. Returns the task's error when it had stopped by
    /// itself (that error is then the cause of the failure, see [`Upload::poll_ready`]).
    pub async fn abort(self) -> Option<DataError> {
        let Upload {
            task,
            _abort_on_drop,
            tx,
            ..
        } = self;
        drop(tx);
        drop(_abort_on_drop);
        match task.await {
            Ok(Err(Stop::Failed(e))) => Some(e),
            _ => None,
        }
    }

    /// Sends the rest (everything written must have been flushed into the [`PartWriter`]) and
    /// completes the object; returns its size.
    pub async fn finish(mut self) -> Result<u64, DataError> {
        let (sealed, rest) = {
            let mut f = self.shared.lock();
            (
                std::mem::take(&mut f.sealed),
                Bytes::from(std::mem::take(&mut f.current)),
            )
        };
        let mut sent = Ok(());
        for part in sealed {
            sent = self.send_part(part).await;
            if sent.is_err() {
                break;
            }
        }
        if sent.is_ok() {
            sent = self.tx.send(Msg::Last(rest)).map_err(|_| ());
        }
        let Upload {
            task,
            tx,
            _abort_on_drop,
            ..
        } = self;
        drop(tx);
        let outcome = task.await;
        // Finished (or failed, and the task has aborted it itself): nothing left to abort.
        _abort_on_drop.disarm();
        match outcome {
            Ok(Ok(size)) if sent.is_ok() => Ok(size),
            Ok(Ok(_)) => Err(DataError::transient("the upload stopped before its end")),
            Ok(Err(Stop::Failed(e))) => Err(e),
            Ok(Err(Stop::Asked)) => Err(DataError::transient("the upload was stopped")),
            Err(e) => Err(DataError::transient(format!("the upload task failed: {e}"))),
        }
    }
}

fn part_failed(
    context: &str,
    r: Result<object_store::Result<()>, tokio::task::JoinError>,
) -> Result<(), DataError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(from_object_store(context, e)),
        Err(e) => Err(DataError::transient(format!("{context}: {e}"))),
    }
}

/// Why the upload task stopped before completing the object.
enum Stop {
    Failed(DataError),
    /// The export stopped: the channel closed before `Last`, or the [`Upload`] was dropped.
    Asked,
}

impl From<DataError> for Stop {
    fn from(e: DataError) -> Stop {
        Stop::Failed(e)
    }
}

/// The upload task: receives parts (at most [`IN_FLIGHT`], by their permits), uploads them, completes the object
/// on `Last`; on any error, or when the channel closes or `cancel` fires before `Last`, stops the
/// part uploads and aborts the multipart upload.
async fn run(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    context: String,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    cancel: CancellationToken,
) -> Result<u64, Stop> {
    let mut upload: Option<Box<dyn MultipartUpload>> = None;
    let mut parts: JoinSet<object_store::Result<()>> = JoinSet::new();
    let mut size = 0u64;
    let work = async {
        loop {
            let msg = tokio::select! {
                biased;
                Some(r) = parts.join_next(), if !parts.is_empty() => {
                    part_failed(&context, r)?;
                    continue;
                }
                m = rx.recv() => m,
            };
            match msg {
                None => return Err(Stop::Asked),
                Some(Msg::Part(bytes, permit)) => {
                    if upload.is_none() {
                        upload = Some(
                            store
                                .put_multipart(&path)
                                .await
                                .map_err(|e| from_object_store(&context, e))?,
                        );
                    }
                    size += bytes.len() as u64;
                    let u = upload.as_mut().expect("started above");
                    let put = u.put_part(PutPayload::from(bytes));
                    parts.spawn(async move {
                        let done = put.await;
                        drop(permit);
                        done
                    });
                }
                Some(Msg::Last(bytes)) => {
                    size += bytes.len() as u64;
                    let Some(u) = upload.as_mut() else {
                        // Smaller than one part: one PUT.
                        store
                            .put(&path, PutPayload::from(bytes))
                            .await
                            .map_err(|e| from_object_store(&context, e))?;
                        return Ok(size);
                    };
                    if !bytes.is_empty() {
                        parts.spawn(u.put_part(PutPayload::from(bytes)));
                    }
                    while let Some(r) = parts.join_next().await {
                        part_failed(&context, r)?;
                    }
                    u.complete()
                        .await
                        .map_err(|e| from_object_store(&context, e))?;
                    // Completed: nothing to abort from here on.
                    upload = None;
                    return Ok(size);
                }
            }
        }
    };
    let result = tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Err(Stop::Asked),
    };
    if result.is_err() {
        // Let the parts in flight end first (each within the request timeout): a part still
        // being written when the abort arrives could outlive it on the store.
        while parts.join_next().await.is_some() {}
        if let Some(mut u) = upload.take() {
            if let Err(e) = u.abort().await {
                tracing::warn!("{context}: cannot abort the multipart upload: {e}");
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    /// Writes `data` in 100 kB writes, handing parts on between writes as the query loop does.
    async fn write_all(upload: &mut Upload, w: &mut PartWriter, data: &[u8]) {
        for chunk in data.chunks(100_000) {
            w.write_all(chunk).unwrap();
            std::future::poll_fn(|cx| upload.poll_ready(cx))
                .await
                .unwrap();
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn parts_stream_and_the_object_is_complete() {
        let store = Arc::new(InMemory::new());
        for size in [0, 10, PART - 1, PART, 3 * PART + 12_345] {
            let path = ObjectPath::from(format!("o/{size}"));
            let (mut upload, mut w) = Upload::start(store.clone(), path.clone(), "ctx".into());
            let bytes = data(size);
            write_all(&mut upload, &mut w, &bytes).await;
            assert_eq!(upload.finish().await.unwrap(), size as u64);
            let got = store.get(&path).await.unwrap().bytes().await.unwrap();
            assert!(got == bytes, "size {size}");
        }
    }

    #[tokio::test]
    async fn an_upload_dropped_or_aborted_midway_leaves_no_object() {
        let store = Arc::new(InMemory::new());
        let path = ObjectPath::from("dropped");
        let (mut upload, mut w) = Upload::start(store.clone(), path.clone(), "ctx".into());
        write_all(&mut upload, &mut w, &data(2 * PART + 1)).await;
        drop(upload);
        drop(w);
        let path2 = ObjectPath::from("aborted");
        let (mut upload, mut w) = Upload::start(store.clone(), path2.clone(), "ctx".into());
        write_all(&mut upload, &mut w, &data(2 * PART + 1)).await;
        assert!(upload.abort().await.is_none());
        tokio::task::yield_now().await;
        assert!(store.head(&path).await.is_err());
        assert!(store.head(&path2).await.is_err());
    }
}
