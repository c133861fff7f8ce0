//! Branches, short circuits, `latest_only` and `skip_on_exit_code` in the store, and a
//! property test of skip propagation: random DAGs with every trigger rule, driven through the
//! real store, against a naive model that re-evaluates every task after every event.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};
use tern_core::trigger::{evaluate, Readiness};
use tern_core::{Flow, RunState, RunType, Schedule, TaskState, TriggerRule, UpstreamSummary};
use tern_store::{ManualClock, NewRun, Store, TryResult};
use tern_testkit::{dag, empty, task};

const LEASE: Duration = Duration::from_secs(30);

pub(crate) fn run_of(dag_id: &str, run_id: &str) -> NewRun {
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

pub(crate) async fn version(store: &Store, spec: tern_core::DagSpec) -> i64 {
    store
        .sync_dags(std::slice::from_ref(&spec), &[])
        .await
        .unwrap();
    store.latest_spec(&spec.dag_id).await.unwrap().0
}

pub(crate) fn success_with(outputs: Value) -> TryResult {
    TryResult {
        success: true,
        outputs: outputs.as_object().cloned().unwrap_or_default(),
        ..TryResult::default()
    }
}

pub(crate) fn exited(code: i32) -> TryResult {
    TryResult {
        success: false,
        retryable: true,
        exit_code: Some(code),
        note: Some(format!("exit code {code}")),
        ..TryResult::default()
    }
}

/// Claims the next queued task of `queue` and checks it is `expect`.
pub(crate) async fn claim(store: &Store, queue: &str, expect: &str) -> (i64, String) {
    let c = store
        .claim(&[queue.to_string()], "w", LEASE)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{expect} should be queued"));
    assert_eq!(c.ti.task_id, expect);
    (c.ti.id, c.attempt)
}

pub(crate) async fn state(store: &Store, run_pk: i64, task: &str) -> (TaskState, Option<String>) {
    let ti = store.task_instance(run_pk, task).await.unwrap();
    (ti.state, ti.note)
}

/// pick (branch) >> [full, incremental]; full >> report; join (none_failed_min_one_success)
/// after report and incremental.
pub async fn a_branch_runs_only_the_tasks_it_chose(store: Store) {
    let mut pick = task("pick", &[]);
    pick.flow = Some(Flow::Branch);
    let mut join = task("join", &["report", "incremental"]);
    join.trigger_rule = TriggerRule::NoneFailedMinOneSuccess;
    let spec = dag(
        "br",
        vec![
            pick,
            task("full", &["pick"]),
            task("incremental", &["pick"]),
            task("report", &["full"]),
            join,
            task("strict", &["report", "incremental"]),
        ],
    );
    let v = version(&store, spec).await;
    let (run, _) = store.create_run(&run_of("br", "r1"), v).await.unwrap();
    let (id, att) = claim(&store, "default", "pick").await;
    store
        .complete(id, &att, &success_with(json!({"follow": "full"})))
        .await
        .unwrap();
    let (st, note) = state(&store, run.pk, "incremental").await;
    assert_eq!(st, TaskState::Skipped);
    assert_eq!(
        note.as_deref(),
        Some("skipped: branch `pick` chose `full`"),
        "the note says who skipped it"
    );
    // The skip reaches `strict` (all_success) at once; `join` waits for `report`.
    assert_eq!(state(&store, run.pk, "strict").await.0, TaskState::Skipped);
    assert_eq!(state(&store, run.pk, "join").await.0, TaskState::None);
    let (id, att) = claim(&store, "default", "full").await;
    store
        .complete(id, &att, &success_with(json!({})))
        .await
        .unwrap();
    let (id, att) = claim(&store, "default", "report").await;
    store
        .complete(id, &att, &success_with(json!({})))
        .await
        .unwrap();
    let (id, att) = claim(&store, "default", "join").await;
    let applied = store
        .complete(id, &att, &success_with(json!({})))
        .await
        .unwrap();
    assert!(applied.run_finished);
    assert_eq!(
        store.get_run("br", "r1").await.unwrap().state,
        RunState::Success
    );

    // Choosing no task skips every direct downstream task, and the run still succeeds.
    let (run, _) = store.create_run(&run_of("br", "r2"), v).await.unwrap();
    let (id, att) = claim(&store, "default", "pick").await;
    let applied = store
        .complete(id, &att, &success_with(json!({"follow": []})))
        .await
        .unwrap();
    assert!(applied.run_finished, "everything after it is skipped");
    for t in ["full", "incremental", "report", "join", "strict"] {
        assert_eq!(state(&store, run.pk, t).await.0, TaskState::Skipped, "{t}");
    }
    assert_eq!(
        store.get_run("br", "r2").await.unwrap().state,
        RunState::Success
    );
}

/// A branch naming a task that is not directly downstream fails its try (retried per its
/// policy), with the choices in the note; nothing downstream is skipped.
pub async fn a_branch_that_chooses_an_unknown_task_fails_its_try(store: Store) {
    let mut pick = task("pick", &[]);
    pick.flow = Some(Flow::Branch);
    pick.retries = 1;
    pick.retry_delay_ms = 0;
    let v = version(
        &store,
        dag("bad", vec![pick, task("a", &["pick"]), task("b", &["a"])]),
    )
    .await;
    let (run, _) = store.create_run(&run_of("bad", "r1"), v).await.unwrap();
    let (id, att) = claim(&store, "default", "pick").await;
    let applied = store
        .complete(id, &att, &success_with(json!({"follow": "b"})))
        .await
        .unwrap();
    assert!(applied.retry_pending);
    let (st, note) = state(&store, run.pk, "pick").await;
    assert_eq!(st, TaskState::UpForRetry);
    let note = note.unwrap();
    assert!(
        note.contains("`b`") && note.contains("direct downstream tasks are: `a`"),
        "{note}"
    );
    assert_eq!(state(&store, run.pk, "a").await.0, TaskState::None);
    store.promote_and_admit().await.unwrap();
    let (id, att) = claim(&store, "default", "pick").await;
    store
        .complete(id, &att, &success_with(json!({})))
        .await
        .unwrap();
    let (st, note) = state(&store, run.pk, "pick").await;
    assert_eq!(st, TaskState::Failed, "out of tries");
    assert!(note.unwrap().contains("wrote no `follow` output"));
    assert_eq!(
        state(&store, run.pk, "a").await.0,
        TaskState::UpstreamFailed
    );
}

/// check (short circuit) >> a >> b, with c (all_done) after a. With the default mode a false
/// condition skips all three whatever their rules; with `ignore_downstream_trigger_rules =
/// false` only `a`, and `c` runs by its rule.
pub async fn a_short_circuit_skips_downstream_by_its_mode(store: Store) {
    for (ignore, c_after) in [(true, TaskState::Skipped), (false, TaskState::Scheduled)] {
        let dag_id = format!("sc{ignore}");
        let mut check = task("check", &[]);
        check.flow = Some(Flow::ShortCircuit {
            ignore_downstream_trigger_rules: ignore,
        });
        let mut c = task("c", &["a"]);
        c.trigger_rule = TriggerRule::AllDone;
        c.queue = "other".into();
        let v = version(
            &store,
            dag(
                &dag_id,
                vec![check, task("a", &["check"]), task("b", &["a"]), c],
            ),
        )
        .await;
        let (run, _) = store.create_run(&run_of(&dag_id, "r1"), v).await.unwrap();
        let (id, att) = claim(&store, "default", "check").await;
        store
            .complete(id, &att, &success_with(json!({"condition": false})))
            .await
            .unwrap();
        assert_eq!(state(&store, run.pk, "check").await.0, TaskState::Success);
        let (st, note) = state(&store, run.pk, "a").await;
        assert_eq!(st, TaskState::Skipped);
        assert!(note.unwrap().contains("short_circuit `check`"));
        assert_eq!(state(&store, run.pk, "b").await.0, TaskState::Skipped);
        let c_now = state(&store, run.pk, "c").await.0;
        let c_now = if c_now == TaskState::Queued {
            TaskState::Scheduled
        } else {
            c_now
        };
        assert_eq!(c_now, c_after, "ignore_downstream_trigger_rules = {ignore}");
        // A true condition lets everything run.
        let (run, _) = store.create_run(&run_of(&dag_id, "r2"), v).await.unwrap();
        let (id, att) = claim(&store, "default", "check").await;
        store
            .complete(id, &att, &success_with(json!({"condition": "yes"})))
            .await
            .unwrap();
        assert_eq!(state(&store, run.pk, "a").await.0, TaskState::Queued);
        claim(&store, "default", "a").await;
    }
}

/// Exit code 99 (in `skip_on_exit_code`) skips the task instead of failing it, uses no retry,
/// and the skip propagates; another exit code still fails.
pub async fn an_exit_code_in_skip_on_exit_code_skips_the_task(store: Store) {
    let mut t = task("t", &[]);
    t.skip_on_exit_code = vec![99];
    t.retries = 3;
    let v = version(&store, dag("sk", vec![t, task("after", &["t"])])).await;
    let (run, _) = store.create_run(&run_of("sk", "r1"), v).await.unwrap();
    let (id, att) = claim(&store, "default", "t").await;
    let applied = store.complete(id, &att, &exited(99)).await.unwrap();
    assert!(applied.run_finished && !applied.retry_pending);
    let (st, note) = state(&store, run.pk, "t").await;
    assert_eq!(st, TaskState::Skipped);
    assert_eq!(
        note.as_deref(),
        Some("skipped: exit code 99 (skip_on_exit_code)")
    );
    let tries = store.task_tries(id).await.unwrap();
    assert_eq!(tries[0].state, TaskState::Skipped);
    assert_eq!(tries[0].exit_code, Some(99));
    assert_eq!(state(&store, run.pk, "after").await.0, TaskState::Skipped);
    assert_eq!(
        store.get_run("sk", "r1").await.unwrap().state,
        RunState::Success
    );

    let (run, _) = store.create_run(&run_of("sk", "r2"), v).await.unwrap();
    let (id, att) = claim(&store, "default", "t").await;
    store.complete(id, &att, &exited(98)).await.unwrap();
    assert_eq!(state(&store, run.pk, "t").await.0, TaskState::UpForRetry);
}

/// latest_only >> work >> after: in a scheduled run whose next interval holds "now" the work
/// runs; in an older one (a catch-up or a backfill) it is skipped; a manual run always runs.
pub async fn latest_only_skips_all_but_the_latest_scheduled_run(store: Store) {
    let at = |t: &str| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
    let clock = ManualClock::at(at("2026-05-02T10:00:00Z"));
    let store = store.with_clock(clock.clone());
    let mut spec = dag(
        "lo",
        vec![
            {
                let mut t = empty("latest", &[]);
                t.kind = tern_core::TaskKind::LatestOnly;
                t
            },
            task("work", &["latest"]),
            task("after", &["work"]),
            task("beside", &[]),
        ],
    );
    spec.schedule = Schedule::parse("@daily").unwrap();
    let v = version(&store, spec).await;
    let scheduled = |run_id: &str, start: &str, end: &str, run_type: RunType| NewRun {
        run_type,
        logical_date: at(start),
        data_interval: tern_core::DataInterval {
            start: at(start),
            end: at(end),
        },
        ..run_of("lo", run_id)
    };
    let old = scheduled(
        "old",
        "2026-04-30T00:00:00Z",
        "2026-05-01T00:00:00Z",
        RunType::Scheduled,
    );
    let (run, _) = store.create_run(&old, v).await.unwrap();
    assert_eq!(state(&store, run.pk, "latest").await.0, TaskState::Success);
    let (st, note) = state(&store, run.pk, "work").await;
    assert_eq!(st, TaskState::Skipped);
    assert_eq!(
        note.as_deref(),
        Some("skipped: not the latest run (latest_only `latest`)")
    );
    assert_eq!(state(&store, run.pk, "after").await.0, TaskState::Skipped);
    assert_eq!(state(&store, run.pk, "beside").await.0, TaskState::Queued);

    let latest = scheduled(
        "latest",
        "2026-05-01T00:00:00Z",
        "2026-05-02T00:00:00Z",
        RunType::Scheduled,
    );
    let (run, _) = store.create_run(&latest, v).await.unwrap();
    assert_eq!(state(&store, run.pk, "work").await.0, TaskState::Queued);

    let backfill = scheduled(
        "bf",
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
        RunType::Backfill,
    );
    let (run, _) = store.create_run(&backfill, v).await.unwrap();
    assert_eq!(state(&store, run.pk, "work").await.0, TaskState::Skipped);

    let (run, _) = store.create_run(&run_of("lo", "by-hand"), v).await.unwrap();
    assert_eq!(state(&store, run.pk, "work").await.0, TaskState::Queued);
}

/// create (setup) >> work >> delete (teardown of create), with other >> work: the teardown
/// runs although the work failed, the run fails for the work and not for the teardown, and
/// clearing the work clears the setup and the teardown with it.
pub async fn a_teardown_runs_after_failed_work_and_clearing_work_clears_its_setup(store: Store) {
    let mut create = task("create", &[]);
    create.setup = true;
    let work = task("work", &["create", "other"]);
    let other = task("other", &[]);
    let mut delete = task("delete", &["create", "work"]);
    delete.teardown = true;
    delete.trigger_rule = TriggerRule::AllDoneSetupSuccess;
    let v = version(&store, dag("st", vec![create, other, work, delete])).await;
    let (run, _) = store.create_run(&run_of("st", "r1"), v).await.unwrap();
    let fail = TryResult {
        success: false,
        retryable: false,
        note: Some("exit code 1".into()),
        ..TryResult::default()
    };
    let ok = success_with(json!({}));
    for (task_id, result) in [("create", &ok), ("other", &ok), ("work", &fail)] {
        let c = store
            .claim(&["default".to_string()], "w", LEASE)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{task_id} should be queued"));
        assert_eq!(c.ti.task_id, task_id);
        store.complete(c.ti.id, &c.attempt, result).await.unwrap();
    }
    assert_eq!(
        state(&store, run.pk, "delete").await.0,
        TaskState::Queued,
        "cleans up after failed work"
    );
    let (id, attempt) = claim(&store, "default", "delete").await;
    store.complete(id, &attempt, &fail).await.unwrap();
    assert_eq!(
        store.get_run("st", "r1").await.unwrap().state,
        RunState::Failed,
        "the work failed"
    );
    // Clearing the work takes its setup and teardown (not `other`, which it does not need again).
    let cleared = store
        .clear_tasks(run.pk, &["work".into()], Default::default())
        .await
        .unwrap();
    assert_eq!(cleared, ["create", "work", "delete"]);
    for (task_id, result) in [("create", &ok), ("work", &ok), ("delete", &fail)] {
        let (id, attempt) = claim(&store, "default", task_id).await;
        store.complete(id, &attempt, result).await.unwrap();
    }
    assert_eq!(
        store.get_run("st", "r1").await.unwrap().state,
        RunState::Success,
        "a failed teardown does not fail the run"
    );
    // A setup that fails leaves nothing to clean up: the teardown does not run.
    let (run, _) = store.create_run(&run_of("st", "r2"), v).await.unwrap();
    for (task_id, result) in [("create", &fail), ("other", &ok)] {
        let (id, attempt) = claim(&store, "default", task_id).await;
        store.complete(id, &attempt, result).await.unwrap();
    }
    assert_eq!(
        state(&store, run.pk, "work").await.0,
        TaskState::UpstreamFailed
    );
    assert_eq!(
        state(&store, run.pk, "delete").await.0,
        TaskState::UpstreamFailed
    );
    assert_eq!(
        store.get_run_by_pk(run.pk).await.unwrap().state,
        RunState::Failed
    );
}

// ---- the property ----------------------------------------------------------------------

/// What a task of a random DAG does when it runs.
#[derive(Debug, Clone)]
enum Role {
    /// 0 success, 1 failure (no retry), 2 exit code 99 (skip).
    Work(u8),
    Empty,
    /// Follows the direct downstream tasks whose bit is set.
    Branch(u8),
    ShortCircuit {
        condition: bool,
        ignore_rules: bool,
    },
}

#[derive(Debug, Clone)]
struct Node {
    ups: Vec<usize>,
    rule: TriggerRule,
    role: Role,
    setup: bool,
    /// A teardown (rule `all_done_setup_success`), and whether its failure fails the run.
    teardown: Option<bool>,
}

const RULES: &[TriggerRule] = &[
    TriggerRule::AllSuccess,
    TriggerRule::AllFailed,
    TriggerRule::AllDone,
    TriggerRule::AllDoneMinOneSuccess,
    TriggerRule::AllSkipped,
    TriggerRule::OneSuccess,
    TriggerRule::OneFailed,
    TriggerRule::OneDone,
    TriggerRule::NoneFailed,
    TriggerRule::NoneFailedMinOneSuccess,
    TriggerRule::NoneSkipped,
    TriggerRule::Always,
    TriggerRule::AllDoneSetupSuccess,
];

fn node(i: usize) -> impl Strategy<Value = Node> {
    let role = prop_oneof![
        5 => (0..3u8).prop_map(Role::Work),
        1 => Just(Role::Empty),
        2 => any::<u8>().prop_map(Role::Branch),
        2 => (any::<bool>(), any::<bool>())
            .prop_map(|(condition, ignore_rules)| Role::ShortCircuit { condition, ignore_rules }),
    ];
    // 0: work, 1: setup, 2: teardown, 3: teardown that fails the run when it fails.
    let kind = prop_oneof![6 => Just(0u8), 2 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)];
    (
        proptest::collection::vec(proptest::bool::weighted(0.45), i),
        0..RULES.len(),
        role,
        kind,
    )
        .prop_map(|(ups, rule, role, kind)| Node {
            ups: ups
                .iter()
                .enumerate()
                .filter(|(_, up)| **up)
                .map(|(j, _)| j)
                .collect(),
            rule: if kind >= 2 {
                TriggerRule::AllDoneSetupSuccess
            } else {
                RULES[rule]
            },
            role,
            setup: kind == 1,
            teardown: (kind >= 2).then_some(kind == 3),
        })
}

