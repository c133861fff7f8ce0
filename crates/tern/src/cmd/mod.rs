//! One module per command group; each returns the process exit code.

mod agent;
mod agents;
mod client_ops;
mod connections;
pub(crate) mod dags;
mod estate_ops;
mod logs;
mod misc;
mod notifications;
mod standalone;
mod tasks;
mod users;
pub(crate) mod variables;

use std::time::{Duration, Instant};

use anyhow::Context;
use tern_store::Store;

use crate::cli::{Cli, Command};

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let cfg = crate::settings::load(&cli)?;
    if cli.server.is_empty()
        && cli.home.is_none()
        && cfg.database_url.is_none()
        && !cfg.home.exists()
        && !cli.command.may_create_the_data_folder()
    {
        // Run elsewhere than where tern was started, a command would otherwise make an empty
        // `./tern-home` and answer from it as if nothing existed.
        anyhow::bail!(
            "no data folder here: ./{} does not exist. Run this where `tern standalone` was started, \
             point at the folder with --home DIR (or TERN_HOME), or at a running server with \
             --server URL; `tern standalone` creates one",
            cfg.home.display()
        );
    }
    if client_ops::handles(&cli.command) {
        // Written once over the client interface, local or remote.
        let client = match cli.server.first() {
            Some(server) => crate::client::Client::Remote(crate::remote::Remote::new(
                server,
                cli.token.clone(),
            )?),
            // Commands that read DAGs see the files as they are now; the others only the
            // database (a large DAG folder is not parsed to list runs).
            None if client_ops::reads_dag_files(&cli.command) => {
                crate::client::Client::Local(open_synced(&cfg).await?)
            }
            None => crate::client::Client::Local(open_store(&cfg).await?),
        };
        let home = cfg.home.clone();
        let local = cli.server.is_empty();
        let code = client_ops::run(client, &home, cli.command).await;
        if local {
            tern_server::wake::poke(&home);
        }
        return code;
    }
    let remote = !cli.server.is_empty()
        && !matches!(
            cli.command,
            Command::Standalone(_) | Command::Server(_) | Command::Agent(_)
        );
    if remote {
        return crate::remote::run(&cli.server[0], cli.token, cli.command).await;
    }
    let home = cfg.home.clone();
    let pokes = cli.command.changes_the_database();
    let code = match cli.command {
        Command::Standalone(args) => standalone::run(cfg, args, true).await,
        Command::Server(args) => standalone::run(cfg, args, false).await,
        Command::Agent(mut args) => {
            anyhow::ensure!(
                !cli.server.is_empty(),
                "tern agent needs the control plane's URL: --server https://… (or TERN_SERVER)"
            );
            args.server = cli.server;
            agent::run(args).await
        }
        Command::Agents(c) => agents::run(cfg, c).await,
        Command::Dags(c) => dags::run(cfg, c).await,
        Command::Tasks(c) => tasks::run(cfg, c).await,
        // Every `runs` command is a client operation (see `client_ops`).
        Command::Runs(_) => anyhow::bail!("internal error: `runs` commands are client operations"),
        // Every `pools` command is a client operation (see `estate_ops`).
        Command::Pools(_) => {
            anyhow::bail!("internal error: `pools` commands are client operations")
        }
        Command::Logs(a) => logs::run(cfg, a).await,
        Command::Connections(c) => connections::run(cfg, c).await,
        Command::Notifications(c) => notifications::run(cfg, c).await,
        Command::Variables(c) => variables::run(cfg, c).await,
        Command::Users(c) => users::users(cfg, c).await,
        Command::Tokens(c) => users::tokens(cfg, c).await,
        Command::Db(c) => misc::db(cfg, c).await,
        Command::Secrets(c) => misc::secrets(cfg, c).await,
        Command::Config(c) => misc::config(cfg, c).await,
    };
    if pokes {
        // The servers of this data folder look at what changed at once.
        tern_server::wake::poke(&home);
    }
    code
}

