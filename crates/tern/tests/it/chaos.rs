//! The chaos suite, short version (the long one is `bench/run chaos`): the control plane is
//! killed with SIGKILL at random moments under a workload whose tasks record every start,
//! finish and late write of a forked grandchild; afterwards every promise is checked (see
//! `tern_testkit::chaos`).

use std::time::Duration;

use tern_testkit::chaos::Chaos;

fn check(chaos: Chaos) {
    let report = chaos.run();
    eprintln!("chaos: {}", report.summary());
    assert!(
        report.problems.is_empty(),
        "{}\n{}",
        report.summary(),
        report.problems.join("\n")
    );
    assert_eq!(report.runs_ended, report.runs, "{}", report.summary());
    assert!(
        !report.takeover.is_empty(),
        "no kill happened while work ran: {}",
        report.summary()
    );
}

#[test]
fn kill_9_of_standalone_on_sqlite_loses_and_doubles_nothing() {
    check(Chaos {
        tern: env!("CARGO_BIN_EXE_tern").into(),
        database_url: None,
        servers: 1,
        rounds: 6,
        runs: 4,
        tasks_per_run: 100,
        max_down: Duration::from_millis(300),
        seed: 11,
        object_store_logs: false,
    });
}

#[test]
fn kill_9_of_one_of_two_servers_on_postgres_loses_and_doubles_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(tern_testkit::TestDb::postgres());
    check(Chaos {
        tern: env!("CARGO_BIN_EXE_tern").into(),
        database_url: Some(db.url.clone()),
        servers: 2,
        rounds: 4,
        runs: 4,
        tasks_per_run: 100,
        max_down: Duration::from_secs(2),
        seed: 12,
        object_store_logs: false,
    });
    drop(db);
}

/// The production set-up of issue 13: two servers on one PostgreSQL, each with its own data
/// folder, task logs in an object store; one of them killed with SIGKILL three times during
/// 2,000 tasks. Every run ends, nothing is lost or succeeds twice, every successful try's log
/// is whole in the store (or still in the database), and no server kept a log on its disk.
#[test]
fn kill_9_of_one_of_two_servers_with_logs_in_an_object_store_during_2000_tasks() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(tern_testkit::TestDb::postgres());
    let chaos = Chaos {
        tern: env!("CARGO_BIN_EXE_tern").into(),
        database_url: Some(db.url.clone()),
        servers: 2,
        rounds: 3,
        runs: 10,
        tasks_per_run: 200,
        max_down: Duration::from_secs(2),
        seed: 13,
        object_store_logs: true,
    };
    let report = chaos.run();
    eprintln!(
        "chaos: {} logs shipped: {}",
        report.summary(),
        report.logs_shipped
    );
    assert!(report.problems.is_empty(), "{}", report.problems.join("\n"));
    assert_eq!(report.runs_ended, report.runs, "{}", report.summary());
    assert_eq!(report.tasks, 2000);
    assert!(
        !report.takeover.is_empty(),
        "no kill happened while work ran"
    );
    assert!(
        report.logs_shipped > 1000,
        "{} logs shipped",
        report.logs_shipped
    );
    drop(db);
}

/// PostgreSQL restarted, then down for several seconds, under a workload: tern reconnects by
/// itself, `/health` says the database is out (and answers at once), and every task ends with
/// at most one recorded success.
#[test]
fn a_postgres_restart_and_outage_are_survived_and_reported() {
    use crate::harness::{finished, http, run_state, Tern};
    use std::time::Instant;
    let pg = tern_testkit::postgres::PrivatePostgres::start();
    let mut t = Tern::new();
    t.database_url = Some(pg.url("postgres"));
    t.write_dag(
        "steady.star",
        "d = dag(id = \"steady\", max_active_tasks = 8)\nfor i in range(120):\n    shell(id = \"t%d\" % i, retries = 10, retry_delay = \"0s\", cmd = \"sleep 0.1; echo done\")\n",
    );
    let (_server, url) = crate::links::server_on(&t, 0);
    let run_id = t.trigger("steady", None);
    std::thread::sleep(Duration::from_millis(800));
    pg.restart();
    std::thread::sleep(Duration::from_millis(800));
    pg.stop();
    // While it is down, health answers at once and says so.
    let down_since = Instant::now();
    let mut reported = 0;
    while down_since.elapsed() < Duration::from_secs(6) {
        let asked = Instant::now();
        let (status, body) = http(&url, "GET", "/health", &[], "");
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(3), "/health took {took:?}");
        if status == 503 && body.contains("\"database\"") && !body.contains("\"database\":\"ok\"") {
            reported += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(reported > 0, "/health never reported the database outage");
    pg.start_again();
    let v = t.wait_run("steady", &run_id, "the run after the outage", finished);
    assert_eq!(run_state(&v), "success", "{v:#}");
    for (task, tries) in v["tries"].as_object().unwrap() {
        let successes = tries
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "success")
            .count();
        assert_eq!(successes, 1, "{task}: {tries:#}");
    }
    let (status, _) = http(&url, "GET", "/health", &[], "");
    assert_eq!(status, 200, "health is back with the database");
}

/// Two servers on one PostgreSQL with a long lease: one is killed while its local agent runs a
/// task, and stays down. The survivor fails the task over when the dead server's heartbeats
/// stop (seconds), not when the 5-minute lease would run out.
#[test]
fn a_dead_servers_work_is_failed_over_within_seconds() {
    use crate::harness::{finished, run_state, task, Tern};
    use std::time::Instant;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(tern_testkit::TestDb::postgres());
    let mut t = Tern::new();
    t.database_url = Some(db.url.clone());
    t.with_lease("5m");
    t.write_dag(
        "long.star",
        "d = dag(id = \"long\")\nshell(id = \"t\", retries = 1, retry_delay = \"0s\", cmd = \"if [ $TERN_TRY_NUMBER = 1 ]; then sleep 60; fi; echo ok\")\n",
    );
    let (mut a, _) = crate::links::server_on(&t, 0);
    let run_id = t.trigger("long", None);
    t.wait_run("long", &run_id, "the first try on the first server", |v| {
        task(v, "t")["state"] == "running"
    });
    // Only now the second server starts: the task is surely held by the first.
    let (_b, _) = crate::links::server_on(&t, 0);
    let _ = a.child.kill(); // SIGKILL
    let _ = a.child.wait();
    let killed = Instant::now();
    let v = t.wait_run(
        "long",
        &run_id,
        "the retry on the surviving server",
        finished,
    );
    let took = killed.elapsed();
    assert_eq!(run_state(&v), "success", "{v:#}");
    assert_eq!(task(&v, "t")["try_number"], 2, "{v:#}");
    assert!(
        v["tries"]["t"][0]["note"]
            .as_str()
            .unwrap_or("")
            .contains("stopped heartbeating"),
        "{v:#}"
    );
    assert!(
        took < Duration::from_secs(30),
        "failover took {took:?}; the lease is 5 minutes, heartbeats stop after seconds"
    );
    drop(db);
}
