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
mod startup;

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
    if !cli.command.only_prints() {
        startup::start_guardian();
    }
    startup::init_logs(&cli.log_level, cli.log_json);
    let runtime = startup::runtime();
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
