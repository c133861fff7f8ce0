//! tern's benchmarks. Each workload runs several times and prints min / median / max.
//!
//! - `chain40`, `fan200`: trigger to run success, in-process control plane with its local agent,
//!   every task the shell command `true`;
//! - `parse`: the `tern` binary from start until `dags list` has listed 200 / 1,000 DAG files
//!   on a fresh data folder, and `dags list` of 1 / 1,000 files the data folder already holds,
//!   and one DAG of 10,000 tasks;
//! - `memory`: PSS of an idle `tern standalone` with the 200 DAGs loaded, its guardian counted,
//!   30 s after its start (`text-order` writes the code layout that keeps it low: see
//!   [`text_order`]);
//! - `throughput`: 10,000 no-op tasks across 100 runs, on SQLite and on PostgreSQL;
//! - `claimlatency`, `remotechain40`, `remotefan200`, `agents1000`: remote agents over HTTP
//!   (see [`remote`]);
//! - `ui`: server time of the DAG list with 1,000 DAGs and of the grid, graph and run page of a
//!   10,000-task DAG (see [`ui`]);
//! - `floor`: the machine's own limit for the same work with no orchestrator (see [`floor`]);
//!   chain40, fan200 and throughput print theirs beside their figures;
//! - `empty`, `wide`, `idlecpu`, `cli`: the speed issue's workloads (see [`scale`]).

mod export;
mod floor;
mod remote;
mod scale;
mod scratch;
mod servers;
mod text_order;
mod ui;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tern_server::trigger::{trigger, TriggerRequest};
use tern_server::{Config, Node, Roles};

#[derive(Parser)]
struct Args {
    /// Workloads to run (default: all but chaos): chain40 fan200 parse memory throughput
    /// claimlatency remotechain40 remotefan200 agents1000 ui; chaos (the long chaos suite);
    /// text-order (writes crates/tern/text-order.txt from `--tern`, a `--profile dist` build;
    /// needs root)
    workloads: Vec<String>,
    /// Repetitions per workload.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// The `tern` binary for the process-level workloads.
    #[arg(long, default_value = "target/release/tern")]
    tern: PathBuf,
    /// PostgreSQL admin URL for the PostgreSQL throughput run.
    #[arg(
        long,
        env = "TERN_TEST_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg: String,
}

pub(crate) fn summary(name: &str, unit: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = xs[xs.len() / 2];
    println!(
        "{name:<28} min {:>9.3} {unit}  median {:>9.3} {unit}  max {:>9.3} {unit}  (n={})",
        xs[0],
        med,
        xs[xs.len() - 1],
        xs.len()
    );
}

pub(crate) fn config(home: &Path, dags: &Path, db: Option<String>) -> Config {
    let mut cfg = Config {
        home: home.to_path_buf(),
        dags_folder: Some(dags.to_path_buf()),
        database_url: db,
        ..Config::default()
    };
    cfg.agent.concurrency = 32;
    cfg.scheduler.dag_scan_interval = "1h".into();
    cfg
}

pub(crate) fn chain_dag(n: usize) -> String {
    let mut s = String::from("d = dag(id = \"chain40\")\nprev = None\n");
    s.push_str(&format!(
        "for i in range({n}):\n    t = shell(id = \"t%d\" % i, cmd = \"true\")\n    if prev:\n        prev >> t\n    prev = t\n"
    ));
    s
}

fn fan_dag(width: usize) -> String {
    format!(
        "d = dag(id = \"fan200\", max_active_tasks = 32)\nstart = shell(id = \"start\", cmd = \"true\")\n\
         end = shell(id = \"end\", cmd = \"true\")\nfor i in range({width}):\n    start >> shell(id = \"t%d\" % i, cmd = \"true\") >> end\n"
    )
}

