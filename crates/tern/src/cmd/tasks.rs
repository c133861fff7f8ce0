//! `tern tasks test`: run one task now, in this process, without the scheduler and without
//! recording any state; the log goes to the terminal.

use anyhow::Context;
use tern_core::schedule::{parse_local_date, parse_timezone};
use tern_protocol::{Assignment, RunContext};
use tern_server::Config;
use tern_worker::logsink::TerminalSink;
use tern_worker::{execute, ExecOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::TasksCmd;

pub async fn run(cfg: Config, cmd: TasksCmd) -> anyhow::Result<i32> {
    let TasksCmd::Test {
        dag_id,
        task_id,
        date,
        conf,
    } = cmd
    else {
        // `tasks list|clear` are written once for both modes in `client_ops`.
        anyhow::bail!("internal error: only `tasks test` runs here");
    };
    let store = super::open_synced(&cfg).await?;
    let (_, spec) = store.latest_spec(&dag_id).await?;
    let task = spec.task(&task_id).cloned().with_context(|| {
        let ids: Vec<&str> = spec.tasks.iter().map(|t| t.task_id.as_str()).collect();
        format!(
            "DAG {dag_id} has no task {task_id:?}; its tasks are: {}",
            ids.join(", ")
        )
    })?;
    let tz = parse_timezone(&spec.timezone)?;
    let logical_date = match date {
        Some(d) => parse_local_date(&d, tz).context("--date")?,
        None => chrono::Utc::now(),
    };
    let conf = super::parse_conf(conf.as_deref())?;
    let params = tern_core::params::resolve_params(&spec.params, &conf)
        .map_err(|e| anyhow::anyhow!("invalid conf for DAG {dag_id:?}: {e}"))?;
    let interval = spec
        .schedule
        .manual_interval(&spec.schedule_bounds(), logical_date);
    let external_state = tern_server::gateway::external_state(&store, &task, logical_date).await?;
    let (map_index, map_values) = first_instance(&task, &params)?;
    let a = Assignment {
        ti_id: 0,
        attempt: "test".into(),
        dag_id: dag_id.clone(),
        run_id: format!("test__{}", logical_date.format("%Y-%m-%dT%H:%M:%SZ")),
        task_id: task_id.clone(),
        try_number: 1,
        max_tries: 1,
        task,
        context: RunContext {
            logical_date,
            data_interval_start: interval.start,
            data_interval_end: interval.end,
            run_type: "manual".into(),
            params,
            conf,
            outputs: Default::default(),
            timezone: spec.timezone.clone(),
        },
        lease_ms: 0,
        connections: Default::default(),
        external_state,
        variables: Default::default(),
        map_index,
        map_values,
    };
    let opts = ExecOptions {
        python: cfg.agent.python.clone(),
        kill_grace: cfg.kill_grace()?,
        ..ExecOptions::default()
    }
    .with_connections(
        tern_worker::connections::Connections::resolve(&Default::default(), "", std::env::vars())
            .context("a TERN_CONN_<NAME> variable")?,
    );
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        super::interrupted().await;
        c2.cancel();
    });
    let c = execute(&a, &opts, &TerminalSink, &cancel).await;
    if !c.outputs.is_empty() {
        println!(
            "{}",
            serde_json::to_string_pretty(&c.outputs).expect("serialisable")
        );
    }
    Ok(if c.success { 0 } else { 1 })
}

/// For a mapped task, the first instance: index 0 with the first element of each list (from the
/// DAG file or the params); a list that only an upstream task's output gives is an error.
fn first_instance(
    task: &tern_core::TaskSpec,
    params: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<(Option<u32>, serde_json::Map<String, serde_json::Value>)> {
    let Some(expand) = &task.expand else {
        return Ok((None, Default::default()));
    };
    // Instance 0 takes the first element of every list, combined or zipped alike.
    let mut first = serde_json::Map::new();
    for key in &expand.keys {
        let list = match &key.source {
            tern_core::MapSource::Values { values } => values.clone(),
            tern_core::MapSource::Param { name } => params
                .get(name)
                .and_then(tern_core::mapping::as_list)
                .with_context(|| format!("param {name:?} is not a list; pass one with --conf"))?,
            tern_core::MapSource::Output { .. } => anyhow::bail!(
                "task {} maps `{}` over {}, which only a run has; test it in a run \
                 (`tern dags trigger`) or map over a list or a param",
                task.task_id,
                key.name,
                key.source.describe()
            ),
        };
        let element = list.into_iter().next().with_context(|| {
            format!(
                "task {} maps over an empty list: nothing to test",
                task.task_id
            )
        })?;
        first.insert(key.name.clone(), element);
    }
    Ok((Some(0), first))
}
