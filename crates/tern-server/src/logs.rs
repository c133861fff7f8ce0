//! Task logs on the control plane: one file per attempt under the logs folder, appended chunk
//! by chunk, read from an offset (for tailing).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
    /// Folders known to exist, so appends skip `create_dir_all`.
    made: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Bound on remembered folders; the set is emptied when it grows past it.
const MADE_MAX: usize = 10_000;

impl LogStore {
    pub fn new(root: impl Into<PathBuf>) -> LogStore {
        LogStore {
            root: root.into(),
            made: Arc::default(),
        }
    }

    fn path(&self, rel: &str) -> std::io::Result<PathBuf> {
        if rel.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "bad log path",
            ));
        }
        Ok(self.root.join(rel))
    }

    pub fn append(&self, rel: &str, text: &str) -> std::io::Result<()> {
        let path = self.path(rel)?;
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

    /// The log from byte `offset` on; empty when it does not exist (yet).
    pub fn read(&self, rel: &str, offset: u64) -> std::io::Result<String> {
        let bytes = match std::fs::read(self.path(rel)?) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => return Err(e),
        };
        let start = (offset as usize).min(bytes.len());
        Ok(String::from_utf8_lossy(&bytes[start..]).into_owned())
    }
}
