//! Running a task's child process: a clean environment, its own process group (so a timeout
//! or cancellation kills everything it started, and what it left running ends with it),
//! output captured line by line, and death with the agent (the whole group at once by the
//! [`crate::guardian`], or the process itself by `PR_SET_PDEATHSIG` where no guardian runs; and
//! by the next agent, through [`crate::groups`], if both are gone).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::logsink::LogSink;
use crate::mask::Masker;

/// Whether process `pid` exists (a zombie counts until it is reaped).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether the agent process `pid` that left a record behind is gone: not running, or this
/// very process, which has started no try yet when it looks (a predecessor with the same id,
/// as an agent that always runs as pid 1 in a container).
pub fn left_by_gone_process(pid: u32) -> bool {
    pid == std::process::id() || !alive(pid)
}

/// Where `program` is, found on `path` (the agent's own `PATH` if `None`) as `execvp` would
/// find it: the first executable file of that name in an absolute folder of the list. A name
/// with a `/` is a path already.
pub fn find_program(program: &str, path: Option<&str>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = path
        .map(str::to_string)
        .or_else(|| std::env::var("PATH").ok())?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A command to run for a task.
pub struct ProcessSpec<'a> {
    pub program: &'a str,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// Written to the child's standard input, then closed.
    pub stdin: Option<String>,
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when the process must stop.
    pub kill_grace: Duration,
    /// The secrets the sink masks: long lines are cut where no secret is split.
    pub mask: std::sync::Arc<Masker>,
    /// The try's attempt token (`TERN_ATTEMPT` in its processes' environment, a container's
    /// included): told to the guardian and noted in `groups` before the spawn.
    pub attempt: &'a str,
    /// Where the try is noted while it runs, so an agent started after a crash can end what
    /// this try left behind.
    pub groups: Option<std::sync::Arc<crate::groups::GroupRegistry>>,
}

/// How a process ended.
#[derive(Debug)]
pub enum ProcessEnd {
    Exited(ExitStatus),
    TimedOut(Duration),
    Cancelled,
    /// It could not be started at all.
    SpawnFailed(String),
}

/// The variables every task process gets from the agent's own environment; nothing else
/// leaks in. Task-specific variables are added by the caller.
pub fn base_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for key in [
        "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "SHELL",
    ] {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.to_string(), v);
        }
    }
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
    env
}

/// Longest piece of output sent as one log line; longer lines are sent in pieces.
pub const MAX_LINE: usize = 64 * 1024;

/// Sends the output of `reader` to `sink` line by line. A line longer than [`MAX_LINE`] goes
/// in pieces, cut where `masker` says no secret is split, so masking downstream still sees
/// every secret whole.
async fn pump(reader: impl AsyncRead + Unpin, sink: &dyn LogSink, masker: &Masker) {
    let emit = |bytes: &[u8]| {
        let line = String::from_utf8_lossy(bytes);
        sink.line(line.trim_end_matches(['\n', '\r']));
    };
    let mut reader = BufReader::new(reader);
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let limit = MAX_LINE.saturating_sub(buf.len()).max(1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => {
                if !buf.is_empty() {
                    emit(&buf);
                }
                return;
            }
            Ok(_) if buf.ends_with(b"\n") => {
                emit(&buf);
                buf.clear();
            }
            Ok(_) if buf.len() >= MAX_LINE => {
                let mut cut = masker.split_point(&buf);
                while cut > 0 && cut < buf.len() && (buf[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                if cut == 0 {
                    cut = buf.len();
                }
                emit(&buf[..cut]);
                buf.drain(..cut);
            }
            Ok(_) => {}
        }
    }
}

fn signal_group(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Runs the process to its end, sending every output line to `sink`.
pub async fn run(
    spec: ProcessSpec<'_>,
    sink: &dyn LogSink,
    cancel: &CancellationToken,
) -> ProcessEnd {
    // Found here on the task's own `PATH`: with a path and no hook before `exec`, the standard
    // library starts the process with `posix_spawn` (no copy of this process's page tables).
    // (Not found: the bare name, so the start fails as `execvp` says.)
    let program = spec
        .env
        .get("PATH")
        .and_then(|path| find_program(spec.program, Some(path)));
    let mut cmd = Command::new(program.as_deref().unwrap_or(Path::new(spec.program)));
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .current_dir(&spec.cwd)
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !crate::guardian::running() {
        // No guardian ends this try if this process dies: the process must see to it itself.
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    // Noted before the spawn: an agent killed at any point after it leaves the try on record
    // for its successor to end (see `crate::groups`).
    let _registered = spec.groups.as_ref().and_then(|registry| {
        registry
            .record(spec.attempt)
            .inspect_err(|e| tracing::warn!("cannot note the task's try: {e}"))
            .ok()
    });
    let _watched_attempt = crate::guardian::watch_attempt(spec.attempt);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return ProcessEnd::SpawnFailed(describe_spawn_error(spec.program, &spec.cwd, &e))
        }
    };
    let pid = child.id().unwrap_or(0);
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("TERN_DEBUG_PAUSE_AFTER_SPAWN_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        // Tests: widen the window between the spawn and the group's `+PGID`, in which the agent
        // may die (recovery tests kill it there).
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let _watched = crate::guardian::watch(pid);
    let spec_mask = spec.mask.clone();
    if let (Some(input), Some(mut stdin)) = (spec.stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let output = async {
        tokio::join!(
            pump(stdout, sink, &spec_mask),
            pump(stderr, sink, &spec_mask)
        );
    };
    let deadline = async {
        match spec.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let waited = async {
        let (status, ()) = tokio::join!(child.wait(), output);
        status
    };
    tokio::pin!(waited);
    let end = tokio::select! {
        status = &mut waited => {
            // What the task started and left running (with its output sent elsewhere) ends
            // with it: nothing of a finished try may overlap the next.
            signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            return match status {
                Ok(s) => ProcessEnd::Exited(s),
                Err(e) => ProcessEnd::SpawnFailed(format!("waiting for the process failed: {e}")),
            };
        }
        _ = deadline => ProcessEnd::TimedOut(spec.timeout.unwrap_or_default()),
        _ = cancel.cancelled() => ProcessEnd::Cancelled,
    };
    signal_group(pid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(spec.kill_grace, &mut waited)
        .await
        .is_err()
    {
        signal_group(pid, nix::sys::signal::Signal::SIGKILL);
        // Output pipes may be held open by grandchildren that ignored SIGTERM; they are in the
        // group too and die with SIGKILL, so this wait ends.
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut waited).await;
    }
    end
}

fn describe_spawn_error(program: &str, cwd: &Path, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        if !cwd.exists() {
            return format!("working directory {} does not exist", cwd.display());
        }
        return format!("{program} was not found on PATH; install it or set the interpreter in the agent's configuration");
    }
    format!("could not start {program}: {e}")
}
