//! `servers`: one, two and three `tern server` processes on one PostgreSQL, each with its own
//! data folder and task logs in an object store (a `file://` folder), as issue 13 deploys them:
//! - the trigger latency: a run of a one-task DAG created by another process (what the CLI or
//!   any server's API does) → its task claimed by some server (the `started_at` the claim
//!   writes), 20 times;
//! - the throughput: 10,000 shell `true` tasks (100 runs × 100), all triggered at once, beside
//!   the machine's parallel spawn floor measured in the same run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tern_server::trigger::{trigger, TriggerRequest};
use tern_store::Store;

use crate::{floor, scale::summary_vs, summary};

/// A `tern server` process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    tern: &Path,
    home: &Path,
    dags: &Path,
    db: &str,
    objects: &Path,
) -> anyhow::Result<Server> {
    std::fs::create_dir_all(home)?;
    std::fs::write(
        home.join("tern.toml"),
        format!(
            "[scheduler]\ndag_scan_interval = \"1h\"\n\n[agent]\nconcurrency = 32\n\n[logs]\nstore = \"file://{}\"\n",
            objects.display()
        ),
    )?;
    let child = Command::new(tern)
        .args(["server", "--port", "0", "--home"])
        .arg(home)
        .arg("--dags")
        .arg(dags)
        .arg("--database-url")
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", tern.display()))?;
    Ok(Server(child))
}

async fn wait_for_dags(store: &Store) -> anyhow::Result<()> {
    let start = Instant::now();
    while store.get_dag("tp").await.is_err() || store.get_dag("one").await.is_err() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the servers never loaded the DAGs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_success(store: &Store, dag: &str, mut runs: Vec<String>) -> anyhow::Result<()> {
    let start = Instant::now();
    while !runs.is_empty() {
        let mut left = Vec::new();
        for r in runs {
            let run = store.get_run(dag, &r).await?;
            match run.state {
                tern_core::RunState::Success => {}
                tern_core::RunState::Failed => anyhow::bail!("run {r} of {dag} failed"),
                _ => left.push(r),
            }
        }
        runs = left;
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "runs of {dag} never ended"
        );
        if !runs.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// One measurement with `n` servers: (trigger → claimed in ms, 20 of them; tasks/s).
async fn once(tern: &Path, n: usize) -> anyhow::Result<(Vec<f64>, f64)> {
    let db = tern_testkit::TestDb::postgres().await;
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    let objects = dir.path().join("objects");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(
        dags.join("tp.star"),
        format!(
            "d = dag(id = \"tp\", max_active_runs = 100, max_active_tasks = 1000)\nfor i in range(100):\n    {}\n",
            crate::scale::SHELL_TASK
        ),
    )?;
    std::fs::write(
        dags.join("one.star"),
        "d = dag(id = \"one\")\nshell(id = \"t\", cmd = \"true\")\n",
    )?;
    let servers = (0..n)
        .map(|i| {
            start(
                tern,
                &dir.path().join(format!("home{i}")),
                &dags,
                &db.url,
                &objects,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = Store::open(&db.url).await?;
    wait_for_dags(&store).await?;
    let mut latencies = Vec::new();
    for i in 0..21 {
        let run_id = format!("one{i}");
        let asked = chrono::Utc::now();
        let req = TriggerRequest {
            dag_id: "one".into(),
            run_id: Some(run_id.clone()),
            ..Default::default()
        };
        let (run, _) = trigger(&store, &req).await?;
        let started = loop {
            let ti = store.task_instance(run.pk, "t").await?;
            if let Some(at) = ti.started_at {
                break at;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        };
        wait_success(&store, "one", vec![run_id]).await?;
        // The first one warms the servers up (connections, caches): not counted.
        if i > 0 {
            latencies.push((started - asked).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    let begin = Instant::now();
    let mut runs = Vec::new();
    for i in 0..100 {
        let req = TriggerRequest {
            dag_id: "tp".into(),
            run_id: Some(format!("tp{i}")),
            ..Default::default()
        };
        trigger(&store, &req).await?;
        runs.push(format!("tp{i}"));
    }
    wait_success(&store, "tp", runs).await?;
    let rate = 10_000.0 / begin.elapsed().as_secs_f64();
    drop(servers);
    store.close().await;
    crate::scratch::keep(db);
    Ok((latencies, rate))
}

pub async fn servers(tern: &Path, runs: usize) -> anyhow::Result<()> {
    let floor_rate = floor::parallel_rate(10_000);
    for n in 1..=3 {
        let (mut latencies, mut rates) = (Vec::new(), Vec::new());
        for _ in 0..runs.clamp(1, 3) {
            let (l, r) = once(tern, n).await?;
            latencies.extend(l);
            rates.push(r);
        }
        summary(
            &format!("{n} server(s): trigger → claimed"),
            "ms",
            latencies,
        );
        summary_vs(
            &format!("{n} server(s): throughput 10k"),
            "tasks/s",
            rates,
            floor_rate,
        );
    }
    Ok(())
}
