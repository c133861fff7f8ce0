//! `export1m` / `export10m`: 1,000,000 (10,000,000) rows of 10 columns from the machine's MariaDB
//! with `tern tasks test` (a `sql_to_lake` task), against `mysql --batch --quick` dumping the
//! same query to /dev/null. Wall time, rows/s and the peak RSS of each process. Suffixes choose
//! the format and the target: `-parquet` writes Parquet instead of CSV, `-s3` uploads to an
//! S3-compatible server started by the benchmark (s3s-fs on loopback, SigV4) instead of a local
//! folder; e.g. `export1m-parquet-s3`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context;

use tern_testkit::mysql;

const DB: &str = "tern_bench_export";

/// Runs `cmd` to its end; returns (seconds, peak RSS in MB).
fn timed(cmd: Command) -> anyhow::Result<(f64, f64)> {
    timed_to(cmd, Stdio::null())
}

/// Like [`timed`], with the command's standard error sent to `stderr`.
fn timed_to(mut cmd: Command, stderr: Stdio) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn()?;
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        r == pid && status == 0,
        "the command failed (status {status})"
    );
    Ok((secs, usage.ru_maxrss as f64 / 1024.0))
}

/// Seconds between two lines of a `tern tasks test` log: the one that says the last row was
/// exported and the one that says the object was written (for S3, the last parts and the
/// store's completion of the multipart upload).
fn completion_tail(log: &str) -> Option<f64> {
    let at = |needle: &str| {
        log.lines().find(|l| l.contains(needle)).and_then(|l| {
            let ts = l.split_whitespace().next()?;
            chrono::DateTime::parse_from_rfc3339(ts).ok()
        })
    };
    let (last_row, written) = (at("row(s) exported")?, at(" tern: wrote ")?);
    Some((written - last_row).num_milliseconds() as f64 / 1000.0)
}

/// Fills the table once (kept between runs of the benchmark).
fn prepare(rows: u64) -> anyhow::Result<()> {
    mysql(&[
        "-e",
        &format!("CREATE DATABASE IF NOT EXISTS {DB}; CREATE TABLE IF NOT EXISTS {DB}.t (id INT)"),
    ]);
    let have = mysql(&["-N", "-e", &format!("SELECT COUNT(*) FROM {DB}.t")]);
    if have.trim() == rows.to_string() {
        return Ok(());
    }
    mysql(&["-e", &format!(
        "DROP TABLE IF EXISTS {DB}.t; CREATE TABLE {DB}.t (id INT PRIMARY KEY, a INT, b BIGINT, c DOUBLE, \
         d DECIMAL(10,2), e VARCHAR(40), f VARCHAR(40), g DATETIME, h DATE, i BOOLEAN); \
         INSERT INTO {DB}.t SELECT seq, seq % 1000, seq * 7, seq / 3, (seq % 10000) / 100, CONCAT('name, \"', seq, '\"'), \
         MD5(seq), '2026-01-01' + INTERVAL seq SECOND, '2026-01-01' + INTERVAL (seq % 365) DAY, seq % 2 \
         FROM {DB}.seq_1_to_{rows}"
    )]);
    Ok(())
}

/// An S3-compatible server on loopback backed by a folder (bucket `lake`): this benchmark
/// binary run as `tern-bench __s3_server FOLDER`, in a process of its own so that its memory
/// does not count in the peak RSS of the processes the benchmark starts; stopped when dropped.
struct S3 {
    root: tempfile::TempDir,
    endpoint: String,
    server: std::process::Child,
}

