//! Running one attempt of one task: render its templates, run its kind, collect its outputs,
//! and describe the end as a [`Completion`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tern_core::TaskKind;
use tern_protocol::{Assignment, Completion};
use tokio_util::sync::CancellationToken;

use crate::connections::Connections;
use crate::container;
use crate::data::{self, DataError};
use crate::logsink::LogSink;
use crate::mask::{Masker, MaskingSink};
use crate::outputs::parse_outputs;
use crate::process::{self, ProcessEnd, ProcessSpec};
use crate::template::{Renderer, TemplateError};
use crate::variables::Variables;

/// Settings of the agent that shape how tasks run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Python interpreter for `python` tasks.
    pub python: String,
    pub kill_grace: Duration,
    /// The agent's site-local connections.
    pub connections: Arc<Connections>,
    /// The agent's site-local variables.
    pub variables: Arc<Variables>,
    /// Masks the secrets of both in every log line, reason and output.
    pub masker: Arc<Masker>,
    /// Notes every running try, so a later agent ends what it left (see [`crate::groups`]).
    pub groups: Option<Arc<crate::groups::GroupRegistry>>,
    /// Where python tasks' virtual environments are kept (see [`crate::venv`]).
    pub venvs: std::path::PathBuf,
    /// Where their packages come from.
    pub pip: crate::venv::PipSource,
    /// The tries' working folders (see [`crate::workdir`]).
    pub work: Arc<crate::workdir::WorkFolders>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            python: "python3".into(),
            kill_grace: Duration::from_secs(5),
            connections: Arc::default(),
            variables: Arc::default(),
            masker: Arc::default(),
            groups: None,
            venvs: crate::venv::default_root(),
            pip: Default::default(),
            work: Arc::default(),
        }
    }
}

impl ExecOptions {
    /// Uses `connections` for tasks and masks their secrets.
    pub fn with_connections(mut self, connections: Connections) -> ExecOptions {
        self.connections = Arc::new(connections);
        self.remask()
    }

    /// Uses `variables` for templates and masks the secret ones.
    pub fn with_variables(mut self, variables: Variables) -> ExecOptions {
        self.variables = Arc::new(variables);
        self.remask()
    }

    fn remask(mut self) -> ExecOptions {
        let mut secrets = self.connections.secrets();
        secrets.extend(self.variables.secrets());
        self.masker = Arc::new(Masker::new(secrets));
        self
    }
}

/// Runs one attempt to its end. Never panics on task failure: every failure becomes a
/// `Completion` with a reason, also written to the task log.
pub async fn execute(
    a: &Assignment,
    opts: &ExecOptions,
    sink: &dyn LogSink,
    cancel: &CancellationToken,
) -> Completion {
    // Connections and variables sent with the assignment join the agent's own for this
    // attempt (the agent's win), and their secrets are masked like the agent's.
    let merged_conns;
    let opts = if a.connections.is_empty() {
        opts
    } else {
        match opts.connections.with_fallback(&a.connections) {
            Ok(c) => {
                merged_conns = opts.clone().with_connections(c);
                &merged_conns
            }
            Err(e) => {
                tracing::warn!(
                    ti = a.ti_id,
                    "a connection sent with the task is invalid: {e}"
                );
                opts
            }
        }
    };
    let merged_vars;
    let opts = if a.variables.is_empty() {
        opts
    } else {
        let v = opts.variables.with_fallback(&a.variables);
        merged_vars = opts.clone().with_variables(v);
        &merged_vars
    };
    let masked = MaskingSink {
        inner: sink,
        masker: opts.masker.clone(),
    };
    let mut c = run_masked(a, opts, &masked, cancel).await;
    if let Some(r) = &c.reason {
        c.reason = Some(opts.masker.mask(r));
    }
    for v in c.outputs.values_mut() {
        opts.masker.mask_json(v);
    }
    c
}

