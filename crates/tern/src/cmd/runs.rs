//! `tern runs show` (the other `runs` commands are in `client_ops`).

use serde_json::json;
use tern_server::Config;

use crate::cli::{Output, RunsCmd};
use crate::output;

pub async fn run(cfg: Config, cmd: RunsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        // Written once for both modes in `client_ops`.
        RunsCmd::List { .. } | RunsCmd::Mark { .. } | RunsCmd::Delete { .. } => {
            anyhow::bail!("internal error: `runs list|mark|delete` are client operations")
        }
        RunsCmd::Show {
            dag_id,
            run_id,
            out,
        } => {
            let run = store.get_run(&dag_id, &run_id).await?;
            let tis = store.task_instances(run.pk).await?;
            if out.output == Output::Json {
                let outputs = store.run_outputs(run.pk).await?;
                let mut tries = serde_json::Map::new();
                for ti in &tis {
                    tries.insert(
                        ti.label(),
                        serde_json::to_value(store.task_tries(ti.id).await?)?,
                    );
                }
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"run": run, "tasks": tis, "outputs": outputs, "tries": tries})
                    )
                    .expect("serialisable")
                );
                return Ok(0);
            }
            println!("run        {} of {}", run.run_id, run.dag_id);
            println!("state      {}", run.state);
            println!("type       {}", run.run_type);
            println!("logical    {}", output::time(Some(run.logical_date)));
            println!(
                "interval   {} .. {}",
                output::time(Some(run.data_interval.start)),
                output::time(Some(run.data_interval.end))
            );
            println!(
                "duration   {}",
                output::duration(run.started_at, run.ended_at)
            );
            println!("conf       {}", run.conf);
            println!();
            let rows: Vec<Vec<String>> = tis
                .iter()
                .map(|t| {
                    vec![
                        t.label(),
                        t.state.to_string(),
                        format!("{}/{}", t.try_number, t.max_tries),
                        output::duration(t.started_at, t.ended_at),
                        t.worker.clone().unwrap_or_else(|| "-".into()),
                        t.note.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            output::print_table(
                &["TASK", "STATE", "TRY", "DURATION", "WORKER", "NOTE"],
                &rows,
            );
        }
    }
    Ok(0)
}
