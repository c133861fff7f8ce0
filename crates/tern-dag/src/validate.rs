//! Turns a [`DagDraft`] into a `DagSpec`: applies `default_args` and built-in defaults, resolves
//! upstream task ids, orders tasks topologically and finds cycles.
//!
//! Everything is linear or `n log n` in the number of tasks and edges (hash lookups, Kahn's
//! algorithm with a heap that keeps declaration order among ready tasks), so 10,000-task DAGs
//! validate in milliseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tern_core::spec::{DEFAULT_POOL, DEFAULT_QUEUE};
use tern_core::{DagSpec, TaskKind, TaskSpec, TriggerRule};

use crate::builtins::suggestion;
use crate::draft::{DagDraft, KindDraft, Problem, TaskDraft, Upstream};

/// Builds the spec of `d` (declared in `file`), or the problems that keep it from loading.
pub(crate) fn build_dag(d: &DagDraft, file: &str) -> Result<DagSpec, Vec<Problem>> {
    let mut problems = Vec::new();
    let n = d.tasks.len();
    // Resolved, de-duplicated upstream indices of every kept task.
    let mut ups: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut seen_stamp = vec![usize::MAX; n];
    for (i, t) in d.tasks.iter().enumerate() {
        if !d.is_kept(i) {
            continue;
        }
        for u in &t.upstream {
            let j = match u {
                Upstream::Task(j) => d.by_id[&d.tasks[*j].id],
                Upstream::Name(name) => match d.by_id.get(name) {
                    Some(&j) => j,
                    None => {
                        problems.push(task_problem(
                            t,
                            format!(
                                "task `{}`: unknown upstream task `{name}` in dag `{}`{}",
                                t.id,
                                d.id,
                                suggestion(name, d.by_id.keys().map(String::as_str))
                            ),
                        ));
                        continue;
                    }
                },
            };
            if seen_stamp[j] != i {
                seen_stamp[j] = i;
                ups[i].push(j);
            }
        }
    }

    let order = match topo_order(d, &ups) {
        Ok(order) => order,
        Err(cycle) => {
            let names: Vec<&str> = cycle.iter().map(|&i| d.tasks[i].id.as_str()).collect();
            problems.push(task_problem(
                &d.tasks[cycle[0]],
                format!(
                    "dag `{}` has a cycle: {} -> {}",
                    d.id,
                    names.join(" -> "),
                    names[0]
                ),
            ));
            Vec::new()
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }

    let tasks = order
        .into_iter()
        .map(|i| task_spec(d, i, &ups[i]))
        .collect();
    Ok(DagSpec {
        dag_id: d.id.clone(),
        file: file.to_string(),
        line: d.main_line,
        schedule: d.schedule.clone(),
        timezone: d.timezone.clone(),
        start_date: d.start_date,
        end_date: d.end_date,
        catchup: d.catchup,
        params: d.params.clone(),
        tags: d.tags.clone(),
        description: d.description.clone(),
        max_active_runs: d.max_active_runs,
        max_active_tasks: d.max_active_tasks,
        on_failure: d.on_failure.clone(),
        on_success: d.on_success.clone(),
        on_retry: d.on_retry.clone(),
        dagrun_timeout_ms: d.dagrun_timeout_ms,
        max_consecutive_failed_dag_runs: d.max_consecutive_failed_dag_runs,
        tasks,
        groups: d
            .groups
            .iter()
            .map(|g| tern_core::GroupSpec {
                group_id: g.id.clone(),
                tooltip: g.tooltip.clone(),
            })
            .collect(),
        index: Default::default(),
    })
}

fn task_problem(t: &TaskDraft, message: String) -> Problem {
    Problem {
        loc: t.loc.clone(),
        main_line: t.main_line,
        message,
        dag: None,
    }
}

fn task_spec(d: &DagDraft, i: usize, ups: &[usize]) -> TaskSpec {
    let t = &d.tasks[i];
    let (c, def) = (&t.common, &d.defaults);
    let kind = match &t.kind {
        KindDraft::Shell {
            cmd,
            env,
            cwd,
            sandbox,
        } => TaskKind::Shell {
            cmd: cmd.clone(),
            env: env.clone(),
            cwd: cwd.clone(),
            sandbox: sandbox.clone(),
        },
        KindDraft::Python {
            code,
            script,
            args,
            env,
            cwd,
            sandbox,
            requirements,
            python_version,
            ..
        } => TaskKind::Python {
            code: code.clone().unwrap_or_default(),
            script: script.clone(),
            args: args.clone(),
            env: env.clone(),
            cwd: cwd.clone(),
            sandbox: sandbox.clone(),
            requirements: requirements.clone(),
            python_version: python_version.clone(),
        },
        KindDraft::Empty => TaskKind::Empty,
        KindDraft::LatestOnly => TaskKind::LatestOnly,
        KindDraft::Ready(k) => k.clone(),
    };
    // Airflow's `BashOperator` skips on exit code 99; tern's shell and python tasks do too.
    let skip_on_exit_code = t.skip_on_exit_code.clone().unwrap_or_else(|| match kind {
        TaskKind::Shell { .. } | TaskKind::Python { .. } => vec![99],
        _ => Vec::new(),
    });
    TaskSpec {
        task_id: t.id.clone(),
        line: t.main_line,
        kind,
        upstream: ups.iter().map(|&j| d.tasks[j].id.clone()).collect(),
        // A teardown's rule is always Airflow's `all_done_setup_success` (a `default_args`
        // rule does not reach it; setting another one on it is an error).
        trigger_rule: if t.teardown {
            TriggerRule::AllDoneSetupSuccess
        } else {
            c.trigger_rule
                .or(def.trigger_rule)
                .unwrap_or(TriggerRule::AllSuccess)
        },
        retries: c.retries.or(def.retries).unwrap_or(0),
        retry_delay_ms: c.retry_delay_ms.or(def.retry_delay_ms).unwrap_or(300_000),
        retry_exponential_backoff: c
            .retry_exponential_backoff
            .or(def.retry_exponential_backoff)
            .unwrap_or(false),
        max_retry_delay_ms: c.max_retry_delay_ms.or(def.max_retry_delay_ms),
        execution_timeout_ms: c.execution_timeout_ms.or(def.execution_timeout_ms),
        queue: c
            .queue
            .clone()
            .or_else(|| def.queue.clone())
            .unwrap_or_else(|| DEFAULT_QUEUE.to_string()),
        pool: c
            .pool
            .clone()
            .or_else(|| def.pool.clone())
            .unwrap_or_else(|| DEFAULT_POOL.to_string()),
        priority_weight: c.priority_weight.or(def.priority_weight).unwrap_or(1),
        skip_on_exit_code,
        flow: t.flow,
        group: t.group.map(|g| d.groups[g].id.clone()),
        setup: t.setup,
        teardown: t.teardown,
        on_failure_fail_dagrun: t.on_failure_fail_dagrun,
        // As in Airflow, waiting for the previous run's downstream tasks implies waiting for
        // the previous run's own instance.
        depends_on_past: c.depends_on_past.or(def.depends_on_past).unwrap_or(false)
            || c.wait_for_downstream
                .or(def.wait_for_downstream)
                .unwrap_or(false),
        wait_for_downstream: c
            .wait_for_downstream
            .or(def.wait_for_downstream)
            .unwrap_or(false),
        expand: t.expand.clone(),
        max_active_tis_per_dag: c.max_active_tis_per_dag.or(def.max_active_tis_per_dag),
    }
}

/// Kahn's algorithm over the kept tasks; among ready tasks the earliest declared comes first.
/// On a cycle, returns the tasks of one cycle in dependency order, starting with the earliest
/// declared of them.
fn topo_order(d: &DagDraft, ups: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = d.tasks.len();
    let mut indegree = vec![0usize; n];
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut kept = 0;
    for i in 0..n {
        if !d.is_kept(i) {
            continue;
        }
        kept += 1;
        indegree[i] = ups[i].len();
        for &u in &ups[i] {
            downs[u].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| d.is_kept(i) && indegree[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(kept);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &downs[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(Reverse(j));
            }
        }
    }
    if order.len() == kept {
        return Ok(order);
    }
    // Every task left has an unprocessed upstream; walking upstream from one must revisit a
    // task, which closes a cycle.
    let start = (0..n)
        .find(|&i| d.is_kept(i) && indegree[i] > 0)
        .expect("a task is left when the order is short");
    let mut pos = vec![usize::MAX; n];
    let mut path = Vec::new();
    let mut cur = start;
    while pos[cur] == usize::MAX {
        pos[cur] = path.len();
        path.push(cur);
        cur = *ups[cur]
            .iter()
            .find(|&&u| indegree[u] > 0)
            .expect("a task in a cycle has an upstream in it");
    }
    // path[pos[cur]..] lists the cycle walking upstream; reverse it to follow `>>`.
    let mut cycle: Vec<usize> = path[pos[cur]..].iter().rev().copied().collect();
    let min_at = cycle
        .iter()
        .enumerate()
        .min_by_key(|(_, &t)| t)
        .map(|(k, _)| k)
        .unwrap_or(0);
    cycle.rotate_left(min_at);
    Err(cycle)
}
