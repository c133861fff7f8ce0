//! The notifications outbox: rows written with the state changes that cause them, claims that
//! count tries and lapse, outcomes fenced by the try they quote, concurrent claimers.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tern_core::{RunState, TaskState};
use tern_store::notifications::{Delivery, Notification};
use tern_store::{NewRun, Store, TryResult};
use tern_testkit::{dag, task};

const LEASE: Duration = Duration::from_secs(30);

fn queues() -> Vec<String> {
    vec!["default".to_string()]
}

fn new_run(dag_id: &str, run_id: &str) -> NewRun {
    let now = Utc::now();
    NewRun {
        dag_id: dag_id.into(),
        run_id: run_id.into(),
        run_type: tern_core::RunType::Manual,
        logical_date: now,
        data_interval: tern_core::DataInterval {
            start: now,
            end: now,
        },
        conf: json!({}),
        params: json!({}),
    }
}

async fn setup(store: &Store, spec: tern_core::DagSpec) -> i64 {
    store
        .sync_dags(std::slice::from_ref(&spec), &[])
        .await
        .unwrap();
    store.latest_spec(&spec.dag_id).await.unwrap().0
}

fn fail() -> TryResult {
    TryResult {
        success: false,
        retryable: true,
        exit_code: Some(1),
        note: Some("exit code 1".into()),
        ..TryResult::default()
    }
}

/// (event, conn) of every row, oldest first.
async fn rows(store: &Store) -> Vec<Notification> {
    let mut v = store.list_notifications(None, 1000).await.unwrap();
    v.reverse();
    v
}

fn kinds(rows: &[Notification]) -> Vec<(String, String)> {
    rows.iter()
        .map(|n| (n.event.clone(), n.conn.clone()))
        .collect()
}

