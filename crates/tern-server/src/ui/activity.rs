//! The cluster activity page: what the whole estate is doing now, on one page refreshed live
//! — task instances waiting and running by queue (and how long the oldest has waited), the
//! agents with their load, the pools' use, and this server's scheduler loop.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Response;
use chrono::Utc;
use serde_json::{json, Value};
use tern_core::TaskState;

use super::session::Viewer;
use super::{render, store_fail};
use crate::state::AppState;

pub async fn activity(State(s): State<AppState>, viewer: Viewer) -> Response {
    let by_queue = match s.store.activity_by_queue().await {
        Ok(a) => a,
        Err(e) => return store_fail(&viewer, e),
    };
    let agents = match s.store.list_agents().await {
        Ok(a) => a,
        Err(e) => return store_fail(&viewer, e),
    };
    let pools = match s.store.list_pools().await {
        Ok(p) => p,
        Err(e) => return store_fail(&viewer, e),
    };
    let now = Utc::now();
    // One row per queue: counts by state, the oldest queued's wait, the agents serving it.
    let mut queues: BTreeMap<String, Value> = BTreeMap::new();
    let blank = || json!({"scheduled": 0, "queued": 0, "running": 0, "retry": 0, "agents": 0, "wait": null});
    for a in &by_queue {
        let row = queues.entry(a.queue.clone()).or_insert_with(blank);
        let key = match a.state {
            TaskState::Scheduled => "scheduled",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            _ => "retry",
        };
        row[key] = json!(row[key].as_i64().unwrap_or(0) + a.count);
        if a.state == TaskState::Queued {
            if let Some(at) = a.oldest_queued_at {
                row["wait"] = json!(tern_core::human_duration(
                    (now - at).to_std().unwrap_or_default()
                ));
            }
        }
    }
    let live: Vec<_> = agents
        .iter()
        .filter(|a| a.connected && !a.revoked)
        .collect();
    for a in &live {
        for q in &a.queues {
            let row = queues.entry(q.clone()).or_insert_with(blank);
            row["agents"] = json!(row["agents"].as_i64().unwrap_or(0) + 1);
        }
    }
    let totals = |key: &str| {
        queues
            .values()
            .map(|r| r[key].as_i64().unwrap_or(0))
            .sum::<i64>()
    };
    let (running, queued, scheduled) = (totals("running"), totals("queued"), totals("scheduled"));
    let metrics = crate::metrics::metrics();
    let scheduler = json!({
        "last_pass": metrics.scheduler_last_pass().map(tern_core::human_duration),
        "idle": metrics.scheduler_idle_seconds().map(|s| format!("{s:.1}s")),
    });
    render(
        "activity.html",
        json!({
            "me": viewer.context(), "nav": "activity",
            "queues": queues.into_iter().map(|(q, mut v)| { v["queue"] = json!(q); v }).collect::<Vec<_>>(),
            "running": running, "queued": queued, "scheduled": scheduled,
            "agents": agents.iter().filter(|a| !a.revoked).collect::<Vec<_>>(),
            "connected": live.len(),
            "pools": pools, "scheduler": scheduler,
        }),
    )
}
