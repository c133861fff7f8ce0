//! The local agent's fence: when its server lost the metadata database it stops the attempts
//! running at that moment — and only those. An attempt started after the fence moved (the
//! database is back: it was claimed) runs to its end. (A receiver cloned after the fence moved
//! once used to see that old move as new, so after one outage every later attempt was stopped
//! at once until its retries ran out: the chaos suite's PostgreSQL outage test caught it.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_core::TaskKind;
use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, Report, ReportReply,
};
use tern_worker::transport::{ControlPlane, TransportError};
use tokio_util::sync::CancellationToken;

use crate::assignment;

/// Accepts everything and keeps the completion.
#[derive(Default)]
struct Recorder {
    completion: Mutex<Option<Completion>>,
}

#[async_trait::async_trait]
impl ControlPlane for Recorder {
    async fn claim(&self, _: Duration, _: usize) -> Result<Vec<Assignment>, TransportError> {
        Ok(vec![])
    }
    async fn heartbeat(&self, _: i64, _: &str) -> Result<HeartbeatReply, TransportError> {
        Ok(HeartbeatReply { keep_running: true })
    }
    async fn log(&self, _: LogChunk) -> Result<(), TransportError> {
        Ok(())
    }
    async fn complete(&self, c: Completion) -> Result<CompletionReply, TransportError> {
        *self.completion.lock().unwrap() = Some(c);
        Ok(CompletionReply { accepted: true })
    }
    async fn report(&self, _: Report) -> Result<ReportReply, TransportError> {
        Ok(ReportReply { current: vec![] })
    }
}

fn sleeper(secs: &str) -> Assignment {
    assignment(TaskKind::Shell {
        cmd: format!("sleep {secs}"),
        env: Default::default(),
        cwd: None,
        sandbox: None,
    })
}

async fn run(fence: &tokio::sync::watch::Receiver<u64>, a: Assignment) -> Completion {
    let cp = Arc::new(Recorder::default());
    tern_worker::agent::run_attempt(
        cp.clone(),
        a,
        tern_worker::ExecOptions::default(),
        CancellationToken::new(),
        Some(fence.clone()),
        None,
    )
    .await;
    let c = cp.completion.lock().unwrap().take();
    c.expect("the attempt reported its end")
}

#[tokio::test]
async fn an_attempt_started_after_a_fence_runs_and_one_running_during_it_stops() {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    // An outage earlier in the process's life.
    tx.send_modify(|g| *g += 1);
    let c = run(&rx, sleeper("0.2")).await;
    assert!(
        c.success,
        "an attempt started after the fence moved was stopped: {c:?}"
    );
    // A fence during an attempt stops it.
    let running = tokio::spawn({
        let rx = rx.clone();
        async move { run(&rx, sleeper("30")).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    tx.send_modify(|g| *g += 1);
    let c = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the fence stops the running attempt")
        .unwrap();
    assert!(!c.success);
    assert!(
        c.reason
            .as_deref()
            .unwrap_or("")
            .contains("lost the metadata database"),
        "{c:?}"
    );
}
