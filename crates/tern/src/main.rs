//! The `tern` binary: parses the command line, loads settings, and hands each command to its
//! module under [`cmd`]. Data goes to stdout, progress and errors to stderr.

mod cli;
mod client;
mod cmd;
mod examples;
mod memory;
mod output;
mod remote;
mod settings;

use clap::Parser;

fn main() {
    memory::configure_allocator();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(tern_dag::isolate::CHILD_ARG) {
        // A child that evaluates DAG files for its parent (see `tern_dag::isolate`).
        std::process::exit(tern_dag::isolate::child_main(&args[2..]));
    }
    // Every DAG file is evaluated in such a child, so no file can take this process down.
    if let Ok(exe) = std::env::current_exe() {
        tern_dag::isolate::isolate_with(exe);
    }
    let cli = cli::Cli::parse();
    if cli.command.only_prints() {
        // Die quietly of SIGPIPE when the reader goes away, as `ls` does, instead of panicking
        // on the failed write. (Not for commands that run tasks: writing to a task that exited
        // must stay an error, not end tern.)
        // SAFETY: signal(2) with the default disposition, before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
        // Blocking-pool threads (file I/O, process spawns) go soon after a burst: an idle
        // server keeps neither their stacks nor their allocator caches.
        .thread_keep_alive(std::time::Duration::from_secs(2))
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
