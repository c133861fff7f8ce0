//! `tern tasks list|clear`, `tern runs mark|delete`, `tern dags state|delete` and `tern users
//! delete`, written once over
//! [`Client`]: the same code runs on the metadata database or, with `--server`, through the
//! REST API, and prints the same output.

use anyhow::Context;
use serde_json::json;
use tern_core::schedule::{parse_local_date, parse_timezone};
use tern_core::{RunState, TaskState};
use tern_store::manage::ClearScope;

use crate::cli::{ClearArgs, Command, DagsCmd, Output, RunsCmd, TasksCmd, UsersCmd};
use crate::client::Client;
use crate::output::{self, print};

/// Whether `command` is one of this module's or [`super::estate_ops`]'s (they run through
/// [`Client`] in both modes).
pub fn handles(command: &Command) -> bool {
    super::estate_ops::handles(command)
        || matches!(
            command,
            Command::Tasks(TasksCmd::List { .. } | TasksCmd::Clear(_))
                | Command::Runs(
                    RunsCmd::List { .. }
                        | RunsCmd::Show { .. }
                        | RunsCmd::Mark { .. }
                        | RunsCmd::Delete { .. }
                )
                | Command::Dags(DagsCmd::List(_) | DagsCmd::State { .. } | DagsCmd::Delete { .. })
                | Command::Users(UsersCmd::Delete { .. })
        )
}

/// Whether `command` reads DAGs (locally it loads the DAG folder first).
pub fn reads_dag_files(command: &Command) -> bool {
    matches!(command, Command::Tasks(_) | Command::Dags(DagsCmd::List(_)))
}

pub async fn run(client: Client, home: &std::path::Path, command: Command) -> anyhow::Result<i32> {
    if super::estate_ops::handles(&command) {
        return super::estate_ops::run(&client, home, command).await;
    }
    match command {
        Command::Tasks(TasksCmd::List { dag_id, out }) => {
            list_tasks(&client, &dag_id, out.output).await
        }
        Command::Dags(DagsCmd::List(o)) => list_dags(&client, o.output).await,
        Command::Runs(RunsCmd::Show {
            dag_id,
            run_id,
            out,
        }) => show_run(&client, &dag_id, &run_id, out.output).await,
        Command::Runs(RunsCmd::List {
            dag,
            state,
            limit,
            out,
        }) => {
            let state = state
                .map(|s| s.parse::<RunState>().map_err(anyhow::Error::msg))
                .transpose()?;
            let runs = client.run_list(dag.as_deref(), state, limit).await?;
            let rows = runs
                .iter()
                .map(|r| {
                    vec![
                        text(&r["dag_id"]),
                        text(&r["run_id"]),
                        text(&r["state"]),
                        text(&r["run_type"]),
                        output::time(when(&r["logical_date"])),
                        output::duration(when(&r["started_at"]), when(&r["ended_at"])),
                    ]
                })
                .collect();
            print(
                out.output,
                &["DAG", "RUN", "STATE", "TYPE", "LOGICAL DATE", "DURATION"],
                rows,
                &runs,
            );
            Ok(0)
        }
        Command::Tasks(TasksCmd::Clear(args)) => clear(&client, args).await,
        Command::Runs(RunsCmd::Mark {
            dag_id,
            run_id,
            state,
        }) => {
            let state: RunState = state.into();
            client.mark_run(&dag_id, &run_id, state).await?;
            println!("{run_id} {}", client.run(&dag_id, &run_id).await?.state);
            Ok(0)
        }
        Command::Runs(RunsCmd::Delete {
            dag_id,
            run_id,
            yes,
        }) => {
            let run = client.run(&dag_id, &run_id).await?;
            anyhow::ensure!(
                yes,
                "nothing deleted: run {run_id} of {dag_id} ({}) and its task instances, tries and outputs would go; add --yes",
                run.state
            );
            client.delete_run(&dag_id, &run_id).await?;
            println!("{run_id} deleted");
            Ok(0)
        }
        Command::Dags(DagsCmd::State { dag_id, run_id }) => {
            println!("{}", client.run(&dag_id, &run_id).await?.state);
            Ok(0)
        }
        Command::Dags(DagsCmd::Delete { dag_id, yes }) => {
            let runs = client.runs(&dag_id).await?.len();
            anyhow::ensure!(
                yes,
                "nothing deleted: DAG {dag_id} and its {runs} run(s) with their task instances, tries, outputs and versions would go; add --yes"
            );
            client.delete_dag(&dag_id).await?;
            println!("{dag_id} deleted ({runs} run(s))");
            Ok(0)
        }
        Command::Users(UsersCmd::Delete { username, yes }) => {
            anyhow::ensure!(
                yes,
                "nothing deleted: user {username} and their tokens and sessions would go; add --yes"
            );
            client.delete_user(&username).await?;
            println!("{username} deleted");
            Ok(0)
        }
        other => anyhow::bail!("internal error: {other:?} is not a client operation"),
    }
}

