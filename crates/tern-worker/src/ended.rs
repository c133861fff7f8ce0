//! Ends of tries recorded on disk the moment their process exits, before the result is
//! reported: if the agent is killed in between, the next start delivers the recorded result
//! instead of running a finished command again. Written without `fsync` (a killed process
//! loses nothing it wrote; a machine crash may, and then the task runs again: delivery stays at
//! least once). Each record names the process that wrote it, so several agents may share the
//! folder and each replays only what dead ones left.

use std::io;
use std::path::{Path, PathBuf};

use tern_protocol::Completion;

#[derive(Debug)]
pub struct EndedRecords {
    dir: PathBuf,
}

fn name(pid: u32, ti_id: i64, attempt: &str) -> String {
    format!("{pid}.{}.json", crate::spool::file_name(ti_id, attempt))
}

impl EndedRecords {
    pub fn open(dir: &Path) -> io::Result<EndedRecords> {
        std::fs::create_dir_all(dir)?;
        Ok(EndedRecords {
            dir: dir.to_path_buf(),
        })
    }

    /// Records how an attempt ended (written whole, then renamed into place).
    pub fn record(&self, c: &Completion) -> io::Result<()> {
        let path = self.dir.join(name(std::process::id(), c.ti_id, &c.attempt));
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(c).expect("serialisable"))?;
        std::fs::rename(tmp, path)
    }

    /// Forgets an attempt whose result the control plane has taken (or refused).
    pub fn forget(&self, ti_id: i64, attempt: &str) {
        let _ = std::fs::remove_file(self.dir.join(name(std::process::id(), ti_id, attempt)));
    }

    /// Takes the records left by processes that are gone (including an earlier process with
    /// this one's id): each is removed as it is returned, so it is delivered once.
    pub fn take_leftovers(&self) -> io::Result<Vec<Completion>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let owner = file.split('.').next().and_then(|p| p.parse::<u32>().ok());
            if owner.is_some_and(|pid| !crate::process::left_by_gone_process(pid)) {
                continue;
            }
            if path.extension().is_some_and(|e| e == "json") {
                if let Ok(c) = serde_json::from_slice::<Completion>(&std::fs::read(&path)?) {
                    out.push(c);
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(ti_id: i64) -> Completion {
        Completion {
            ti_id,
            attempt: "tok-1".into(),
            success: true,
            retryable: false,
            exit_code: Some(0),
            reason: None,
            outputs: Default::default(),
            reschedule_after_ms: None,
        }
    }

    #[test]
    fn records_of_gone_processes_are_taken_once_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rec = EndedRecords::open(dir.path()).unwrap();
        rec.record(&done(1)).unwrap();
        rec.record(&done(2)).unwrap();
        rec.forget(2, "tok-1");
        // Another live process's record stays.
        let live = std::os::unix::process::parent_id();
        std::fs::write(
            dir.path().join(name(live, 3, "tok-1")),
            serde_json::to_vec(&done(3)).unwrap(),
        )
        .unwrap();
        let taken = rec.take_leftovers().unwrap();
        assert_eq!(taken.iter().map(|c| c.ti_id).collect::<Vec<_>>(), vec![1]);
        assert!(rec.take_leftovers().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
