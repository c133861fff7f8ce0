//! The workloads' data folders: made in `TMPDIR` and removed when the benchmark ends, not when
//! a run ends. On a file system without a journal (this VM's root, ext4 without one), the
//! kernel skips inodes freed in the last 30 s when it makes a file (`recently_deleted`): a run
//! started just after another run's 10,000 log files were removed pays a scan over them for
//! each file it makes, which measured the removal (up to twice the CPU per task), not tern.
//! The PostgreSQL databases of the runs are kept to the end for the same reason (dropping one
//! removes its files).

use std::path::Path;
use std::sync::Mutex;

use tempfile::TempDir;

/// Folders handed out and not yet removed.
static KEPT: Mutex<Vec<TempDir>> = Mutex::new(Vec::new());

/// Other things whose drop removes files (test databases), dropped by [`remove_all`].
static KEPT_OTHER: Mutex<Vec<Box<dyn Send>>> = Mutex::new(Vec::new());

/// A data folder kept until [`remove_all`].
pub struct Folder(std::path::PathBuf);

impl Folder {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A new empty folder, removed by [`remove_all`].
pub fn folder() -> std::io::Result<Folder> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_path_buf();
    KEPT.lock().expect("scratch folders").push(dir);
    Ok(Folder(path))
}

/// Keeps `thing` (a test database) until [`remove_all`].
pub fn keep<T: Send + 'static>(thing: T) {
    KEPT_OTHER.lock().expect("scratch").push(Box::new(thing));
}

/// Removes every folder handed out and drops what was kept (at the end of the benchmark).
pub fn remove_all() {
    KEPT.lock().expect("scratch folders").clear();
    KEPT_OTHER.lock().expect("scratch").clear();
}
