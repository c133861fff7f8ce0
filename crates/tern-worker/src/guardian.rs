//! The guardian: a small process, forked while the agent's process still has one thread, that
//! ends the whole process group of every running try the moment the agent's process dies,
//! however it dies (`kill -9` included).
//!
//! Why it exists: a task process started with `PR_SET_PDEATHSIG` needs a hook between fork and
//! exec, so the standard library must `fork` the agent (copying the page tables of a large,
//! many-threaded process for every task: the main cost of a short task, measured under issue
//! 15). Without the hook, `posix_spawn` starts it with a `vfork`-like clone that copies nothing.
//! The guardian gives the death guarantee instead, and a stronger one: the signal reaches the
//! try's whole group (what the task started too), not only its first process.
//!
//! How: the agent writes `+PGID` when a try's group starts and `-PGID` when it has ended, one
//! line each (shorter than `PIPE_BUF`, so every write is whole), into a pipe whose reading end
//! only the guardian holds. When the last writing end closes (the agent's process is gone), the
//! guardian kills the groups still listed and exits. It sits in a process group of its own and
//! ignores the terminal's and a service manager's stop signals, so a signal sent to the agent's
//! group (Ctrl-C, `kill -- -PGID`) cannot take it down before it has done its job. A try whose agent
//! dies between its spawn and its `+PGID` line is covered by the groups journal
//! ([`crate::groups`], written before the spawn) and by the try's attempt token, sent as
//! `+aTOKEN` before the spawn: when the agent dies the guardian also kills the group of every
//! process still carrying a listed `TERN_ATTEMPT`. A crash of the whole machine is covered by the
//! groups journal alone.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::OnceLock;

use nix::sys::signal::{killpg, signal, SigHandler, Signal};
use nix::unistd::{fork, setpgid, ForkResult, Pid};

/// The writing end of the pipe to this process's guardian, once it runs.
static GUARDIAN: OnceLock<File> = OnceLock::new();

/// Starts this process's guardian.
///
/// # Safety
/// The process must have one thread when this is called (before the async runtime or any
/// other thread starts): the child of `fork` goes on running Rust code.
pub unsafe fn start() -> std::io::Result<()> {
    if GUARDIAN.get().is_some() {
        return Ok(());
    }
    let (reader, writer) = std::io::pipe()?;
    // SAFETY: the caller guarantees one thread, so the child may allocate and lock freely.
    match unsafe { fork() }.map_err(std::io::Error::from)? {
        ForkResult::Child => {
            drop(writer);
            // SAFETY: still the only thread of the child.
            unsafe { guard(reader.into_raw_fd()) }
        }
        ForkResult::Parent { .. } => {
            drop(reader);
            let _ = GUARDIAN.set(File::from(std::os::fd::OwnedFd::from(writer)));
            Ok(())
        }
    }
}

/// Whether a guardian watches this process's tries (else each task process must carry
/// `PR_SET_PDEATHSIG` itself).
pub fn running() -> bool {
    GUARDIAN.get().is_some()
}

/// A try's process group, under watch until dropped.
pub struct Watched {
    pgid: u32,
}

/// Puts process group `pgid` under the guardian's watch; `None` without a guardian.
pub fn watch(pgid: u32) -> Option<Watched> {
    send(&format!("+{pgid}")).then_some(Watched { pgid })
}

impl Drop for Watched {
    fn drop(&mut self) {
        send(&format!("-{}", self.pgid));
    }
}

/// A try's attempt token, under watch until dropped.
pub struct WatchedAttempt {
    attempt: String,
}

/// Puts the processes carrying `TERN_ATTEMPT=attempt` (a token without spaces or line breaks)
/// under the guardian's watch; call it before the try's process is spawned, so an agent killed
/// before [`watch`] names the group still has its try ended. `None` without a guardian.
pub fn watch_attempt(attempt: &str) -> Option<WatchedAttempt> {
    send(&format!("+{ATTEMPT_MARK}{attempt}")).then(|| WatchedAttempt {
        attempt: attempt.to_string(),
    })
}

impl Drop for WatchedAttempt {
    fn drop(&mut self) {
        send(&format!("-{ATTEMPT_MARK}{}", self.attempt));
    }
}

/// Marks a line about an attempt token rather than a process group.
const ATTEMPT_MARK: char = 'a';

fn send(line: &str) -> bool {
    let Some(mut pipe) = GUARDIAN.get() else {
        return false;
    };
    // One `write` of a line shorter than `PIPE_BUF`: whole, never interleaved.
    match pipe.write_all(format!("{line}\n").as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::error!(
                    "the guardian process is gone ({e}): task processes will no longer end at \
                     once if this process dies (the next agent still ends them); restart tern"
                )
            });
            false
        }
    }
}

/// The guardian's life: keep the list of live groups until the pipe's writers are gone, then
/// kill them all and exit.
///
/// # Safety
/// Called in the child of `fork` of a one-thread process.
unsafe fn guard(pipe: i32) -> ! {
    // Only the pipe stays open: the agent's sockets, files and terminal are not held.
    // SAFETY: plain system calls on descriptors this process owns.
    unsafe {
        libc::dup2(pipe, 0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
        }
        libc::close_range(3, libc::c_uint::MAX, 0);
        libc::prctl(libc::PR_SET_NAME, c"tern-guardian".as_ptr());
        // The lowest priority: each line the agent writes wakes this process, and at its
        // normal priority the wake-up took the agent's CPU from it at once, four times per
        // try. Its work is a set update per line; what must be prompt, the kill when the
        // agent is gone, still gets its turn on a busy machine (a low share, not none).
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGPIPE,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
    ] {
        // SAFETY: ignoring a signal installs no handler.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // The code of the agent's start (mapped before the fork) need not stay resident here.
    let _ = crate::resident::let_go_of_program_pages();
    // SAFETY: descriptor 0 is the pipe's reading end, owned here from now on.
    let input = BufReader::new(unsafe { File::from_raw_fd(0) });
    let mut groups = HashSet::new();
    let mut attempts = BTreeSet::new();
    for line in input.split(b'\n') {
        let Ok(line) = line else { break };
        let Some((&op, digits)) = line.split_first() else {
            continue;
        };
        if let Some(attempt) = digits.strip_prefix(&[ATTEMPT_MARK as u8]) {
            let attempt = String::from_utf8_lossy(attempt).into_owned();
            match op {
                b'+' => {
                    attempts.insert(attempt);
                }
                b'-' => {
                    attempts.remove(&attempt);
                }
                _ => {}
            }
            continue;
        }
        let Some(pgid) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<i32>().ok())
            .filter(|p| *p > 1)
        else {
            continue;
        };
        match op {
            b'+' => {
                groups.insert(pgid);
            }
            b'-' => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    // Tries whose group was not named yet (the agent died between spawn and `+PGID`), and
    // their children that left the group.
    crate::groups::end_processes_of(&attempts);
    // SAFETY: leaving without the parent's exit handlers or buffers, which are not ours.
    unsafe { libc::_exit(0) }
}
