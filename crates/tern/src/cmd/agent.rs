//! `tern agent`: the site agent ([`tern_agent`]) started from tern's command line; the
//! `tern-agent` binary starts the same code.

use crate::cli::AgentArgs;

pub async fn run(args: AgentArgs) -> anyhow::Result<i32> {
    let args = tern_agent::AgentArgs {
        server: args.server,
        activation: args.activation,
        dir: args.dir,
        name: args.name,
        concurrency: args.concurrency,
        ca_cert: args.ca_cert,
    };
    tern_agent::run(args, super::interrupted()).await
}
