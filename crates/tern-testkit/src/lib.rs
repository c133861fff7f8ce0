//! Test-only helpers shared by the crates' integration tests: a fresh database per test (a
//! SQLite file or a PostgreSQL database on the local server), DAG spec builders, and polling
//! with a deadline instead of fixed sleeps.

pub mod azure;
pub mod chaos;
pub mod notify;
pub mod postgres;
pub mod s3;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::{Connection, Executor};
use tern_core::{DagSpec, Schedule, TaskKind, TaskSpec};

/// Where the PostgreSQL server for tests lives (`TERN_TEST_PG_URL`), as an admin URL.
pub fn pg_admin_url() -> String {
    std::env::var("TERN_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that lives as long as the value: a SQLite file in a temporary folder, or a
/// PostgreSQL database created for the test and dropped afterwards.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("tern.db").display());
        TestDb {
            url,
            pg_name: None,
            _dir: Some(dir),
        }
    }

    /// Creates a fresh database on the test PostgreSQL server. Panics with a clear message if the
    /// server is unreachable: the suite runs against the real server, never a substitute.
    pub async fn postgres() -> TestDb {
        let admin = pg_admin_url();
        let name = format!(
            "tern_t_{}_{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        );
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL for tests is not reachable at {admin} ({e}); start it (see README) or set TERN_TEST_PG_URL")
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin);
        TestDb {
            url: format!("{base}/{name}"),
            pg_name: Some(name),
            _dir: None,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Drop on a separate thread with its own runtime: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let _ = c
                                .execute(
                                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                                )
                                .await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// Polls `check` until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A DAG spec with no schedule and the given tasks (built with [`task`]).
pub fn dag(dag_id: &str, tasks: Vec<TaskSpec>) -> DagSpec {
    DagSpec {
        dag_id: dag_id.into(),
        file: format!("{dag_id}.star"),
        line: 1,
        schedule: Schedule::None,
        timezone: "UTC".into(),
        start_date: None,
        end_date: None,
        catchup: false,
        params: BTreeMap::new(),
        tags: vec![],
        description: None,
        max_active_runs: 16,
        max_active_tasks: 64,
        on_failure: vec![],
        on_success: vec![],
        on_retry: vec![],
        dagrun_timeout_ms: None,
        max_consecutive_failed_dag_runs: 0,
        tasks,
        groups: Vec::new(),
        index: Default::default(),
    }
}

/// A task that an agent must run (a shell `true`), with the given upstream task ids: the
/// store's tests drive its claims and results by hand. (An `empty` task never reaches an
/// agent: the scheduler marks it done, see [`empty`].)
pub fn task(task_id: &str, upstream: &[&str]) -> TaskSpec {
    let mut t = TaskSpec::new(
        task_id,
        TaskKind::Shell {
            cmd: "true".into(),
            env: BTreeMap::new(),
            cwd: None,
            sandbox: None,
        },
    );
    t.upstream = upstream.iter().map(|s| s.to_string()).collect();
    t
}

/// An `empty` task with the given upstream task ids.
pub fn empty(task_id: &str, upstream: &[&str]) -> TaskSpec {
    let mut t = TaskSpec::new(task_id, TaskKind::Empty);
    t.upstream = upstream.iter().map(|s| s.to_string()).collect();
    t
}

/// A `shell` task running `cmd` with the given upstream task ids.
pub fn shell(task_id: &str, cmd: &str, upstream: &[&str]) -> TaskSpec {
    let mut t = task(task_id, upstream);
    if let TaskKind::Shell { cmd: c, .. } = &mut t.kind {
        *c = cmd.into();
    }
    t
}

/// Runs the `mysql` client as root against the machine's MariaDB on 127.0.0.1 with `args`
/// (e.g. `["-e", "CREATE DATABASE x"]`); panics with its error output when it fails. Returns
/// what it printed.
pub fn mysql(args: &[&str]) -> String {
    let out = std::process::Command::new("mysql")
        .args(["-h", "127.0.0.1", "-u", "root"])
        .args(args)
        .output()
        .expect("the mysql client is installed");
    assert!(
        out.status.success(),
        "mysql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("mysql prints UTF-8")
}

/// A tiny local image for container tests, `localhost/tern-test-busybox`: busybox in an empty
/// root, imported with `podman import` (no registry is needed). Imported once per machine.
/// Panics with what to install when podman or busybox is missing.
pub fn busybox_image() -> String {
    const IMAGE: &str = "localhost/tern-test-busybox";
    let exists = || {
        std::process::Command::new("podman")
            .args(["image", "exists", IMAGE])
            .status()
            .expect(
                "podman is installed (apt install podman runc; scripts/test installs it as root)",
            )
            .success()
    };
    if exists() {
        return IMAGE.to_string();
    }
    // Tests run in parallel processes: one imports, the others wait for it.
    let _lock = FileLock::take(&std::env::temp_dir().join("tern-test-busybox.lock"));
    if exists() {
        return IMAGE.to_string();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox is installed (apt install busybox-static)");
    let root = tempfile::tempdir().expect("temp dir");
    for dir in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    std::fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    for tool in [
        "sh", "echo", "cat", "ls", "env", "sleep", "true", "false", "wc", "printf", "id", "touch",
        "test", "[",
    ] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(tool)).unwrap();
    }
    let tar = root.path().with_extension("tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar of the test image root");
    let out = std::process::Command::new("podman")
        .args(["import", "--change", "ENV PATH=/bin"])
        .arg(&tar)
        .arg(IMAGE)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tar);
    assert!(
        out.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    IMAGE.to_string()
}

/// A lock between processes: a file created exclusively, removed on drop. A lock older than a
/// minute is taken to be left by a crashed test and broken.
struct FileLock(std::path::PathBuf);

impl FileLock {
    fn take(path: &std::path::Path) -> FileLock {
        let start = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => return FileLock(path.to_path_buf()),
                Err(_) => {
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60))
                        .unwrap_or(false);
                    if stale {
                        let _ = std::fs::remove_file(path);
                    }
                    assert!(
                        start.elapsed() < Duration::from_secs(120),
                        "waiting for the lock {}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
