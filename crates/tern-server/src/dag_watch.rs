//! Watching the DAG folder (inotify, through the `notify` crate): a file written, added,
//! renamed or removed asks the scheduler to read the folder again at once, so a change is
//! visible within milliseconds instead of at the next `scheduler.dag_scan_interval` (which
//! stays, for file systems that send no events, such as some network mounts).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use crate::events::Events;

/// Events that arrive this close together are one change (an editor's save is several).
const SETTLE: Duration = Duration::from_millis(5);
/// Wait before watching again a folder that cannot be watched (missing, no inotify left).
const RETRY: Duration = Duration::from_secs(5);

/// The `dag_watcher` role: runs until `shutdown`.
pub async fn watch(dir: PathBuf, events: Arc<Events>, shutdown: CancellationToken) {
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reads (the loader's own, too) change nothing.
            if let Ok(e) = res {
                if !matches!(e.kind, EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })
        .and_then(|mut w| w.watch(&dir, RecursiveMode::Recursive).map(|()| w));
        let _watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(
                    "cannot watch the DAG folder {} ({e}); it is read every scan interval",
                    dir.display()
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = rx.recv() => {
                    if got.is_none() {
                        break;
                    }
                }
            }
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            events.dags_refresh.notify_one();
        }
    }
}
