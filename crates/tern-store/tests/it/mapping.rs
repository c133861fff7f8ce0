//! Dynamic task mapping in the store: expansion over upstream outputs, params and literal
//! lists, the list of outputs downstream, empty lists, the length limit, clearing one instance
//! or the whole task, and a property test of mapping sizes driven through the real store.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use tern_core::{Expand, ExpandKey, MapSource, RunState, TaskSpec, TaskState, TriggerRule};
use tern_store::manage::ClearScope;
use tern_store::{Claimed, Store};
use tern_testkit::{dag, task};

use crate::flow::{run_of, success_with, version};

const LEASE: Duration = Duration::from_secs(30);

fn mapped(id: &str, up: &[&str], zip: bool, keys: Vec<(&str, MapSource)>) -> TaskSpec {
    let mut t = task(id, up);
    t.expand = Some(Expand {
        zip,
        keys: keys
            .into_iter()
            .map(|(name, source)| ExpandKey {
                name: name.into(),
                source,
            })
            .collect(),
    });
    t
}

fn output(task: &str, key: &str) -> MapSource {
    MapSource::Output {
        task: task.into(),
        key: key.into(),
    }
}

fn values(v: Value) -> MapSource {
    MapSource::Values {
        values: v.as_array().cloned().unwrap_or_default(),
    }
}

/// Claims every queued task instance (admitting first: a result may have left admission to
/// the admitter).
async fn claim_all(store: &Store) -> Vec<Claimed> {
    store.promote_and_admit().await.unwrap();
    store
        .claim_many(&["default".to_string()], "w", LEASE, 10_000)
        .await
        .unwrap()
}

async fn states_of(store: &Store, run_pk: i64, task: &str) -> Vec<(i64, TaskState)> {
    store
        .task_instances_of(run_pk, task)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.map_index, t.state))
        .collect()
}

/// A run `r1` of DAG `dag_id`: extract >> load (mapped, `key` over extract's output `out`) >>
/// report.
async fn extract_load_report(
    store: &Store,
    dag_id: &str,
    key: &str,
    out: &str,
) -> tern_store::DagRun {
    let spec = dag(
        dag_id,
        vec![
            task("extract", &[]),
            mapped(
                "load",
                &["extract"],
                false,
                vec![(key, output("extract", out))],
            ),
            task("report", &["load"]),
        ],
    );
    let v = version(store, spec).await;
    store.create_run(&run_of(dag_id, "r1"), v).await.unwrap().0
}

/// extract >> load (mapped over extract's `tables`) >> report.
pub async fn a_mapped_task_expands_over_an_upstream_output_and_its_downstream_sees_the_list(
    store: Store,
) {
    let run = extract_load_report(&store, "mp", "table", "tables").await;
    assert_eq!(
        states_of(&store, run.pk, "load").await,
        vec![(-1, TaskState::None)],
        "one unexpanded instance until extract ran"
    );
    let c = claim_all(&store).await;
    assert_eq!(c.len(), 1);
    store
        .complete(
            c[0].ti.id,
            &c[0].attempt,
            &success_with(json!({"tables": ["orders", "customers", "items"]})),
        )
        .await
        .unwrap();
    let mut loads = claim_all(&store).await;
    loads.sort_by_key(|c| c.ti.map_index);
    assert_eq!(
        loads
            .iter()
            .map(|c| (c.ti.task_id.as_str(), c.ti.map_index))
            .collect::<Vec<_>>(),
        vec![("load", 0), ("load", 1), ("load", 2)],
        "one instance per element, each claimable"
    );
    // Each instance has its own log and its own elements.
    assert!(
        loads[1].log_path.ends_with("/load@1.1.log"),
        "{}",
        loads[1].log_path
    );
    for (i, table) in ["orders", "customers", "items"].iter().enumerate() {
        assert_eq!(
            Value::Object(store.map_values(loads[i].ti.id).await.unwrap()),
            json!({"table": table})
        );
    }
    // `report` waits for every instance.
    for c in loads.iter().take(2) {
        store
            .complete(
                c.ti.id,
                &c.attempt,
                &success_with(json!({"rows": c.ti.map_index * 10})),
            )
            .await
            .unwrap();
    }
    assert!(
        claim_all(&store).await.is_empty(),
        "report waits for load[2]"
    );
    store
        .complete(
            loads[2].ti.id,
            &loads[2].attempt,
            &success_with(json!({"rows": 20})),
        )
        .await
        .unwrap();
    let outputs = store.run_outputs(run.pk).await.unwrap();
    assert_eq!(
        outputs["load"]["rows"],
        json!([0, 10, 20]),
        "downstream sees the list of the instances' outputs, by index"
    );
    let report = claim_all(&store).await;
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].ti.task_id, "report");
    assert_eq!(report[0].ti.map_index, -1);
    let applied = store
        .complete(
            report[0].ti.id,
            &report[0].attempt,
            &success_with(json!({})),
        )
        .await
        .unwrap();
    assert!(applied.run_finished);
    assert_eq!(
        store.get_run("mp", "r1").await.unwrap().state,
        RunState::Success
    );
    // A mapped task with several instances is named by index.
    assert!(store.task_instance(run.pk, "load").await.is_err());
    assert_eq!(
        store
            .task_instance_at(run.pk, "load", Some(2))
            .await
            .unwrap()
            .state,
        TaskState::Success
    );
}

