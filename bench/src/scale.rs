//! Workloads of the speed issue, each reported beside its floor ([`crate::floor`]) measured in
//! the same run:
//!
//! - `empty`: 10,000 `empty` tasks (no process) in 100 runs × 100, SQLite and PostgreSQL;
//! - `wide`: one DAG `root >> 10,000 tasks` (`empty`, then shell `true`): the trigger call,
//!   trigger → success, and root's end → the first child claimed;
//! - `mapped`: a shell task mapped over a 1,000-element list published by its upstream task at
//!   run time, beside 1,000 declared shell tasks after the same root (`TERN_BENCH_MAPPED=N`);
//! - `idlecpu`: a `tern server` process with 50,000 task instances that wait on nothing that
//!   changes (their queue has no agent): its CPU over 10 s;
//! - `cli`: what a user types, `tern dags trigger --wait` against `tern standalone`, of chain40
//!   and of a one-task DAG.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tern_server::trigger::{trigger, TriggerRequest};
use tern_server::{Node, Roles};

use crate::{config, floor, summary};

/// The workloads' task expressions (`i` is the task's number).
pub const EMPTY_TASK: &str = "empty(id = \"t%d\" % i)";
pub const SHELL_TASK: &str = "shell(id = \"t%d\" % i, cmd = \"true\")";

/// Prints `xs` and, beside the median, its ratio to `floor` (same unit).
pub fn summary_vs(name: &str, unit: &str, xs: Vec<f64>, floor: f64) {
    let mut sorted = xs.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let med = sorted[sorted.len() / 2];
    summary(name, unit, xs);
    println!(
        "{:<28} floor {floor:>9.3} {unit}  median / floor = {:.2}",
        "",
        med / floor
    );
}

/// 10,000 tasks of `task` (a task expression taking `"t%d" % i` as id): 100 runs of a 100-task
/// DAG, all triggered at once. Returns tasks per second and the CPU per task of this process
/// and its children (the agent and the tasks' processes) and, on PostgreSQL, of the database
/// server's processes, in ms.
pub async fn throughput_of(db_url: Option<String>, task: &str) -> anyhow::Result<(f64, f64)> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(
        dags.join("t.star"),
        format!("d = dag(id = \"tp\", max_active_runs = 100, max_active_tasks = 1000)\nfor i in range(100):\n    {task}\n"),
    )?;
    let counts_postgres = db_url.is_some();
    let cfg = config(dir.path(), &dags, db_url);
    let node = Node::start(
        &cfg,
        Roles {
            http: false,
            ..Roles::STANDALONE
        },
    )
    .await?;
    let all_cpu_ms = move || {
        crate::cpu_ms()
            + if counts_postgres {
                crate::postgres_cpu_ms()
            } else {
                0.0
            }
    };
    let cpu0 = all_cpu_ms();
    let start = Instant::now();
    for i in 0..100 {
        let req = TriggerRequest {
            dag_id: "tp".into(),
            run_id: Some(format!("tp{i}")),
            ..Default::default()
        };
        trigger(&node.store, &req).await?;
        node.events.work_queued();
    }
    for i in 0..100 {
        let run = node.wait_run("tp", &format!("tp{i}")).await?;
        anyhow::ensure!(run.state == tern_core::RunState::Success);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = all_cpu_ms() - cpu0;
    node.shutdown().await;
    Ok((10_000.0 / secs, cpu / 10_000.0))
}

/// `empty`: 10,000 `empty` tasks on SQLite and on PostgreSQL.
pub async fn empty(runs: usize) -> anyhow::Result<()> {
    for pg in [false, true] {
        let mut rates = Vec::new();
        for _ in 0..runs {
            let db = if pg {
                Some(tern_testkit::TestDb::postgres().await)
            } else {
                None
            };
            let (rate, _) = throughput_of(db.as_ref().map(|d| d.url.clone()), EMPTY_TASK).await?;
            crate::scratch::keep(db);
            rates.push(rate);
        }
        let name = if pg {
            "empty 10k postgres"
        } else {
            "empty 10k sqlite"
        };
        summary(name, "tasks/s", rates);
    }
    Ok(())
}

