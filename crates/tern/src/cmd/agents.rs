//! `tern agents …`: manage remote agents from the control plane.

use anyhow::Context;
use tern_server::Config;

use crate::cli::{ActivationCmd, AgentsCmd, Output};
use crate::output;

pub async fn run(cfg: Config, cmd: AgentsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        // Written once for both modes in `estate_ops`.
        AgentsCmd::List(_) | AgentsCmd::Revoke { .. } => {
            anyhow::bail!("internal error: agents list/revoke are client operations")
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
