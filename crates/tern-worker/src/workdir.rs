//! Working folders of tries: every try of a process task starts in an empty folder of its own
//! (its default working directory, and where `TERN_OUTPUT` is written).
//!
//! A folder that a try left empty is given to a later try of this agent instead of being
//! deleted and made again: on ext4 a folder made and deleted per try is a measurable part of a
//! short task's cost, and it grows as deleted inodes pile up (the allocator skips recently
//! deleted ones; BENCHMARKS.md, issue 15). A folder a try left anything in is deleted with
//! what is in it, so no try ever sees another's files (and a folder goes back only after the
//! try's whole process group was killed, see [`crate::process`]). The folders live under one temporary
//! folder per agent, removed when the agent's options are dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The working folders of one agent's tries.
#[derive(Debug, Default)]
pub struct WorkFolders {
    root: OnceLock<tempfile::TempDir>,
    free: Mutex<Vec<PathBuf>>,
    made: AtomicU64,
}

/// A try's working folder, given back (or deleted) when dropped.
pub struct WorkFolder<'a> {
    path: PathBuf,
    folders: &'a WorkFolders,
}

impl WorkFolders {
    /// An empty folder for one try.
    pub fn take(&self) -> std::io::Result<WorkFolder<'_>> {
        if let Some(path) = self.free.lock().expect("work folders").pop() {
            return Ok(WorkFolder {
                path,
                folders: self,
            });
        }
        let root = match self.root.get() {
            Some(root) => root,
            None => {
                let made = tempfile::Builder::new().prefix("tern-work-").tempdir()?;
                // Another try may have made one meanwhile: the first stays, this one goes.
                self.root.get_or_init(|| made)
            }
        };
        let path = root
            .path()
            .join(self.made.fetch_add(1, Ordering::Relaxed).to_string());
        std::fs::create_dir(&path)?;
        Ok(WorkFolder {
            path,
            folders: self,
        })
    }
}

impl WorkFolder<'_> {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkFolder<'_> {
    fn drop(&mut self) {
        let empty = std::fs::read_dir(&self.path).is_ok_and(|mut entries| entries.next().is_none());
        if empty {
            self.folders
                .free
                .lock()
                .expect("work folders")
                .push(std::mem::take(&mut self.path));
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_folder_is_used_again_and_a_used_one_is_deleted() {
        let folders = WorkFolders::default();
        let first = folders.take().unwrap();
        let kept = first.path().to_path_buf();
        drop(first);
        let again = folders.take().unwrap();
        assert_eq!(
            again.path(),
            kept,
            "an empty folder is given to the next try"
        );
        std::fs::write(again.path().join("left.txt"), "x").unwrap();
        drop(again);
        assert!(!kept.exists(), "a folder with files in it is deleted");
        let fresh = folders.take().unwrap();
        assert_ne!(fresh.path(), kept);
        assert_eq!(std::fs::read_dir(fresh.path()).unwrap().count(), 0);
    }

    #[test]
    fn two_tries_at_once_get_different_folders_and_all_go_with_the_agent() {
        let folders = WorkFolders::default();
        let a = folders.take().unwrap();
        let b = folders.take().unwrap();
        assert_ne!(a.path(), b.path());
        let root = a.path().parent().unwrap().to_path_buf();
        drop((a, b));
        drop(folders);
        assert!(!root.exists(), "the agent's folders outlived it");
    }
}
