//! `tern notifications …`: the outbox of DAG notifications and how sending them went.

use tern_server::Config;

use crate::cli::NotificationsCmd;
use crate::output::{self, print};

pub async fn run(cfg: Config, cmd: NotificationsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        NotificationsCmd::List { dag, limit, out } => {
            let list = store.list_notifications(dag.as_deref(), limit).await?;
            let rows = list
                .iter()
                .map(|n| {
                    vec![
                        n.id.to_string(),
                        output::time(Some(n.created_at)),
                        n.dag_id.clone(),
                        n.run_id.clone(),
                        n.event.clone(),
                        format!("{} ({})", n.conn, n.hook),
                        n.state.clone(),
                        n.tries.to_string(),
                        n.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print(
                out.output,
                &[
                    "ID",
                    "CREATED",
                    "DAG",
                    "RUN",
                    "EVENT",
                    "CONNECTION",
                    "STATE",
                    "TRIES",
                    "LAST ERROR",
                ],
                rows,
                &list,
            );
        }
    }
    Ok(0)
}
