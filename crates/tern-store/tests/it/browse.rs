//! Browsing runs and task instances across DAGs, by DAG, state, queue and logical date.

use chrono::{Duration as Days, Utc};
use serde_json::json;
use tern_core::{RunState, RunType, TaskState};
use tern_store::browse::BrowseFilter;
use tern_store::{NewRun, Store, TryResult};
use tern_testkit::{dag, task};

fn run_at(dag_id: &str, run_id: &str, days_ago: i64) -> NewRun {
    let at = Utc::now() - Days::days(days_ago);
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

pub async fn browsing_filters_runs_and_instances_across_dags(store: Store) {
    let mut on_site = task("remote", &[]);
    on_site.queue = "site-a".into();
    let mut versions = Vec::new();
    for (id, tasks) in [
        ("alpha", vec![task("a1", &[]), on_site]),
        ("beta", vec![task("b1", &[])]),
    ] {
        store.sync_dags(&[dag(id, tasks)], &[]).await.unwrap();
        versions.push(store.get_dag(id).await.unwrap().latest_version_id);
    }
    store
        .create_run(&run_at("alpha", "old", 10), versions[0])
        .await
        .unwrap();
    store
        .create_run(&run_at("alpha", "new", 1), versions[0])
        .await
        .unwrap();
    store
        .create_run(&run_at("beta", "b", 2), versions[1])
        .await
        .unwrap();
    // One task of the default queue fails.
    let c = store
        .claim(
            &["default".to_string()],
            "w",
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap()
        .expect("a default-queue task");
    let fail = TryResult {
        success: false,
        exit_code: Some(1),
        ..TryResult::default()
    };
    store.complete(c.ti.id, &c.attempt, &fail).await.unwrap();

    let all = BrowseFilter::<RunState> {
        limit: 100,
        ..Default::default()
    };
    let runs = store.browse_runs(&all).await.unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, ["new", "b", "old"], "newest logical date first");

    let alpha = BrowseFilter::<RunState> {
        dag_id: Some("alpha".into()),
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    let page: Vec<String> = store
        .browse_runs(&alpha)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(page, ["old"], "one DAG, second page of one");

    let recent = BrowseFilter::<RunState> {
        since: Some(Utc::now() - Days::days(3)),
        until: Some(Utc::now() - Days::days(1) - chrono::Duration::hours(1)),
        limit: 100,
        ..Default::default()
    };
    let page: Vec<String> = store
        .browse_runs(&recent)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(page, ["b"], "logical date in [since, until]");

    let failed_tis = BrowseFilter::<TaskState> {
        state: Some(TaskState::Failed),
        limit: 100,
        ..Default::default()
    };
    let tis = store.browse_task_instances(&failed_tis).await.unwrap();
    assert_eq!(tis.len(), 1, "{tis:?}");
    let failed_ti = &tis[0].instance;
    assert_eq!(failed_ti.task_id, c.ti.task_id);
    assert_eq!(failed_ti.run_id, c.ti.run_id);
    assert_eq!(failed_ti.state, TaskState::Failed);
    let run_of_it = store
        .get_run(&failed_ti.dag_id, &failed_ti.run_id)
        .await
        .unwrap();
    assert_eq!(tis[0].logical_date, run_of_it.logical_date);

    let site = BrowseFilter::<TaskState> {
        queue: Some("site-a".into()),
        limit: 100,
        ..Default::default()
    };
    let on_site: Vec<(String, String)> = store
        .browse_task_instances(&site)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.instance.run_id, b.instance.task_id))
        .collect();
    assert_eq!(
        on_site,
        [
            ("new".to_string(), "remote".to_string()),
            ("old".to_string(), "remote".to_string())
        ],
        "the site's queue, newest instance first"
    );
    let everything = BrowseFilter::<TaskState> {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        store
            .browse_task_instances(&everything)
            .await
            .unwrap()
            .len(),
        5
    );
}

pub async fn the_activity_fingerprint_changes_exactly_when_instances_or_the_audit_log_do(
    store: Store,
) {
    store
        .sync_dags(&[dag("fp", vec![task("a", &[]), task("b", &["a"])])], &[])
        .await
        .unwrap();
    let v = store.get_dag("fp").await.unwrap().latest_version_id;
    let (run, _) = store.create_run(&run_at("fp", "r", 0), v).await.unwrap();
    let fp = || async { store.activity_fingerprint(&[run.pk]).await.unwrap() };
    let estate = || async { store.estate_activity().await.unwrap() };
    let first = fp().await;
    let estate_first = estate().await;
    assert_eq!(fp().await, first, "nothing changed");
    assert_eq!(estate().await, estate_first, "nothing changed");
    let c = store
        .claim(
            &["default".to_string()],
            "w",
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap()
        .unwrap();
    let claimed = fp().await;
    assert_ne!(claimed, first, "a claim starts a try");
    let estate_claimed = estate().await;
    assert_ne!(
        estate_claimed, estate_first,
        "queued → running moves the counts"
    );
    let ok = TryResult {
        success: true,
        ..TryResult::default()
    };
    store.complete(c.ti.id, &c.attempt, &ok).await.unwrap();
    let done = fp().await;
    assert_ne!(done, claimed, "a result ends it and readies the next");
    assert_ne!(estate().await, estate_claimed, "so do the estate's counts");
    store
        .audit("someone", "run.mark", "fp/r", "")
        .await
        .unwrap();
    assert_ne!(fp().await, done, "a change by hand is audited");
    assert_eq!(
        store.activity_fingerprint(&[]).await.unwrap(),
        store.activity_fingerprint(&[]).await.unwrap()
    );
}
