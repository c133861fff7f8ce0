//! Store behaviours, written once and run on each backend by `store_suite!`.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tern_core::{RunState, RunType, TaskState, TriggerRule};
use tern_store::tasks::Queued;
use tern_store::{ClaimNext, ImportErrorRow, ManualClock, NewRun, Store, StoreError, TryResult};
use tern_testkit::{dag, task};

pub use crate::across_runs::*;
pub use crate::browse::*;
pub use crate::flow::*;
pub use crate::live_logs::*;
pub use crate::mapping::*;
pub use crate::model::*;
pub use crate::notifications::*;
pub use crate::sealed::*;

pub(crate) const LEASE: Duration = Duration::from_secs(30);

pub(crate) fn queues() -> Vec<String> {
    vec!["default".to_string()]
}

pub(crate) fn new_run(dag_id: &str, run_id: &str) -> NewRun {
    let now = Utc::now();
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type: RunType::Manual,
        logical_date: now,
        data_interval: tern_core::DataInterval {
            start: now,
            end: now,
        },
        conf: json!({}),
        params: json!({}),
    }
}

pub(crate) async fn setup(store: &Store, spec: tern_core::DagSpec) -> i64 {
    store
        .sync_dags(std::slice::from_ref(&spec), &[])
        .await
        .unwrap();
    store.latest_spec(&spec.dag_id).await.unwrap().0
}

pub(crate) fn ok() -> TryResult {
    TryResult {
        success: true,
        ..TryResult::default()
    }
}

pub(crate) fn fail(retryable: bool) -> TryResult {
    TryResult {
        success: false,
        retryable,
        exit_code: Some(1),
        note: Some("exit code 1".into()),
        ..TryResult::default()
    }
}

/// Awaits `reports` (results sent to `store`) queued while results are paused, then written once
/// all are in: they arrive together, in one batch.
pub(crate) async fn reported_together<F: std::future::Future>(
    store: &Store,
    reports: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let reports: Vec<F> = reports.into_iter().collect();
    let n = reports.len();
    let paused = store.debug_pause_results();
    let (answers, ()) = tokio::join!(futures::future::join_all(reports), async {
        while store.debug_queued_results() < n {
            tokio::task::yield_now().await;
        }
        drop(paused);
    });
    answers
}

async fn states(store: &Store, run_pk: i64) -> Vec<(String, TaskState)> {
    store
        .task_instances(run_pk)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_id, t.state))
        .collect()
}

async fn state_of(store: &Store, run_pk: i64, task: &str) -> TaskState {
    store.task_instance(run_pk, task).await.unwrap().state
}

pub async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.list_dags().await.unwrap().is_empty());
    let pools = store.list_pools().await.unwrap();
    assert_eq!(pools[0].name, "default_pool");

    // A schema from a newer tern: this build refuses it, saying what to do.
    let blob = match store.backend() {
        tern_store::Backend::Sqlite => "X'00'",
        tern_store::Backend::Postgres => "'\\x00'::bytea",
    };
    store
        .debug_execute(&format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99999, 'from a newer tern', TRUE, {blob}, 0)"
        ))
        .await
        .unwrap();
    let e = store.migrate().await.unwrap_err().to_string();
    assert!(
        e.contains("schema version 99999, newer than this tern knows")
            && e.contains("Run that version"),
        "{e}"
    );
}

pub async fn sync_creates_versions_only_when_specs_change(store: Store) {
    let mut spec = dag("d", vec![task("a", &[])]);
    let r = store.sync_dags(&[spec.clone()], &[]).await.unwrap();
    assert_eq!(r.new_versions, vec!["d"]);
    let r = store.sync_dags(&[spec.clone()], &[]).await.unwrap();
    assert!(
        r.new_versions.is_empty(),
        "unchanged spec must not make a version"
    );
    spec.tasks[0].retries = 2;
    store.sync_dags(&[spec.clone()], &[]).await.unwrap();
    let dag_row = store.get_dag("d").await.unwrap();
    assert_eq!(dag_row.version, 2);
    assert_eq!(store.dag_versions("d").await.unwrap().len(), 2);
    let (_, latest) = store.latest_spec("d").await.unwrap();
    assert_eq!(latest.tasks[0].retries, 2);
    // The DAG disappears from a file that loads fine: deactivated.
    let r = store.sync_dags(&[], &[]).await.unwrap();
    assert_eq!(r.deactivated, vec!["d"]);
    assert!(!store.get_dag("d").await.unwrap().is_active);
}

pub async fn import_errors_are_replaced_and_keep_last_good_version(store: Store) {
    let spec = dag("d", vec![task("a", &[])]);
    store
        .sync_dags(std::slice::from_ref(&spec), &[])
        .await
        .unwrap();
    let err = ImportErrorRow {
        file: "d.star".into(),
        line: 3,
        message: "cycle: a -> b -> a".into(),
    };
    let r = store
        .sync_dags(&[], std::slice::from_ref(&err))
        .await
        .unwrap();
    assert!(r.errors_changed);
    assert!(
        r.deactivated.is_empty(),
        "a DAG whose file is broken keeps its last good version"
    );
    assert!(store.get_dag("d").await.unwrap().is_active);
    assert_eq!(store.import_errors().await.unwrap(), vec![err]);
    store.sync_dags(&[spec], &[]).await.unwrap();
    assert!(
        store.import_errors().await.unwrap().is_empty(),
        "fixing the file clears the error"
    );
}

pub async fn chain_advances_on_completion_without_a_tick(store: Store) {
    let v = setup(
        &store,
        dag(
            "chain",
            vec![task("a", &[]), task("b", &["a"]), task("c", &["b"])],
        ),
    )
    .await;
    let (run, queued) = store.create_run(&new_run("chain", "r1"), v).await.unwrap();
    assert!(queued);
    assert_eq!(run.state, RunState::Running);
    for expected in ["a", "b", "c"] {
        let c = store
            .claim(&queues(), "w1", LEASE)
            .await
            .unwrap()
            .expect("a queued task");
        assert_eq!(c.ti.task_id, expected);
        assert_eq!(c.ti.try_number, 1);
        assert!(
            store.claim(&queues(), "w1", LEASE).await.unwrap().is_none(),
            "only one task is ready at a time"
        );
        let applied = store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
        assert!(applied.accepted);
        assert_eq!(applied.run_finished, expected == "c");
    }
    let run = store.get_run("chain", "r1").await.unwrap();
    assert_eq!(run.state, RunState::Success);
    assert!(run.ended_at.is_some());
}

/// `empty` tasks never reach an agent: the scheduler marks them done when their trigger rule
/// lets them run, in the same transaction, and goes on downstream (Airflow's `EmptyOperator`).
pub async fn empty_tasks_are_done_by_the_scheduler(store: Store) {
    use tern_testkit::empty;
    // start (empty) >> work >> join (empty) >> end (empty); skip (empty, all_failed) after work.
    let mut skip = empty("only_if_failed", &["work"]);
    skip.trigger_rule = TriggerRule::AllFailed;
    let v = setup(
        &store,
        dag(
            "e",
            vec![
                empty("start", &[]),
                task("work", &["start"]),
                empty("join", &["work"]),
                empty("end", &["join"]),
                skip,
            ],
        ),
    )
    .await;
    let (run, queued) = store.create_run(&new_run("e", "r1"), v).await.unwrap();
    assert!(
        queued,
        "work is queued at the trigger, behind the empty start"
    );
    assert_eq!(state_of(&store, run.pk, "start").await, TaskState::Success);
    let start = store.task_instance(run.pk, "start").await.unwrap();
    assert_eq!(start.try_number, 0, "no try: no agent ran it");
    assert!(start.started_at.is_some() && start.ended_at.is_some());
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.task_id, "work", "only the real task reaches an agent");
    let applied = store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    assert!(
        applied.run_finished,
        "the empty tasks after it end with its result"
    );
    assert!(store.claim(&queues(), "w", LEASE).await.unwrap().is_none());
    assert_eq!(state_of(&store, run.pk, "join").await, TaskState::Success);
    assert_eq!(state_of(&store, run.pk, "end").await, TaskState::Success);
    assert_eq!(
        state_of(&store, run.pk, "only_if_failed").await,
        TaskState::Skipped
    );
    assert_eq!(
        store.get_run("e", "r1").await.unwrap().state,
        RunState::Success
    );
    // A DAG of only empty tasks ends at its trigger.
    let v = setup(
        &store,
        dag("only", vec![empty("a", &[]), empty("b", &["a"])]),
    )
    .await;
    let (run, queued) = store.create_run(&new_run("only", "r1"), v).await.unwrap();
    assert!(!queued);
    assert_eq!(run.state, RunState::Success, "{run:?}");
}