/// A failed instance fails the run (the rest still run); clearing it alone runs it again with
/// the same element; clearing the whole task with its producer expands over the new list,
/// keeping the rows it still needs and removing the rest.
pub async fn clearing_one_instance_reruns_it_and_clearing_the_task_expands_it_again(store: Store) {
    let run = extract_load_report(&store, "mc", "n", "ns").await;
    let c = claim_all(&store).await;
    store
        .complete(
            c[0].ti.id,
            &c[0].attempt,
            &success_with(json!({"ns": [1, 2, 3]})),
        )
        .await
        .unwrap();
    for c in claim_all(&store).await {
        let result = if c.ti.map_index == 1 {
            tern_store::TryResult {
                success: false,
                retryable: false,
                note: Some("boom".into()),
                ..Default::default()
            }
        } else {
            success_with(json!({}))
        };
        store.complete(c.ti.id, &c.attempt, &result).await.unwrap();
    }
    assert_eq!(
        states_of(&store, run.pk, "report").await,
        vec![(-1, TaskState::UpstreamFailed)]
    );
    assert_eq!(
        store.get_run("mc", "r1").await.unwrap().state,
        RunState::Failed
    );

    store
        .clear_tasks(
            run.pk,
            &["load".to_string()],
            ClearScope {
                downstream: true,
                upstream: false,
                map_index: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        states_of(&store, run.pk, "load").await,
        vec![
            (0, TaskState::Success),
            (1, TaskState::Queued),
            (2, TaskState::Success)
        ],
        "only the cleared instance runs again"
    );
    let again = claim_all(&store).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        Value::Object(store.map_values(again[0].ti.id).await.unwrap()),
        json!({"n": 2}),
        "with the element it had"
    );
    store
        .complete(again[0].ti.id, &again[0].attempt, &success_with(json!({})))
        .await
        .unwrap();
    let report = claim_all(&store).await;
    assert_eq!(report[0].ti.task_id, "report");
    store
        .complete(
            report[0].ti.id,
            &report[0].attempt,
            &success_with(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_run("mc", "r1").await.unwrap().state,
        RunState::Success
    );

    // The producer again, now with two elements: the third instance is removed.
    store
        .clear_tasks(
            run.pk,
            &["extract".to_string()],
            ClearScope {
                downstream: true,
                upstream: false,
                map_index: None,
            },
        )
        .await
        .unwrap();
    let c = claim_all(&store).await;
    assert_eq!(c[0].ti.task_id, "extract");
    let load_ids: Vec<i64> = store
        .task_instances_of(run.pk, "load")
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    store
        .complete(
            c[0].ti.id,
            &c[0].attempt,
            &success_with(json!({"ns": [7, 8]})),
        )
        .await
        .unwrap();
    let after: Vec<_> = store.task_instances_of(run.pk, "load").await.unwrap();
    assert_eq!(
        after.iter().map(|t| t.id).collect::<Vec<_>>(),
        load_ids,
        "the rows (and their tries) are kept"
    );
    assert_eq!(
        after
            .iter()
            .map(|t| (t.map_index, t.state))
            .collect::<Vec<_>>(),
        vec![
            (0, TaskState::Queued),
            (1, TaskState::Queued),
            (2, TaskState::Removed)
        ]
    );
    for c in claim_all(&store).await {
        store
            .complete(
                c.ti.id,
                &c.attempt,
                &success_with(json!({"n": c.ti.map_index})),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        store.run_outputs(run.pk).await.unwrap()["load"]["n"],
        json!([0, 1]),
        "a removed instance's output is not in the list"
    );
    let report = claim_all(&store).await;
    assert_eq!(
        report.len(),
        1,
        "a removed instance does not hold report back"
    );
    store
        .complete(
            report[0].ti.id,
            &report[0].attempt,
            &success_with(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_run("mc", "r1").await.unwrap().state,
        RunState::Success
    );
}

/// An output that is not a list fails the mapped task with a note naming it; a param list
/// expands like any other.
pub async fn a_list_that_is_not_one_fails_the_task_and_params_expand(store: Store) {
    let mut spec = dag(
        "mf",
        vec![
            task("extract", &[]),
            mapped(
                "load",
                &["extract"],
                false,
                vec![("t", output("extract", "tables"))],
            ),
            mapped(
                "per_country",
                &[],
                false,
                vec![(
                    "c",
                    MapSource::Param {
                        name: "countries".into(),
                    },
                )],
            ),
        ],
    );
    spec.params.insert(
        "countries".into(),
        tern_core::ParamSpec {
            default: json!(["es", "pl"]),
            r#type: None,
            description: None,
            rules: Default::default(),
        },
    );
    let v = version(&store, spec).await;
    let mut new = run_of("mf", "r1");
    new.params = json!({"countries": ["es", "pl", "fr"]});
    let (run, _) = store.create_run(&new, v).await.unwrap();
    assert_eq!(
        states_of(&store, run.pk, "per_country").await.len(),
        3,
        "a root mapped task expands when the run starts, over the run's params"
    );
    let c: Vec<Claimed> = claim_all(&store)
        .await
        .into_iter()
        .filter(|c| c.ti.task_id == "extract")
        .collect();
    store
        .complete(
            c[0].ti.id,
            &c[0].attempt,
            &success_with(json!({"tables": "orders"})),
        )
        .await
        .unwrap();
    let load = store.task_instance(run.pk, "load").await.unwrap();
    assert_eq!(load.state, TaskState::Failed);
    let note = load.note.unwrap();
    assert!(
        note.contains("extract.output(\"tables\") is not a list"),
        "{note}"
    );
}

/// Mapping sizes: every combination (`expand`) or element-wise (`expand_zip`) over lists of 0
/// to 5 elements, with a limit of 1 to 40, driven through the store: as many instances as the
/// model says with the model's elements, or `skipped` for none, or `failed` over the limit, and
/// the downstream tasks and the run follow.
pub async fn mapping_sizes_expand_to_the_model_or_skip_or_fail(store: Store) {
    let cases = if store.backend() == tern_store::Backend::Postgres {
        16
    } else {
        32
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(prop::collection::vec(0i64..100, 0..=5), 1..=3),
        any::<bool>(),
        1usize..=40,
    );
    let case = std::sync::atomic::AtomicU32::new(0);
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |(lists, zip, limit)| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::block_in_place(|| {
            handle.block_on(one_size_case(&store, n, &lists, zip, limit))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

async fn one_size_case(
    store: &Store,
    n: u32,
    lists: &[Vec<i64>],
    zip: bool,
    limit: usize,
) -> Result<(), TestCaseError> {
    let store = store.clone().with_max_map_length(limit);
    let dag_id = format!("size{n}");
    let keys: Vec<(String, MapSource)> = lists
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("k{i}"), values(json!(l))))
        .collect();
    let mut after = task("after", &["m"]);
    after.trigger_rule = TriggerRule::AllSuccess;
    let mut finally = task("finally", &["m"]);
    finally.trigger_rule = TriggerRule::AllDone;
    let spec = dag(
        &dag_id,
        vec![
            mapped(
                "m",
                &[],
                zip,
                keys.iter().map(|(k, s)| (k.as_str(), s.clone())).collect(),
            ),
            after,
            finally,
        ],
    );
    let expand = spec.tasks[0].expand.clone().unwrap();
    let json_lists: Vec<Vec<Value>> = lists
        .iter()
        .map(|l| l.iter().map(|x| json!(x)).collect())
        .collect();
    let model = tern_core::mapping::element_sets(&expand, &json_lists, limit);
    let v = version(&store, spec).await;
    let (run, _) = store.create_run(&run_of(&dag_id, "r"), v).await.unwrap();
    let got = states_of(&store, run.pk, "m").await;
    match &model {
        Err(_) => {
            prop_assert_eq!(got, vec![(-1, TaskState::Failed)]);
            prop_assert_eq!(
                states_of(&store, run.pk, "after").await,
                vec![(-1, TaskState::UpstreamFailed)]
            );
        }
        Ok(sets) if sets.is_empty() => {
            prop_assert_eq!(got, vec![(-1, TaskState::Skipped)]);
            prop_assert_eq!(
                states_of(&store, run.pk, "after").await,
                vec![(-1, TaskState::Skipped)]
            );
        }
        Ok(sets) => {
            prop_assert_eq!(got.len(), sets.len());
            let mut claimed = claim_all(&store).await;
            claimed.sort_by_key(|c| c.ti.map_index);
            prop_assert_eq!(claimed.len(), sets.len());
            for (i, c) in claimed.iter().enumerate() {
                prop_assert_eq!(c.ti.map_index, i as i64);
                prop_assert_eq!(&store.map_values(c.ti.id).await.unwrap(), &sets[i]);
                store
                    .complete(c.ti.id, &c.attempt, &success_with(json!({})))
                    .await
                    .unwrap();
            }
        }
    }
    // Whatever happened to `m`, `after` and `finally` settle and the run ends.
    for _ in 0..3 {
        for c in claim_all(&store).await {
            store
                .complete(c.ti.id, &c.attempt, &success_with(json!({})))
                .await
                .unwrap();
        }
    }
    let run = store.get_run(&dag_id, "r").await.unwrap();
    let want = if model.is_err() {
        RunState::Failed
    } else {
        RunState::Success
    };
    prop_assert_eq!(run.state, want);
    prop_assert_eq!(
        states_of(&store, run.pk, "finally").await,
        vec![(-1, TaskState::Success)],
        "all_done runs whatever the mapped task did"
    );
    Ok(())
}

/// `max_active_tis_per_dag` caps a task's instances queued or running at once (a mapped
/// task's one by one, and across runs); each end lets the next one in.
pub async fn max_active_tis_per_dag_caps_a_mapped_tasks_instances(store: Store) {
    let mut work = mapped(
        "work",
        &[],
        false,
        vec![("n", values(json!([1, 2, 3, 4, 5])))],
    );
    work.max_active_tis_per_dag = Some(2);
    let spec = dag("cap", vec![work, task("free", &[])]);
    let v = version(&store, spec).await;
    store.create_run(&run_of("cap", "r1"), v).await.unwrap();
    store.create_run(&run_of("cap", "r2"), v).await.unwrap();
    let mut running = claim_all(&store).await;
    let count = |c: &[Claimed], t: &str| c.iter().filter(|c| c.ti.task_id == t).count();
    assert_eq!(count(&running, "work"), 2, "two of ten instances at once");
    assert_eq!(count(&running, "free"), 2, "other tasks are not held back");
    let mut done = 0;
    while let Some(c) = running.iter().position(|c| c.ti.task_id == "work") {
        let c = running.remove(c);
        store
            .complete(c.ti.id, &c.attempt, &success_with(json!({})))
            .await
            .unwrap();
        done += 1;
        let more = claim_all(&store).await;
        assert!(count(&more, "work") <= 1, "one end lets one in");
        running.extend(more);
        assert!(count(&running, "work") <= 2);
    }
    assert_eq!(done, 10, "every instance of both runs ran");
}

/// `depends_on_past` on a mapped task waits for every instance of the previous run's, and the
/// last one to succeed lets the next run's task expand.
pub async fn depends_on_past_waits_for_every_instance_of_the_previous_run(store: Store) {
    let mut work = mapped("work", &[], false, vec![("n", values(json!([1, 2])))]);
    work.depends_on_past = true;
    let v = version(&store, dag("dp", vec![work])).await;
    store.create_run(&run_of("dp", "r1"), v).await.unwrap();
    let first = claim_all(&store).await;
    assert_eq!(first.len(), 2);
    let (r2, _) = store.create_run(&run_of("dp", "r2"), v).await.unwrap();
    store
        .complete(first[0].ti.id, &first[0].attempt, &success_with(json!({})))
        .await
        .unwrap();
    assert_eq!(
        states_of(&store, r2.pk, "work").await,
        vec![(-1, TaskState::None)],
        "one instance of the previous run is still running"
    );
    store
        .complete(first[1].ti.id, &first[1].attempt, &success_with(json!({})))
        .await
        .unwrap();
    store.promote_and_admit().await.unwrap();
    assert_eq!(
        states_of(&store, r2.pk, "work").await,
        vec![(0, TaskState::Queued), (1, TaskState::Queued)],
        "the last instance's success lets the next run's task expand"
    );
}
