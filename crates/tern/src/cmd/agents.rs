//! `tern agents …`: manage remote agents from the control plane.

use anyhow::Context;
use tern_server::Config;

use crate::cli::{ActivationCmd, AgentsCmd, Output};
use crate::output::{self, print};

pub async fn run(cfg: Config, cmd: AgentsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        AgentsCmd::List(o) => {
            let agents = store.list_agents().await?;
            let rows = agents
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.name.clone(),
                        a.site.clone(),
                        a.queues.join(","),
                        a.version.clone(),
                        a.address.clone(),
                        if a.revoked {
                            "revoked"
                        } else if a.connected {
                            "yes"
                        } else {
                            "no"
                        }
                        .into(),
                        output::time(a.last_seen),
                        a.running.to_string(),
                        a.connections.join(","),
                    ]
                })
                .collect();
            print(
                o.output,
                &[
                    "ID",
                    "NAME",
                    "SITE",
                    "QUEUES",
                    "VERSION",
                    "ADDRESS",
                    "CONNECTED",
                    "LAST SEEN",
                    "RUNNING",
                    "CONNECTIONS",
                ],
                rows,
                &agents,
            );
        }
        AgentsCmd::Revoke { id } => {
            let n = store.revoke_agent(id).await?;
            eprintln!("agent {id} revoked; {n} running attempt(s) will be retried");
        }
        AgentsCmd::Activation(ActivationCmd::Create {
            site,
            queues,
            ttl,
            out,
        }) => {
            let ttl = tern_core::parse_duration(&ttl).context("--ttl")?;
            let a = store.create_activation(&site, &queues, ttl).await?;
            if out.output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&a).expect("serialisable")
                );
            } else {
                println!("{}", a.code);
                eprintln!(
                    "one-time code for an agent of site {} (queues {}), valid until {} UTC:\n  tern agent --server URL --activation {} --dir DIR",
                    a.site,
                    a.queues.join(","),
                    output::time(Some(a.expires_at)),
                    a.code
                );
            }
        }
    }
    Ok(0)
}
