//! `tern agents …` (manage remote agents from the control plane) and `tern agent` (run one).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tern_server::Config;
use tern_worker::http_transport::{self, ActivateRequest, HttpControlPlane};
use tern_worker::{Agent, AgentConfig, ExecOptions};
use tokio_util::sync::CancellationToken;

use crate::cli::{ActivationCmd, AgentArgs, AgentsCmd, Output};
use crate::output::{self, print};

pub async fn run(cfg: Config, cmd: AgentsCmd) -> anyhow::Result<i32> {
    let store = super::open_store(&cfg).await?;
    match cmd {
        AgentsCmd::List(o) => {
            let agents = store.list_agents().await?;
            let rows = agents
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.name.clone(),
                        a.site.clone(),
                        a.queues.join(","),
                        a.version.clone(),
                        a.address.clone(),
                        output::time(a.last_seen),
                        if a.revoked { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            print(
                o.output,
                &[
                    "ID",
                    "NAME",
                    "SITE",
                    "QUEUES",
                    "VERSION",
                    "ADDRESS",
                    "LAST SEEN",
                    "REVOKED",
                ],
                rows,
                &agents,
            );
        }
        AgentsCmd::Revoke { id } => {
            let n = store.revoke_agent(id).await?;
            eprintln!("agent {id} revoked; {n} running attempt(s) will be retried");
        }
        AgentsCmd::Activation(ActivationCmd::Create {
            site,
            queues,
            ttl,
            out,
        }) => {
            let ttl = tern_core::parse_duration(&ttl).context("--ttl")?;
            let a = store.create_activation(&site, &queues, ttl).await?;
            if out.output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&a).expect("serialisable")
                );
            } else {
                println!("{}", a.code);
                eprintln!(
                    "one-time code for an agent of site {} (queues {}), valid until {} UTC:\n  tern agent --server URL --activation {} --dir DIR",
                    a.site,
                    a.queues.join(","),
                    output::time(Some(a.expires_at)),
                    a.code
                );
            }
        }
    }
    Ok(0)
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

fn credential_path(dir: &Path) -> std::path::PathBuf {
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

pub async fn agent(args: AgentArgs) -> anyhow::Result<i32> {
    let path = credential_path(&args.dir);
    let cred: Credential = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; remove it and activate again",
                path.display()
            )
        })?
    } else {
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
        let reply = http_transport::activate(
            &args.server,
            &ActivateRequest {
                code,
                name,
                version: env!("CARGO_PKG_VERSION").into(),
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("activation failed: {e}"))?;
        let c = Credential {
            server: args.server.clone(),
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
        c
    };
    let cp = Arc::new(
        HttpControlPlane::new(&args.server, &cred.token).map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    let agent = Agent::new(
        cp,
        AgentConfig {
            name: format!("agent-{}", cred.agent_id),
            concurrency: args.concurrency.max(1),
            claim_wait: Duration::from_secs(25),
            exec: ExecOptions::default(),
        },
    );
    eprintln!(
        "tern agent {} of site {} serving {} from {}",
        cred.agent_id,
        cred.site,
        cred.queues.join(","),
        args.server
    );
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        super::interrupted().await;
        token.cancel();
    });
    agent.run(shutdown).await;
    Ok(0)
}