/// Times trigger → success of `dag_id`, `runs` times, on one running node; with the timeline
/// of each counted run.
async fn trigger_to_success(
    dag_text: &str,
    dag_id: &str,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<remote::Timeline>)> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(dags.join("d.star"), dag_text)?;
    let cfg = config(dir.path(), &dags, None);
    let node = Node::start(
        &cfg,
        Roles {
            http: false,
            ..Roles::STANDALONE
        },
    )
    .await?;
    let mut times = Vec::new();
    let mut timelines = Vec::new();
    for i in 0..runs + 1 {
        let req = TriggerRequest {
            dag_id: dag_id.into(),
            run_id: Some(format!("bench{i}")),
            ..Default::default()
        };
        let start = Instant::now();
        let (_, queued) = trigger(&node.store, &req).await?;
        if queued {
            node.events.work_queued();
        }
        let run = node.wait_run(dag_id, &format!("bench{i}")).await?;
        let took = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            run.state == tern_core::RunState::Success,
            "run {i} ended {}",
            run.state
        );
        // The first run warms caches (spec cache, page cache); it is not counted.
        if i > 0 {
            times.push(took);
            timelines.push(remote::timeline(&node.store, &run).await?);
        }
    }
    node.shutdown().await;
    Ok((times, timelines))
}

fn write_many(dir: &Path, files: usize, tasks: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in 0..files {
        let mut s = format!("d = dag(id = \"dag_{f}\", schedule = \"@daily\", start_date = \"2026-01-01\")\nprev = None\n");
        s.push_str(&format!(
            "for i in range({tasks}):\n    t = shell(id = \"task_%d\" % i, cmd = \"echo {{{{ ds }}}}\")\n    if prev:\n        prev >> t\n    prev = t\n"
        ));
        std::fs::write(dir.join(format!("dag_{f}.star")), s)?;
    }
    Ok(())
}

/// Wall time of `tern dags list` on a fresh data folder: start, migrate, load, store, list.
fn parse_listing(tern: &Path, files: usize, tasks: usize, runs: usize) -> anyhow::Result<Vec<f64>> {
    listing(tern, files, tasks, runs, true)
}

/// Wall time of `tern dags list` over a DAG folder the data folder already holds (what a user
/// types again and again): start, see the folder is as loaded, list.
fn stored_listing(
    tern: &Path,
    files: usize,
    tasks: usize,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut times = listing(tern, files, tasks, runs + 1, false)?;
    // The first listing loads the folder.
    times.remove(0);
    Ok(times)
}

/// `tern dags list` `runs` times over `files` DAG files of `tasks` tasks, each on a fresh data
/// folder or all on one.
fn listing(
    tern: &Path,
    files: usize,
    tasks: usize,
    runs: usize,
    fresh: bool,
) -> anyhow::Result<Vec<f64>> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    write_many(&dags, files, tasks)?;
    let mut times = Vec::new();
    for i in 0..runs {
        let home = dir
            .path()
            .join(format!("home{}", if fresh { i } else { 0 }));
        let start = Instant::now();
        let out = Command::new(tern)
            .args(["dags", "list", "--output", "json", "--home"])
            .arg(&home)
            .arg("--dags")
            .arg(&dags)
            .output()
            .with_context(|| format!("running {}", tern.display()))?;
        let took = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        anyhow::ensure!(
            listed.as_array().map(|a| a.len()) == Some(files),
            "not all DAGs listed"
        );
        times.push(took);
    }
    Ok(times)
}

fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .context("no Pss line")
}

/// The processes whose parent is `pid` (a `tern` process's guardian, a running task).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(") ")?;
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (ppid == pid).then(|| head.split(' ').next()?.parse().ok())?
        })
        .collect()
}

/// PSS of process `pid` and its children (its guardian counts: it is part of what runs).
pub(crate) fn family_pss_kib(pid: u32) -> anyhow::Result<u64> {
    let mut total = pss_kib(pid)?;
    for child in children_of(pid) {
        total += pss_kib(child).unwrap_or(0);
    }
    Ok(total)
}

/// When `memory` reads an idle `standalone`'s memory, after its start.
const IDLE_MEMORY_AT: Duration = Duration::from_secs(30);

