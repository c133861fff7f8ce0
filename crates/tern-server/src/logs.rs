//! Task logs on the control plane: one file per attempt under the logs folder, appended chunk
//! by chunk, read from an offset (for tailing).

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
}

impl LogStore {
    pub fn new(root: impl Into<PathBuf>) -> LogStore {
        LogStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
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
            std::fs::create_dir_all(dir)?;
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
