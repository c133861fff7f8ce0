//! The `tern` binary: parses the command line, loads settings, and hands each command to its
//! module under [`cmd`]. Data goes to stdout, progress and errors to stderr.

mod cli;
mod cmd;
mod examples;
mod memory;
mod output;
mod remote;
mod settings;

use clap::Parser;

fn main() {
    memory::configure_allocator();
    let cli = cli::Cli::parse();
    let filter = std::env::var("TERN_LOG").unwrap_or_else(|_| cli.log_level.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let code = runtime.block_on(async {
        match cmd::run(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    // Do not wait for blocking threads (e.g. a stdin reader) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(code);
}
