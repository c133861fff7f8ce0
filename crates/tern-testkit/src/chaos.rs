//! The chaos suite's driver: a workload of shell tasks run by the real `tern` binary while its
//! control plane is killed with SIGKILL at random moments, then the promises checked from the
//! tasks' own records and the metadata database:
//!
//! - every run ends; no task is never run;
//! - no task instance has two recorded successes;
//! - no write from a dead attempt lands after its retry started (each task forks a grandchild
//!   that writes late);
//! - re-runs of finished commands are counted, and each is visible on the try it repeated;
//! - with task logs in an object store, every successful try's log is whole (in the store, or
//!   in the database until it is shipped) and no server kept one on its own disk.
//!
//! One server (`tern standalone` on SQLite) or several (`tern server` on one PostgreSQL, each
//! with its own data folder: no shared disk). Used by the short chaos tests in CI and by
//! `tern-bench chaos` for the long version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use sqlx::{Connection, Row};

/// What to run.
#[derive(Debug, Clone)]
pub struct Chaos {
    /// The `tern` binary.
    pub tern: PathBuf,
    /// PostgreSQL to run on (`tern server` processes); `None`: `tern standalone` on SQLite.
    pub database_url: Option<String>,
    /// How many server processes (1 on SQLite).
    pub servers: usize,
    /// How many kills.
    pub rounds: usize,
    pub runs: usize,
    pub tasks_per_run: usize,
    /// How long a killed server stays down before it is started again, at most.
    pub max_down: Duration,
    pub seed: u64,
    /// Task logs in an object store (a `file://` folder none of the servers' data folders
    /// holds) instead of each server's `HOME/logs`; then every successful try's log must be
    /// complete there or, not shipped yet, in the database, and no server may keep a log file.
    pub object_store_logs: bool,
}

/// What a chaos run found.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    pub rounds: usize,
    pub tasks: usize,
    pub runs: usize,
    pub runs_ended: usize,
    pub tasks_never_run: usize,
    pub double_successes: usize,
    pub late_writes_after_retry: usize,
    /// Task instances whose command finished more than once.
    pub reruns: usize,
    /// Re-runs whose earlier try does not say why it was repeated.
    pub invisible_reruns: usize,
    /// Per kill: from the kill until no attempt of the killed server was still `running`.
    pub takeover: Vec<Duration>,
    /// From the last restart until every run had ended.
    pub finish_after_last_restart: Duration,
    /// Logs of successful tries found in the object store (with `object_store_logs`).
    pub logs_shipped: usize,
    /// Problems found, one line each (empty when every promise held).
    pub problems: Vec<String>,
}

impl ChaosReport {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let mut t = self.takeover.clone();
        t.sort();
        let ms = |d: Option<&Duration>| d.map(|d| d.as_millis()).unwrap_or(0);
        format!(
            "{} rounds, {} runs x {} tasks: runs ended {}/{}, never run {}, double successes {}, late writes after retry {}, re-runs {} (invisible {}), takeover min/median/max {}/{}/{} ms, finish after last restart {} ms",
            self.rounds,
            self.runs,
            self.tasks / self.runs.max(1),
            self.runs_ended,
            self.runs,
            self.tasks_never_run,
            self.double_successes,
            self.late_writes_after_retry,
            self.reruns,
            self.invisible_reruns,
            ms(t.first()),
            ms(t.get(t.len() / 2)),
            ms(t.last()),
            self.finish_after_last_restart.as_millis()
        )
    }
}

const SETTINGS: &str = r#"
[scheduler]
dag_scan_interval = "200ms"
housekeeping_interval = "100ms"
lease = "5s"

[agent]
kill_grace = "300ms"
concurrency = 8
"#;

struct Server {
    home: PathBuf,
    child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Chaos {
    fn command(&self, home: &Path, dags: &Path) -> Command {
        let mut c = Command::new(&self.tern);
        c.arg("--home").arg(home).arg("--dags").arg(dags);
        if let Some(url) = &self.database_url {
            c.arg("--database-url").arg(url);
        }
        c.env_remove("TERN_HOME").env_remove("TERN_DAGS");
        c
    }

    fn start(&self, s: &mut Server, dags: &Path) {
        let mut c = self.command(&s.home, dags);
        if self.database_url.is_some() {
            c.args(["server", "--port", "0"]);
        } else {
            c.args(["standalone", "--port", "0", "--no-examples"]);
        }
        s.child = Some(
            c.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start tern"),
        );
    }

    fn database(&self, first_home: &Path) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", first_home.join("tern.db").display()))
    }

