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
        Ok(self.read_from(rel, offset, u64::MAX)?.0)
    }

    /// The size of a log in bytes (0 when it does not exist yet).
    pub fn len(&self, rel: &str) -> std::io::Result<u64> {
        match std::fs::metadata(self.path(rel)?) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The file of a log, for streaming it (`None` when it does not exist yet).
    pub fn file(&self, rel: &str) -> std::io::Result<Option<std::fs::File>> {
        match std::fs::File::open(self.path(rel)?) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// At most `max` bytes of the log from byte `offset` on, cut at a character boundary,
    /// and how many bytes that was (the next offset is `offset` plus that). Only those bytes
    /// are read: a live tail costs what is new, not the whole file.
    pub fn read_from(&self, rel: &str, offset: u64, max: u64) -> std::io::Result<(String, u64)> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::File::open(self.path(rel)?) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((String::new(), 0)),
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.take(max).read_to_end(&mut bytes)?;
        // Do not split a character: leave an incomplete one at the end for the next read.
        let keep = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        bytes.truncate(keep);
        Ok((String::from_utf8_lossy(&bytes).into_owned(), keep as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_from_an_offset_without_splitting_characters() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::new(dir.path());
        logs.append("d/r/t.1.log", "héllo\n").unwrap();
        assert_eq!(logs.read("d/r/t.1.log", 0).unwrap(), "héllo\n");
        // "é" is two bytes: a read of two bytes stops before it.
        assert_eq!(
            logs.read_from("d/r/t.1.log", 0, 2).unwrap(),
            ("h".to_string(), 1)
        );
        assert_eq!(
            logs.read_from("d/r/t.1.log", 1, 2).unwrap(),
            ("é".to_string(), 2)
        );
        assert_eq!(logs.read("d/r/t.1.log", 3).unwrap(), "llo\n");
        assert_eq!(logs.read("d/r/t.1.log", 99).unwrap(), "");
        assert_eq!(logs.read("d/r/missing.log", 0).unwrap(), "");
    }
}
