//! Prometheus metrics (`GET /metrics`, viewer role): what the process measures itself (the
//! scheduler loop's time and when it last ran, API latency by route and status, claim latency
//! and task-try durations of the agents it serves) and, at each
//! scrape, what is in the database (task instances and runs by state, the age of the oldest
//! queued task per queue, connected agents per site, import errors), and tries to send DAG
//! notifications by result.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tern_store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TryLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabel {
    route: String,
    status: u16,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    scheduler_loop: Histogram,
    scheduler_last_loop_ms: AtomicI64,
    scheduler_last_took_us: AtomicI64,
    api: Family<ApiLabel, Histogram>,
    task_duration: Family<TryLabel, Histogram>,
    claim_latency: Family<QueueLabel, Histogram>,
    task_instances: Family<StateLabel, Gauge>,
    dag_runs: Family<StateLabel, Gauge>,
    oldest_queued: Family<QueueLabel, Gauge<f64, AtomicU64>>,
    agents: Family<SiteLabel, Gauge>,
    import_errors: Gauge,
    notifications: Family<ResultLabel, Counter>,
    roles: Family<RoleLabel, Gauge>,
    logs_waiting: Gauge,
}

/// 0.1 s .. ~1.8 h
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 17))
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tern");
        let scheduler_loop = latency_histogram();
        registry.register(
            "scheduler_loop_seconds",
            "Time of one scheduler pass (DAG scan, due runs, housekeeping)",
            scheduler_loop.clone(),
        );
        let api = Family::<ApiLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "api_request_seconds",
            "REST API latency by route and status",
            api.clone(),
        );
        let task_duration = Family::<TryLabel, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "task_try_duration_seconds",
            "How long task tries ran, by outcome (success, failed, rescheduled)",
            task_duration.clone(),
        );
        let claim_latency = Family::<QueueLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "claim_latency_seconds",
            "Time from a task instance being queued to an agent claiming it, by queue",
            claim_latency.clone(),
        );
        let task_instances = Family::<StateLabel, Gauge>::default();
        registry.register(
            "task_instances",
            "Task instances by state",
            task_instances.clone(),
        );
        let dag_runs = Family::<StateLabel, Gauge>::default();
        registry.register("dag_runs", "DAG runs by state", dag_runs.clone());
        let oldest_queued = Family::<QueueLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "queued_oldest_age_seconds",
            "Age of the oldest queued task instance, by queue",
            oldest_queued.clone(),
        );
        let agents = Family::<SiteLabel, Gauge>::default();
        registry.register(
            "agents_connected",
            "Remote agents seen in the last minute, by site",
            agents.clone(),
        );
        let import_errors = Gauge::default();
        registry.register(
            "import_errors",
            "DAG files that fail to load",
            import_errors.clone(),
        );
        let roles = Family::<RoleLabel, Gauge>::default();
        registry.register(
            "role_running",
            "The roles this process holds: 1 while running, 0 once stopped",
            roles.clone(),
        );
        let logs_waiting = Gauge::default();
        registry.register(
            "task_logs_waiting_to_ship",
            "Task logs of ended tries not yet in the object store (logs.store)",
            logs_waiting.clone(),
        );
        let notifications = Family::<ResultLabel, Counter>::default();
        registry.register(
            "notifications",
            "Tries to send DAG notifications, by result (sent, retry, failed)",
            notifications.clone(),
        );
        Metrics {
            registry,
            scheduler_loop,
            scheduler_last_loop_ms: AtomicI64::new(0),
            scheduler_last_took_us: AtomicI64::new(0),
            api,
            task_duration,
            claim_latency,
            task_instances,
            dag_runs,
            oldest_queued,
            agents,
            import_errors,
            notifications,
            roles,
            logs_waiting,
        }
    }

    /// Counts one try to send a notification that ended in `result`.
    pub fn notification(&self, result: &str) {
        self.notifications
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Records one scheduler pass that took `took`.
    pub fn scheduler_pass(&self, took: Duration) {
        self.scheduler_loop.observe(took.as_secs_f64());
        self.scheduler_last_took_us.store(
            i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.scheduler_last_loop_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Seconds since this process's scheduler last finished a pass; `None` if it never did
    /// (no scheduler in this process, or not yet).
    pub fn scheduler_idle_seconds(&self) -> Option<f64> {
        let last = self.scheduler_last_loop_ms.load(Ordering::Relaxed);
        (last > 0).then(|| (chrono::Utc::now().timestamp_millis() - last).max(0) as f64 / 1000.0)
    }

    /// How long this process's last scheduler pass took; `None` if it never made one.
    pub fn scheduler_last_pass(&self) -> Option<Duration> {
        let us = self.scheduler_last_took_us.load(Ordering::Relaxed);
        (self.scheduler_last_loop_ms.load(Ordering::Relaxed) > 0)
            .then(|| Duration::from_micros(us.max(0) as u64))
    }

    /// Records one API call.
    pub fn api_call(&self, route: &str, status: u16, took: Duration) {
        self.api
            .get_or_create(&ApiLabel {
                route: route.to_string(),
                status,
            })
            .observe(took.as_secs_f64());
    }

    /// Records a claim of an instance queued `waited` ago.
    pub fn claimed(&self, queue: &str, waited: Duration) {
        self.claim_latency
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Records an ended try that ran for `ran`.
    pub fn try_ended(&self, outcome: &str, ran: Duration) {
        self.task_duration
            .get_or_create(&TryLabel {
                outcome: outcome.to_string(),
            })
            .observe(ran.as_secs_f64());
    }

    /// Reads the database counts and encodes everything in the Prometheus text format, with
    /// the roles of this process from `roles`.
    pub async fn render(
        &self,
        store: &Store,
        roles: &crate::supervise::RoleBoard,
    ) -> tern_store::Result<String> {
        let s = store.stats().await?;
        self.roles.clear();
        for (role, running) in roles.states() {
            self.roles
                .get_or_create(&RoleLabel { role: role.into() })
                .set(i64::from(running));
        }
        self.logs_waiting
            .set(store.logs_waiting_to_ship().await?.0 as i64);
        for state in tern_core::TaskState::ALL {
            let n = s.task_instances.get(state.as_str()).copied().unwrap_or(0);
            self.task_instances
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(n);
        }
        for state in tern_core::RunState::ALL {
            let n = s.dag_runs.get(state.as_str()).copied().unwrap_or(0);
            self.dag_runs
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(n);
        }
        self.oldest_queued.clear();
        for (queue, age) in &s.oldest_queued_seconds {
            self.oldest_queued
                .get_or_create(&QueueLabel {
                    queue: queue.clone(),
                })
                .set(*age);
        }
        self.agents.clear();
        for (site, n) in &s.connected_agents {
            self.agents
                .get_or_create(&SiteLabel { site: site.clone() })
                .set(*n);
        }
        self.import_errors.set(s.import_errors);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        Ok(out)
    }
}
