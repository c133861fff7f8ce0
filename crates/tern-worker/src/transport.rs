//! The agent's view of the control plane: the calls of the agent protocol.

use std::time::Duration;

use tern_protocol::{
    Assignment, Completion, CompletionReply, HeartbeatReply, LogChunk, Report, ReportReply,
};

/// A failed call to the control plane. `Unavailable` means the link is down and the call may
/// be retried; anything else is final for that call.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("control plane unavailable: {0}")]
    Unavailable(String),
    #[error("control plane refused the call: {0}")]
    Refused(String),
    /// The agent's credential is revoked or unknown: nothing it sends will be accepted again.
    #[error("the control plane does not accept this agent any more: {0}")]
    Revoked(String),
}

/// The calls an agent makes. Implemented in-process by the control plane itself and over
/// HTTPS for remote agents.
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Waits up to `wait` for tasks of the agent's queues and claims up to `max` of them; an
    /// empty list when there were none.
    async fn claim(&self, wait: Duration, max: usize) -> Result<Vec<Assignment>, TransportError>;
    async fn heartbeat(&self, ti_id: i64, attempt: &str) -> Result<HeartbeatReply, TransportError>;
    /// Confirms that the agent received a claimed attempt and is about to start it; false
    /// when the attempt is no longer current. A claim never confirmed goes back to its queue
    /// without using a try. Over the wire this is the first heartbeat.
    async fn ack(&self, ti_id: i64, attempt: &str) -> Result<bool, TransportError> {
        Ok(self.heartbeat(ti_id, attempt).await?.keep_running)
    }
    /// Records durably that an attempt ended with `completion`, before it is reported: if the
    /// agent dies before the control plane has the result, the next start delivers it instead
    /// of running the finished command again.
    async fn ended(&self, _completion: &Completion) {}
    /// The agent will not run a claimed attempt after all (it could not confirm it): forget
    /// what was kept about it. Nothing is sent.
    async fn abandon(&self, _ti_id: i64, _attempt: &str) {}
    async fn log(&self, chunk: LogChunk) -> Result<(), TransportError>;
    async fn complete(&self, completion: Completion) -> Result<CompletionReply, TransportError>;
    /// [`ControlPlane::complete`], and in the same call a claim of up to `max` tasks of the
    /// agent's queues for the slot the ended attempt frees. Where the control plane does not
    /// claim with results ([`ControlPlane::claims_with_results`]), this only completes.
    async fn complete_and_claim(
        &self,
        completion: Completion,
        max: usize,
    ) -> Result<(CompletionReply, Vec<Assignment>), TransportError> {
        let _ = max;
        Ok((self.complete(completion).await?, Vec::new()))
    }
    /// Whether [`ControlPlane::complete_and_claim`] claims. An agent whose control plane does
    /// keeps an attempt's slot until the result is reported: the next task comes with the
    /// answer. (The in-process control plane does; over the wire a result is only a result.)
    fn claims_with_results(&self) -> bool {
        false
    }
    /// Tells the control plane what the agent holds and which connections it has; renews the
    /// leases of the attempts that are still current and says which those are.
    async fn report(&self, report: Report) -> Result<ReportReply, TransportError>;
}
