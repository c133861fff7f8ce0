//! Noticing at once that a SQLite database was written, by this process or another (the CLI,
//! a second `tern` on the same file): its write-ahead log is watched (inotify, through the
//! `notify` crate), so the queue watcher looks when the file changed instead of asking SQLite
//! every few milliseconds, and an idle server does no work at all. Where no events come (a file
//! system without inotify), the queue watcher keeps its short poll.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

/// A watch of one SQLite database's files; stops when dropped.
///
/// One write is enough to make a look due, and a commit writes the log several times (each
/// write an event that wakes the watch's thread): so the first write after [`DbWatch::resume`]
/// is signalled and the watch then [pauses](DbWatch::pause) until the look that covers it.
pub struct DbWatch {
    watcher: Mutex<Watching>,
    folder: PathBuf,
    /// Whether the next write is signalled (cleared by the signal, set by `resume`).
    armed: Arc<AtomicBool>,
    written: Arc<Notify>,
}

/// The watcher and whether it is paused (the folder unwatched until `resume`), changed together.
struct Watching {
    watcher: notify::RecommendedWatcher,
    paused: bool,
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
        let armed = Arc::new(AtomicBool::new(true));
        let (signal, armed_here) = (written.clone(), armed.clone());
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(e) = res else { return };
            if matches!(e.kind, EventKind::Access(_)) {
                return;
            }
            let ours = e
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|f| f == wal || f == name));
            if ours && armed_here.swap(false, Ordering::AcqRel) {
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
            watcher: Mutex::new(Watching {
                watcher,
                paused: false,
            }),
            folder,
            armed,
            written,
        })
    }

    /// Waits until the database was written since the watch was (re)armed.
    pub async fn written(&self) {
        self.written.notified().await
    }

    /// Stops watching until [`DbWatch::resume`]: a look is due for what was written, and the
    /// rest of the burst would only wake the watch's thread.
    pub fn pause(&self) {
        let mut w = self.watcher.lock().expect("db watch");
        if !std::mem::replace(&mut w.paused, true) {
            if let Err(e) = w.watcher.unwatch(&self.folder) {
                tracing::debug!("cannot pause the watch of {}: {e}", self.folder.display());
            }
        }
    }

    /// Watches (and signals) again. Call it before the look that covers what was written
    /// while paused: a write after this call is signalled, one before it is seen by that look.
    /// An error means the folder can no longer be watched (the caller polls instead).
    pub fn resume(&self) -> notify::Result<()> {
        let mut w = self.watcher.lock().expect("db watch");
        if w.paused {
            w.watcher.watch(&self.folder, RecursiveMode::NonRecursive)?;
            w.paused = false;
        }
        self.armed.store(true, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store on a new database file and a watch of it (the folder keeps both alive).
    async fn watched_store() -> (tempfile::TempDir, String, tern_store::Store, DbWatch) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tern.db").display());
        let store = tern_store::Store::open(&url).await.unwrap();
        store.migrate().await.unwrap();
        let watch = DbWatch::start(&store.sqlite_file().unwrap()).expect("a watchable file");
        (dir, url, store, watch)
    }

    /// Waits for `watch`'s signal; fails with `what` if none comes within 10 s.
    async fn noticed(watch: &DbWatch, what: &str) {
        tokio::time::timeout(std::time::Duration::from_secs(10), watch.written())
            .await
            .unwrap_or_else(|_| panic!("{what} was never noticed"));
    }

    #[tokio::test]
    async fn a_write_by_another_process_s_connection_is_noticed() {
        let (_dir, url, _store, watch) = watched_store().await;
        // Another store on the same file, as another `tern` process has.
        let other = tern_store::Store::open(&url).await.unwrap();
        other.set_pool("extra", 3, "").await.unwrap();
        noticed(&watch, "the write").await;
    }

    /// One signal per armed watch: the writes after it signal nothing until `resume` (paused
    /// or not), after which the next write signals again.
    #[tokio::test]
    async fn a_watch_signals_once_until_it_is_resumed() {
        let (_dir, _url, store, watch) = watched_store().await;
        // A signal for a write is here well within this (the first one shows it).
        let quiet = std::time::Duration::from_millis(300);
        let signalled = || async { tokio::time::timeout(quiet, watch.written()).await.is_ok() };
        store.set_pool("p", 1, "").await.unwrap();
        noticed(&watch, "the first write").await;
        // Further writes before the look (which resumes the watch) signal nothing.
        for slots in 2..5 {
            store.set_pool("p", slots, "").await.unwrap();
        }
        assert!(
            !signalled().await,
            "a write after the signal signalled again"
        );
        watch.resume().unwrap();
        store.set_pool("p", 5, "").await.unwrap();
        noticed(&watch, "a write after the resume").await;
        // Paused (the folder unwatched) and resumed: the next write is signalled.
        watch.pause();
        store.set_pool("p", 6, "").await.unwrap();
        assert!(!signalled().await, "a paused watch signalled");
        watch.resume().unwrap();
        store.set_pool("p", 7, "").await.unwrap();
        noticed(&watch, "a write after the pause and resume").await;
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
