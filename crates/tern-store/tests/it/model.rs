//! Model-based property test of the task state machine: random sequences of what agents,
//! housekeeping and operators do (claim, confirm, heartbeat, results current and stale, alone
//! and several at once so they are written together, lease expiry with a clock the test
//! moves, queue timeout, a run's `dagrun_timeout`, release, clear, mark, revoke, a dead
//! worker) against the real store, with the invariants checked after every step. Every other
//! result also claims the agent's next task in its transaction, as the in-process agent's
//! results do (a remote agent's claims nothing that way).
//!
//! The invariants:
//!
//! - at most one current attempt per task instance, and a running instance has a lease;
//! - a result is accepted only from the current attempt of its holder;
//! - no success is recorded twice for one instance (unless an operator cleared or marked it);
//! - no state moves backwards except by an operator: a final state stays final, an instance
//!   never returns to `none`, and tries are never given back except for a claim that never
//!   started;
//! - a run is final if and only if all its task instances are final (the DAG has a mapped
//!   task, whose instances appear when it expands and count one by one).
//!
//! Runs on SQLite and PostgreSQL through `store_suite!`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tern_core::{TaskState, TriggerRule};
use tern_store::manage::ClearScope;
use tern_store::tasks::Queued;
use tern_store::{ClaimNext, Claimed, ManualClock, NewRun, Store, TryResult};
use tern_testkit::{dag, task};

const LEASE: Duration = Duration::from_secs(10);
/// `m` is a mapped task (three instances from the run's start; cleared or marked together).
const TASKS: [&str; 7] = ["a", "b", "s", "m", "d", "e", "l"];
/// Workers: two local agents and the site agent of the case.
const WORKERS: usize = 3;

#[derive(Debug, Clone)]
enum Step {
    Claim(usize),
    /// Confirm (first heartbeat) or renew the lease of the i-th claim made so far.
    Heartbeat(usize),
    /// Report the i-th claim's result: 0 success, 1 retryable failure, 2 permanent failure.
    Complete(usize, u8),
    /// Report several claims' results at the same moment (written together, in one
    /// transaction): (claim, outcome), the claim counted back from the latest (0 is the
    /// latest: recent claims are the ones likely still current), each claim once.
    CompleteTogether(Vec<(usize, u8)>),
    Release(usize),
    Advance(u64),
    Expire,
    Housekeep,
    QueueTimeout(u64),
    Clear(usize, bool),
    Mark(usize, bool),
    Revoke,
    WorkerDied(usize),
    FinishSettled,
    /// Housekeeping's `dagrun_timeout` check (every other case's DAG times out 20 s after its start).
    TimeOutRuns,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..WORKERS).prop_map(Step::Claim),
        3 => (0..8usize).prop_map(Step::Heartbeat),
        4 => (0..8usize, 0..3u8).prop_map(|(i, o)| Step::Complete(i, o)),
        3 => proptest::collection::vec((0..4usize, 0..3u8), 2..5).prop_map(Step::CompleteTogether),
        1 => (0..8usize).prop_map(Step::Release),
        2 => (0..15_000u64).prop_map(Step::Advance),
        2 => Just(Step::Expire),
        2 => Just(Step::Housekeep),
        1 => (0..20_000u64).prop_map(Step::QueueTimeout),
        1 => (0..TASKS.len(), any::<bool>()).prop_map(|(t, d)| Step::Clear(t, d)),
        1 => (0..TASKS.len(), any::<bool>()).prop_map(|(t, s)| Step::Mark(t, s)),
        1 => Just(Step::Revoke),
        1 => (0..WORKERS).prop_map(Step::WorkerDied),
        1 => Just(Step::FinishSettled),
        1 => Just(Step::TimeOutRuns),
    ]
}

/// A claim made during the case: its instance, token and holder.
#[derive(Debug, Clone)]
struct Held {
    ti_id: i64,
    attempt: String,
    worker: usize,
    /// Whether a heartbeat of it was accepted (the site agent's claims start unconfirmed).
    acked: bool,
}

struct Case {
    store: Store,
    clock: ManualClock,
    dag_id: String,
    run_pk: i64,
    workers: [String; WORKERS],
    queues: [Vec<String>; WORKERS],
    agent_id: i64,
    held: Vec<Held>,
    /// Per instance: the state seen after the last step, its try number, and how many
    /// successes it may have on record (one, plus one per operator action on it).
    seen: HashMap<i64, (TaskState, u32)>,
    allowed_successes: HashMap<i64, usize>,
}

