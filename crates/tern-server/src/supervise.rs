//! Supervision of a process's roles (scheduler, notifier, queue watcher, local agent, HTTP
//! server, agent liveness): each runs as a task of its own; a role that stops before shutdown,
//! by a panic or an error, is reported and ends the process with that error, so a service
//! manager restarts it whole instead of leaving a process that looks healthy and does nothing.
//! Roles beat as they work; `/health` shows each role's state and last beat.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What is known of one role.
#[derive(Debug, Clone)]
struct RoleState {
    last_beat: Option<Instant>,
    stopped: Option<String>,
}

/// The roles of this process and their last beats. Shared by the roles, the supervisor and
/// `/health`.
#[derive(Debug, Default)]
pub struct RoleBoard {
    roles: Mutex<BTreeMap<&'static str, RoleState>>,
}

impl RoleBoard {
    /// Records that `role` did a round of its work.
    pub fn beat(&self, role: &'static str) {
        if let Some(r) = self.roles.lock().expect("role board").get_mut(role) {
            r.last_beat = Some(Instant::now());
        }
    }

    fn add(&self, role: &'static str) {
        self.roles.lock().expect("role board").insert(
            role,
            RoleState {
                last_beat: None,
                stopped: None,
            },
        );
    }

    fn stopped(&self, role: &'static str, why: String) {
        if let Some(r) = self.roles.lock().expect("role board").get_mut(role) {
            r.stopped = Some(why);
        }
    }

    /// Each role: `running` or `stopped` (with why) and seconds since its last beat.
    pub fn report(&self) -> Value {
        let roles = self.roles.lock().expect("role board");
        let map: serde_json::Map<String, Value> = roles
            .iter()
            .map(|(name, r)| {
                let mut v = json!({
                    "state": if r.stopped.is_some() { "stopped" } else { "running" },
                    "last_beat_seconds_ago": r.last_beat.map(|b| (b.elapsed().as_secs_f64() * 10.0).round() / 10.0),
                });
                if let Some(why) = &r.stopped {
                    v["error"] = json!(why);
                }
                (name.to_string(), v)
            })
            .collect();
        Value::Object(map)
    }

    /// Whether every role is running.
    /// Each role and whether it runs.
    pub fn states(&self) -> Vec<(&'static str, bool)> {
        self.roles
            .lock()
            .expect("role board")
            .iter()
            .map(|(name, r)| (*name, r.stopped.is_none()))
            .collect()
    }

    pub fn all_running(&self) -> bool {
        self.roles
            .lock()
            .expect("role board")
            .values()
            .all(|r| r.stopped.is_none())
    }
}

/// Runs roles and watches them.
pub struct Supervisor {
    pub board: std::sync::Arc<RoleBoard>,
    set: JoinSet<(&'static str, Result<(), String>)>,
    /// Cancelled when a role stops on its own: the process must end.
    pub failed: CancellationToken,
    failure: std::sync::Arc<Mutex<Option<String>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new(Default::default())
    }
}

impl Supervisor {
    /// A supervisor recording on `board`.
    pub fn new(board: std::sync::Arc<RoleBoard>) -> Supervisor {
        Supervisor {
            board,
            set: JoinSet::new(),
            failed: CancellationToken::new(),
            failure: Default::default(),
        }
    }

    /// Starts `role`. It must run until `shutdown` (its own token); ending earlier is a
    /// failure.
    pub fn spawn<F>(&mut self, role: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.board.add(role);
        self.set.spawn(async move {
            // The inner task turns a panic into an error the supervisor can name.
            let outcome = tokio::spawn(fut)
                .await
                .map_err(|e| match e.try_into_panic() {
                    Ok(p) => format!("panicked: {}", panic_message(p.as_ref())),
                    Err(e) => format!("was cancelled: {e}"),
                });
            (role, outcome)
        });
    }

    /// Watches the roles until `shutdown`: the first role that ends before it is recorded and
    /// cancels [`Supervisor::failed`]. Returns when every role has ended.
    pub async fn watch(mut self, shutdown: CancellationToken) {
        while let Some(joined) = self.set.join_next().await {
            let (role, outcome) = joined.unwrap_or(("?", Err("lost".into())));
            if shutdown.is_cancelled() {
                continue;
            }
            let why = match outcome {
                Ok(()) => "ended on its own".to_string(),
                Err(e) => e,
            };
            tracing::error!(role, "role stopped: {why}");
            self.board.stopped(role, why.clone());
            let mut failure = self.failure.lock().expect("failure");
            if failure.is_none() {
                *failure = Some(format!("the {role} role stopped: {why}"));
            }
            drop(failure);
            self.failed.cancel();
        }
    }

    /// Why the process must end, once [`Supervisor::failed`] is cancelled.
    pub fn failure_slot(&self) -> std::sync::Arc<Mutex<Option<String>>> {
        self.failure.clone()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_role_that_panics_fails_the_process_and_is_reported() {
        let mut sup = Supervisor::default();
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        sup.spawn("steady", async move { s.cancelled().await });
        sup.spawn("fragile", async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            panic!("boom in the loader");
        });
        let board = sup.board.clone();
        let failed = sup.failed.clone();
        let failure = sup.failure_slot();
        let watcher = tokio::spawn(sup.watch(shutdown.clone()));
        failed.cancelled().await;
        let why = failure.lock().unwrap().clone().unwrap();
        assert!(
            why.contains("fragile") && why.contains("boom in the loader"),
            "{why}"
        );
        let report = board.report();
        assert_eq!(report["fragile"]["state"], "stopped");
        assert_eq!(report["steady"]["state"], "running");
        assert!(!board.all_running());
        shutdown.cancel();
        watcher.await.unwrap();
    }
}
