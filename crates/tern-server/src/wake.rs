//! Wake-ups between processes on one host that share a data folder: a command that changed the
//! metadata database (a CLI trigger, clear or mark) pokes the servers of that folder, so they
//! look for work at once rather than at their next poll.
//!
//! Each server listens on a Unix datagram socket of its own, `HOME/run/wake/<pid>.sock`; a poke
//! is one datagram to every socket there. A socket nobody reads any more (its server was killed)
//! refuses the datagram and is removed. Pokes are hints, never needed for correctness: the
//! queue watcher still polls, only less often.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::events::Events;

/// The folder of the wake sockets of the servers on data folder `home`.
pub fn folder(home: &Path) -> PathBuf {
    home.join("run").join("wake")
}

/// Pokes every server listening on data folder `home`. Best effort: never fails, never
/// blocks (a full socket buffer means a wake-up is already pending there).
pub fn poke(home: &Path) {
    let Ok(entries) = std::fs::read_dir(folder(home)) else {
        return;
    };
    let Ok(sender) = UnixDatagram::unbound() else {
        return;
    };
    let _ = sender.set_nonblocking(true);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sock") {
            continue;
        }
        if let Err(e) = sender.send_to(b"w", &path) {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                // Its server is gone: nobody will bind that name again.
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Listens for pokes until `shutdown`: each one hints the queue watcher (queued work to hand
/// to agents) and wakes the scheduler (queued runs to start, DAG versions or pauses changed).
pub async fn listen(home: PathBuf, events: Arc<Events>, shutdown: CancellationToken) {
    let dir = folder(&home);
    let path = dir.join(format!("{}.sock", std::process::id()));
    let socket = match std::fs::create_dir_all(&dir)
        .and_then(|()| {
            // A socket left by an earlier process with this id.
            let _ = std::fs::remove_file(&path);
            UnixDatagram::bind(&path)
        })
        .and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UnixDatagram::from_std(s)
        }) {
        Ok(s) => s,
        Err(e) => {
            // Without it, work from other processes is still found by polling.
            tracing::warn!(
                "cannot listen for wake-ups on {}: {e}; other processes' changes are seen at the next poll",
                path.display()
            );
            shutdown.cancelled().await;
            return;
        }
    };
    let mut buf = [0u8; 16];
    loop {
        tokio::select! {
            r = socket.recv(&mut buf) => {
                if r.is_ok() {
                    events.roles.beat("wake_listener");
                    events.work_queued();
                    events.scheduler.notify_one();
                    events.dags.notify_one();
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_poke_wakes_the_listener_and_dead_sockets_are_removed() {
        let home = tempfile::tempdir().unwrap();
        let events = Arc::new(Events::default());
        let shutdown = CancellationToken::new();
        let listener = tokio::spawn(listen(
            home.path().to_path_buf(),
            events.clone(),
            shutdown.clone(),
        ));
        let own = folder(home.path()).join(format!("{}.sock", std::process::id()));
        while !own.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // A socket whose server was killed: bound, then its reader dropped.
        let dead = folder(home.path()).join("999999999.sock");
        drop(UnixDatagram::bind(&dead).unwrap());
        let woken = events.scheduler.notified();
        poke(home.path());
        tokio::time::timeout(std::time::Duration::from_secs(5), woken)
            .await
            .expect("the poke wakes the scheduler");
        assert!(!dead.exists(), "a socket nobody reads is removed");
        assert!(own.exists());
        shutdown.cancel();
        listener.await.unwrap();
        assert!(
            !own.exists(),
            "the listener removes its socket when it stops"
        );
        // Nobody listening: a poke does nothing and does not fail.
        poke(home.path());
    }
}
