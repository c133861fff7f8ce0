//! What both binaries (`tern` and `tern-agent`) set up first: log lines on standard error (as
//! text or JSON, `TERN_LOG` winning over the flag) and the async runtime, and the
//! guardian of task processes. Depends only on `tern-worker` of tern's own (which the agent-only
//! binary links anyway), so that binary can include it.

/// Logs to standard error at `level` (or `TERN_LOG`), as JSON objects when `json`.
pub fn init_logs(level: &str, json: bool) {
    let filter = std::env::var("TERN_LOG").unwrap_or_else(|_| level.to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The multi-threaded runtime every command runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        // Blocking-pool threads (file I/O, process spawns) go soon after a burst: an idle
        // process keeps neither their stacks nor their allocator caches.
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

/// Starts the guardian that ends every running try's processes the moment this process dies
/// (`tern_worker::guardian`), for commands that run tasks. Call before any thread starts.
pub fn start_guardian() {
    // SAFETY: called from `main` before the runtime (or any other thread) starts.
    if let Err(e) = unsafe { tern_worker::guardian::start() } {
        eprintln!(
            "warning: the guardian process could not start ({e}); each task process will carry \
             its own death signal instead"
        );
    }
}
