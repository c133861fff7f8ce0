//! `dagrun_timeout` and `max_consecutive_failed_dag_runs` in the store, with a clock the test
//! moves: a run past its timeout fails, its tasks are skipped and a running attempt's result
//! and heartbeat are refused; a DAG pauses after its last N runs failed, not before.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tern_core::{RunState, RunType, TaskState};
use tern_store::{ManualClock, NewRun, Store, TryResult};
use tern_testkit::{dag, task};

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

async fn version(store: &Store, spec: tern_core::DagSpec) -> i64 {
    store
        .sync_dags(std::slice::from_ref(&spec), &[])
        .await
        .unwrap();
    store.latest_spec(&spec.dag_id).await.unwrap().0
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