fn idle_memory(tern: &Path, runs: usize) -> anyhow::Result<Vec<f64>> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    write_many(&dags, 200, 10)?;
    let mut out = Vec::new();
    for i in 0..runs {
        let home = dir.path().join(format!("home{i}"));
        let mut child = Command::new(tern)
            .args(["standalone", "--port", "0", "--no-examples", "--home"])
            .arg(&home)
            .arg("--dags")
            .arg(&dags)
            .stderr(std::process::Stdio::null())
            .spawn()?;
        // Let it load, schedule the due runs of the 200 DAGs, run them (about 3 s), and idle
        // long enough that its periodic work (the folder's scan every 5 s, housekeeping) has
        // run several times since it last let go of its code (2 s after the runs' end).
        std::thread::sleep(IDLE_MEMORY_AT);
        let pss = family_pss_kib(child.id())?;
        child.kill()?;
        child.wait()?;
        out.push(pss as f64 / 1024.0);
    }
    Ok(out)
}

pub(crate) fn cpu_ms() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage writes into the struct we pass.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
        total += ms(u.ru_utime) + ms(u.ru_stime);
    }
    total
}

/// CPU time used so far by the machine's PostgreSQL, in ms: every `postgres` process's own
/// and, for the postmaster, its reaped backends' (`/proc/PID/stat` utime, stime, cutime,
/// cstime). Counted beside [`cpu_ms`] so a PostgreSQL figure counts every process.
pub(crate) fn postgres_cpu_ms() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut total = 0u64;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the fields after the comm's closing parenthesis.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime, stime, cutime, cstime are fields 14–17 of the line: 11–14 after the comm.
        total += fields
            .get(11..15)
            .into_iter()
            .flatten()
            .filter_map(|f| f.parse::<u64>().ok())
            .sum::<u64>();
    }
    total as f64 * 1000.0 / ticks
}

