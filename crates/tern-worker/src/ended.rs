//! Ends of tries recorded on disk the moment their process exits, before the result is
//! reported: if the agent is killed in between, the next start delivers the recorded result
//! instead of running a finished command again. Written without `fsync` (a killed process
//! loses nothing it wrote; a machine crash may, and then the task runs again: delivery stays at
//! least once). Records go to the journal of the process that wrote them (see
//! [`crate::journal`]), so several agents may share the folder and each replays only what dead
//! ones left.

use std::io;
use std::path::Path;

use tern_protocol::Completion;

use crate::journal::{self, Journal};

#[derive(Debug)]
pub struct EndedRecords {
    dir: std::path::PathBuf,
    journal: Journal,
}

fn key(ti_id: i64, attempt: &str) -> String {
    crate::spool::file_name(ti_id, attempt)
}

impl EndedRecords {
    pub fn open(dir: &Path) -> io::Result<EndedRecords> {
        Ok(EndedRecords {
            dir: dir.to_path_buf(),
            journal: Journal::open(dir)?,
        })
    }

    /// Records how an attempt ended.
    pub fn record(&self, c: &Completion) -> io::Result<()> {
        self.journal.add(
            &key(c.ti_id, &c.attempt),
            &serde_json::to_string(c).expect("serialisable"),
        )
    }

    /// Forgets an attempt whose result the control plane has taken (or refused).
    pub fn forget(&self, ti_id: i64, attempt: &str) {
        self.journal.remove(&key(ti_id, attempt));
    }

    /// Takes the records left by processes that are gone (including an earlier process with
    /// this one's id): each journal is removed once read, so a record is delivered once.
    pub fn take_leftovers(&self) -> io::Result<Vec<Completion>> {
        let mut out = Vec::new();
        for (path, entries) in journal::leftovers(&self.dir)? {
            out.extend(
                entries
                    .iter()
                    .filter_map(|(_, json)| serde_json::from_str::<Completion>(json).ok()),
            );
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
        // Another live process's journal stays.
        let live = std::os::unix::process::parent_id();
        std::fs::write(
            dir.path().join(format!("{live}.journal")),
            format!(
                "+ {} {}\n",
                key(3, "tok-1"),
                serde_json::to_string(&done(3)).unwrap()
            ),
        )
        .unwrap();
        // This process's own journal counts as a gone predecessor's here (a restarted agent
        // with the same id reads it before it records anything).
        let taken = rec.take_leftovers().unwrap();
        assert_eq!(taken.iter().map(|c| c.ti_id).collect::<Vec<_>>(), vec![1]);
        assert!(rec.take_leftovers().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
