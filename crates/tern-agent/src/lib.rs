//! The site agent: runs a site's tasks for a tern control plane it dials out to (`tern agent`,
//! and the `tern-agent` binary, which is this alone). Its folder holds the credential (after
//! activation), the optional settings file `agent.toml` with the site-local connections, and
//! the spool of what could not be delivered while the control plane was out of reach.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_worker::connections::{ConnectionConfig, Connections};
use tern_worker::http_transport::{self, ActivateRequest, HttpControlPlane};
use tern_worker::spool::Spool;
use tern_worker::spooling::SpoolingControlPlane;
use tern_worker::{Agent, AgentConfig, ExecOptions};
use tokio_util::sync::CancellationToken;

/// How an agent is started (the command line of `tern agent` and `tern-agent`).
#[derive(Debug, Clone)]
pub struct AgentArgs {
    /// The control plane's URL(s): the agent moves to the next when the current cannot be
    /// reached.
    pub server: Vec<String>,
    /// One-time activation code (first start only).
    pub activation: Option<String>,
    /// The agent's own folder: credential, settings, spool.
    pub dir: PathBuf,
    /// Name shown on the control plane (default: the host name).
    pub name: Option<String>,
    /// Task attempts run at once (default 8, or `concurrency` in DIR/agent.toml).
    pub concurrency: Option<usize>,
    /// A PEM CA certificate to trust for the control plane's TLS (besides the system's).
    pub ca_cert: Option<PathBuf>,
}

/// `DIR/agent.toml`: the agent's own settings. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    /// Task attempts run at once (default 8).
    concurrency: Option<usize>,
    /// Longest a claim waits for work before asking again (default 25s).
    claim_wait: Option<String>,
    /// Longest any other call may take before the link counts as down (default 10s).
    call_timeout: Option<String>,
    /// Python interpreter for python tasks (default python3).
    python: Option<String>,
    /// Time between SIGTERM and SIGKILL when a task must stop (default 5s).
    kill_grace: Option<String>,
    /// Bound on the spool, in MiB (default 256).
    spool_max_mb: Option<u64>,
    /// Site-local connections by name.
    #[serde(default)]
    connections: BTreeMap<String, ConnectionConfig>,
    /// A package index for python tasks' `requirements` instead of pip's default.
    pip_index_url: Option<String>,
    /// A wheel folder for them; without `pip_index_url`, the only source (a site with no
    /// internet).
    pip_find_links: Option<String>,
    /// Site-local variables by key; they win over the control plane's and never leave the site.
    #[serde(default)]
    variables: BTreeMap<String, tern_worker::variables::VariableConfig>,
}

fn settings_path(dir: &Path) -> PathBuf {
    dir.join("agent.toml")
}

fn read_settings(dir: &Path) -> anyhow::Result<AgentFile> {
    let path = settings_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentFile::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "{} is readable by other users (mode {:o}); it may hold secrets: chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn duration(value: &Option<String>, key: &str, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => tern_core::parse_duration(v).with_context(|| format!("agent.toml: {key}")),
    }
}

/// What an agent keeps in its folder after activation (mode 0600).
#[derive(Serialize, Deserialize)]
struct Credential {
    server: String,
    agent_id: i64,
    site: String,
    queues: Vec<String>,
    token: String,
}

fn credential_path(dir: &Path) -> PathBuf {
    dir.join("credential.json")
}

fn save_credential(dir: &Path, c: &Credential) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the agent folder {}", dir.display()))?;
    let path = credential_path(dir);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(c)?.as_bytes())?;
    Ok(())
}

async fn credential(args: &AgentArgs, ca: Option<&[u8]>) -> anyhow::Result<Credential> {
    let path = credential_path(&args.dir);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; remove it and activate again",
                path.display()
            )
        });
    }
    let code = args.activation.clone().with_context(|| {
        format!(
            "{} has no credential yet: start the agent once with --activation CODE (create one with `tern agents activation create --site SITE`)",
            args.dir.display()
        )
    })?;
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "agent".into())
    });
    let server = &args.server[0];
    let reply = http_transport::activate(
        server,
        &ActivateRequest {
            code,
            name,
            version: env!("CARGO_PKG_VERSION").into(),
        },
        ca,
    )
    .await
    .map_err(|e| anyhow::anyhow!("activation failed: {e}"))?;
    let c = Credential {
        server: server.clone(),
        agent_id: reply.agent_id,
        site: reply.site,
        queues: reply.queues,
        token: reply.token,
    };
    save_credential(&args.dir, &c)?;
    eprintln!(
        "tern agent: activated as agent {} of site {}",
        c.agent_id, c.site
    );
    Ok(c)
}

