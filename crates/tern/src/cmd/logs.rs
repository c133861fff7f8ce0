//! `tern logs DAG RUN TASK [--map-index I] [--try N] [--follow]`.

use std::io::Write;
use std::time::Duration;

use tern_server::logs::LogStore;
use tern_server::Config;

use crate::cli::LogsArgs;

pub async fn run(cfg: Config, a: LogsArgs) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    let logs = LogStore::open(&cfg, &store)?;
    let run = store.get_run(&a.dag_id, &a.run_id).await?;
    let ti = store
        .task_instance_at(run.pk, &a.task_id, a.map_index)
        .await?;
    let mut offset = 0u64;
    loop {
        let tries = store.task_tries(ti.id).await?;
        let chosen = match a.try_number {
            Some(n) => tries.iter().find(|t| t.try_number == n),
            None => tries.last(),
        };
        let Some(t) = chosen else {
            if a.follow {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            match a.try_number {
                Some(n) => anyhow::bail!(
                    "task {} of run {} has no try {n}; it has {} tr(ies)",
                    a.task_id,
                    a.run_id,
                    tries.len()
                ),
                None => {
                    eprintln!(
                        "task {} has not started yet (state {})",
                        a.task_id, ti.state
                    );
                    return Ok(0);
                }
            }
        };
        offset = print_from(&logs, &t.log_path, offset).await?;
        if !a.follow || t.ended_at.is_some() {
            if a.follow {
                // One last read: chunks sent just before the end.
                print_from(&logs, &t.log_path, offset).await?;
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints a log from `offset` to its current end, a megabyte at a time (a huge log never sits
/// in memory whole); returns the offset after it.
async fn print_from(
    logs: &tern_server::logs::LogStore,
    path: &str,
    mut offset: u64,
) -> anyhow::Result<u64> {
    loop {
        let (text, read) = logs.read_from(path, offset, 1 << 20).await?;
        if read == 0 {
            return Ok(offset);
        }
        offset += read;
        print!("{text}");
        std::io::stdout().flush()?;
    }
}
