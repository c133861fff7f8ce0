//! Remote-agent workloads: the agent gateway over HTTP on loopback, SQLite.
//!
//! - `claimlatency`: runs of `a >> b` (both on the site queue) triggered one after another,
//!   served by one `tern agent` process; for `a` (queued by the trigger) and `b` (queued by
//!   `a`'s result, inside the control plane) it reports queued → started, from the store (epoch
//!   ms) and from the agent's side (`date +%s%N` written by the task). Twice: with a `tern
//!   server` process and the runs created from this process (as `tern dags trigger` does), and
//!   with the control plane in this process, the trigger raising its "work queued" signal;
//! - `remotechain40`, `remotefan200`: the chain40 / fan200 DAGs with every task on the site
//!   queue, run by one `tern agent` process (default concurrency) against a control plane in
//!   this process (so the trigger wakes the gateway as it does for chain40 / fan200);
//! - `agents1000`: a `tern server` process and 1,000 simulated agents in this process (one
//!   `HttpControlPlane` each, long-polling `claim`; a task "runs" by being completed at once):
//!   the server's CPU and memory idle, and while 2,000 one-task runs, then 2 runs of 1,000
//!   tasks, go through.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tern_server::trigger::{trigger, TriggerRequest};
use tern_server::{Node, Roles};
use tern_store::Store;
use tern_worker::http_transport::{activate, ActivateRequest, HttpControlPlane};
use tern_worker::ControlPlane;

/// The site every single-site workload routes its tasks to.
const SITE: &str = "bench";

/// Settings of the control planes started here: no rescans of the DAG folder during a
/// measurement (as in the other workloads).
const SERVER_TOML: &str = "[scheduler]\ndag_scan_interval = \"1h\"\n";

/// A `tern server` process on a free loopback port; killed when dropped.
pub struct ServerProc {
    child: Child,
    pub url: String,
    pub store: Store,
}

