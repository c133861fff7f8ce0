//! Task logs: where the chunks agents send are kept and read back, for the UI, the API and the
//! CLI alike. Two homes, chosen by the `logs.store` setting:
//! - a folder of this server (`HOME/logs`, the default: one server, or a shared disk), see
//!   [`folder`];
//! - an object store (`s3://`, `azure://`, `file://`), see [`shared`]: while a try runs its
//!   chunks are in the metadata database, readable from every server; once it has ended one
//!   server ships them as one object (`PREFIX/<dag>/<run>/<task>[@<map index>].<try>.log`) and
//!   deletes them. A store that is down only delays that.
//!
//! Every reader goes through [`LogStore::read_bytes`] and [`LogStore::len`], so reading an old
//! log, tailing a live one and downloading one are the same whichever server answers.

mod folder;
mod shared;

use std::sync::Arc;

use tern_store::Store;

use crate::config::{Config, ConfigError};
pub use shared::LogShipper;

/// Where one chunk of a log goes: the try's log path and the attempt that sent it.
#[derive(Debug, Clone, Copy)]
pub struct LogTarget<'a> {
    pub path: &'a str,
    pub ti_id: i64,
    pub attempt: &'a str,
    /// The chunk's number within its attempt (a resent chunk is kept once).
    pub seq: u64,
}

#[derive(Clone)]
pub struct LogStore(Home);

#[derive(Clone)]
enum Home {
    Folder(folder::FolderLogs),
    Shared(Arc<shared::SharedLogs>),
}

impl LogStore {
    /// Logs in a folder of this machine.
    pub fn folder(root: impl Into<std::path::PathBuf>) -> LogStore {
        LogStore(Home::Folder(folder::FolderLogs::new(root)))
    }

    /// The log store the settings ask for: `logs.store` when set, else `HOME/logs`.
    pub fn open(cfg: &Config, store: &Store) -> Result<LogStore, ConfigError> {
        match &cfg.logs.store {
            None => Ok(LogStore::folder(cfg.logs_dir())),
            Some(uri) => Ok(LogStore(Home::Shared(Arc::new(shared::SharedLogs::open(
                uri,
                store.clone(),
            )?)))),
        }
    }

    /// What ships ended tries' logs to the object store; `None` for a folder.
    pub fn shipper(&self) -> Option<LogShipper> {
        match &self.0 {
            Home::Folder(_) => None,
            Home::Shared(s) => Some(LogShipper::new(s.clone())),
        }
    }

    /// Appends `text` to a try's log. False when the attempt is no longer running (an object
    /// store's log takes chunks only while it is; a folder takes what the caller checked).
    pub async fn append(&self, at: LogTarget<'_>, text: &str) -> std::io::Result<bool> {
        check_path(at.path)?;
        match &self.0 {
            Home::Folder(f) => {
                f.append(at.path, text).await?;
                Ok(true)
            }
            Home::Shared(s) => s.append(at, text).await,
        }
    }

    /// The size of a log in bytes (0 when it has no line yet).
    pub async fn len(&self, path: &str) -> std::io::Result<u64> {
        check_path(path)?;
        match &self.0 {
            Home::Folder(f) => {
                let (f, path) = (f.clone(), path.to_string());
                blocking(move || f.len(&path)).await
            }
            Home::Shared(s) => s.len(path).await,
        }
    }

    /// At most `max` bytes of a log from byte `offset` on; none past its end.
    pub async fn read_bytes(&self, path: &str, offset: u64, max: u64) -> std::io::Result<Vec<u8>> {
        check_path(path)?;
        match &self.0 {
            Home::Folder(f) => {
                let (f, path) = (f.clone(), path.to_string());
                blocking(move || f.read_bytes(&path, offset, max)).await
            }
            Home::Shared(s) => s.read_bytes(path, offset, max).await,
        }
    }

    /// At most `max` bytes of a log from byte `offset` on as text, cut before a character the
    /// read split (it comes whole with the next read), and how many bytes that was.
    pub async fn read_from(
        &self,
        path: &str,
        offset: u64,
        max: u64,
    ) -> std::io::Result<(String, u64)> {
        Ok(text_of(self.read_bytes(path, offset, max).await?))
    }

    /// A whole log as text.
    pub async fn read_all(&self, path: &str) -> std::io::Result<String> {
        let mut text = String::new();
        let mut offset = 0;
        loop {
            let (more, read) = self.read_from(path, offset, 1 << 20).await?;
            if read == 0 {
                return Ok(text);
            }
            text.push_str(&more);
            offset += read;
        }
    }
}

/// File I/O off the async threads: a slow disk must not stall claims and results.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

/// Refuses a log path that could leave the log folder or prefix.
fn check_path(rel: &str) -> std::io::Result<()> {
    if rel.split('/').any(|p| p == ".." || p.is_empty()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "bad log path",
        ));
    }
    Ok(())
}

/// Bytes as text, less an incomplete character at the end; and the bytes taken.
fn text_of(mut bytes: Vec<u8>) -> (String, u64) {
    let keep = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    };
    bytes.truncate(keep);
    (String::from_utf8_lossy(&bytes).into_owned(), keep as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_from_an_offset_without_splitting_characters() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::folder(dir.path());
        let at = LogTarget {
            path: "d/r/t.1.log",
            ti_id: 1,
            attempt: "a",
            seq: 0,
        };
        assert!(logs.append(at, "héllo\n").await.unwrap());
        assert_eq!(logs.read_all("d/r/t.1.log").await.unwrap(), "héllo\n");
        // "é" is two bytes: a read of two bytes stops before it.
        let read = |o, m| logs.read_from("d/r/t.1.log", o, m);
        assert_eq!(read(0, 2).await.unwrap(), ("h".to_string(), 1));
        assert_eq!(read(1, 2).await.unwrap(), ("é".to_string(), 2));
        assert_eq!(read(3, 99).await.unwrap(), ("llo\n".to_string(), 4));
        assert_eq!(read(99, 9).await.unwrap(), (String::new(), 0));
        assert_eq!(logs.len("d/r/t.1.log").await.unwrap(), 7);
        assert_eq!(logs.read_all("d/r/missing.log").await.unwrap(), "");
        assert!(logs.len("d/../x").await.is_err());
    }
}
