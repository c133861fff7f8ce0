//! `tern dags …`: list, show, test, trigger, pause, unpause, backfill, errors.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;
use tern_core::schedule::{parse_local_date, parse_timezone};
use tern_core::{RunState, RunType};
use tern_server::scheduler::Upcoming;
use tern_server::trigger::{trigger, TriggerRequest};
use tern_server::{Config, Node, Roles};
use tern_store::{NewRun, Store, StoreError};

use crate::cli::{BackfillArgs, DagsCmd, Output, TriggerArgs};
use crate::output::{self, print};

pub async fn run(cfg: Config, cmd: DagsCmd) -> anyhow::Result<i32> {
    match cmd {
        DagsCmd::Show { dag_id, out } => show(&cfg, &dag_id, out.output).await,
        DagsCmd::Errors(o) => errors(&cfg, o.output).await,
        // Written once for both modes in `client_ops`.
        DagsCmd::List(_) | DagsCmd::State { .. } | DagsCmd::Delete { .. } => {
            anyhow::bail!("internal error: `dags list|state|delete` are client operations")
        }
        DagsCmd::Pause { dag_id } => set_paused(&cfg, &dag_id, true).await,
        DagsCmd::Unpause { dag_id } => set_paused(&cfg, &dag_id, false).await,
        DagsCmd::Trigger(a) => trigger_cmd(&cfg, a).await,
        DagsCmd::Test { dag_id, conf } => test(&cfg, &dag_id, conf.as_deref()).await,
        DagsCmd::Backfill(a) => backfill(&cfg, a).await,
        DagsCmd::Next { dag_id, n, out } => {
            let store = super::open_synced(&cfg).await?;
            let next = tern_server::scheduler::upcoming_runs(&store, &dag_id, n.into()).await?;
            print_upcoming(out.output, &next);
            Ok(0)
        }
    }
}

/// What `tern dags next` prints, whether it asked the database or a server.
pub fn print_upcoming(out: Output, next: &Upcoming) {
    if out == Output::Table {
        let paused = if next.is_paused { ", paused" } else { "" };
        println!(
            "{}: {} ({}{paused})",
            next.dag_id, next.schedule, next.timezone
        );
        if next.runs.is_empty() {
            println!("no more scheduled runs");
            return;
        }
    }
    // In the DAG's zone with its offset, so a DST change shows.
    let tz = parse_timezone(&next.timezone).unwrap_or(chrono_tz::UTC);
    let local = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&tz)
            .format("%Y-%m-%d %H:%M:%S%:z")
            .to_string()
    };
    let rows = next
        .runs
        .iter()
        .map(|r| {
            vec![
                local(r.logical_date),
                local(r.data_interval.start),
                local(r.data_interval.end),
                local(r.run_after),
            ]
        })
        .collect();
    print(
        out,
        &[
            "LOGICAL DATE",
            "INTERVAL START",
            "INTERVAL END",
            "RUNS AFTER",
        ],
        rows,
        next,
    );
}

async fn show(cfg: &Config, dag_id: &str, out: Output) -> anyhow::Result<i32> {
    let store = super::open_synced(cfg).await?;
    let dag = store.get_dag(dag_id).await?;
    let spec = store.spec(dag.latest_version_id).await?;
    if out == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"dag": dag, "spec": &*spec}))
                .expect("serialisable")
        );
        return Ok(0);
    }
    println!(
        "DAG        {} (version {}, {})",
        spec.dag_id, dag.version, spec.file
    );
    if let Some(d) = &spec.description {
        println!("about      {d}");
    }
    println!(
        "schedule   {} ({})",
        spec.schedule.describe(),
        spec.timezone
    );
    let next = tern_server::scheduler::upcoming_of(&store, &dag, &spec, 1).await?;
    match next.runs.first() {
        Some(r) => println!(
            "next run   {} (interval {} to {}; `tern dags next {dag_id}` for more)",
            output::time(Some(r.logical_date)),
            output::time(Some(r.data_interval.start)),
            output::time(Some(r.data_interval.end)),
        ),
        None => println!("next run   -"),
    }
    println!("start      {}", output::time(spec.start_date));
    println!("catchup    {}", spec.catchup);
    println!("paused     {}", dag.is_paused);
    println!(
        "limits     max_active_runs={} max_active_tasks={}",
        spec.max_active_runs, spec.max_active_tasks
    );
    if !spec.tags.is_empty() {
        println!("tags       {}", spec.tags.join(", "));
    }
    for (name, p) in &spec.params {
        println!(
            "param      {name} = {} ({})",
            p.default,
            p.r#type.as_deref().unwrap_or("any")
        );
    }
    println!();
    let rows = spec
        .tasks
        .iter()
        .map(|t| {
            vec![
                t.task_id.clone(),
                t.kind.name().into(),
                t.upstream.join(","),
                t.trigger_rule.to_string(),
                t.retries.to_string(),
                t.queue.clone(),
            ]
        })
        .collect::<Vec<_>>();
    output::print_table(
        &[
            "TASK",
            "KIND",
            "UPSTREAM",
            "TRIGGER RULE",
            "RETRIES",
            "QUEUE",
        ],
        &rows,
    );
    Ok(0)
}