/// The long chaos suite: 50 kills of `standalone` on SQLite, then 50 kills of one of two
/// servers on PostgreSQL, each under 1,000 tasks (see `tern_testkit::chaos`).
async fn chaos(tern: &Path) -> anyhow::Result<()> {
    use tern_testkit::chaos::Chaos;
    let base = Chaos {
        tern: tern.to_path_buf(),
        database_url: None,
        servers: 1,
        rounds: 50,
        // Enough work that all 50 kills land while tasks run (about a minute on one server).
        runs: 30,
        tasks_per_run: 100,
        max_down: Duration::from_millis(500),
        seed: 1,
        object_store_logs: false,
    };
    let sqlite = base.clone();
    let report = tokio::task::spawn_blocking(move || sqlite.run()).await?;
    println!("chaos sqlite, standalone:       {}", report.summary());
    for p in &report.problems {
        println!("  problem: {p}");
    }
    let db = tern_testkit::TestDb::postgres().await;
    let pg = Chaos {
        database_url: Some(db.url.clone()),
        servers: 2,
        runs: 60,
        max_down: Duration::from_secs(8),
        seed: 2,
        // The production set-up: no shared disk, logs in an object store.
        object_store_logs: true,
        ..base
    };
    let report = tokio::task::spawn_blocking(move || pg.run()).await?;
    println!("chaos postgres, two servers:    {}", report.summary());
    for p in &report.problems {
        println!("  problem: {p}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // As `tern` does before its runtime starts: the in-process agent's tries are watched by a
    // guardian process, so they start without a fork of this process.
    // SAFETY: no thread has started yet.
    unsafe { tern_worker::guardian::start() }?;
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench());
    scratch::remove_all();
    outcome
}

async fn bench() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 3 && argv[1] == export::S3_SERVER_ARG {
        return export::serve_s3(Path::new(&argv[2])).await;
    }
    let args = Args::parse();
    let all = [
        "floor",
        "chain40",
        "fan200",
        "parse",
        "memory",
        "throughput",
        "claimlatency",
        "remotechain40",
        "remotefan200",
        "agents1000",
        "ui",
        "empty",
        "wide",
        "mapped",
        "idlecpu",
        "cli",
        "servers",
        "dagwatch",
    ];
    let chosen: Vec<&str> = if args.workloads.is_empty() {
        all.to_vec()
    } else {
        args.workloads.iter().map(String::as_str).collect()
    };
    for w in chosen {
        match w {
            "roundtrip" => {
                let dir = crate::scratch::folder()?;
                let store =
                    tern_store::Store::open(&format!("sqlite://{}/t.db", dir.path().display()))
                        .await?;
                let mut a = Vec::new();
                let mut b = Vec::new();
                for _ in 0..args.runs {
                    a.push(store.round_trips(1000).await?.as_secs_f64() * 1000.0);
                    b.push(store.round_trips_in_tx(1000).await?.as_secs_f64() * 1000.0);
                }
                summary("sqlite SELECT 1 via pool", "us", a);
                summary("sqlite SELECT 1 in a tx", "us", b);
                for idle_ms in [0, 1, 2] {
                    let (stmt, begin, commit) = store
                        .round_trips_after_idle(300, 12, Duration::from_millis(idle_ms))
                        .await?;
                    println!(
                        "sqlite, transactions {idle_ms} ms apart: SELECT 1 {:.1} us, BEGIN IMMEDIATE {:.1} us, COMMIT {:.1} us (medians)",
                        stmt.as_secs_f64() * 1e6,
                        begin.as_secs_f64() * 1e6,
                        commit.as_secs_f64() * 1e6
                    );
                }
            }
            "exec" => summary("executor: one true task", "ms", exec_only(args.runs).await),
            w if w.starts_with("export1m") || w.starts_with("export10m") => {
                let (rows, runs) = if w.starts_with("export10m") {
                    (10_000_000, args.runs.min(3))
                } else {
                    (1_000_000, args.runs.min(5))
                };
                let target = if w.ends_with("-s3") {
                    export::Target::S3
                } else {
                    export::Target::Folder
                };
                export::export(&args.tern, rows, runs, w.contains("-parquet"), target)?
            }
            "chain40" => {
                let (times, tls) = trigger_to_success(&chain_dag(40), "chain40", args.runs).await?;
                let floor = floor::median_secs(args.runs, || floor::sequential(40));
                scale::summary_vs("chain40 trigger->success", "s", times, floor);
                remote::print_timelines(&tls, true);
            }
            "fan200" => {
                let (times, tls) = trigger_to_success(&fan_dag(200), "fan200", args.runs).await?;
                // 1 → 200 at the DAG's max_active_tasks (32) → 1.
                let floor = floor::median_secs(args.runs, || {
                    floor::sequential(1) + floor::parallel(200, 32) + floor::sequential(1)
                });
                scale::summary_vs("fan200 trigger->success", "s", times, floor);
                remote::print_timelines(&tls, false);
            }
            "parse" => {
                // (label, DAG files, tasks each, a fresh data folder per listing)
                for (label, files, tasks, fresh) in [
                    ("parse200 start->listed", 200, 10, true),
                    ("parse1000 start->listed", 1000, 10, true),
                    ("dags list, 1 file stored", 1, 10, false),
                    ("dags list, 1000 files stored", 1000, 10, false),
                    ("parse 1 DAG x 10k tasks", 1, 10_000, true),
                ] {
                    let times = if fresh {
                        parse_listing(&args.tern, files, tasks, args.runs)?
                    } else {
                        stored_listing(&args.tern, files, tasks, args.runs)?
                    };
                    summary(label, "s", times);
                }
            }
            "memory" => {
                println!(
                    "{}: {}",
                    args.tern.display(),
                    text_order::layout(&args.tern)?
                );
                summary(
                    "idle PSS, 200 DAGs",
                    "MB",
                    idle_memory(&args.tern, args.runs.min(5))?,
                )
            }
            "throughput" => {
                let (mut rates, mut cpus) = (Vec::new(), Vec::new());
                for _ in 0..args.runs.min(5) {
                    let (rate, cpu) = scale::throughput_of(None, scale::SHELL_TASK).await?;
                    rates.push(rate);
                    cpus.push(cpu);
                }
                let floor_rate = floor::parallel_rate(10_000);
                scale::summary_vs("throughput sqlite 10k", "tasks/s", rates, floor_rate);
                summary("  CPU per task (agent+children)", "ms", cpus);
                let (mut rates, mut cpus) = (Vec::new(), Vec::new());
                for _ in 0..args.runs.min(5) {
                    let db = tern_testkit::TestDb::postgres().await;
                    let (rate, cpu) =
                        scale::throughput_of(Some(db.url.clone()), scale::SHELL_TASK).await?;
                    scratch::keep(db);
                    rates.push(rate);
                    cpus.push(cpu);
                }
                scale::summary_vs("throughput postgres 10k", "tasks/s", rates, floor_rate);
                summary("  CPU per task (agent+children+PostgreSQL)", "ms", cpus);
                let _ = &args.pg;
            }
            "claimlatency" => remote::claim_latency(&args.tern, 100).await?,
            "remotechain40" => {
                let (times, tls) = remote::remote_trigger_to_success(
                    &args.tern,
                    &remote::on_site(&chain_dag(40)),
                    "chain40",
                    args.runs,
                )
                .await?;
                summary("remotechain40 trigger->success", "s", times);
                remote::print_timelines(&tls, true);
            }
            "remotefan200" => {
                let (times, tls) = remote::remote_trigger_to_success(
                    &args.tern,
                    &remote::on_site(&fan_dag(200)),
                    "fan200",
                    args.runs,
                )
                .await?;
                summary("remotefan200 trigger->success", "s", times);
                remote::print_timelines(&tls, false);
            }
            "agents1000" => remote::agents1000(&args.tern, 1000, 100, 20, 3).await?,
            "ui" => ui::ui(args.runs).await?,
            "floor" => floor::report(&args.tern, args.runs),
            "empty" => scale::empty(args.runs.min(5)).await?,
            "wide" => {
                // TERN_BENCH_WIDE=N: another width (to see how the cost grows with it).
                let n = std::env::var("TERN_BENCH_WIDE")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10_000);
                scale::wide(args.runs.min(3), n).await?
            }
            "mapped" => {
                // TERN_BENCH_MAPPED=N: another length of the mapped list.
                let n = std::env::var("TERN_BENCH_MAPPED")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1_000);
                scale::mapped(args.runs.min(5), n).await?
            }
            "idlecpu" => scale::idle_cpu(&args.tern, args.runs.min(3)).await?,
            "cli" => scale::cli(&args.tern, args.runs).await?,
            "servers" => servers::servers(&args.tern, args.runs).await?,
            "dagwatch" => scale::dag_watch(&args.tern, args.runs.max(10)).await?,
            // Not in the default set (it takes minutes): `bench/run chaos`.
            "chaos" => chaos(&args.tern).await?,
            "text-order" => text_order::generate(&args.tern)?,
            other => anyhow::bail!("unknown workload {other:?}; choose from {all:?}"),
        }
    }
    Ok(())
}

