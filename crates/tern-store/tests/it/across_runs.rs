//! `dagrun_timeout` and `max_consecutive_failed_dag_runs` in the store, with a clock the test
//! moves: a run past its timeout fails, its tasks are skipped and a running attempt's result
//! and heartbeat are refused; a DAG pauses after its last N runs failed, not before.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tern_core::{RunState, RunType, TaskState};
use tern_store::{ManualClock, NewRun, Store, TryResult};
use tern_testkit::{dag, task};

use crate::flow::version;

const LEASE: Duration = Duration::from_secs(30);

fn run_at(dag_id: &str, run_id: &str, secs: i64) -> NewRun {
    let at = Utc::now() + chrono::Duration::seconds(secs);
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type: RunType::Manual,
        logical_date: at,
        data_interval: tern_core::DataInterval { start: at, end: at },
        conf: json!({}),
        params: json!({}),
    }
}

fn queues() -> Vec<String> {
    vec!["default".to_string()]
}

pub async fn a_run_past_its_dagrun_timeout_fails_and_its_running_task_is_stopped(store: Store) {
    let clock = ManualClock::at(Utc::now());
    let store = store.with_clock(clock.clone());
    let mut spec = dag("slow", vec![task("a", &[]), task("b", &["a"])]);
    spec.dagrun_timeout_ms = Some(60_000);
    spec.max_active_runs = 1;
    spec.on_failure = vec!["hook".into()];
    let v = version(&store, spec).await;
    let (run, _) = store.create_run(&run_at("slow", "r1", 0), v).await.unwrap();
    let (next, _) = store.create_run(&run_at("slow", "r2", 1), v).await.unwrap();
    assert_eq!(
        store.get_run_by_pk(next.pk).await.unwrap().state,
        RunState::Queued
    );
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert!(store
        .heartbeat(c.ti.id, &c.attempt, "w", LEASE)
        .await
        .unwrap());

    clock.advance(Duration::from_secs(59));
    assert_eq!(store.time_out_runs().await.unwrap(), 0, "not yet");
    assert_eq!(
        store.get_run_by_pk(run.pk).await.unwrap().state,
        RunState::Running
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(store.time_out_runs().await.unwrap(), 1);
    assert_eq!(store.time_out_runs().await.unwrap(), 0, "once");

    let r = store.get_run_by_pk(run.pk).await.unwrap();
    assert_eq!(r.state, RunState::Failed);
    for t in ["a", "b"] {
        let ti = store.task_instance(run.pk, t).await.unwrap();
        assert_eq!(ti.state, TaskState::Skipped, "{t}");
        assert_eq!(
            ti.note.as_deref(),
            Some("skipped: the run exceeded its dagrun_timeout of 1m"),
            "{t}"
        );
    }
    // The agent still running `a` is told at its next heartbeat, and its result changes nothing.
    assert!(!store
        .heartbeat(c.ti.id, &c.attempt, "w", LEASE)
        .await
        .unwrap());
    let late = TryResult {
        success: true,
        ..TryResult::default()
    };
    let applied = store.complete(c.ti.id, &c.attempt, &late).await.unwrap();
    assert!(!applied.accepted);
    assert_eq!(
        store.task_instance(run.pk, "a").await.unwrap().state,
        TaskState::Skipped
    );
    // Like a run that failed by itself: on_failure is notified and the next run starts.
    let sent: Vec<(String, String)> = store
        .list_notifications(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|n| (n.event, n.run_id))
        .collect();
    assert_eq!(sent, [("dag_run_failed".to_string(), "r1".to_string())]);
    assert_eq!(
        store.get_run_by_pk(next.pk).await.unwrap().state,
        RunState::Running
    );
    // A DAG without a timeout is never timed out.
    let v2 = version(&store, dag("patient", vec![task("a", &[])])).await;
    let (p, _) = store
        .create_run(&run_at("patient", "p1", 0), v2)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(86_400 * 30));
    store.time_out_runs().await.unwrap();
    assert_eq!(
        store.get_run_by_pk(p.pk).await.unwrap().state,
        RunState::Running
    );
}

pub async fn a_dag_pauses_after_its_last_n_runs_failed(store: Store) {
    let mut spec = dag("flaky", vec![task("a", &[])]);
    spec.max_consecutive_failed_dag_runs = 2;
    let v = version(&store, spec).await;
    let fail = TryResult {
        success: false,
        retryable: false,
        note: Some("exit code 1".into()),
        ..TryResult::default()
    };
    let ok = TryResult {
        success: true,
        ..TryResult::default()
    };
    let paused = |store: Store| async move {
        store
            .list_dags()
            .await
            .unwrap()
            .into_iter()
            .find(|d| d.dag_id == "flaky")
            .unwrap()
            .is_paused
    };
    for (i, (result, want_paused)) in [(&fail, false), (&ok, false), (&fail, false), (&fail, true)]
        .into_iter()
        .enumerate()
    {
        let (run, _) = store
            .create_run(&run_at("flaky", &format!("r{i}"), i as i64), v)
            .await
            .unwrap();
        let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
        store.complete(c.ti.id, &c.attempt, result).await.unwrap();
        let want = if result.success {
            RunState::Success
        } else {
            RunState::Failed
        };
        assert_eq!(
            store.get_run_by_pk(run.pk).await.unwrap().state,
            want,
            "run {i}"
        );
        assert_eq!(paused(store.clone()).await, want_paused, "after run {i}");
    }
    let audit = store.audit_log(10).await.unwrap();
    assert!(
        audit.iter().any(|e| e.action == "dag.pause"
            && e.actor == "scheduler"
            && e.target == "flaky"
            && e.detail.contains("last 2 runs failed")),
        "{audit:?}"
    );
}