async fn errors(cfg: &Config, out: Output) -> anyhow::Result<i32> {
    let store = super::open_synced(cfg).await?;
    let errs = store.import_errors().await?;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&errs).expect("serialisable")
        ),
        Output::Table => {
            if errs.is_empty() {
                eprintln!("no import errors");
            }
            for e in &errs {
                println!("{}:{}: {}", e.file, e.line, e.message);
            }
        }
    }
    Ok(0)
}

async fn set_paused(cfg: &Config, dag_id: &str, paused: bool) -> anyhow::Result<i32> {
    let store = super::open_synced(cfg).await?;
    store.set_paused(dag_id, paused).await?;
    eprintln!(
        "DAG {dag_id} is {}",
        if paused { "paused" } else { "unpaused" }
    );
    Ok(0)
}

async fn trigger_cmd(cfg: &Config, a: TriggerArgs) -> anyhow::Result<i32> {
    let store = super::open_synced(cfg).await?;
    let conf = super::parse_conf(a.conf.as_deref())?;
    let logical_date = match &a.logical_date {
        Some(d) => {
            let (_, spec) = store.latest_spec(&a.dag_id).await?;
            let tz = parse_timezone(&spec.timezone)?;
            Some(parse_local_date(d, tz).context("--logical-date")?)
        }
        None => None,
    };
    let req = TriggerRequest {
        dag_id: a.dag_id.clone(),
        conf,
        run_id: a.run_id.clone(),
        logical_date,
        run_type: None,
    };
    let (run, _) = trigger(&store, &req).await?;
    store
        .audit(
            &super::cli_actor(),
            "run.trigger",
            &format!("{}/{}", a.dag_id, run.run_id),
            "cli",
        )
        .await?;
    if a.out.output == Output::Json && !a.wait {
        println!(
            "{}",
            serde_json::to_string_pretty(&run).expect("serialisable")
        );
    } else {
        println!("{}", run.run_id);
    }
    if !a.wait {
        return Ok(0);
    }
    // The servers of this folder start it now rather than at their next poll.
    tern_server::wake::poke(&cfg.home);
    eprintln!("waiting for {} {}", a.dag_id, run.run_id);
    let run = wait_for_run(&store, &a.dag_id, &run.run_id).await?;
    report_run(&store, &run).await?;
    Ok(if run.state == RunState::Success { 0 } else { 1 })
}

/// Waits until the run ends (it is executed by another process): the run is read again only
/// when the database changed (SQLite tells that for the price of one pragma), every 2 ms during
/// the first second, so a short run's end is seen at once, then less and less often (a long
/// run's waiter costs next to nothing); on PostgreSQL from 20 ms. If nothing ran it after a
/// while, says once that a scheduler must be running.
async fn wait_for_run(
    store: &Store,
    dag_id: &str,
    run_id: &str,
) -> anyhow::Result<tern_store::DagRun> {
    let first = match store.backend() {
        tern_store::Backend::Sqlite => Duration::from_millis(2),
        tern_store::Backend::Postgres => Duration::from_millis(20),
    };
    let poll = |waited: Duration| match waited.as_secs() {
        0 => first,
        1..=9 => first.max(Duration::from_millis(20)),
        _ => Duration::from_millis(200),
    };
    let started = std::time::Instant::now();
    let mut hinted = false;
    let mut changes = store.change_watch();
    loop {
        if changes.changed(store).await {
            let run = store.get_run(dag_id, run_id).await?;
            if run.state.is_finished() {
                return Ok(run);
            }
        }
        if !hinted && started.elapsed() >= NO_SCHEDULER_HINT_AFTER {
            hinted = true;
            let run = store.get_run(dag_id, run_id).await?;
            let tis = store.task_instances(run.pk).await?;
            if !tis.iter().any(|t| t.started_at.is_some()) {
                eprintln!(
                    "{dag_id} {run_id} has not started yet: is a scheduler running (`tern standalone` or `tern server` on this data folder)?"
                );
            }
        }
        tokio::time::sleep(poll(started.elapsed())).await;
    }
}