/// A JSON string field as text (`-` when absent).
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A JSON time field.
fn when(v: &serde_json::Value) -> Option<chrono::DateTime<chrono::Utc>> {
    serde_json::from_value(v.clone()).ok()
}

/// `runs show`: the run and each task instance (JSON: also outputs and tries).
async fn show_run(client: &Client, dag_id: &str, run_id: &str, out: Output) -> anyhow::Result<i32> {
    let v = client
        .run_detail(dag_id, run_id, out == Output::Json)
        .await?;
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let run = &v["run"];
    println!(
        "run        {} of {}",
        text(&run["run_id"]),
        text(&run["dag_id"])
    );
    println!("state      {}", text(&run["state"]));
    println!("type       {}", text(&run["run_type"]));
    println!("logical    {}", output::time(when(&run["logical_date"])));
    println!(
        "interval   {} .. {}",
        output::time(when(&run["data_interval"]["start"])),
        output::time(when(&run["data_interval"]["end"]))
    );
    println!(
        "duration   {}",
        output::duration(when(&run["started_at"]), when(&run["ended_at"]))
    );
    println!("conf       {}", run["conf"]);
    println!();
    let rows: Vec<Vec<String>> = v["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let label = tern_core::mapping::instance_label(
                &text(&t["task_id"]),
                t["map_index"].as_i64().unwrap_or(-1),
            );
            vec![
                label,
                text(&t["state"]),
                format!("{}/{}", t["try_number"], t["max_tries"]),
                output::duration(when(&t["started_at"]), when(&t["ended_at"])),
                text(&t["worker"]),
                t["note"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    output::print_table(
        &["TASK", "STATE", "TRY", "DURATION", "WORKER", "NOTE"],
        &rows,
    );
    Ok(0)
}

async fn list_dags(client: &Client, out: Output) -> anyhow::Result<i32> {
    let dags = client.dags().await?;
    let yes_no = |v: &serde_json::Value| if v == true { "yes" } else { "no" }.to_string();
    let rows = dags
        .iter()
        .map(|d| {
            vec![
                text(&d["dag_id"]),
                text(&d["schedule"]),
                yes_no(&d["is_paused"]),
                yes_no(&d["is_active"]),
                text(&d["version"]),
                text(&d["file"]),
            ]
        })
        .collect();
    print(
        out,
        &["DAG", "SCHEDULE", "PAUSED", "ACTIVE", "VERSION", "FILE"],
        rows,
        &dags,
    );
    let errors = client.import_error_count().await?;
    if errors > 0 && out == Output::Table {
        eprintln!("{errors} DAG file error(s): see `tern dags errors`");
    }
    Ok(0)
}

async fn list_tasks(client: &Client, dag_id: &str, out: Output) -> anyhow::Result<i32> {
    let spec = client.spec(dag_id).await?;
    let rows = spec
        .tasks
        .iter()
        .map(|t| {
            let mapped = t
                .expand
                .as_ref()
                .map(|e| {
                    let keys: Vec<&str> = e.keys.iter().map(|k| k.name.as_str()).collect();
                    format!(
                        "{} {}",
                        if e.zip { "zip" } else { "product" },
                        keys.join(",")
                    )
                })
                .unwrap_or_default();
            vec![
                t.task_id.clone(),
                t.kind.name().to_string(),
                t.trigger_rule.as_str().to_string(),
                t.upstream.join(","),
                mapped,
            ]
        })
        .collect();
    let json: Vec<_> = spec
        .tasks
        .iter()
        .map(|t| {
            json!({"task_id": t.task_id, "kind": t.kind.name(), "trigger_rule": t.trigger_rule.as_str(),
                   "upstream": t.upstream, "group": t.group, "expand": t.expand})
        })
        .collect();
    print(
        out,
        &["task", "kind", "trigger rule", "upstream", "mapped"],
        rows,
        &json,
    );
    Ok(0)
}

/// Airflow's `tasks clear`: the tasks whose id matches `--task` (all without it) in the runs
/// chosen by `--run` or `--start`/`--end` (every run without them), with their downstream or
/// upstream tasks when asked, only the failed ones with `--only-failed`, and only one instance
/// of mapped tasks with `--map-index`. Without `--yes` it lists what it would clear.
async fn clear(client: &Client, a: ClearArgs) -> anyhow::Result<i32> {
    let spec = client.spec(&a.dag_id).await?;
    let pattern = match &a.task {
        Some(p) => Some(
            regex::Regex::new(&format!("^(?:{p})$"))
                .with_context(|| format!("--task {p:?} is not a regular expression"))?,
        ),
        None => None,
    };
    let named: Vec<String> = spec
        .tasks
        .iter()
        .map(|t| t.task_id.clone())
        .filter(|id| pattern.as_ref().is_none_or(|p| p.is_match(id)))
        .collect();
    anyhow::ensure!(
        !named.is_empty(),
        "--task {:?} matches no task of DAG {}; `tern tasks list {}` lists them",
        a.task.as_deref().unwrap_or_default(),
        a.dag_id,
        a.dag_id
    );
    let tz = parse_timezone(&spec.timezone)?;
    let bound = |flag: &str, v: &Option<String>| -> anyhow::Result<_> {
        v.as_deref()
            .map(|d| parse_local_date(d, tz).with_context(|| format!("--{flag}")))
            .transpose()
    };
    let (start, end) = (bound("start", &a.start)?, bound("end", &a.end)?);
    let runs = match &a.run {
        Some(run_id) => vec![client.run(&a.dag_id, run_id).await?],
        None => client
            .runs(&a.dag_id)
            .await?
            .into_iter()
            .filter(|r| start.is_none_or(|s| r.logical_date >= s))
            .filter(|r| end.is_none_or(|e| r.logical_date <= e))
            .collect(),
    };
    let scope = ClearScope {
        downstream: a.downstream,
        upstream: a.upstream,
        map_index: a.map_index,
    };
    let mut plan: Vec<(String, Vec<String>)> = Vec::new();
    for run in &runs {
        let instances = client.instances(&a.dag_id, &run.run_id).await?;
        let chosen: Vec<String> = named
            .iter()
            .filter(|id| {
                instances.iter().any(|i| {
                    &&i.task_id == id
                        && a.map_index.is_none_or(|m| i.map_index == m)
                        && (!a.only_failed
                            || matches!(i.state, TaskState::Failed | TaskState::UpstreamFailed))
                })
            })
            .cloned()
            .collect();
        if !chosen.is_empty() {
            plan.push((run.run_id.clone(), chosen));
        }
    }
    let mut done: Vec<(String, Vec<String>)> = Vec::new();
    if a.yes {
        for (run_id, ids) in &plan {
            let cleared = client.clear(&a.dag_id, run_id, ids, scope).await?;
            done.push((run_id.clone(), cleared));
        }
    }
    let shown = if a.yes { &done } else { &plan };
    let rows = shown
        .iter()
        .map(|(run, ids)| vec![run.clone(), ids.join(", ")])
        .collect();
    let json: Vec<_> = shown
        .iter()
        .map(|(run, ids)| json!({"run_id": run, "task_ids": ids}))
        .collect();
    print(
        a.out.output,
        &["run", if a.yes { "cleared" } else { "would clear" }],
        rows,
        &json,
    );
    if !a.yes && !plan.is_empty() {
        eprintln!(
            "nothing cleared: add --yes to clear these tasks in {} run(s)",
            plan.len()
        );
        return Ok(1);
    }
    if plan.is_empty() {
        eprintln!("no task instance matched: nothing to clear");
    }
    Ok(0)
}
