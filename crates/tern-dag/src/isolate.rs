//! Evaluating DAG files in a child process, so that no file can take the caller down: a stack
//! overflow, an allocation past the memory limit or a runaway evaluation ends the child, not the
//! control plane, and becomes an import error of the file that caused it.
//!
//! The program that embeds tern names the executable to run ([`isolate_with`]); the child is
//! that executable started as `EXE __eval-dags FOLDER [FILE]`, which calls [`child_main`] and
//! prints the [`LoadResult`] as JSON. The whole folder is evaluated in one child; if that child
//! fails, each file is evaluated in a child of its own to find the ones at fault, and the
//! others load as usual. Without [`isolate_with`] (tests, benchmarks) files are evaluated in
//! the calling process.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{ImportError, LoadResult};

/// The first argument that makes an executable a DAG-evaluation child.
pub const CHILD_ARG: &str = "__eval-dags";

/// Address space a child may use (the Starlark heap limit is 512 MiB; the rest is code,
/// stacks and the spec being built).
const CHILD_MEMORY: u64 = 3 << 30;
/// CPU seconds a child may use.
const CHILD_CPU_SECONDS: u64 = 120;
/// Wall-clock time for the whole folder, and for one file when files are isolated one by one.
const FOLDER_DEADLINE: Duration = Duration::from_secs(120);
const FILE_DEADLINE: Duration = Duration::from_secs(30);

static EVALUATOR: OnceLock<PathBuf> = OnceLock::new();

/// From now on DAG files are evaluated in child processes running `exe` (which must call
/// [`child_main`] when started with [`CHILD_ARG`]).
pub fn isolate_with(exe: PathBuf) {
    let _ = EVALUATOR.set(exe);
}

pub(crate) fn evaluator() -> Option<&'static Path> {
    EVALUATOR.get().map(PathBuf::as_path)
}

/// The child's side: `args` are what follows [`CHILD_ARG`] (`FOLDER [FILE]`). Prints the load
/// result as JSON on stdout; returns the exit code.
pub fn child_main(args: &[String]) -> i32 {
    let (dir, file) = match args {
        [dir] => (PathBuf::from(dir), None),
        [dir, file] => (PathBuf::from(dir), Some(file.as_str())),
        _ => {
            eprintln!("usage: {CHILD_ARG} FOLDER [FILE]");
            return 2;
        }
    };
    let result = match file {
        None => crate::load_folder_in_process(&dir),
        Some(f) => crate::load_file_in_process(&dir, f),
    };
    // Buffered: stdout is line-buffered, and the JSON (megabytes for a big folder) has no
    // newline, so each small write of the serialiser would search the buffer and flush it.
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    match serde_json::to_writer(&mut out, &result).map_err(std::io::Error::from) {
        Ok(()) if out.flush().is_ok() => 0,
        Ok(()) => {
            eprintln!("cannot write the load result");
            3
        }
        Err(e) => {
            eprintln!("cannot write the load result: {e}");
            3
        }
    }
}

/// How a child ended when it did not deliver a result.
fn describe_failure(
    status: Option<std::process::ExitStatus>,
    timed_out: bool,
    limit: Duration,
) -> String {
    use std::os::unix::process::ExitStatusExt;
    if timed_out {
        return format!(
            "evaluating it took longer than {}s; it was stopped (a runaway loop or computation?)",
            limit.as_secs()
        );
    }
    match status.and_then(|s| s.signal()) {
        Some(6) | Some(11) | Some(7) => "evaluating it crashed the evaluator (a stack overflow or an allocation over the memory limit: nesting too deep, or a list or string too large); it was stopped and nothing else was affected".into(),
        Some(9) | Some(24) => "evaluating it used too much memory or CPU time and was stopped".into(),
        Some(sig) => format!("evaluating it ended with signal {sig}"),
        None => format!(
            "evaluating it failed ({})",
            status.map(|s| s.to_string()).unwrap_or_else(|| "no status".into())
        ),
    }
}

/// Runs one child; `Ok` with its result, or `Err` with why it gave none.
fn run_child(
    exe: &Path,
    dir: &Path,
    file: Option<&str>,
    deadline: Duration,
) -> Result<LoadResult, String> {
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_ARG).arg(dir);
    if let Some(f) = file {
        cmd.arg(f);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_BACKTRACE", "0");
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit(2) and prctl(2), both async-signal-safe, run in the child.
    unsafe {
        cmd.pre_exec(|| {
            let mem = libc::rlimit {
                rlim_cur: CHILD_MEMORY,
                rlim_max: CHILD_MEMORY,
            };
            let cpu = libc::rlimit {
                rlim_cur: CHILD_CPU_SECONDS,
                rlim_max: CHILD_CPU_SECONDS + 5,
            };
            libc::setrlimit(libc::RLIMIT_AS, &mem);
            libc::setrlimit(libc::RLIMIT_CPU, &cpu);
            // No core files from a file that crashes the evaluator on purpose.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the DAG evaluator {}: {e}", exe.display()))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let started = Instant::now();
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(s)) => break (Some(s), false),
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                break (child.wait().ok(), true);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => break (None, false),
        }
    };
    let out = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() && !timed_out => serde_json::from_slice(&out)
            .map_err(|e| format!("the DAG evaluator answered something unreadable: {e}")),
        _ => Err(describe_failure(status, timed_out, deadline)),
    }
}

/// [`crate::load_folder`] through children of `exe`.
pub(crate) fn load_folder(exe: &Path, dir: &Path) -> LoadResult {
    match run_child(exe, dir, None, FOLDER_DEADLINE) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(
                "evaluating the DAG folder in one process failed: {why}; evaluating each file on its own to find which"
            );
            // Find the files at fault: each in a child of its own.
            let (files, errors) = crate::loader::walk(dir);
            let per_file = files
                .iter()
                .map(|f| match run_child(exe, dir, Some(f), FILE_DEADLINE) {
                    Ok(r) => (r.dags, r.errors),
                    Err(why) => (
                        vec![],
                        vec![ImportError {
                            file: f.clone(),
                            line: 0,
                            message: why,
                        }],
                    ),
                })
                .collect();
            crate::merge(files, per_file, errors)
        }
    }
}

/// [`crate::load_file`] through a child of `exe`.
pub(crate) fn load_file(exe: &Path, dir: &Path, rel: &str) -> LoadResult {
    run_child(exe, dir, Some(rel), FILE_DEADLINE).unwrap_or_else(|why| LoadResult {
        dags: vec![],
        errors: vec![ImportError {
            file: rel.to_string(),
            line: 0,
            message: why,
        }],
        files: vec![rel.to_string()],
    })
}
