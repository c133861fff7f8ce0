//! The agent and a control plane that claims with results: with no backlog, an ending attempt
//! keeps its slot while its result is reported and runs the task the report claimed for it;
//! with a backlog (a claim filled every free slot), results are only reported and the agent
//! claims for its free slots in one call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::TaskKind;
use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, Report, ReportReply,
};
use tern_worker::transport::{ControlPlane, TransportError};
use tern_worker::{Agent, AgentConfig};
use tokio_util::sync::CancellationToken;

use crate::assignment;

const SLOTS: usize = 4;

/// Hands out `first` on the first claim, then nothing; the result of `hands_off_after`
/// brings `next` with it. Records how each result was reported.
struct Plane {
    first: Mutex<Option<Vec<Assignment>>>,
    hands_off_after: i64,
    next: Mutex<Option<Assignment>>,
    /// (task instance, reported with a claim for this many, succeeded)
    reports: Mutex<Vec<(i64, Option<usize>, bool)>>,
}

fn task(ti_id: i64) -> Assignment {
    let mut a = assignment(TaskKind::Shell {
        cmd: "true".into(),
        env: Default::default(),
        cwd: None,
        sandbox: None,
    });
    a.ti_id = ti_id;
    a.attempt = format!("att-{ti_id}");
    a
}

#[async_trait::async_trait]
impl ControlPlane for Plane {
    async fn claim(&self, wait: Duration, max: usize) -> Result<Vec<Assignment>, TransportError> {
        let first = self.first.lock().unwrap().take();
        match first {
            Some(tasks) => {
                assert!(tasks.len() <= max, "claimed more than the free slots");
                Ok(tasks)
            }
            None => {
                tokio::time::sleep(wait).await;
                Ok(vec![])
            }
        }
    }
    async fn heartbeat(&self, _: i64, _: &str) -> Result<HeartbeatReply, TransportError> {
        Ok(HeartbeatReply { keep_running: true })
    }
    async fn log(&self, _: LogChunk) -> Result<(), TransportError> {
        Ok(())
    }
    async fn complete(&self, c: Completion) -> Result<CompletionReply, TransportError> {
        self.reports
            .lock()
            .unwrap()
            .push((c.ti_id, None, c.success));
        Ok(CompletionReply { accepted: true })
    }
    async fn complete_and_claim(
        &self,
        c: Completion,
        max: usize,
    ) -> Result<(CompletionReply, Vec<Assignment>), TransportError> {
        self.reports
            .lock()
            .unwrap()
            .push((c.ti_id, Some(max), c.success));
        let next = if c.ti_id == self.hands_off_after {
            self.next.lock().unwrap().take().into_iter().collect()
        } else {
            Vec::new()
        };
        Ok((CompletionReply { accepted: true }, next))
    }
    fn claims_with_results(&self) -> bool {
        true
    }
    async fn report(&self, _: Report) -> Result<ReportReply, TransportError> {
        Ok(ReportReply { current: vec![] })
    }
}

/// Runs an agent with `SLOTS` slots on `plane` until `reports` results were reported.
async fn run_until(plane: Arc<Plane>, reports: usize) -> Vec<(i64, Option<usize>, bool)> {
    let agent = Agent::new(
        plane.clone(),
        AgentConfig {
            name: "local".into(),
            concurrency: SLOTS,
            claim_wait: Duration::from_millis(50),
            exec: tern_worker::ExecOptions::default(),
            fence: None,
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { agent.run(shutdown).await }
    });
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while plane.reports.lock().unwrap().len() < reports {
        assert!(
            std::time::Instant::now() < give_up,
            "the agent reported {:?}",
            plane.reports.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let reports = plane.reports.lock().unwrap().clone();
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_backlog_a_result_brings_the_next_task_for_its_slot() {
    let plane = Arc::new(Plane {
        first: Mutex::new(Some(vec![task(1)])),
        hands_off_after: 1,
        next: Mutex::new(Some(task(2))),
        reports: Mutex::default(),
    });
    let reports = run_until(plane, 2).await;
    assert_eq!(
        reports,
        [(1, Some(1), true), (2, Some(1), true)],
        "task 1's result claimed one task for its slot, and that task ran in it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_backlog_results_are_only_reported() {
    let plane = Arc::new(Plane {
        first: Mutex::new(Some((1..=SLOTS as i64).map(task).collect())),
        hands_off_after: 0,
        next: Mutex::new(None),
        reports: Mutex::default(),
    });
    let mut reports = run_until(plane, SLOTS).await;
    reports.sort();
    let expected: Vec<_> = (1..=SLOTS as i64).map(|i| (i, None, true)).collect();
    assert_eq!(
        reports, expected,
        "a claim filled every slot: the results claim nothing"
    );
}