/// A result never waits for the admission lock: when another transaction holds it
/// (PostgreSQL), the result is recorded at once and admission is left to `admit_now`.
pub async fn a_result_leaves_admission_to_the_admitter_when_the_lock_is_busy(store: Store) {
    let v = setup(&store, dag("adm", vec![task("a", &[]), task("b", &["a"])])).await;
    let (run, _) = store.create_run(&new_run("adm", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    let hold = store.debug_hold_admission_lock().await.unwrap();
    let applied = tokio::time::timeout(
        Duration::from_secs(10),
        store.complete(c.ti.id, &c.attempt, &ok()),
    )
    .await
    .expect("the result does not wait for the admission lock")
    .unwrap();
    assert!(applied.accepted);
    match store.backend() {
        tern_store::Backend::Postgres => {
            assert!(applied.admission_deferred, "{applied:?}");
            assert!(applied.queued_queues.is_empty());
            assert_eq!(state_of(&store, run.pk, "b").await, TaskState::Scheduled);
        }
        // SQLite serialises writers: the lock is always free inside a transaction.
        tern_store::Backend::Sqlite => assert!(!applied.admission_deferred),
    }
    drop(hold);
    let queues_with_work = store.admit_now().await.unwrap();
    if applied.admission_deferred {
        assert_eq!(queues_with_work, vec!["default".to_string()]);
    }
    assert_eq!(state_of(&store, run.pk, "b").await, TaskState::Queued);
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.task_id, "b");
}

/// A DAG at its `max_active_tasks` never starves another DAG, however many of its (more
/// urgent) instances wait: admission leaves full DAGs out of its candidate query instead of
/// reading their instances page after page.
pub async fn a_full_dag_does_not_starve_other_dags(store: Store) {
    store.set_pool("default_pool", 3, "").await.unwrap();
    let mut big = dag(
        "big",
        (0..700)
            .map(|i| {
                let mut t = task(&format!("t{i}"), &[]);
                t.priority_weight = 10;
                t
            })
            .collect(),
    );
    big.max_active_tasks = 1;
    let vb = setup(&store, big).await;
    let vs = setup(&store, dag("small", vec![task("only", &[])])).await;
    store.create_run(&new_run("big", "r1"), vb).await.unwrap();
    let (small, _) = store.create_run(&new_run("small", "r1"), vs).await.unwrap();
    assert_eq!(
        state_of(&store, small.pk, "only").await,
        TaskState::Queued,
        "the small DAG's task is admitted beside the full one"
    );
    // And housekeeping's admission, with both present, admits nothing more of the full DAG.
    store.promote_and_admit().await.unwrap();
    let mut claimed = Vec::new();
    while let Some(c) = store.claim(&queues(), "w", LEASE).await.unwrap() {
        claimed.push(c.ti.dag_id.clone());
    }
    claimed.sort();
    assert_eq!(claimed, vec!["big".to_string(), "small".to_string()]);
}

pub async fn failure_propagates_by_trigger_rules(store: Store) {
    let mut cleanup = task("cleanup", &["b"]);
    cleanup.trigger_rule = TriggerRule::AllDone;
    let mut on_fail = task("alert", &["a"]);
    on_fail.trigger_rule = TriggerRule::OneFailed;
    let v = setup(
        &store,
        dag(
            "tr",
            vec![task("a", &[]), task("b", &["a"]), cleanup, on_fail],
        ),
    )
    .await;
    let (run, _) = store.create_run(&new_run("tr", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store
        .complete(c.ti.id, &c.attempt, &fail(true))
        .await
        .unwrap();
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Failed);
    assert_eq!(
        state_of(&store, run.pk, "b").await,
        TaskState::UpstreamFailed
    );
    // cleanup (all_done after an upstream_failed task) and alert (one_failed) are ready.
    let mut ready = HashSet::new();
    while let Some(c) = store.claim(&queues(), "w", LEASE).await.unwrap() {
        ready.insert(c.ti.task_id.clone());
        store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    }
    assert_eq!(
        ready,
        HashSet::from(["cleanup".to_string(), "alert".to_string()])
    );
    // Leaves are cleanup and alert (both success): the run succeeds, as in Airflow.
    assert_eq!(
        store.get_run("tr", "r1").await.unwrap().state,
        RunState::Success
    );
}

/// A join (`all_success`, the default) keeps waiting while its upstream tasks run, and the
/// results that leave it waiting do not read the states of the whole run (a wide join's every
/// result did: quadratic in its width); a failed upstream task still settles it at once, and
/// the last success schedules it.
/// `root >> m0 … m9 >> join`, the join with `rule`.
fn wide_join(dag_id: &str, rule: TriggerRule) -> tern_core::DagSpec {
    let mut tasks = vec![task("root", &[])];
    let middle: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for m in &middle {
        tasks.push(task(m, &["root"]));
    }
    let ups: Vec<&str> = middle.iter().map(String::as_str).collect();
    let mut join = task("join", &ups);
    join.trigger_rule = rule;
    tasks.push(join);
    dag(dag_id, tasks)
}

/// A run of a [`wide_join`] DAG whose root succeeded and whose ten middle tasks are claimed.
async fn start_wide_join(
    store: &Store,
    dag_id: &str,
    run_id: &str,
    version: i64,
) -> (tern_store::DagRun, Vec<tern_store::Claimed>) {
    let (run, _) = store
        .create_run(&new_run(dag_id, run_id), version)
        .await
        .unwrap();
    let root = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store
        .complete(root.ti.id, &root.attempt, &ok())
        .await
        .unwrap();
    let running = store.claim_many(&queues(), "w", LEASE, 10).await.unwrap();
    assert_eq!(running.len(), 10);
    (run, running)
}

/// Ends a [`wide_join`] run: `last` (the last middle task) succeeds, then the join runs and
/// succeeds unless a failure settled it; the run ends as that says.
async fn finish_wide_join(
    store: &Store,
    dag_id: &str,
    run_id: &str,
    last: &tern_store::Claimed,
    failed: bool,
) {
    store
        .complete(last.ti.id, &last.attempt, &ok())
        .await
        .unwrap();
    if !failed {
        let join = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
        assert_eq!(join.ti.task_id, "join");
        store
            .complete(join.ti.id, &join.attempt, &ok())
            .await
            .unwrap();
    }
    let ended = if failed {
        RunState::Failed
    } else {
        RunState::Success
    };
    assert_eq!(
        store.get_run(dag_id, run_id).await.unwrap().state,
        ended,
        "{dag_id}"
    );
}

pub async fn a_join_waits_without_reading_its_run_and_is_decided_as_before(store: Store) {
    let v = setup(&store, wide_join("wide", TriggerRule::AllSuccess)).await;
    for (run_id, ninth_fails) in [("r1", false), ("r2", true)] {
        let (run, running) = start_wide_join(&store, "wide", run_id, v).await;
        let reads = store.debug_run_state_reads();
        for c in &running[..8] {
            store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
            assert_eq!(state_of(&store, run.pk, "join").await, TaskState::None);
        }
        assert_eq!(
            store.debug_run_state_reads(),
            reads,
            "a result that leaves the join waiting read the whole run"
        );
        let (ninth, last) = (&running[8], &running[9]);
        let ninth_result = if ninth_fails { fail(false) } else { ok() };
        store
            .complete(ninth.ti.id, &ninth.attempt, &ninth_result)
            .await
            .unwrap();
        let (join_now, why) = if ninth_fails {
            (
                TaskState::UpstreamFailed,
                "a failed upstream task settles the join while another still runs",
            )
        } else {
            (TaskState::None, "one upstream task still runs")
        };
        assert_eq!(state_of(&store, run.pk, "join").await, join_now, "{why}");
        finish_wide_join(&store, "wide", run_id, last, ninth_fails).await;
    }
}

pub async fn a_decided_join_is_not_judged_again_at_each_result(store: Store) {
    // `one_success`: the first success decides the join; `all_success`: the first failure.
    for (dag_id, rule, first_fails) in [
        ("one_success_join", TriggerRule::OneSuccess, false),
        ("failed_join", TriggerRule::AllSuccess, true),
    ] {
        let v = setup(&store, wide_join(dag_id, rule)).await;
        let (run, running) = start_wide_join(&store, dag_id, "r1", v).await;
        let first = if first_fails { fail(false) } else { ok() };
        store
            .complete(running[0].ti.id, &running[0].attempt, &first)
            .await
            .unwrap();
        let decided = state_of(&store, run.pk, "join").await;
        let expected = if first_fails {
            TaskState::UpstreamFailed
        } else {
            TaskState::Queued
        };
        assert_eq!(
            decided, expected,
            "{dag_id}: the first result decides the join"
        );
        let reads = store.debug_run_state_reads();
        for c in &running[1..9] {
            store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
            assert_eq!(state_of(&store, run.pk, "join").await, decided, "{dag_id}");
        }
        assert_eq!(
            store.debug_run_state_reads(),
            reads,
            "{dag_id}: a result whose join was already decided read the whole run"
        );
        finish_wide_join(&store, dag_id, "r1", &running[9], first_fails).await;
    }
}

pub async fn retries_wait_for_their_delay_then_run_again(store: Store) {
    let mut a = task("a", &[]);
    a.retries = 2;
    a.retry_delay_ms = 0;
    let v = setup(&store, dag("rt", vec![a])).await;
    let (run, _) = store.create_run(&new_run("rt", "r1"), v).await.unwrap();
    for try_number in 1..=3u32 {
        let c = store.claim(&queues(), "w", LEASE).await.unwrap();
        let c = match c {
            Some(c) => c,
            None => {
                assert_eq!(state_of(&store, run.pk, "a").await, TaskState::UpForRetry);
                assert!(store.promote_and_admit().await.unwrap());
                store
                    .claim(&queues(), "w", LEASE)
                    .await
                    .unwrap()
                    .expect("retry queued")
            }
        };
        assert_eq!(c.ti.try_number, try_number);
        store
            .complete(c.ti.id, &c.attempt, &fail(true))
            .await
            .unwrap();
    }
    let ti = store.task_instance(run.pk, "a").await.unwrap();
    assert_eq!(ti.state, TaskState::Failed);
    let tries = store.task_tries(ti.id).await.unwrap();
    assert_eq!(tries.len(), 3);
    assert!(tries
        .iter()
        .all(|t| t.state == TaskState::Failed && t.exit_code == Some(1)));
    assert_eq!(
        store.get_run("rt", "r1").await.unwrap().state,
        RunState::Failed
    );
}

pub async fn permanent_failure_skips_retries(store: Store) {
    let mut a = task("a", &[]);
    a.retries = 5;
    let v = setup(&store, dag("pf", vec![a])).await;
    let (run, _) = store.create_run(&new_run("pf", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store
        .complete(c.ti.id, &c.attempt, &fail(false))
        .await
        .unwrap();
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Failed);
}

pub async fn stale_attempt_cannot_change_state(store: Store) {
    let mut a = task("a", &[]);
    a.retries = 1;
    a.retry_delay_ms = 0;
    let v = setup(&store, dag("st", vec![a])).await;
    let (run, _) = store.create_run(&new_run("st", "r1"), v).await.unwrap();
    let first = store
        .claim(&queues(), "w", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    store.promote_and_admit().await.unwrap();
    let second = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_ne!(first.attempt, second.attempt);
    let late = store
        .complete(first.ti.id, &first.attempt, &ok())
        .await
        .unwrap();
    assert!(!late.accepted, "the lost attempt's result is fenced");
    assert!(!store
        .heartbeat(first.ti.id, &first.attempt, "w", LEASE)
        .await
        .unwrap());
    assert!(store
        .heartbeat(second.ti.id, &second.attempt, "w", LEASE)
        .await
        .unwrap());
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Running);
    let tries = store.task_tries(first.ti.id).await.unwrap();
    assert!(
        tries[0]
            .note
            .as_deref()
            .unwrap()
            .contains("late result ignored"),
        "{:?}",
        tries[0].note
    );
    store
        .complete(second.ti.id, &second.attempt, &ok())
        .await
        .unwrap();
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Success);
}

pub async fn expired_lease_marks_attempt_lost(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let v = setup(&store, dag("lost", vec![task("a", &[])])).await;
    let (run, _) = store.create_run(&new_run("lost", "r1"), v).await.unwrap();
    let c = store
        .claim(&queues(), "local-7", LEASE)
        .await
        .unwrap()
        .unwrap();
    clock.advance(LEASE - Duration::from_millis(1));
    assert_eq!(
        store.expire_leases().await.unwrap(),
        0,
        "the lease still runs"
    );
    clock.advance(Duration::from_millis(2));
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let ti = store.task_instance(run.pk, "a").await.unwrap();
    assert_eq!(ti.state, TaskState::Failed);
    assert!(ti.note.unwrap().contains("agent local-7 stopped reporting"));
    assert!(
        !store
            .complete(c.ti.id, &c.attempt, &ok())
            .await
            .unwrap()
            .accepted
    );
    assert_eq!(
        store.get_run("lost", "r1").await.unwrap().state,
        RunState::Failed
    );
}

/// An agent registered for `site` and the worker label of its attempts.
async fn site_agent(store: &Store, site: &str) -> (tern_store::agents::Activated, String) {
    let code = store
        .create_activation(site, &[], Duration::from_secs(600))
        .await
        .unwrap();
    let a = store
        .activate(&code.code, "box", "0.1.0", "127.0.0.1")
        .await
        .unwrap();
    let worker = tern_store::agents::agent_worker_name(a.agent.id);
    (a, worker)
}

fn site_task(id: &str, site: &str, retries: u32) -> tern_core::TaskSpec {
    let mut t = task(id, &[]);
    t.queue = format!("site:{site}");
    t.retries = retries;
    t.retry_delay_ms = 0;
    t
}

pub async fn an_unacknowledged_remote_claim_goes_back_without_using_a_try(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let (a, worker) = site_agent(&store, "oslo").await;
    let v = setup(&store, dag("ack", vec![site_task("t", "oslo", 0)])).await;
    let (run, _) = store.create_run(&new_run("ack", "r1"), v).await.unwrap();
    // The claim's answer is lost on the way: the agent never confirms it.
    let lost = store
        .claim(&a.agent.queues, &worker, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lost.ti.try_number, 1);
    clock.advance(LEASE + Duration::from_millis(1));
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let ti = store.task_instance(run.pk, "t").await.unwrap();
    assert_eq!(ti.state, TaskState::Queued, "{:?}", ti.note);
    assert_eq!(ti.try_number, 0, "no try was used");
    assert!(ti.note.unwrap().contains("never started"));
    assert!(store.task_tries(ti.id).await.unwrap().is_empty());
    // A late confirmation of the lost claim is refused.
    assert!(!store
        .heartbeat(lost.ti.id, &lost.attempt, &worker, LEASE)
        .await
        .unwrap());
    // Delivered again, confirmed (the first heartbeat), then silent: now a try is used.
    let c = store
        .claim(&a.agent.queues, &worker, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.ti.try_number, 1);
    assert!(store
        .heartbeat(c.ti.id, &c.attempt, &worker, LEASE)
        .await
        .unwrap());
    clock.advance(LEASE + Duration::from_millis(1));
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let ti = store.task_instance(run.pk, "t").await.unwrap();
    assert_eq!(ti.state, TaskState::Failed);
    assert_eq!(ti.try_number, 1);
    // A claim the control plane could not hand out is released at once, also without a try.
    store
        .clear_tasks(run.pk, &["t".into()], Default::default())
        .await
        .unwrap();
    let c = store
        .claim(&a.agent.queues, &worker, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(store.release_claim(c.ti.id, &c.attempt).await.unwrap());
    assert!(!store.release_claim(c.ti.id, &c.attempt).await.unwrap());
    let ti = store.task_instance(run.pk, "t").await.unwrap();
    assert_eq!((ti.state, ti.try_number), (TaskState::Queued, 1));
}

/// An agent's result claims its next task in the same transaction (what the in-process agent
/// reports): the task the result made ready is claimed by the same statements as any claim
/// (running, a try on record, the agent's name); when the claim leaves nothing queued on the
/// agent's queues, the answer no longer asks for agents to be woken (one would take the write
/// lock for nothing); results written together each claim their own; a remote agent's result
/// claims nothing (its claims are checked against revocation and acknowledged).
pub async fn a_result_claims_the_agents_next_task_in_its_transaction(store: Store) {
    let next = |max| ClaimNext {
        queues: queues(),
        lease: LEASE,
        max,
    };
    let spec = dag(
        "next",
        vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a"]),
            task("d", &["b", "c"]),
        ],
    );
    let v = setup(&store, spec).await;
    let (run, _) = store.create_run(&new_run("next", "r1"), v).await.unwrap();
    let a = store.claim(&queues(), "w1", LEASE).await.unwrap().unwrap();
    let (applied, claimed) = store
        .complete_and_claim(a.ti.id, &a.attempt, "w1", &ok(), next(1))
        .await
        .unwrap();
    assert!(applied.accepted);
    assert_eq!(claimed.len(), 1, "one of the two tasks a made ready");
    let b = claimed[0].clone();
    assert_eq!(b.ti.task_id, "b");
    let ti = store.task_instance(run.pk, "b").await.unwrap();
    assert_eq!(ti.state, TaskState::Running);
    assert_eq!(ti.worker.as_deref(), Some("w1"));
    assert_eq!(ti.try_number, 1);
    let tries = store.task_tries(b.ti.id).await.unwrap();
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].state, TaskState::Running);
    assert_eq!(
        applied.queued_queues,
        queues(),
        "c is still queued: agents are woken for it"
    );
    let c = store.claim(&queues(), "w2", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.task_id, "c");
    // b ends while d still waits for c: nothing to claim.
    let (applied, claimed) = store
        .complete_and_claim(b.ti.id, &b.attempt, "w1", &ok(), next(1))
        .await
        .unwrap();
    assert!(applied.accepted);
    assert!(claimed.is_empty());
    // c ends: d is queued by the result's admission and claimed at once for c's agent, so no
    // agent is to be woken for it (the claim took all it asked for, and the look that goes
    // with it finds nothing more queued).
    let (applied, claimed) = store
        .complete_and_claim(c.ti.id, &c.attempt, "w2", &ok(), next(1))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].ti.task_id, "d");
    assert!(
        applied.queued_queues.is_empty() && !applied.queued_any,
        "the queue was drained by the claim, yet agents are to be woken: {applied:?}"
    );
    assert_eq!(state_of(&store, run.pk, "d").await, TaskState::Running);
    let d = claimed[0].clone();
    let (applied, claimed) = store
        .complete_and_claim(d.ti.id, &d.attempt, "w2", &ok(), next(1))
        .await
        .unwrap();
    assert!(applied.run_finished && claimed.is_empty());
    assert_eq!(
        store.get_run("next", "r1").await.unwrap().state,
        RunState::Success
    );

    // Results written together: each claims its own next task.
    let spec = dag(
        "pairs",
        vec![
            task("x", &[]),
            task("y", &[]),
            task("x2", &["x"]),
            task("y2", &["y"]),
        ],
    );
    let v = setup(&store, spec).await;
    store.create_run(&new_run("pairs", "r1"), v).await.unwrap();
    let roots = store.claim_many(&queues(), "w1", LEASE, 2).await.unwrap();
    assert_eq!(roots.len(), 2);
    let before = store.results_written_together();
    let success = ok();
    let answers = reported_together(
        &store,
        roots
            .iter()
            .map(|r| store.complete_and_claim(r.ti.id, &r.attempt, "w1", &success, next(1))),
    )
    .await;
    assert_eq!(store.results_written_together() - before, 2);
    let mut got: Vec<String> = Vec::new();
    for answer in answers {
        let (applied, claimed) = answer.unwrap();
        assert!(applied.accepted);
        assert_eq!(claimed.len(), 1);
        got.push(claimed[0].ti.task_id.clone());
    }
    got.sort();
    assert_eq!(got, ["x2", "y2"]);

    // A remote agent's result claims nothing, though its queue holds work.
    let (agent, worker) = site_agent(&store, "rome").await;
    let spec = dag(
        "remote",
        vec![site_task("r1", "rome", 0), site_task("r2", "rome", 0)],
    );
    let v = setup(&store, spec).await;
    store.create_run(&new_run("remote", "r1"), v).await.unwrap();
    let r = store
        .claim(&agent.agent.queues, &worker, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .heartbeat(r.ti.id, &r.attempt, &worker, LEASE)
        .await
        .unwrap());
    let remote_next = ClaimNext {
        queues: agent.agent.queues.clone(),
        lease: LEASE,
        max: 1,
    };
    let (applied, claimed) = store
        .complete_and_claim(r.ti.id, &r.attempt, &worker, &ok(), remote_next)
        .await
        .unwrap();
    assert!(applied.accepted);
    assert!(
        claimed.is_empty(),
        "a remote agent's result claimed {claimed:?}"
    );
}

