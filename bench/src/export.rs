//! `export1m`: 1,000,000 rows of 10 columns from the machine's MariaDB to CSV in a local lake
//! folder with `tern tasks test` (a `sql_to_lake` task), against `mysql --batch --quick` dumping
//! the same query to /dev/null. Wall time, rows/s and the peak RSS of each process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use tern_testkit::mysql;

const DB: &str = "tern_bench_export";

/// Runs `cmd` to its end; returns (seconds, peak RSS in MB).
fn timed(mut cmd: Command) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
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

pub fn export(tern: &Path, rows: u64, runs: usize) -> anyhow::Result<()> {
    prepare(rows)?;
    let dir = tempfile::tempdir()?;
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags)?;
    std::fs::write(
        dags.join("export.star"),
        "d = dag(id = \"export\")\nsql_to_lake(id = \"csv\", conn = \"src\", sql = \"SELECT * FROM t\", target_conn = \"lake\", target = \"t.csv\")\n",
    )?;
    let lake = dir.path().join("lake");
    let (mut ours, mut ours_mem, mut base, mut base_mem) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let mut c = Command::new(tern);
        c.arg("--home")
            .arg(dir.path().join("home"))
            .arg("--dags")
            .arg(&dags)
            .args(["tasks", "test", "export", "csv"])
            .env("TERN_CONN_SRC", format!("mysql://root@127.0.0.1:3306/{DB}"))
            .env("TERN_CONN_LAKE", format!("file://{}", lake.display()));
        let (s, m) = timed(c)?;
        ours.push(rows as f64 / s);
        ours_mem.push(m);
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
    let size = std::fs::metadata(lake.join("t.csv"))?.len();
    println!(
        "export of {rows} rows x 10 columns ({:.0} MB of CSV):",
        size as f64 / 1e6
    );
    crate::summary("  tern sql_to_lake -> CSV (local lake)", "rows/s", ours);
    crate::summary("  tern peak RSS", "MB", ours_mem);
    crate::summary("  mysql --batch --quick > /dev/null", "rows/s", base);
    crate::summary("  mysql peak RSS", "MB", base_mem);
    Ok(())
}
