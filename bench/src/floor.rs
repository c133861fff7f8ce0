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
    for _ in 0..runs {
        seq.push(sequential(200).as_secs_f64() / 200.0 * 1000.0);
        par.push(parallel_rate(2000));
        cli.push(cli_start(tern).as_secs_f64() * 1000.0);
    }
    crate::summary("floor: one spawn, sequential", "ms", seq);
    crate::summary(&format!("floor: spawns/s at width {}", width()), "/s", par);
    crate::summary("floor: tern --version", "ms", cli);
}
