//! The tries of this agent, kept on disk so that an agent started after a crash ends what its
//! killed predecessor's tries left running before any retry starts.
//!
//! Every task process leads a process group of its own, and the guardian ([`crate::guardian`])
//! or `PR_SET_PDEATHSIG` ends it with its agent; but a crash can take the guardian too, and a
//! try killed between its spawn and the guardian's `+PGID` line is not on the guardian's list.
//! So each try notes its attempt token in the agent's journal (`<agent pid>.journal`, see
//! [`crate::journal`]) *before* its process is started, and closes the entry when the process
//! has ended. At start an agent replays the journals of agents that are gone and kills the
//! process group of every live process whose environment carries a left-over attempt's
//! `TERN_ATTEMPT` (the variable every process of a try inherits, so a child that left its
//! group with `setsid` is found too; the token is random, so no other process carries it).

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{getpgrp, Pid};

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
    attempt: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.journal.remove(&self.attempt);
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

    /// Notes that this process is about to start a process for the try `attempt` (a token
    /// without spaces); call it before the spawn and keep the entry until the process ended.
    pub fn record(&self, attempt: &str) -> io::Result<Registered> {
        self.journal.add(attempt, "")?;
        Ok(Registered {
            journal: self.journal.clone(),
            attempt: attempt.to_string(),
        })
    }

    /// Kills what tries of agents that are gone left running; returns how many process
    /// groups were killed. Journals of other live agents sharing the folder are left alone;
    /// this process's own id is a predecessor's (an agent that always runs as pid 1 in a
    /// container), since this process has started no try yet when it calls this.
    pub fn end_leftovers(&self) -> io::Result<usize> {
        let leftovers = journal::leftovers(&self.dir)?;
        let attempts: BTreeSet<String> = leftovers
            .iter()
            .flat_map(|(_, entries)| entries.iter().map(left_attempt))
            .filter(|attempt| !attempt.is_empty())
            .collect();
        let killed = end_processes_of(&attempts);
        for (path, _) in leftovers {
            let _ = std::fs::remove_file(&path);
        }
        Ok(killed)
    }
}

/// The attempt of a journal entry. (Agents before this one wrote the group as the key and the
/// attempt as the value.)
fn left_attempt((key, value): &(String, String)) -> String {
    if value.is_empty() { key } else { value }.clone()
}

/// Kills the process group of every live process carrying one of `attempts` in its
/// environment (the process alone if it shares this process's group); returns how many groups
/// were killed.
pub(crate) fn end_processes_of(attempts: &BTreeSet<String>) -> usize {
    if attempts.is_empty() {
        return 0;
    }
    let markers: HashSet<Vec<u8>> = attempts
        .iter()
        .map(|a| format!("{ATTEMPT_VAR}={a}").into_bytes())
        .collect();
    let own_group = getpgrp().as_raw();
    let own_pid = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut groups = BTreeSet::new();
    for dir in procs.flatten().map(|p| p.path()) {
        let Some(pid) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let carries = std::fs::read(dir.join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|var| markers.contains(var)));
        if !carries || pid == own_pid {
            continue;
        }
        let Some(group) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| process_group_of(&stat))
        else {
            continue;
        };
        if group > 1 && group != own_group {
            groups.insert(group);
        } else {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    for &group in &groups {
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        tracing::warn!(
            pgid = group,
            "ended the processes a stopped agent's try left running"
        );
    }
    groups.len()
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

    /// A process of the try `attempt` in a process group of its own.
    fn try_process(attempt: &str) -> std::process::Child {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("30")
            .env(ATTEMPT_VAR, attempt)
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn leftovers_of_a_gone_agent_are_killed_and_live_ones_kept() {
        // Tokens of this test process only (tests of this binary may run at once).
        let tok = |n: u32| format!("tok-{}-{n}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let reg = GroupRegistry::open(dir.path()).unwrap();
        let mut first = try_process(&tok(1));
        // In the journal of another live agent (the test runner's parent stands in for one):
        // kept.
        let live = std::os::unix::process::parent_id();
        let live_journal = dir.path().join(format!("{live}.journal"));
        std::fs::write(&live_journal, format!("+ {} \n", tok(1))).unwrap();
        assert_eq!(reg.end_leftovers().unwrap(), 0);
        assert!(first.try_wait().unwrap().is_none());
        std::fs::remove_file(&live_journal).unwrap();
        // In the journal of an agent that is gone: every group holding a process of the
        // attempt is killed (here the try's second process left the first one's group), and
        // so is the group an older agent noted as `+ PGID ATTEMPT`. A closed entry and an
        // attempt no process carries are not acted on; an unrelated group is left alone.
        let mut second = try_process(&tok(1));
        let mut older = try_process(&tok(2));
        let mut closed = try_process(&tok(3));
        let mut unrelated = try_process(&tok(4));
        std::fs::write(
            dir.path().join("999999999.journal"),
            format!(
                "+ {} \n+ {} \n- {}\n+ {} {}\n+ {} \n",
                tok(5),
                tok(3),
                tok(3),
                older.id(),
                tok(2),
                tok(1)
            ),
        )
        .unwrap();
        // (Under a loaded suite this once counted 2: if it does again, this says whether a
        // process had already ended — killed from outside — before the scan.)
        for child in [&mut first, &mut second, &mut older] {
            let ended = child.try_wait().unwrap();
            assert!(ended.is_none(), "ended before the scan: {ended:?}");
        }
        assert_eq!(reg.end_leftovers().unwrap(), 3);
        for child in [&mut first, &mut second, &mut older] {
            let status = child.wait().unwrap();
            assert!(!status.success(), "killed: {status:?}");
        }
        for child in [&mut closed, &mut unrelated] {
            assert!(child.try_wait().unwrap().is_none(), "left alone");
            child.kill().unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A try of this process is in its own journal until its entry is dropped.
        let entry = reg.record(&tok(6)).unwrap();
        let own = dir.path().join(format!("{}.journal", std::process::id()));
        assert_eq!(
            journal::replay(&own).unwrap(),
            vec![(tok(6), String::new())]
        );
        drop(entry);
        assert!(journal::replay(&own).unwrap().is_empty());
    }
}
