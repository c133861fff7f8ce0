//! Task logs in a folder of this server (the default, `HOME/logs`): one file per try, appended
//! chunk by chunk, read from an offset. Blocking I/O: the log store calls it off the async
//! threads.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub(super) struct FolderLogs {
    root: PathBuf,
    /// Folders known to exist, so appends skip `create_dir_all`.
    made: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Bound on remembered folders; the set is emptied when it grows past it.
const MADE_MAX: usize = 10_000;

impl FolderLogs {
    pub(super) fn new(root: impl Into<PathBuf>) -> FolderLogs {
        FolderLogs {
            root: root.into(),
            made: Arc::default(),
        }
    }

    /// Where log `rel` is (the log store checked that it stays in the folder).
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub(super) fn append(&self, rel: &str, text: &str) -> std::io::Result<()> {
        let path = self.path(rel);
        if let Some(dir) = path.parent() {
            let mut made = self.made.lock().expect("log folder set");
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