/// Opens the metadata database of `cfg` for a command: an empty one is initialised; one an older
/// tern made is refused (servers of that version may be using it: upgrading it is
/// `tern db migrate`'s job, see [`migrate_store`]).
pub async fn open_store(cfg: &tern_server::Config) -> anyhow::Result<Store> {
    open_with(cfg, false).await
}

/// `tern db migrate`: opens the metadata database of `cfg` and upgrades its schema.
pub async fn migrate_store(cfg: &tern_server::Config) -> anyhow::Result<Store> {
    open_with(cfg, true).await
}

async fn open_with(cfg: &tern_server::Config, upgrade: bool) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.home).with_context(|| {
        format!(
            "cannot create the data folder {} (--home)",
            cfg.home.display()
        )
    })?;
    let url = cfg.database_url();
    let cannot_open = || format!("cannot open the metadata database {url}");
    let store = Store::connect(&url).await.with_context(cannot_open)?;
    if !upgrade {
        refuse_an_older_schema(&store, &url, "a command").await?;
    }
    store.migrate().await.with_context(cannot_open)?;
    Ok(store.with_max_map_length(cfg.scheduler.max_map_length))
}

/// How long a schema older than this tern's must stay as it is to be an older tern's (and not
/// one another process is creating right now, a migration at a time).
const OLDER_WHEN_STILL_FOR: Duration = Duration::from_secs(1);

/// Fails when `store` holds a schema an older tern made: `who` (a server, a command) does not
/// upgrade it while servers of that version may be using it. The error names both versions and
/// what to do. A schema that is still growing (another process is initialising a new database)
/// is waited for.
pub(crate) async fn refuse_an_older_schema(
    store: &Store,
    url: &str,
    who: &str,
) -> anyhow::Result<()> {
    let mut seen = store.older_schema().await?;
    let mut still_since = Instant::now();
    while let Some((applied, known)) = seen {
        if still_since.elapsed() >= OLDER_WHEN_STILL_FOR {
            anyhow::bail!(
                "the metadata database {} has schema version {applied}, older than this tern's ({known}); \
                 {who} does not upgrade it while servers of the older version may use it. Stop them, \
                 run `tern db migrate` with this tern, then start the servers (`tern standalone`, \
                 one process, upgrades its own database when it starts)",
                tern_server::config::mask_url(url)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = store.older_schema().await?;
        if seen.map(|(now, _)| now) != Some(applied) {
            still_since = Instant::now();
        }
    }
    Ok(())
}

/// Opens the store and loads the DAG files into it (the folder as it is, or the DAG bundle at
/// the commit the servers load), so commands see what runs.
pub async fn open_synced(cfg: &tern_server::Config) -> anyhow::Result<Store> {
    let store = open_store(cfg).await?;
    tern_server::dagsync::DagLoader::from_config(cfg, store.clone(), Default::default())?
        .load(false)
        .await?;
    Ok(store)
}

/// Parses a `--conf` JSON object.
pub fn parse_conf(conf: Option<&str>) -> anyhow::Result<serde_json::Value> {
    match conf {
        None => Ok(serde_json::json!({})),
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--conf is not valid JSON: {text}"))?;
            anyhow::ensure!(
                v.is_object(),
                "--conf must be a JSON object, like '{{\"params\": {{\"limit\": 5}}}}'"
            );
            Ok(v)
        }
    }
}

/// Resolves Ctrl-C / SIGTERM into one future.
pub async fn interrupted() {
    interrupt_signal().await
}

/// Catches Ctrl-C and SIGTERM from the moment it is called (not from the first poll, as
/// [`interrupted`] does): a signal during start-up then stops the process gracefully.
pub fn interrupt_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

/// Who a change made from the local CLI is recorded as in the audit log: `cli:USER`, or
/// `cli:uid-N` when `$USER` is not set (a service, a container).
pub(crate) fn cli_actor() -> String {
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => format!("cli:{u}"),
        // SAFETY: getuid(2) cannot fail and touches no memory.
        _ => format!("cli:uid-{}", unsafe { libc::getuid() }),
    }
}
