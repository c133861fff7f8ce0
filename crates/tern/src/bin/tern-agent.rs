//! `tern-agent`: the site agent alone, for branch-office machines (what `tern agent` runs,
//! without the control plane, Starlark, the UI or the API in the binary).

use std::path::PathBuf;

use clap::Parser;

// Shared with the `tern` binary; neither module uses anything of tern's control plane.
#[path = "../memory.rs"]
mod memory;
#[path = "../startup.rs"]
mod startup;

/// Runs a site's tasks for a tern control plane: dials out to it, never listens.
#[derive(Parser, Debug)]
#[command(name = "tern-agent", version)]
struct Args {
    /// The control plane's URL(s), comma-separated for several servers sharing one database
    /// (the agent moves to the next one when the current cannot be reached).
    #[arg(long, env = "TERN_SERVER", value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// One-time activation code (first start only; later starts use the saved credential).
    #[arg(long, env = "TERN_ACTIVATION", hide_env_values = true)]
    activation: Option<String>,
    /// The agent's own folder: credential, settings (agent.toml), spool.
    #[arg(long, env = "TERN_AGENT_DIR")]
    dir: PathBuf,
    /// Name shown on the control plane (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Task attempts run at once (default 8, or `concurrency` in DIR/agent.toml).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Trust this PEM CA certificate for the control plane's TLS (besides the system's).
    #[arg(long, env = "TERN_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Log level (`TERN_LOG` wins): error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Log lines as JSON objects.
    #[arg(long)]
    log_json: bool,
}

async fn stopped() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn main() {
    memory::configure_allocator();
    let args = Args::parse();
    startup::start_guardian();
    startup::init_logs(&args.log_level, args.log_json);
    let runtime = startup::runtime();
    let agent = tern_agent::AgentArgs {
        server: args.server,
        activation: args.activation,
        dir: args.dir,
        name: args.name,
        concurrency: args.concurrency,
        ca_cert: args.ca_cert,
    };
    let code = runtime.block_on(async {
        match tern_agent::run(agent, stopped()).await {
            Ok(code) => code,
            Err(e) => {
                // 1, as a revocation: settings that cannot work are not retried in a loop.
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}