/// How long `--wait` waits for a run to start before it asks whether a scheduler runs.
const NO_SCHEDULER_HINT_AFTER: Duration = Duration::from_secs(5);

/// Prints a finished run's outcome and each task's state to stderr.
pub async fn report_run(store: &Store, run: &tern_store::DagRun) -> anyhow::Result<()> {
    let tis = store.task_instances(run.pk).await?;
    let lines: Vec<ReportLine> = tis
        .into_iter()
        .map(|t| ReportLine {
            label: t.label(),
            state: t.state.to_string(),
            try_number: t.try_number,
            note: t.note,
        })
        .collect();
    print_report(
        &run.run_id,
        &run.dag_id,
        run.state.as_str(),
        &output::duration(run.started_at, run.ended_at),
        &lines,
    );
    Ok(())
}

/// One task instance in the report of an ended run.
pub struct ReportLine {
    pub label: String,
    pub state: String,
    pub try_number: u32,
    pub note: Option<String>,
}

/// The report `dags trigger --wait` prints (to stderr) when the run ended: one line for the
/// run, one per task instance; the same whether the run was read locally or through the API.
pub fn print_report(run_id: &str, dag_id: &str, state: &str, duration: &str, lines: &[ReportLine]) {
    eprintln!("run {run_id} of {dag_id}: {state} in {duration}");
    let width = lines
        .iter()
        .map(|l| l.label.len())
        .max()
        .unwrap_or(0)
        .max(24);
    for l in lines {
        eprintln!(
            "  {:<width$} {:<16} try {}{}",
            l.label,
            l.state,
            l.try_number,
            l.note
                .as_deref()
                .map(|n| format!("  {n}"))
                .unwrap_or_default()
        );
    }
}

async fn test(cfg: &Config, dag_id: &str, conf: Option<&str>) -> anyhow::Result<i32> {
    let store = super::open_synced(cfg).await?;
    let req = TriggerRequest {
        dag_id: dag_id.to_string(),
        conf: super::parse_conf(conf)?,
        run_id: Some(format!(
            "test__{}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ")
        )),
        logical_date: None,
        run_type: None,
    };
    let node = start_runner(cfg, &store).await?;
    let (run, queued) = trigger(&store, &req).await?;
    if queued {
        node.events.work_queued();
    }
    eprintln!("testing {dag_id}: run {}", run.run_id);
    let outcome = tokio::select! {
        r = node.wait_run(dag_id, &run.run_id) => Some(r?),
        _ = super::interrupted() => None,
        why = node.failure() => {
            node.shutdown().await;
            anyhow::bail!("{why}");
        }
    };
    node.shutdown().await;
    let Some(run) = outcome else {
        eprintln!("interrupted");
        return Ok(130);
    };
    report_run(&store, &run).await?;
    // Show the logs of failed tasks: that is what a developer testing a DAG wants to read.
    let logs = tern_server::logs::LogStore::open(cfg, &store)?;
    for ti in store.task_instances(run.pk).await? {
        if ti.state == tern_core::TaskState::Failed {
            if let Some(last) = store.task_tries(ti.id).await?.last() {
                eprintln!("--- log of {} (try {}) ---", ti.task_id, last.try_number);
                eprint!("{}", logs.read_all(&last.log_path).await?);
            }
        }
    }
    Ok(if run.state == RunState::Success { 0 } else { 1 })
}

