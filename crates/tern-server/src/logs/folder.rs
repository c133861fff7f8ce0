//! Task logs in a folder of this server (the default, `HOME/logs`): one file per try, appended
//! chunk by chunk, read from an offset. Appends go to one writer thread of their own: the logs
//! of a run's tries are made in one folder, and files made in one folder from several threads
//! at once queue on the folder's lock in the kernel (spinning: ~5% of all CPU in the throughput
//! benchmark, BENCHMARKS.md); one thread also keeps each log's chunks in order and costs one
//! hand-off per chunk instead of a blocking-pool thread. Reads are blocking calls the log store
//! makes off the async threads.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

#[derive(Debug, Clone)]
pub(super) struct FolderLogs {
    root: PathBuf,
    /// The writer thread's queue, started with the first append; the thread ends when the
    /// last clone of this is dropped.
    writer: Arc<Mutex<Option<mpsc::Sender<Append>>>>,
}

/// One chunk for the writer thread, and where its outcome goes.
#[derive(Debug)]
struct Append {
    path: PathBuf,
    text: String,
    done: tokio::sync::oneshot::Sender<std::io::Result<()>>,
}

/// Bound on remembered folders; the set is emptied when it grows past it.
const MADE_MAX: usize = 10_000;

/// The writer thread: appends chunks in the order they came.
fn write_appends(queue: mpsc::Receiver<Append>) {
    // Folders known to exist, so appends skip `create_dir_all`.
    let mut made: HashSet<PathBuf> = HashSet::new();
    for job in queue {
        let outcome = append_to(&mut made, &job.path, &job.text);
        let _ = job.done.send(outcome);
    }
}

fn append_to(
    made: &mut HashSet<PathBuf>,
    path: &std::path::Path,
    text: &str,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        if !made.contains(dir) {
            std::fs::create_dir_all(dir)?;
            if made.len() >= MADE_MAX {
                made.clear();
            }
            made.insert(dir.to_path_buf());
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

impl FolderLogs {
    pub(super) fn new(root: impl Into<PathBuf>) -> FolderLogs {
        FolderLogs {
            root: root.into(),
            writer: Arc::default(),
        }
    }

    /// Where log `rel` is (the log store checked that it stays in the folder).
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Appends `text` to log `rel`, through the writer thread.
    pub(super) async fn append(&self, rel: &str, text: &str) -> std::io::Result<()> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let job = Append {
            path: self.path(rel),
            text: text.to_string(),
            done,
        };
        {
            let mut writer = self.writer.lock().expect("log writer");
            let queue = match writer.as_ref() {
                Some(queue) => queue,
                None => {
                    let (queue, jobs) = mpsc::channel();
                    std::thread::Builder::new()
                        .name("tern-log-writer".into())
                        .spawn(move || write_appends(jobs))?;
                    writer.insert(queue)
                }
            };
            queue
                .send(job)
                .map_err(|_| std::io::Error::other("the log writer thread stopped"))?;
        }
        outcome
            .await
            .map_err(|_| std::io::Error::other("the log writer thread stopped"))?
    }

    /// The size of a log in bytes (0 when it does not exist yet).
    pub(super) fn len(&self, rel: &str) -> std::io::Result<u64> {
        match std::fs::metadata(self.path(rel)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// At most `max` bytes of the log from byte `offset` on (none when it does not exist).
    /// Only those bytes are read: a live tail costs what is new, not the whole file.
    pub(super) fn read_bytes(&self, rel: &str, offset: u64, max: u64) -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::File::open(self.path(rel)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.take(max).read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}