/// `wide`: one run of `root >> N tasks` of `kind`, `runs` times (a fresh run each time).
pub async fn wide(runs: usize, n: usize) -> anyhow::Result<()> {
    for (kind, task) in [("empty", EMPTY_TASK), ("shell", SHELL_TASK)] {
        let source = format!(
            "d = dag(id = \"wide\", max_active_tasks = 100000)\nroot = shell(id = \"root\", cmd = \"true\")\n\
             for i in range({n}):\n    root >> {task}\n"
        );
        fan_out(runs, n, &format!("wide {n} {kind}"), &source).await?;
    }
    Ok(())
}

/// The root of the `mapped` workload's DAGs: it publishes the list `[0, …, n-1]`.
fn list_root(n: usize) -> String {
    // The command is `printf 'items=[%s]\n' "$(seq -s, 0 N-1)" >> "$TERN_OUTPUT"`.
    format!(
        r#"root = shell(id = "root", cmd = "printf 'items=[%s]\\n' \"$(seq -s, 0 {})\" >> \"$TERN_OUTPUT\"")
"#,
        n - 1
    )
}

/// `mapped`: a shell task mapped over a list of `n` elements its upstream task publishes at run
/// time, beside the same `n` shell tasks declared one by one after the same root, in the same
/// run: the per-task cost of mapping (expansion included) against declared tasks.
pub async fn mapped(runs: usize, n: usize) -> anyhow::Result<()> {
    let header = "d = dag(id = \"wide\", max_active_tasks = 100000)\n";
    let declared = format!(
        "{header}{}for i in range({n}):\n    root >> {SHELL_TASK}\n",
        list_root(n)
    );
    let mapped = format!(
        "{header}{}shell(id = \"m\", cmd = \"true\", expand = {{\"i\": root.output(\"items\")}})\n",
        list_root(n)
    );
    fan_out(runs, n, &format!("declared {n} shell"), &declared).await?;
    fan_out(runs, n, &format!("mapped {n} shell"), &mapped).await?;
    Ok(())
}

/// Runs the DAG `wide` of `source` (a root task and `n` tasks after it) `runs` times, each a
/// fresh run, and prints the trigger call, trigger → success, tasks per second and the root's
/// end → the first child claimed, named `label`.
async fn fan_out(runs: usize, n: usize, label: &str, source: &str) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(dags.join("w.star"), source)?;
    let mut cfg = config(dir.path(), &dags, None);
    // The agent's concurrency of `throughput` and of a default install (32), whose rate this
    // is compared with; TERN_BENCH_CONCURRENCY=N: another (4, the parallel floor's width, was
    // this workload's until the seventeenth round of BENCHMARKS.md).
    if let Some(n) = std::env::var("TERN_BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.agent.concurrency = n;
    }
    cfg.scheduler.max_map_length = cfg.scheduler.max_map_length.max(n);
    let node = Node::start(
        &cfg,
        Roles {
            http: false,
            ..Roles::STANDALONE
        },
    )
    .await?;
    let (mut trig, mut total, mut gap, mut rate) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        let req = TriggerRequest {
            dag_id: "wide".into(),
            run_id: Some(format!("w{i}")),
            ..Default::default()
        };
        let start = Instant::now();
        let (_, queued) = trigger(&node.store, &req).await?;
        trig.push(start.elapsed().as_secs_f64() * 1000.0);
        if queued {
            node.events.work_queued();
        }
        let run = node.wait_run("wide", &format!("w{i}")).await?;
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            run.state == tern_core::RunState::Success,
            "{label} run {i} ended {}",
            run.state
        );
        total.push(secs);
        rate.push(n as f64 / secs);
        let tis = node.store.task_instances(run.pk).await?;
        anyhow::ensure!(tis.len() == n + 1, "{label}: {} instances", tis.len());
        let root_end = tis
            .iter()
            .find(|t| t.task_id == "root")
            .and_then(|t| t.ended_at)
            .context("root has no end")?;
        let first_child = tis
            .iter()
            .filter(|t| t.task_id != "root")
            .filter_map(|t| t.started_at)
            .min()
            .context("no child started")?;
        gap.push((first_child - root_end).num_milliseconds() as f64);
    }
    node.shutdown().await;
    summary(&format!("{label}: trigger call"), "ms", trig);
    summary(&format!("{label}: trigger->success"), "s", total);
    summary(&format!("{label}: tasks/s"), "tasks/s", rate);
    summary(&format!("{label}: root end->1st claim"), "ms", gap);
    Ok(())
}