impl S3 {
    fn start() -> anyhow::Result<S3> {
        use std::io::BufRead;
        let root = tempfile::tempdir()?;
        std::fs::create_dir(root.path().join("lake"))?;
        let mut server = Command::new(std::env::current_exe()?)
            .arg(S3_SERVER_ARG)
            .arg(root.path())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(server.stdout.take().context("server stdout")?)
            .read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("http://"), "the S3 server did not start");
        Ok(S3 {
            root,
            endpoint: line.trim().to_string(),
            server,
        })
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// First argument that makes the benchmark binary an S3 server (see [`serve_s3`]).
pub const S3_SERVER_ARG: &str = "__s3_server";

/// Serves the folder `root` over S3 (s3s-fs, SigV4 with the benchmark's key) on a loopback
/// port, printing its URL as the first line; runs until killed.
pub async fn serve_s3(root: &Path) -> anyhow::Result<()> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(
        "AKBENCH",
        "bench-secret",
    ));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        let service = service.clone();
        tokio::spawn(async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
        });
    }
}

/// Where an export goes.
#[derive(Clone, Copy, PartialEq)]
pub enum Target {
    Folder,
    S3,
}

pub fn export(
    tern: &Path,
    rows: u64,
    runs: usize,
    parquet: bool,
    target: Target,
) -> anyhow::Result<()> {
    prepare(rows)?;
    let dir = crate::scratch::folder()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    let object = if parquet { "t.parquet" } else { "t.csv" };
    std::fs::write(
        dags.join("export.star"),
        format!("d = dag(id = \"export\")\nsql_to_lake(id = \"export\", conn = \"src\", sql = \"SELECT * FROM t\", target_conn = \"lake\", target = \"{object}\")\n"),
    )?;
    let s3 = if target == Target::S3 {
        Some(S3::start()?)
    } else {
        None
    };
    let lake_dir = dir.path().join("lake");
    let (lake_uri, written) = match &s3 {
        None => (
            format!("file://{}", lake_dir.display()),
            lake_dir.join(object),
        ),
        Some(s) => (
            format!(
                "s3://AKBENCH:bench-secret@lake?endpoint={}&region=us-east-1",
                s.endpoint
            ),
            s.root.path().join("lake").join(object),
        ),
    };
    let (mut ours, mut ours_mem, mut base, mut base_mem) = (vec![], vec![], vec![], vec![]);
    let (mut tails, mut streamed) = (vec![], vec![]);
    let log_path = dir.path().join("tern.log");
    for _ in 0..runs {
        let mut c = Command::new(tern);
        c.arg("--home")
            .arg(dir.path().join("home"))
            .arg("--dags")
            .arg(&dags)
            .args(["tasks", "test", "export", "export"])
            .env("TERN_CONN_SRC", format!("mysql://root@127.0.0.1:3306/{DB}"))
            .env("TERN_CONN_LAKE", &lake_uri);
        let (s, m) = timed_to(c, Stdio::from(std::fs::File::create(&log_path)?))?;
        ours.push(rows as f64 / s);
        ours_mem.push(m);
        let tail = completion_tail(&std::fs::read_to_string(&log_path)?)
            .context("the export's log has no 'row(s) exported' and 'wrote' lines")?;
        tails.push(tail);
        streamed.push(rows as f64 / (s - tail));
        let mut b = Command::new("mysql");
        b.args([
            "-h",
            "127.0.0.1",
            "-u",
            "root",
            "--batch",
            "--quick",
            DB,
            "-e",
            "SELECT * FROM t",
        ]);
        let (s, m) = timed(b)?;
        base.push(rows as f64 / s);
        base_mem.push(m);
    }
    let size = std::fs::metadata(&written)?.len();
    let what = format!(
        "{} ({})",
        if parquet { "Parquet" } else { "CSV" },
        if s3.is_some() {
            "S3 on loopback"
        } else {
            "local folder"
        }
    );
    println!(
        "export of {rows} rows x 10 columns to {what}, {:.1} MB:",
        size as f64 / 1e6
    );
    crate::summary("  tern sql_to_lake", "rows/s", ours);
    crate::summary("  tern peak RSS", "MB", ours_mem);
    crate::summary("  last row -> object written", "s", tails);
    crate::summary("  tern rows/s to the last row", "rows/s", streamed);
    crate::summary("  mysql --batch --quick > /dev/null", "rows/s", base);
    crate::summary("  mysql peak RSS", "MB", base_mem);
    Ok(())
}