pub async fn run_ends_and_retries_queue_notifications(store: Store) {
    let mut a = task("a", &[]);
    a.retries = 1;
    a.retry_delay_ms = 0;
    let mut spec = dag("nt", vec![a]);
    spec.on_failure = vec!["hook".into(), "mail".into()];
    spec.on_success = vec!["mail".into()];
    spec.on_retry = vec!["hook".into()];
    let v = setup(&store, spec).await;
    // A DAG that names no connection queues nothing.
    let quiet = setup(&store, dag("quiet", vec![])).await;
    store
        .create_run(&new_run("quiet", "q1"), quiet)
        .await
        .unwrap();
    assert!(rows(&store).await.is_empty());

    let (run, _) = store.create_run(&new_run("nt", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store.complete(c.ti.id, &c.attempt, &fail()).await.unwrap();
    assert_eq!(
        store.task_instance(run.pk, "a").await.unwrap().state,
        TaskState::UpForRetry
    );
    let r = rows(&store).await;
    assert_eq!(kinds(&r), [("task_up_for_retry".into(), "hook".into())]);
    let p = &r[0].payload;
    assert_eq!(
        (
            p["task_id"].as_str(),
            p["try_number"].as_i64(),
            p["max_tries"].as_i64()
        ),
        (Some("a"), Some(1), Some(2))
    );
    assert_eq!(p["note"], "exit code 1");
    assert_eq!(p["run_id"], "r1");
    assert_eq!(
        (r[0].hook.as_str(), r[0].state.as_str(), r[0].tries),
        ("on_retry", "pending", 0)
    );

    store.promote_and_admit().await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    store.complete(c.ti.id, &c.attempt, &fail()).await.unwrap();
    assert_eq!(
        store.get_run("nt", "r1").await.unwrap().state,
        RunState::Failed
    );
    let r = rows(&store).await;
    assert_eq!(
        kinds(&r[1..]),
        [
            ("dag_run_failed".into(), "hook".into()),
            ("dag_run_failed".into(), "mail".into())
        ]
    );
    let p = &r[1].payload;
    assert_eq!(p["state"], "failed");
    assert_eq!(
        p["failed_tasks"],
        json!([{"task_id": "a", "try_number": 2, "note": "exit code 1"}])
    );
    assert!(p["logical_date"].as_str().unwrap().ends_with('Z'));

    // A run that succeeds notifies on_success; a lost attempt with tries left notifies on_retry.
    store.create_run(&new_run("nt", "r2"), v).await.unwrap();
    let c = store
        .claim(&queues(), "w", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let r = rows(&store).await;
    assert_eq!(
        kinds(&r[3..]),
        [("task_up_for_retry".into(), "hook".into())]
    );
    assert!(r[3].payload["note"]
        .as_str()
        .unwrap()
        .contains("attempt lost"));
    store.promote_and_admit().await.unwrap();
    let c2 = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(c2.ti.id, c.ti.id);
    store
        .complete(
            c2.ti.id,
            &c2.attempt,
            &TryResult {
                success: true,
                ..TryResult::default()
            },
        )
        .await
        .unwrap();
    let r = rows(&store).await;
    assert_eq!(
        kinds(&r[4..]),
        [("dag_run_succeeded".into(), "mail".into())]
    );
    assert_eq!(r[4].payload["state"], "success");
    assert!(r[4].payload.get("failed_tasks").is_none());
}

/// A DAG without tasks whose runs succeed at once, notifying `conn`.
async fn instant_dag(store: &Store, dag_id: &str, conn: &str) -> i64 {
    let mut spec = dag(dag_id, vec![]);
    spec.on_success = vec![conn.into()];
    spec.max_active_runs = 1000;
    setup(store, spec).await
}

pub async fn notification_claims_retry_lapse_and_give_up(store: Store) {
    let v = instant_dag(&store, "nc", "hook").await;
    store.create_run(&new_run("nc", "r1"), v).await.unwrap();
    let got = store.claim_notifications(10, LEASE).await.unwrap();
    assert_eq!(got.len(), 1);
    let n = &got[0];
    assert_eq!((n.tries, n.conn.as_str()), (1, "hook"));
    // Held by its claim: nobody else gets it.
    assert!(store
        .claim_notifications(10, LEASE)
        .await
        .unwrap()
        .is_empty());
    // A retry due now is claimed again as the next try; the old try's outcome no longer counts.
    let retry = Delivery::RetryAt {
        at: Utc::now(),
        error: "the webhook answered 503".into(),
    };
    assert!(store.finish_notification(n.id, 1, &retry).await.unwrap());
    let again = store.claim_notifications(10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].tries, 2);
    assert_eq!(
        again[0].last_error.as_deref(),
        Some("the webhook answered 503")
    );
    assert!(!store
        .finish_notification(n.id, 1, &Delivery::Sent)
        .await
        .unwrap());
    // A retry due later is not claimed before its time.
    let later = Delivery::RetryAt {
        at: Utc::now() + chrono::Duration::hours(1),
        error: "timeout".into(),
    };
    assert!(store.finish_notification(n.id, 2, &later).await.unwrap());
    assert!(store
        .claim_notifications(10, LEASE)
        .await
        .unwrap()
        .is_empty());

    // A claim whose sender died lapses: the row is due again (as after a restart).
    store.create_run(&new_run("nc", "r2"), v).await.unwrap();
    let lost = store.claim_notifications(10, Duration::ZERO).await.unwrap();
    assert_eq!(lost.len(), 1);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let retaken = store.claim_notifications(10, LEASE).await.unwrap();
    assert_eq!((retaken[0].id, retaken[0].tries), (lost[0].id, 2));
    let failed = Delivery::Failed {
        error: "connection \"hook\" does not exist".into(),
    };
    assert!(store
        .finish_notification(retaken[0].id, 2, &failed)
        .await
        .unwrap());
    let row = store
        .list_notifications(Some("nc"), 10)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == retaken[0].id)
        .unwrap();
    assert_eq!(row.state, "failed");
    assert!(row.ended_at.is_some());
    assert!(row.last_error.unwrap().contains("does not exist"));
    // Finished rows are not claimed again, and old ones are pruned; pending ones stay.
    assert!(!store
        .finish_notification(row.id, 2, &Delivery::Sent)
        .await
        .unwrap());
    let pruned = store
        .prune_notifications(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(store.list_notifications(None, 10).await.unwrap().len(), 1);
}

pub async fn concurrent_notification_claimers_never_share_a_row(store: Store) {
    let v = instant_dag(&store, "cc", "hook").await;
    for i in 0..40 {
        store
            .create_run(&new_run("cc", &format!("r{i}")), v)
            .await
            .unwrap();
    }
    let mut handles = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim_notifications(3, LEASE).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                for n in got {
                    assert!(store
                        .finish_notification(n.id, n.tries, &Delivery::Sent)
                        .await
                        .unwrap());
                    mine.push(n.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 40, "every row sent once");
    assert_eq!(unique.len(), 40);
    assert!(store
        .list_notifications(Some("cc"), 100)
        .await
        .unwrap()
        .iter()
        .all(|n| n.state == "sent" && n.tries == 1));
}

pub async fn marking_by_hand_notifies_only_when_the_run_is_judged_again(store: Store) {
    let mut spec = dag("om", vec![task("a", &[])]);
    spec.on_failure = vec!["hook".into()];
    spec.on_success = vec!["hook".into()];
    let v = setup(&store, spec).await;
    let (run, _) = store.create_run(&new_run("om", "r1"), v).await.unwrap();
    let c = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    let mut permanent = fail();
    permanent.retryable = false;
    store
        .complete(c.ti.id, &c.attempt, &permanent)
        .await
        .unwrap();
    // Marking the failed task success ends the run again, as a success: both notify.
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
    assert_eq!(
        store.get_run("om", "r1").await.unwrap().state,
        RunState::Success
    );
    // Marking the whole run by hand sends nothing.
    store
        .mark_run(run.pk, RunState::Failed, "marked failed by ana")
        .await
        .unwrap();
    assert_eq!(
        kinds(&rows(&store).await),
        [
            ("dag_run_failed".into(), "hook".into()),
            ("dag_run_succeeded".into(), "hook".into())
        ]
    );
}
