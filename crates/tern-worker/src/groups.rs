//! The process groups of running tries, kept on disk so that an agent started after a crash
//! ends what its killed predecessor left behind before any retry starts.
//!
//! Every task process leads a process group of its own and dies with its agent
//! (`PR_SET_PDEATHSIG`), but the signal reaches only that process: its own children would
//! live on after a `kill -9` of the agent and overlap the retry. So each try writes a file
//! `<pgid>` (the agent's pid and the try's attempt token) while it runs. At start an agent
//! looks at the files whose agent is gone: a group with a process still carrying that
//! attempt's `TERN_ATTEMPT` in its environment is killed whole. (A process id is never reused
//! while it names a live process group, and the environment check rules out a group that
//! came and went.)

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The variable that marks every process of a try (and is inherited by its children).
pub const ATTEMPT_VAR: &str = "TERN_ATTEMPT";

#[derive(Debug)]
pub struct GroupRegistry {
    dir: PathBuf,
}

/// A try's entry in the registry; removed when dropped.
pub struct Registered {
    path: PathBuf,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl GroupRegistry {
    /// The registry in `dir` (created if missing).
    pub fn open(dir: &Path) -> io::Result<GroupRegistry> {
        std::fs::create_dir_all(dir)?;
        Ok(GroupRegistry {
            dir: dir.to_path_buf(),
        })
    }

    /// Notes that process group `pgid` runs the try `attempt` of this process.
    pub fn record(&self, pgid: u32, attempt: &str) -> io::Result<Registered> {
        let path = self.dir.join(pgid.to_string());
        std::fs::write(&path, format!("{}\n{attempt}\n", std::process::id()))?;
        Ok(Registered { path })
    }

    /// Kills every group left by tries of agents that are gone; returns how many groups were
    /// killed. Entries of other live agents sharing the folder are left alone; an entry with
    /// this process's own id is a predecessor's (an agent that always runs as pid 1 in a
    /// container), since this process has started no try yet when it calls this.
    pub fn end_leftovers(&self) -> io::Result<usize> {
        let mut killed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(pgid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = text.lines();
            let owner = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
            let attempt = lines.next().unwrap_or("").trim().to_string();
            if owner.is_some_and(|pid| !crate::process::left_by_gone_process(pid)) {
                continue;
            }
            if !attempt.is_empty() && group_runs_attempt(pgid, &attempt) {
                let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                killed += 1;
                tracing::warn!(
                    pgid,
                    attempt,
                    "ended the processes a stopped agent's try left running"
                );
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
        // Owned by another live agent (the test runner's parent stands in for one): kept.
        let live = std::os::unix::process::parent_id();
        std::fs::write(
            dir.path().join(pgid.to_string()),
            format!("{live}\ntok-1\n"),
        )
        .unwrap();
        assert_eq!(reg.end_leftovers().unwrap(), 0);
        assert!(child.try_wait().unwrap().is_none());
        // Owned by an agent that is gone.
        std::fs::write(dir.path().join(pgid.to_string()), "999999999\ntok-1\n").unwrap();
        // A different attempt's marker is not ours: the group is left alone.
        std::fs::write(dir.path().join("1"), "999999999\nother\n").unwrap();
        assert_eq!(reg.end_leftovers().unwrap(), 1);
        let status = child.wait().unwrap();
        assert!(!status.success(), "killed: {status:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
