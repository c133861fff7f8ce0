//! The process groups of running tries, kept on disk so that an agent started after a crash
//! ends what its killed predecessor left behind before any retry starts.
//!
//! Every task process leads a process group of its own and dies with its agent
//! (`PR_SET_PDEATHSIG`), but the signal reaches only that process: its own children would
//! live on after a `kill -9` of the agent and overlap the retry. So each try notes its group
//! and attempt token in the agent's journal (`<agent pid>.journal`, see [`crate::journal`])
//! while it runs. At start an agent replays the journals of agents that are gone: a group with
//! a process still carrying that attempt's `TERN_ATTEMPT` in its environment is killed whole. (A process id is never reused
//! while it names a live process group, and the environment check rules out a group that
//! came and went.)

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::journal::{self, Journal};

/// The variable that marks every process of a try (and is inherited by its children).
pub const ATTEMPT_VAR: &str = "TERN_ATTEMPT";

#[derive(Debug)]
pub struct GroupRegistry {
    dir: PathBuf,
    journal: Arc<Journal>,
}

/// A try's entry in the registry; closed when dropped.
pub struct Registered {
    journal: Arc<Journal>,
    pgid: u32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.journal.remove(&self.pgid.to_string());
    }
}

impl GroupRegistry {
    /// The registry in `dir` (created if missing).
    pub fn open(dir: &Path) -> io::Result<GroupRegistry> {
        Ok(GroupRegistry {
            dir: dir.to_path_buf(),
            journal: Arc::new(Journal::open(dir)?),
        })
    }

    /// Notes that process group `pgid` runs the try `attempt` of this process.
    pub fn record(&self, pgid: u32, attempt: &str) -> io::Result<Registered> {
        self.journal.add(&pgid.to_string(), attempt)?;
        Ok(Registered {
            journal: self.journal.clone(),
            pgid,
        })
    }

    /// Kills every group left by tries of agents that are gone; returns how many groups were
    /// killed. Journals of other live agents sharing the folder are left alone; this process's
    /// own id is a predecessor's (an agent that always runs as pid 1 in a container), since
    /// this process has started no try yet when it calls this.
    pub fn end_leftovers(&self) -> io::Result<usize> {
        let mut killed = 0;
        for (path, entries) in journal::leftovers(&self.dir)? {
            for (pgid, attempt) in entries {
                let Ok(pgid) = pgid.parse::<i32>() else {
                    continue;
                };
                if !attempt.is_empty() && group_runs_attempt(pgid, &attempt) {
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                    killed += 1;
                    tracing::warn!(
                        pgid,
                        attempt,
                        "ended the processes a stopped agent's try left running"
                    );
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        Ok(killed)
    }
}

/// Whether a live process of group `pgid` carries `TERN_ATTEMPT=attempt`.
fn group_runs_attempt(pgid: i32, attempt: &str) -> bool {
    let marker = format!("{ATTEMPT_VAR}={attempt}");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let dir = p.path();
        let in_group = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| process_group_of(&stat))
            == Some(pgid);
        in_group
            && std::fs::read(dir.join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
    })
}

/// The process group in a `/proc/PID/stat` line (the fifth field; the second, the command
/// name, is in parentheses and may hold spaces).
fn process_group_of(stat: &str) -> Option<i32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_group_from_a_stat_line() {
        let stat = "4242 (sh -c (x)) S 1 4240 4240 0 -1 4194560 ...";
        assert_eq!(process_group_of(stat), Some(4240));
    }

    #[test]
    fn leftovers_of_a_gone_agent_are_killed_and_live_ones_kept() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let reg = GroupRegistry::open(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(ATTEMPT_VAR, "tok-1")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        // In the journal of another live agent (the test runner's parent stands in for one):
        // kept.
        let live = std::os::unix::process::parent_id();
        let live_journal = dir.path().join(format!("{live}.journal"));
        std::fs::write(&live_journal, format!("+ {pgid} tok-1\n")).unwrap();
        assert_eq!(reg.end_leftovers().unwrap(), 0);
        assert!(child.try_wait().unwrap().is_none());
        std::fs::remove_file(&live_journal).unwrap();
        // In the journal of an agent that is gone; a different attempt's marker is not ours
        // (that group is left alone), and a closed entry is not looked at.
        std::fs::write(
            dir.path().join("999999999.journal"),
            format!("+ 1 other\n+ 2 tok-2\n- 2\n+ {pgid} tok-1\n"),
        )
        .unwrap();
        assert_eq!(reg.end_leftovers().unwrap(), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A try of this process is in its own journal until its entry is dropped.
        let entry = reg.record(4242, "tok-3").unwrap();
        let own = dir.path().join(format!("{}.journal", std::process::id()));
        assert_eq!(journal::replay(&own).unwrap().len(), 1);
        drop(entry);
        assert!(journal::replay(&own).unwrap().is_empty());
    }
}