fn graph() -> impl Strategy<Value = Vec<Node>> {
    (2..9usize).prop_flat_map(|n| (0..n).map(node).collect::<Vec<_>>())
}

fn id(i: usize) -> String {
    format!("t{i}")
}

/// The naive model: after every event, every undecided task is judged again from its upstream
/// states until nothing changes.
struct Model<'a> {
    nodes: &'a [Node],
    states: Vec<TaskState>,
}

impl Model<'_> {
    fn downstream(&self, i: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|j| self.nodes[*j].ups.contains(&i))
            .collect()
    }

    fn descendants(&self, i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(t) = stack.pop() {
            for d in self.downstream(t) {
                if out.insert(d) {
                    stack.push(d);
                }
            }
        }
        out
    }

    fn settle(&mut self) {
        loop {
            let mut changed = false;
            for i in 0..self.nodes.len() {
                if self.states[i] != TaskState::None {
                    continue;
                }
                let up = UpstreamSummary::from_upstream(
                    self.nodes[i]
                        .ups
                        .iter()
                        .map(|u| (self.states[*u], self.nodes[*u].setup)),
                );
                let next = match evaluate(self.nodes[i].rule, up) {
                    Readiness::Wait => continue,
                    Readiness::Run if matches!(self.nodes[i].role, Role::Empty) => {
                        TaskState::Success
                    }
                    Readiness::Run => TaskState::Scheduled,
                    Readiness::Skip => TaskState::Skipped,
                    Readiness::UpstreamFailed => TaskState::UpstreamFailed,
                };
                self.states[i] = next;
                changed = true;
            }
            if !changed {
                return;
            }
        }
    }

    /// Task `i` ran; returns the result its agent reports.
    fn run(&mut self, i: usize) -> TryResult {
        let (state, result, skip): (TaskState, TryResult, BTreeSet<usize>) =
            match &self.nodes[i].role {
                Role::Work(0) | Role::Empty => {
                    (TaskState::Success, success_with(json!({})), BTreeSet::new())
                }
                Role::Work(1) => (
                    TaskState::Failed,
                    TryResult {
                        success: false,
                        retryable: false,
                        exit_code: Some(1),
                        ..TryResult::default()
                    },
                    BTreeSet::new(),
                ),
                Role::Work(_) => (TaskState::Skipped, exited(99), BTreeSet::new()),
                Role::Branch(mask) => {
                    let direct = self.downstream(i);
                    let follow: Vec<usize> = direct
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| mask & (1 << (k % 8)) != 0)
                        .map(|(_, d)| *d)
                        .collect();
                    let ids: Vec<String> = follow.iter().map(|d| id(*d)).collect();
                    let skip = direct.into_iter().filter(|d| !follow.contains(d)).collect();
                    (
                        TaskState::Success,
                        success_with(json!({ "follow": ids })),
                        skip,
                    )
                }
                Role::ShortCircuit {
                    condition,
                    ignore_rules,
                } => {
                    let skip = match (condition, ignore_rules) {
                        (true, _) => BTreeSet::new(),
                        (false, true) => self.descendants(i),
                        (false, false) => self.downstream(i).into_iter().collect(),
                    };
                    (
                        TaskState::Success,
                        success_with(json!({ "condition": condition })),
                        skip,
                    )
                }
            };
        self.states[i] = state;
        for s in skip {
            if self.states[s] == TaskState::None {
                self.states[s] = TaskState::Skipped;
            }
        }
        self.settle();
        result
    }
}

