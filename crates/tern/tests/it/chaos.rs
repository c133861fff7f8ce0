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
    });
    drop(db);
}
