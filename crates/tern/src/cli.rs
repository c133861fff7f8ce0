//! The command-line grammar (clap). Every listing takes `--output json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "tern",
    version,
    about = "tern: a fast workflow orchestrator for hybrid estates"
)]
pub struct Cli {
    /// Data folder (database, logs, settings). Default: ./tern-home.
    #[arg(long, global = true, env = "TERN_HOME")]
    pub home: Option<PathBuf>,
    /// Folder of DAG files. Default: HOME/dags.
    #[arg(long, global = true, env = "TERN_DAGS")]
    pub dags: Option<PathBuf>,
    /// Settings file. Default: HOME/tern.toml when it exists.
    #[arg(long, global = true, env = "TERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Metadata database URL (sqlite:///path or postgres://…). Default: SQLite in HOME.
    #[arg(long, global = true, env = "TERN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Log filter for tern's own messages (error, warn, info, debug).
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    /// Write tern's own messages as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// A remote control plane, e.g. https://tern.example.com: the everyday commands then call its
    /// REST API with --token instead of opening the metadata database. `tern agent` connects to
    /// it (comma-separated: several servers sharing one database).
    #[arg(long, global = true, env = "TERN_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// API token for --server (`tern tokens create USER` on the server).
    #[arg(long, global = true, env = "TERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// Whether the servers of the data folder are poked when the command ends (every command
    /// but the long-running ones): what it changed (a run, a clear, a new DAG version found by
    /// its folder sync) is acted on at once, not at the servers' next poll.
    pub fn changes_the_database(&self) -> bool {
        !matches!(
            self,
            Command::Standalone(_) | Command::Server(_) | Command::Agent(_)
        )
    }

    /// Whether the command may start with no data folder and make one (the control plane,
    /// an agent, `db migrate`, `config show`); the others need one to exist.
    pub fn may_create_the_data_folder(&self) -> bool {
        matches!(
            self,
            Command::Standalone(_)
                | Command::Server(_)
                | Command::Agent(_)
                | Command::Db(_)
                | Command::Config(_)
        )
    }

