//! Noticing at once that a SQLite database was written, by this process or another (the CLI,
//! a second `tern` on the same file): its write-ahead log is watched (inotify, through the
//! `notify` crate), so the queue watcher looks when the file changed instead of asking SQLite
//! every few milliseconds, and an idle server does no work at all. Where no events come (a file
//! system without inotify), the queue watcher keeps its short poll.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// A watch of one SQLite database's files; stops when dropped.
pub struct DbWatch {
    _watcher: notify::RecommendedWatcher,
    written: Arc<Notify>,
}

impl DbWatch {
    /// Watches the database file `db` (its folder, for its `-wal` file, which SQLite creates
    /// and deletes); `None` when it cannot be watched.
    pub fn start(db: &Path) -> Option<DbWatch> {
        let folder = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = db.file_name()?.to_os_string();
        let mut wal = name.clone();
        wal.push("-wal");
        let written = Arc::new(Notify::new());
        let signal = written.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(e) = res else { return };
            if matches!(e.kind, EventKind::Access(_)) {
                return;
            }
            let ours = e
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == wal || f == name));
            if ours {
                signal.notify_one();
            }
        })
        .inspect_err(|e| tracing::debug!("cannot watch the database file: {e}"))
        .ok()?;
        watcher
            .watch(&folder, RecursiveMode::NonRecursive)
            .inspect_err(|e| tracing::debug!("cannot watch {}: {e}", folder.display()))
            .ok()?;
        Some(DbWatch {
            _watcher: watcher,
            written,
        })
    }

    /// Waits until the database was written since the last call.
    pub async fn written(&self) {
        self.written.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_by_another_process_s_connection_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tern.db").display());
        let store = tern_store::Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let watch = DbWatch::start(&store.sqlite_file().unwrap()).expect("a watchable file");
        // Another store on the same file, as another `tern` process has.
        let other = tern_store::Store::open(&url).await.unwrap();
        other.set_pool("extra", 3, "").await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), watch.written())
            .await
            .expect("the write was never noticed");
    }

    #[test]
    fn a_database_in_memory_has_no_file_to_watch() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store = rt
            .block_on(tern_store::Store::open("sqlite::memory:"))
            .unwrap();
        assert_eq!(store.sqlite_file(), None);
    }
}