pub async fn a_revoked_agent_is_given_no_work(store: Store) {
    let (a, worker) = site_agent(&store, "lima").await;
    let v = setup(&store, dag("rev", vec![site_task("t", "lima", 0)])).await;
    store.revoke_agent(a.agent.id).await.unwrap();
    let (run, _) = store.create_run(&new_run("rev", "r1"), v).await.unwrap();
    let err = store
        .claim(&a.agent.queues, &worker, LEASE)
        .await
        .expect_err("a revoked agent's claim is refused");
    assert!(matches!(err, StoreError::Revoked(_)), "{err}");
    assert_eq!(state_of(&store, run.pk, "t").await, TaskState::Queued);
    // A worker label naming no registered agent is refused the same way.
    assert!(matches!(
        store.claim(&a.agent.queues, "agent-999", LEASE).await,
        Err(StoreError::Revoked(_))
    ));
}

pub async fn a_queue_timeout_spares_claimed_work_and_earlier_tries(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let mut t = task("t", &[]);
    t.retries = 1;
    t.retry_delay_ms = 0;
    let v = setup(&store, dag("qt", vec![t])).await;
    let (run, _) = store.create_run(&new_run("qt", "r1"), v).await.unwrap();
    let first = store
        .claim(&queues(), "local-1", LEASE)
        .await
        .unwrap()
        .unwrap();
    store
        .complete(first.ti.id, &first.attempt, &fail(true))
        .await
        .unwrap();
    store.promote_and_admit().await.unwrap();
    assert_eq!(state_of(&store, run.pk, "t").await, TaskState::Queued);
    clock.advance(Duration::from_secs(60));
    // Claimed meanwhile: the timeout leaves it alone.
    let second = store
        .claim(&queues(), "local-1", LEASE)
        .await
        .unwrap()
        .unwrap();
    let cutoff = store.now_ms();
    assert_eq!(
        store
            .fail_queued_before("default", cutoff, "test")
            .await
            .unwrap(),
        0
    );
    assert_eq!(state_of(&store, run.pk, "t").await, TaskState::Running);
    // Queued again and timed out: the earlier tries keep their own records.
    store
        .complete(second.ti.id, &second.attempt, &fail(true))
        .await
        .unwrap();
    store
        .clear_tasks(run.pk, &["t".into()], Default::default())
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    let cutoff = store.now_ms();
    assert_eq!(
        store
            .fail_queued_before("default", cutoff, "nobody came")
            .await
            .unwrap(),
        1
    );
    let ti = store.task_instance(run.pk, "t").await.unwrap();
    assert_eq!(ti.state, TaskState::Failed);
    assert!(ti.note.unwrap().contains("nobody came"));
    let tries = store.task_tries(ti.id).await.unwrap();
    assert_eq!(tries.len(), 2);
    assert!(
        tries.iter().all(|t| t.state == TaskState::Failed
            && t.note.as_deref().is_some_and(|n| n.contains("exit code 1"))),
        "{tries:?}"
    );
    assert_eq!(
        store.get_run("qt", "r1").await.unwrap().state,
        RunState::Failed
    );
}