/// Runs `tern ARGS --home HOME --dags DAGS` and checks it succeeded.
fn tern_cmd(tern: &Path, home: &Path, dags: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(tern)
        .args(args)
        .arg("--home")
        .arg(home)
        .arg("--dags")
        .arg(dags)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", tern.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "tern {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `idlecpu`: 5 runs × 10,000 tasks on a queue no agent serves, then `tern server`'s CPU.
pub async fn idle_cpu(tern: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
    let home = dir.path().join("home");
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(
        dags.join("idle.star"),
        "d = dag(id = \"idle\", max_active_runs = 10)\nfor i in range(10000):\n    shell(id = \"t%d\" % i, cmd = \"true\", queue = \"nowhere\")\n",
    )?;
    for i in 0..5 {
        tern_cmd(
            tern,
            &home,
            &dags,
            &["dags", "trigger", "idle", "--run-id", &format!("idle{i}")],
        )?;
    }
    let server = crate::remote::ServerProc::start(tern, &home, &dags).await?;
    let waiting: i64 = {
        let runs = server.store.list_runs(Some("idle"), None, 10).await?;
        let mut n = 0;
        for r in runs {
            n += server.store.task_instances(r.pk).await?.len() as i64;
        }
        n
    };
    anyhow::ensure!(
        waiting == 50_000,
        "expected 50,000 waiting instances, found {waiting}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut cpu = Vec::new();
    for _ in 0..runs {
        let c0 = crate::remote::proc_cpu_s(server.pid())?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        cpu.push(
            (crate::remote::proc_cpu_s(server.pid())? - c0) / t0.elapsed().as_secs_f64() * 100.0,
        );
    }
    summary("idle server, 50k waiting: CPU", "% core", cpu);
    Ok(())
}

/// `cli`: `tern dags trigger --wait` against `tern standalone`, as a user types it.
pub async fn cli(tern: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
    let home = dir.path().join("home");
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(dags.join("chain40.star"), crate::chain_dag(40))?;
    std::fs::write(
        dags.join("one.star"),
        "d = dag(id = \"one\")\nshell(id = \"t\", cmd = \"true\")\n",
    )?;
    let _server = crate::remote::ServerProc::start(tern, &home, &dags).await?;
    for (dag, tasks) in [("one", 1), ("chain40", 40)] {
        // One warm-up run, not counted.
        tern_cmd(tern, &home, &dags, &["dags", "trigger", dag, "--wait"])?;
        let mut times = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            tern_cmd(tern, &home, &dags, &["dags", "trigger", dag, "--wait"])?;
            times.push(start.elapsed().as_secs_f64());
        }
        let floor = floor::median_secs(runs, || floor::sequential(tasks) + floor::cli_start(tern));
        summary_vs(&format!("cli trigger --wait {dag}"), "s", times, floor);
    }
    Ok(())
}

/// `dagwatch`: a DAG file written into the folder of a running `tern server` (scan interval an
/// hour: only its folder watch can see the change) → the new DAG version in the database, next
/// to a folder of 200 other DAG files.
pub async fn dag_watch(tern: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
    let home = dir.path().join("home");
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    for i in 0..200 {
        std::fs::write(
            dags.join(format!("d{i}.star")),
            format!("dag(id = \"d{i}\")\nfor j in range(10):\n    shell(id = \"t%d\" % j, cmd = \"true\")\n"),
        )?;
    }
    let server = crate::remote::ServerProc::start(tern, &home, &dags).await?;
    let mut times = Vec::new();
    for n in 1..=runs + 1 {
        let start = Instant::now();
        std::fs::write(
            dags.join("watched.star"),
            format!("dag(id = \"watched\")\nshell(id = \"v{n}\", cmd = \"true\")\n"),
        )?;
        loop {
            if let Ok(d) = server.store.get_dag("watched").await {
                if d.version == n as i64 {
                    break;
                }
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the change was never seen"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The first write also creates the DAG: not counted.
        if n > 1 {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    summary("DAG file write → new version", "ms", times);
    Ok(())
}