static CASES: AtomicU32 = AtomicU32::new(0);
/// Steps applied across all cases, to show the test did its work.
static STEPS: AtomicU32 = AtomicU32::new(0);
/// Runs ended by their `dagrun_timeout`, to show that path was taken.
static TIMED_OUT: AtomicU32 = AtomicU32::new(0);
/// Cases whose mapped task expanded, and whose instances ran.
static EXPANDED: AtomicU32 = AtomicU32::new(0);
static MAPPED_RAN: AtomicU32 = AtomicU32::new(0);
/// Results accepted from claims reported together.
static ACCEPTED_TOGETHER: AtomicU32 = AtomicU32::new(0);
/// Tasks claimed in a result's transaction.
static CLAIMED_WITH_RESULTS: AtomicU32 = AtomicU32::new(0);
/// Quiet ends (nothing else made ready) written with others in one statement.
static QUIET_TOGETHER: AtomicU64 = AtomicU64::new(0);

/// An agent's report of `outcome`: 0 success, 1 retryable failure, 2 permanent failure.
fn outcome(o: u8) -> TryResult {
    match o {
        0 => TryResult {
            success: true,
            ..TryResult::default()
        },
        o => TryResult {
            success: false,
            retryable: o == 1,
            note: Some("model failure".into()),
            ..TryResult::default()
        },
    }
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

impl Case {
    async fn new(store: &Store) -> Case {
        let n = CASES.fetch_add(1, Ordering::SeqCst);
        let clock = ManualClock::at(Utc::now());
        let store = store.clone().with_clock(clock.clone());
        let site = format!("m{n}");
        let dag_id = format!("model{n}");
        // Queues and a pool of the case's own (two slots: admission limits are in play), so
        // cases sharing a database never see each other's work.
        let queue = format!("q{n}");
        let pool = format!("p{n}");
        store.set_pool(&pool, 2, "model").await.unwrap();
        let mk = |id: &str, up: &[&str], retries: u32| {
            let mut t = task(id, up);
            t.queue = queue.clone();
            t.pool = pool.clone();
            t.retries = retries;
            t.retry_delay_ms = 0;
            t
        };
        let a = mk("a", &[], 1);
        let b = mk("b", &["a"], 0);
        let mut s = mk("s", &[], 1);
        s.queue = format!("site:{site}");
        let mut m = mk("m", &[], 1);
        m.expand = Some(tern_core::Expand {
            zip: false,
            keys: vec![tern_core::ExpandKey {
                name: "x".into(),
                source: tern_core::MapSource::Values {
                    values: vec![1.into(), 2.into(), 3.into()],
                },
            }],
        });
        let d = mk("d", &["b", "s", "m"], 0);
        let mut e = mk("e", &["d"], 0);
        e.trigger_rule = TriggerRule::AllDone;
        // A lone task: its end makes nothing else ready (written with others in one statement
        // when reported together).
        let l = mk("l", &[], 0);
        let mut spec = dag(&dag_id, vec![a, b, s, m, d, e, l]);
        // Every other case's DAG has a timeout short enough to be reached in most of them.
        spec.dagrun_timeout_ms = n.is_multiple_of(2).then_some(20_000);
        store
            .sync_dags(std::slice::from_ref(&spec), &[])
            .await
            .unwrap();
        let version = store.latest_spec(&dag_id).await.unwrap().0;
        let code = store
            .create_activation(&site, &[], Duration::from_secs(600))
            .await
            .unwrap();
        let agent = store
            .activate(&code.code, "box", "0.1.0", "127.0.0.1")
            .await
            .unwrap();
        let now = Utc::now();
        let (run, _) = store
            .create_run(
                &NewRun {
                    dag_id: dag_id.clone(),
                    run_id: "r".into(),
                    run_type: tern_core::RunType::Manual,
                    logical_date: now,
                    data_interval: tern_core::DataInterval {
                        start: now,
                        end: now,
                    },
                    conf: serde_json::json!({}),
                    params: serde_json::json!({}),
                },
                version,
            )
            .await
            .unwrap();
        let local = vec![queue];
        let mut case = Case {
            store,
            clock,
            dag_id,
            run_pk: run.pk,
            workers: [
                format!("local-{n}-a"),
                format!("local-{n}-b"),
                tern_store::agents::agent_worker_name(agent.agent.id),
            ],
            queues: [local.clone(), local, agent.agent.queues.clone()],
            agent_id: agent.agent.id,
            held: Vec::new(),
            seen: HashMap::new(),
            allowed_successes: HashMap::new(),
        };
        for ti in case.store.task_instances(run.pk).await.unwrap() {
            case.seen.insert(ti.id, (ti.state, ti.try_number));
            case.allowed_successes.insert(ti.id, 1);
        }
        case
    }

    /// Reports `h`'s result; with `claim_next`, as the in-process agent does: claiming its
    /// next task in the result's transaction.
    async fn report(
        &self,
        h: &Held,
        result: &TryResult,
        claim_next: bool,
    ) -> (tern_store::Applied, Vec<Claimed>) {
        let worker = &self.workers[h.worker];
        if claim_next {
            let next = ClaimNext {
                queues: self.queues[h.worker].clone(),
                lease: LEASE,
                max: 1,
            };
            self.store
                .complete_and_claim(h.ti_id, &h.attempt, worker, result, next)
                .await
                .unwrap()
        } else {
            let applied = self
                .store
                .complete_by(h.ti_id, &h.attempt, Some(worker), result)
                .await
                .unwrap();
            (applied, Vec::new())
        }
    }

    /// Holds what a result claimed for its agent; only local agents claim that way.
    fn claimed_with_result(
        &mut self,
        h: &Held,
        claimed: Vec<Claimed>,
    ) -> Result<(), TestCaseError> {
        if h.worker == 2 && !claimed.is_empty() {
            return Err(fail(format!(
                "the site agent's result claimed {claimed:?}: remote agents claim on their own"
            )));
        }
        for c in claimed {
            CLAIMED_WITH_RESULTS.fetch_add(1, Ordering::SeqCst);
            self.held.push(Held {
                ti_id: c.ti.id,
                attempt: c.attempt,
                worker: h.worker,
                acked: true,
            });
        }
        Ok(())
    }

    /// The instances an operator action touches get a new allowance and a fresh history.
    async fn operator_touched(&mut self) {
        for ti in self.store.task_instances(self.run_pk).await.unwrap() {
            if self.seen.get(&ti.id) != Some(&(ti.state, ti.try_number)) {
                *self.allowed_successes.entry(ti.id).or_default() += 1;
            }
            self.seen.insert(ti.id, (ti.state, ti.try_number));
        }
    }

    async fn apply(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let s = self.store.clone();
        match *step {
            Step::Claim(w) => {
                // Every other claim goes straight for the write lock, as one woken by a
                // queue's signal does; both must claim the same.
                let (queues, worker) = (&self.queues[w], &self.workers[w]);
                let claimed = if self.held.len() % 2 == 1 {
                    s.claim_many_when(queues, worker, LEASE, 1, Queued::Signalled)
                        .await
                } else {
                    s.claim_many(queues, worker, LEASE, 1).await
                };
                // A revoked agent's claim is refused: that is not a failure of the model.
                if let Some(c) = claimed.ok().and_then(|mut c| c.pop()) {
                    self.held.push(Held {
                        ti_id: c.ti.id,
                        attempt: c.attempt,
                        worker: w,
                        acked: w != 2,
                    });
                }
            }
            Step::Heartbeat(i) => {
                if let Some(h) = self.held.get(i).cloned() {
                    let before = self.current(h.ti_id).await;
                    let kept = s
                        .heartbeat(h.ti_id, &h.attempt, &self.workers[h.worker], LEASE)
                        .await
                        .unwrap();
                    if kept && before != Some((h.attempt.clone(), self.workers[h.worker].clone())) {
                        return Err(fail(format!(
                            "heartbeat of a stale attempt accepted: {h:?}"
                        )));
                    }
                    if kept {
                        self.held[i].acked = true;
                    }
                }
            }
            Step::Complete(i, o) => {
                if let Some(h) = self.held.get(i).cloned() {
                    let result = outcome(o);
                    let before = self.current(h.ti_id).await;
                    let (applied, claimed) = self.report(&h, &result, i % 2 == 1).await;
                    let current =
                        before == Some((h.attempt.clone(), self.workers[h.worker].clone()));
                    if applied.accepted != current {
                        return Err(fail(format!(
                            "result of {h:?} accepted = {} but current = {current}",
                            applied.accepted
                        )));
                    }
                    self.claimed_with_result(&h, claimed)?;
                }
            }
            Step::CompleteTogether(ref reports) => {
                let mut together = Vec::new();
                for &(back, o) in reports {
                    let Some(i) = self.held.len().checked_sub(1 + back) else {
                        continue;
                    };
                    if let Some(h) = self.held.get(i).cloned() {
                        if !together.iter().any(|(j, _, _, _)| *j == i) {
                            let before = self.current(h.ti_id).await;
                            let current =
                                before == Some((h.attempt.clone(), self.workers[h.worker].clone()));
                            together.push((i, h, outcome(o), current));
                        }
                    }
                }
                let answers = crate::suite::reported_together(
                    &s,
                    together
                        .iter()
                        .map(|(i, h, result, _)| self.report(h, result, i % 2 == 1)),
                )
                .await;
                for ((_, h, _, current), (applied, claimed)) in together.iter().zip(answers) {
                    self.claimed_with_result(h, claimed)?;
                    if applied.accepted != *current {
                        return Err(fail(format!(
                            "result of {h:?} (reported together) accepted = {} but current = {current}",
                            applied.accepted
                        )));
                    }
                    if applied.accepted {
                        ACCEPTED_TOGETHER.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            Step::Release(i) => {
                if let Some(h) = self.held.get(i).cloned() {
                    let before = self.current(h.ti_id).await;
                    let released = s.release_claim(h.ti_id, &h.attempt).await.unwrap();
                    if released != before.is_some_and(|(a, _)| a == h.attempt) {
                        return Err(fail(format!("release of {h:?} = {released}")));
                    }
                    if released {
                        // Given back like a claim that never reached its agent.
                        let ti = self.ti(h.ti_id).await;
                        self.seen.insert(ti.id, (ti.state, ti.try_number));
                    }
                }
            }
            Step::Advance(ms) => self.clock.advance(Duration::from_millis(ms)),
            Step::Expire => {
                // Unconfirmed claims go back to their queue: note which before expiring.
                let unacked = self.unacked_expired().await;
                s.expire_leases().await.unwrap();
                for id in unacked {
                    let ti = self.ti(id).await;
                    self.seen.insert(ti.id, (ti.state, ti.try_number));
                }
            }
            Step::Housekeep => {
                s.promote_and_admit().await.unwrap();
            }
            Step::TimeOutRuns => {
                let n = s.time_out_runs().await.unwrap();
                TIMED_OUT.fetch_add(n as u32, Ordering::SeqCst);
            }
            Step::QueueTimeout(age) => {
                let before = s.now_ms() - age as i64;
                for queue in &self.queues {
                    s.fail_queued_before(&queue[0], before, "model timeout")
                        .await
                        .unwrap();
                }
            }
            Step::Clear(t, downstream) => {
                s.clear_tasks(
                    self.run_pk,
                    &[TASKS[t].to_string()],
                    ClearScope {
                        downstream,
                        upstream: false,
                        map_index: None,
                    },
                )
                .await
                .unwrap();
                self.operator_touched().await;
            }
            Step::Mark(t, success) => {
                let state = if success {
                    TaskState::Success
                } else {
                    TaskState::Failed
                };
                s.mark_task(self.run_pk, TASKS[t], None, state, "model")
                    .await
                    .unwrap();
                self.operator_touched().await;
            }
            Step::Revoke => {
                let _ = s.revoke_agent(self.agent_id).await;
            }
            Step::WorkerDied(w) => {
                s.fail_attempts_of_worker(&self.workers[w], "model: worker died")
                    .await
                    .unwrap();
            }
            Step::FinishSettled => {
                s.finish_settled_runs().await.unwrap();
            }
        }
        Ok(())
    }

    async fn ti(&self, id: i64) -> tern_store::TaskInstance {
        self.store
            .task_instances(self.run_pk)
            .await
            .unwrap()
            .into_iter()
            .find(|t| t.id == id)
            .expect("instance of the case's run")
    }

    /// The current attempt token and holder of a running instance.
    async fn current(&self, id: i64) -> Option<(String, String)> {
        let ti = self.ti(id).await;
        (ti.state == TaskState::Running).then(|| {
            (
                ti.attempt.clone().unwrap_or_default(),
                ti.worker.clone().unwrap_or_default(),
            )
        })
    }

    /// Running instances held by a claim that was never confirmed (expiry may give them back).
    async fn unacked_expired(&self) -> Vec<i64> {
        let mut out = Vec::new();
        for h in &self.held {
            if h.acked {
                continue;
            }
            let ti = self.ti(h.ti_id).await;
            if ti.state == TaskState::Running && ti.attempt.as_deref() == Some(&h.attempt) {
                out.push(h.ti_id);
            }
        }
        out
    }

    async fn check(&mut self, step: &Step) -> Result<(), TestCaseError> {
        let tis = self.store.task_instances(self.run_pk).await.unwrap();
        let mut all_final = true;
        for ti in &tis {
            let tries = self.store.task_tries(ti.id).await.unwrap();
            let open = tries
                .iter()
                .filter(|t| t.state == TaskState::Running)
                .count();
            if open > 1 || (open == 1) != (ti.state == TaskState::Running) {
                return Err(fail(format!(
                    "{}: state {:?} with {open} running tries after {step:?}",
                    ti.task_id, ti.state
                )));
            }
            let successes = tries
                .iter()
                .filter(|t| t.state == TaskState::Success)
                .count();
            // An instance a mapped task's expansion made is new here: one success allowed.
            let allowed = *self.allowed_successes.entry(ti.id).or_insert(1);
            if successes > allowed {
                return Err(fail(format!(
                    "{}: {successes} successes on record after {step:?}",
                    ti.task_id
                )));
            }
            if ti.try_number > ti.max_tries {
                return Err(fail(format!(
                    "{}: try {} of {} after {step:?}",
                    ti.task_id, ti.try_number, ti.max_tries
                )));
            }
            let (was, was_try) = self
                .seen
                .get(&ti.id)
                .copied()
                .unwrap_or((TaskState::None, 0));
            if was.is_finished() && ti.state != was {
                return Err(fail(format!(
                    "{}: final {was:?} became {:?} without an operator ({step:?})",
                    ti.task_id, ti.state
                )));
            }
            if ti.state == TaskState::None && was != TaskState::None {
                return Err(fail(format!(
                    "{}: {was:?} went back to none without an operator ({step:?})",
                    ti.task_id
                )));
            }
            if ti.try_number < was_try {
                return Err(fail(format!(
                    "{}: try number fell from {was_try} to {} ({step:?})",
                    ti.task_id, ti.try_number
                )));
            }
            self.seen.insert(ti.id, (ti.state, ti.try_number));
            all_final &= ti.state.is_finished();
        }
        let run = self.store.get_run(&self.dag_id, "r").await.unwrap();
        if run.state.is_finished() != all_final {
            return Err(fail(format!(
                "run {:?} while all tasks final = {all_final} after {step:?}: {:?}",
                run.state,
                tis.iter()
                    .map(|t| (t.task_id.as_str(), t.state))
                    .collect::<Vec<_>>()
            )));
        }
        Ok(())
    }
}

async fn run_case(store: &Store, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut case = Case::new(store).await;
    case.check(&Step::Housekeep).await?;
    for step in steps {
        STEPS.fetch_add(1, Ordering::SeqCst);
        case.apply(step).await?;
        case.check(step).await?;
    }
    let m = case
        .store
        .task_instances_of(case.run_pk, "m")
        .await
        .unwrap();
    QUIET_TOGETHER.fetch_add(case.store.quiet_ends_written_together(), Ordering::SeqCst);
    if m.len() == 3 {
        EXPANDED.fetch_add(1, Ordering::SeqCst);
        if m.iter().any(|t| t.try_number > 0) {
            MAPPED_RAN.fetch_add(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

/// The property, with `cases` random sequences of up to 60 steps.
pub async fn task_state_machine_keeps_its_invariants(store: Store) {
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
        runner.run(&proptest::collection::vec(step(), 1..60), |steps| {
            handle.block_on(run_case(&store, &steps))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (cases_run, steps) = (CASES.load(Ordering::SeqCst), STEPS.load(Ordering::SeqCst));
    let timed_out = TIMED_OUT.load(Ordering::SeqCst);
    let (expanded, mapped_ran) = (
        EXPANDED.load(Ordering::SeqCst),
        MAPPED_RAN.load(Ordering::SeqCst),
    );
    let together = ACCEPTED_TOGETHER.load(Ordering::SeqCst);
    let claimed_with_results = CLAIMED_WITH_RESULTS.load(Ordering::SeqCst);
    let quiet = QUIET_TOGETHER.load(Ordering::SeqCst);
    eprintln!(
        "model: {cases_run} cases, {steps} steps, {timed_out} runs timed out, {expanded} mapped \
         tasks expanded ({mapped_ran} with instances run), {together} results accepted from \
         reports written together ({quiet} of them quiet ends written in one statement), \
         {claimed_with_results} tasks claimed with a result, invariants held after each"
    );
    assert!(cases_run >= cases && steps >= cases, "the property ran");
    assert!(timed_out > 0, "no case reached its dagrun_timeout");
    assert!(mapped_ran > 0, "no case ran an instance of its mapped task");
    assert!(together > 0, "no result reported together was accepted");
    assert!(
        quiet > 0,
        "no quiet end was written with others in one statement"
    );
    assert!(
        claimed_with_results > 0,
        "no result claimed its agent's next task"
    );
}