static FLOW_CASES: AtomicU32 = AtomicU32::new(0);

async fn run_graph(store: &Store, nodes: &[Node]) -> Result<(), TestCaseError> {
    let n = FLOW_CASES.fetch_add(1, Ordering::SeqCst);
    let dag_id = format!("skips{n}");
    let queue = format!("sq{n}");
    let tasks: Vec<tern_core::TaskSpec> = nodes
        .iter()
        .enumerate()
        .map(|(i, nd)| {
            let ups: Vec<String> = nd.ups.iter().map(|u| id(*u)).collect();
            let ups: Vec<&str> = ups.iter().map(String::as_str).collect();
            let mut t = match nd.role {
                Role::Empty => empty(&id(i), &ups),
                _ => task(&id(i), &ups),
            };
            t.queue = queue.clone();
            t.trigger_rule = nd.rule;
            t.setup = nd.setup;
            t.teardown = nd.teardown.is_some();
            t.on_failure_fail_dagrun = nd.teardown == Some(true);
            t.skip_on_exit_code = vec![99];
            t.flow = match nd.role {
                Role::Branch(_) => Some(Flow::Branch),
                Role::ShortCircuit { ignore_rules, .. } => Some(Flow::ShortCircuit {
                    ignore_downstream_trigger_rules: ignore_rules,
                }),
                _ => None,
            };
            t
        })
        .collect();
    let v = version(store, dag(&dag_id, tasks)).await;
    let (run, _) = store.create_run(&run_of(&dag_id, "r"), v).await.unwrap();
    let mut model = Model {
        nodes,
        states: vec![TaskState::None; nodes.len()],
    };
    model.settle();
    let by_id: HashMap<String, usize> = (0..nodes.len()).map(|i| (id(i), i)).collect();
    for _ in 0..=nodes.len() {
        let Some(c) = store
            .claim(std::slice::from_ref(&queue), "w", LEASE)
            .await
            .unwrap()
        else {
            break;
        };
        let i = by_id[&c.ti.task_id];
        prop_assert_eq!(
            model.states[i],
            TaskState::Scheduled,
            "the store ran {} which the model says may not run",
            c.ti.task_id
        );
        let result = model.run(i);
        store.complete(c.ti.id, &c.attempt, &result).await.unwrap();
    }
    let mut got = Map::new();
    let mut want = Map::new();
    for ti in store.task_instances(run.pk).await.unwrap() {
        got.insert(ti.task_id.clone(), json!(ti.state.as_str()));
        want.insert(
            ti.task_id.clone(),
            json!(model.states[by_id[&ti.task_id]].as_str()),
        );
    }
    prop_assert_eq!(&got, &want, "final states differ for {:?}", nodes);
    // Airflow's rule: the run fails when a leaf failed, where teardowns are not leaves (a
    // task followed only by teardowns is one) unless they fail the run when they fail.
    let failed = |i: usize| {
        matches!(
            model.states[i],
            TaskState::Failed | TaskState::UpstreamFailed
        )
    };
    let leaves_failed = (0..nodes.len()).any(|i| match nodes[i].teardown {
        Some(fails_run) => fails_run && failed(i),
        None => {
            model
                .downstream(i)
                .iter()
                .all(|d| nodes[*d].teardown.is_some())
                && failed(i)
        }
    });
    let run_state = store.get_run(&dag_id, "r").await.unwrap().state;
    let expect = if leaves_failed {
        RunState::Failed
    } else {
        RunState::Success
    };
    prop_assert_eq!(run_state, expect, "run state for {:?}", nodes);
    Ok(())
}

pub async fn skips_propagate_through_every_trigger_rule_as_a_full_reevaluation_says(store: Store) {
    let cases = match store.backend() {
        tern_store::Backend::Sqlite => 96,
        tern_store::Backend::Postgres => 32,
    };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&graph(), |nodes| handle.block_on(run_graph(&store, &nodes)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        FLOW_CASES.load(Ordering::SeqCst) >= cases,
        "the property ran"
    );
}
