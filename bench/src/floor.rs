//! The machine's own limit for the work the workloads ask of tern, with no orchestrator: starting
//! `sh -c true` and waiting for it, one after the other and several at once. Every workload
//! measures its floor in the same run and reports its figure beside it, as a ratio.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Starts `sh -c true` and waits for it (what a shell task `true` costs the machine).
fn spawn_true() {
    let status = Command::new("sh")
        .args(["-c", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("sh -c true");
    assert!(status.success());
}

/// Wall time of `n` spawns one after the other.
pub fn sequential(n: usize) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        spawn_true();
    }
    start.elapsed()
}

/// Wall time of `n` spawns one after the other the way an agent starts a task — through
/// tokio (two worker threads), in a process group of its own, with a cleared environment and
/// both outputs piped and read to their end — but with nothing else around it: what the
/// process start alone costs on this machine once the output is captured (not the floor;
/// shown beside it to split tern's own cost from the spawn's).
pub fn sequential_like_a_task(n: usize) -> Duration {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let dir = tempfile::tempdir().expect("a folder");
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                let mut child = tokio::process::Command::new("/bin/sh")
                    .args(["-c", "true"])
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .current_dir(dir.path())
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .expect("sh -c true");
                let (mut out, mut err) =
                    (child.stdout.take().unwrap(), child.stderr.take().unwrap());
                let (mut out_sink, mut err_sink) = (tokio::io::sink(), tokio::io::sink());
                let (status, _, _) = tokio::join!(
                    child.wait(),
                    tokio::io::copy(&mut out, &mut out_sink),
                    tokio::io::copy(&mut err, &mut err_sink)
                );
                assert!(status.expect("waited").success());
            }
            start.elapsed()
        })
    })
    .join()
    .expect("the spawning thread")
}

/// Wall time of `n` spawns, at most `width` at once.
pub fn parallel(n: usize, width: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..width.max(1) {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    spawn_true();
                }
            });
        }
    });
    start.elapsed()
}

/// The width the parallel floor uses: twice the cores, as the issue defines it.
pub fn width() -> usize {
    2 * std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Spawns per second at [`width`], over `n` spawns.
pub fn parallel_rate(n: usize) -> f64 {
    n as f64 / parallel(n, width()).as_secs_f64()
}

/// Wall time of one start of the `tern` binary that does nothing (`tern --version`).
pub fn cli_start(tern: &std::path::Path) -> Duration {
    let start = Instant::now();
    let out = Command::new(tern)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .expect("tern --version");
    assert!(out.success());
    start.elapsed()
}

/// Medians of `runs` measurements of `f`, in seconds.
pub fn median_secs(runs: usize, mut f: impl FnMut() -> Duration) -> f64 {
    let mut xs: Vec<f64> = (0..runs.max(1)).map(|_| f().as_secs_f64()).collect();
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

/// The `floor` workload: the figures every other workload is compared with.
pub fn report(tern: &std::path::Path, runs: usize) {
    let mut seq = Vec::new();
    let mut par = Vec::new();
    let mut cli = Vec::new();
    let mut like_task = Vec::new();
    for _ in 0..runs {
        seq.push(sequential(200).as_secs_f64() / 200.0 * 1000.0);
        like_task.push(sequential_like_a_task(200).as_secs_f64() / 200.0 * 1000.0);
        par.push(parallel_rate(2000));
        cli.push(cli_start(tern).as_secs_f64() * 1000.0);
    }
    crate::summary("floor: one spawn, sequential", "ms", seq);
    crate::summary(
        "  (not the floor) one spawn as an agent makes it",
        "ms",
        like_task,
    );
    crate::summary(&format!("floor: spawns/s at width {}", width()), "/s", par);
    crate::summary("floor: tern --version", "ms", cli);
}