    /// Whether the command only reads and prints (no server, agent or task process): such a
    /// command ends quietly when its output is closed early (`tern dags list | head`).
    pub fn only_prints(&self) -> bool {
        !matches!(
            self,
            Command::Standalone(_)
                | Command::Server(_)
                | Command::Agent(_)
                | Command::Dags(DagsCmd::Test { .. } | DagsCmd::Backfill(_))
                | Command::Tasks(TasksCmd::Test { .. })
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole system in one process: scheduler, local agent, HTTP server, on SQLite.
    Standalone(StandaloneArgs),
    /// Run the control plane (scheduler, HTTP server with the agent gateway, local agent) without
    /// writing example DAGs.
    Server(StandaloneArgs),
    /// Run an agent that connects out to a control plane and runs its site's tasks.
    Agent(AgentArgs),
    /// Manage remote agents and their activation codes.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Work with DAGs.
    #[command(subcommand)]
    Dags(DagsCmd),
    /// Work with task instances.
    #[command(subcommand)]
    Tasks(TasksCmd),
    /// Work with DAG runs.
    #[command(subcommand)]
    Runs(RunsCmd),
    /// Print the log of a task instance.
    Logs(LogsArgs),
    /// Manage pools.
    #[command(subcommand)]
    Pools(PoolsCmd),
    /// Manage the connections the control plane keeps (encrypted at rest).
    #[command(subcommand)]
    Connections(ConnectionsCmd),
    /// Manage variables (`{{ var.value.KEY }}` in templates; secret ones encrypted at rest).
    #[command(subcommand)]
    Variables(VariablesCmd),
    /// DAG notifications (on_failure, on_success, on_retry) and how their sending went.
    #[command(subcommand)]
    Notifications(NotificationsCmd),
    /// Manage users (who may use the API and UI, with which role).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage API tokens (bearer tokens for the REST API).
    #[command(subcommand)]
    Tokens(TokensCmd),
    /// Metadata database maintenance.
    #[command(subcommand)]
    Db(DbCmd),
    /// The secret key that seals connections and secret variables at rest.
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Settings.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Args, Debug)]
pub struct StandaloneArgs {
    /// Port of the HTTP server (on 127.0.0.1).
    #[arg(long)]
    pub port: Option<u16>,
    /// Full listen address, e.g. 0.0.0.0:8080.
    #[arg(long, conflicts_with = "port")]
    pub bind: Option<String>,
    /// Do not write the example DAGs into an empty DAG folder.
    #[arg(long)]
    pub no_examples: bool,
    /// Serve HTTPS with this PEM certificate chain (setting server.tls_cert).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (setting server.tls_key).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArg {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum DagsCmd {
    /// List DAGs.
    List(OutputArg),
    /// Show one DAG: schedule, params, tasks and their dependencies.
    Show {
        dag_id: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Run a whole DAG once, in this process, and print the outcome.
    Test {
        dag_id: String,
        /// Run configuration as a JSON object.
        #[arg(long)]
        conf: Option<String>,
    },
    /// Create a manual run.
    Trigger(TriggerArgs),
    /// Stop scheduling new runs of a DAG.
    Pause { dag_id: String },
    /// Resume scheduling a DAG.
    Unpause { dag_id: String },
    /// Create and run the runs of every interval between two dates.
    Backfill(BackfillArgs),
    /// Print the next runs the schedule will make: logical dates, data intervals, and when
    /// each is created.
    Next {
        dag_id: String,
        /// How many runs (1–100).
        #[arg(long, short = 'n', default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=100))]
        n: u16,
        #[command(flatten)]
        out: OutputArg,
    },
    /// List DAG files that failed to load, with file, line and reason.
    Errors(OutputArg),
    /// Print the state of one run (queued, running, success, failed).
    State { dag_id: String, run_id: String },
    /// Delete a DAG's runs, task instances, tries, outputs and versions (needs --yes); a file
    /// that still declares it brings it back at the next scan.
    Delete {
        dag_id: String,
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct TriggerArgs {
    pub dag_id: String,
    /// Run configuration as a JSON object; `{"params": {...}}` sets params.
    #[arg(long)]
    pub conf: Option<String>,
    /// Run id (default: manual__TIMESTAMP).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Logical date (default: now).
    #[arg(long)]
    pub logical_date: Option<String>,
    /// Wait until the run ends; exit non-zero if it failed.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub out: OutputArg,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    pub dag_id: String,
    /// First logical date (inclusive), in the DAG's time zone.
    #[arg(long)]
    pub from: String,
    /// Last logical date (inclusive), in the DAG's time zone.
    #[arg(long)]
    pub to: String,
    /// Run configuration as a JSON object.
    #[arg(long)]
    pub conf: Option<String>,
    /// Only create the runs; let a running scheduler execute them.
    #[arg(long)]
    pub no_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum TasksCmd {
    /// List a DAG's tasks: kind, trigger rule, upstream tasks, and how a mapped task expands.
    List {
        dag_id: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Clear task instances so they run again (Airflow's `tasks clear`); lists them without --yes.
    Clear(ClearArgs),
    /// Run one task now, without the scheduler and without recording state; log to the terminal.
    Test {
        dag_id: String,
        task_id: String,
        /// Logical date (default: now).
        #[arg(long)]
        date: Option<String>,
        /// Run configuration as a JSON object.
        #[arg(long)]
        conf: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ClearArgs {
    pub dag_id: String,
    /// Only this run (default: every run, or those --start/--end choose).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    pub run: Option<String>,
    /// Only tasks whose id matches this regular expression, whole (e.g. `extract\..*`).
    #[arg(long)]
    pub task: Option<String>,
    /// Only runs with a logical date at or after this one (in the DAG's time zone).
    #[arg(long)]
    pub start: Option<String>,
    /// Only runs with a logical date at or before this one (in the DAG's time zone).
    #[arg(long)]
    pub end: Option<String>,
    /// Also clear everything downstream of the chosen tasks.
    #[arg(long)]
    pub downstream: bool,
    /// Also clear everything upstream of the chosen tasks.
    #[arg(long)]
    pub upstream: bool,
    /// Only task instances that failed or had an upstream failure.
    #[arg(long)]
    pub only_failed: bool,
    /// Only this instance of the chosen mapped tasks.
    #[arg(long = "map-index")]
    pub map_index: Option<i64>,
    /// Clear without asking (without it the command lists what it would clear).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub out: OutputArg,
}

/// How a run can be marked by hand.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MarkState {
    Success,
    Failed,
}

impl From<MarkState> for tern_core::RunState {
    fn from(m: MarkState) -> Self {
        match m {
            MarkState::Success => tern_core::RunState::Success,
            MarkState::Failed => tern_core::RunState::Failed,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum RunsCmd {
    /// List DAG runs, newest first.
    List {
        /// Only runs of this DAG.
        #[arg(long)]
        dag: Option<String>,
        /// Only runs in this state (queued, running, success, failed).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        out: OutputArg,
    },
    /// Show a run and its task instances.
    Show {
        dag_id: String,
        run_id: String,
        #[command(flatten)]
        out: OutputArg,
    },
    /// End a run by hand: its unfinished tasks end too (success: all succeed; failed: running
    /// ones fail, waiting ones are skipped).
    Mark {
        dag_id: String,
        run_id: String,
        #[arg(value_enum)]
        state: MarkState,
    },
    /// Delete a run with its task instances, tries and outputs (needs --yes).
    Delete {
        dag_id: String,
        run_id: String,
        /// Delete without asking.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    pub dag_id: String,
    pub run_id: String,
    pub task_id: String,
    /// Try number (default: the latest).
    #[arg(long = "try")]
    pub try_number: Option<u32>,
    /// The instance of a mapped task (0 to n-1; `tern runs show` lists them).
    #[arg(long = "map-index")]
    pub map_index: Option<i64>,
    /// Keep printing new lines until the try ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Subcommand, Debug)]
pub enum VariablesCmd {
    /// Set a variable (add it or replace its value).
    Set {
        /// Letters, digits and `_` (templates read it as var.value.KEY).
        key: String,
        /// The value (visible in `ps` while the command runs: for a secret prefer --value-stdin).
        #[arg(
            required_unless_present = "value_stdin",
            conflicts_with = "value_stdin"
        )]
        value: Option<String>,
        /// Read the value from standard input (one line).
        #[arg(long)]
        value_stdin: bool,
        /// Encrypt it at rest, never show it in listings or the API, mask it in task logs.
        #[arg(long)]
        secret: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Print a variable's value.
    Get {
        key: String,
        /// Print a secret variable's value (locally only: the API never sends it back).
        #[arg(long)]
        reveal: bool,
    },
    /// List variables (secret values hidden).
    List(OutputArg),
    /// Delete a variable.
    Delete { key: String },
}

#[derive(Subcommand, Debug)]
pub enum ConnectionsCmd {
    /// Add a connection: a URI such as postgres://user:pw@host:5432/db, mysql://…,
    /// sqlite:///path, s3://bucket?endpoint=…&region=…, file:///folder, https://….
    Add {
        name: String,
        /// The URI (visible to other users in `ps` while the command runs: prefer
        /// --uri-stdin for one with a password).
        #[arg(
            long,
            required_unless_present = "uri_stdin",
            conflicts_with = "uri_stdin"
        )]
        uri: Option<String>,
        /// Read the URI from the first line of standard input (keeps its password off the
        /// command line).
        #[arg(long)]
        uri_stdin: bool,
        /// Extra fields as a JSON object, e.g. '{"sslmode": "require"}'.
        #[arg(long)]
        extra: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Replace a connection of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// List connections (never their secrets).
    List(OutputArg),
    /// Show one connection with its password masked.
    Show {
        name: String,
        #[command(flatten)]
        out: OutputArg,
    },
    Delete {
        name: String,
    },
    /// Connect and check: SELECT 1 on databases, a listing on object stores.
    Test {
        name: String,
    },
    /// Print every connection as JSON or YAML (passwords masked unless --include-secrets),
    /// for `connections import` elsewhere.
    Export {
        /// Include the passwords and secret extra fields in clear (the output is then a secret;
        /// with --server the token needs the admin role).
        #[arg(long)]
        include_secrets: bool,
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
    },
    /// Add the connections of an export (a JSON or YAML file, `-` for standard input);
    /// entries whose secrets were masked are refused.
    Import {
        file: PathBuf,
        /// Replace connections of the same name.
        #[arg(long)]
        replace: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum NotificationsCmd {
    /// List notifications, newest first: event, connection, state (pending, sent, failed),
    /// tries and the last error.
    List {
        /// Only notifications of this DAG.
        #[arg(long)]
        dag: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        out: OutputArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// Add a user. Without --password-stdin a random password is generated and printed once.
    Add {
        username: String,
        /// viewer (reads), user (also triggers, clears, pauses), op (also pools, connections,
        /// agents), admin (also users and the audit log).
        #[arg(long)]
        role: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    List(OutputArg),
    /// Delete a user with their tokens and sessions (not the last admin; needs --yes).
    Delete {
        username: String,
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Make an API token for a user; the token is printed once and stored only as a hash.
    Create {
        username: String,
        /// A name saying what the token is for.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 90d or 12h (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
    },
    List(OutputArg),
    /// Revoke a token by its id (`tern tokens list`).
    Revoke {
        id: i64,
    },
}

/// How `connections export` writes the list.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum PoolsCmd {
    List(OutputArg),
    /// Create or resize a pool.
    Set {
        name: String,
        slots: i64,
        #[arg(long, default_value = "")]
        description: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DbCmd {
    /// Create or upgrade the metadata schema.
    Migrate,
}

#[derive(Subcommand, Debug)]
pub enum SecretsCmd {
    /// Re-encrypt every connection and secret variable under a new key, in one transaction.
    /// With the key in HOME/secret.key, the file gets the new key (the old one moves to
    /// HOME/secret.key.old, for backups taken before); with TERN_SECRET_KEY, the new key is
    /// written to HOME/secret.key.new for you to set. Restart every server afterwards.
    Rotate {
        /// A file holding the new key (32 bytes, base64 or hex); default: a random one.
        #[arg(long)]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the settings in force (TOML).
    Show,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The control plane's URL(s): the global `--server` (comma-separated for several servers
    /// sharing one database; the agent moves to the next one when the current cannot be reached).
    #[arg(skip)]
    pub server: Vec<String>,
    /// One-time activation code (first start only; later starts use the saved credential).
    #[arg(long, env = "TERN_ACTIVATION")]
    pub activation: Option<String>,
    /// The agent's own folder: credential, settings, spool.
    #[arg(long, env = "TERN_AGENT_DIR")]
    pub dir: PathBuf,
    /// Name shown on the control plane (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Task attempts run at once (default 8, or `concurrency` in DIR/agent.toml).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Trust this PEM CA certificate for the control plane's TLS (besides the system's).
    #[arg(long, env = "TERN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum AgentsCmd {
    /// List registered agents.
    List(OutputArg),
    /// Revoke an agent: its credential stops working and its running attempts are retried.
    Revoke { id: i64 },
    /// Activation codes.
    #[command(subcommand)]
    Activation(ActivationCmd),
}

#[derive(Subcommand, Debug)]
pub enum ActivationCmd {
    /// Create a one-time activation code for an agent of a site.
    Create {
        /// The site the agent belongs to; it will serve queue site:SITE.
        #[arg(long)]
        site: String,
        /// More (plain) queues the agent serves, comma-separated.
        #[arg(long, value_delimiter = ',')]
        queues: Vec<String>,
        /// How long the code is valid.
        #[arg(long, default_value = "10m")]
        ttl: String,
        #[command(flatten)]
        out: OutputArg,
    },
}