impl ServerProc {
    /// Starts `tern server --port 0` on `home` / `dags` and opens the same SQLite database.
    pub async fn start(tern: &Path, home: &Path, dags: &Path) -> anyhow::Result<ServerProc> {
        use std::io::{BufRead, BufReader};
        std::fs::create_dir_all(home)?;
        std::fs::write(home.join("tern.toml"), SERVER_TOML)?;
        let mut child = Command::new(tern)
            .args(["server", "--port", "0", "--home"])
            .arg(home)
            .arg("--dags")
            .arg(dags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", tern.display()))?;
        let mut reader = BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        let url = loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                let _ = child.kill();
                anyhow::bail!("tern server exited before printing its address");
            }
            if let Some(rest) = line.trim().strip_prefix("http:") {
                break rest.trim().trim_end_matches("/health").to_string();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let cfg = tern_server::Config {
            home: home.to_path_buf(),
            ..Default::default()
        };
        let store = Store::open(&cfg.database_url()).await?;
        Ok(ServerProc { child, url, store })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tern agent` process; killed when dropped.
pub struct AgentProc(Child);

impl AgentProc {
    pub fn start(tern: &Path, url: &str, code: &str, dir: &Path) -> anyhow::Result<AgentProc> {
        Ok(AgentProc(
            Command::new(tern)
                .args(["agent", "--server", url, "--activation", code, "--dir"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("running {} agent", tern.display()))?,
        ))
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as i64
}

/// A small deterministic generator for the pauses between triggers (xorshift64).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Prints p50 / p90 / max (nearest rank).
pub fn percentiles(name: &str, unit: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = |q: f64| xs[((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1];
    println!(
        "{name:<36} p50 {:>8.2} {unit}  p90 {:>8.2} {unit}  max {:>8.2} {unit}  min {:>7.2} {unit}  (n={})",
        rank(0.5),
        rank(0.9),
        xs[xs.len() - 1],
        xs[0],
        xs.len()
    );
}

/// An output value written as `key=NUMBER` (kept as a JSON number) or as a string.
fn output_i64(outputs: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<i64> {
    let v = outputs.get(key)?;
    v.as_i64().or_else(|| v.as_str()?.trim().parse().ok())
}

fn ms(t: Option<chrono::DateTime<chrono::Utc>>) -> anyhow::Result<i64> {
    Ok(t.context("missing timestamp")?.timestamp_millis())
}

/// Waits until run `run_id` of `dag_id` has finished, polling the store every 5 ms.
async fn poll_run(store: &Store, dag_id: &str, run_id: &str) -> anyhow::Result<tern_store::DagRun> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = store.get_run(dag_id, run_id).await?;
        if run.state.is_finished() {
            return Ok(run);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "run {run_id} did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const LATENCY_DAG: &str = r#"d = dag(id = "lat")
a = shell(id = "a", cmd = "echo start=$(date +%s%N) >> $TERN_OUTPUT; echo end=$(date +%s%N) >> $TERN_OUTPUT", queue = "site:bench")
b = shell(id = "b", cmd = "echo start=$(date +%s%N) >> $TERN_OUTPUT", queue = "site:bench")
a >> b
"#;

/// Latency samples of one `claimlatency` setting, in ms.
#[derive(Default)]
struct LatencySamples {
    a_store: Vec<f64>,
    a_agent: Vec<f64>,
    b_store: Vec<f64>,
    b_agent: Vec<f64>,
    trigger: Vec<f64>,
}

impl LatencySamples {
    fn print(self) {
        percentiles(
            "  a: queued -> claimed (store, ms res.)",
            "ms",
            self.a_store,
        );
        percentiles("  a: trigger commit -> a's `date`", "ms", self.a_agent);
        percentiles(
            "  b: queued -> claimed (store, ms res.)",
            "ms",
            self.b_store,
        );
        percentiles("  b: a's last `date` -> b's `date`", "ms", self.b_agent);
        percentiles("  trigger() call", "ms", self.trigger);
    }
}

/// Triggers `samples` runs of `lat` one after another (after a few unmeasured ones), each
/// after a random pause of up to `max_pause`; `signal` wakes the gateway when the control
/// plane runs in this process.
async fn latency_samples(
    store: &Store,
    signal: Option<&tern_server::events::Events>,
    poke_home: Option<&Path>,
    samples: usize,
    max_pause: Duration,
) -> anyhow::Result<LatencySamples> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = LatencySamples::default();
    let warmup = 3;
    for i in 0..samples + warmup {
        tokio::time::sleep(max_pause.mul_f64(rng.next_f64())).await;
        let run_id = format!("lat{i}");
        let req = TriggerRequest {
            dag_id: "lat".into(),
            run_id: Some(run_id.clone()),
            ..Default::default()
        };
        let before = Instant::now();
        let (run, queued) = trigger(store, &req).await?;
        // The run's tasks became queued when the trigger's transaction committed, just before
        // `trigger` returned (it reads the run back afterwards).
        let queued_ns = now_ns();
        let trigger_ms = before.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(queued, "the trigger queued nothing");
        if let Some(events) = signal {
            events.work_queued();
        }
        if let Some(home) = poke_home {
            tern_server::wake::poke(home);
        }
        let done = poll_run(store, "lat", &run_id).await?;
        anyhow::ensure!(
            done.state == tern_core::RunState::Success,
            "run {run_id} ended {}",
            done.state
        );
        if i < warmup {
            continue;
        }
        let tis = store.task_instances(run.pk).await?;
        let ti = |id: &str| tis.iter().find(|t| t.task_id == id).context("task missing");
        let (a, b) = (ti("a")?, ti("b")?);
        let outputs = store.run_outputs(run.pk).await?;
        let value = |task: &str, key: &str| {
            outputs
                .get(task)
                .and_then(|o| output_i64(o, key))
                .with_context(|| format!("output {task}.{key} missing"))
        };
        out.a_store
            .push((ms(a.started_at)? - ms(a.queued_at)?) as f64);
        out.a_agent
            .push((value("a", "start")? - queued_ns) as f64 / 1e6);
        out.b_store
            .push((ms(b.started_at)? - ms(b.queued_at)?) as f64);
        out.b_agent
            .push((value("b", "start")? - value("a", "end")?) as f64 / 1e6);
        out.trigger.push(trigger_ms);
    }
    Ok(out)
}

/// `claimlatency`: queued → started of remote tasks, `samples` runs one after another, with
/// the control plane as a `tern server` process and then in this process.
pub async fn claim_latency(tern: &Path, samples: usize) -> anyhow::Result<()> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(dags.join("lat.star"), LATENCY_DAG)?;

    // 1. `tern server` process; runs created from this process, as `tern dags trigger` does.
    // The pauses are random so that triggers fall at any point of the gateway's
    // cross-process poll, as a user's would, rather than locked to its phase.
    let cross = {
        let server = ServerProc::start(tern, &dir.path().join("home"), &dags).await?;
        let code = server
            .store
            .create_activation(SITE, &[], Duration::from_secs(600))
            .await?
            .code;
        let _agent = AgentProc::start(tern, &server.url, &code, &dir.path().join("agent"))?;
        // As `tern dags trigger` does, the trigger pokes the server of the data folder.
        latency_samples(
            &server.store,
            None,
            Some(&dir.path().join("home")),
            samples,
            Duration::from_secs(1),
        )
        .await?
    };

    // 2. The same control plane in this process: the trigger raises the in-process "work
    // queued" signal, as the scheduler's runs and every result do.
    let inproc = {
        let mut cfg = crate::config(&dir.path().join("home2"), &dags, None);
        cfg.server.bind = "127.0.0.1:0".into();
        let node = Node::start(&cfg, Roles::STANDALONE).await?;
        let url = format!("http://{}", node.http_addr.context("no HTTP address")?);
        let code = node
            .store
            .create_activation(SITE, &[], Duration::from_secs(600))
            .await?
            .code;
        let agent = AgentProc::start(tern, &url, &code, &dir.path().join("agent2"))?;
        let s = latency_samples(
            &node.store,
            Some(&node.events),
            None,
            samples,
            Duration::from_millis(100),
        )
        .await?;
        drop(agent);
        let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
        s
    };

    // What `sh -c 'echo $(date +%s%N)'` itself adds to the agent-side figures: spawn to the
    // time `date` reads.
    let mut spawn = Vec::new();
    for _ in 0..50 {
        let t0 = now_ns();
        let out = Command::new("sh")
            .args(["-c", "echo start=$(date +%s%N)"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let t: i64 = text.trim().trim_start_matches("start=").parse()?;
        spawn.push((t - t0) as f64 / 1e6);
    }
    println!("`tern server` process, runs triggered from another process (a: by the trigger, b: by a's result):");
    cross.print();
    println!("control plane in this process, the trigger signals the gateway:");
    inproc.print();
    percentiles("spawn `sh -c` -> its `date` (here)", "ms", spawn);
    Ok(())
}

/// Per-task timeline of one run from the store (ms resolution): mean span of a task
/// (claimed → result recorded), mean gap from a task's end to the next task's start (in start
/// order), and first claim → run end.
pub struct Timeline {
    pub span_ms: f64,
    pub gap_ms: f64,
    pub first_claim_to_end_s: f64,
}

pub async fn timeline(store: &Store, run: &tern_store::DagRun) -> anyhow::Result<Timeline> {
    let mut tis = store.task_instances(run.pk).await?;
    tis.sort_by_key(|t| t.started_at);
    let mut span = 0.0;
    let mut gap = 0.0;
    for (i, t) in tis.iter().enumerate() {
        span += (ms(t.ended_at)? - ms(t.started_at)?) as f64;
        if i > 0 {
            gap += (ms(t.started_at)? - ms(tis[i - 1].ended_at)?) as f64;
        }
    }
    let n = tis.len() as f64;
    Ok(Timeline {
        span_ms: span / n,
        gap_ms: gap / (n - 1.0).max(1.0),
        first_claim_to_end_s: (ms(run.ended_at)? - ms(tis[0].started_at)?) as f64 / 1000.0,
    })
}

/// Trigger → success of `dag_id`, every task on the site queue and run by one `tern agent`
/// process, against a control plane in this process. Returns the times and the timeline of
/// each counted run.
pub async fn remote_trigger_to_success(
    tern: &Path,
    dag_text: &str,
    dag_id: &str,
    runs: usize,
) -> anyhow::Result<(Vec<f64>, Vec<Timeline>)> {
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(dags.join("d.star"), dag_text)?;
    let mut cfg = crate::config(dir.path(), &dags, None);
    cfg.server.bind = "127.0.0.1:0".into();
    let node = Node::start(&cfg, Roles::STANDALONE).await?;
    let url = format!("http://{}", node.http_addr.context("no HTTP address")?);
    let code = node
        .store
        .create_activation(SITE, &[], Duration::from_secs(600))
        .await?
        .code;
    let agent = AgentProc::start(tern, &url, &code, &dir.path().join("agent"))?;
    let mut times = Vec::new();
    let mut timelines = Vec::new();
    for i in 0..runs + 1 {
        let run_id = format!("bench{i}");
        let req = TriggerRequest {
            dag_id: dag_id.into(),
            run_id: Some(run_id.clone()),
            ..Default::default()
        };
        let start = Instant::now();
        let (_, queued) = trigger(&node.store, &req).await?;
        if queued {
            node.events.work_queued();
        }
        let run = node.wait_run(dag_id, &run_id).await?;
        let took = start.elapsed().as_secs_f64();
        anyhow::ensure!(
            run.state == tern_core::RunState::Success,
            "run {i} ended {}",
            run.state
        );
        // The first run also waits for the agent to start and activate; it is not counted.
        if i > 0 {
            times.push(took);
            timelines.push(timeline(&node.store, &run).await?);
        }
    }
    drop(agent);
    // The HTTP server drains its connections on shutdown; do not wait on a stray long poll.
    let _ = tokio::time::timeout(Duration::from_secs(5), node.shutdown()).await;
    Ok((times, timelines))
}

/// CPU time (user + system) of process `pid` so far, in seconds.
pub(crate) fn proc_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime); `rest` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// (PSS of process `pid` and its children, RSS of `pid`) in MB.
fn mem_mb(pid: u32) -> anyhow::Result<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let kib: f64 = text
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} line"))?;
        Ok(kib / 1024.0)
    };
    // PSS with its guardian's (the pages they share are split between them).
    Ok((crate::family_pss_kib(pid)? as f64 / 1024.0, field("Rss:")?))
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// Raises the soft open-file limit to the hard one (inherited by the server we start).
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit / setrlimit read and write the struct we pass.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        if l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
        l.rlim_cur as u64
    }
}

/// Counters of the simulated agents.
#[derive(Default)]
struct SimStats {
    claims: AtomicU64,
    completed: AtomicU64,
    errors: AtomicU64,
}

/// One simulated agent: long-polls `claim` (25 s, up to 8 tasks, as `tern agent`) and
/// completes every task it gets at once, successfully.
async fn sim_agent(cp: HttpControlPlane, stats: Arc<SimStats>) {
    loop {
        match cp.claim(Duration::from_secs(25), 8).await {
            Ok(got) => {
                stats.claims.fetch_add(1, Ordering::Relaxed);
                for a in got {
                    let c = tern_protocol::Completion {
                        ti_id: a.ti_id,
                        attempt: a.attempt,
                        success: true,
                        retryable: false,
                        exit_code: Some(0),
                        reason: None,
                        outputs: Default::default(),
                        reschedule_after_ms: None,
                    };
                    match cp.complete(c).await {
                        Ok(r) if r.accepted => {
                            stats.completed.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Tasks in one run of the `wide` DAG of `agents1000`.
const WIDE: usize = 1000;

/// What one load of `agents1000` measured.
struct LoadFigures {
    secs: f64,
    rate: f64,
    trigger_s: f64,
    done_at_trigger_end: u64,
    cpu: f64,
    bench_cpu: f64,
    pss: f64,
    rss: f64,
    errors: u64,
}

struct LoadCtx<'a> {
    pid: u32,
    store: &'a Store,
    stats: &'a Arc<SimStats>,
}

impl LoadCtx<'_> {
    /// Triggers `reqs` one after another and waits until the simulated agents have completed
    /// `tasks` more tasks; checks every run succeeded.
    async fn run(&self, reqs: &[TriggerRequest], tasks: usize) -> anyhow::Result<LoadFigures> {
        let (pid, stats) = (self.pid, self.stats);
        let target = stats.completed.load(Ordering::Relaxed) + tasks as u64;
        let (c0, s0, e0) = (
            proc_cpu_s(pid)?,
            self_cpu_s(),
            stats.errors.load(Ordering::Relaxed),
        );
        let start = Instant::now();
        let sampler = {
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut peak = (0.0f64, 0.0f64);
                while stats.completed.load(Ordering::Relaxed) < target {
                    if let Ok((p, r)) = mem_mb(pid) {
                        peak = (peak.0.max(p), peak.1.max(r));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                peak
            })
        };
        for req in reqs {
            trigger(self.store, req).await?;
        }
        let trigger_s = start.elapsed().as_secs_f64();
        let done_at_trigger_end = stats.completed.load(Ordering::Relaxed) + tasks as u64 - target;
        let deadline = Instant::now() + Duration::from_secs(300);
        while stats.completed.load(Ordering::Relaxed) < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {tasks} tasks completed within 300 s",
                stats.completed.load(Ordering::Relaxed) + tasks as u64 - target
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = (proc_cpu_s(pid)? - c0) / secs * 100.0;
        let bench_cpu = (self_cpu_s() - s0) / secs * 100.0;
        let (pss, rss) = sampler.await?;
        for req in reqs {
            let run = self
                .store
                .get_run(&req.dag_id, req.run_id.as_deref().unwrap_or_default())
                .await?;
            anyhow::ensure!(
                run.state == tern_core::RunState::Success,
                "run {} of {} ended {}",
                run.run_id,
                run.dag_id,
                run.state
            );
        }
        Ok(LoadFigures {
            secs,
            rate: tasks as f64 / secs,
            trigger_s,
            done_at_trigger_end,
            cpu,
            bench_cpu,
            pss,
            rss,
            errors: stats.errors.load(Ordering::Relaxed) - e0,
        })
    }
}

/// `agents1000`: `agents` simulated agents over `sites` sites against one `tern server`
/// process; idle CPU and memory, then `rounds` × `sites` one-task runs and the same number of
/// tasks in runs of the `wide` DAG, `reps` times each.
pub async fn agents1000(
    tern: &Path,
    agents: usize,
    sites: usize,
    rounds: usize,
    reps: usize,
) -> anyhow::Result<()> {
    let nofile = raise_nofile();
    println!("open-file limit {nofile} (needs ~{agents} per side)");
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    for k in 0..sites {
        std::fs::write(
            dags.join(format!("s{k}.star")),
            format!(
                "d = dag(id = \"s{k}\", max_active_runs = 1000, max_active_tasks = 1000)\n\
                 shell(id = \"t\", cmd = \"true\", queue = \"site:s{k}\")\n"
            ),
        )?;
    }
    std::fs::write(
        dags.join("wide.star"),
        format!(
            "d = dag(id = \"wide\", max_active_runs = 100, max_active_tasks = 100000)\n\
             for i in range({WIDE}):\n    shell(id = \"t%d\" % i, cmd = \"true\", queue = \"site:s%d\" % (i % {sites}))\n"
        ),
    )?;
    let server = ServerProc::start(tern, &dir.path().join("home"), &dags).await?;
    let pid = server.pid();
    let store = server.store.clone();
    // The default pool (128 slots) would cap the tasks in flight below the agents' number.
    store.set_pool("default_pool", 4096, "").await?;
    let (pss0, rss0) = mem_mb(pid)?;
    println!("server at start: PSS {pss0:.1} MB, RSS {rss0:.1} MB");

    let t = Instant::now();
    let mut codes = Vec::with_capacity(agents);
    for i in 0..agents {
        let site = format!("s{}", i % sites);
        codes.push(
            store
                .create_activation(&site, &[], Duration::from_secs(3600))
                .await?
                .code,
        );
    }
    let create_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut tokens = Vec::with_capacity(agents);
    for chunk in codes.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for (j, code) in chunk.iter().enumerate() {
            let url = server.url.clone();
            let req = ActivateRequest {
                code: code.clone(),
                name: format!("sim{}", tokens.len() + j),
                version: "bench".into(),
            };
            set.spawn(async move { activate(&url, &req, None).await });
        }
        while let Some(r) = set.join_next().await {
            tokens.push(r?.map_err(|e| anyhow::anyhow!("activation: {e}"))?.token);
        }
    }
    let activate_s = t.elapsed().as_secs_f64();
    println!(
        "{agents} activation codes created through the store in {create_s:.2} s; activated over HTTP in {activate_s:.2} s ({:.0}/s)",
        agents as f64 / activate_s
    );

    let stats = Arc::new(SimStats::default());
    let mut sims = tokio::task::JoinSet::new();
    for token in &tokens {
        let cp = HttpControlPlane::new(&server.url, token).map_err(|e| anyhow::anyhow!("{e}"))?;
        sims.spawn(sim_agent(cp, stats.clone()));
    }
    // Let every agent's first claim reach the server and settle into its long poll.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let connected = store
        .list_agents()
        .await?
        .iter()
        .filter(|a| {
            a.last_seen
                .is_some_and(|t| chrono::Utc::now() - t < chrono::Duration::seconds(10))
        })
        .count();

    // Idle: one whole claim cycle (25 s), so every agent's renewal is counted once.
    let idle = Duration::from_secs(25);
    let (c0, s0, e0) = (
        proc_cpu_s(pid)?,
        self_cpu_s(),
        stats.errors.load(Ordering::Relaxed),
    );
    tokio::time::sleep(idle).await;
    let idle_cpu = (proc_cpu_s(pid)? - c0) / idle.as_secs_f64() * 100.0;
    let idle_bench = (self_cpu_s() - s0) / idle.as_secs_f64() * 100.0;
    let (pss, rss) = mem_mb(pid)?;
    println!(
        "idle, {connected} agents seen in the last 10 s: server CPU {idle_cpu:.1}% of a core, PSS {pss:.1} MB, RSS {rss:.1} MB; simulated agents' CPU {idle_bench:.1}%; errors {}",
        stats.errors.load(Ordering::Relaxed) - e0
    );

    // Two loads: many one-task runs triggered one by one from this process (as `tern dags
    // trigger` would, each a write to the database from another process than the server),
    // and a few runs of one DAG with a task per agent slot spread over every site (two
    // triggers: the server is the only writer).
    let one_task: Vec<TriggerRequest> = (0..rounds)
        .flat_map(|r| {
            (0..sites).map(move |k| TriggerRequest {
                dag_id: format!("s{k}"),
                run_id: Some(format!("r{r}")),
                ..Default::default()
            })
        })
        .collect();
    let wide_runs = rounds * sites / WIDE;
    let load = LoadCtx {
        pid,
        store: &store,
        stats: &stats,
    };
    for (label, template, tasks) in [
        (
            format!("{} one-task runs", one_task.len()),
            one_task,
            rounds * sites,
        ),
        (
            format!("{wide_runs} runs x {WIDE} tasks"),
            (0..wide_runs)
                .map(|r| TriggerRequest {
                    dag_id: "wide".into(),
                    run_id: Some(format!("w{r}")),
                    ..Default::default()
                })
                .collect(),
            wide_runs * WIDE,
        ),
    ] {
        let (mut rates, mut cpus, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..reps {
            let reqs: Vec<TriggerRequest> = template
                .iter()
                .map(|r| TriggerRequest {
                    run_id: r.run_id.as_ref().map(|id| format!("{id}_{rep}")),
                    ..r.clone()
                })
                .collect();
            let m = load.run(&reqs, tasks).await?;
            println!(
                "{label}, #{rep}: {tasks} tasks in {:.2} s ({:.0} tasks/s; triggering took {:.2} s, {} tasks done by then); server CPU {:.0}%, peak PSS {:.1} MB, RSS {:.1} MB; simulated agents' CPU {:.0}%; errors {}",
                m.secs, m.rate, m.trigger_s, m.done_at_trigger_end, m.cpu, m.pss, m.rss, m.bench_cpu, m.errors
            );
            rates.push(m.rate);
            cpus.push(m.cpu);
            peaks.push(m.pss);
        }
        crate::summary(&format!("{label}: load"), "tasks/s", rates);
        crate::summary("  server CPU under load", "%", cpus);
        crate::summary("  server peak PSS under load", "MB", peaks);
    }
    sims.abort_all();
    Ok(())
}

/// The DAG file of chain40 / fan200 with every task on the bench site's queue.
pub fn on_site(dag_text: &str) -> String {
    dag_text.replace(
        "cmd = \"true\"",
        &format!("cmd = \"true\", queue = \"site:{SITE}\""),
    )
}

/// Prints the medians over runs of the per-run timeline figures (`gaps`: the mean gap is only
/// meaningful for a chain).
pub fn print_timelines(tls: &[Timeline], gaps: bool) {
    let med = |f: &dyn Fn(&Timeline) -> f64| {
        let mut xs: Vec<f64> = tls.iter().map(f).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        xs[xs.len() / 2]
    };
    print!(
        "  medians over runs (store, ms resolution): task claimed->result {:.1} ms",
        med(&|t| t.span_ms)
    );
    if gaps {
        print!(", result->next claim {:.1} ms", med(&|t| t.gap_ms));
    }
    println!(
        ", first claim->run end {:.3} s",
        med(&|t| t.first_claim_to_end_s)
    );
}