    /// Runs the workload under `rounds` kills and checks every promise.
    pub fn run(&self) -> ChaosReport {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let dags = dir.path().join("dags");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&dags).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(dags.join("chaos.star"), self.dag(&out)).unwrap();
        let objects = dir.path().join("objects");
        let settings = if self.object_store_logs {
            format!(
                "{SETTINGS}\n[logs]\nstore = \"file://{}\"\n",
                objects.display()
            )
        } else {
            SETTINGS.to_string()
        };
        let mut servers: Vec<Server> = (0..self.servers.max(1))
            .map(|i| {
                let home = dir.path().join(format!("home{i}"));
                std::fs::create_dir_all(&home).unwrap();
                std::fs::write(home.join("tern.toml"), &settings).unwrap();
                Server { home, child: None }
            })
            .collect();
        let db = self.database(&servers[0].home);
        for s in servers.iter_mut() {
            self.start(s, &dags);
        }
        // The DAG must be loaded before it can be triggered.
        let trigger_home = servers[0].home.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut run_ids = Vec::new();
        while run_ids.len() < self.runs {
            let out = self
                .command(&trigger_home, &dags)
                .args(["dags", "trigger", "chaos"])
                .output()
                .expect("tern dags trigger");
            if out.status.success() {
                run_ids.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
            } else {
                assert!(
                    Instant::now() < deadline,
                    "cannot trigger the chaos DAG: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut report = ChaosReport {
            rounds: self.rounds,
            runs: self.runs,
            tasks: self.runs * self.tasks_per_run,
            ..ChaosReport::default()
        };
        let mut last_restart = Instant::now();
        for _ in 0..self.rounds {
            std::thread::sleep(Duration::from_millis(rng.random_range(200..1500)));
            if rt.block_on(unfinished_runs(&db)) == 0 {
                break;
            }
            let victim = rng.random_range(0..servers.len());
            let s = &mut servers[victim];
            let mut child = s.child.take().expect("running server");
            let pid = child.id();
            let held = rt.block_on(running_attempts_of_pid(&db, pid));
            let killed = Instant::now();
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
            let down = rng.random_range(0..=self.max_down.as_millis() as u64);
            std::thread::sleep(Duration::from_millis(down));
            self.start(s, &dags);
            last_restart = Instant::now();
            // Takeover: the killed server's attempts no longer count as running.
            let limit = Instant::now() + Duration::from_secs(60);
            loop {
                if rt.block_on(still_running(&db, &held)) == 0 {
                    report.takeover.push(killed.elapsed());
                    if std::env::var_os("TERN_CHAOS_VERBOSE").is_some() {
                        eprintln!(
                            "chaos: killed pid {pid} holding {} attempts, down {down} ms, taken over after {:?}",
                            held.len(),
                            killed.elapsed()
                        );
                    }
                    break;
                }
                if Instant::now() > limit {
                    report.problems.push(format!(
                        "attempts of killed pid {pid} still running after 60 s"
                    ));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        wait_for_none(Duration::from_secs(180), Duration::from_millis(50), || {
            rt.block_on(unfinished_runs(&db))
        });
        report.finish_after_last_restart = last_restart.elapsed();
        // Let grandchildren of the last tries write what they would write.
        std::thread::sleep(Duration::from_millis(800));
        if self.object_store_logs {
            // Shipping trails the work (a pass a second, slower on a loaded machine): what is
            // checked is where the logs end up, not how fast they get there.
            let waited = Instant::now();
            let left = wait_for_none(Duration::from_secs(60), Duration::from_millis(100), || {
                rt.block_on(unshipped_successful_logs(&db))
            });
            eprintln!(
                "chaos: waited {} ms for logs to be shipped; {left} successful tries' logs due and not shipped",
                waited.elapsed().as_millis()
            );
        }
        for s in servers.iter_mut() {
            if let Some(c) = &s.child {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            if let Some(mut c) = s.child.take() {
                let _ = c.wait();
            }
        }
        rt.block_on(self.check(&db, &out, &run_ids, &mut report));
        if self.object_store_logs {
            rt.block_on(check_logs(&db, &objects, &mut report));
            for s in &servers {
                let own = s.home.join("logs");
                if own.exists() {
                    report
                        .problems
                        .push(format!("a server kept task logs in {}", own.display()));
                }
            }
        }
        report
    }

    fn dag(&self, out: &Path) -> String {
        // Each try writes when it starts and when its command is done, and forks a grandchild
        // that writes "late" half a second later, with its output sent elsewhere.
        let cmd = format!(
            "L={out}/$TERN_RUN_ID.$TERN_TASK_ID; echo start $TERN_TRY_NUMBER $(date +%s%N) >> $L; \
             sh -c 'sleep 0.5; echo late $0 $(date +%s%N) >> $1' $TERN_TRY_NUMBER $L > /dev/null 2>&1 & \
             sleep 0.2; echo done $TERN_TRY_NUMBER $(date +%s%N) >> $L",
            out = out.display()
        );
        format!(
            "d = dag(id = \"chaos\", max_active_runs = {runs}, max_active_tasks = 64)\n\
             for i in range({n}):\n    shell(id = \"t%d\" % i, retries = 20, retry_delay = \"0s\", cmd = {cmd:?})\n",
            runs = self.runs,
            n = self.tasks_per_run
        )
    }

    async fn check(&self, db: &str, out: &Path, run_ids: &[String], r: &mut ChaosReport) {
        let mut conn = connect(db).await;
        let runs = sqlx::query("SELECT run_id, state FROM dag_runs WHERE dag_id = 'chaos'")
            .fetch_all(&mut conn)
            .await
            .expect("runs");
        let mut ended = 0;
        for row in &runs {
            let state: String = row.get(1);
            if state == "success" || state == "failed" {
                ended += 1;
            } else {
                r.problems
                    .push(format!("run {} is {state}", row.get::<String, _>(0)));
            }
        }
        r.runs_ended = ended;
        let doubles = sqlx::query(
            "SELECT ti.run_id, ti.task_id, COUNT(*) FROM task_tries t JOIN task_instances ti ON ti.id = t.ti_id \
             WHERE ti.dag_id = 'chaos' AND t.state = 'success' GROUP BY ti.run_id, ti.task_id HAVING COUNT(*) > 1",
        )
        .fetch_all(&mut conn)
        .await
        .expect("successes");
        r.double_successes = doubles.len();
        for d in &doubles {
            r.problems.push(format!(
                "{}.{}: {} successes recorded",
                d.get::<String, _>(0),
                d.get::<String, _>(1),
                d.get::<i64, _>(2)
            ));
        }
        // Notes of every try, to tell whether a re-run is explained.
        let mut notes: BTreeMap<(String, String, i64), String> = BTreeMap::new();
        for row in sqlx::query(
            "SELECT ti.run_id, ti.task_id, t.try_number, COALESCE(t.note, '') FROM task_tries t \
             JOIN task_instances ti ON ti.id = t.ti_id WHERE ti.dag_id = 'chaos'",
        )
        .fetch_all(&mut conn)
        .await
        .expect("tries")
        {
            notes.insert(
                (row.get(0), row.get(1), row.get(2)),
                row.get::<String, _>(3),
            );
        }
        for run in run_ids {
            for i in 0..self.tasks_per_run {
                let task = format!("t{i}");
                let text =
                    std::fs::read_to_string(out.join(format!("{run}.{task}"))).unwrap_or_default();
                let mut starts: Vec<(i64, u128)> = Vec::new();
                let mut done: BTreeSet<i64> = BTreeSet::new();
                let mut late: Vec<(i64, u128)> = Vec::new();
                for line in text.lines() {
                    let mut f = line.split_whitespace();
                    let (Some(kind), Some(tr), Some(at)) = (f.next(), f.next(), f.next()) else {
                        continue;
                    };
                    let (Ok(tr), Ok(at)) = (tr.parse::<i64>(), at.parse::<u128>()) else {
                        continue;
                    };
                    match kind {
                        "start" => starts.push((tr, at)),
                        "done" => {
                            done.insert(tr);
                        }
                        "late" => late.push((tr, at)),
                        _ => {}
                    }
                }
                if done.is_empty() {
                    r.tasks_never_run += 1;
                    r.problems
                        .push(format!("{run}.{task} never ran to its end"));
                }
                if done.len() > 1 {
                    r.reruns += 1;
                    // Every try but the last that finished its command must say why it ran
                    // again (it was interrupted or lost, by the note on its try).
                    let last = *done.iter().last().unwrap();
                    for tr in done.iter().filter(|t| **t != last) {
                        let note = notes
                            .get(&(run.clone(), task.clone(), *tr))
                            .cloned()
                            .unwrap_or_default();
                        if std::env::var_os("TERN_CHAOS_VERBOSE").is_some() {
                            eprintln!(
                                "chaos: re-run of {run}.{task}: try {tr} finished, then: {note}"
                            );
                        }
                        if !(note.contains("interrupted")
                            || note.contains("lost")
                            || note.contains("stopped"))
                        {
                            r.invisible_reruns += 1;
                            r.problems.push(format!(
                                "{run}.{task}: try {tr} finished and ran again without a reason on its try ({note:?})"
                            ));
                        }
                    }
                }
                for (tr, at) in &late {
                    if starts.iter().any(|(s, st)| s > tr && st < at) {
                        r.late_writes_after_retry += 1;
                        r.problems.push(format!(
                            "{run}.{task}: try {tr}'s grandchild wrote after a later try started"
                        ));
                    }
                }
            }
        }
    }
}

/// Every successful try's log is whole: in the object store folder, or (not shipped yet) as
/// chunks in the database.
async fn check_logs(db: &str, objects: &Path, r: &mut ChaosReport) {
    let mut conn = connect(db).await;
    let paths: Vec<String> = sqlx::query_scalar(
        "SELECT t.log_path FROM task_tries t JOIN task_instances ti ON ti.id = t.ti_id \
         WHERE ti.dag_id = 'chaos' AND t.state = 'success'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tries");
    let mut shipped = 0;
    for path in &paths {
        let text = match std::fs::read_to_string(objects.join(path)) {
            Ok(text) => {
                shipped += 1;
                text
            }
            Err(_) => {
                let chunks: Vec<String> = sqlx::query_scalar(
                    "SELECT body FROM log_chunks WHERE path = $1 ORDER BY start_at",
                )
                .bind(path)
                .fetch_all(&mut conn)
                .await
                .expect("chunks");
                chunks.concat()
            }
        };
        // A try whose server died as it ended says so instead (its end was delivered from
        // the server's record at the restart; its last lines may be missing).
        if !(text.contains("tern: task succeeded")
            || text.contains("recorded end is delivered now: task succeeded"))
        {
            r.problems.push(format!(
                "the log {path} of a successful try is not whole: {text:?}"
            ));
        }
    }
    r.logs_shipped = shipped;
}

async fn connect(url: &str) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"))
}

async fn unfinished_runs(db: &str) -> i64 {
    let mut c = connect(db).await;
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM dag_runs WHERE dag_id = 'chaos' AND state NOT IN ('success', 'failed')",
    )
    .fetch_one(&mut c)
    .await
    .unwrap_or(1)
}

/// Asks `count` every `every` until it says none or `within` has passed; its last answer.
fn wait_for_none(within: Duration, every: Duration, count: impl Fn() -> i64) -> i64 {
    let limit = Instant::now() + within;
    let mut left = count();
    while left > 0 && Instant::now() < limit {
        std::thread::sleep(every);
        left = count();
    }
    left
}

/// Successful tries whose log waits to be shipped now. (A log a killed server had taken to
/// ship is held for two minutes before another server may take it: not counted.)
async fn unshipped_successful_logs(db: &str) -> i64 {
    let mut c = connect(db).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM task_tries t JOIN task_instances ti ON ti.id = t.ti_id \
         JOIN log_ships s ON s.path = t.log_path \
         WHERE ti.dag_id = 'chaos' AND t.state = 'success' AND s.due_at <= $1",
    )
    .bind(now_ms)
    .fetch_one(&mut c)
    .await
    .unwrap_or(1)
}

/// The running attempts of the local agent of the server process `pid`.
async fn running_attempts_of_pid(db: &str, pid: u32) -> Vec<(i64, String)> {
    let mut c = connect(db).await;
    sqlx::query("SELECT id, attempt, worker FROM task_instances WHERE state = 'running'")
        .fetch_all(&mut c)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| {
            r.get::<Option<String>, _>(2)
                .is_some_and(|w| w.ends_with(&format!("-{pid}")))
        })
        .map(|r| (r.get(0), r.get::<Option<String>, _>(1).unwrap_or_default()))
        .collect()
}

/// How many of `held` are still running the same attempt.
async fn still_running(db: &str, held: &[(i64, String)]) -> usize {
    let mut c = connect(db).await;
    let mut n = 0;
    for (id, attempt) in held {
        let row =
            sqlx::query("SELECT state, COALESCE(attempt, '') FROM task_instances WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut c)
                .await
                .ok()
                .flatten();
        if let Some(row) = row {
            if row.get::<String, _>(0) == "running" && &row.get::<String, _>(1) == attempt {
                n += 1;
            }
        }
    }
    n
}