/// Starts what runs already created runs in this process: the scheduler's housekeeping and a
/// local agent (no DAG loading, no HTTP), for `dags test` and `dags backfill`.
async fn start_runner(cfg: &Config, store: &Store) -> anyhow::Result<Node> {
    // Housekeeping for the runs this command makes, and no other run: a due schedule of
    // another DAG in the folder is not this command's business.
    let roles = Roles {
        scheduler: true,
        schedule_runs: false,
        dag_sync: false,
        local_agent: true,
        http: false,
    };
    Node::start_with_store(cfg, roles, store.clone()).await
}

async fn backfill(cfg: &Config, a: BackfillArgs) -> anyhow::Result<i32> {
    let store = super::open_synced(cfg).await?;
    let dag = store.get_dag(&a.dag_id).await?;
    if dag.is_paused {
        bail!(
            "DAG {:?} is paused; unpause it with `tern dags unpause {}` first",
            a.dag_id,
            a.dag_id
        );
    }
    let spec = store.spec(dag.latest_version_id).await?;
    if spec.schedule == tern_core::Schedule::None {
        bail!(
            "DAG {:?} has no schedule, so it has no intervals to backfill; trigger runs with `tern dags trigger {}` (with --logical-date for a past date)",
            a.dag_id,
            a.dag_id
        );
    }
    let tz = parse_timezone(&spec.timezone)?;
    let from = parse_local_date(&a.from, tz).context("--from")?;
    let to = parse_local_date(&a.to, tz).context("--to")?;
    anyhow::ensure!(from <= to, "--from {} is after --to {}", a.from, a.to);
    let conf = super::parse_conf(a.conf.as_deref())?;
    let params = tern_core::params::resolve_params(&spec.params, &conf)
        .map_err(|e| anyhow::anyhow!("invalid conf for DAG {:?}: {e}", a.dag_id))?;
    let runs = spec
        .schedule
        .runs_between(&spec.schedule_bounds(), from, to);
    anyhow::ensure!(
        !runs.is_empty(),
        "no schedule interval of {} starts between {} and {}",
        a.dag_id,
        a.from,
        a.to
    );
    let mut run_ids = Vec::new();
    let mut created = 0;
    for r in &runs {
        let run_id = format!(
            "backfill__{}",
            r.logical_date
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let new = NewRun {
            dag_id: a.dag_id.clone(),
            run_id: run_id.clone(),
            run_type: RunType::Backfill,
            logical_date: r.logical_date,
            data_interval: r.data_interval,
            conf: conf.clone(),
            params: serde_json::Value::Object(params.clone()),
        };
        match store.create_run(&new, dag.latest_version_id).await {
            Ok(_) => created += 1,
            // Resuming: the interval already has a run (from an earlier backfill or schedule).
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        run_ids.push(run_id);
    }
    eprintln!(
        "backfill of {}: {} interval(s), {created} new run(s), {} already there",
        a.dag_id,
        runs.len(),
        runs.len() - created
    );
    if a.no_run {
        return Ok(0);
    }
    let node = start_runner(cfg, &store).await?;
    node.events.work_queued();
    let bar = indicatif::ProgressBar::new(runs.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} runs finished ({msg}) {elapsed}",
        )
        .expect("valid template"),
    );
    let interrupted = super::interrupted();
    tokio::pin!(interrupted);
    let (done, failed) = loop {
        let mut done = 0;
        let mut failed = 0;
        for id in &run_ids {
            let r = store.get_run(&a.dag_id, id).await?;
            if r.state.is_finished() {
                done += 1;
            }
            if r.state == RunState::Failed {
                failed += 1;
            }
        }
        bar.set_position(done);
        bar.set_message(format!("{failed} failed"));
        if done as usize == run_ids.len() {
            break (done, failed);
        }
        tokio::select! {
            _ = &mut interrupted => {
                bar.abandon_with_message("interrupted: run the same command again to resume");
                node.shutdown().await;
                return Ok(130);
            }
            why = node.failure() => {
                bar.abandon_with_message("stopped: run the same command again to resume");
                node.shutdown().await;
                anyhow::bail!("{why}");
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    bar.finish_with_message(format!("{failed} failed"));
    node.shutdown().await;
    eprintln!(
        "backfill of {}: {done} run(s) finished, {failed} failed",
        a.dag_id
    );
    Ok(if failed == 0 { 0 } else { 1 })
}