pub async fn housekeeping_ends_runs_whose_tasks_are_all_final(store: Store) {
    let v = setup(
        &store,
        dag("stuck", vec![task("a", &[]), task("b", &["a"])]),
    )
    .await;
    let (run, _) = store.create_run(&new_run("stuck", "r1"), v).await.unwrap();
    let c = store
        .claim(&queues(), "local-1", LEASE)
        .await
        .unwrap()
        .unwrap();
    // What a crash between two statements of an older version could leave: `a` ended, but
    // nothing looked at `b` or the run.
    store
        .debug_set_state(c.ti.id, TaskState::Success)
        .await
        .unwrap();
    assert_eq!(
        store.finish_settled_runs().await.unwrap(),
        0,
        "b can still run"
    );
    assert_eq!(state_of(&store, run.pk, "b").await, TaskState::Queued);
    let b = store
        .claim(&queues(), "local-1", LEASE)
        .await
        .unwrap()
        .unwrap();
    store
        .debug_set_state(b.ti.id, TaskState::Success)
        .await
        .unwrap();
    assert_eq!(
        store.get_run("stuck", "r1").await.unwrap().state,
        RunState::Running
    );
    assert_eq!(store.finish_settled_runs().await.unwrap(), 1);
    assert_eq!(
        store.get_run("stuck", "r1").await.unwrap().state,
        RunState::Success
    );
    assert_eq!(store.finish_settled_runs().await.unwrap(), 0);
}

pub async fn concurrent_claimers_never_share_a_task(store: Store) {
    let mut tasks = vec![task("start", &[])];
    for i in 0..120 {
        tasks.push(task(&format!("t{i}"), &["start"]));
    }
    let mut spec = dag("fan", tasks);
    spec.max_active_tasks = 1000;
    let v = setup(&store, spec).await;
    store.create_run(&new_run("fan", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    // Two claimers look before they claim; two claim at once, as after a queue's signal.
    let mut handles = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut got = Vec::new();
            loop {
                let claimed = if w < 2 {
                    store.claim_many(&queues(), &worker, LEASE, 1).await
                } else {
                    store
                        .claim_many_when(&queues(), &worker, LEASE, 3, Queued::Signalled)
                        .await
                };
                let claimed = claimed.unwrap();
                if claimed.is_empty() {
                    break;
                }
                got.extend(claimed.iter().map(|c| c.ti.id));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 120, "every task claimed");
    assert_eq!(unique.len(), 120, "no task claimed twice");
    // A signal for work another claimer took: nothing is claimed, and the write lock it
    // took is given back (the next write goes through).
    assert!(store
        .claim_many_when(&queues(), "late", LEASE, 4, Queued::Signalled)
        .await
        .unwrap()
        .is_empty());
    store.create_run(&new_run("fan", "r2"), v).await.unwrap();
    let c = store
        .claim_many_when(&queues(), "w0", LEASE, 4, Queued::Signalled)
        .await
        .unwrap();
    assert_eq!(c.len(), 1, "the next run's first task: {c:?}");
    assert_eq!(c[0].ti.task_id, "start");
}

pub async fn pools_cap_running_tasks(store: Store) {
    store.set_pool("db", 2, "two connections").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..5 {
        let mut t = task(&format!("t{i}"), &[]);
        t.pool = "db".into();
        tasks.push(t);
    }
    let v = setup(&store, dag("pooled", tasks)).await;
    let (run, _) = store.create_run(&new_run("pooled", "r1"), v).await.unwrap();
    let count =
        |s: Vec<(String, TaskState)>, st: TaskState| s.iter().filter(|(_, x)| *x == st).count();
    assert_eq!(count(states(&store, run.pk).await, TaskState::Queued), 2);
    assert_eq!(count(states(&store, run.pk).await, TaskState::Scheduled), 3);
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    assert_eq!(
        count(states(&store, run.pk).await, TaskState::Queued),
        2,
        "a freed slot admits the next task at once"
    );
    let pools = store.list_pools().await.unwrap();
    let db = pools.iter().find(|p| p.name == "db").unwrap();
    assert_eq!((db.slots, db.used), (2, 2));
}

pub async fn max_active_runs_queues_later_runs(store: Store) {
    let mut spec = dag("mar", vec![task("a", &[])]);
    spec.max_active_runs = 1;
    let v = setup(&store, spec).await;
    let (r1, _) = store.create_run(&new_run("mar", "r1"), v).await.unwrap();
    let (r2, _) = store.create_run(&new_run("mar", "r2"), v).await.unwrap();
    assert_eq!(r1.state, RunState::Running);
    assert_eq!(r2.state, RunState::Queued);
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.run_pk, r1.pk);
    store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    assert_eq!(
        store.get_run("mar", "r2").await.unwrap().state,
        RunState::Running
    );
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.run_pk, r2.pk);
}

pub async fn duplicate_run_is_a_conflict(store: Store) {
    let v = setup(&store, dag("dup", vec![task("a", &[])])).await;
    store.create_run(&new_run("dup", "r1"), v).await.unwrap();
    let e = store
        .create_run(&new_run("dup", "r1"), v)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    assert_eq!(
        store.list_runs(Some("dup"), None, 10).await.unwrap().len(),
        1
    );
}