/// Diagnostic: the executor alone, `true` 100 times in a row.
pub async fn exec_only(runs: usize) -> Vec<f64> {
    use tern_core::{TaskKind, TaskSpec};
    struct Null;
    impl tern_worker::LogSink for Null {
        fn line(&self, _: &str) {}
    }
    let t = chrono::Utc::now();
    let a = tern_protocol::Assignment {
        ti_id: 1,
        attempt: "a".into(),
        dag_id: "d".into(),
        run_id: "r".into(),
        task_id: "t".into(),
        try_number: 1,
        max_tries: 1,
        task: TaskSpec::new(
            "t",
            TaskKind::Shell {
                cmd: "true".into(),
                env: Default::default(),
                cwd: None,
                sandbox: None,
            },
        ),
        context: tern_protocol::RunContext {
            logical_date: t,
            data_interval_start: t,
            data_interval_end: t,
            run_type: "manual".into(),
            params: Default::default(),
            conf: serde_json::json!({}),
            outputs: Default::default(),
            timezone: "UTC".into(),
        },
        lease_ms: 30_000,
        connections: Default::default(),
        external_state: None,
        variables: Default::default(),
        map_index: None,
        map_values: Default::default(),
    };
    let opts = tern_worker::ExecOptions::default();
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut out = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        for _ in 0..100 {
            let c = tern_worker::execute(&a, &opts, &Null, &cancel).await;
            assert!(c.success);
        }
        out.push(start.elapsed().as_secs_f64() * 10.0);
    }
    out
}
