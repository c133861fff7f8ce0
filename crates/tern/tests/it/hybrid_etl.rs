//! The hybrid ETL scenario (`shared/scenarios/hybrid-etl.md`) end to end: a control plane, its
//! local agent (queue `cloud`), a private MariaDB `hq` and an S3-compatible store with bucket
//! `datalake` in a "cloud" network namespace; a "remote office" namespace that can dial out but
//! cannot be dialled, with its own private MariaDB and one agent of site `remote-office` whose
//! database password lives only in its `agent.toml`. Two exports run in parallel, each where it
//! is routed, then a join. Needs root (namespaces), `mariadbd`, `mariadb-install-db`, `mysql`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{files_containing, finished, run_state, task, Tern, DEADLINE};
use crate::netns::{is_root, listening_sockets, Namespaces, CLOUD_IP};

const SITE_PASSWORD: &str = "site-canary-7Qx2vR9p";
const HQ_PASSWORD: &str = "hq-pw-3Lm8";

/// A private MariaDB serving on 127.0.0.1:3306 inside namespace `ns`, set up through its socket.
struct PrivateMariaDb {
    dir: PathBuf,
}

impl PrivateMariaDb {
    fn start(ns: &mut Namespaces, which: &str, base: &Path) -> PrivateMariaDb {
        let dir = base.join(format!("mariadb-{which}"));
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", dir.display()))
            .output()
            .expect("mariadb-install-db is installed");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut d = Command::new("mariadbd");
        d.args(["--no-defaults", "--port=3306", "--bind-address=127.0.0.1"])
            .args(["--user=root", "--skip-log-bin"])
            .arg(format!("--datadir={}", dir.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()));
        let name = if which == "hq" {
            ns.cloud.clone()
        } else {
            ns.site.clone()
        };
        ns.spawn(&name, d);
        let db = PrivateMariaDb { dir };
        let start = Instant::now();
        while !db.sql("SELECT 1").status.success() {
            assert!(
                start.elapsed() < DEADLINE,
                "the {which} MariaDB never started"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        db
    }

    fn sql(&self, sql: &str) -> std::process::Output {
        Command::new("mysql")
            .args(["--no-defaults", "-u", "root", "--batch"])
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-e", sql])
            .output()
            .unwrap()
    }

    fn ok(&self, sql: &str) {
        let out = self.sql(sql);
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Database `db` with the scenario's `customers` table, `rows`, and user `etl` (`password`).
    fn load(&self, db: &str, rows: &str, password: &str) {
        self.ok(&format!(
            "CREATE DATABASE {db} CHARACTER SET utf8mb4; \
             CREATE TABLE {db}.customers (id INT PRIMARY KEY, date DATETIME NOT NULL, first_name VARCHAR(50), \
             last_name VARCHAR(50), email VARCHAR(100) NULL, gender VARCHAR(10), ip_address VARCHAR(40), \
             country VARCHAR(40), consent BOOLEAN); \
             INSERT INTO {db}.customers VALUES {rows}; \
             CREATE USER 'etl'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             GRANT SELECT ON {db}.* TO 'etl'@'127.0.0.1'"
        ));
    }
}

const HQ_ROWS: &str = "(1, '2026-01-02 03:04:05', 'Seán', 'O''Brien', 'sean@example.com', 'Male', '10.0.0.1', 'Spain', 1), \
     (2, '2026-02-03 04:05:06', 'Ana, María', 'García \"la\" Grande', NULL, 'Female', '10.0.0.2', 'Spain', 0), \
     (3, '2026-03-04 05:06:07', 'Zoë', 'Łukasiewicz', 'zoe@example.com', 'Female', '10.0.0.3', 'Poland', 1)";
const SITE_ROWS: &str = "(10, '2026-04-05 06:07:08', 'Jan', 'Kowalski', NULL, 'Male', '192.168.1.10', 'Poland', 1), \
     (11, '2026-05-06 07:08:09', 'Zofia', 'Wójcik, Jr.', 'zofia@example.pl', 'Female', '192.168.1.11', 'Poland', 0), \
     (12, '2026-06-07 08:09:10', 'Pedro', 'Sánchez', 'p@example.es', 'Male', '192.168.1.12', 'Spain', 1)";
const HEADER: &str = "id,date,first_name,last_name,email,gender,ip_address,country,consent\n";

#[test]
fn hybrid_etl_runs_each_export_where_it_is_routed_and_keeps_the_site_secret() {
    if !is_root() {
        return;
    }
    let t = Tern::new();
    t.with_lease("10s");
    t.agent_setting("queues = [\"default\", \"cloud\"]");
    let mut ns = Namespaces::create();
    let (cloud_ns, site_ns) = (ns.cloud.clone(), ns.site.clone());
    let data = tempfile::tempdir().unwrap();
    let hq = PrivateMariaDb::start(&mut ns, "hq", data.path());
    hq.load("demo", HQ_ROWS, HQ_PASSWORD);
    let site_db = PrivateMariaDb::start(&mut ns, "site", data.path());
    site_db.load("localdemo", SITE_ROWS, SITE_PASSWORD);
    let s3 = tern_testkit::s3::S3::start_in_netns(&cloud_ns, CLOUD_IP);

    // The control plane knows `hq` and `datalake`; the site's database only by name.
    t.ok(&[
        "connections",
        "add",
        "hq",
        "--uri",
        &format!("mysql://etl:{HQ_PASSWORD}@127.0.0.1:3306/demo"),
    ]);
    t.ok(&[
        "connections",
        "add",
        "datalake",
        "--uri",
        &s3.uri("datalake", tern_testkit::s3::SECRET),
    ]);
    t.write_dag(
        "hybrid_etl.star",
        r#"
dag(id = "hybrid_etl")
cloud = sql_to_lake(id = "cloudquery", queue = "cloud", conn = "hq",
                    sql = "SELECT * FROM customers WHERE country = 'Spain' ORDER BY id",
                    target_conn = "datalake", target = "period1/hq-data.csv")
site = sql_to_lake(id = "remotequery", queue = "site:remote-office", conn = "localdemo",
                   sql = "SELECT * FROM customers WHERE country = 'Poland' ORDER BY id",
                   target_conn = "datalake", target = "period1/region-data.csv")
done = empty(id = "done")
done << [cloud, site]
"#,
    );
    let port = 19000 + (std::process::id() % 1000) as u16;
    ns.start_server(&t, port);

    // The site agent: activated with a one-time code, its database password in agent.toml only.
    let agent_dir = data.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    std::fs::write(
        agent_dir.join("agent.toml"),
        format!(
            "[connections.localdemo]\nuri = \"mysql://etl:{SITE_PASSWORD}@127.0.0.1:3306/localdemo\"\n"
        ),
    )
    .unwrap();
    ns.start_site_agent(&t, port, "remote-office", &agent_dir);

    let run_id = t.trigger("hybrid_etl", None);
    let v = t.wait_run("hybrid_etl", &run_id, "the hybrid run", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    // Each task ran where it was routed.
    assert!(task(&v, "cloudquery")["worker"]
        .as_str()
        .unwrap()
        .starts_with("local-"));
    assert!(task(&v, "remotequery")["worker"]
        .as_str()
        .unwrap()
        .starts_with("agent-"));
    // Each object has exactly the selected rows, as CSV (quotes, commas, NULL, non-ASCII).
    let hq_csv = std::fs::read_to_string(s3.object("datalake", "period1/hq-data.csv")).unwrap();
    assert_eq!(
        hq_csv,
        format!(
            "{HEADER}1,2026-01-02 03:04:05,Seán,O'Brien,sean@example.com,Male,10.0.0.1,Spain,1\n\
             2,2026-02-03 04:05:06,\"Ana, María\",\"García \"\"la\"\" Grande\",,Female,10.0.0.2,Spain,0\n"
        )
    );
    let site_csv =
        std::fs::read_to_string(s3.object("datalake", "period1/region-data.csv")).unwrap();
    assert_eq!(
        site_csv,
        format!(
            "{HEADER}10,2026-04-05 06:07:08,Jan,Kowalski,,Male,192.168.1.10,Poland,1\n\
             11,2026-05-06 07:08:09,Zofia,\"Wójcik, Jr.\",zofia@example.pl,Female,192.168.1.11,Poland,0\n"
        )
    );
    assert_eq!(v["outputs"]["remotequery"]["rows"], 2, "{v:#}");
    // Logs are central and say target, query, rows and object, never row contents.
    let log = t.log("hybrid_etl", &run_id, "remotequery", None);
    for needed in [
        "127.0.0.1",
        "localdemo",
        "country = 'Poland'",
        "2 row",
        "region-data.csv",
    ] {
        assert!(
            log.contains(needed),
            "the log should mention {needed:?}:\n{log}"
        );
    }
    for private in ["Kowalski", "Wójcik", "192.168.1.11", SITE_PASSWORD] {
        assert!(
            !log.contains(private),
            "{private:?} leaked into the log:\n{log}"
        );
    }
    // The site's password is nowhere outside the site: not in the control plane's folder
    // (database, logs, keys), nor on any process's command line. Positive control: it is in
    // the agent's own folder.
    assert!(
        files_containing(t.path(), SITE_PASSWORD).is_empty(),
        "the control plane's folder holds the site password"
    );
    assert!(!files_containing(&agent_dir, SITE_PASSWORD).is_empty());
    let cmdlines = Command::new("sh")
        .args(["-c", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&cmdlines.stdout).contains(SITE_PASSWORD));
    // And the agent listens on no port at the site (only the site's own MariaDB does).
    let site_listeners = listening_sockets(&site_ns);
    assert!(
        site_listeners.iter().all(|l| l.contains(":0CEA ")),
        "only MariaDB (3306) listens at the site: {site_listeners:?}"
    );
    drop(hq);
    drop(site_db);
}