pub async fn outputs_are_stored_per_task(store: Store) {
    let v = setup(&store, dag("out", vec![task("a", &[]), task("b", &["a"])])).await;
    let (run, _) = store.create_run(&new_run("out", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    let mut result = ok();
    result.outputs.insert("rows".into(), json!(42));
    result.outputs.insert("path".into(), json!("s3://x/y.csv"));
    store.complete(c.ti.id, &c.attempt, &result).await.unwrap();
    let outputs = store.run_outputs(run.pk).await.unwrap();
    assert_eq!(outputs["a"]["rows"], json!(42));
    assert_eq!(outputs["a"]["path"], json!("s3://x/y.csv"));
    // Another run's outputs are its own.
    let (other, _) = store.create_run(&new_run("out", "r2"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.run_pk, other.pk);
    let mut result = ok();
    result.outputs.insert("rows".into(), json!(7));
    store.complete(c.ti.id, &c.attempt, &result).await.unwrap();
    assert_eq!(
        store.run_outputs(other.pk).await.unwrap()["a"]["rows"],
        json!(7)
    );
    assert_eq!(store.run_outputs(run.pk).await.unwrap(), outputs);

    // Outputs published before outputs were kept by run (schema 17) are found after the
    // upgrade: the schema is taken back to 17 with the outputs in it, and migrated again.
    for sql in [
        "DROP INDEX task_outputs_by_run",
        "ALTER TABLE task_outputs DROP COLUMN run_pk",
        "DELETE FROM _sqlx_migrations WHERE version = 18",
    ] {
        store.debug_execute(sql).await.unwrap();
    }
    store.migrate().await.unwrap();
    assert_eq!(store.run_outputs(run.pk).await.unwrap(), outputs);
    assert_eq!(
        store.run_outputs(other.pk).await.unwrap()["a"]["rows"],
        json!(7)
    );
}

pub async fn pause_is_recorded_and_unknown_dag_is_named(store: Store) {
    setup(&store, dag("p", vec![task("a", &[])])).await;
    store.set_paused("p", true).await.unwrap();
    assert!(store.get_dag("p").await.unwrap().is_paused);
    let e = store.set_paused("nope", true).await.unwrap_err();
    assert!(e.to_string().contains("\"nope\""), "{e}");
}

pub async fn batch_claims_respect_their_limit_and_priority(store: Store) {
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut t = task(&format!("t{i}"), &[]);
        t.priority_weight = i;
        tasks.push(t);
    }
    let v = setup(&store, dag("batch", tasks)).await;
    store.create_run(&new_run("batch", "r1"), v).await.unwrap();
    let first = store.claim_many(&queues(), "w", LEASE, 4).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|c| c.ti.task_id.as_str()).collect();
    assert_eq!(
        ids,
        ["t9", "t8", "t7", "t6"],
        "most urgent first, exactly the limit"
    );
    let attempts: HashSet<&str> = first.iter().map(|c| c.attempt.as_str()).collect();
    assert_eq!(
        attempts.len(),
        4,
        "every claimed instance has its own attempt token"
    );
    let rest = store.claim_many(&queues(), "w", LEASE, 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert!(store
        .claim_many(&queues(), "w", LEASE, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_many(&["other".to_string()], "w", LEASE, 100)
        .await
        .unwrap()
        .is_empty());
    for c in first.iter().chain(rest.iter()) {
        assert_eq!(store.task_tries(c.ti.id).await.unwrap().len(), 1);
        assert!(
            store
                .complete(c.ti.id, &c.attempt, &ok())
                .await
                .unwrap()
                .accepted
        );
    }
}

pub async fn activation_codes_are_single_use_and_expire(store: Store) {
    let code = store
        .create_activation("warsaw", &["extra".to_string()], Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        code.queues,
        vec!["site:warsaw".to_string(), "extra".to_string()]
    );
    let a = store
        .activate(&code.code, "box1", "0.1.0", "127.0.0.1")
        .await
        .unwrap();
    assert_eq!(a.agent.site, "warsaw");
    let again = store
        .activate(&code.code, "box2", "0.1.0", "127.0.0.1")
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already used"), "{again}");
    let expired = store
        .create_activation("warsaw", &[], Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let e = store
        .activate(&expired.code, "box3", "0.1.0", "127.0.0.1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let e = store
        .activate("not-a-code", "box4", "0.1.0", "127.0.0.1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown activation code"), "{e}");
    let e = store
        .create_activation(
            "krakow",
            &["site:warsaw".to_string()],
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("belongs to another site"), "{e}");
    // Only hashes are stored: the token authenticates, its text is nowhere in the table.
    let me = store
        .authenticate_agent(&a.token, "10.0.0.1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me.id, a.agent.id);
    assert_eq!(me.address, "10.0.0.1");
    assert!(store
        .authenticate_agent("wrong", "x")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.list_agents().await.unwrap().len(), 1);
}

pub async fn activation_codes_are_listed_without_their_code_and_can_be_cancelled(store: Store) {
    let used = store
        .create_activation("warsaw", &[], Duration::from_secs(600))
        .await
        .unwrap();
    let agent = store
        .activate(&used.code, "box1", "0.1.0", "127.0.0.1")
        .await
        .unwrap();
    let waiting = store
        .create_activation("krakow", &["extra".to_string()], Duration::from_secs(600))
        .await
        .unwrap();
    let list = store.list_activations(10).await.unwrap();
    assert_eq!(list.len(), 2);
    // Newest first; the code itself is not there to list.
    assert_eq!(
        (list[0].site.as_str(), list[0].state, list[0].agent_id),
        ("krakow", "waiting", None)
    );
    assert_eq!(list[0].queues, vec!["site:krakow", "extra"]);
    assert_eq!(
        (list[1].state, list[1].agent_id),
        ("used", Some(agent.agent.id))
    );
    assert!(!serde_json::to_string(&list)
        .unwrap()
        .contains(&waiting.code));

    store.cancel_activation(list[0].id).await.unwrap();
    assert_eq!(
        store.list_activations(10).await.unwrap()[0].state,
        "expired"
    );
    let e = store
        .activate(&waiting.code, "box2", "0.1.0", "127.0.0.1")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let e = store.cancel_activation(list[1].id).await.unwrap_err();
    assert!(e.to_string().contains("already used"), "{e}");
    let e = store.cancel_activation(9999).await.unwrap_err();
    assert!(e.to_string().contains("no activation code 9999"), "{e}");
}

pub async fn revoked_agents_are_refused_and_lose_their_attempts(store: Store) {
    let code = store
        .create_activation("warsaw", &[], Duration::from_secs(600))
        .await
        .unwrap();
    let a = store
        .activate(&code.code, "box", "0.1.0", "127.0.0.1")
        .await
        .unwrap();
    let mut t = task("remote", &[]);
    t.queue = "site:warsaw".into();
    t.retries = 1;
    t.retry_delay_ms = 0;
    let v = setup(&store, dag("site", vec![t])).await;
    let (run, _) = store.create_run(&new_run("site", "r1"), v).await.unwrap();
    assert!(
        store
            .claim(&queues(), "local", LEASE)
            .await
            .unwrap()
            .is_none(),
        "a site task never goes to another queue"
    );
    let worker = tern_store::agents::agent_worker_name(a.agent.id);
    let c = store
        .claim(&a.agent.queues, &worker, LEASE)
        .await
        .unwrap()
        .expect("the site's agent gets it");
    assert_eq!(store.revoke_agent(a.agent.id).await.unwrap(), 1);
    assert!(store
        .authenticate_agent(&a.token, "x")
        .await
        .unwrap()
        .is_none());
    let ti = store.task_instance(run.pk, "remote").await.unwrap();
    assert_eq!(ti.state, TaskState::UpForRetry);
    assert!(ti.note.unwrap().contains("revoked"));
    assert!(
        !store
            .complete(c.ti.id, &c.attempt, &ok())
            .await
            .unwrap()
            .accepted
    );
    assert!(store.get_agent(a.agent.id).await.unwrap().revoked);
}

pub async fn concurrent_syncs_of_a_new_dag_make_one_version(store: Store) {
    let spec = dag("race", vec![task("a", &[])]);
    let mut handles = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let spec = spec.clone();
        handles.push(tokio::spawn(
            async move { store.sync_dags(&[spec], &[]).await },
        ));
    }
    for h in handles {
        h.await.unwrap().expect("every concurrent sync succeeds");
    }
    assert_eq!(store.dag_versions("race").await.unwrap().len(), 1);
}

pub async fn only_the_holding_agent_reports_and_restart_extends_leases(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let (holder, w1) = site_agent(&store, "held").await;
    let (_other, w2) = site_agent(&store, "held").await;
    let v = setup(&store, dag("held", vec![site_task("a", "held", 0)])).await;
    let (run, _) = store.create_run(&new_run("held", "r1"), v).await.unwrap();
    let c = store
        .claim(&holder.agent.queues, &w1, LEASE)
        .await
        .unwrap()
        .unwrap();
    // Another agent quoting the right token is still not the holder.
    assert!(!store
        .heartbeat(c.ti.id, &c.attempt, &w2, LEASE)
        .await
        .unwrap());
    assert!(store
        .current_log_path(c.ti.id, &c.attempt, &w2)
        .await
        .unwrap()
        .is_none());
    let foreign = store
        .complete_by(c.ti.id, &c.attempt, Some(&w2), &ok())
        .await
        .unwrap();
    assert!(!foreign.accepted);
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Running);
    // A restarting control plane gives the expired lease another period instead of losing it.
    clock.advance(LEASE + Duration::from_millis(1));
    assert_eq!(store.extend_remote_leases(LEASE).await.unwrap(), 1);
    assert_eq!(store.expire_leases().await.unwrap(), 0);
    assert!(store
        .current_log_path(c.ti.id, &c.attempt, &w1)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .heartbeat(c.ti.id, &c.attempt, &w1, LEASE)
        .await
        .unwrap());
    let own = store
        .complete_by(c.ti.id, &c.attempt, Some(&w1), &ok())
        .await
        .unwrap();
    assert!(own.accepted);
    assert!(store
        .current_log_path(c.ti.id, &c.attempt, &w1)
        .await
        .unwrap()
        .is_none());
}

pub(crate) fn sensor_task(
    id: &str,
    up: &[&str],
    timeout_ms: u64,
    soft_fail: bool,
) -> tern_core::TaskSpec {
    let mut t = task(id, up);
    t.kind = tern_core::TaskKind::Sensor(tern_core::SensorTask {
        check: tern_core::SensorCheck::File {
            path: "/nonexistent".into(),
        },
        poke_interval_ms: 10,
        timeout_ms,
        soft_fail,
    });
    t.retries = 3;
    t.retry_delay_ms = 0;
    t
}

pub(crate) fn not_yet(after_ms: u64) -> TryResult {
    TryResult {
        success: false,
        retryable: true,
        note: Some("/nonexistent does not exist".into()),
        reschedule_after: Some(Duration::from_millis(after_ms)),
        ..TryResult::default()
    }
}

pub async fn sensor_pokes_keep_their_try_and_free_their_slot(store: Store) {
    let v = setup(
        &store,
        dag(
            "sn",
            vec![
                sensor_task("wait", &[], 3_600_000, false),
                task("after", &["wait"]),
            ],
        ),
    )
    .await;
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let (run, _) = store.create_run(&new_run("sn", "r1"), v).await.unwrap();
    for poke in 1..=3 {
        let c = match store.claim(&queues(), "w", LEASE).await.unwrap() {
            Some(c) => c,
            None => {
                // Not due yet: waits slot-free until its poke interval has passed.
                let ti = store.task_instance(run.pk, "wait").await.unwrap();
                assert_eq!(ti.state, TaskState::UpForReschedule);
                assert_eq!(ti.try_number, 1, "a reschedule keeps the try");
                assert!(ti.note.unwrap().contains("does not exist"));
                assert!(store.next_retry_due().await.unwrap().is_some());
                clock.advance(Duration::from_millis(20));
                assert!(store.promote_and_admit().await.unwrap());
                store
                    .claim(&queues(), "w", LEASE)
                    .await
                    .unwrap()
                    .expect("next poke queued")
            }
        };
        assert_eq!(c.ti.task_id, "wait");
        assert_eq!(c.ti.try_number, 1, "poke {poke} runs on try 1");
        let result = if poke < 3 { not_yet(10) } else { ok() };
        assert!(
            store
                .complete(c.ti.id, &c.attempt, &result)
                .await
                .unwrap()
                .accepted
        );
    }
    let ti = store.task_instance(run.pk, "wait").await.unwrap();
    assert_eq!(ti.state, TaskState::Success);
    let tries = store.task_tries(ti.id).await.unwrap();
    assert_eq!(tries.len(), 1, "pokes share one try: {tries:?}");
    assert_eq!(tries[0].state, TaskState::Success);
    let next = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(next.ti.task_id, "after");
}

pub async fn sensor_timeout_fails_without_retries_or_skips_with_soft_fail(store: Store) {
    let v = setup(
        &store,
        dag(
            "st",
            vec![
                sensor_task("hard", &[], 30, false),
                sensor_task("soft", &[], 30, true),
                task("after_soft", &["soft"]),
            ],
        ),
    )
    .await;
    // The timeouts are 30 ms of the store's clock, which moves only when told: a loaded
    // machine taking longer than that between two pokes must not end a sensor early.
    let started = Utc::now();
    let clock = ManualClock::at(started);
    let store = store.with_clock(clock.clone());
    let (run, _) = store.create_run(&new_run("st", "r1"), v).await.unwrap();
    // First pokes: not met, rescheduled no later than the timeout.
    for _ in 0..2 {
        let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
        store
            .complete(c.ti.id, &c.attempt, &not_yet(60_000))
            .await
            .unwrap();
    }
    let due = store.next_retry_due().await.unwrap().unwrap();
    assert!(
        due <= started + chrono::Duration::milliseconds(30),
        "the next poke is due at the timeout, not after a minute: {due}"
    );
    assert!(store.claim(&queues(), "w", LEASE).await.unwrap().is_none());
    clock.advance(Duration::from_millis(40));
    store.promote_and_admit().await.unwrap();
    // Last pokes, past the timeout: still not met.
    for _ in 0..2 {
        let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
        store
            .complete(c.ti.id, &c.attempt, &not_yet(60_000))
            .await
            .unwrap();
    }
    let hard = store.task_instance(run.pk, "hard").await.unwrap();
    assert_eq!(
        hard.state,
        TaskState::Failed,
        "retries are not used on a timeout"
    );
    assert!(
        hard.note.as_deref().unwrap().contains("sensor timed out"),
        "{:?}",
        hard.note
    );
    assert_eq!(state_of(&store, run.pk, "soft").await, TaskState::Skipped);
    assert_eq!(
        state_of(&store, run.pk, "after_soft").await,
        TaskState::Skipped
    );
    assert_eq!(
        store.get_run("st", "r1").await.unwrap().state,
        RunState::Failed
    );
}

pub async fn users_tokens_and_the_audit_log(store: Store) {
    let u = store
        .create_user("ana", "op", "$argon2id$fake")
        .await
        .unwrap();
    assert_eq!(u.role, "op");
    assert!(matches!(
        store.create_user("ana", "viewer", "x").await,
        Err(StoreError::Conflict(_))
    ));
    let (tok, value) = store.create_token("ana", "ci", None).await.unwrap();
    assert!(value.starts_with("tern_"));
    let who = store.authenticate_token(&value).await.unwrap().unwrap();
    assert_eq!(who.username, "ana");
    assert!(store
        .authenticate_token("tern_other")
        .await
        .unwrap()
        .is_none());
    let past = Utc::now() - chrono::Duration::seconds(1);
    let (_, expired) = store.create_token("ana", "old", Some(past)).await.unwrap();
    assert!(store.authenticate_token(&expired).await.unwrap().is_none());
    store.revoke_token(tok.id).await.unwrap();
    assert!(store.authenticate_token(&value).await.unwrap().is_none());
    assert!(matches!(
        store.revoke_token(tok.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.create_token("nobody", "", None).await,
        Err(StoreError::NotFound(_))
    ));
    store.audit("ana", "run.trigger", "d/r1", "").await.unwrap();
    store.audit("bob", "dag.pause", "d", "").await.unwrap();
    let log = store.audit_log(10).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].action, "dag.pause", "newest first");
}

pub async fn clear_reruns_tasks_with_their_downstream_and_reopens_the_run(store: Store) {
    use tern_store::manage::ClearScope;
    let mut b = task("b", &["a"]);
    b.retries = 1;
    let v = setup(
        &store,
        dag(
            "cl",
            vec![task("a", &[]), b, task("c", &["b"]), task("d", &["a"])],
        ),
    )
    .await;
    let (run, _) = store.create_run(&new_run("cl", "r1"), v).await.unwrap();
    while let Some(c) = store.claim(&queues(), "w", LEASE).await.unwrap() {
        let result = if c.ti.task_id == "b" {
            fail(false)
        } else {
            ok()
        };
        store.complete(c.ti.id, &c.attempt, &result).await.unwrap();
    }
    assert_eq!(
        store.get_run("cl", "r1").await.unwrap().state,
        RunState::Failed
    );
    assert_eq!(
        state_of(&store, run.pk, "c").await,
        TaskState::UpstreamFailed
    );
    // Unknown tasks are named and change nothing.
    let err = store
        .clear_tasks(run.pk, &["b".into(), "zz".into()], ClearScope::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("zz"), "{err}");
    let cleared = store
        .clear_tasks(
            run.pk,
            &["b".into()],
            ClearScope {
                downstream: true,
                upstream: false,
                map_index: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared, vec!["b".to_string(), "c".to_string()]);
    let r = store.get_run("cl", "r1").await.unwrap();
    assert_eq!(r.state, RunState::Running);
    assert!(r.ended_at.is_none());
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Success);
    assert_eq!(state_of(&store, run.pk, "d").await, TaskState::Success);
    // b runs again as its second try, with its retries back; then c.
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!((c.ti.task_id.as_str(), c.ti.try_number), ("b", 2));
    assert_eq!(c.ti.max_tries, 3, "one try used, retries = 1 given again");
    store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c.ti.task_id, "c");
    store.complete(c.ti.id, &c.attempt, &ok()).await.unwrap();
    assert_eq!(
        store.get_run("cl", "r1").await.unwrap().state,
        RunState::Success
    );
    let b = store.task_instance(run.pk, "b").await.unwrap();
    assert_eq!(
        store.task_tries(b.id).await.unwrap().len(),
        2,
        "history kept"
    );
    // Clearing upstream takes a along.
    let cleared = store
        .clear_tasks(
            run.pk,
            &["b".into()],
            ClearScope {
                downstream: false,
                upstream: true,
                map_index: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Queued);
}

pub async fn clearing_a_running_task_fences_its_attempt(store: Store) {
    use tern_store::manage::ClearScope;
    let v = setup(&store, dag("cf", vec![task("a", &[])])).await;
    let (run, _) = store.create_run(&new_run("cf", "r1"), v).await.unwrap();
    let first = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store
        .clear_tasks(run.pk, &["a".into()], ClearScope::default())
        .await
        .unwrap();
    let late = store
        .complete(first.ti.id, &first.attempt, &ok())
        .await
        .unwrap();
    assert!(
        !late.accepted,
        "the cleared attempt's result changes nothing"
    );
    let again = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(again.ti.try_number, 2);
}

pub async fn marking_tasks_and_runs_by_hand(store: Store) {
    let v = setup(
        &store,
        dag(
            "mk",
            vec![task("a", &[]), task("b", &["a"]), task("c", &["b"])],
        ),
    )
    .await;
    let (run, _) = store.create_run(&new_run("mk", "r1"), v).await.unwrap();
    let a = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    // Marking the running task success fences its attempt and lets b go.
    store
        .mark_task(
            run.pk,
            "a",
            None,
            TaskState::Success,
            "marked success by ana",
        )
        .await
        .unwrap();
    assert!(
        !store
            .complete(a.ti.id, &a.attempt, &fail(false))
            .await
            .unwrap()
            .accepted
    );
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Success);
    assert_eq!(state_of(&store, run.pk, "b").await, TaskState::Queued);
    assert!(matches!(
        store
            .mark_task(run.pk, "b", None, TaskState::Running, "x")
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store
            .mark_task(run.pk, "nope", None, TaskState::Failed, "x")
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Marking the run failed ends it: queued b fails, waiting c is skipped.
    store
        .mark_run(run.pk, RunState::Failed, "marked failed by ana")
        .await
        .unwrap();
    assert_eq!(
        states(&store, run.pk).await,
        vec![
            ("a".to_string(), TaskState::Success),
            ("b".to_string(), TaskState::Failed),
            ("c".to_string(), TaskState::Skipped)
        ]
    );
    assert_eq!(
        store.get_run("mk", "r1").await.unwrap().state,
        RunState::Failed
    );
    assert!(store.claim(&queues(), "w", LEASE).await.unwrap().is_none());
    // Marking failed b success in a finished run judges the run again.
    store
        .mark_task(
            run.pk,
            "b",
            None,
            TaskState::Success,
            "marked success by ana",
        )
        .await
        .unwrap();
    store
        .mark_task(
            run.pk,
            "c",
            None,
            TaskState::Success,
            "marked success by ana",
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_run("mk", "r1").await.unwrap().state,
        RunState::Success
    );
    // Deleting removes the run and everything under it.
    store.delete_run(run.pk).await.unwrap();
    assert!(matches!(
        store.get_run("mk", "r1").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_run(run.pk).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn sessions_and_ui_read_models(store: Store) {
    let u = store
        .create_user("ana", "user", "$argon2id$fake")
        .await
        .unwrap();
    let (cookie, csrf) = store
        .create_session(u.id, Duration::from_secs(3600))
        .await
        .unwrap();
    let s = store.find_session(&cookie).await.unwrap().unwrap();
    assert_eq!(
        (s.user.username.as_str(), s.csrf.as_str()),
        ("ana", csrf.as_str())
    );
    assert!(store.find_session("other").await.unwrap().is_none());
    let (short, _) = store.create_session(u.id, Duration::ZERO).await.unwrap();
    assert!(
        store.find_session(&short).await.unwrap().is_none(),
        "expired"
    );
    store.end_session(&cookie).await.unwrap();
    assert!(store.find_session(&cookie).await.unwrap().is_none());

    let v = setup(&store, dag("ov", vec![task("a", &[]), task("b", &["a"])])).await;
    let mut pks = Vec::new();
    for i in 0..4 {
        let mut n = new_run("ov", &format!("r{i}"));
        n.logical_date = Utc::now() + chrono::Duration::seconds(i);
        pks.push(store.create_run(&n, v).await.unwrap().0.pk);
    }
    let recent = store.recent_runs_by_dag(3).await.unwrap();
    let ids: Vec<&str> = recent["ov"].iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, vec!["r3", "r2", "r1"], "newest first, at most 3");
    let cells = store.grid_cells(&pks).await.unwrap();
    assert_eq!(cells.len(), 8);
    assert!(cells.iter().all(|c| pks.contains(&c.run_pk)));
}

/// The last two tasks of a run end at the same moment on different paths (a result and a
/// lease expiry): whichever commits second must see the first and end the run.
pub async fn racing_ends_of_the_last_tasks_always_end_the_run(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let v = setup(&store, dag("race2", vec![task("x", &[]), task("y", &[])])).await;
    for i in 0..40 {
        let run_id = format!("r{i}");
        let (run, _) = store
            .create_run(&new_run("race2", &run_id), v)
            .await
            .unwrap();
        let mut claimed = Vec::new();
        while let Some(c) = store.claim(&queues(), "local-1", LEASE).await.unwrap() {
            claimed.push(c);
        }
        assert_eq!(claimed.len(), 2);
        let (x, y) = (claimed[0].clone(), claimed[1].clone());
        // x renews its lease; y falls silent.
        clock.advance(LEASE / 2);
        assert!(store
            .heartbeat(x.ti.id, &x.attempt, "local-1", LEASE)
            .await
            .unwrap());
        clock.advance(LEASE / 2 + Duration::from_millis(1));
        let (a, b) = (store.clone(), store.clone());
        let done = tokio::spawn(async move { a.complete(x.ti.id, &x.attempt, &ok()).await });
        let lost = tokio::spawn(async move { b.expire_leases().await });
        assert!(done.await.unwrap().unwrap().accepted);
        assert_eq!(lost.await.unwrap().unwrap(), 1);
        let _ = y;
        assert_eq!(
            store.get_run("race2", &run_id).await.unwrap().state,
            RunState::Failed,
            "run {i} ended"
        );
        assert_eq!(state_of(&store, run.pk, "y").await, TaskState::Failed);
    }
}

/// Results reported at the same moment are written together (one transaction, one
/// admission), and each caller learns what its own result did: a stale attempt and another
/// agent's attempt are refused, the rest accepted, the downstream task queued once all its
/// upstream ended, and the run ends with its last result. On PostgreSQL one result the
/// database refuses (a NUL byte in an output's name) fails only itself: the others are
/// written each on its own.
pub async fn results_that_arrive_together_are_each_answered_as_if_alone(store: Store) {
    let mut tasks: Vec<_> = (0..8).map(|i| task(&format!("t{i}"), &[])).collect();
    let ups: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let ups: Vec<&str> = ups.iter().map(String::as_str).collect();
    tasks.push(task("after", &ups));
    let mut spec = dag("together", tasks);
    spec.max_active_tasks = 100;
    let v = setup(&store, spec).await;
    let (run, _) = store
        .create_run(&new_run("together", "r1"), v)
        .await
        .unwrap();
    let claimed = store.claim_many(&queues(), "w1", LEASE, 8).await.unwrap();
    assert_eq!(claimed.len(), 8);
    // t0 is claimed again after its first attempt was released: that first token is stale.
    let stale = claimed[0].clone();
    assert!(store
        .release_claim(stale.ti.id, &stale.attempt)
        .await
        .unwrap());
    let again = store.claim(&queues(), "w1", LEASE).await.unwrap().unwrap();
    assert_eq!(again.ti.id, stale.ti.id);
    let poisoned = store.backend() == tern_store::Backend::Postgres;
    let mut first = vec![
        (stale.ti.id, stale.attempt.clone(), "w1", ok(), false),
        (again.ti.id, again.attempt.clone(), "w2", ok(), false),
    ];
    let mut second = Vec::new();
    for (i, c) in claimed.iter().enumerate().skip(1) {
        let mut result = ok();
        let mut accepted = true;
        if i == 3 && poisoned {
            result.outputs.insert("bad\0name".into(), json!(1));
            accepted = false;
        }
        let round = if i < 3 { &mut first } else { &mut second };
        round.push((c.ti.id, c.attempt.clone(), "w1", result, accepted));
    }
    for (round, reports) in [first, second].iter().enumerate() {
        // Queued while paused, then written once all are in: they arrive together.
        let answers = reported_together(
            &store,
            reports.iter().map(|(id, attempt, worker, result, _)| {
                store.complete_by(*id, attempt, Some(*worker), result)
            }),
        )
        .await;
        for ((id, _, worker, _, accepted), answer) in reports.iter().zip(answers) {
            match answer {
                Ok(applied) => {
                    assert_eq!(applied.accepted, *accepted, "instance {id} from {worker}")
                }
                Err(e) => assert!(
                    poisoned && !accepted && e.to_string().contains("NUL byte"),
                    "instance {id}: {e}"
                ),
            }
        }
        if round == 0 {
            assert_eq!(
                store.results_written_together(),
                4,
                "the first four results were written together"
            );
        }
    }
    let mut left = vec![again.clone()];
    if poisoned {
        left.push(claimed[3].clone());
    }
    assert_eq!(state_of(&store, run.pk, "after").await, TaskState::None);
    for c in &left {
        assert_eq!(
            state_of(&store, run.pk, &c.ti.task_id).await,
            TaskState::Running
        );
        assert!(
            store
                .complete_by(c.ti.id, &c.attempt, Some("w1"), &ok())
                .await
                .unwrap()
                .accepted
        );
    }
    let last = store.claim(&queues(), "w1", LEASE).await.unwrap().unwrap();
    assert_eq!(last.ti.task_id, "after");
    assert!(
        store
            .complete(last.ti.id, &last.attempt, &ok())
            .await
            .unwrap()
            .run_finished
    );
    assert_eq!(
        store.get_run("together", "r1").await.unwrap().state,
        RunState::Success
    );
    for c in &claimed[1..] {
        let tries = store.task_tries(c.ti.id).await.unwrap();
        assert_eq!(tries.len(), 1, "{}: one try", c.ti.task_id);
        assert_eq!(tries[0].state, TaskState::Success);
    }
}

/// Results written together share one read of their instances and one judgement of each run:
/// a result reported twice in one batch is answered as a second report alone would be (its
/// instance read again, not taken from the batch's read), the batch still commits together, and
/// the run that the batch ends is told to exactly one result, the last accepted one of it.
pub async fn a_batch_reads_a_repeated_instance_again_and_tells_one_result_its_run_ended(
    store: Store,
) {
    let spec = dag(
        "repeat",
        vec![task("a", &[]), task("b", &[]), task("c", &[])],
    );
    let v = setup(&store, spec).await;
    store.create_run(&new_run("repeat", "r1"), v).await.unwrap();
    let claimed = store.claim_many(&queues(), "w1", LEASE, 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let by_task = |t: &str| claimed.iter().find(|c| c.ti.task_id == t).unwrap().clone();
    let (a, b, c) = (by_task("a"), by_task("b"), by_task("c"));
    // b's report arrives twice (an agent that retried a report whose answer it did not get).
    let reports = [(&a, true), (&b, true), (&b, false), (&c, true)];
    let before = store.results_written_together();
    let success = ok();
    let answers = reported_together(
        &store,
        reports
            .iter()
            .map(|(x, _)| store.complete_by(x.ti.id, &x.attempt, Some("w1"), &success)),
    )
    .await;
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    for ((x, accepted), applied) in reports.iter().zip(&answers) {
        assert_eq!(applied.accepted, *accepted, "{}", x.ti.task_id);
    }
    assert_eq!(
        store.results_written_together() - before,
        reports.len() as u64,
        "the four reports were written in one transaction"
    );
    let told: Vec<bool> = answers.iter().map(|a| a.run_finished).collect();
    assert_eq!(
        told,
        [false, false, false, true],
        "only c's answer says the run ended"
    );
    assert_eq!(
        store.get_run("repeat", "r1").await.unwrap().state,
        RunState::Success
    );
    let tries = store.task_tries(b.ti.id).await.unwrap();
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].state, TaskState::Success);
}

/// Results that end in a final state (and decide no skips) are held back and written together in
/// one statement, the tasks downstream of them looked at once after; a retry is written as it
/// comes. Each ends as it would alone: its instance, its try (state, exit code, note), the
/// downstream task of the one that has one, the retry of the one that retries, and the run
/// judged once all are in.
pub async fn results_ending_in_a_final_state_are_written_together_in_one_statement(store: Store) {
    let mut retried = task("retried", &[]);
    retried.retries = 1;
    retried.retry_delay_ms = 0;
    let spec = dag(
        "quiet",
        vec![
            task("first", &[]),
            task("next", &["first"]),
            task("leaf", &[]),
            task("failing_leaf", &[]),
            task("after_both", &["leaf", "failing_leaf"]),
            retried,
        ],
    );
    let v = setup(&store, spec).await;
    let (run, _) = store.create_run(&new_run("quiet", "r1"), v).await.unwrap();
    let claimed = store.claim_many(&queues(), "w1", LEASE, 4).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let by_task = |t: &str| claimed.iter().find(|c| c.ti.task_id == t).unwrap().clone();
    let reports = [
        (by_task("first"), ok()),
        (by_task("leaf"), ok()),
        (by_task("failing_leaf"), fail(false)),
        (by_task("retried"), fail(true)),
    ];
    let before = store.quiet_ends_written_together();
    let answers = reported_together(
        &store,
        reports
            .iter()
            .map(|(c, r)| store.complete_by(c.ti.id, &c.attempt, Some("w1"), r)),
    )
    .await;
    for ((c, _), answer) in reports.iter().zip(answers) {
        assert!(answer.unwrap().accepted, "{}", c.ti.task_id);
    }
    assert_eq!(
        store.quiet_ends_written_together() - before,
        3,
        "first, leaf and failing_leaf (final states) were written together"
    );
    let expect = [
        ("first", TaskState::Success),
        ("next", TaskState::Queued),
        ("leaf", TaskState::Success),
        ("failing_leaf", TaskState::Failed),
        ("after_both", TaskState::UpstreamFailed),
        ("retried", TaskState::UpForRetry),
    ];
    for (t, state) in expect {
        assert_eq!(state_of(&store, run.pk, t).await, state, "{t}");
    }
    let failed = store.task_instance(run.pk, "failing_leaf").await.unwrap();
    assert_eq!(failed.note.as_deref(), Some("exit code 1"));
    assert!(failed.ended_at.is_some());
    let tries = store.task_tries(failed.id).await.unwrap();
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].state, TaskState::Failed);
    assert_eq!(tries[0].exit_code, Some(1));
    let leaf_tries = store.task_tries(by_task("leaf").ti.id).await.unwrap();
    assert_eq!(leaf_tries[0].state, TaskState::Success);
    assert!(leaf_tries[0].ended_at.is_some());
    // The run ends (failed: failing_leaf) once next and the retry end; the last of them is
    // written alone and told so.
    store.promote_and_admit().await.unwrap();
    assert_eq!(state_of(&store, run.pk, "retried").await, TaskState::Queued);
    let mut finished = false;
    while let Some(c) = store.claim(&queues(), "w1", LEASE).await.unwrap() {
        finished = store
            .complete_by(c.ti.id, &c.attempt, Some("w1"), &ok())
            .await
            .unwrap()
            .run_finished;
    }
    assert!(finished);
    assert_eq!(
        store.get_run("quiet", "r1").await.unwrap().state,
        RunState::Failed
    );
}

pub async fn a_silent_server_is_failed_over_and_a_live_one_is_not(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let mut t = task("t", &[]);
    t.retries = 1;
    t.retry_delay_ms = 0;
    let v = setup(&store, dag("nodes", vec![t])).await;
    let (run, _) = store.create_run(&new_run("nodes", "r1"), v).await.unwrap();
    store.node_heartbeat("a", "local-a-1").await.unwrap();
    store.node_heartbeat("b", "local-b-2").await.unwrap();
    let c = store
        .claim(&queues(), "local-a-1", LEASE)
        .await
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_secs(3));
    store.node_heartbeat("b", "local-b-2").await.unwrap();
    let silence = Duration::from_secs(5);
    assert!(store
        .fail_over_silent_nodes("b", silence)
        .await
        .unwrap()
        .is_empty());
    clock.advance(Duration::from_secs(3));
    store.node_heartbeat("b", "local-b-2").await.unwrap();
    // a has been silent for 6 s, b beat just now.
    let failed = store.fail_over_silent_nodes("b", silence).await.unwrap();
    assert_eq!(failed, vec![("a".to_string(), 1)]);
    let ti = store.task_instance(run.pk, "t").await.unwrap();
    assert_eq!(ti.state, TaskState::UpForRetry);
    assert!(ti.note.unwrap().contains("stopped heartbeating"));
    assert!(
        !store
            .complete(c.ti.id, &c.attempt, &ok())
            .await
            .unwrap()
            .accepted
    );
    // Gone from the list: nothing more to fail over.
    assert!(store
        .fail_over_silent_nodes("b", silence)
        .await
        .unwrap()
        .is_empty());
    // A server never fails itself over, however long since its last beat; another does.
    clock.advance(Duration::from_secs(60));
    assert!(store
        .fail_over_silent_nodes("b", silence)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.fail_over_silent_nodes("c", silence).await.unwrap(),
        vec![("b".to_string(), 0)]
    );
    // A clean stop leaves the list at once.
    store.node_heartbeat("d", "local-d-4").await.unwrap();
    store.remove_node("d").await.unwrap();
    clock.advance(Duration::from_secs(60));
    assert!(store
        .fail_over_silent_nodes("c", silence)
        .await
        .unwrap()
        .is_empty());
}

pub async fn database_sessions_have_time_limits(store: Store) {
    let limits = store.debug_session_settings().await.unwrap();
    let expected: &[&str] = match store.backend() {
        tern_store::Backend::Sqlite => &["10000"],
        tern_store::Backend::Postgres => &["1min", "15s", "1min"],
    };
    assert_eq!(limits, expected);
}

pub async fn pool_sizes_are_bounded_at_the_edge(store: Store) {
    let err = store
        .set_pool("huge", i64::MAX, "")
        .await
        .expect_err("an absurd pool is refused");
    assert!(err.to_string().contains("from 0 to 1000000"), "{err}");
    assert!(store.set_pool("neg", -1, "").await.is_err());
    // The largest allowed pools together still admit work.
    store
        .set_pool("default_pool", tern_store::pools::MAX_POOL_SLOTS, "")
        .await
        .unwrap();
    store
        .set_pool("other", tern_store::pools::MAX_POOL_SLOTS, "")
        .await
        .unwrap();
    let v = setup(&store, dag("big", vec![task("a", &[])])).await;
    let (run, _) = store.create_run(&new_run("big", "r1"), v).await.unwrap();
    assert_eq!(state_of(&store, run.pk, "a").await, TaskState::Queued);
}

/// A caller that stops waiting for its result (an agent's request dropped) cancels nothing:
/// the writer is a task of its own, so its result and the results queued behind it are all
/// written.
pub async fn a_caller_that_stops_waiting_for_its_result_cancels_nothing(store: Store) {
    let spec = dag("lone", vec![task("a", &[]), task("b", &[])]);
    let v = setup(&store, spec).await;
    store.create_run(&new_run("lone", "r1"), v).await.unwrap();
    let claimed = store.claim_many(&queues(), "w1", LEASE, 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let (a, b) = (&claimed[0], &claimed[1]);
    let success = ok();
    {
        // Boxed, so that dropping it drops the caller's wait.
        let mut first = Box::pin(store.complete_by(a.ti.id, &a.attempt, Some("w1"), &success));
        assert!(futures::poll!(&mut first).is_pending());
        let second = store.complete_by(b.ti.id, &b.attempt, Some("w1"), &success);
        tokio::pin!(second);
        assert!(futures::poll!(&mut second).is_pending());
        drop(first);
        let applied = tokio::time::timeout(std::time::Duration::from_secs(30), second)
            .await
            .expect("the result queued behind a dropped caller was never written")
            .unwrap();
        assert!(applied.accepted);
    }
    let run = store.get_run("lone", "r1").await.unwrap();
    assert_eq!(state_of(&store, run.pk, "b").await, TaskState::Success);
    // The dropped caller's own result was written too: reported again, it is not current.
    let start = std::time::Instant::now();
    while state_of(&store, run.pk, "a").await != TaskState::Success {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the dropped caller's result was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let applied = store
        .complete_by(a.ti.id, &a.attempt, Some("w1"), &success)
        .await
        .unwrap();
    assert!(!applied.accepted);
    assert_eq!(
        store.get_run("lone", "r1").await.unwrap().state,
        RunState::Success
    );
}