/// Claims the queued instance of `task` in `run_pk` (there must be one).
async fn claim_of(store: &Store, run_pk: i64, task: &str) -> (i64, String) {
    let ti = store.task_instance(run_pk, task).await.unwrap();
    assert_eq!(
        ti.state,
        TaskState::Queued,
        "{task} of run {run_pk}: {ti:?}"
    );
    loop {
        let c = store
            .claim(&queues(), "w", LEASE)
            .await
            .unwrap()
            .expect("queued work");
        if c.ti.id == ti.id {
            return (c.ti.id, c.attempt);
        }
        // Another queued instance: give it back for later.
        assert!(store.release_claim(c.ti.id, &c.attempt).await.unwrap());
    }
}

async fn ti_state(store: &Store, run_pk: i64, task: &str) -> (TaskState, Option<String>) {
    let ti = store.task_instance(run_pk, task).await.unwrap();
    (ti.state, ti.note)
}

/// Asserts `task` of `run_pk` waits with a note naming what it waits for.
async fn waits(store: &Store, run_pk: i64, task: &str, on: &str, why: &str) {
    let (state, note) = ti_state(store, run_pk, task).await;
    let note = note.unwrap_or_default();
    assert_eq!(state, TaskState::None, "{task}: {note}");
    assert!(
        note == format!("waiting for the previous run's `{on}` to succeed or be skipped {why}"),
        "{task}: {note}"
    );
}

pub async fn depends_on_past_waits_for_the_previous_run_and_wakes_when_it_ends(store: Store) {
    let mut a = task("a", &[]);
    a.depends_on_past = true;
    let v = version(&store, dag("dp", vec![a, task("b", &["a"])])).await;
    let ok = TryResult {
        success: true,
        ..TryResult::default()
    };
    let fail = TryResult {
        success: false,
        retryable: false,
        note: Some("exit code 1".into()),
        ..TryResult::default()
    };
    let (r1, _) = store.create_run(&run_at("dp", "r1", 0), v).await.unwrap();
    let (r2, _) = store.create_run(&run_at("dp", "r2", 1), v).await.unwrap();
    // The first run has no past; the second waits, and says why.
    assert_eq!(ti_state(&store, r1.pk, "a").await.0, TaskState::Queued);
    waits(&store, r2.pk, "a", "a", "(depends_on_past)").await;
    let (id, attempt) = claim_of(&store, r1.pk, "a").await;
    store.complete(id, &attempt, &fail).await.unwrap();
    // A failure in the past keeps it waiting.
    waits(&store, r2.pk, "a", "a", "(depends_on_past)").await;
    // An operator marks the past success: the next run goes on.
    store
        .mark_task(r1.pk, "a", None, TaskState::Success, "fixed by hand")
        .await
        .unwrap();
    assert_eq!(
        ti_state(&store, r2.pk, "a").await,
        (TaskState::Queued, None)
    );
    // A result wakes the next run too.
    let (r3, _) = store.create_run(&run_at("dp", "r3", 2), v).await.unwrap();
    assert_eq!(ti_state(&store, r3.pk, "a").await.0, TaskState::None);
    let (id, attempt) = claim_of(&store, r2.pk, "a").await;
    store.complete(id, &attempt, &ok).await.unwrap();
    assert_eq!(ti_state(&store, r3.pk, "a").await.0, TaskState::Queued);
    // `b` has no depends_on_past: it ran in r2 as soon as its upstream allowed.
    assert_eq!(ti_state(&store, r2.pk, "b").await.0, TaskState::Queued);
}

pub async fn wait_for_downstream_also_waits_for_the_previous_runs_direct_downstream(store: Store) {
    let mut w = task("w", &[]);
    w.depends_on_past = true;
    w.wait_for_downstream = true;
    let v = version(&store, dag("wd", vec![w, task("x", &["w"])])).await;
    let ok = TryResult {
        success: true,
        ..TryResult::default()
    };
    let (r1, _) = store.create_run(&run_at("wd", "r1", 0), v).await.unwrap();
    let (r2, _) = store.create_run(&run_at("wd", "r2", 1), v).await.unwrap();
    let (id, attempt) = claim_of(&store, r1.pk, "w").await;
    store.complete(id, &attempt, &ok).await.unwrap();
    waits(&store, r2.pk, "w", "x", "(wait_for_downstream of `w`)").await;
    let (id, attempt) = claim_of(&store, r1.pk, "x").await;
    store.complete(id, &attempt, &ok).await.unwrap();
    assert_eq!(
        ti_state(&store, r2.pk, "w").await,
        (TaskState::Queued, None)
    );
}