/// Runs the agent until `stop` completes (a signal) or it is revoked; the exit code: 0 when
/// stopped, 1 when revoked.
pub async fn run(
    args: AgentArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<i32> {
    anyhow::ensure!(
        !args.server.is_empty(),
        "the agent needs the control plane's URL: give --server URL (or TERN_SERVER)"
    );
    let settings = read_settings(&args.dir)?;
    let connections = Connections::resolve(
        &settings.connections,
        &settings_path(&args.dir).display().to_string(),
        std::env::vars(),
    )?;
    let ca = match &args.ca_cert {
        Some(p) => Some(
            std::fs::read(p).with_context(|| format!("cannot read --ca-cert {}", p.display()))?,
        ),
        None => None,
    };
    let cred = credential(&args, ca.as_deref()).await?;
    let call_timeout = duration(
        &settings.call_timeout,
        "call_timeout",
        Duration::from_secs(10),
    )?;
    let http =
        HttpControlPlane::with_servers(&args.server, &cred.token, call_timeout, ca.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let max_spool = settings.spool_max_mb.unwrap_or(256) * 1024 * 1024;
    let spool = Spool::open(&args.dir, max_spool)
        .with_context(|| format!("cannot open the spool in {}", args.dir.display()))?;
    let names = connections.names();
    let cp = SpoolingControlPlane::new(Arc::new(http), spool, names.clone());
    // End what tries of a killed predecessor left running before any retry can start here.
    let groups_dir = args.dir.join("groups");
    let groups = tern_worker::groups::GroupRegistry::open(&groups_dir)
        .with_context(|| format!("cannot open {}", groups_dir.display()))?;
    groups
        .end_leftovers()
        .with_context(|| format!("cannot read {}", groups_dir.display()))?;
    let exec = ExecOptions {
        python: settings.python.clone().unwrap_or_else(|| "python3".into()),
        kill_grace: duration(&settings.kill_grace, "kill_grace", Duration::from_secs(5))?,
        groups: Some(Arc::new(groups)),
        venvs: args.dir.join("venvs"),
        pip: tern_worker::venv::PipSource {
            index_url: settings.pip_index_url.clone(),
            find_links: settings.pip_find_links.clone(),
        },
        ..ExecOptions::default()
    }
    .with_connections(connections)
    .with_variables(tern_worker::variables::Variables::from_config(
        &settings.variables,
    ));
    let agent = Agent::new(
        cp.clone(),
        AgentConfig {
            name: format!("agent-{}", cred.agent_id),
            concurrency: args
                .concurrency
                .or(settings.concurrency)
                .unwrap_or(8)
                .max(1),
            claim_wait: duration(&settings.claim_wait, "claim_wait", Duration::from_secs(25))?,
            exec,
            // A remote agent is fenced by its leases alone.
            fence: None,
        },
    );
    eprintln!(
        "tern agent {} of site {} serving {} from {} (connections: {})",
        cred.agent_id,
        cred.site,
        cred.queues.join(","),
        args.server.join(","),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    );
    tern_worker::resident::start_is_over();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        token.cancel();
    });
    let link_stop = CancellationToken::new();
    let link = tokio::spawn(cp.clone().keep_link(link_stop.clone()));
    let outcome = agent.run(shutdown.clone()).await;
    // Give the spool a last chance to reach the control plane before exiting.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while !cp.spool_is_empty().await && cp.link_is_up() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    link_stop.cancel();
    let _ = link.await;
    if let Err(e) = outcome {
        eprintln!(
            "error: {e}\n  hint: an operator revoked this agent (or it was never activated here); \
             create a new activation code with `tern agents activation create --site {}` and start the agent with --activation CODE",
            cred.site
        );
        return Ok(1);
    }
    Ok(0)
}