async fn run_masked(
    a: &Assignment,
    opts: &ExecOptions,
    sink: &dyn LogSink,
    cancel: &CancellationToken,
) -> Completion {
    let mut c = Completion {
        ti_id: a.ti_id,
        attempt: a.attempt.clone(),
        success: false,
        retryable: true,
        exit_code: None,
        reason: None,
        outputs: Default::default(),
        reschedule_after_ms: None,
    };
    sink.line(&format!(
        "tern: {}.{} run {} try {} of {} ({})",
        a.dag_id,
        tern_core::mapping::instance_label(&a.task_id, a.map_index.map_or(-1, i64::from)),
        a.run_id,
        a.try_number,
        a.max_tries,
        a.task.kind.name()
    ));
    if !a.map_values.is_empty() {
        // This sink masks any secret value among them, like every other line.
        sink.line(&format!(
            "tern: expanded with {}",
            serde_json::Value::Object(a.map_values.clone())
        ));
    }
    let result = match &a.task.kind {
        TaskKind::Empty | TaskKind::LatestOnly => Ok(Ran::Done),
        TaskKind::Sql(_) | TaskKind::SqlToLake(_) | TaskKind::Http(_) => {
            Ok(Ran::Data(run_data(a, opts, sink, cancel).await))
        }
        TaskKind::Sensor(s) => {
            let r = Renderer::new(
                a,
                &opts.connections.template_value(),
                &opts.variables.template_value(),
            );
            let poke = data::sensor::poke(a, &opts.connections, &r, sink, s, chrono::Utc::now());
            Ok(match bounded(a, cancel, poke).await {
                Ok(data::sensor::Poke::Met(outputs)) => Ran::Data(Ok(outputs)),
                Ok(data::sensor::Poke::NotYet { why, after }) => Ran::NotYet { why, after },
                Err(e) => Ran::Data(Err(e)),
            })
        }
        TaskKind::Shell {
            cmd,
            env,
            cwd,
            sandbox,
        } => {
            run_process(
                a,
                opts,
                sink,
                cancel,
                ProcessKind::Shell { cmd },
                env,
                cwd.as_deref(),
                sandbox.as_ref(),
            )
            .await
        }
        TaskKind::Container(t) => {
            run_process(
                a,
                opts,
                sink,
                cancel,
                ProcessKind::Container(t),
                &t.env,
                None,
                None,
            )
            .await
        }
        TaskKind::Python {
            code,
            args,
            env,
            cwd,
            sandbox,
            requirements,
            python_version,
            ..
        } => {
            run_process(
                a,
                opts,
                sink,
                cancel,
                ProcessKind::Python {
                    code,
                    args,
                    requirements,
                    python_version: python_version.as_deref(),
                },
                env,
                cwd.as_deref(),
                sandbox.as_ref(),
            )
            .await
        }
    };
    match result {
        Ok(Ran::Done) => c.success = true,
        Ok(Ran::Data(Ok(outputs))) => {
            c.success = true;
            c.outputs = outputs;
        }
        Ok(Ran::NotYet { why, after }) => {
            c.reschedule_after_ms = Some(after.as_millis() as u64);
            c.reason = Some(why);
        }
        Ok(Ran::Data(Err(e))) => {
            c.retryable = e.retryable;
            c.reason = Some(if e.retryable {
                e.message
            } else {
                format!("{} (not retried: another try cannot succeed)", e.message)
            });
        }
        Ok(Ran::Process { end, outputs }) => match end {
            ProcessEnd::Exited(status) if status.success() => match outputs {
                Ok(o) => {
                    c.success = true;
                    c.exit_code = Some(0);
                    c.outputs = o;
                }
                Err(e) => {
                    c.exit_code = Some(0);
                    c.retryable = false;
                    c.reason = Some(e);
                }
            },
            ProcessEnd::Exited(status) => {
                use std::os::unix::process::ExitStatusExt;
                c.exit_code = status.code();
                c.reason = Some(match (status.code(), status.signal()) {
                    (Some(127), _) => "exit code 127: command not found".to_string(),
                    (Some(code), _) => format!("exit code {code}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => "ended abnormally".to_string(),
                });
            }
            ProcessEnd::TimedOut(t) => {
                c.reason = Some(format!(
                    "timed out after {} (execution_timeout); the process group was killed",
                    tern_core::format_duration(t)
                ));
            }
            ProcessEnd::Cancelled => {
                c.reason = Some("stopped: the attempt was cancelled".to_string());
            }
            ProcessEnd::SpawnFailed(msg) => {
                c.reason = Some(msg);
            }
        },
        Err(e) => {
            c.retryable = matches!(e, Unstartable::Transient(_));
            c.reason = Some(e.to_string());
        }
    }
    if c.success {
        sink.line("tern: task succeeded");
    } else if c.exit_code.is_some_and(|code| a.task.skips_on_exit(code)) {
        sink.line(&format!(
            "tern: task skipped: {} is in its skip_on_exit_code",
            c.reason.as_deref().unwrap_or("its exit code")
        ));
    } else if let Some(ms) = c.reschedule_after_ms {
        sink.line(&format!(
            "tern: not yet ({}); next poke in {}",
            c.reason.as_deref().unwrap_or("condition not met"),
            tern_core::format_duration(Duration::from_millis(ms))
        ));
    } else {
        sink.line(&format!(
            "tern: task failed: {}",
            c.reason.as_deref().unwrap_or("unknown reason")
        ));
    }
    c
}

enum Ran {
    Done,
    /// A sensor's condition does not hold yet.
    NotYet {
        why: String,
        after: Duration,
    },
    Data(Result<serde_json::Map<String, serde_json::Value>, DataError>),
    Process {
        end: ProcessEnd,
        outputs: Result<serde_json::Map<String, serde_json::Value>, String>,
    },
}

/// Runs a data task (sql, sql_to_lake, http) in this process, bounded by its execution timeout and
/// stopped by cancellation.
async fn run_data(
    a: &Assignment,
    opts: &ExecOptions,
    sink: &dyn LogSink,
    cancel: &CancellationToken,
) -> Result<serde_json::Map<String, serde_json::Value>, DataError> {
    let r = Renderer::new(
        a,
        &opts.connections.template_value(),
        &opts.variables.template_value(),
    );
    let conns = &opts.connections;
    let work = async {
        match &a.task.kind {
            TaskKind::Sql(t) => data::sql_task::run_sql(conns, &r, sink, t).await,
            TaskKind::SqlToLake(t) => data::sql_task::run_export(conns, &r, sink, t).await,
            TaskKind::Http(t) => data::http_task::run_http(conns, &r, sink, t).await,
            _ => unreachable!("run_data is called for data tasks only"),
        }
    };
    bounded(a, cancel, work).await
}

/// Runs in-process task work bounded by the task's execution timeout and stopped by
/// cancellation; both end it with a retryable error.
async fn bounded<T>(
    a: &Assignment,
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = Result<T, DataError>>,
) -> Result<T, DataError> {
    let timeout = async {
        match a.task.execution_timeout_ms {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = timeout => Err(DataError::transient(format!(
            "timed out after {} (execution_timeout)",
            tern_core::format_duration(Duration::from_millis(a.task.execution_timeout_ms.unwrap_or(0)))
        ))),
        _ = cancel.cancelled() => Err(DataError::transient("stopped: the attempt was cancelled")),
    }
}

/// Why a process task could not start; it fails at once (no retry).
#[derive(Debug, thiserror::Error)]
enum Unstartable {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Setup(String),
    /// Could not start now, may next time (a virtual environment whose build failed).
    #[error("{0}")]
    Transient(String),
}

enum ProcessKind<'a> {
    Shell {
        cmd: &'a str,
    },
    Python {
        code: &'a str,
        args: &'a [String],
        requirements: &'a [String],
        python_version: Option<&'a str>,
    },
    Container(&'a tern_core::ContainerTask),
}

#[allow(clippy::too_many_arguments)]
async fn run_process(
    a: &Assignment,
    opts: &ExecOptions,
    sink: &dyn LogSink,
    cancel: &CancellationToken,
    kind: ProcessKind<'_>,
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    sandbox: Option<&tern_core::Sandbox>,
) -> Result<Ran, Unstartable> {
    let r = Renderer::new(
        a,
        &opts.connections.template_value(),
        &opts.variables.template_value(),
    );
    let setup_err = |what: &str, e: String| Unstartable::Setup(format!("{what}: {e}"));
    let workdir = opts.work.take().map_err(|e| {
        setup_err(
            "working directory",
            format!("could not create a temporary directory: {e}"),
        )
    })?;
    let output_file = workdir.path().join("tern-output");
    let mut full_env = process::base_env();
    let mut rendered_env = BTreeMap::new();
    for (k, v) in env {
        rendered_env.insert(k.clone(), r.render(&format!("env.{k}"), v)?);
    }
    let cwd = match cwd {
        Some(c) => std::path::PathBuf::from(r.render("cwd", c)?),
        None => workdir.path().to_path_buf(),
    };
    let timeout = a.task.execution_timeout_ms.map(Duration::from_millis);
    let mut container = None;
    let (program, args, stdin) = match kind {
        ProcessKind::Shell { cmd } => {
            let cmd = r.render_shell("cmd", cmd)?;
            sink.line(&format!("tern: running: {cmd}"));
            ("sh".to_string(), vec!["-c".into(), cmd], None)
        }
        ProcessKind::Python {
            code,
            args,
            requirements,
            python_version,
        } => {
            let mut argv = vec!["-".to_string()];
            for (i, arg) in args.iter().enumerate() {
                argv.push(r.render(&format!("args[{i}]"), arg)?);
            }
            let python = if requirements.is_empty() && python_version.is_none() {
                opts.python.clone()
            } else {
                crate::venv::ensure(
                    &opts.python,
                    &opts.venvs,
                    &opts.pip,
                    requirements,
                    python_version,
                    sink,
                )
                .await
                .map_err(|e| match e {
                    crate::venv::VenvError::NoInterpreter(m) => Unstartable::Setup(m),
                    crate::venv::VenvError::BuildFailed(m) => Unstartable::Transient(m),
                })?
                .display()
                .to_string()
            };
            sink.line(&format!(
                "tern: running {python} with {} argument(s)",
                argv.len() - 1
            ));
            (python, argv, Some(code.to_string()))
        }
        ProcessKind::Container(t) => {
            let runtime =
                container::find_runtime(t.runtime.as_deref(), None).map_err(Unstartable::Setup)?;
            let rendered = render_container(&r, t, rendered_env.clone())?;
            // Inside, the documented variables (with the output file in the mounted folder)
            // and the task's own; all passed by name.
            let inner_out = format!("{}/tern-output", container::OUTPUT_DIR);
            let mut inner = task_env(a, std::path::Path::new(&inner_out));
            inner.extend(rendered.env.clone());
            let names: Vec<String> = inner.keys().cloned().collect();
            let name = container::container_name(a.ti_id, &a.attempt);
            let args = container::run_args(t, &rendered, &name, workdir.path(), &names);
            sink.line(&format!(
                "tern: running image {} with {} ({})",
                t.image,
                runtime.display(),
                if t.network {
                    "network on"
                } else {
                    "no network"
                }
            ));
            rendered_env = inner;
            container = Some((runtime.clone(), name));
            (runtime.display().to_string(), args, None)
        }
    };
    if container.is_none() {
        full_env.extend(task_env(a, &output_file));
        full_env.extend(opts.connections.env());
    }
    full_env.extend(rendered_env);
    let (program, args) = match sandbox {
        None => (program, args),
        Some(s) => {
            let bwrap = crate::process::find_program("bwrap", None)
                .ok_or_else(|| Unstartable::Setup(crate::sandbox::missing()))?;
            sink.line(&format!(
                "tern: in a sandbox (read-only system, private /tmp, {})",
                if s.network {
                    "network on"
                } else {
                    "no network"
                }
            ));
            crate::sandbox::wrap(&bwrap, &program, &args, &cwd, workdir.path(), s)
        }
    };
    let spec = ProcessSpec {
        program: &program,
        args,
        env: full_env,
        cwd,
        stdin,
        timeout,
        kill_grace: opts.kill_grace,
        mask: opts.masker.clone(),
        attempt: &a.attempt,
        groups: opts.groups.clone(),
    };
    let end = process::run(spec, sink, cancel).await;
    if let (Some((runtime, name)), ProcessEnd::TimedOut(_) | ProcessEnd::Cancelled) =
        (&container, &end)
    {
        sink.line(&format!("tern: removing container {name}"));
        container::remove(runtime, name).await;
    }
    let outputs = match std::fs::read_to_string(&output_file) {
        Ok(text) => parse_outputs(&text).map_err(|e| e.to_string()),
        Err(_) => Ok(Default::default()),
    };
    Ok(Ran::Process { end, outputs })
}

/// Renders a container task's templated fields (command, args, mount sources); `env` is
/// already rendered.
fn render_container(
    r: &Renderer,
    t: &tern_core::ContainerTask,
    env: BTreeMap<String, String>,
) -> Result<container::Rendered, TemplateError> {
    let list = |field: &str, items: &[String]| {
        items
            .iter()
            .enumerate()
            .map(|(i, s)| r.render(&format!("{field}[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut mounts = Vec::new();
    for (i, m) in t.mounts.iter().enumerate() {
        mounts.push((
            r.render(&format!("mounts[{i}]"), &m.source)?,
            m.target.clone(),
            m.read_only,
        ));
    }
    Ok(container::Rendered {
        command: list("command", &t.command)?,
        args: list("args", &t.args)?,
        env,
        mounts,
    })
}

/// The documented `TERN_*` variables of a task process.
fn task_env(a: &Assignment, output_file: &std::path::Path) -> BTreeMap<String, String> {
    let c = &a.context;
    let iso =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
    BTreeMap::from([
        ("TERN_DAG_ID".into(), a.dag_id.clone()),
        ("TERN_TASK_ID".into(), a.task_id.clone()),
        ("TERN_RUN_ID".into(), a.run_id.clone()),
        ("TERN_TRY_NUMBER".into(), a.try_number.to_string()),
        ("TERN_LOGICAL_DATE".into(), iso(c.logical_date)),
        (
            "TERN_DS".into(),
            c.logical_date.format("%Y-%m-%d").to_string(),
        ),
        (
            "TERN_DATA_INTERVAL_START".into(),
            iso(c.data_interval_start),
        ),
        ("TERN_DATA_INTERVAL_END".into(), iso(c.data_interval_end)),
        ("TERN_OUTPUT".into(), output_file.display().to_string()),
        (crate::groups::ATTEMPT_VAR.into(), a.attempt.clone()),
        // The same for every try of this task in this run (retries and re-runs after a
        // crash): a key for effects that must happen once.
        // (A mapped instance's carries its index: each instance is its own piece of work.)
        (
            "TERN_IDEMPOTENCY_KEY".into(),
            match a.map_index {
                Some(i) => format!("{}/{}/{}/{i}", a.dag_id, a.run_id, a.task_id),
                None => format!("{}/{}/{}", a.dag_id, a.run_id, a.task_id),
            },
        ),
        // -1 for a task that is not mapped, as `{{ map_index }}`.
        (
            "TERN_MAP_INDEX".into(),
            a.map_index.map(i64::from).unwrap_or(-1).to_string(),
        ),
    ])
}
